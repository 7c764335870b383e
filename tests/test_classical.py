"""Classical engine: edge-case battery, presets, printing, schema, MH/Peto variants.

Each test names its independent reference: a closed form written out in the test, metafor
values from tests/reference/metafor_reference.json, or RevMan 5's documented formulas
(Deeks & Higgins 2010, "Statistical algorithms in Review Manager 5").
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bayesmeta import classical as cl
from bayesmeta import results
from bayesmeta.exceptions import ConvergenceWarning, DataError, DataWarning, EstimationError
from tests.tolerances import EXACT, METAFOR, OPTIMIZER

REF = json.loads((Path(__file__).parent / "reference" / "metafor_reference.json").read_text())
BCG = REF["datasets"]["bcg"]
SPARSE = REF["tables"]["sparse"]
RANDOM = ("DL", "REML", "ML", "PM", "HE", "SJ", "EB", "HS")


def quiet(f, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f(*a, **k)


# ---- edge-case battery ---------------------------------------------------------------------

@pytest.mark.parametrize("method", cl.METHODS)
def test_k1_returns_the_study_itself(method):
    """k = 1: closed form -- estimate = yi, se = sqrt(vi), tau² = 0, no heterogeneity."""
    if method == "FE":
        r = cl.rma([0.3], [0.04], method=method)
    else:
        with pytest.warns(DataWarning, match="only 1 study"):
            r = cl.rma([0.3], [0.04], method=method)
    assert r.estimate == 0.3 and r.se == pytest.approx(0.2, rel=1e-15)
    assert r.tau2 == 0 and r.q_df == 0 and math.isnan(r.q_p) and math.isnan(r.i2)
    with pytest.raises(EstimationError, match="Knapp-Hartung needs"):
        quiet(cl.rma, [0.3], [0.04], method=method, test="knha")


@pytest.mark.parametrize("method", RANDOM)
def test_q_below_df_gives_tau2_zero_not_negative(method):
    """Q < df: every estimator is truncated at exactly 0 (metafor JSON 'homog' agrees)."""
    d = REF["datasets"]["homog"]
    r = cl.rma(d["yi"], d["vi"], method=method)
    assert r.q < r.q_df and r.i2_q == 0.0 and r.tau2_ci == (0.0, 0.0)
    if method == "SJ":
        # Sidik-Jonkman is positive by construction (tau0² > 0); metafor agrees
        assert r.tau2 > 0
        np.testing.assert_allclose(r.tau2, REF["rma"]["homog|SJ|z"]["tau2"], **METAFOR)
    else:
        assert r.tau2 == 0.0 and r.i2 == 0.0 and r.h2 == 1.0


@pytest.mark.parametrize("method", cl.METHODS)
def test_identical_yi(method):
    """All yi equal: Q = 0, tau² = 0, estimate = the common value (closed form)."""
    r = cl.rma([0.2] * 4, [0.1, 0.2, 0.3, 0.4], method=method)
    assert r.tau2 == 0 and r.q == pytest.approx(0, abs=1e-15)
    assert r.estimate == pytest.approx(0.2, rel=1e-14)
    with pytest.warns(DataWarning, match="s\\^2 = 0"):
        k = cl.rma([0.2] * 4, [0.1, 0.2, 0.3, 0.4], method=method, test="knha")
    assert k.ci_low == pytest.approx(k.ci_high)
    a = cl.rma([0.2] * 4, [0.1, 0.2, 0.3, 0.4], method=method, test="knha", knha_adhoc=True)
    assert a.ci_high > a.ci_low          # ad hoc max(1, s²) keeps the interval open


@pytest.mark.parametrize("method", cl.METHODS)
def test_variance_ratio_1e6(method):
    """vi spanning 1e-4..100: converges; the precise study dominates (metafor 'extreme')."""
    d = REF["datasets"]["extreme"]
    r = cl.rma(d["yi"], d["vi"], method=method)
    assert r.converged and np.all(np.isfinite([r.estimate, r.se, r.tau2]))
    ref = REF["rma"][f"extreme|{method}|z"]
    tol = OPTIMIZER if method in cl.ITERATIVE else METAFOR
    np.testing.assert_allclose(r.estimate, ref["estimate"], **tol)


def test_missing_values_omitted_with_named_warning():
    with pytest.warns(DataWarning, match="omitted from the model: s2"):
        r = cl.rma([0.1, np.nan, 0.3], [0.1, 0.1, 0.2], studies=["s1", "s2", "s3"], method="DL")
    assert r.k == 2 and list(r.studies["study"]) == ["s1", "s3"]


@pytest.mark.parametrize("vi,problem", [([0.1, 0.0], "vi must be finite and > 0"),
                                        ([0.1, -1.0], "vi must be finite and > 0"),
                                        ([0.1, np.inf], "vi must be finite and > 0")])
def test_bad_vi_is_a_located_data_error(vi, problem):
    with pytest.raises(DataError, match=problem) as e:
        cl.rma([0.1, 0.2], vi)
    assert e.value.column == "vi" and e.value.row == 3


def test_non_finite_yi_is_data_error():
    with pytest.raises(DataError, match="yi must be finite"):
        cl.rma([0.1, np.inf], [0.1, 0.1])


def test_zero_and_double_zero_cells_mh_needs_no_correction():
    """rma.mh (metafor JSON) pools raw counts; the double-zero table is left out of Q."""
    with (pytest.warns(DataWarning, match="excluded from OR: Yucel 2004"),
          pytest.warns(DataWarning, match="MH estimate uses the raw counts")):
        r = cl.rma_mh(SPARSE["ai"], SPARSE["bi"], SPARSE["ci"], SPARSE["di"],
                      studies=SPARSE["study"])
    assert r.extra["k_yi"] == 17 and r.k == 18
    a, b, c, d = (np.array(SPARSE[x], float) for x in ("ai", "bi", "ci", "di"))
    n = a + b + c + d
    assert r.estimate == pytest.approx(math.log(np.sum(a * d / n) / np.sum(b * c / n)), rel=1e-12)


def test_convergence_failure_is_recorded_and_warned():
    with pytest.warns(ConvergenceWarning, match="REML tau\\^2 estimator did not converge"):
        r = cl.rma(BCG["yi"], BCG["vi"], method="REML", control={"maxiter": 1})
    assert r.converged is False and r.iterations == 1
    assert (r.to_frame()["flag"] == "NOT CONVERGED").all()   # shared schema carries it
    assert (cl.rma(BCG["yi"], BCG["vi"], method="REML").to_frame()["flag"] == "").all()
    with pytest.warns(ConvergenceWarning, match="EB"):
        r = cl.rma(BCG["yi"], BCG["vi"], method="EB", control={"maxiter": 2})
    assert r.converged is False


def test_eb_equals_pm():
    """Morris/Berkey EB and Paule-Mandel share a fixed point (Viechtbauer et al. 2015)."""
    eb = cl.rma(BCG["yi"], BCG["vi"], method="EB")
    pm = cl.rma(BCG["yi"], BCG["vi"], method="PM")
    np.testing.assert_allclose(eb.tau2, pm.tau2, **OPTIMIZER)


# ---- intervals ---------------------------------------------------------------------------

def test_prediction_interval_variants_closed_form():
    """PI = mu ± c sqrt(tau² + se²): c = z, t(k-1), t(k-2) (Higgins et al. 2009)."""
    k = len(BCG["yi"])
    for dist, q in (("z", stats.norm.ppf(0.975)), ("t", stats.t.ppf(0.975, k - 1)),
                    ("t_k2", stats.t.ppf(0.975, k - 2))):
        r = cl.rma(BCG["yi"], BCG["vi"], method="REML", pi_dist=dist)
        half = q * math.sqrt(r.tau2 + r.se ** 2)
        np.testing.assert_allclose([r.pi_low, r.pi_high],
                                   [r.estimate - half, r.estimate + half], **EXACT)


def test_i2_definitions_agree_under_dl_and_differ_under_reml():
    """Closed form: DL tau² makes tau²-based I² equal to (Q - df)/Q."""
    dl = cl.rma(BCG["yi"], BCG["vi"], method="DL")
    np.testing.assert_allclose(dl.i2, 100 * (dl.q - dl.q_df) / dl.q, **EXACT)
    np.testing.assert_allclose(dl.i2, dl.i2_q, **EXACT)
    reml = cl.rma(BCG["yi"], BCG["vi"], method="REML")
    assert abs(reml.i2 - reml.i2_q) > 0.01


# ---- presets ----------------------------------------------------------------------------

def test_preset_revman5():
    r = cl.rma(BCG["yi"], BCG["vi"], method="DL", preset="revman5")
    assert r.test == "z" and r.df is None and r.pi_dist == "z"
    with pytest.raises(ValueError, match="revman5"):
        cl.rma(BCG["yi"], BCG["vi"], method="REML", preset="revman5")


def test_preset_revman_web():
    """RevMan Web (2025): REML, HKSJ t(k-1), Q-profile, PI with t, tau²-based I²."""
    r = cl.rma(BCG["yi"], BCG["vi"], preset="revman_web")
    ref = REF["rma"]["bcg|REML|knha"]
    assert r.method == "REML" and r.test == "knha" and r.df == len(BCG["yi"]) - 1
    np.testing.assert_allclose([r.ci_low, r.ci_high, r.pi_low, r.pi_high],
                               [ref["ci_low"], ref["ci_high"], ref["pi_low"], ref["pi_high"]],
                               **OPTIMIZER)
    assert not math.isnan(r.tau2_ci[1])


def _gr_rd_variance(a, b, c, d):
    """Deeks & Higgins (2010) RevMan 5 MH risk-difference variance, written out per table."""
    num = den = 0.0
    for ai, bi, ci, di in zip(a, b, c, d):
        n1, n2 = ai + bi, ci + di
        N = n1 + n2
        num += (ai * bi * n2 ** 3 + ci * di * n1 ** 3) / (n1 * n2 * N ** 2)
        den += n1 * n2 / N
    return num / den ** 2


def test_mh_rd_variance_revman5_vs_metafor():
    """metafor: Sato et al. (1989) (JSON); RevMan 5: Greenland-Robins 1985 (closed form)."""
    t = SPARSE
    sato = quiet(cl.rma_mh, t["ai"], t["bi"], t["ci"], t["di"], measure="RD")
    np.testing.assert_allclose(sato.se, REF["mh"]["sparse|RD"]["se"], **METAFOR)
    gr = quiet(cl.rma_mh, t["ai"], t["bi"], t["ci"], t["di"], measure="RD",
               rd_variance="greenland_robins")
    np.testing.assert_allclose(gr.estimate, sato.estimate, **EXACT)
    np.testing.assert_allclose(gr.se ** 2, _gr_rd_variance(t["ai"], t["bi"], t["ci"], t["di"]),
                               rtol=1e-12)
    assert abs(gr.se / sato.se - 1) > 1e-3           # they differ in sparse data
    big = REF["tables"]["bcg"]
    s2 = quiet(cl.rma_mh, big["ai"], big["bi"], big["ci"], big["di"], measure="RD")
    g2 = quiet(cl.rma_mh, big["ai"], big["bi"], big["ci"], big["di"], measure="RD",
               rd_variance="greenland_robins")
    assert abs(g2.se / s2.se - 1) < 0.05             # and nearly agree in large tables


def test_mh_revman5_continuity_correction_changes_the_estimate():
    """RevMan 5 adds 0.5 to zero-cell tables before MH (R meta MH.exact = FALSE); metafor
    does not. Closed form of the corrected MH OR computed here."""
    t = SPARSE
    rm = quiet(cl.rma_mh, t["ai"], t["bi"], t["ci"], t["di"], preset="revman5")
    a, b, c, d = (np.array(t[x], float) for x in ("ai", "bi", "ci", "di"))
    zero = (a == 0) | (b == 0) | (c == 0) | (d == 0)
    dbl = ((a == 0) & (c == 0)) | ((b == 0) & (d == 0))
    a, b, c, d = (x + 0.5 * zero for x in (a, b, c, d))
    a, b, c, d = (x[~dbl] for x in (a, b, c, d))
    n = a + b + c + d
    np.testing.assert_allclose(rm.estimate, math.log(np.sum(a * d / n) / np.sum(b * c / n)),
                               **EXACT)
    assert rm.estimate > REF["mh"]["sparse|OR"]["estimate"]   # biased towards the null


def test_mh_random_revman5_is_dl_around_mh_q():
    """RevMan 5 "M-H, Random": DL tau² from Q around the MH estimate (closed form)."""
    t = SPARSE
    fe = quiet(cl.rma_mh, t["ai"], t["bi"], t["ci"], t["di"], preset="revman5")
    re = quiet(cl.rma_mh, t["ai"], t["bi"], t["ci"], t["di"], preset="revman5", tau2_method="DL")
    v = re.studies["vi"].to_numpy()
    v = v[np.isfinite(v)]
    w = 1 / v
    np.testing.assert_allclose(re.q, fe.q, **EXACT)
    tau2 = max(0.0, (fe.q - fe.q_df) / (w.sum() - np.sum(w ** 2) / w.sum()))
    np.testing.assert_allclose(re.tau2, tau2, **EXACT)


# ---- result objects -------------------------------------------------------------------------

def test_print_like_metafor():
    r = cl.rma(BCG["yi"], BCG["vi"], method="REML", measure="RR")
    s = str(r)
    assert "Random-Effects Model (k = 13; tau^2 estimator: REML)" in s
    assert "tau^2 (estimated amount of total heterogeneity): 0.3132 (SE = 0.1664)" in s
    assert "I^2 (total heterogeneity / total variability):   92.22%" in s
    assert "Q(df = 12) = 152.2330, p-val < .0001" in s
    assert "-0.7145" in s and "logRR" in s
    assert "Fixed-Effects Model" in str(cl.rma(BCG["yi"], BCG["vi"], method="FE"))


def test_to_frame_shared_schema_and_values():
    r = cl.rma(BCG["yi"], BCG["vi"], studies=BCG["study"], method="REML", test="knha",
               measure="RR")
    f = r.to_frame(analysis="bcg")
    results.check_frame(f)
    by = f.set_index("parameter")
    assert {"mu", "tau2", "tau", "theta_new"} <= set(by.index)
    assert by.loc["mu", "estimate"] == r.estimate and by.loc["mu", "df"] == 12
    assert by.loc["mu", "interval"] == "t" and by.loc["mu", "method"] == "REML+KNHA"
    assert (by.loc["theta_new", "ci_low"], by.loc["theta_new", "ci_high"]) == (r.pi_low, r.pi_high)
    assert by.loc["tau2", "interval"] == "q-profile" and by.loc["tau2", "ci_low"] == r.tau2_ci[0]
    assert by.loc["tau", "estimate"] == pytest.approx(math.sqrt(r.tau2))
    assert f"theta[{BCG['study'][0]}]" in by.index and set(f["scale"]) == {"logRR"}


def test_result_is_frozen():
    r = cl.rma(BCG["yi"], BCG["vi"], method="DL")
    with pytest.raises(AttributeError):
        r.estimate = 0.0


def test_to_dict_has_scripting_contract_keys():
    d = cl.rma(BCG["yi"], BCG["vi"], method="DL").to_dict()
    assert list(d) == ["k", "measure", "method", "test", "estimate", "se", "ci_low", "ci_high",
                       "statistic", "p", "df", "tau2", "tau", "i2", "h2", "q", "q_df", "q_p",
                       "pi_low", "pi_high", "studies"]
    assert d["df"] is None and set(d["studies"][0]) == {"study", "yi", "vi", "weight_pct"}


def test_subgroup_missing_label_is_data_error():
    with pytest.raises(DataError, match="missing subgroup"):
        cl.subgroup_analysis([0.1, 0.2, 0.3], [0.1, 0.1, 0.1], ["a", None, "b"])


def test_multilevel_frame_and_print():
    m = REF["multilevel_data"]
    r = cl.fit_multilevel(m["yi"], m["vi"], m["study"], m["time"])
    results.check_frame(r.to_frame())
    assert "sigma^2.1" in str(r) and r.n_study == 2 and r.n_inner == 6


# A dataset on which plain Fisher scoring (REML) and the EB fixed-point iteration cycle: metafor
# 3.8-1 stops with "Fisher scoring algorithm did not converge" for both. References, metafor
# 3.8-1 (R 4.2.2) printed with %.17g:
#   rma(y, v, method="REML", control=list(stepadj=0.5, maxiter=1000, threshold=1e-12))
#     tau2 = 2.3263038530566038, estimate = 1.7696298077489534, se = 0.91656458932093299
#   rma(y, v, method="EB", control=list(stepadj=0.5, maxiter=5000, threshold=1e-12))
#     tau2 = 0.035399785013930658
CYCLING_Y = [0.75970689, 7.32961295, 0.34568303, -0.091821, 0.84494595, 4.70121927,
             3.03044257, 0.01576841, 6.25137991, 1.27434748, -0.99056711, 2.83413869,
             -1.95862665]
CYCLING_V = [4.01254948, 36.04342429, 46.94079995, 39.39823584, 8.6159747, 1.41747963,
             19.51080815, 1.01811744, 28.49265488, 6.62549193, 19.71831982, 29.6056644,
             23.89917938]


def test_reml_converges_where_fisher_scoring_cycles():
    import warnings as _w

    with _w.catch_warnings():
        _w.simplefilter("error")  # no ConvergenceWarning: the estimate is found
        r = cl.rma(CYCLING_Y, CYCLING_V, method="REML")
    assert r.converged
    np.testing.assert_allclose(r.tau2, 2.3263038530566038, rtol=1e-8)
    np.testing.assert_allclose(r.estimate, 1.7696298077489534, rtol=1e-8)
    np.testing.assert_allclose(r.se, 0.91656458932093299, rtol=1e-7)


def test_eb_converges_where_fixed_point_cycles():
    r = cl.rma(CYCLING_Y, CYCLING_V, method="EB")
    assert r.converged
    np.testing.assert_allclose(r.tau2, 0.035399785013930658, rtol=1e-8)
