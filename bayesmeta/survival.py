"""Survival across follow-up time: correlated published ORs and discrete-time study counts.

Two models, both returning :class:`bayesmeta.mcmc.MCMCResult` with a per-time survival table in
``result.extra["survival_table"]`` (recompute for another control-arm survival with
:func:`survival_table`); the first also has an exact engine
(:func:`fit_survival_published_exact`, quadrature over sigma_time, same interface):

* :func:`fit_survival_published` - published survival odds ratios with 95% CIs at several
  follow-up times *from the same patients*. log OR_t has a time structure (partially pooled
  around a common mean, or a first-order random walk) and a multivariate normal likelihood whose
  within-source correlation ``rho`` between time points is explicit (exchangeable or AR(1)).
  :func:`rho_sensitivity` refits over several ``rho`` (compiled once: the Cholesky factor of the
  sampling covariance is a data container).
* :func:`fit_survival_counts` - study-level cumulative deaths per arm at several times. A
  discrete-time model of *conditional* death per interval: given the parameters the conditional
  binomials (deaths in an interval among those at risk at its start) are independent, so the
  within-patient correlation of cumulative survival is handled exactly. Cumulative survival ORs
  are derived.

Direction: the survival odds ratio ``OR = [S1/(1-S1)] / [S0/(1-S0)]`` (group 1 = the
treatment), so OR > 1 means better survival with the treatment, as the bundled 2023 paper reads
its survival ORs
(``or_means="survival"``; use ``or_means="death"`` for odds ratios of death, which are inverted).

Outputs per time point: posterior OR (median, 95% ETI), P(OR > 1), P(OR > threshold), the
absolute survival difference and NNT for a user-set control-arm survival (default
:data:`DEFAULT_CONTROL_SURVIVAL` = 0.35: the bundled 2023 paper's discussion says 3-month mortality "can be
as high as 65%"), and the same for a new trial (predictive).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from bayesmeta import results
from bayesmeta.exact import (FixedTau, _adaptive_trapezoid, _Map, _mix_cdf, _mix_quantiles,
                             _moment_exists)
from bayesmeta.exceptions import DataError, EstimationError, SpecError
from bayesmeta.mcmc import (MCMCResult, PosteriorResult, Report, SamplerSettings, _draws,
                            _finish_tree, _get_compiled, _make_result, _prior_key, _sample, _settings,
                            _fmt_time, _time_sort_key)
from bayesmeta.priors import Flat, Normal, TauPrior

__all__ = ["fit_survival_published", "fit_survival_published_exact", "fit_survival_counts",
           "rho_sensitivity", "survival_table", "ExactSurvivalResult",
           "DEFAULT_CONTROL_SURVIVAL", "DEFAULT_THRESHOLD"]

#: Control-arm survival used for absolute differences and NNT unless the user sets one:
#: the bundled 2023 paper, Discussion: 3-month mortality "can be as high as 65%" -> survival 0.35.
DEFAULT_CONTROL_SURVIVAL = 0.35
#: Clinically relevant OR threshold for P(OR > threshold).
DEFAULT_THRESHOLD = 1.5
_Z975 = 1.959963984540054
STRUCTURES = ("exchangeable", "rw1")
CORRELATIONS = ("exchangeable", "ar1")


def _prior(p, default, kind):
    from bayesmeta import priors as P
    if p is None:
        return default
    if isinstance(p, str):
        return P.parse_prior(p, kind=kind)
    return p


def _corr(n: int, rho: float, kind: str) -> np.ndarray:
    if kind not in CORRELATIONS:
        raise SpecError(f"Invalid correlation {kind!r}: must be one of {list(CORRELATIONS)}.")
    idx = np.arange(n)
    if kind == "ar1":
        R = rho ** np.abs(idx[:, None] - idx[None, :])
    else:
        R = np.full((n, n), rho)
        np.fill_diagonal(R, 1.0)
    if np.linalg.eigvalsh(R).min() <= 1e-10:
        raise SpecError(f"Invalid rho {rho!r}: the {kind} correlation matrix of {n} time points "
                        "is not positive definite.", fix="use 0 <= rho < 1")
    return R


# ---------------------------------------------------------------------------------------------
# survival table from draws of the log survival OR
# ---------------------------------------------------------------------------------------------

def _table_rows(log_or: np.ndarray, time: str, kind: str, p0: float, threshold: float) -> dict:
    orr = np.exp(log_or)
    odds0 = p0 / (1.0 - p0)
    p1 = orr * odds0 / (1.0 + orr * odds0)
    diff = p1 - p0
    lo, md, hi = np.quantile(diff, [0.025, 0.5, 0.975])
    mdiff = float(np.mean(diff))

    def nnt(d):
        return math.inf if d == 0 else 1.0 / d

    # NNT interval is 1/diff interval only when the diff interval excludes 0 (Altman 1998).
    nnt_lo, nnt_hi = (nnt(hi), nnt(lo)) if (lo > 0 or hi < 0) else (math.nan, math.nan)
    q = np.quantile(orr, [0.025, 0.5, 0.975])
    return {"time": time, "kind": kind, "or_median": q[1], "or_ci_low": q[0], "or_ci_high": q[2],
            "p_or_gt_1": float(np.mean(orr > 1)),
            "threshold": threshold, "p_or_gt_threshold": float(np.mean(orr > threshold)),
            "control_survival": p0, "survival_diff_mean": mdiff, "survival_diff_median": md,
            "survival_diff_ci_low": lo, "survival_diff_ci_high": hi,
            "nnt": nnt(md), "nnt_ci_low": nnt_lo, "nnt_ci_high": nnt_hi,
            "p_benefit": float(np.mean(diff > 0))}


def survival_table(result: MCMCResult, control_survival: float = DEFAULT_CONTROL_SURVIVAL,
                   threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Per-time survival table from a survival fit.

    Parameters
    ----------
    result : MCMCResult from :func:`fit_survival_published` or :func:`fit_survival_counts`
        (quantiles and probabilities from the draws), or ExactSurvivalResult from
        :func:`fit_survival_published_exact` (computed exactly from its mixtures).
    control_survival : float in (0, 1), or dict time -> float
        Control-arm survival used for the absolute difference and NNT.
    threshold : float
        OR threshold for ``p_or_gt_threshold``.

    Returns
    -------
    DataFrame
        One row per (time, kind) with kind ``"pooled"`` (the posterior OR) and ``"new_trial"``
        (predictive for a new trial). Columns: time, kind, or_median, or_ci_low, or_ci_high,
        p_or_gt_1, threshold, p_or_gt_threshold, control_survival, survival_diff_mean,
        survival_diff_median, survival_diff_ci_low, survival_diff_ci_high, nnt (1 / median
        difference; negative = number needed to harm), nnt_ci_low, nnt_ci_high (NaN when the
        difference interval includes 0), p_benefit (P(difference > 0) = P(OR > 1)).
    """
    if isinstance(result, ExactSurvivalResult):   # exact mixtures, not draws
        return result.survival_table(control_survival, threshold)
    post = result.datatree["posterior"]
    times = list(result.extra["times"])
    rows = []
    for t in times:
        p0 = control_survival[t] if isinstance(control_survival, dict) else control_survival
        if not (0.0 < float(p0) < 1.0):
            raise SpecError(f"Invalid control_survival {p0!r}: must be in (0, 1).")
        for var, kind in (("log_or", "pooled"), ("log_or_new", "new_trial")):
            d = np.asarray(post[var].sel(time=t).values, dtype=float).ravel()
            rows.append(_table_rows(d, t, kind, float(p0), float(threshold)))
    df = pd.DataFrame(rows)
    df.attrs.update(ci_prob=0.95, ci_kind="eti",
                    note="OR = survival odds ratio, > 1 favours group 1 (the treatment)")
    return df


# ---------------------------------------------------------------------------------------------
# (a) published ORs at several times, correlated
# ---------------------------------------------------------------------------------------------

def _build_published(n_t, structure, mu_prior, sigma_prior, tau_new_prior, y, chol):
    import pymc as pm
    import pytensor.tensor as pt

    def builder():
        with pm.Model(coords={"time": [f"t{i}" for i in range(n_t)]}) as m:
            # whitened likelihood: L^-1 y ~ N(L^-1 theta, I) is y ~ MVN(theta, L L') up to the
            # constant log|L| (same posterior); compiles ~5x faster than pm.MvNormal here.
            yw = pm.Data("y_white", np.linalg.solve(chol, y), dims="time")
            Linv = pm.Data("chol_inv", np.linalg.inv(chol))
            mu = mu_prior.to_pymc("mu")
            sigma = sigma_prior.to_pymc("sigma_time")
            z = pm.Normal("z", 0.0, 1.0, dims="time")
            if structure == "exchangeable":
                theta = mu + sigma * z
            else:  # rw1: theta_1 = mu, theta_t = theta_{t-1} + sigma z_t
                theta = mu + sigma * pt.concatenate([pt.zeros(1), pt.cumsum(z[1:])])
            theta = pm.Deterministic("log_or", theta, dims="time")
            tau = tau_new_prior.to_pymc("tau_new")
            z_new = pm.Normal("z_new", 0.0, 1.0, dims="time")
            pm.Deterministic("log_or_new", theta + tau * z_new, dims="time")
            pm.Deterministic("or", pt.exp(theta), dims="time")
            pm.Normal("y", mu=pt.dot(Linv, theta), sigma=1.0, observed=yw, dims="time")
        return m, ("y_white", "chol_inv")

    return builder


def _published_priors(mu_prior, sigma_prior, tau_new_prior):
    """(mu, sigma_time, tau_new) priors with the published-model defaults."""
    from bayesmeta import priors as P

    mu_p = _prior(mu_prior, P.Normal(0.0, 1.5, source="log OR within +-3 (OR 1/20 to 20)"), "mu")
    sig_p = _prior(sigma_prior, P.HalfNormal(0.5), "tau")
    tau_p = _prior(tau_new_prior, P.HalfNormal(0.5, source="between-trial SD of log OR; "
                                               "not updated by pooled data"), "tau")
    return mu_p, sig_p, tau_p


def _published_inputs(times, or_, ci_low, ci_high, or_means, structure, ci_level):
    """Validate published ORs/CIs; (times sorted, y = log survival OR, se from the CI)."""
    t = list(times)
    n = len(t)
    orr = np.asarray(or_, dtype=float)
    lo, hi = np.asarray(ci_low, dtype=float), np.asarray(ci_high, dtype=float)
    if not (orr.size == lo.size == hi.size == n) or n < 1:
        raise DataError(f"Length mismatch: times {n}, or {orr.size}, ci_low {lo.size}, "
                        f"ci_high {hi.size}.")
    bad = ~((lo > 0) & (lo < orr) & (orr < hi) & np.isfinite(hi))
    if bad.any():
        raise DataError(f"ORs and CIs must satisfy 0 < ci_low < OR < ci_high; rows "
                        f"{np.flatnonzero(bad).tolist()} do not")
    if len(set(map(_fmt_time, t))) != n:
        raise DataError(f"duplicate follow-up times {t}: one OR per time point")
    if or_means not in ("survival", "death"):
        raise SpecError(f"Invalid or_means {or_means!r}: must be one of ['survival', 'death'].")
    if structure not in STRUCTURES:
        raise SpecError(f"Invalid structure {structure!r}: must be one of {list(STRUCTURES)}.")
    order = sorted(range(n), key=lambda i: _time_sort_key(t[i]))
    t = [t[i] for i in order]
    orr, lo, hi = orr[order], lo[order], hi[order]
    if not (0.0 < ci_level < 1.0):
        raise SpecError(f"Invalid ci_level {ci_level!r}: must be in (0, 1).")
    z = float(stats.norm.ppf(0.5 + ci_level / 2.0))
    y = np.log(orr)
    se = (np.log(hi) - np.log(lo)) / (2.0 * z)
    if or_means == "death":
        y = -y
    return t, y, se


def fit_survival_published(times, or_, ci_low, ci_high, *, rho: float = 0.5,
                           correlation: str = "exchangeable", structure: str = "exchangeable",
                           or_means: str = "survival", mu_prior=None, sigma_prior=None,
                           tau_new_prior=None,
                           control_survival: float = DEFAULT_CONTROL_SURVIVAL,
                           threshold: float = DEFAULT_THRESHOLD, ci_level: float = 0.95,
                           settings: SamplerSettings | None = None, analysis: str = "",
                           outcome: str = "survival", warn: bool = True,
                           **sampling) -> MCMCResult:
    """Time-structured model for published survival ORs at several times from the same patients.

    y_t = log OR_t, s_t = (log ci_high - log ci_low) / (2 z), y ~ MVN(theta, S R(rho) S) with
    S = diag(s_t) and R exchangeable (all pairs rho) or AR(1) (rho^|i-j| over ordered times).
    ``structure="exchangeable"``: theta_t = mu + sigma_time z_t (partially pooled around mu);
    ``"rw1"``: theta_1 = mu, theta_t = theta_{t-1} + sigma_time z_t.

    The new-trial predictive log OR_new,t = theta_t + tau_new z_t uses ``tau_new_prior``
    (default HalfNormal(0.5)) *unchanged by the data*: pooled ORs carry no information on the
    between-trial SD. It is the prior's plausible between-trial spread, stated in the printout.

    Parameters
    ----------
    times, or_, ci_low, ci_high : array-like
        Follow-up times and the published ORs with their CIs (``ci_level``).
    rho : float
        Within-source correlation of the estimates at different times (sensitivity:
        :func:`rho_sensitivity`).
    or_means : {"survival", "death"}
        ``"survival"``: OR > 1 = better survival in group 1 (2023 paper's reading);
        ``"death"``: ORs of death, inverted to survival ORs.
    mu_prior : default Normal(0, 1.5) on log OR (ORs beyond 20 implausible a priori).
    sigma_prior : default HalfNormal(0.5) (time-to-time variation of log OR).

    Returns
    -------
    MCMCResult
        Reported ``mu``, ``sigma_time``, ``log_or`` per time, ``log_or_new`` per time;
        ``extra["survival_table"]`` (see :func:`survival_table`), ``extra["rho"]``.
    """

    t, y, se = _published_inputs(times, or_, ci_low, ci_high, or_means, structure, ci_level)
    n = len(t)
    R = _corr(n, float(rho), correlation)
    cov = R * np.outer(se, se)
    chol = np.linalg.cholesky(cov)
    s = _settings(settings, sampling)
    mu_p, sig_p, tau_p = _published_priors(mu_prior, sigma_prior, tau_new_prior)
    key = ("survival-published", n, structure, _prior_key(mu_p), _prior_key(sig_p),
           _prior_key(tau_p))
    comp = _get_compiled(key, _build_published(n, structure, mu_p, sig_p, tau_p, y, chol))
    dt, c_s, s_s = _sample(comp, {"y_white": np.linalg.solve(chol, y),
                                  "chol_inv": np.linalg.inv(chol)}, s)
    tl = [_fmt_time(v) for v in t]
    dt = _finish_tree(dt, coords={"time": tl}, observed={"yi": ("time", y)},
                      constant={"sei": ("time", se), "cov": (("time", "time2"), cov)},
                      attrs={"model": "survival-published", "seed": s.seed,
                             "sampler": s.sampler, "rho": float(rho),
                             "correlation": correlation, "structure": structure,
                             "or_means": or_means, "compile_seconds": c_s,
                             "sampling_seconds": s_s})
    reports = [Report("mu"), Report("sigma_time")]
    reports += [Report("log_or", (("time", v),), f"logOR[{v}]", time=v) for v in tl]
    reports += [Report("log_or_new", (("time", v),), f"logOR_new[{v}]", time=v) for v in tl]
    res = _make_result(
        "survival-published", dt, reports, s, c_s, s_s,
        {"mu": mu_p.describe(), "sigma_time": sig_p.describe(), "tau_new": tau_p.describe()},
        measure="OR", scale="logOR", k=n, analysis=analysis, outcome=outcome,
        notes=(f"Within-source correlation rho = {rho:g} ({correlation}); time structure "
               f"{structure}; survival OR > 1 favours group 1.",
               "New-trial predictive uses tau_new from its prior (pooled ORs carry no "
               "between-trial information)."),
        extra={"times": tl, "rho": float(rho)}, monitor=["mu", "sigma_time", "z"], warn=warn)
    res.extra["survival_table"] = survival_table(res, control_survival, threshold)
    return res


def rho_sensitivity(times, or_, ci_low, ci_high, *, rhos=(0.0, 0.5, 0.8),
                    control_survival: float = DEFAULT_CONTROL_SURVIVAL,
                    threshold: float = DEFAULT_THRESHOLD, engine: str = "exact",
                    **kw) -> pd.DataFrame:
    """Refit the published-OR model over ``rhos``; tidy table (rho column first).

    ``engine="exact"`` (default): :func:`fit_survival_published_exact` (quadrature; ``kw`` are
    its keywords, e.g. ``n_draws``, ``seed``, priors); ``"mcmc"``: :func:`fit_survival_published`
    (reuses one compiled model: the Cholesky factor is data; ``kw`` may hold sampler settings).
    Columns: rho, clean, then the columns of :func:`survival_table`.
    """
    if engine not in ("exact", "mcmc"):
        raise SpecError(f"Invalid engine {engine!r}: must be one of ['exact', 'mcmc'].")
    fit = fit_survival_published_exact if engine == "exact" else fit_survival_published
    frames = []
    for r in rhos:
        res = fit(times, or_, ci_low, ci_high, rho=r, control_survival=control_survival,
                  threshold=threshold, **kw)
        tab = res.extra["survival_table"].copy()
        tab.insert(0, "clean", res.clean)
        tab.insert(0, "rho", float(r))
        frames.append(tab)
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# (a, exact engine) the published model is Gaussian given sigma_time: quadrature over sigma
# ---------------------------------------------------------------------------------------------
#
# Given sigma_time, x = (mu, theta) and y are jointly Gaussian:
#   theta | mu ~ N(mu 1, sigma² A), A = I (exchangeable) or A_ij = min(i, j) (rw1, 0-based),
#   y | theta ~ N(theta, C), C = S R(rho) S, mu ~ N(m0, s0²) (or flat, p0 = 1/s0² = 0).
# With M = C + sigma² A:  mu | sigma, y ~ N(mhat, V), V = 1/(1'M⁻¹1 + p0),
# mhat = V (1'M⁻¹y + p0 m0);  theta | mu, sigma, y ~ N(mu g + G y, A_c), G = sigma² A M⁻¹,
# g = 1 - G 1 = C M⁻¹ 1, A_c = sigma² A - G sigma² A = G C;
# so theta | sigma, y ~ N(mhat g + G y, A_c + V g g').
# p(y | sigma) = N(y; m0 1, M + s0² 11') (restricted likelihood for a flat mu prior), and
# p(sigma | y) ∝ p(sigma) p(y | sigma) is one-dimensional: every marginal of mu and theta_t is a
# normal mixture over sigma (as bayesmeta.exact does over tau). The new-trial log OR adds
# tau_new z with tau_new from its prior (a second, prior-only mixture).

_LOG2PI = math.log(2.0 * math.pi)
_QTOL = 1e-11          # relative change of moments between step halvings
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(48)   # ∫ f(x) φ(x) dx (48: < 1e-12 here)
_GH_W = _GH_W / math.sqrt(2.0 * math.pi)
CI_PROB = 0.95


def _time_matrix(n: int, structure: str) -> np.ndarray:
    if structure == "exchangeable":
        return np.eye(n)
    i = np.arange(n)
    return np.minimum(i[:, None], i[None, :]).astype(float)


def _pub_conditionals(sig, y, C, A, m0, p0, full=False) -> dict:
    """Gaussian conditionals given each sigma in ``sig`` (N,); see the block comment."""
    sig = np.atleast_1d(np.asarray(sig, dtype=float))
    T = y.size
    s2A = (sig ** 2)[:, None, None] * A[None]
    M = C[None] + s2A
    Minv = np.linalg.inv(M)
    Minv = 0.5 * (Minv + Minv.transpose(0, 2, 1))
    _, logdet = np.linalg.slogdet(M)
    one_a = Minv.sum((-1, -2))
    one_b = (Minv @ y).sum(-1)
    V = 1.0 / (one_a + p0)
    mhat = V * (one_b + p0 * m0)
    r = y[None] - mhat[:, None]
    q = np.einsum("ni,nij,nj->n", r, Minv, r)
    ll = -0.5 * logdet + 0.5 * np.log(V) - 0.5 * q
    if p0 > 0:
        ll = ll - 0.5 * T * _LOG2PI + 0.5 * math.log(p0) - 0.5 * p0 * (mhat - m0) ** 2
    else:
        ll = ll - 0.5 * (T - 1) * _LOG2PI
    G = s2A @ Minv
    # cancellation-free forms (M - sigma² A = C): g = 1 - G 1 = C M⁻¹ 1, A_c = G C
    g = (C[None] @ Minv).sum(-1)
    Gy = G @ y
    Ac = G @ C[None]
    Ac = 0.5 * (Ac + Ac.transpose(0, 2, 1))
    out = {"ll": ll, "mhat": mhat, "V": V, "tm": mhat[:, None] * g + Gy,
           "tv": np.maximum(np.diagonal(Ac, axis1=1, axis2=2) + V[:, None] * g ** 2, 0.0)}
    if full:
        out.update(g=g, Gy=Gy, Ac=Ac)
    return out


@dataclass(frozen=True)
class _SigGrid:
    """Quadrature nodes of a 1-D scale parameter (posterior of sigma_time or prior of tau_new)."""

    sigma: np.ndarray
    weight: np.ndarray   # normalised (sum 1)
    t: np.ndarray
    h: float
    mp: object           # exact._Map (None for a point mass)
    aux: dict            # per-node conditionals (arrays with the node axis first)
    log_z: float
    fixed: bool = False

    def cdf(self, s):
        """P(sigma <= s): sinc indefinite integral of the trapezoid samples (Stenger 1993)."""
        s = np.atleast_1d(np.asarray(s, dtype=float))
        if self.fixed:
            return (s >= self.sigma[0]).astype(float)
        mp = self.mp
        inside = (s > mp.lo) & (s < mp.hi)
        t = mp.t_of_z(mp.z_of_tau(np.where(inside, s, mp.lo + 1.0)))
        return np.where(inside, self._cdf_t(t), np.where(s >= mp.hi, 1.0, 0.0))

    def _cdf_t(self, t):
        u = (np.asarray(t, dtype=float)[..., None] - self.t) / self.h
        si, _ = special.sici(math.pi * u)
        return np.clip(((0.5 + si / math.pi) * self.weight).sum(-1), 0.0, 1.0)

    def quantiles(self, qs):
        qs = np.atleast_1d(np.asarray(qs, dtype=float))
        if self.fixed:
            return np.full(qs.shape, float(self.sigma[0]))
        lo = np.full(qs.shape, self.t[0] - 10 * self.h)
        hi = np.full(qs.shape, self.t[-1] + 10 * self.h)
        for _ in range(70):   # bisection in t: bracket width / 2**70
            mid = 0.5 * (lo + hi)
            below = self._cdf_t(mid) < qs
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return self.mp.tau_of_z(self.mp.z_of_t(0.5 * (lo + hi)))

    def sample(self, u):
        """Inverse-CDF draws for uniforms ``u`` (CDF tabulated at h/16 in t, interpolated)."""
        if self.fixed:
            return np.full(np.shape(u), float(self.sigma[0]))
        tt = np.arange(self.t[0] - 6 * self.h, self.t[-1] + 6 * self.h, self.h / 16)
        F = np.maximum.accumulate(self._cdf_t(tt))
        keep = np.concatenate([[True], np.diff(F) > 0])
        return self.mp.tau_of_z(self.mp.z_of_t(np.interp(u, F[keep], tt[keep])))


def _scale_grid(prior, logf, moments, scale, tol=_QTOL, hmin=1.0 / 256) -> _SigGrid:
    """Adaptive trapezoid rule for p(s) ∝ prior(s) exp(logf(s)) (s = sigma or tau).

    As :func:`bayesmeta.exact._build_grid`: s -> z = log s (logit for bounded priors) ->
    z = c + w sinh(t), centred at the mode with curvature width; the step in t is halved
    (:func:`bayesmeta.exact._adaptive_trapezoid`) until every moment returned by
    ``moments(s, aux, weights)`` changes by < ``tol`` (relative, floor 1, so ``moments`` must
    be in the data's own units). ``logf(s) -> (loglik, aux dict)``.
    """
    if isinstance(prior, FixedTau):
        s = np.array([float(prior.value)])
        ll, aux = logf(s)
        return _SigGrid(s, np.ones(1), np.zeros(1), 0.0, None, aux, float(ll[0]), fixed=True)
    mp = _Map(prior.lower, prior.upper)

    def logpost_z(z):
        s = mp.tau_of_z(z)
        ll, aux = logf(s)
        with np.errstate(divide="ignore", invalid="ignore"):
            lg = prior.logpdf_tau(s) + ll + mp.logjac_z(z)
        return np.where(np.isfinite(lg), lg, -np.inf), aux

    zg = (np.linspace(-40.0, 40.0, 641) if mp.bounded
          else np.linspace(math.log(scale) - 30.0, math.log(scale) + 30.0, 481))
    with np.errstate(all="ignore"):
        lg, _ = logpost_z(zg)
    j = int(np.argmax(lg))
    if not np.isfinite(lg[j]):
        raise EstimationError("posterior of sigma_time is zero on the whole search grid")
    j = min(max(j, 1), zg.size - 2)
    f0, f1, f2 = lg[j - 1:j + 2]
    dz = zg[1] - zg[0]
    curv = (f0 - 2 * f1 + f2) / dz ** 2
    if np.isfinite(curv) and curv < 0:
        mp.c = float(zg[j] - dz * (f2 - f0) / (2 * (f0 - 2 * f1 + f2)))
        mp.w = float(min(max(1.0 / math.sqrt(-curv), 1e-3), 10.0))
    else:
        mp.c, mp.w = float(zg[j]), 1.0
    tlo, thi = float(mp.t_of_z(-300.0)), float(mp.t_of_z(300.0))

    def evaluate(t):
        z = mp.z_of_t(t)
        with np.errstate(all="ignore"):
            lgz, aux = logpost_z(z)
        lgz = lgz + mp.logjac_t(t)
        bad = ~np.isfinite(lgz)   # zero weight (e.g. sigma² overflow): neutral finite values
        aux = {k: np.where(bad.reshape((-1,) + (1,) * (v.ndim - 1)), 1.0, v)
               for k, v in aux.items()}
        return mp.tau_of_z(z), np.where(bad, -np.inf, lgz), aux

    t, s, aux, wgt, h, log_z = _adaptive_trapezoid(evaluate, moments, tlo, thi, tol=tol,
                                                   hmin=hmin, what="sigma_time")
    keep = wgt > 1e-300
    return _SigGrid(s[keep], wgt[keep] / wgt[keep].sum(), t[keep], h, mp,
                    {k: v[keep] for k, v in aux.items()}, log_z)


def _prior_grid(prior) -> _SigGrid:
    """Prior-only quadrature of a tau prior (the new-trial tau_new)."""
    sc = float(prior.ppf_tau(0.5)) if not isinstance(prior, FixedTau) else 1.0
    sc = sc if math.isfinite(sc) and sc > 0 else 1.0
    fin2 = _moment_exists(prior, 0, False, 2)

    def logf(s):
        return np.zeros(np.shape(s)), {}

    def moments(s, aux, w):
        x = s / sc
        m = [w @ np.log1p(x), w @ (1.0 / (1.0 + x))]
        return m + ([w @ x, w @ x ** 2] if fin2 else [])

    return _scale_grid(prior, logf, moments, sc)


def _mix_mean_expit(a, M, S, W):
    """E[expit(a + X)] for normal mixtures X: M, S (P, N), W (N,) -> (P,) (Gauss-Hermite)."""
    x = M[..., None] + S[..., None] * _GH_X
    return (special.expit(a + x) @ _GH_W) @ W


@dataclass(frozen=True)
class ExactDiagnostics:
    """Stand-in for MCMC diagnostics: quadrature has none to fail (always clean)."""

    nodes: int
    step: float
    n_draws: int
    clean: bool = True
    divergences: int = 0
    problems: tuple = ()
    r_hat_max: float = math.nan
    ess_bulk_min: float = math.nan
    ess_tail_min: float = math.nan

    def line(self) -> str:
        return (f"Exact engine: quadrature over sigma_time ({self.nodes} nodes, step "
                f"{self.step:g} on the sinh scale, moments converged to {_QTOL:g}); summaries "
                f"and probabilities are exact (no Monte Carlo error); the {self.n_draws} stored "
                "draws are i.i.d. from the exact posterior.")

    def to_dict(self) -> dict:
        return {"engine": "exact", "nodes": self.nodes, "step": self.step,
                "n_draws": self.n_draws, "clean": True, "divergences": 0}


@dataclass(frozen=True)
class ExactSurvivalResult(PosteriorResult):
    """Exact posterior of the published-OR survival model (fields and interface of
    :class:`bayesmeta.mcmc.PosteriorResult`, as MCMCResult).

    ``summary`` (index: mu, sigma_time, logOR[t], logOR_new[t]; columns mean, sd, eti95_lb,
    eti95_ub, median, mcse_mean = mcse_sd = 0) is computed by quadrature; ``datatree`` holds
    ``n_draws`` i.i.d. draws from the exact posterior (chain = 1) for plots and NetCDF.
    """

    diagnostics: ExactDiagnostics
    measure: str = "OR"
    scale: str = "logOR"
    _q: Any = field(default=None, repr=False)   # quadrature state (_PublishedExact)

    @property
    def clean(self) -> bool:
        return True

    @property
    def method(self) -> str:
        return "exact-survival"

    def prob(self, label: str, *, below: float | None = None, above: float | None = None):
        """Exact posterior probability that mu or logOR[t] / logOR_new[t] is below/above x."""
        if (below is None) == (above is None):
            raise ValueError("give exactly one of below= or above=")
        x = below if below is not None else above
        p = float(self._q.cdf(label, x))
        return p if below is not None else 1.0 - p

    def quantiles(self, label: str, qs) -> np.ndarray:
        """Exact posterior quantiles of a reported scalar at probabilities ``qs``."""
        qs = np.atleast_1d(np.asarray(qs, dtype=float))
        if label == "sigma_time":
            return np.asarray(self._q.g.quantiles(qs), dtype=float)
        M, S, W = self._q.mixture(label)
        return np.asarray(_mix_quantiles(M, S, W, qs)[0], dtype=float)

    def survival_table(self, control_survival=DEFAULT_CONTROL_SURVIVAL,
                       threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
        """The :func:`survival_table` columns, computed exactly (mixtures, not draws)."""
        return self._q.table(control_survival, threshold)

    def _row_quality(self, s: pd.Series) -> dict:
        return {"mcse": 0.0}

    def __str__(self) -> str:
        lines = [
            f"Bayesian {self.model} model, exact posterior by quadrature over sigma_time "
            f"(T = {self.k} time points; measure {self.measure}, analysis scale {self.scale})",
            "Priors: " + "; ".join(f"{k} ~ {v}" for k, v in self.priors.items()),
            "",
        ]
        tab = self.summary.rename(columns={"eti95_lb": "ci.lb", "eti95_ub": "ci.ub"})
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            lines.append(tab[["mean", "sd", "ci.lb", "ci.ub", "median"]].to_string(
                float_format=lambda v: f"{v:.4f}"))
        lines.append("")
        lines.append("95% ETI = equal-tailed credible interval (2.5%, 97.5% posterior quantiles).")
        lines.extend(self.notes)
        lines.append(f"Estimates on the {self.scale} scale; exponentiate for ratios.")
        lines.append(self.diagnostics.line())
        return "\n".join(lines)

    __repr__ = __str__


class _PublishedExact:
    """Quadrature state: sigma_time posterior grid, tau_new prior grid, per-node conditionals."""

    def __init__(self, times, y, C, A, m0, p0, sig_grid: _SigGrid, tau_grid: _SigGrid,
                 tau_fin2: bool, sig_fin: tuple):
        self.times, self.y, self.C, self.A, self.m0, self.p0 = times, y, C, A, m0, p0
        self.g, self.tg = sig_grid, tau_grid
        self.tau_fin2, self.sig_fin = tau_fin2, sig_fin
        W = sig_grid.weight
        a = sig_grid.aux
        self.W = W
        self.mu_M, self.mu_S = a["mhat"][None, :], np.sqrt(a["V"])[None, :]
        self.th_M, self.th_S = a["tm"].T, np.sqrt(a["tv"]).T                      # (T, N)
        # new trial: (sigma node n) x (tau_new node j) flattened, negligible weights pruned
        Wn = np.outer(W, tau_grid.weight)
        keep = Wn.ravel() > 1e-16 * Wn.max()   # pruned mass < 1e-11
        self.nw_W = Wn.ravel()[keep] / Wn.ravel()[keep].sum()
        self.nw_M = np.repeat(self.th_M[:, :, None], tau_grid.sigma.size, 2).reshape(
            len(times), -1)[:, keep]
        self.nw_S = np.sqrt(self.th_S[:, :, None] ** 2 + tau_grid.sigma[None, None, :] ** 2
                            ).reshape(len(times), -1)[:, keep]

    def mixture(self, label):
        if label == "mu":
            return self.mu_M, self.mu_S, self.W
        for pre, (M, S, W) in (("logOR_new[", (self.nw_M, self.nw_S, self.nw_W)),
                               ("logOR[", (self.th_M, self.th_S, self.W))):
            if label.startswith(pre) and label.endswith("]"):
                i = self.times.index(label[len(pre):-1])
                return M[i:i + 1], S[i:i + 1], W
        raise KeyError(f"no mixture for {label!r}")

    def cdf(self, label, x):
        M, S, W = self.mixture(label)
        return float(_mix_cdf(np.array([[float(x)]]), M, S, W)[0, 0])

    def _moments(self, M, S, W, finite=True):
        mean = M @ W
        var = (S ** 2 + M ** 2) @ W - mean ** 2
        sd = np.sqrt(np.maximum(var, 0.0)) if finite else np.full_like(mean, math.inf)
        return mean, sd

    def summary(self) -> pd.DataFrame:
        ql = np.array([0.5, 0.025, 0.975])
        rows = {}
        fin_mu = self.p0 > 0 or self.sig_fin[1]
        for lab, M, S, W, fin in (
                [("mu", self.mu_M, self.mu_S, self.W, fin_mu)]
                + [(f"logOR[{t}]", self.th_M[i:i + 1], self.th_S[i:i + 1], self.W, True)
                   for i, t in enumerate(self.times)]
                + [(f"logOR_new[{t}]", self.nw_M[i:i + 1], self.nw_S[i:i + 1], self.nw_W,
                    self.tau_fin2) for i, t in enumerate(self.times)]):
            mean, sd = self._moments(M, S, W, fin)
            q = _mix_quantiles(M, S, W, ql)[0]
            rows[lab] = (float(mean[0]), float(sd[0]), q[1], q[2], q[0])
        g = self.g
        m1 = float(g.weight @ g.sigma) if self.sig_fin[0] else math.inf
        sd = (math.sqrt(max(float(g.weight @ g.sigma ** 2) - m1 ** 2, 0.0))
              if self.sig_fin[1] else math.inf)
        q = g.quantiles(ql)
        rows = {"mu": rows.pop("mu"), "sigma_time": (m1, sd, q[1], q[2], q[0]), **rows}
        df = pd.DataFrame.from_dict(rows, orient="index",
                                    columns=["mean", "sd", "eti95_lb", "eti95_ub", "median"])
        df["mcse_mean"] = 0.0
        df["mcse_sd"] = 0.0
        return df

    def table(self, control_survival, threshold) -> pd.DataFrame:
        thr = float(threshold)
        if not thr > 0:
            raise SpecError(f"Invalid threshold {threshold!r}: an OR threshold must be > 0.")
        ql = np.array([0.5, 0.025, 0.975])
        rows = []
        for i, t in enumerate(self.times):
            p0 = control_survival[t] if isinstance(control_survival, dict) else control_survival
            if not (0.0 < float(p0) < 1.0):
                raise SpecError(f"Invalid control_survival {p0!r}: must be in (0, 1).")
            p0 = float(p0)
            a = math.log(p0 / (1.0 - p0))
            for kind, M, S, W in (("pooled", self.th_M[i:i + 1], self.th_S[i:i + 1], self.W),
                                  ("new_trial", self.nw_M[i:i + 1], self.nw_S[i:i + 1],
                                   self.nw_W)):
                md, lo, hi = _mix_quantiles(M, S, W, ql)[0]
                cdf = _mix_cdf(np.array([[0.0, math.log(thr)]]), M, S, W)[0]
                # the survival difference expit(a + L) - p0 is increasing in L: its quantiles
                # are those of L mapped through it; its mean by Gauss-Hermite per component
                dmd, dlo, dhi = (float(special.expit(a + v)) - p0 for v in (md, lo, hi))
                dmean = float(_mix_mean_expit(a, M, S, W)[0]) - p0

                def nnt(d):
                    return math.inf if d == 0 else 1.0 / d

                nlo, nhi = (nnt(dhi), nnt(dlo)) if (dlo > 0 or dhi < 0) else (math.nan, math.nan)
                rows.append({
                    "time": t, "kind": kind, "or_median": math.exp(md),
                    "or_ci_low": math.exp(lo), "or_ci_high": math.exp(hi),
                    "p_or_gt_1": float(1.0 - cdf[0]), "threshold": thr,
                    "p_or_gt_threshold": float(1.0 - cdf[1]), "control_survival": p0,
                    "survival_diff_mean": dmean, "survival_diff_median": dmd,
                    "survival_diff_ci_low": dlo, "survival_diff_ci_high": dhi,
                    "nnt": nnt(dmd), "nnt_ci_low": nlo, "nnt_ci_high": nhi,
                    "p_benefit": float(1.0 - cdf[0])})
        df = pd.DataFrame(rows)
        df.attrs.update(ci_prob=CI_PROB, ci_kind="eti", engine="exact",
                        note="OR = survival odds ratio, > 1 favours group 1 (the treatment)")
        return df

    def draws(self, n, seed, tau_prior):
        """Exact i.i.d. draws: sigma by inverse CDF, (mu, theta) | sigma Gaussian, tau_new from
        its prior. Deterministic given ``seed``."""
        rng = np.random.default_rng(seed)
        T = len(self.times)
        sig = self.g.sample(rng.random(n))
        c = _pub_conditionals(sig, self.y, self.C, self.A, self.m0, self.p0, full=True)
        mu = c["mhat"] + np.sqrt(c["V"]) * rng.standard_normal(n)
        ev, evec = np.linalg.eigh(c["Ac"])
        root = evec * np.sqrt(np.maximum(ev, 0.0))[:, None, :]
        theta = (mu[:, None] * c["g"] + c["Gy"]
                 + np.einsum("nij,nj->ni", root, rng.standard_normal((n, T))))
        u = rng.random(n)
        tau = (np.full(n, float(tau_prior.value)) if isinstance(tau_prior, FixedTau)
               else np.asarray(tau_prior.ppf_tau(u), dtype=float))
        new = theta + tau[:, None] * rng.standard_normal((n, T))
        return {"mu": mu, "sigma_time": sig, "tau_new": tau, "log_or": theta, "log_or_new": new}


def fit_survival_published_exact(times, or_, ci_low, ci_high, *, rho: float = 0.5,
                                 correlation: str = "exchangeable",
                                 structure: str = "exchangeable", or_means: str = "survival",
                                 mu_prior=None, sigma_prior=None, tau_new_prior=None,
                                 control_survival: float = DEFAULT_CONTROL_SURVIVAL,
                                 threshold: float = DEFAULT_THRESHOLD, ci_level: float = 0.95,
                                 n_draws: int = 40_000, seed: int = 20240601,
                                 analysis: str = "", outcome: str = "survival"
                                 ) -> ExactSurvivalResult:
    """Exact posterior of the model of :func:`fit_survival_published` (same model, same
    defaults), by quadrature over sigma_time instead of MCMC.

    Given sigma_time, (mu, log OR_t) are jointly Gaussian a posteriori (conjugate), and
    p(sigma_time | y) ∝ p(sigma_time) N(y; m0 1, C + s0² 11' + sigma² A) is one-dimensional
    (A = I for ``structure="exchangeable"``, the random-walk covariance min(i, j) for
    ``"rw1"``). The sigma grid is the double-exponential (sinh) trapezoid rule of
    :mod:`bayesmeta.exact` with step halving until moments change by < 1e-11. Posterior mean,
    SD and quantiles of mu, sigma_time and log OR_t, P(OR_t > 1) and P(OR_t > threshold) are
    exact normal-mixture quantities; the survival difference expit(logit p0 + log OR) - p0 is
    increasing in log OR, so its median and interval are the log-OR quantiles mapped through
    it (NNT = 1 / median difference) and its mean is a Gauss-Hermite mixture integral. The
    new-trial predictive log OR_t + tau_new z is a 2-D mixture (sigma posterior x the
    ``tau_new_prior`` grid, prior only: not updated by pooled data).

    ``n_draws`` i.i.d. draws from the exact posterior (seeded; sigma by inverse CDF, then the
    Gaussian conditionals; tau_new from its prior) fill ``datatree["posterior"]`` (chain = 1)
    for plots, ArviZ and NetCDF; no reported number comes from them.

    Parameters are those of :func:`fit_survival_published` (``mu_prior`` Normal or Flat,
    ``sigma_prior`` / ``tau_new_prior`` any tau prior or ``bayesmeta.exact.FixedTau``).

    Returns
    -------
    ExactSurvivalResult
        ``summary``/``to_frame()`` rows mu, sigma_time, logOR[t], logOR_new[t] (method
        ``"exact-survival"``, 95% ETI, mcse 0); ``extra["survival_table"]`` (columns of
        :func:`survival_table`), ``extra["rho"]``, ``extra["times"]``; ``clean`` is True.
    """
    import time as _time

    import xarray as xr

    import bayesmeta

    t0 = _time.perf_counter()
    t, y, se = _published_inputs(times, or_, ci_low, ci_high, or_means, structure, ci_level)
    n = len(t)
    C = _corr(n, float(rho), correlation) * np.outer(se, se)
    A = _time_matrix(n, structure)
    mu_p, sig_p, tau_p = _published_priors(mu_prior, sigma_prior, tau_new_prior)
    if not isinstance(mu_p, (Normal, Flat)):
        raise SpecError(f"mu_prior must be Normal(mean, sd) or Flat(), got {mu_p!r}")
    for nm, p in (("sigma_prior", sig_p), ("tau_new_prior", tau_p)):
        if not isinstance(p, TauPrior) or not getattr(p, "is_proper", True):
            raise SpecError(f"{nm} must be a proper tau prior, got {p!r}")
    if int(n_draws) < 1:
        raise SpecError(f"Invalid n_draws {n_draws!r}: must be >= 1.")
    m0, p0 = (0.0, 0.0) if mu_p.is_flat else (float(mu_p.mean), 1.0 / float(mu_p.sd) ** 2)
    tl = [_fmt_time(v) for v in t]
    lthr = math.log(float(threshold)) if float(threshold) > 0 else 0.0
    c = float(np.median(se))
    # posterior tail of sigma ~ prior tail x sigma^-(rank A) (proper mu) or ^-(T-1) (flat mu,
    # exchangeable: the flat direction 1 is in the range of A)
    k_eff, flat_eff = (n, p0 == 0) if structure == "exchangeable" else (n - 1, False)
    sig_fin = (_moment_exists(sig_p, k_eff, flat_eff, 1), _moment_exists(sig_p, k_eff,
                                                                          flat_eff, 2))

    def logf(s):
        d = _pub_conditionals(s, y, C, A, m0, p0)
        return d.pop("ll"), d

    def moments(s, aux, w):
        M, S = aux["tm"], np.sqrt(aux["tv"])
        x = s / c
        m = [w @ aux["mhat"] / c, w @ (aux["V"] + aux["mhat"] ** 2) / c ** 2,
             w @ np.log1p(x), w @ (1.0 / (1.0 + x))]
        m += list(w @ M / c) + list(w @ (S ** 2 + M ** 2) / c ** 2)
        m += list(w @ special.ndtr(M / S)) + list(w @ special.ndtr((M - lthr) / S))
        m += ([w @ x] if sig_fin[0] else []) + ([w @ x ** 2] if sig_fin[1] else [])
        return m

    grid = _scale_grid(sig_p, logf, moments, c)
    tgrid = _prior_grid(tau_p)
    q = _PublishedExact(tl, y, C, A, m0, p0, grid, tgrid, _moment_exists(tau_p, 0, False, 2),
                        sig_fin)
    summ = q.summary()
    dr = q.draws(int(n_draws), seed, tau_p)

    def v(x):
        return ("chain", "draw"), x[None]

    def vt(x):
        return ("chain", "draw", "time"), x[None]

    post = xr.Dataset({"mu": v(dr["mu"]), "sigma_time": v(dr["sigma_time"]),
                       "tau_new": v(dr["tau_new"]), "log_or": vt(dr["log_or"]),
                       "log_or_new": vt(dr["log_or_new"]), "or": vt(np.exp(dr["log_or"]))},
                      coords={"chain": [0], "draw": np.arange(int(n_draws)), "time": tl})
    post.attrs.update(inference_library="bayesmeta.survival (exact quadrature, i.i.d. draws)")
    seconds = _time.perf_counter() - t0
    attrs = {"model": "survival-published", "engine": "exact", "seed": int(seed),
             "n_draws": int(n_draws), "rho": float(rho), "correlation": correlation,
             "structure": structure, "or_means": or_means, "quadrature_nodes": int(grid.sigma.size),
             "compile_seconds": 0.0, "sampling_seconds": seconds,
             "bayesmeta_version": bayesmeta.__version__,
             "created": _dt.datetime.now(_dt.timezone.utc).isoformat()}
    dt = xr.DataTree.from_dict({
        "/": xr.Dataset(attrs=attrs), "/posterior": post,
        "/observed_data": xr.Dataset({"yi": ("time", y)}, coords={"time": tl}),
        "/constant_data": xr.Dataset({"sei": ("time", se), "cov": (("time", "time2"), C)},
                                     coords={"time": tl, "time2": tl})})
    reports = [Report("mu"), Report("sigma_time")]
    reports += [Report("log_or", (("time", v_),), f"logOR[{v_}]", time=v_) for v_ in tl]
    reports += [Report("log_or_new", (("time", v_),), f"logOR_new[{v_}]", time=v_) for v_ in tl]
    res = ExactSurvivalResult(
        model="survival-published", datatree=dt, summary=summ,
        diagnostics=ExactDiagnostics(nodes=int(grid.sigma.size), step=float(grid.h),
                                     n_draws=int(n_draws)),
        settings={"engine": "exact", "n_draws": int(n_draws), "seed": int(seed)},
        compile_seconds=0.0, sampling_seconds=seconds,
        priors={"mu": mu_p.describe(), "sigma_time": sig_p.describe(),
                "tau_new": tau_p.describe()},
        reports=tuple(reports), measure="OR", scale="logOR", k=n, analysis=analysis,
        outcome=outcome,
        notes=(f"Within-source correlation rho = {rho:g} ({correlation}); time structure "
               f"{structure}; survival OR > 1 favours group 1.",
               "New-trial predictive uses tau_new from its prior (pooled ORs carry no "
               "between-trial information)."),
        extra={"times": tl, "rho": float(rho)}, _q=q)
    res.extra["survival_table"] = q.table(control_survival, threshold)
    return res


# ---------------------------------------------------------------------------------------------
# (b) study-level counts: discrete-time conditional death per interval
# ---------------------------------------------------------------------------------------------

def _prepare_counts(data, events: str):
    if not isinstance(data, pd.DataFrame):
        data = pd.DataFrame(data)
    need = ["study", "time", "ai", "n1i", "ci", "n2i"]
    miss = [c for c in need if c not in data]
    if miss:
        raise DataError(f"survival counts need columns {need}; missing {miss}", column=miss[0])
    df = data[need].copy().reset_index(drop=True)
    for c in ("ai", "n1i", "ci", "n2i"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    if df[["ai", "n1i", "ci", "n2i"]].isna().any().any():
        raise DataError("missing counts in survival data")
    if events == "survivors":
        df["ai"], df["ci"] = df["n1i"] - df["ai"], df["n2i"] - df["ci"]
    elif events != "deaths":
        raise SpecError(f"Invalid events {events!r}: must be one of ['deaths', 'survivors'].")
    df["study"] = df["study"].astype(str)
    return df


def _build_counts(struct, y):
    import pymc as pm
    import pytensor.tensor as pt

    n_k, n_j, study_idx, arm, span = struct
    study_idx, arm, span = np.array(study_idx), np.array(arm, dtype=float), np.array(span,
                                                                                     dtype=float)

    def builder():
        coords = {"interval": [f"k{i}" for i in range(n_k)], "study": [f"s{i}" for i in range(n_j)],
                  "row": [f"r{i}" for i in range(len(arm))]}
        with pm.Model(coords=coords) as m:
            d = pm.Data("deaths", y["deaths"], dims="row")
            r = pm.Data("at_risk", y["at_risk"], dims="row")
            gamma = pm.Normal("gamma", -2.0, 1.5, dims="interval")  # logit control hazard
            sig_b = pm.HalfNormal("sigma_baseline", 1.0)
            b = sig_b * pm.Normal("z_baseline", 0.0, 1.0, dims="study")
            beta0 = pm.Normal("beta0", 0.0, 1.0)  # conditional log-OR of death per interval
            sig_beta = pm.HalfNormal("sigma_interval", 0.5)
            beta = pm.Deterministic(
                "beta", beta0 + sig_beta * pm.Normal("z_interval", 0.0, 1.0, dims="interval"),
                dims="interval")
            tau = pm.HalfNormal("tau", 0.5)
            w = tau * pm.Normal("z_study", 0.0, 1.0, dims="study")
            eta = (gamma[None, :] + b[study_idx][:, None]
                   + arm[:, None] * (beta[None, :] + w[study_idx][:, None]))
            log_surv = pt.sum(span * pt.log1p(-pm.math.invlogit(eta)), axis=1)
            p_death = pt.clip(-pt.expm1(log_surv), 1e-12, 1 - 1e-12)
            pm.Binomial("y", n=r, p=p_death, observed=d, dims="row")
            # cumulative survival of a typical study (b = 0, w = 0) and of a new trial
            h0 = pm.math.invlogit(gamma)
            h1 = pm.math.invlogit(gamma + beta)
            s0 = pt.exp(pt.cumsum(pt.log1p(-h0)))
            s1 = pt.exp(pt.cumsum(pt.log1p(-h1)))
            pm.Deterministic("surv_control", s0, dims="interval")
            pm.Deterministic("surv_treated", s1, dims="interval")
            lor = pt.log(s1 / (1 - s1)) - pt.log(s0 / (1 - s0))
            pm.Deterministic("log_or", lor, dims="interval")
            w_new = tau * pm.Normal("z_new", 0.0, 1.0)
            s1n = pt.exp(pt.cumsum(pt.log1p(-pm.math.invlogit(gamma + beta + w_new))))
            pm.Deterministic("log_or_new", pt.log(s1n / (1 - s1n)) - pt.log(s0 / (1 - s0)),
                             dims="interval")
        return m, ("deaths", "at_risk")

    return builder


def fit_survival_counts(data, *, events: str = "deaths",
                        control_survival: float | None = None,
                        threshold: float = DEFAULT_THRESHOLD,
                        settings: SamplerSettings | None = None, analysis: str = "",
                        outcome: str = "survival", warn: bool = True, **sampling) -> MCMCResult:
    """Discrete-time model of conditional death per interval from study-level counts.

    Input rows: ``study, time, ai, n1i, ci, n2i`` with ``ai``/``ci`` the *cumulative* deaths by
    ``time`` in group 1 (treatment) / group 2 out of ``n1i``/``n2i`` randomised (no censoring before
    the last reported time). For each study and arm, the deaths between consecutive reported
    times among those still alive are binomial with probability
    ``1 - prod_k (1 - h_k)`` over the global intervals k the span covers, with

    logit h_{i,arm,k} = gamma_k + b_i + arm (beta_k + w_i),
    beta_k = beta0 + sigma_interval z_k, b_i = sigma_baseline z_i, w_i = tau z'_i.

    Given the parameters these conditional binomials are independent (the product of
    conditional likelihoods is the likelihood of the whole follow-up), so repeated cumulative
    counts from the same patients are not double-counted. Cumulative survival ORs at each time
    are derived for a typical study (b = w = 0); ``log_or_new`` adds a new trial's w ~ N(0, tau²).

    Priors (logit/log-OR scale): gamma_k ~ N(-2, 1.5), beta0 ~ N(0, 1), sigma_baseline ~ HN(1),
    sigma_interval ~ HN(0.5), tau ~ HN(0.5).

    ``control_survival``: the absolute differences and NNT use this user-set control-arm
    survival (default :data:`DEFAULT_CONTROL_SURVIVAL`), not the model's fitted control
    survival (reported separately as ``S_control[t]``).

    Returns
    -------
    MCMCResult
        Reported ``beta0``, ``sigma_interval``, ``tau``, ``sigma_baseline``, ``beta[t]``
        (conditional log-OR of death in the interval ending at t), ``logOR[t]`` and
        ``logOR_new[t]`` (cumulative survival log-OR; > 0 favours group 1), ``S_control[t]``;
        ``extra["survival_table"]``.
    """
    df = _prepare_counts(data, events)
    times = sorted(dict.fromkeys(df["time"]), key=_time_sort_key)
    studies = list(dict.fromkeys(df["study"]))
    rows = {"deaths": [], "at_risk": []}
    study_idx, arm, span = [], [], []
    for j, st in enumerate(studies):
        sd = df[df["study"] == st].copy()
        sd["_k"] = [times.index(v) for v in sd["time"]]
        sd = sd.sort_values("_k")
        if sd["_k"].duplicated().any():
            raise DataError(f"study {st!r} has two rows at the same time")
        for a, (dcol, ncol) in enumerate((("ci", "n2i"), ("ai", "n1i"))):
            prev_d, prev_k = 0.0, -1
            n_tot = float(sd[ncol].iloc[0])
            if (sd[ncol] != n_tot).any():
                raise DataError(f"study {st!r}: '{ncol}' must be the randomised number, the "
                                "same at every time")
            for _, r in sd.iterrows():
                dd = float(r[dcol])
                if dd < prev_d or dd > n_tot or dd != round(dd):
                    raise DataError(f"study {st!r}: cumulative deaths '{dcol}' must be whole, "
                                    f"non-decreasing over time and <= {ncol}", column=dcol)
                m = np.zeros(len(times))
                m[prev_k + 1: int(r["_k"]) + 1] = 1.0
                rows["deaths"].append(dd - prev_d)
                rows["at_risk"].append(n_tot - prev_d)
                study_idx.append(j)
                arm.append(a)
                span.append(tuple(m))
                prev_d, prev_k = dd, int(r["_k"])
    keep = [i for i, r in enumerate(rows["at_risk"]) if r > 0]
    rows = {k: np.array(v, float)[keep] for k, v in rows.items()}
    study_idx = tuple(study_idx[i] for i in keep)
    arm = tuple(arm[i] for i in keep)
    span = tuple(span[i] for i in keep)
    # 0.99: 2 divergences at 0.95 on simulated 6-study data (sigma funnels)
    s = _settings(settings or SamplerSettings(target_accept=0.99), sampling)
    struct = (len(times), len(studies), study_idx, arm, span)
    comp = _get_compiled(("survival-counts", struct), _build_counts(struct, rows))
    dt, c_s, s_s = _sample(comp, rows, s)
    tl = [_fmt_time(v) for v in times]
    dt = _finish_tree(dt, coords={"interval": tl, "study": studies},
                      observed={"deaths": ("row", rows["deaths"])},
                      constant={"at_risk": ("row", rows["at_risk"])},
                      attrs={"model": "survival-counts", "seed": s.seed, "sampler": s.sampler,
                             "events": events, "compile_seconds": c_s, "sampling_seconds": s_s})
    dt = dt.map_over_datasets(lambda ds: ds.rename({"interval": "time"})
                              if "interval" in ds.dims else ds)
    reports = [Report("beta0"), Report("sigma_interval"), Report("tau"),
               Report("sigma_baseline")]
    reports += [Report("beta", (("time", v),), f"beta[{v}]", time=v) for v in tl]
    reports += [Report("log_or", (("time", v),), f"logOR[{v}]", time=v) for v in tl]
    reports += [Report("log_or_new", (("time", v),), f"logOR_new[{v}]", time=v) for v in tl]
    reports += [Report("surv_control", (("time", v),), f"S_control[{v}]", time=v) for v in tl]
    res = _make_result(
        "survival-counts", dt, reports, s, c_s, s_s,
        {"gamma_k": "Normal(-2, 1.5)", "beta0": "Normal(0, 1)", "sigma_baseline": "HalfNormal(1)",
         "sigma_interval": "HalfNormal(0.5)", "tau": "HalfNormal(0.5)"},
        measure="OR", scale="logOR", k=len(studies), analysis=analysis, outcome=outcome,
        notes=("beta = conditional log-OR of death per interval; logOR = cumulative survival "
               "log-OR (> 0 favours group 1).",),
        extra={"times": tl, "studies": studies},
        monitor=["gamma", "beta0", "sigma_interval", "tau", "sigma_baseline", "z_interval",
                 "z_study", "z_baseline"], warn=warn)
    p0 = DEFAULT_CONTROL_SURVIVAL if control_survival is None else control_survival
    res.extra["survival_table"] = survival_table(res, p0, threshold)
    return res
