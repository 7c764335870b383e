"""Simulation-based calibration of the exact GHM engine (marker ``calibration``).

Reference: SBC (Talts et al. 2018, arXiv:1804.06788). Parameters are drawn from the priors, data
from the model (simulated here directly from its definition, not through the design matrices),
and the model is refitted with the same priors. With an exact engine the posterior CDF at the
true value, u = P(theta <= theta_true | y), replaces the rank among draws: it is Uniform(0, 1)
when the engine is right. u is binned into 10 bins and a chi-square test is applied per
parameter; a configuration passes when every p-value > SBC_ALPHA / n_params (Bonferroni).
One configuration per new option: time structures (exchangeable, ar1, car), fixed and random
subgroups, a prior on the within-study correlation r (exchangeable and decay forms), and the
study x time structures (ar1, car) of the within-cell deviations. For random subgroups the
u values are also compared draw by draw with an independent posterior computation
(:func:`_reference`), which separates an engine error from the luck of the draws.
Run: ``pytest -m calibration tests/test_ghm_calibration.py -s``.
"""

from __future__ import annotations

import math
import time
import zlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayesmeta import ghm, ghm_exact
from bayesmeta import priors as P
from bayesmeta.fits import Param

pytestmark = pytest.mark.calibration

SBC_REPS = 300  # per configuration, unless REPS says otherwise or SBC_REPS is set
SBC_BINS = 10
SBC_ALPHA = 0.01
MEAN = P.Normal(0.0, 1.0)
SCALE = P.HalfNormal(0.5)
PVALUES: dict = {}


def _layout(subgroups=("A", "B"), studies=3, times=(2, 4, 12, 24), seed=0, pooled=False):
    """Rows (study, subgroup, time, sei) of a fixed design; each study misses one time."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in subgroups:
        for j in range(studies):
            drop = times[rng.integers(len(times))]
            se = rng.uniform(0.2, 0.5)
            for t in times:
                if t != drop:
                    rows.append(dict(study=f"{g}{j}", subgroup=g, time=t, sei=se))
    if pooled:
        for t in times[1:]:
            rows.append(dict(study="", source="P", subgroup=subgroups[0], time=t, sei=0.25,
                             row_kind="pooled"))
    return pd.DataFrame(rows)


def _simulate(rows, cfg, rng):
    """One dataset and its true parameters, from the model's definition."""
    subs = list(dict.fromkeys(rows["subgroup"]))
    times = sorted(set(rows["time"]))
    studies = [s for s in dict.fromkeys(rows["study"]) if s]
    truth = {}
    st, ss, tau = (abs(rng.normal(0, 0.5)) for _ in range(3))
    truth.update(sigma_time=st, sigma_study=ss, tau=tau)
    if cfg.get("subgroup") == "random":
        mu = rng.normal(0, 1)
        sg = abs(rng.normal(0, 0.5))
        m = {g: mu + sg * rng.normal() for g in subs}
        truth.update(mu=mu, sigma_subgroup=sg)
    else:
        m = {g: rng.normal(0, 1) for g in subs}
    ts = cfg.get("time_structure", "exchangeable")
    idx = np.arange(len(times))
    if ts == "exchangeable":
        K = np.eye(len(times))
    else:
        rho = rng.beta(1, 1)
        truth["rho"] = rho
        D = np.abs(idx[:, None] - idx[None, :]) if ts == "ar1" else \
            np.abs(np.subtract.outer(times, times)).astype(float)
        K = rho ** D
    cell = {}
    for g in subs:
        dev = st * (np.linalg.cholesky(K + 1e-12 * np.eye(len(times))) @ rng.normal(size=len(times)))
        for k, t in enumerate(times):
            cell[(g, t)] = m[g] + dev[k]
            truth[("mu", g, t)] = cell[(g, t)]
        truth[("m", g)] = m[g]
    u = {s: ss * rng.normal() for s in studies}
    r = cfg.get("r", 0.5)
    if isinstance(r, ghm.BetaPrior):
        r = r.lower + (r.upper - r.lower) * rng.beta(r.a, r.b)
        truth["r"] = r
    se = rows["sei"].to_numpy()
    key = [(s if s else src, g) if (s or src) else None
           for s, src, g in zip(rows["study"], rows.get("source", pd.Series([""] * len(rows))),
                                rows["subgroup"])]
    n = len(rows)
    C = np.eye(n)
    tv = rows["time"].to_numpy(float)
    for i in range(n):
        for k in range(n):
            if i != k and key[i] is not None and key[i] == key[k]:
                C[i, k] = r if cfg.get("correlation", "exchangeable") == "exchangeable" \
                    else r ** abs(tv[i] - tv[k])
    eps = rng.multivariate_normal(np.zeros(n), C * np.outer(se, se))
    kind = rows.get("row_kind", pd.Series(["study"] * n)).fillna("study").to_numpy()
    e = np.where(kind == "study", tau * rng.normal(size=n), 0.0)
    sw = cfg.get("study_time", "independent")
    if sw != "independent":
        # a study's within-cell deviations correlated rho_w^lag across its times
        rw = rng.beta(1, 1)
        truth["rho_within"] = rw
        pos = {t: i for i, t in enumerate(times)}
        for s in studies:
            ix = np.flatnonzero((rows["study"].to_numpy() == s) & (kind == "study"))
            lag = np.array([[abs(tv[i] - tv[k]) if sw == "car"
                             else abs(pos[rows["time"].iloc[i]] - pos[rows["time"].iloc[k]])
                             for k in ix] for i in ix], dtype=float)
            e[ix] = tau * (np.linalg.cholesky(rw ** lag + 1e-12 * np.eye(ix.size))
                           @ rng.normal(size=ix.size))
    y = np.array([cell[(g, t)] + (u.get(s, 0.0) if s in studies else 0.0)
                  for g, t, s in zip(rows["subgroup"], rows["time"], rows["study"])]) + e
    return y + eps, truth


def _truth_of(p: Param, truth, design):
    if not p.coords and p.name in truth:
        return truth[p.name]
    g = p.get("subgroup") or design.subgroups[0]
    t = p.get("time")
    if p.name == "mu" and t == "":
        return truth[("m", g)]
    if p.name == "mu" and t in design.times:
        return truth[("mu", g, int(t))]
    if p.name == "contrast":
        a, b = g.split(" - ")
        if t == "":
            return truth[("m", a)] - truth[("m", b)]
        if t in design.times:
            return truth[("mu", a, int(t))] - truth[("mu", b, int(t))]
    return None


CONFIGS = {
    "exchangeable-fixed": dict(time_structure="exchangeable"),
    "ar1-fixed": dict(time_structure="ar1"),
    "car-fixed": dict(time_structure="car"),
    "random-subgroups": dict(subgroup="random", layout=dict(subgroups=("A", "B", "C"),
                                                            studies=2)),
    "r-prior-exchangeable": dict(r=ghm.BetaPrior(2, 2), layout=dict(pooled=True)),
    "r-prior-decay": dict(r=ghm.BetaPrior(8, 2), correlation="decay",
                          layout=dict(times=(1, 2, 4), studies=4)),
    "study-time-ar1": dict(study_time="ar1"),
    "study-time-car": dict(study_time="car", time_structure="car"),
}


#: replications per configuration where 300 are not enough. random-subgroups has 29 parameters
#: under one Bonferroni threshold (3.4e-4): at this seed its first 300 replications give
#: mu[A, time 2] p 2.7e-4 (bins 24 21 37 20 43 20 32 48 33 22), a false alarm of those draws, not
#: of the engine: an independent posterior gives the same u on the same draws
#: (test_random_subgroups_u_equal_an_independent_reference) and is uniform over 3,000
#: replications at another seed. 1,000 replications at this seed: min p 0.033 (C - A).
REPS = {"random-subgroups": 1000}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_sbc(name):
    cfg = dict(CONFIGS[name])
    rows = _layout(**cfg.pop("layout", {}))
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    us: dict = {}
    t0 = time.perf_counter()
    reps = int(__import__("os").environ.get("SBC_REPS", REPS.get(name, SBC_REPS)))
    for _ in range(reps):
        y, truth = _simulate(rows, cfg, rng)
        data = rows.assign(yi=y)
        fit = ghm_exact.fit_ghm(data, mean_prior=MEAN, sigma_time=SCALE, sigma_study=SCALE,
                                tau=SCALE, warn=False,
                                **({"sigma_subgroup": SCALE} if cfg.get("subgroup") == "random"
                                   else {}), **cfg)
        for p in fit.params():
            if p.name == "theta_new" or "(" in p.get("time"):
                continue
            tv = _truth_of(p, truth, fit.design)
            if tv is None:
                continue
            us.setdefault(str(p), []).append(fit.prob(p, below=float(tv)))
    pv = {}
    for k, u in us.items():
        counts = np.bincount(np.minimum((np.asarray(u) * SBC_BINS).astype(int), SBC_BINS - 1),
                             minlength=SBC_BINS)
        pv[k] = float(stats.chisquare(counts).pvalue)
    PVALUES[name] = pv
    print(f"\nSBC {name}: {reps} replications, {time.perf_counter() - t0:.0f} s")
    for k, p in pv.items():
        print(f"  {k:<45s} chi-square p = {p:.3f}")
    assert min(pv.values()) > SBC_ALPHA / len(pv), pv


def _reference(rows, y, funcs, n_draws, rng):
    """Independent posterior of the random-subgroups model: the four scales drawn from their
    HalfNormal(0.5) priors (importance sampling with the prior as proposal), and given them the
    Gaussian algebra of the latent vector (mu, a_g, d_gt, u_j) written from :func:`_simulate`'s
    definition (not from the design matrices of :mod:`bayesmeta.ghm`). ``funcs`` maps a name to
    (latent coefficients, truth); returns P(eta <= truth | y) and its Monte Carlo SE per name."""
    subs = list(dict.fromkeys(rows["subgroup"]))
    times = sorted(set(rows["time"]))
    studies = list(dict.fromkeys(rows["study"]))
    ns, nt = len(subs), len(times)
    n, q = len(rows), 1 + ns + ns * nt + len(studies)
    kind = np.repeat([0, 1, 2, 3], [1, ns, ns * nt, len(studies)])
    H = np.zeros((n, q))
    for i, (s, g, t) in enumerate(zip(rows["study"], rows["subgroup"], rows["time"])):
        k = subs.index(g)
        H[i, [0, 1 + k, 1 + ns + k * nt + times.index(t), 1 + ns + ns * nt + studies.index(s)]] = 1
    se = rows["sei"].to_numpy()
    same = rows["study"].to_numpy()[:, None] == rows["study"].to_numpy()[None, :]
    R = np.where(same, 0.5, 1.0) * np.where(same, 1.0, 0.0) * np.outer(se, se)   # r = 0.5
    np.fill_diagonal(R, se ** 2)
    L = np.array([c for c, _ in funcs.values()])
    truth = np.array([t for _, t in funcs.values()])
    th = np.abs(rng.normal(0.0, 0.5, size=(n_draws, 4)))      # sigma_subgroup, time, study, tau
    var = np.column_stack([np.ones(n_draws), th[:, :3] ** 2])[:, kind]
    S = np.einsum("ik,ck,jk->cij", H, var, H) + R + th[:, 3, None, None] ** 2 * np.eye(n)
    C = np.linalg.cholesky(S)
    a = np.linalg.solve(C, np.broadcast_to(y[:, None], (n_draws, n, 1)))[..., 0]
    lw = -0.5 * np.sum(a ** 2, 1) - np.sum(np.log(np.diagonal(C, axis1=1, axis2=2)), 1)
    B = np.linalg.solve(C, np.swapaxes(L[None] @ (var[:, :, None] * H.T[None]), 1, 2))
    m = np.einsum("cnq,cn->cq", B, a)
    v = (var[:, None, :] * L[None] ** 2).sum(-1) - np.sum(B ** 2, 1)
    w = np.exp(lw - lw.max())
    w /= w.sum()
    cdf = stats.norm.cdf((truth - m) / np.sqrt(v))
    p = w @ cdf
    return dict(zip(funcs, zip(p, np.sqrt(np.sum(w[:, None] ** 2 * (cdf - p) ** 2, 0)))))


def test_random_subgroups_u_equal_an_independent_reference():
    """On the first replications of the random-subgroups SBC (whose first 300 alone fail the
    chi-square test, see REPS), the exact engine's u values equal those of an independent
    posterior computation (:func:`_reference`) on the same draws, within Z_MCSE Monte Carlo SEs
    (the reference's, and the exact engine's importance-sampling SE of the mixture CDF): that
    excess is in the draws, not in the engine."""
    from tests.tolerances import Z_MCSE

    cfg = dict(CONFIGS["random-subgroups"])
    rows = _layout(**cfg.pop("layout"))
    subs = list(dict.fromkeys(rows["subgroup"]))
    times = sorted(set(rows["time"]))
    ns, nt, nj = len(subs), len(times), rows["study"].nunique()
    rng = np.random.default_rng(zlib.crc32(b"random-subgroups"))
    ref_rng = np.random.default_rng(1)
    worst = 0.0
    for _ in range(int(__import__("os").environ.get("SBC_REF_REPS", 30))):
        y, truth = _simulate(rows, cfg, rng)
        fit = ghm_exact.fit_ghm(rows.assign(yi=y), mean_prior=MEAN, sigma_time=SCALE,
                                sigma_study=SCALE, tau=SCALE, sigma_subgroup=SCALE, warn=False,
                                **cfg)
        funcs = {}
        for p in fit.params():
            if p.name not in ("mu", "contrast") or "(" in p.get("time"):
                continue
            c = np.zeros(1 + ns + ns * nt + nj)
            g, t = p.get("subgroup"), p.get("time")
            terms = [(1, g)] if p.name == "mu" else list(zip((1, -1), g.split(" - ")))
            for sign, h in (terms if g else []):
                c[1 + subs.index(h)] += sign
                if t:
                    c[1 + ns + subs.index(h) * nt + times.index(int(t))] += sign
            c[0] = p.name == "mu"
            funcs[p] = (c, float(_truth_of(p, truth, fit.design)))
        ref = _reference(rows, y, funcs, 20_000, ref_rng)
        W = fit.nodes.weight
        for p, (u_ref, se_ref) in ref.items():
            M, S = fit._components(p)
            with np.errstate(divide="ignore", invalid="ignore"):   # S = 0: a point mass
                cdf = stats.norm.cdf((funcs[p][1] - M[:, 0]) / S[:, 0])
            u = fit.prob(p, below=funcs[p][1])
            se = math.hypot(se_ref, float(np.sqrt(np.sum(W ** 2 * (cdf - u) ** 2))))
            worst = max(worst, abs(u - u_ref) / se)
            assert abs(u - u_ref) <= Z_MCSE * se, (str(p), u, u_ref, se)
    print(f"\nrandom-subgroups: largest |u_exact - u_reference| = {worst:.2f} MCSE")
