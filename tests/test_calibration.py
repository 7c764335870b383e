"""Simulation-based calibration (SBC) and parameter recovery (marker ``calibration``).

Reference: SBC (Talts, Betancourt, Simpson, Vehtari, Gelman 2018, arXiv:1804.06788): if data are
simulated from the prior and the model is fitted with the same prior, the rank of the true
parameter among L posterior draws is uniform on {0..L}. We thin each fit to L = 99 draws, bin
ranks into 10 bins and apply a chi-square test per parameter; the family of tests passes when
every p-value > SBC_ALPHA / n_params (Bonferroni). Each model is compiled once and reused via
its data containers. Run deliberately: ``pytest -m calibration tests/test_calibration.py -s``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayesmeta import mcmc, priors, survival

pytestmark = pytest.mark.calibration

SBC_REPS = 120
SBC_L = 99
SBC_BINS = 10
SBC_ALPHA = 0.01
SBC_SAMPLING = dict(draws=500, tune=400, chains=2, cores=2, warn=False)


def _rank(draws: np.ndarray, truth: float, rng) -> int:
    d = np.asarray(draws).ravel()
    idx = np.linspace(0, d.size - 1, SBC_L).round().astype(int)  # thin (autocorrelation)
    thin = d[idx]
    # ties broken at random (not needed for continuous draws, kept for safety)
    return int(np.sum(thin < truth) + rng.integers(0, np.sum(thin == truth) + 1))


def _uniformity(ranks: dict[str, list[int]]) -> dict[str, float]:
    out = {}
    for name, r in ranks.items():
        counts = np.bincount(np.asarray(r) * SBC_BINS // (SBC_L + 1), minlength=SBC_BINS)
        out[name] = float(stats.chisquare(counts).pvalue)
    return out


def _report(label, pvals, n, seconds, n_div):
    print(f"\nSBC {label}: {n} replications, {seconds:.0f} s, fits with divergences: {n_div}")
    for k, p in pvals.items():
        print(f"  {k:<22s} chi-square p = {p:.3f}")


# ---------------------------------------------------------------------------------------------
# nested model
# ---------------------------------------------------------------------------------------------

NESTED_PRIORS = dict(mu_prior=priors.Normal(0.0, 1.0), het_prior=priors.HalfNormal(0.5),
                     tau_prior=priors.HalfNormal(0.5), sigma_logtau_sd=0.5)


def _nested_design(n_per_sub=3, times=(4, 12, 24), subs=("ACLF", "cirrhosis"), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for g in subs:
        for j in range(n_per_sub):
            se = rng.uniform(0.2, 0.5)
            for t in times:
                rows.append({"study": f"{g}-{j}", "subgroup": g, "time": t, "sei": se})
    return pd.DataFrame(rows)


def _simulate_nested(design, rng):
    subs = list(dict.fromkeys(design["subgroup"]))
    times = list(dict.fromkeys(design["time"]))
    studies = list(dict.fromkeys(design["study"]))
    mu = rng.normal(0, 1.0)
    s_sub, s_time, s_study, tau0 = np.abs(rng.normal(0, 0.5, 4))
    s_lt = abs(rng.normal(0, 0.5))
    mu_sub = mu + s_sub * rng.normal(size=len(subs))
    mu_cell = mu_sub[:, None] + s_time * rng.normal(size=(len(subs), len(times)))
    tau = np.exp(np.log(tau0) + s_lt * rng.normal(size=(len(subs), len(times))))
    u = s_study * rng.normal(size=len(studies))
    si = design["subgroup"].map(subs.index).to_numpy()
    ti = design["time"].map(times.index).to_numpy()
    ji = design["study"].map(studies.index).to_numpy()
    sd = np.sqrt(design["sei"].to_numpy() ** 2 + tau[si, ti] ** 2)
    y = mu_cell[si, ti] + u[ji] + sd * rng.normal(size=len(design))
    truth = {"mu": mu, "mu[ACLF]": mu_sub[0], "mu[ACLF, 12]": mu_cell[0, 1],
             "contrast[24]": mu_cell[0, 2] - mu_cell[1, 2], "sigma_study": s_study,
             "tau0": tau0}
    return design.assign(yi=y), truth


def test_sbc_nested_model():
    design = _nested_design()
    rng = np.random.default_rng(2024)
    ranks: dict[str, list[int]] = {}
    t0, n_div = time.perf_counter(), 0
    for rep in range(SBC_REPS):
        data, truth = _simulate_nested(design, rng)
        fit = mcmc.fit_nested(data, seed=1000 + rep, **NESTED_PRIORS, **SBC_SAMPLING)
        n_div += fit.diagnostics.divergences > 0
        for k, v in truth.items():
            ranks.setdefault(k, []).append(_rank(fit.draws(k), v, rng))
    pvals = _uniformity(ranks)
    _report("nested (2 subgroups x 3 times x 3 studies)", pvals, SBC_REPS,
            time.perf_counter() - t0, n_div)
    assert min(pvals.values()) > SBC_ALPHA / len(pvals), pvals


# ---------------------------------------------------------------------------------------------
# survival model (published ORs, correlated)
# ---------------------------------------------------------------------------------------------

SURV_TIMES = [4, 8, 12, 24]
SURV_SE = np.array([1.054, 0.298, 0.267, 0.318])  # 2023 printed CIs -> SE of log OR


def test_sbc_survival_published():
    rng = np.random.default_rng(7)
    rho = 0.5
    R = np.full((4, 4), rho)
    np.fill_diagonal(R, 1.0)
    L = np.linalg.cholesky(R * np.outer(SURV_SE, SURV_SE))
    z = stats.norm.ppf(0.975)
    ranks: dict[str, list[int]] = {}
    t0, n_div = time.perf_counter(), 0
    for rep in range(SBC_REPS):
        mu = rng.normal(0, 1.5)
        sig = abs(rng.normal(0, 0.5))
        theta = mu + sig * rng.normal(size=4)
        y = theta + L @ rng.normal(size=4)
        fit = survival.fit_survival_published(
            SURV_TIMES, np.exp(y), np.exp(y - z * SURV_SE), np.exp(y + z * SURV_SE), rho=rho,
            seed=5000 + rep, **SBC_SAMPLING)
        n_div += fit.diagnostics.divergences > 0
        truth = {"mu": mu, "sigma_time": sig, "logOR[4]": theta[0], "logOR[12]": theta[2]}
        for k, v in truth.items():
            ranks.setdefault(k, []).append(_rank(fit.draws(k), v, rng))
    pvals = _uniformity(ranks)
    _report("survival-published (4 times, rho 0.5)", pvals, SBC_REPS,
            time.perf_counter() - t0, n_div)
    assert min(pvals.values()) > SBC_ALPHA / len(pvals), pvals


# ---------------------------------------------------------------------------------------------
# recovery with many studies
# ---------------------------------------------------------------------------------------------

def test_recovery_nested_many_studies():
    """Known parameters, 25 studies per subgroup x 3 times: the 95% intervals of mu per cell and
    of the contrast at each time cover the truth, and sigma_study is recovered within its
    interval. Reference: simulation truth."""
    design = _nested_design(n_per_sub=25, seed=3)
    rng = np.random.default_rng(99)
    subs, times = ["ACLF", "cirrhosis"], [4, 12, 24]
    mu_cell = np.array([[-3.0, -4.0, -4.0], [-1.0, -1.5, -2.0]])
    u = 0.8 * rng.normal(size=50)
    si = design["subgroup"].map(subs.index).to_numpy()
    ti = design["time"].map(times.index).to_numpy()
    ji = design["study"].map(list(dict.fromkeys(design["study"])).index).to_numpy()
    sd = np.sqrt(design["sei"] ** 2 + 0.4 ** 2).to_numpy()
    data = design.assign(yi=mu_cell[si, ti] + u[ji] + sd * rng.normal(size=len(design)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mcmc.fit_nested(data, measure="MD")
    s = fit.summary
    print("\nrecovery (nested, 150 rows):\n", s[["mean", "eti95_lb", "eti95_ub"]].round(3))
    assert fit.diagnostics.divergences == 0
    covered = []
    for a, g in enumerate(subs):
        for b, t in enumerate(times):
            r = s.loc[f"mu[{g}, {t}]"]
            covered.append(r["eti95_lb"] <= mu_cell[a, b] <= r["eti95_ub"])
    for b, t in enumerate(times):
        r = s.loc[f"contrast[{t}]"]
        covered.append(r["eti95_lb"] <= mu_cell[0, b] - mu_cell[1, b] <= r["eti95_ub"])
    assert sum(covered) >= len(covered) - 1, covered  # 9 intervals; allow one 5% miss
    r = s.loc["sigma_study"]
    assert r["eti95_lb"] <= 0.8 <= r["eti95_ub"]


# ---------------------------------------------------------------------------------------------
# survival model (study-level counts, discrete time)
# ---------------------------------------------------------------------------------------------

def _simulate_counts(rng, n_studies=4, times=(4, 12, 24), n=40):
    K = len(times)
    gamma = rng.normal(-2.0, 1.5, K)
    s_b, s_int, tau = abs(rng.normal(0, 1.0)), abs(rng.normal(0, 0.5)), abs(rng.normal(0, 0.5))
    beta0 = rng.normal(0, 1.0)
    beta = beta0 + s_int * rng.normal(size=K)
    rows = []
    for j in range(n_studies):
        b, w = s_b * rng.normal(), tau * rng.normal()
        alive, cum = [n, n], [0, 0]
        for k, t in enumerate(times):
            for arm in (0, 1):
                eta = gamma[k] + b + arm * (beta[k] + w)
                d = rng.binomial(alive[arm], 1 / (1 + np.exp(-eta)))
                alive[arm] -= d
                cum[arm] += d
            rows.append(dict(study=f"S{j}", time=t, ai=cum[1], n1i=n, ci=cum[0], n2i=n))
    h0, h1 = 1 / (1 + np.exp(-gamma)), 1 / (1 + np.exp(-(gamma + beta)))
    s0, s1 = np.cumprod(1 - h0), np.cumprod(1 - h1)
    lor = np.log(s1 / (1 - s1)) - np.log(s0 / (1 - s0))
    truth = {"beta0": beta0, "tau": tau, "beta[12]": beta[1], "logOR[24]": lor[-1]}
    return pd.DataFrame(rows), truth


def test_sbc_survival_counts():
    rng = np.random.default_rng(31)
    ranks: dict[str, list[int]] = {}
    t0, n_div = time.perf_counter(), 0
    for rep in range(SBC_REPS):
        data, truth = _simulate_counts(rng)
        fit = survival.fit_survival_counts(data, seed=9000 + rep, **SBC_SAMPLING)
        n_div += fit.diagnostics.divergences > 0
        for k, v in truth.items():
            ranks.setdefault(k, []).append(_rank(fit.draws(k), v, rng))
    pvals = _uniformity(ranks)
    _report("survival-counts (4 studies x 3 times)", pvals, SBC_REPS,
            time.perf_counter() - t0, n_div)
    assert min(pvals.values()) > SBC_ALPHA / len(pvals), pvals
