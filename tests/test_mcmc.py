"""PyMC models in bayesmeta.mcmc.

References used (one per test, see docstrings): the exact NNHM engine (quadrature,
``bayesmeta.exact``), the classical multilevel REML twin (sanity only), and closed-form rules
(schema, overlap logic). MCMC tolerances are always ``Z_MCSE * mcse`` from the run itself.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest

from bayesmeta import mcmc, priors, results
from bayesmeta.exceptions import DataError, DataWarning, SpecError
from tests.tolerances import Z_MCSE


def _mcse(da, method, prob=None):
    kw = {"method": method}
    if prob is not None:
        kw["prob"] = prob
    r = az.mcse(da.to_dataset(name="x"), **kw)
    r = r.ds if hasattr(r, "ds") else r
    return float(r["x"])


def _z_scores(fit, exact):
    """(name, z) for mean, sd, 2.5/50/97.5% quantiles of mu, tau, theta_new, in MCSE units."""
    post = fit.datatree["posterior"]
    out = []
    for name in ("mu", "tau", "theta_new"):
        da = post[name]
        x = np.asarray(da.values).ravel()
        ref = exact.summary(name)
        checks = [("mean", x.mean(), ref["mean"], _mcse(da, "mean")),
                  ("sd", x.std(ddof=1), ref["sd"], _mcse(da, "sd"))]
        for q, key in ((0.025, "lower"), (0.5, "median"), (0.975, "upper")):
            checks.append((f"q{q}", np.quantile(x, q), ref[key], _mcse(da, "quantile", q)))
        out += [(f"{name}.{what}", (est - ref_v) / se) for what, est, ref_v, se in checks]
    return out


def test_nnhm_matches_exact_posterior(nnhm_bcg_fit, bcg):
    """Reference: exact NNHM posterior by quadrature (bayesmeta.exact.fit_exact), same priors.
    Every summary (mean, sd, 2.5/50/97.5% quantiles of mu, tau, theta_new) within
    Z_MCSE x MCSE (az.mcse with method mean/sd/quantile)."""
    from bayesmeta import exact

    ex = exact.fit_exact(bcg["yi"], bcg["sei"], mu_prior=priors.Normal(0.0, 4.0),
                         tau_prior=priors.HalfNormal(0.5))
    assert nnhm_bcg_fit.clean, str(nnhm_bcg_fit.diagnostics)
    z = _z_scores(nnhm_bcg_fit, ex)
    worst = max(z, key=lambda t: abs(t[1]))
    print(f"\nNNHM vs exact: max |z| = {abs(worst[1]):.2f} MCSE ({worst[0]}) over {len(z)} "
          "summaries")
    assert abs(worst[1]) <= Z_MCSE, f"worst {worst}; all {z}"


def test_nnhm_result_frame_print_and_save(nnhm_bcg_fit, tmp_path):
    """Reference: the shared schema (bayesmeta.results.SCHEMA) and the style guide §10.4."""
    df = nnhm_bcg_fit.to_frame()
    assert tuple(df.columns) == results.SCHEMA
    assert set(df["source"]) == {"bayesian"}
    assert df.attrs["ci_prob"] == 0.95 and df.attrs["clean"] is True
    mu = df.set_index("parameter").loc["mu"]
    x = nnhm_bcg_fit.draws("mu")
    np.testing.assert_allclose(mu["estimate"], x.mean(), rtol=1e-12)
    np.testing.assert_allclose([mu["ci_low"], mu["ci_high"]], np.quantile(x, [0.025, 0.975]),
                               rtol=1e-10)
    assert {"theta[Aronson 1948]", "tau", "tau2", "theta_new"} <= set(df["parameter"])
    text = str(nnhm_bcg_fit)
    assert "95% ETI" in text and "Diagnostics (clean)" in text and "HalfNormal" in text
    assert "eti89" not in "".join(nnhm_bcg_fit.summary.columns)
    path = tmp_path / "fit.nc"
    nnhm_bcg_fit.save(path)
    back = az.from_netcdf(path)
    np.testing.assert_array_equal(back["posterior"]["mu"].values,
                                  nnhm_bcg_fit.datatree["posterior"]["mu"].values)
    assert back.attrs["seed"] == nnhm_bcg_fit.settings["seed"]


def test_same_seed_same_draws_and_compile_reuse(nnhm_bcg_fit, bcg):
    """Reference: determinism contract (same seed -> bit-identical draws); a refit at the same
    shapes reuses the compiled model (compile time 0)."""
    kw = dict(study=bcg["study"], measure="OR", mu_prior=priors.Normal(0.0, 4.0),
              tau_prior=priors.HalfNormal(0.5))
    again = mcmc.fit_nnhm(bcg["yi"], bcg["sei"], **kw)
    np.testing.assert_array_equal(again.draws("mu"), nnhm_bcg_fit.draws("mu"))
    assert again.compile_seconds == 0.0
    other = mcmc.fit_nnhm(bcg["yi"], bcg["sei"], seed=nnhm_bcg_fit.settings["seed"] + 1,
                          warn=False, **kw)
    assert not np.array_equal(other.draws("mu"), nnhm_bcg_fit.draws("mu"))


def test_nnhm_same_seed_pymc_sampler():
    """Reference: determinism contract for the pymc sampler too (tiny fit)."""
    y, s = np.array([0.1, -0.3, 0.4]), np.array([0.2, 0.3, 0.25])
    kw = dict(mu_prior="normal:0:1", tau_prior="halfnormal:0.5", sampler="pymc", draws=30,
              tune=30, chains=2, cores=1, seed=7, warn=False)
    a, b = mcmc.fit_nnhm(y, s, **kw), mcmc.fit_nnhm(y, s, **kw)
    np.testing.assert_array_equal(a.draws("tau"), b.draws("tau"))
    assert a.datatree["sample_stats"].attrs["inference_library"] == "pymc"


def test_settings_and_input_validation():
    """Reference: the error-message conventions (style §10.5)."""
    with pytest.raises(SpecError, match="Invalid sampler 'stan'"):
        mcmc.SamplerSettings(sampler="stan")
    with pytest.raises(SpecError, match="Invalid target_accept"):
        mcmc.SamplerSettings(target_accept=1.2)
    with pytest.raises(TypeError, match="unknown sampling argument"):
        mcmc.fit_nnhm([0.1, 0.2], [0.1, 0.1], tau_prior="halfnormal:1", mu_prior="normal:0:1",
                      n_draws=10)
    with pytest.raises(DataError, match="Length mismatch"):
        mcmc.fit_nnhm([0.1, 0.2], [0.1], tau_prior="halfnormal:1")
    with pytest.raises(DataError, match="sei' must be > 0"):
        mcmc.fit_nnhm([0.1, 0.2], [0.1, 0.0], tau_prior="halfnormal:1")
    with pytest.raises(DataError, match="whole numbers"):
        mcmc.fit_binomial_normal([3, 5], [10, 4], [1, 2], [10, 10])


# ---------------------------------------------------------------------------------------------
# nested model
# ---------------------------------------------------------------------------------------------

def test_nested_meld2014_runs_clean_and_agrees_with_classical_twin(nested_meld_fit, meld2014):
    """2014 MELD arm data (2 studies x 3 weeks, study effect shared over time), package defaults.

    Checks: 0 divergences and a clean fit (required of bundled data).
    Reference (sanity check, NOT an accuracy test): the classical twin
    ``classical.fit_multilevel`` (metafor rma.mv, random = ~ 1 | study/time, REML): same sign of
    the overall effect and the REML estimate inside the 95% credible interval. The models differ
    (priors; cell means by week; per-cell tau), so no closer agreement is expected."""
    from bayesmeta import classical

    fit, caught = nested_meld_fit
    assert fit.diagnostics.divergences == 0, str(fit.diagnostics)
    assert fit.clean, str(fit.diagnostics)
    assert not any("divergent" in m for m in caught)
    assert fit.extra["studies_with_shared_effect"] == ["Amer ME 2011", "Peng L 2011"]
    ml = classical.fit_multilevel(meld2014["yi"], meld2014["vi"], meld2014["study"],
                                  meld2014["time"], method="REML", measure="MD")
    row = fit.to_frame().set_index("parameter").loc["mu"]
    print(f"\nnested mu = {row['estimate']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]; "
          f"rma.mv twin mu = {ml.estimate:.3f} [{ml.ci_low:.3f}, {ml.ci_high:.3f}]")
    assert np.sign(row["estimate"]) == np.sign(ml.estimate)
    assert row["ci_low"] <= ml.estimate <= row["ci_high"]
    df = fit.to_frame()
    assert {"mu", "mu[all, 2]", "mu[all, 4]", "mu[all, 24]", "tau[all, 24]", "sigma_study"} <= \
        set(df["parameter"])
    assert set(df.loc[df["parameter"].str.startswith("mu[all"), "time"]) == {"2", "4", "24"}


def test_nested_two_subgroups_2023_contrast(msc2023_meld_rows):
    """2023 published pooled MELD MDs by ACLF/cirrhosis and week. Overlapping all-patients rows at
    weeks 12 and 24 are dropped with a DataWarning naming them; the contrast ACLF - cirrhosis is
    reported at week 24 (both subgroups observed) and overall, with P(contrast < 0) equal to the
    fraction of negative draws (reference: definition)."""
    with pytest.warns(DataWarning, match=r"2 overlapping pooled rows were dropped.*time=12"):
        fit = mcmc.fit_nested(msc2023_meld_rows, overlap="drop_pooled", outcome="MELD",
                              draws=500, warn=False)
    assert fit.diagnostics.divergences == 0, str(fit.diagnostics)
    assert fit.extra["contrast"] == ("ACLF", "cirrhosis")
    df = fit.to_frame().set_index("parameter")
    assert {"mu[ACLF]", "mu[cirrhosis]", "contrast[24]", "contrast"} <= set(df.index)
    assert df.loc["contrast[24]", "subgroup"] == "ACLF - cirrhosis"
    d = fit.datatree["posterior"]["contrast"].sel(time="24").values.ravel()
    assert fit.extra["p_contrast_negative"]["24"] == pytest.approx(np.mean(d < 0), abs=0)
    assert "P(contrast < 0)" in str(fit)


def test_nested_overlap_refused(msc2023_meld_rows):
    """Reference: the overlap rule (an all-patients pooled estimate and subgroup estimates of the
    same patients at the same time) -> DataError naming the rows; never counted twice."""
    with pytest.raises(DataError, match=r"overlapping rows would count the same patients twice"
                                        r".*time=24.*subgroup=cirrhosis"):
        mcmc.fit_nested(msc2023_meld_rows)
    with pytest.warns(DataWarning, match="dropped"):
        kept = mcmc._prepare_nested(msc2023_meld_rows, "drop_pooled")
    assert mcmc.find_overlaps(kept) == []
    assert len(kept) == len(msc2023_meld_rows) - 2


def test_nested_overlap_study_rows_and_subgroup_pooled():
    """A subgroup pooled row and the study rows it pools at the same time overlap."""
    df = pd.DataFrame({"study": ["A", "B", ""], "time": [4, 4, 4], "subgroup": ["ACLF"] * 3,
                       "row_kind": ["study", "study", "subgroup_pooled"],
                       "yi": [-1.0, -2.0, -1.5], "sei": [0.5, 0.6, 0.4]})
    with pytest.raises(DataError, match="subgroup pooled estimate and the study rows"):
        mcmc.fit_nested(df)
    ov = mcmc.find_overlaps(mcmc._prepare_nested(df.iloc[:2], "raise"))
    assert ov == []


@pytest.mark.parametrize("change, match", [
    (dict(row_kind="pooledd"), "Invalid row_kind"),
    (dict(outcome=["MELD", "ALB"]), "fit one outcome at a time"),
    (dict(yi=[np.nan, 1.0]), "'yi' missing"),
])
def test_nested_input_errors(change, match):
    df = pd.DataFrame({"study": ["A", "A"], "time": [2, 4], "yi": [1.0, 2.0], "sei": [1.0, 1.0]})
    for k, v in change.items():
        df[k] = v
    with pytest.raises(DataError, match=match):
        mcmc.fit_nested(df)


# ---------------------------------------------------------------------------------------------
# longer accuracy runs
# ---------------------------------------------------------------------------------------------

@pytest.mark.sampling
@pytest.mark.parametrize("k, tp", [(2, priors.HalfNormal(0.5)), (5, priors.HalfCauchy(0.3))])
def test_nnhm_matches_exact_small_k(k, tp):
    """Reference: exact quadrature; k = 2 (half-normal: with a half-Cauchy prior and k = 2 the
    posterior SD of tau is infinite, so no MCSE of it exists) and k = 5 with a half-Cauchy."""
    from bayesmeta import exact

    rng = np.random.default_rng(k)
    y, s = rng.normal(0.2, 0.3, k), rng.uniform(0.1, 0.4, k)
    mp = priors.Normal(0.0, 2.0)
    fit = mcmc.fit_nnhm(y, s, mu_prior=mp, tau_prior=tp)
    assert fit.diagnostics.divergences == 0
    ex = exact.fit_exact(y, s, mu_prior=mp, tau_prior=tp)
    z = _z_scores(fit, ex)
    assert max(abs(v) for _, v in z) <= Z_MCSE, z


@pytest.mark.sampling
def test_binomial_normal_close_to_nnhm_on_large_counts(bcg):
    """Reference (approximation): with large counts the binomial likelihood is close to the
    normal approximation of the log OR, so the binomial-normal mu and tau posteriors are close to
    the exact NNHM ones (tolerance: 0.1 posterior SD + Z_MCSE x MCSE; an approximation check)."""
    from bayesmeta import exact

    fit = mcmc.fit_binomial_normal(bcg["ai"], bcg["n1i"], bcg["ci"], bcg["n2i"],
                                   study=bcg["study"], mu_prior=priors.Normal(0.0, 4.0),
                                   tau_prior=priors.HalfNormal(0.5))
    assert fit.diagnostics.divergences == 0
    ex = exact.fit_exact(bcg["yi"], bcg["sei"], mu_prior=priors.Normal(0.0, 4.0),
                         tau_prior=priors.HalfNormal(0.5))
    for name in ("mu", "tau"):
        s = fit.summary.loc[name]
        ref = ex.summary(name)
        assert abs(s["mean"] - ref["mean"]) <= 0.1 * ref["sd"] + Z_MCSE * s["mcse_mean"], name


@pytest.mark.sampling
def test_binomial_normal_zero_cells_no_correction():
    """Hahn 2001 (sparse, double-zero tables): fits without any continuity correction and the
    double-zero studies' theta equals the prior predictive of theta (no information)."""
    from pathlib import Path

    d = pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "hahn2001.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        fit = mcmc.fit_binomial_normal(d["ai"], d["n1i"], d["ci"], d["n2i"], study=d["study"])
    assert fit.diagnostics.divergences == 0
    assert np.isfinite(fit.summary.loc["mu", "mean"])


@pytest.mark.sampling
def test_prior_sensitivity_table(bcg):
    """Reference: priors.prior_sets names; one row per (prior set, parameter)."""
    tab = mcmc.prior_sensitivity(bcg["yi"], bcg["sei"], measure="OR", warn=False)
    assert set(tab["prior_set"]) == set(priors.prior_sets("OR"))
    assert {"mu", "tau", "theta_new"} <= set(tab["parameter"])


# ---------------------------------------------------------------------------------------------
# nested model: padding and one compile for several datasets (fit_nested_many)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nested_many_fits(msc2023_meld_rows):
    """Two datasets of one structure (>1 subgroup, >1 time, ACLF - cirrhosis contrast, no study
    effect, no tau rows) and different sizes: A = the 2023 MELD rows after dropping overlaps
    (4 rows, 3 subgroups, 3 weeks), B = A without its week-4 all-patients row (3 rows, 2
    subgroups, 2 weeks). fit_nested_many pads B to A's sizes; B is also fitted unpadded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        a = mcmc._prepare_nested(msc2023_meld_rows, "drop_pooled")
    b = a[a["subgroup"] != "all"].reset_index(drop=True)
    kw = dict(measure="MD", mu_prior=priors.Normal(0.0, 5.0), tau_prior=priors.HalfNormal(1.0),
              draws=1000, warn=False)
    many = mcmc.fit_nested_many({"A": a, "B": b}, options={"B": {"seed": 7}}, **kw)
    alone_a = mcmc.fit_nested(a, **kw)
    alone_b = mcmc.fit_nested(b, pad_to={}, **{**kw, "seed": 8})   # reference: unpadded model
    return many, alone_a, alone_b


def _z(f1, f2, label):
    s1, s2 = f1.summary.loc[label], f2.summary.loc[label]
    return float((s1["mean"] - s2["mean"]) / np.hypot(s1["mcse_mean"], s2["mcse_mean"]))


def test_nested_padded_agrees_with_unpadded(nested_many_fits):
    """Padding cannot change the posterior of the real parameters: padded rows have
    obs_mask 0 (a constant N(0 | 0, 1) likelihood term) and padded subgroups/weeks only add
    independent N(0, 1) z's no real row uses, so the joint posterior factorises into
    p(real | y) x N(z_pad | 0, 1). Reference: the unpadded fit of the same data (independent
    seed); overall mean, subgroup means and cell means agree within Z_MCSE x MCSE."""
    many, _, alone_b = nested_many_fits
    pb = many["B"]
    # both padded to A's size class, NESTED_MIN_PAD (A: 4 rows, 3 subgroups, 3 weeks)
    assert pb.extra["padded_sizes"] == mcmc.NESTED_MIN_PAD
    # unpadded: real sizes (the study dim has length >= 1: one unused, switched-off z_study)
    assert alone_b.extra["padded_sizes"] == {**alone_b.extra["real_sizes"], "study": 1}
    labels = ["mu", "mu[ACLF]", "mu[cirrhosis]", "mu[ACLF, 12]", "mu[ACLF, 24]",
              "mu[cirrhosis, 24]", "contrast", "contrast[24]"]
    zs = {lab: _z(pb, alone_b, lab) for lab in labels}
    print("\npadded vs unpadded z:", {k: round(v, 2) for k, v in zs.items()})
    assert max(abs(v) for v in zs.values()) < Z_MCSE, zs
    assert pb.diagnostics.divergences == 0 and alone_b.diagnostics.divergences == 0


def test_nested_many_compiles_once_and_matches_separate_fits(nested_many_fits):
    """fit_nested_many: one compiled model for both datasets (the second result's compile
    seconds are 0); each result equals the separate fit within Z_MCSE x MCSE (reference: the
    separate fits; A is at its own sizes so its separate fit reuses the cached model)."""
    many, alone_a, alone_b = nested_many_fits
    assert list(many) == ["A", "B"]
    if many["A"].settings["sampler"] == "nutpie":
        assert many["B"].compile_seconds == 0.0
    assert many["B"].sampling_seconds > 0
    assert many["B"].settings["seed"] == 7
    for other, ref in (("A", alone_a), ("B", alone_b)):
        zs = [_z(many[other], ref, lab) for lab in ref.summary.index
              if lab.startswith(("mu", "contrast"))]
        assert max(map(abs, zs)) < Z_MCSE, (other, zs)


def test_nested_padded_entries_never_in_outputs(nested_many_fits):
    """Reference: the real labels of B (rule): every dim of every DataTree group has exactly
    B's subgroups, weeks and rows; summary/to_frame list the same parameters as the unpadded
    fit; no generic padded label (g*, t*, o*) anywhere."""
    many, _, alone_b = nested_many_fits
    pb = many["B"]
    for node in pb.datatree.subtree:
        ds = node.ds
        if "subgroup" in ds.dims:
            assert list(ds["subgroup"].values) == ["ACLF", "cirrhosis"]
        if "time" in ds.dims:
            assert list(ds["time"].values) == ["12", "24"]
        if "obs" in ds.dims:
            assert ds.sizes["obs"] == 3
            assert not any(str(v).startswith("o") for v in ds["obs"].values)
    assert list(pb.summary.index) == list(alone_b.summary.index)
    fr = pb.to_frame()
    assert list(fr["parameter"]) == list(alone_b.to_frame()["parameter"])
    assert not fr["parameter"].str.contains(r"\[(?:g|t|o|s)\d", regex=True).any()
    assert set(fr["time"]) <= {"", "12", "24"}


# ---------------------------------------------------------------------------------------------
# nested model: levels switched by data flags, one compiled model for every structure
# ---------------------------------------------------------------------------------------------

#: Four published pooled estimates of one cell (all patients, one week): one subgroup, one time,
#: no study with two rows, no study rows -> every level switched off (use_subgroup = use_time =
#: use_study = 0, het_mask = 0).
FLAT = pd.DataFrame({"time": [4] * 4, "row_kind": ["pooled"] * 4,
                     "yi": [-1.2, -0.4, -2.0, -0.9], "sei": [0.5, 0.8, 1.1, 0.6]})
FLAT_MU_PRIOR = priors.Normal(0.5, 2.0)
_LEVEL_PARAMS = ("sigma_subgroup", "z_subgroup", "sigma_time", "z_cell", "sigma_study",
                 "z_study", "u_study", "tau0", "sigma_logtau", "z_logtau", "tau", "contrast",
                 "contrast_subgroup")


@pytest.fixture(scope="module")
def flags_fits(meld2014):
    """Two datasets of different structure through fit_nested_many: the 2014 MELD arm data
    (time level, shared study effect, per-cell tau; no subgroup level) and FLAT (no level at
    all). Same prior families (Normal mu, HalfNormal heterogeneity/tau), so one compile."""
    return mcmc.fit_nested_many(
        {"meld": meld2014, "flat": FLAT}, measure="MD", warn=False,
        options={"flat": {"mu_prior": FLAT_MU_PRIOR, "tau_prior": priors.HalfNormal(1.0),
                          "seed": 11}})


def test_nested_levels_off_equals_exact_reduction(flags_fits):
    """With every level switched off the nested model reduces exactly to y_r ~ N(mu, se_r²),
    mu ~ N(m0, s0²) (mu_subgroup = mu, mu_cell = mu_subgroup, u = 0, no tau in any variance;
    the switched-off parameters are prior-only). Reference: the conjugate closed form,
    mu | y ~ N(m, v) with 1/v = 1/s0² + sum 1/se_r², m = v (m0/s0² + sum y_r/se_r²). Mean, SD and
    2.5/50/97.5% quantiles within Z_MCSE x MCSE; mu_cell equals mu draw for draw."""
    from scipy import stats

    fit = flags_fits["flat"]
    assert fit.diagnostics.divergences == 0, str(fit.diagnostics)
    w = 1.0 / FLAT["sei"].to_numpy() ** 2
    prec = 1.0 / FLAT_MU_PRIOR.sd ** 2 + w.sum()
    m = (FLAT_MU_PRIOR.mean / FLAT_MU_PRIOR.sd ** 2 + (w * FLAT["yi"].to_numpy()).sum()) / prec
    ref = stats.norm(m, prec ** -0.5)
    da = fit.datatree["posterior"]["mu"]
    x = da.values.ravel()
    checks = [("mean", x.mean(), ref.mean(), _mcse(da, "mean")),
              ("sd", x.std(ddof=1), ref.std(), _mcse(da, "sd"))]
    checks += [(f"q{q}", np.quantile(x, q), ref.ppf(q), _mcse(da, "quantile", q))
               for q in (0.025, 0.5, 0.975)]
    z = {name: (est - r) / se for name, est, r, se in checks}
    print("\nlevels off vs closed form z:", {k: round(float(v), 2) for k, v in z.items()})
    assert max(map(abs, z.values())) <= Z_MCSE, z
    post = fit.datatree["posterior"]
    np.testing.assert_array_equal(post["mu_cell"].sel(subgroup="all", time="4").values,
                                  post["mu"].values)
    np.testing.assert_array_equal(post["mu_subgroup"].sel(subgroup="all").values,
                                  post["mu"].values)


def test_nested_different_structures_share_one_compile(flags_fits):
    """Reference: the cache contract (key = prior families + padded sizes, levels are data):
    the second dataset, of a different structure, reuses the first one's compiled model."""
    meld, flat = flags_fits["meld"], flags_fits["flat"]
    assert meld.extra["padded_sizes"] == flat.extra["padded_sizes"] == mcmc.NESTED_MIN_PAD
    if flat.settings["sampler"] == "nutpie":
        assert flat.compile_seconds == 0.0
    assert meld.clean, str(meld.diagnostics)


def test_nested_switched_off_parameters_never_in_outputs(flags_fits):
    """Reference: the model without the level (rule): FLAT reports only mu and its one cell;
    the MELD fit reports its time, study and tau levels but nothing of the subgroup level or a
    contrast. No switched-off parameter in any DataTree group, the summary or to_frame(); no
    study dim without a shared study effect."""
    flat, meld = flags_fits["flat"], flags_fits["meld"]
    assert list(flat.to_frame()["parameter"]) == ["mu", "mu[all, 4]"]
    assert list(flat.summary.index) == ["mu", "mu[all, 4]"]
    for node in flat.datatree.subtree:
        assert not set(_LEVEL_PARAMS) & set(node.ds.data_vars), node.path
        assert "study" not in node.ds.dims, node.path
    mp = set(meld.to_frame()["parameter"])
    assert {"sigma_time", "sigma_study", "tau0", "sigma_logtau", "tau[all, 24]"} <= mp
    assert not {"sigma_subgroup", "contrast", "mu[all]"} & mp
    post = meld.datatree["posterior"]
    assert not {"sigma_subgroup", "z_subgroup", "contrast", "contrast_subgroup"} & \
        set(post.data_vars)
    assert list(post["study"].values) == ["Amer ME 2011", "Peng L 2011"]


_REPRO_SCRIPT = r"""
import sys, warnings
import numpy as np, pandas as pd
warnings.simplefilter("ignore")
from bayesmeta import mcmc
mcmc.NUTPIE_ROUTE = sys.argv[3]
d = pd.read_csv(sys.argv[1])
d["yi"] = d["m1i"] - d["m2i"]
d["sei"] = np.sqrt(d["sd1i"] ** 2 / d["n1i"] + d["sd2i"] ** 2 / d["n2i"])
fit = mcmc.fit_nested(d[["study", "time", "yi", "sei"]], measure="MD", draws=150, tune=150,
                      chains=2, cores=1, seed=20140301)
dt = fit.datatree
out = {f"posterior/{v}": dt["posterior"][v].values for v in dt["posterior"].data_vars}
out["step_size"] = dt["sample_stats"]["step_size"].values
assert fit.datatree.attrs["nutpie_route"] == sys.argv[3]
np.savez(sys.argv[2], **out)
"""


@pytest.mark.slow
@pytest.mark.parametrize("route", mcmc.NUTPIE_ROUTES)
def test_nested_same_seed_identical_with_cold_and_warm_compile_cache(tmp_path, route):
    """Contract of ``SamplerSettings`` (reference: the documented promise "the same seed gives
    bit-identical draws", independent of the compile cache): the nested fit in fresh
    processes with two different *empty* caches (pytensor's ``base_compiledir`` and numba's
    ``NUMBA_CACHE_DIR``, which holds the kernels of ``mcmc_backend``) and in a process whose
    cache is warm (the first directory again) gives bitwise identical draws and step sizes,
    on both nutpie routes. With pytensor's numba fastmath on, cache-loaded kernels gave
    last-bit different logp/gradients and different draws (see ``mcmc._deterministic_numba``;
    the hand-written kernels are compiled with fastmath off too)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "data" / "meld_2014_fig3.csv"
    script = tmp_path / "fit.py"
    script.write_text(_REPRO_SCRIPT)

    def start(cache: str, out: str):
        env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={tmp_path / cache}",
               "NUMBA_CACHE_DIR": str(tmp_path / cache), "MPLBACKEND": "Agg"}
        return subprocess.Popen([sys.executable, str(script), str(data), str(tmp_path / out),
                                 route],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    def finish(p):
        log, _ = p.communicate(timeout=900)
        assert p.returncode == 0, log[-3000:]

    cold = [start("cache_a", "cold_a.npz"), start("cache_b", "cold_b.npz")]
    for p in cold:
        finish(p)
    assert any((tmp_path / "cache_a").rglob("*.nbi")), "no numba cache written; not a warm run"
    finish(start("cache_a", "warm_a.npz"))
    runs = {n: np.load(tmp_path / f"{n}.npz") for n in ("cold_a", "cold_b", "warm_a")}
    ref = runs["cold_a"]
    for name, r in runs.items():
        assert sorted(r.files) == sorted(ref.files)
        for k in ref.files:
            np.testing.assert_array_equal(r[k], ref[k], err_msg=f"{name}: {k}")
