"""Tests for bayesmeta.bias (Egger, Begg, trim-and-fill, leave-one-out).

Reference: metafor 3.8-1 on R 4.2.2 via tests/reference/metafor_bias.R ->
tests/reference/metafor_bias.json (%.17g; versions recorded in the file), plus closed forms
(OLS of yi/sei on 1/sei for Egger's classic test) and scipy's Kendall tau for Begg's test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayesmeta import bias, results
from bayesmeta.exceptions import DataError, DataWarning
from tests.tolerances import METAFOR, OPTIMIZER

REF = json.loads((Path(__file__).parent / "reference" / "metafor_bias.json").read_text())
DATASETS = REF["datasets"]


def _tol(method):
    # closed-form FE/DL: METAFOR tier; REML is iterative (both sides run to a 1e-12 step)
    return OPTIMIZER if method == "REML" else METAFOR


def _close(actual, expected, tol):
    expected = np.asarray([math.nan if e is None else e for e in np.atleast_1d(expected)],
                          dtype=float)
    np.testing.assert_allclose(np.atleast_1d(np.asarray(actual, dtype=float)), expected,
                               equal_nan=True, **tol)


def test_reference_file_is_complete():
    """Guard the guard: every dataset has every variant the R script promises."""
    assert REF["metafor_version"] and REF["R_version"].startswith("R version")
    assert set(DATASETS) == {"bcg", "hackshaw1998", "bcg_k3", "ties"}
    for name, d in DATASETS.items():
        assert len(d["trimfill"]) == 3 * 2 * 3
        assert len(d["leave1out"]) == 3 * 2
        assert "lm" in d["regtest"]
        if len(d["yi"]) > 3:
            assert len(d["regtest"]) == 1 + 3 * 2
    # the reference covers both sides with filled studies, and R0's p-value
    fills = {(d["trimfill"][key]["side"], d["trimfill"][key]["k0"] > 0)
             for d in DATASETS.values() for key in d["trimfill"]}
    assert ("left", True) in fills and ("right", True) in fills


# ---------------------------------------------------------------- Egger

REG_CASES = [(n, key) for n, d in DATASETS.items() for key in d["regtest"]]


@pytest.mark.reference
@pytest.mark.parametrize("name,key", REG_CASES)
def test_egger_matches_metafor_regtest(name, key):
    d = DATASETS[name]
    r = d["regtest"][key]
    if key == "lm":
        res = bias.egger_test(d["yi"], d["vi"], model="lm")
        tol = METAFOR
    else:
        _, method, test = key.split("_")
        res = bias.egger_test(d["yi"], d["vi"], method=method, test=test)
        tol = _tol(method)
        _close(res.tau2, r["tau2"], tol)
        _close(res.se, r["slope_se"], tol)
    _close(res.coef, r["slope"], tol)
    _close(res.statistic, r["zval"], tol)
    _close(res.p_value, r["pval"], tol)
    _close(res.limit_estimate, r["est"], tol)
    _close([res.ci_low, res.ci_high], [r["ci_lb"], r["ci_ub"]], tol)
    if r["dfs"] is not None and key.endswith(("knha", "lm")) or key == "lm":
        assert res.df == r["dfs"]


def test_egger_classic_equals_ols_of_standardized_effects():
    """Closed form: Egger (1997) regresses yi/sei on 1/sei by OLS; the intercept and its t test
    equal model='lm''s asymmetry coefficient and test."""
    d = DATASETS["hackshaw1998"]
    yi, sei = np.asarray(d["yi"]), np.sqrt(d["vi"])
    res = stats.linregress(1 / sei, yi / sei)
    k = yi.size
    eg = bias.egger_test(yi, sei=sei, model="lm")
    np.testing.assert_allclose(eg.coef, res.intercept, **METAFOR)
    np.testing.assert_allclose(eg.se, res.intercept_stderr, **METAFOR)
    np.testing.assert_allclose(eg.limit_estimate, res.slope, **METAFOR)
    t = res.intercept / res.intercept_stderr
    np.testing.assert_allclose(eg.p_value, 2 * stats.t.sf(abs(t), k - 2), **METAFOR)
    assert eg.df == k - 2


def test_egger_output_and_frame():
    d = DATASETS["bcg"]
    eg = bias.egger_test(d["yi"], d["vi"])
    text = str(eg)
    assert "Funnel Plot Asymmetry" in text and "z = " in text and "Limit Estimate" in text
    f = eg.to_frame(analysis="bcg", scale="logRR")
    assert tuple(f.columns) == results.SCHEMA
    assert list(f["parameter"]) == ["egger_coef", "mu_limit"]
    np.testing.assert_allclose(f["p_value"].iloc[0], eg.p_value, **METAFOR)
    lm = bias.egger_test(d["yi"], d["vi"], model="lm")
    assert "t = " in str(lm) and lm.to_frame()["df"].iloc[0] == len(d["yi"]) - 2


def test_egger_errors_and_missing():
    with pytest.raises(DataError, match="at least 3 studies"):
        bias.egger_test([0.1, 0.2], [0.1, 0.2])
    with pytest.raises(DataError, match="different standard errors"):
        bias.egger_test([0.1, 0.2, 0.5], [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="Invalid model 'glm'"):
        bias.egger_test([0.1, 0.2, 0.5], [0.1, 0.2, 0.3], model="glm")
    with pytest.raises(ValueError, match="Did you mean 'REML'"):
        bias.egger_test([0.1, 0.2, 0.5], [0.1, 0.2, 0.3], method="REMLL")
    with pytest.raises(ValueError, match="Length mismatch: 'yi' has 3 values but 'vi' has 2"):
        bias.egger_test([0.1, 0.2, 0.5], [0.1, 0.2])
    with pytest.raises(DataError, match=r"'vi' must be finite and > 0.*\['B'\]"):
        bias.egger_test([0.1, 0.2, 0.5], [0.1, 0.0, 0.3], study=["A", "B", "C"])
    d = DATASETS["bcg"]
    yi = list(d["yi"]) + [float("nan")]
    vi = list(d["vi"]) + [0.1]
    with pytest.warns(DataWarning, match=r"1 studies with missing yi or vi were omitted: \['X'\]"):
        eg = bias.egger_test(yi, vi, model="lm", study=d["study"] + ["X"])
    _close(eg.statistic, d["regtest"]["lm"]["zval"], METAFOR)


# ---------------------------------------------------------------- Begg

@pytest.mark.reference
@pytest.mark.parametrize("name", list(DATASETS))
def test_rank_test_matches_metafor(name):
    d = DATASETS[name]
    rk = bias.rank_test(d["yi"], d["vi"])
    _close(rk.tau, d["ranktest"]["tau"], METAFOR)
    _close(rk.p_value, d["ranktest"]["pval"], METAFOR)
    assert rk.exact == (name != "ties")  # ties -> normal approximation, as cor.test


def test_rank_test_exact_p_agrees_with_scipy():
    """Independent reference: scipy.stats.kendalltau's exact null distribution (no ties)."""
    rng = np.random.default_rng(1)
    for k in (4, 7, 12, 25):
        yi = rng.normal(size=k)
        vi = rng.uniform(0.01, 0.5, size=k)
        rk = bias.rank_test(yi, vi)
        w = 1 / vi
        th = np.sum(w * yi) / np.sum(w)
        ref = stats.kendalltau((yi - th) / np.sqrt(vi - 1 / np.sum(w)), vi, method="exact")
        np.testing.assert_allclose(rk.tau, ref.statistic, **METAFOR)
        np.testing.assert_allclose(rk.p_value, ref.pvalue, **METAFOR)


def test_rank_test_output():
    d = DATASETS["hackshaw1998"]
    rk = bias.rank_test(d["yi"], d["vi"])
    assert "Kendall's tau = 0.1441" in str(rk)
    f = rk.to_frame()
    assert tuple(f.columns) == results.SCHEMA and f["parameter"].iloc[0] == "kendall_tau"


# ---------------------------------------------------------------- trim and fill

TF_CASES = [(n, key) for n, d in DATASETS.items() for key in d["trimfill"]]


@pytest.mark.reference
@pytest.mark.parametrize("name,key", TF_CASES)
def test_trimfill_matches_metafor(name, key):
    d = DATASETS[name]
    r = d["trimfill"][key]
    method, est, side = key.split("_")
    tf = bias.trim_and_fill(d["yi"], d["vi"], method=method, estimator=est,
                            side=None if side == "auto" else side)
    tol = _tol(method)
    assert tf.side == r["side"]
    assert tf.k0 == r["k0"]
    assert tf.k + tf.k0 == r["k"]
    _close(tf.se_k0, r["se_k0"], METAFOR)
    _close(tf.p_k0, r["p_k0"], METAFOR)
    for ours, theirs in [("estimate", "estimate"), ("se", "se"), ("ci_low", "ci_lb"),
                         ("ci_high", "ci_ub"), ("statistic", "zval"), ("p_value", "pval")]:
        _close(getattr(tf, ours), r[theirs], tol)
    np.testing.assert_allclose(tf.tau2, r["tau2"], rtol=tol["rtol"], atol=1e-9)
    np.testing.assert_allclose(tf.fill_yi, np.asarray(r["fill_yi"], dtype=float), **tol)
    np.testing.assert_allclose(tf.fill_vi, np.asarray(r["fill_vi"], dtype=float), **METAFOR)


def test_trimfill_output_and_frame():
    d = DATASETS["hackshaw1998"]
    tf = bias.trim_and_fill(d["yi"], d["vi"], study=d["study"])
    assert tf.k0 == 7 and tf.side == "left"
    assert "missing studies on the left side: 7" in str(tf)
    s = tf.studies
    assert len(s) == len(d["yi"]) + 7 and s["filled"].sum() == 7
    assert s["study"].iloc[-1] == "Filled 7"
    f = tf.to_frame(scale="logOR")
    assert tuple(f.columns) == results.SCHEMA
    assert f.set_index("parameter").loc["k0", "estimate"] == 7
    r0 = bias.trim_and_fill(d["yi"], d["vi"], estimator="R0")
    assert "Test of H0" in str(r0)


def test_trimfill_errors():
    with pytest.raises(ValueError, match="Invalid estimator 'Q1'"):
        bias.trim_and_fill([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], estimator="Q1")
    with pytest.raises(ValueError, match="Invalid side 'up'"):
        bias.trim_and_fill([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], side="up")
    with pytest.raises(DataError, match="at least 2 studies"):
        bias.trim_and_fill([0.1], [0.1])


# ---------------------------------------------------------------- leave one out

L1_CASES = [(n, key) for n, d in DATASETS.items() for key in d["leave1out"]]


@pytest.mark.reference
@pytest.mark.parametrize("name,key", L1_CASES)
def test_leave1out_matches_metafor(name, key):
    d = DATASETS[name]
    r = d["leave1out"][key]
    method, test = key.split("_")
    t = bias.leave_one_out(d["yi"], d["vi"], method=method, test=test, study=d["study"]).table
    tol = _tol(method)
    assert list(t["study"]) == d["study"]
    for ours, theirs in [("estimate", "estimate"), ("se", "se"), ("statistic", "stat"),
                         ("p_value", "pval"), ("ci_low", "ci_lb"), ("ci_high", "ci_ub"),
                         ("q", "Q"), ("q_p", "Qp"), ("h2", "H2")]:
        _close(t[ours], r[theirs], tol)
    # tau² and I² at the boundary (tau² ~ 1e-10 in metafor, 0 here): absolute tolerance
    np.testing.assert_allclose(t["tau2"], np.asarray(r["tau2"], float), rtol=tol["rtol"],
                               atol=1e-9)
    np.testing.assert_allclose(t["i2"], np.asarray(r["I2"], float), rtol=tol["rtol"], atol=1e-6)


def test_leave1out_output_and_frame():
    d = DATASETS["bcg"]
    lo = bias.leave_one_out(d["yi"], d["vi"], method="DL", study=d["study"])
    text = str(lo)
    assert "Leave-one-out" in text and "Aronson 1948" in text
    f = lo.to_frame(scale="logRR")
    assert tuple(f.columns) == results.SCHEMA
    assert len(f) == 2 * len(d["yi"]) and f["parameter"].iloc[0] == "mu[-Aronson 1948]"
    assert isinstance(lo.table, pd.DataFrame)


def test_leave1out_k2_identical_yi():
    """Edge cases: k = 2 (each fit has k = 1: tau² = 0, estimate = the other study) and
    identical yi (Q = 0, tau² truncated at 0)."""
    lo = bias.leave_one_out([0.3, -0.1], [0.04, 0.09], method="DL")
    np.testing.assert_allclose(lo.table["estimate"], [-0.1, 0.3], **METAFOR)
    np.testing.assert_allclose(lo.table["se"], [0.3, 0.2], **METAFOR)
    lo = bias.leave_one_out([0.2] * 4, [0.1, 0.2, 0.3, 0.4], method="REML")
    np.testing.assert_allclose(lo.table["tau2"], 0.0, atol=1e-12)
    np.testing.assert_allclose(lo.table["estimate"], 0.2, **METAFOR)
