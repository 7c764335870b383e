"""Exact GHM engine against its MCMC twin (marker ``sampling``: full-length nutpie runs).

Reference: bayesmeta.ghm_pymc, the same model with every latent variable sampled by NUTS
(nothing integrated in closed form), estimands computed from the named latent variables. The
exact posterior mean and 2.5%/97.5% quantiles must lie within Z_MCSE Monte Carlo SEs of the
MCMC estimates (|z| <= 4; for the mean, the exact engine's own Monte Carlo error is added in
quadrature when it integrates by importance sampling), on the bundled nested datasets (2014 arm-level MD by week; 2023
published pooled MDs by outcome x week, subgroup fits without the all-patients rows, week 0
excluded) and on simulated designs. Run: ``pytest -m sampling tests/test_ghm_mcmc.py -s``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bayesmeta import ghm, ghm_exact, ghm_pymc
from tests.tolerances import Z_MCSE

pytestmark = pytest.mark.sampling

Z975 = 1.959963984540054
SAMPLING = dict(draws=2000, tune=1500, chains=4, cores=2, target_accept=0.99, seed=3)
RESULTS: list[dict] = []


def pooled_2023(outcome: str, subgroups: bool) -> pd.DataFrame:
    """2023 published pooled MDs of one outcome, weeks > 0, rows marked AMBIGUOUS excluded;
    sei from the printed 95% CI; one published source."""
    p = pd.read_csv("data/msc_2023_pooled.csv")
    p = p[(p["outcome"] == outcome) & (p["time_wk"] > 0)]
    p = p[~p["note"].fillna("").str.startswith("AMBIGUOUS")]
    p = p[(p["subgroup"] != "all") if subgroups else (p["subgroup"] == "all")]
    return pd.DataFrame(dict(yi=p["estimate"], time=p["time_wk"].astype(int),
                             sei=(p["ci_high"] - p["ci_low"]) / (2 * Z975),
                             subgroup=p["subgroup"], source="2023", row_kind="pooled"))


def simulated(seed: int, time_structure: str) -> pd.DataFrame:
    """Study-level rows: 6 studies in 2 subgroups, weeks 2/4/12/24 (some missing), with a
    study effect, AR(1) cell deviations and correlated sampling errors."""
    rng = np.random.default_rng(seed)
    rows = []
    cell = {(g, t): m + rng.normal(0, 0.5) for g, m in (("A", -1.0), ("B", -0.3))
            for t in (2, 4, 12, 24)}
    for j in range(6):
        g = "A" if j < 3 else "B"
        u = rng.normal(0, 0.4)
        ts = sorted(rng.choice([2, 4, 12, 24], size=rng.integers(2, 5), replace=False))
        se = rng.uniform(0.3, 0.6)
        e = rng.multivariate_normal(np.zeros(len(ts)), se ** 2 * (0.5 + 0.5 * np.eye(len(ts))))
        for k, t in enumerate(ts):
            rows.append(dict(study=f"s{j}", subgroup=g, time=int(t), sei=se,
                             yi=cell[(g, t)] + u + rng.normal(0, 0.3) + e[k]))
    return pd.DataFrame(rows)


CASES = {
    "meld2014-exchangeable": ("meld2014", dict(time_structure="exchangeable")),
    "meld2014-ar1": ("meld2014", dict(time_structure="ar1")),
    "meld2014-car": ("meld2014", dict(time_structure="car")),
    "meld2014-r-prior": ("meld2014", dict(r=ghm.BetaPrior(4, 2))),
    "meld2014-study-time-ar1": ("meld2014", dict(study_time="ar1")),
    "sim-study-time-car": ((14, "car"), dict(time_structure="car", study_time="car")),
    "2023-MELD-subgroups-fixed": (("MELD", True), dict()),
    "2023-MELD-subgroups-random": (("MELD", True), dict(subgroup="random")),
    "2023-MELD-subgroups-car": (("MELD", True), dict(time_structure="car")),
    "2023-TB-subgroups-fixed": (("TB", True), dict(extrapolate=True)),
    "2023-MELD-all": (("MELD", False), dict(time_structure="ar1")),
    "2023-ALB-all": (("ALB", False), dict()),
    "2023-TB-all": (("TB", False), dict()),
    "2023-PT-all": (("PT", False), dict()),
    "2023-AST-all": (("AST", False), dict()),
    "sim-exchangeable": ((11, "exchangeable"), dict()),
    "sim-ar1-decay": ((12, "ar1"), dict(time_structure="ar1", correlation="decay", r=0.95)),
    "sim-car-random": ((13, "car"), dict(time_structure="car", subgroup="random")),
}


def _data(key, meld2014):
    if key == "meld2014":
        return meld2014[["study", "time", "yi", "vi", "n1i", "n2i"]]
    if isinstance(key[0], str):
        return pooled_2023(*key)
    return simulated(*key)


@pytest.mark.parametrize("case", list(CASES))
def test_exact_within_mcse_of_mcmc(case, meld2014):
    key, opts = CASES[case]
    data = _data(key, meld2014)
    ex = ghm_exact.fit_ghm(data, **opts)
    mc = ghm_pymc.fit_ghm_mcmc(data, **opts, **SAMPLING)
    assert ex.clean
    sx = ex.summary(0.95)
    worst = 0.0
    for p in sx.index:
        d = mc.draws(p)
        # both sides are Monte Carlo estimates when the exact engine uses importance sampling
        # (its "mcse" column; 0 for quadrature): the z of the mean uses both errors
        se_mean = math.hypot(mc.mcse(p), float(sx.loc[p, "mcse"]))
        zs = [(d.mean() - sx.loc[p, "estimate"]) / se_mean]
        for q, col in ((0.025, "ci_low"), (0.975, "ci_high")):
            zs.append((np.quantile(d, q) - sx.loc[p, col]) / mc.mcse(p, "quantile", q))
        z = max(abs(v) for v in zs)
        worst = max(worst, z)
        assert z <= Z_MCSE, (case, str(p), zs)
    RESULTS.append(dict(case=case, dims=len(ex.design.hypers), rule=ex.nodes.kind,
                        max_abs_z=worst, divergences=mc.divergences,
                        exact_s=ex.seconds, mcmc_s=mc.seconds))
    print(f"\n{case}: max |z| = {worst:.2f} over {len(sx)} parameters "
          f"(mean, 2.5%, 97.5%), divergences {mc.divergences}, exact {ex.seconds:.2f} s, "
          f"MCMC {mc.seconds:.1f} s")


def test_psis_loo_and_workflow_on_mcmc_fit(meld2014):
    """PSIS-LOO (ArviZ, on the fit's pointwise Gaussian conditionals) against exact LOO by
    refitting the exact engine without each row: total elpd within 0.3 and every row within
    0.15 (PSIS is an approximation; both share the model). The workflow tables work on the
    MCMC fit as on the exact one."""
    from bayesmeta import workflow

    data = meld2014[["study", "time", "yi", "vi", "n1i", "n2i"]]
    mc = ghm_pymc.fit_ghm_mcmc(data, **SAMPLING)
    ex = ghm_exact.fit_ghm(data)
    psis = workflow._elpd_pointwise(mc)
    exact = ghm_exact.exact_loo(ex)["elpd_loo"].to_numpy()
    assert abs(psis.sum() - exact.sum()) < 0.3
    np.testing.assert_allclose(psis, exact, atol=0.15)
    pp = workflow.posterior_predictive(mc)
    pe = workflow.posterior_predictive(ex)
    np.testing.assert_allclose(pp["p_below"], pe["p_below"], atol=0.03)
    tab = workflow.prior_posterior(mc)
    assert set(tab["parameter"]) >= {"sigma_time", "sigma_study", "tau"}
