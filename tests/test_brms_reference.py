"""fit_nested against an independent brms (Stan) fit of the same model, priors and data.

Reference: ``tests/reference/brms_nested.json``, written by ``tests/reference/brms_nested.R``
(R, brms, rstan, posterior versions, formula, priors, seed and iterations recorded in the JSON).
brms model (one subgroup, study rows, so h_r = 1)::

    bf(yi | se(sei, sigma = TRUE) ~ 1 + (1 | time) + (1 | study), sigma ~ 1 + (1 | time))

Intercept = mu, sd(time) = sigma_time, sd(study) = sigma_study, exp(sigma Intercept) = tau0,
sd of sigma's time effect = sigma_logtau, Intercept + r_time[t] = mu[all, t],
exp(sigma Intercept + r_time__sigma[t]) = tau[all, t]. Priors are the same densities in both
(see the R script's header): mu ~ N(0, 10); sigma_time, sigma_study ~ HalfNormal(c);
log tau0 ~ N(a, b) (= priors.LogNormalTau2(2a, 2b)); sigma_logtau ~ HalfNormal(d).

Comparison: each posterior mean and 2.5/50/97.5% quantile agrees within
``Z_MCSE * sqrt(mcse_ours**2 + mcse_brms**2)`` (MCSEs: mean and quantile MCSE of each run;
brms 4 x 10 000 draws, ours 4 x 5000). Posterior SDs are compared the same way with mcse_sd.
Datasets: a simulated 6 studies x 3 weeks table (data-driven posterior) and the 2014 MELD arm
data (2 studies x weeks 2, 4, 24; prior-dominated).

The two fits take ~40 s (nutpie, 2 cores), so the comparisons are marked ``sampling``
(``pytest -m sampling tests/test_brms_reference.py -s`` prints the table of z-scores); the check
of the reference itself runs by default. 110 comparisons (11 quantities x mean, sd, 3 quantiles
x 2 datasets) at the committed seed, mcmc.py at bdb7be8: max |z| = 2.16, RMS z = 0.79, 6 with
|z| > 2 (~5 expected); with mcmc.py before bdb7be8 (per-cell centring) max |z| = 3.16, MELD
tau[all, 2] 97.5% quantile, which seeds 1-3 put at -1.61..+0.07 (noise). The
brms run: 4 x 10 000 draws, 0 divergences, R-hat <= 1.0002, ~80 s per dataset incl. compile.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bayesmeta import mcmc, priors
from tests.tolerances import Z_MCSE

REF = json.loads((Path(__file__).parent / "reference" / "brms_nested.json").read_text())
DATASETS = ("sim6x3", "meld2014")
PARAMS = ("mu", "sigma_time", "sigma_study", "tau0", "sigma_logtau",
          "mu[all, 2]", "mu[all, 4]", "mu[all, 24]",
          "tau[all, 2]", "tau[all, 4]", "tau[all, 24]")
STATS = (("mean", "mcse_mean"), ("sd", "mcse_sd"), ("q025", "mcse_q025"),
         ("q50", "mcse_q50"), ("q975", "mcse_q975"))
DRAWS = 5000
SEED = 20240611


def _data(name: str) -> pd.DataFrame:
    d = REF["datasets"][name]["data"]
    return pd.DataFrame({"study": d["study"], "time": d["time"], "yi": d["yi"], "sei": d["sei"]})


def _fit(name: str, data: pd.DataFrame):
    n = REF["datasets"][name]["priors"]["numbers"]
    return mcmc.fit_nested(
        data, measure="MD",
        mu_prior=priors.Normal(n["mu_mean"], n["mu_sd"]),
        het_prior=priors.HalfNormal(n["het_scale"]),
        tau_prior=priors.LogNormalTau2(2 * n["logtau_mean"], 2 * n["logtau_sd"]),
        sigma_logtau_sd=n["sigma_logtau_sd"],
        draws=DRAWS, tune=2000, chains=4, seed=SEED, warn=False)


def _our_stats(fit, label: str) -> dict:
    """Mean, SD, quantiles (numpy linear = R type 7, as posterior::quantile2) and their MCSEs
    (ArviZ: mean, sd, quantile MCSE from the (chain, draw) array)."""
    import arviz as az

    rep = next(r for r in fit.reports if r.label == label)
    da = mcmc._draws(fit.datatree, rep).reset_coords(drop=True)
    x = np.asarray(da.transpose("chain", "draw").values, dtype=float)
    ds = xr.Dataset({"x": (("chain", "draw"), x)})
    out = {"mean": x.mean(), "sd": x.std(ddof=1)}
    out["mcse_mean"] = float(az.mcse(ds, method="mean")["x"])  # Dataset in -> Dataset out
    # az.mcse(method="sd") is broken on some stacks (stack-notes); the summary's mcse_sd works
    out["mcse_sd"] = float(fit.summary.loc[label, "mcse_sd"])
    for key, p in (("q025", 0.025), ("q50", 0.5), ("q975", 0.975)):
        out[key] = float(np.quantile(x, p))
        out["mcse_" + key] = float(az.mcse(ds, method="quantile", prob=p)["x"])
    return out


@pytest.fixture(scope="module")
def fits(meld2014):
    out = {}
    sim = _data("sim6x3")
    out["sim6x3"] = _fit("sim6x3", sim)
    # MELD: fit the conftest data (computed from the CSV independently of the R script); the
    # JSON's table must be the same numbers, so both programs saw the same data.
    ref = _data("meld2014")
    np.testing.assert_allclose(meld2014["yi"], ref["yi"], rtol=1e-12)
    np.testing.assert_allclose(meld2014["sei"], ref["sei"], rtol=1e-12)
    out["meld2014"] = _fit("meld2014", meld2014[["study", "time", "yi", "sei"]])
    return out


@pytest.fixture(scope="module")
def zscores(fits) -> pd.DataFrame:
    rows = []
    for name in DATASETS:
        for label in PARAMS:
            ours = _our_stats(fits[name], label)
            theirs = REF["datasets"][name]["summary"][label]
            for stat, mc in STATS:
                se = float(np.hypot(ours[mc], theirs[mc]))
                rows.append(dict(dataset=name, parameter=label, stat=stat, ours=ours[stat],
                                 brms=theirs[stat], se=se, z=(ours[stat] - theirs[stat]) / se))
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print("\n", df.to_string(float_format=lambda v: f"{v:.4f}"))
    return df


def test_reference_is_clean():
    """The brms reference itself: no divergences, R-hat < 1.01, bulk ESS > 4000 everywhere."""
    for name in DATASETS:
        d = REF["datasets"][name]
        assert d["sampler"]["divergences"] == 0, name
        for label, s in d["summary"].items():
            assert s["rhat"] < 1.01, (name, label, s["rhat"])
            assert s["ess_bulk"] > 4000, (name, label, s["ess_bulk"])


_SIM_DIVERGENCE = pytest.mark.xfail(strict=True, reason=(
    "known: since models compile with numba fastmath off (commit b1b4c1d, for cold/warm "
    "determinism) the sim6x3 nested fit at this seed has 1 divergent transition in 20 000 "
    "draws (R-hat 1.001, bulk ESS 3340); its 55 comparisons with brms still pass. Diagnosed "
    "(2026-11-21): the divergent draw sits in the far tail, sigma_time = 3.95 (posterior 99th "
    "percentile 3.3) with mu = -8.97, where 3 non-centred time cells pinned by 6 studies each "
    "form a ridge; centring them would make the opposite funnel, since sigma_time's posterior "
    "also reaches 0 (1st percentile 0.018). Needs a different parameterisation of the time "
    "level (bayesmeta/mcmc.py:_build_nested), not a looser threshold."))


@pytest.mark.sampling
@pytest.mark.parametrize("name", [pytest.param(d, marks=_SIM_DIVERGENCE) if d == "sim6x3" else d
                                  for d in DATASETS])
def test_our_fit_is_clean(fits, name):
    assert fits[name].clean, fits[name].diagnostics


@pytest.mark.sampling
@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("label", PARAMS)
def test_matches_brms(zscores, name, label):
    sub = zscores[(zscores["dataset"] == name) & (zscores["parameter"] == label)]
    bad = sub[sub["z"].abs() > Z_MCSE]
    assert bad.empty, bad.to_string()
