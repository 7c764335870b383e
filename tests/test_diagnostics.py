"""bayesmeta.diagnostics: thresholds, clean flag, warnings.

References: constructed draws with known properties (iid chains are converged; shifted chains
are not; divergences and a random-walk energy are planted), and a deliberately bad real fit.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from bayesmeta import diagnostics, mcmc
from bayesmeta.exceptions import ConvergenceWarning


def _tree(a, energy=None, diverging=None):
    c, d = a.shape
    rng = np.random.default_rng(0)
    energy = rng.normal(size=(c, d)) if energy is None else energy
    diverging = np.zeros((c, d), bool) if diverging is None else diverging
    return xr.DataTree.from_dict({
        "/posterior": xr.Dataset({"a": (("chain", "draw"), a)}),
        "/sample_stats": xr.Dataset({"energy": (("chain", "draw"), energy),
                                     "diverging": (("chain", "draw"), diverging)})})


def test_thresholds_in_one_place():
    assert diagnostics.THRESHOLDS == {"r_hat_max": 1.01, "ess_bulk_min": 400.0,
                                      "ess_tail_min": 400.0, "divergences": 0,
                                      "ebfmi_min": 0.3}


def test_iid_draws_are_clean():
    """iid N(0,1) draws: R-hat ~ 1, ESS ~ 4000, E-BFMI of iid energy = E[(e_t - e_s)^2]/var = 2."""
    a = np.random.default_rng(1).normal(size=(4, 1000))
    conv = diagnostics.check_convergence(_tree(a))
    assert conv.clean and conv.problems == ()
    assert conv.divergences == 0 and conv.n_chains == 4 and conv.n_draws == 1000
    np.testing.assert_allclose(conv.ebfmi, 2.0, atol=0.2)


def test_shifted_chains_warn_with_numbers_thresholds_and_remedy():
    a = np.random.default_rng(2).normal(size=(4, 1000)) + np.array([0, 0, 0, 3.0])[:, None]
    with pytest.warns(ConvergenceWarning,
                      match=r"r_hat\('a'\) = \d\.\d+ > 1\.01.*increase tune/draws"):
        conv = diagnostics.check_convergence(_tree(a))
    assert not conv.clean and conv.worst["r_hat_max"] == "a"
    assert "NOT CLEAN" in conv.line()


def test_divergences_and_low_ebfmi_flagged():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 1000))
    div = np.zeros((4, 1000), bool)
    div[1, 5] = True
    energy = np.cumsum(rng.normal(size=(4, 1000)), axis=1)  # random walk: E-BFMI << 0.3
    conv = diagnostics.check_convergence(_tree(a, energy, div), warn=False)
    assert conv.divergences == 1
    assert any("1 divergent transitions" in p for p in conv.problems)
    assert any("E-BFMI" in p and "in 4 of 4 chains" in p for p in conv.problems)
    assert not conv.clean


def test_bad_fit_is_never_reported_clean():
    """A deliberately bad fit (pymc sampler, tune=0, draws=20): not clean, warned, and
    'NOT CLEAN' carried to the printout and to .to_frame() (method suffix and attrs)."""
    y, s = np.array([0.3, -0.2, 0.5, 0.1]), np.array([0.2, 0.25, 0.3, 0.2])
    with pytest.warns(ConvergenceWarning, match=r"NNHM: .*(r_hat|ess_bulk)"):
        fit = mcmc.fit_nnhm(y, s, mu_prior="normal:0:1", tau_prior="halfnormal:0.5", tune=0,
                            draws=20, seed=3, sampler="pymc", cores=1)
    assert not fit.clean
    df = fit.to_frame()
    assert df.attrs["clean"] is False and (df["method"] == "NNHM-MCMC [NOT CLEAN]").all()
    assert (df["flag"] == "NOT CLEAN").all()
    assert "Diagnostics (NOT CLEAN)" in str(fit)


def test_nutpie_refuses_tune_zero():
    from bayesmeta.exceptions import SpecError

    with pytest.raises(SpecError, match="Invalid tune 0 for sampler 'nutpie'"):
        mcmc.SamplerSettings(tune=0)


def test_worst_scalar_equals_arviz_per_variable():
    """check_convergence computes R-hat and ESS once over all scalars stacked. Reference:
    az.rhat / az.ess on the Dataset, one variable at a time (ArviZ's own per-variable path),
    maximum / minimum taken over each variable's scalars: the same worst values, named by the
    same variable, on draws where a vector variable holds the worst R-hat, another the worst
    ESS, and with a constant variable (NaN R-hat wins)."""
    import arviz_stats as azs

    rng = np.random.default_rng(3)
    c, d = 4, 300
    walk = np.cumsum(rng.normal(size=(c, d)), axis=1) * 0.05 + rng.normal(size=(c, d))
    post = xr.Dataset({"m": (("chain", "draw"), rng.normal(size=(c, d))),
                       "v": (("chain", "draw", "k"), np.stack(
                           [rng.normal(size=(c, d)), walk,
                            rng.normal(size=(c, d)) + np.arange(c)[:, None] * 0.3], -1)),
                       "w": (("chain", "draw"), walk[::-1])})
    stats = xr.Dataset({"energy": (("chain", "draw"), rng.normal(size=(c, d))),
                        "diverging": (("chain", "draw"), np.zeros((c, d), bool))})
    for ds in (post, post.assign(const=(("chain", "draw"), np.ones((c, d))))):
        tree = xr.DataTree.from_dict({"/posterior": ds, "/sample_stats": stats})
        conv = diagnostics.check_convergence(tree, warn=False)

        def worst(res, pick):
            vals = {n: np.asarray(res[n].values, float).ravel() for n in res.data_vars}
            for n, v in vals.items():
                if np.isnan(v).any():
                    return np.nan, n
            n = pick(vals, key=lambda n: pick(vals[n]))
            return float(pick(vals[n])), n

        with np.errstate(all="ignore"):
            ref_r = worst(azs.rhat(ds), max)
            ref_b = worst(azs.ess(ds, method="bulk"), min)
            ref_t = worst(azs.ess(ds, method="tail"), min)
        got = [(conv.r_hat_max, conv.worst["r_hat_max"]),
               (conv.ess_bulk_min, conv.worst["ess_bulk_min"]),
               (conv.ess_tail_min, conv.worst["ess_tail_min"])]
        for (gv, gn), (rv, rn) in zip(got, [ref_r, ref_b, ref_t]):
            assert gn == rn
            assert (np.isnan(gv) and np.isnan(rv)) or gv == pytest.approx(rv, rel=1e-12)
