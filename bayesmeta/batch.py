"""Vectorised meta-analysis of many datasets at once (simulation and benchmark engine).

Datasets are the rows of arrays ``Y`` and ``V`` of shape ``(n_datasets, k)``; rows with fewer
studies are NaN-padded (a NaN in ``Y`` or ``V`` marks an absent study). Every estimator works on
all rows with array operations; no Python loop over datasets.

* :func:`classical_batch` -- FE, DL, PM, REML (Fisher scoring with a convergence mask; PM by a
  bracketed Newton iteration), each with Wald z and Knapp-Hartung/HKSJ t(k-1) intervals. The
  formulas are those of :func:`bayesmeta.classical.rma` (intercept-only model); tests check
  agreement with it on random datasets.
* :func:`exact_batch` -- the exact normal-normal hierarchical model posterior (the model of
  :mod:`bayesmeta.exact`) for one (mu prior, tau prior) pair: quadrature over ``z = log tau`` on
  a per-dataset shifted uniform grid (trapezoid rule, exponentially convergent for this analytic
  integrand), with the prior mass below the grid's lower end ``tau_lo`` lumped at ``tau = 0``
  (exact up to O(tau_lo²/v)); the posterior of mu is the resulting mixture of normals and its
  equal-tailed interval is found by a vectorised, bracketed Newton iteration on the mixture CDF.
  Tests check agreement with :func:`bayesmeta.exact.fit_exact`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special, stats

from bayesmeta.exceptions import DataError, SpecError
from bayesmeta.priors import Flat, MuPrior, Normal, TauPrior

__all__ = ["classical_batch", "exact_batch", "BatchFits", "BATCH_METHODS"]

BATCH_METHODS = ("FE", "DL", "PM", "REML")


def _as_batch(Y, V):
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    V = np.atleast_2d(np.asarray(V, dtype=float))
    if Y.shape != V.shape:
        raise DataError(f"Y and V shapes differ: {Y.shape} vs {V.shape}")
    mask = np.isfinite(Y) & np.isfinite(V)
    if np.any(mask & ~(V > 0)):
        raise DataError("V must be > 0 wherever Y is given")
    k = mask.sum(axis=1)
    if np.any(k < 1):
        raise DataError(f"{int(np.sum(k < 1))} datasets have no study")
    Y0 = np.where(mask, Y, 0.0)
    V0 = np.where(mask, V, 1.0)
    return Y0, V0, mask, k


@dataclass(frozen=True)
class BatchFits:
    """Results of :func:`classical_batch`: ``values[method][quantity]`` arrays of length n.

    Quantities: ``estimate, se, tau2, q, converged, ci_low, ci_high`` (Wald z),
    ``se_knha, ci_low_knha, ci_high_knha`` (HKSJ t(k-1)), plus ``k``.
    """

    values: dict
    level: float = 0.95
    k: np.ndarray = field(default=None, repr=False)

    def __getitem__(self, method):
        return self.values[method]

    def to_frame(self) -> pd.DataFrame:
        """Wide frame: one row per dataset, columns ``"<method>.<quantity>"``."""
        cols = {"k": self.k}
        for m, d in self.values.items():
            for q, a in d.items():
                cols[f"{m}.{q}"] = a
        return pd.DataFrame(cols)


def _wsums(w, Y):
    sw = w.sum(axis=1)
    mu = (w * Y).sum(axis=1) / sw
    return sw, mu


def _qgen(Y, V, mask, t2):
    """Generalised Q(tau²) = sum w (y - mu_w)² and its derivative in tau²."""
    w = np.where(mask, 1.0 / (V + t2[:, None]), 0.0)
    sw, mu = _wsums(w, Y)
    r2 = np.where(mask, (Y - mu[:, None]) ** 2, 0.0)
    q = (w * r2).sum(axis=1)
    dq = -(w * w * r2).sum(axis=1)
    return q, dq


def _tau2_dl(Y, V, mask, k):
    w = np.where(mask, 1.0 / V, 0.0)
    sw, mu = _wsums(w, Y)
    q = (w * np.where(mask, (Y - mu[:, None]) ** 2, 0.0)).sum(axis=1)
    c = sw - (w * w).sum(axis=1) / sw
    with np.errstate(invalid="ignore", divide="ignore"):
        t2 = np.where(k > 1, np.maximum(0.0, (q - (k - 1)) / c), 0.0)
    return t2, q


def _tau2_pm(Y, V, mask, k, tol=1e-12, maxiter=100):
    """Root of Q(tau²) = k - 1 (Paule-Mandel), bracketed Newton; 0 when Q(0) <= k - 1."""
    df = (k - 1).astype(float)
    q0, _ = _qgen(Y, V, mask, np.zeros(Y.shape[0]))
    active = (q0 > df) & (k > 1)
    t2 = np.zeros(Y.shape[0])
    conv = ~active
    if not active.any():
        return t2, conv
    # Q(t) <= SS/t with SS the unweighted sum of squares about the unweighted mean
    ym = np.where(mask, Y, 0).sum(axis=1) / k
    ss = np.where(mask, (Y - ym[:, None]) ** 2, 0).sum(axis=1)
    lo = np.zeros_like(t2)
    hi = np.where(active, 1.01 * ss / np.maximum(df, 1) + 1e-300, 0.0)
    t = np.where(active, 0.0, 0.0)
    for _ in range(maxiter):
        idx = np.flatnonzero(active & ~conv)
        if idx.size == 0:
            break
        q, dq = _qgen(Y[idx], V[idx], mask[idx], t[idx])
        f = q - df[idx]
        lo[idx] = np.where(f > 0, t[idx], lo[idx])
        hi[idx] = np.where(f <= 0, t[idx], hi[idx])
        with np.errstate(divide="ignore", invalid="ignore"):
            tn = t[idx] - f / dq
        bad = ~np.isfinite(tn) | (tn <= lo[idx]) | (tn >= hi[idx])
        tn = np.where(bad, 0.5 * (lo[idx] + hi[idx]), tn)
        done = np.abs(tn - t[idx]) <= tol * np.maximum(1.0, tn)
        t[idx] = tn
        conv[idx] = done
    return t, conv


def _reml_parts(Y, V, mask, t2):
    w = np.where(mask, 1.0 / (V + t2[:, None]), 0.0)
    sw, mu = _wsums(w, Y)
    r = np.where(mask, Y - mu[:, None], 0.0)
    w2, w3 = (w * w).sum(axis=1), (w ** 3).sum(axis=1)
    ypp = (w * w * r * r).sum(axis=1)
    trp = sw - w2 / sw
    trpp = w2 - 2 * w3 / sw + (w2 / sw) ** 2
    return ypp, trp, trpp


def _tau2_reml(Y, V, mask, k, tol=1e-10, maxiter=1000):
    """REML: Fisher scoring (Viechtbauer 2005) safeguarded by a bracket on the REML score.

    Plain Fisher scoring can cycle far from the optimum (metafor then needs ``stepadj``); here
    every step that leaves the current bracket [lo, hi] (score > 0 at lo, < 0 at hi) is replaced
    by bisection. Datasets whose score at tau² = 0 is <= 0 get tau² = 0 (boundary maximum).
    """
    n = Y.shape[0]
    t2 = np.zeros(n)
    ypp, trp, trpp = _reml_parts(Y, V, mask, t2)
    active = ((ypp - trp) > 0) & (k > 1)
    conv = ~active
    lo = np.zeros(n)
    ym = np.where(mask, Y, 0).sum(axis=1) / k
    ss = np.where(mask, (Y - ym[:, None]) ** 2, 0).sum(axis=1)
    hi = np.where(active, ss / np.maximum(k - 1, 1) + 1e-300, 0.0)
    for _ in range(200):  # grow hi until the score is negative there
        idx = np.flatnonzero(active)
        a, b, _c = _reml_parts(Y[idx], V[idx], mask[idx], hi[idx])
        pos = a - b > 0
        if not pos.any():
            break
        lo[idx[pos]] = hi[idx[pos]]
        hi[idx[pos]] *= 2
    t2[active] = np.clip(_tau2_dl(Y[active], V[active], mask[active], k[active])[0],
                         lo[active], hi[active])
    for _ in range(maxiter):
        idx = np.flatnonzero(~conv)
        if idx.size == 0:
            break
        t = t2[idx]
        ypp, trp, trpp = _reml_parts(Y[idx], V[idx], mask[idx], t)
        score = ypp - trp
        lo[idx] = np.where(score > 0, t, lo[idx])
        hi[idx] = np.where(score <= 0, t, hi[idx])
        tn = t + score / trpp
        bad = ~np.isfinite(tn) | (tn <= lo[idx]) | (tn >= hi[idx])
        tn = np.where(bad, 0.5 * (lo[idx] + hi[idx]), tn)
        conv[idx] = (np.abs(tn - t) <= tol) | (hi[idx] - lo[idx] <= tol)
        t2[idx] = tn
    return t2, conv


def classical_batch(Y, V, *, methods=BATCH_METHODS, level: float = 0.95,
                    control: dict | None = None) -> BatchFits:
    """FE/DL/PM/REML with z and HKSJ intervals for every row of ``Y``/``V``.

    Parameters
    ----------
    Y, V : array_like, shape (n_datasets, k)
        Estimates and sampling variances; NaN marks an absent study (ragged k).
    methods : sequence of {"FE", "DL", "PM", "REML"}
    level : float
        Interval probability.
    control : dict, optional
        ``threshold`` (REML step, 1e-10), ``tol`` (PM root, 1e-12), ``maxiter`` (1000).

    Returns
    -------
    BatchFits
    """
    ctrl = dict(threshold=1e-10, tol=1e-12, maxiter=1000, **(control or {}))
    for m in methods:
        if m not in BATCH_METHODS:
            raise SpecError(f"Invalid method {m!r}: must be one of {list(BATCH_METHODS)}.")
    Y0, V0, mask, k = _as_batch(Y, V)
    zc = stats.norm.ppf(0.5 + level / 2)
    df = (k - 1).astype(float)
    with np.errstate(invalid="ignore"):
        tc = np.where(k > 1, stats.t.ppf(0.5 + level / 2, np.maximum(df, 1)), np.nan)
    out = {}
    _, q_fe = _tau2_dl(Y0, V0, mask, k)
    for m in methods:
        if m == "FE":
            t2, conv = np.zeros(Y0.shape[0]), np.ones(Y0.shape[0], bool)
        elif m == "DL":
            t2, conv = _tau2_dl(Y0, V0, mask, k)[0], np.ones(Y0.shape[0], bool)
        elif m == "PM":
            t2, conv = _tau2_pm(Y0, V0, mask, k, tol=ctrl["tol"], maxiter=ctrl["maxiter"])
        else:
            t2, conv = _tau2_reml(Y0, V0, mask, k, tol=ctrl["threshold"],
                                  maxiter=ctrl["maxiter"])
        w = np.where(mask, 1.0 / (V0 + t2[:, None]), 0.0)
        sw, mu = _wsums(w, Y0)
        se = 1.0 / np.sqrt(sw)
        with np.errstate(invalid="ignore", divide="ignore"):
            s2 = np.where(k > 1, (w * np.where(mask, (Y0 - mu[:, None]) ** 2, 0)).sum(axis=1)
                          / np.maximum(df, 1), np.nan)
        se_k = se * np.sqrt(s2)
        out[m] = dict(estimate=mu, se=se, tau2=t2, q=q_fe, converged=conv,
                      ci_low=mu - zc * se, ci_high=mu + zc * se, se_knha=se_k,
                      ci_low_knha=mu - tc * se_k, ci_high_knha=mu + tc * se_k)
    return BatchFits(values=out, level=level, k=k)


# ------------------------------------------------------------------------------------------
# exact Bayes
# ------------------------------------------------------------------------------------------

def _mix_cdf_pdf(x, M, S, W):
    z = (x[:, None] - M) / S
    cdf = (W * special.ndtr(z)).sum(axis=1)
    pdf = (W * np.exp(-0.5 * z * z) / S).sum(axis=1) / math.sqrt(2 * math.pi)
    return cdf, pdf


def _mix_quantile(p, M, S, W, x0, lo, hi, tol=1e-13, maxiter=60):
    """Vectorised bracketed Newton for F(x) = p, F a normal mixture (rows)."""
    x = x0.copy()
    lo, hi = lo.copy(), hi.copy()
    active = np.arange(x.size)
    for _ in range(maxiter):
        if active.size == 0:
            break
        c, d = _mix_cdf_pdf(x[active], M[active], S[active], W[active])
        f = c - p
        lo[active] = np.where(f < 0, x[active], lo[active])
        hi[active] = np.where(f >= 0, x[active], hi[active])
        with np.errstate(divide="ignore", invalid="ignore"):
            xn = x[active] - f / d
        # a Newton step below the tolerance ends the search before the bracket test: at the
        # root F(x) - p is rounding noise, and a step of that noise can land on the bracket
        # end just set to x (a bisection there would restart from the wide initial bracket)
        small = np.isfinite(xn) & (np.abs(xn - x[active]) <= tol * (1 + np.abs(xn)))
        bad = ~small & (~np.isfinite(xn) | (xn <= lo[active]) | (xn >= hi[active]))
        xn = np.where(bad, 0.5 * (lo[active] + hi[active]), xn)
        scale = np.abs(hi[active] - lo[active]) + np.abs(xn)
        done = small | (f == 0) | (np.abs(xn - x[active]) <= tol * (1 + np.abs(xn))) \
            | (scale == 0)
        x[active] = np.where(f == 0, x[active], xn)
        active = active[~done]
    return x



def _normalise(logW):
    logW = logW - logW.max(axis=1, keepdims=True)
    W = np.exp(logW)
    return W / W.sum(axis=1, keepdims=True)


class _LogPost:
    """log p(tau) + log p(y | tau) (mu integrated out) on per-dataset tau nodes."""

    def __init__(self, Y0, V0, mask, prior, m0, p0, t_lo):
        self.Y0, self.V0, self.mask, self.prior = Y0, V0, mask, prior
        self.m0, self.p0, self.t_lo = m0, p0, t_lo
        self._full = bool(mask.all())

    def _cond(self, T):
        """Conditional mean/var of mu and log marginal likelihood at tau nodes T (n, G)."""
        Y0, V0, mask, p0, m0 = self.Y0, self.V0, self.mask, self.p0, self.m0
        t2 = T * T
        vt = V0[:, None, :] + t2[:, :, None]                # (n, G, k)
        w = 1.0 / vt
        full = self._full
        if not full:
            w *= mask[:, None, :]
        sw = w.sum(axis=2) + p0
        # sums over studies as batched matrix-vector products (no (n, G, k) temporaries)
        swy = np.matmul(w, Y0[:, :, None])[..., 0] + p0 * m0
        m = swy / sw
        swyy = np.matmul(w, (Y0 * Y0)[:, :, None])[..., 0] + p0 * m0 * m0
        logv = np.log(vt, out=vt)
        if not full:
            logv *= mask[:, None, :]                        # padded studies add nothing
        logdet = logv.sum(axis=2)
        loglik = -0.5 * (logdet + np.log(sw) + swyy - swy * m)
        return m, 1.0 / sw, loglik

    def logweights(self, z, dz, *, lumped):
        """Trapezoid log-weights of the nodes z (half weight at both ends); with ``lumped``,
        a first node at tau = 0 carrying the prior mass below ``t_lo``."""
        tau = np.exp(z)
        dz = np.broadcast_to(np.asarray(dz, float).reshape(z.shape[0], -1), z.shape).copy()
        dz[:, 0] *= 0.5
        dz[:, -1] *= 0.5
        if lumped:
            T = np.concatenate([np.zeros((z.shape[0], 1)), tau], axis=1)
        else:
            T = tau
        m, var, loglik = self._cond(T)
        with np.errstate(divide="ignore"):
            lg = np.log(dz) + self.prior.logpdf_tau(tau) + z + loglik[:, -tau.shape[1]:]
        if not lumped:
            return lg, T, m
        lw0 = np.log(np.maximum(self.prior.cdf_tau(self.t_lo), 1e-300)) + loglik[:, 0]
        return np.concatenate([lw0[:, None], lg], axis=1), T, m, var


def exact_batch(Y, V, *, tau_prior: TauPrior, mu_prior: MuPrior | None = None,
                level: float = 0.95, G: int = 128, h1: float = 0.4, lo_rel: float = 1e-10,
                hi_rel: float = 1e12, quantiles: bool = True, median: bool = True,
                block: int = 2000) -> pd.DataFrame:
    """Exact NNHM posterior summaries for every row of ``Y``/``V`` (see the module notes).

    Parameters
    ----------
    Y, V : array_like, shape (n_datasets, k)
        NaN-padded estimates and sampling variances.
    tau_prior : TauPrior
        Needs ``logpdf_tau`` and ``cdf_tau`` (every prior in :mod:`bayesmeta.priors`).
    mu_prior : Normal or Flat, optional
        Default flat.
    level : float
        Probability of the equal-tailed interval of mu.
    G : int
        Quadrature nodes per dataset (stage 2, sinh-mapped grid).
    h1 : float
        Step in ``log tau`` of the coarse stage-1 grid that locates the posterior of log tau.
    lo_rel, hi_rel : float
        Grid limits relative to the dataset's scale ``s = sqrt(median(v))`` and the prior's
        median: ``tau`` from ``lo_rel * min(s, m_prior)`` to ``hi_rel * max(s, sd(y),
        m_prior)``.
    quantiles : bool
        Compute the ETI (``mu_lower``, ``mu_upper``); ``False`` for moments only.
    median : bool
        Also the posterior median (with ``quantiles``).
    block : int
        Datasets processed at once (bounds memory: about ``block * G * k * 8`` bytes per array).

    Returns
    -------
    DataFrame
        One row per dataset: ``mu_mean, mu_sd, mu_median, mu_lower, mu_upper, tau_mean``.
    """
    mu_prior = Flat() if mu_prior is None else mu_prior
    if not isinstance(mu_prior, (Normal, Flat)):
        raise SpecError(f"mu_prior must be Normal(mean, sd) or Flat(), got {mu_prior!r}")
    if not isinstance(tau_prior, TauPrior):
        raise SpecError(f"tau_prior must be a TauPrior, got {tau_prior!r}")
    Y0, V0, mask, k = _as_batch(Y, V)
    if Y0.shape[0] > block:
        Vn = np.where(mask, V0, np.nan)
        parts = [exact_batch(Y0[i:i + block], Vn[i:i + block], tau_prior=tau_prior,
                             mu_prior=mu_prior, level=level, G=G, h1=h1, lo_rel=lo_rel,
                             hi_rel=hi_rel, quantiles=quantiles,
                             median=median, block=block)
                 for i in range(0, Y0.shape[0], block)]
        return pd.concat(parts, ignore_index=True)
    n = Y0.shape[0]
    m0, p0 = (0.0, 0.0) if mu_prior.is_flat else (float(mu_prior.mean), 1 / mu_prior.sd ** 2)
    s_ref = np.sqrt(np.nanmedian(np.where(mask, V0, np.nan), axis=1))
    ysd = np.sqrt(np.nanvar(np.where(mask, Y0, np.nan), axis=1))
    pmed = float(tau_prior.ppf_tau(0.5))
    t_lo = lo_rel * np.minimum(s_ref, pmed)
    # no cap at a prior quantile: the likelihood can put the posterior far into a light prior tail
    t_hi = hi_rel * np.maximum(np.maximum(s_ref, ysd), pmed)
    z_lo, z_hi = np.log(t_lo), np.log(t_hi)
    post = _LogPost(Y0, V0, mask, tau_prior, m0, p0, t_lo)
    # stage 1: coarse uniform grid in z (step h1) -> rough posterior mean c and sd w of log tau
    G1 = int(np.ceil(np.max(z_hi - z_lo) / h1)) + 1
    z1 = np.minimum(z_lo[:, None] + h1 * np.arange(G1)[None, :], z_hi[:, None])
    lw1, _, _ = post.logweights(z1, np.full(n, h1), lumped=False)
    W1 = _normalise(lw1)
    c = (W1 * z1).sum(axis=1)
    wz = np.sqrt(np.maximum((W1 * z1 * z1).sum(axis=1) - c * c, 0.0))
    wz = np.clip(wz, h1 / 2, None)
    # stage 2: z = c + w sinh(u), u uniform on [-U1, U2] with G nodes (Takahasi-Mori style):
    # fine steps near the posterior bulk, exponentially growing steps in the tails
    U1 = np.maximum(np.arcsinh((c - z_lo) / wz), 0.5)
    U2 = np.maximum(np.arcsinh((z_hi - c) / wz), 0.5)
    u = -U1[:, None] + (U1 + U2)[:, None] * np.linspace(0.0, 1.0, G)[None, :]
    hu = (U1 + U2) / (G - 1)
    z = c[:, None] + wz[:, None] * np.sinh(u)
    dz = wz[:, None] * np.cosh(u) * hu[:, None]        # trapezoid weight in z
    logW, T, m, var = post.logweights(z, dz, lumped=True)
    W = _normalise(logW)
    mean = (W * m).sum(axis=1)
    sd = np.sqrt(np.maximum((W * (var + m * m)).sum(axis=1) - mean ** 2, 0.0))
    out = dict(mu_mean=mean, mu_sd=sd, tau_mean=(W * T).sum(axis=1))
    if quantiles:
        S = np.sqrt(var)
        sig = W > 1e-18 * W.max(axis=1, keepdims=True)
        lo_b = np.where(sig, m - 40 * S, np.inf).min(axis=1)
        hi_b = np.where(sig, m + 40 * S, -np.inf).max(axis=1)
        a = (1 - level) / 2
        want = [("mu_lower", a), ("mu_upper", 1 - a)] + ([("mu_median", 0.5)] if median else [])
        for name, p in want:
            x0 = mean + stats.norm.ppf(p) * sd
            out[name] = _mix_quantile(p, m, S, W, np.clip(x0, lo_b, hi_b), lo_b, hi_b)
    cols = ["mu_mean", "mu_sd", "mu_median", "mu_lower", "mu_upper", "tau_mean"]
    return pd.DataFrame({c: out[c] for c in cols if c in out})
