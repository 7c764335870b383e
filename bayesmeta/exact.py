"""Exact posterior of the normal-normal hierarchical model (NNHM) by quadrature over tau.

Model
-----
.. math::

    y_i \\mid \\theta_i \\sim N(\\theta_i, s_i^2),\\quad
    \\theta_i \\mid \\mu, \\tau \\sim N(\\mu, \\tau^2),\\quad
    \\mu \\sim N(m_0, s_0^2) \\text{ or flat},\\quad \\tau \\sim p(\\tau).

Given tau, mu and the theta_i integrate out in closed form. With ``w_i = 1/(s_i² + tau²)`` and
``p_0 = 1/s_0²`` (0 for a flat prior),

* ``mu | tau, y ~ N(m(tau), V(tau))``, ``V = 1/(sum w + p_0)``, ``m = V (sum w y + p_0 m_0)``;
* ``theta_i | tau, y ~ N(b_i m + (1 - b_i) y_i, (1 - b_i) s_i² + b_i² V)``, ``b_i = s_i² w_i``;
* ``theta_new | tau, y ~ N(m, V + tau²)``;
* ``p(y | tau)`` (marginal likelihood; with a flat mu prior up to a constant that cancels).

So ``p(tau | y) ∝ p(tau) p(y | tau)`` is one-dimensional, and every other marginal is a
continuous mixture of normals over it (the approach of Röver 2020, R package *bayesmeta*).

Quadrature (our implementation)
-------------------------------
tau is mapped to the real line (``z = log tau`` for unbounded priors, a logit for bounded ones),
centred at the posterior mode of ``z`` and scaled by its curvature, then mapped again with
``z = c + w sinh(t)``. The posterior in ``t`` decays double-exponentially (or at least
exponentially, for the log-t prior), so the trapezoid rule in ``t`` converges exponentially
(the "sinh" double-exponential rule; Takahasi & Mori 1974). The step is halved until posterior
moments change by less than ~1e-11. Cumulative probabilities of tau use the sinc indefinite
integral of the same samples (Stenger 1993), which converges at the same rate; quantiles of
every mixture are found by a vectorised safeguarded Newton iteration on the mixture CDF.
Tests check every summary against an independent nested adaptive integration (<= 1e-6).

References
----------
Röver C (2020). Bayesian random-effects meta-analysis using the bayesmeta R package. Journal of
Statistical Software 93(6):1-51. doi:10.18637/jss.v093.i06

Takahasi H, Mori M (1974). Double exponential formulas for numerical integration. Publ. RIMS
Kyoto Univ. 9:721-741. doi:10.2977/prims/1195192451

Stenger F (1993). Numerical Methods Based on Sinc and Analytic Functions. Springer.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import special

from bayesmeta import results
from bayesmeta.checks import posterior_outside_data
from bayesmeta.exceptions import DataError, DataWarning, EstimationError, SpecError
from bayesmeta.priors import Flat, MuPrior, Normal, TauPrior

__all__ = ["ExactResult", "fit_exact", "fit_batch", "FixedTau"]

_LOG2PI = math.log(2.0 * math.pi)
_ZMAX = 300.0          # |log tau| cap: tau**2 stays far from float overflow
_TOL = 1e-11           # convergence of moments between step halvings
_SCALES = {"OR": "logOR", "PETO": "logOR", "RR": "logRR", "HR": "logHR"}


@dataclass(frozen=True)
class FixedTau(TauPrior):
    """Point mass at ``tau = value`` (the model with known heterogeneity; FE when value=0)."""

    value: float = 0.0
    source: str = field(default="", compare=False)

    def __post_init__(self):
        if not (isinstance(self.value, (int, float)) and math.isfinite(self.value)
                and self.value >= 0):
            raise SpecError(f"FixedTau: value must be a finite number >= 0, got {self.value!r}")

    def cdf_tau(self, tau):
        return (np.asarray(tau, dtype=float) >= self.value).astype(float)

    def ppf_tau(self, q):
        return np.full_like(np.asarray(q, dtype=float), self.value)

    def logpdf_tau(self, tau):  # a point mass has no density
        raise NotImplementedError("FixedTau is a point mass")


# ------------------------------------------------------------------------------------------
# core numerics
# ------------------------------------------------------------------------------------------

def _conditionals(tau, y, s2, m0, p0):
    """Per-node conditional quantities for an array of tau values.

    Returns (loglik, mhat, V) each of shape tau.shape. ``loglik`` is log p(y | tau) including
    the normalised normal mu prior (p0 > 0), or the restricted likelihood (p0 = 0; the
    constant of the improper prior is dropped).
    """
    t2 = np.asarray(tau, dtype=float)[..., None] ** 2
    w = 1.0 / (s2 + t2)                                # (N, k)
    prec = w.sum(-1) + p0
    V = 1.0 / prec
    mhat = V * ((w * y).sum(-1) + p0 * m0)
    q = (w * (y - mhat[..., None]) ** 2).sum(-1)
    k = y.shape[-1]
    ll = 0.5 * np.log(w).sum(-1) + 0.5 * np.log(V) - 0.5 * q
    if p0 > 0:
        ll = ll - 0.5 * k * _LOG2PI + 0.5 * math.log(p0) - 0.5 * p0 * (mhat - m0) ** 2
    else:
        ll = ll - 0.5 * (k - 1) * _LOG2PI
    return ll, mhat, V


class _Map:
    """tau <-> z (real line) <-> t, with z = c + w sinh(t)."""

    def __init__(self, lo, hi):
        self.lo, self.hi = float(lo), float(hi)
        self.bounded = math.isfinite(self.hi)
        self.c, self.w = 0.0, 1.0

    def tau_of_z(self, z):
        if self.bounded:
            return self.lo + (self.hi - self.lo) * special.expit(z)
        return self.lo + np.exp(z)

    def logjac_z(self, z):  # log dtau/dz
        if self.bounded:
            return (math.log(self.hi - self.lo) + special.log_expit(z)
                    + special.log_expit(-z))
        return np.asarray(z, dtype=float)

    def z_of_tau(self, tau):
        tau = np.asarray(tau, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.bounded:
                return special.logit((tau - self.lo) / (self.hi - self.lo))
            return np.log(tau - self.lo)

    def z_of_t(self, t):
        return self.c + self.w * np.sinh(t)

    def t_of_z(self, z):
        return np.arcsinh((np.asarray(z, dtype=float) - self.c) / self.w)

    def logjac_t(self, t):  # log dz/dt
        return math.log(self.w) + np.log(np.cosh(t))

    def zlimits(self):
        return (-_ZMAX, _ZMAX) if not self.bounded else (-_ZMAX, _ZMAX)


def _log_post_z(z, mp, prior, y, s2, m0, p0):
    tau = mp.tau_of_z(z)
    lp = prior.logpdf_tau(tau)
    ll, _, _ = _conditionals(tau, y, s2, m0, p0)
    return lp + ll + mp.logjac_z(z)


def _find_centre(mp, prior, y, s2, m0, p0):
    """Mode and curvature-based width of the log posterior in z."""
    sref = math.sqrt(float(np.median(s2)))
    if mp.bounded:
        zg = np.linspace(-40.0, 40.0, 641)
    else:
        base = math.log(max(sref, 1e-300))
        zg = np.linspace(base - 30.0, base + 30.0, 481)
    lg = _log_post_z(zg, mp, prior, y, s2, m0, p0)
    lg = np.where(np.isfinite(lg), lg, -np.inf)
    j = int(np.argmax(lg))
    if not np.isfinite(lg[j]):
        raise EstimationError("posterior of tau is zero on the whole search grid",
                              )
    # parabola through the grid maximum and its neighbours: centre and curvature (only an
    # approximate centre/width is needed; the quadrature itself is adaptive)
    j = min(max(j, 1), len(zg) - 2)
    f0, f1, f2 = lg[j - 1], lg[j], lg[j + 1]
    dz = zg[1] - zg[0]
    curv = (f0 - 2 * f1 + f2) / dz ** 2
    if np.isfinite(curv) and curv < 0 and np.isfinite(f0) and np.isfinite(f2):
        c = zg[j] - dz * (f2 - f0) / (2 * (f0 - 2 * f1 + f2))
        w = 1.0 / math.sqrt(-curv)
    else:
        c, w = zg[j], 1.0
    return c, float(min(max(w, 1e-3), 10.0))


@dataclass(frozen=True)
class _Grid:
    tau: np.ndarray      # nodes
    weight: np.ndarray   # normalised posterior weights (sum 1)
    loglik: np.ndarray
    mhat: np.ndarray
    V: np.ndarray
    t: np.ndarray        # t nodes (for the sinc CDF of tau)
    h: float
    log_z: float         # log of the normalising constant ∫ p(tau) p(y|tau) dtau


def _moment_exists(prior, k, flat, r):
    """Does E[tau**r | y] exist? Posterior tail = prior tail * tau**-(k-1) (flat mu) or -k."""
    if isinstance(prior, FixedTau):
        return True
    a, b = prior.tail
    if not math.isfinite(a):
        return True
    e = a + (k - 1 if flat else k) - r
    return e > 1 or (e == 1 and b > 1)


def _adaptive_trapezoid(evaluate, moments, tlo, thi, *, tol, hmin=1.0 / 256, tail=None,
                        what="tau"):
    """Adaptive trapezoid rule on the sinh-mapped t axis (shared by this module's tau grid and
    :func:`bayesmeta.survival._scale_grid`).

    Starts at step 0.5 on [tlo, thi]; after each pass drops the nodes whose log weight (plus
    ``tail(s)``, the log of the highest finite moment's integrand) is 80 below the maximum, then
    halves the step (new nodes are the midpoints), until every moment returned by
    ``moments(s, aux, weights)`` changes by at most ``tol`` relative (floor 1: callers return
    moments in the data's own units) or the step reaches ``hmin``.

    ``evaluate(t) -> (s, log_weight, aux)`` with ``aux`` a dict of arrays whose first axis is
    the node. Returns ``(t, s, aux, weights, h, log_z)``: weights normalised to 1, ``log_z``
    the log of the integral of exp(log_weight) dt.
    """
    h = 0.5
    t = np.arange(math.ceil(tlo / h), math.floor(thi / h) + 1) * h
    s, lg, aux = evaluate(t)
    prev = None
    while True:
        lmax = lg.max()
        g = np.exp(lg - lmax)
        zsum = g.sum()
        wgt = g / zsum
        mom = np.asarray(moments(s, aux, wgt), dtype=float)
        scale = np.maximum(np.abs(mom), 1.0)
        if prev is not None and (np.all(np.abs(mom - prev) <= tol * scale) or h <= hmin):
            if h <= hmin and not np.all(np.abs(mom - prev) <= 1e3 * tol * scale):
                raise EstimationError(
                    f"quadrature over {what} did not converge; change between the last two "
                    f"step sizes {np.max(np.abs(mom - prev)):.3g}")
            break
        prev = mom
        # restrict to the region that matters, then halve the step (new nodes = midpoints)
        idx = np.flatnonzero((lg if tail is None else lg + tail(s)) > lmax - 80.0)
        ta = max(t[max(idx[0] - 2, 0)], tlo)
        tb = min(t[min(idx[-1] + 2, t.size - 1)], thi)
        sel = (t >= ta) & (t <= tb)
        t, s, lg = t[sel], s[sel], lg[sel]
        aux = {k: v[sel] for k, v in aux.items()}
        h /= 2.0
        tn = np.arange(math.ceil(ta / h), math.floor(tb / h) + 1) * h
        tn = tn[np.abs(np.round(tn / (2 * h)) * 2 * h - tn) > h / 4]   # odd multiples only
        sn, lgn, auxn = evaluate(tn)
        order = np.argsort(np.concatenate([t, tn]), kind="stable")
        t = np.concatenate([t, tn])[order]
        s = np.concatenate([s, sn])[order]
        lg = np.concatenate([lg, lgn])[order]
        aux = {k: np.concatenate([aux[k], auxn[k]])[order] for k in aux}
    return t, s, aux, wgt, h, float(lmax + math.log(zsum * h))


def _build_grid(prior, y, s2, m0, p0, tol=_TOL, hmin=1.0 / 256):
    if isinstance(prior, FixedTau):
        tau = np.array([float(prior.value)])
        ll, mh, V = _conditionals(tau, y, s2, m0, p0)
        return _Grid(tau, np.ones(1), ll, mh, V, np.zeros(1), 0.0, float(ll[0])), None
    mp = _Map(prior.lower, prior.upper)
    mp.c, mp.w = _find_centre(mp, prior, y, s2, m0, p0)
    zlo, zhi = mp.zlimits()
    tlo, thi = float(mp.t_of_z(zlo)), float(mp.t_of_z(zhi))

    def evaluate(t):
        z = mp.z_of_t(t)
        tau = mp.tau_of_z(z)
        lp = prior.logpdf_tau(tau)
        ll, mh, V = _conditionals(tau, y, s2, m0, p0)
        lg = lp + ll + mp.logjac_z(z) + mp.logjac_t(t)
        lg = np.where(np.isfinite(lg), lg, -np.inf)
        return tau, lg, {"ll": ll, "mh": mh, "V": V}

    k, flat = y.shape[-1], p0 == 0
    # moments in units of the data's own scale c, so that convergence (and the grid) is
    # scale-equivariant: an absolute floor made results at effect scale 1e-8 off by 1e-4
    c = float(np.sqrt(np.median(s2)))
    fin1, fin2 = (_moment_exists(prior, k, flat, 1), _moment_exists(prior, k, flat, 2))

    def moments(tau, aux, wgt):
        mh, V, tc = aux["mh"], aux["V"], tau / c
        mom = [np.dot(wgt, mh) / c, np.dot(wgt, np.log1p(tc)), np.dot(wgt, 1.0 / (1.0 + tc))]
        if fin1:
            mom.append(np.dot(wgt, tc))
        if fin2:
            mom += [np.dot(wgt, tc ** 2), np.dot(wgt, V + mh ** 2) / c ** 2]
        return mom

    def tail(tau):  # keep the nodes that still carry the highest finite moment
        tc = tau / c
        return np.log1p(np.minimum(tc ** 2, 1e300)) if fin2 else (np.log1p(tc) if fin1 else 0.0)

    t, tau, aux, wgt, h, log_z = _adaptive_trapezoid(
        evaluate, moments, tlo, thi, tol=tol, hmin=hmin, tail=tail,
        what="tau (posterior too concentrated?)")
    ll, mh, V = aux["ll"], aux["mh"], aux["V"]
    sel = wgt > 1e-300
    return _Grid(tau[sel], wgt[sel], ll[sel], mh[sel], V[sel], t[sel], h, log_z), mp


def _mix_cdf(x, M, S, W):
    """P(X <= x) for mixtures: x (P, Q), M,S (P, N), W (N,) -> (P, Q)."""
    return np.einsum("pqn,n->pq", special.ndtr((x[..., None] - M[:, None, :]) / S[:, None, :]), W)


def _mix_pdf(x, M, S, W):
    z = (x[..., None] - M[:, None, :]) / S[:, None, :]
    return np.einsum("pqn,n->pq", np.exp(-0.5 * z * z) / (S[:, None, :] * math.sqrt(2 * math.pi)),
                     W)


def _mix_quantiles(M, S, W, qs, xtol=1e-13):
    """Quantiles of normal mixtures by safeguarded Newton. M,S (P, N); qs (Q,) -> (P, Q).

    The p-quantile of a mixture lies between the smallest and largest component p-quantiles,
    which gives a guaranteed bracket; the start is the W-weighted median of the component
    quantiles. Bisection steps are taken on an asinh scale so that huge brackets (components
    with enormous variance under heavy-tailed tau priors) shrink quickly.
    """
    qs = np.asarray(qs, dtype=float)
    P = M.shape[0]
    Qc = M[:, None, :] + S[:, None, :] * special.ndtri(qs)[None, :, None]   # (P, Q, N)
    lo, hi = Qc.min(-1), Qc.max(-1)
    order = np.argsort(Qc, axis=-1)
    cw = np.cumsum(W[order], axis=-1)
    pos = np.minimum((cw < 0.5).sum(-1), Qc.shape[-1] - 1)
    x = np.take_along_axis(Qc, np.take_along_axis(order, pos[..., None], -1), -1)[..., 0]
    sc = np.broadcast_to((np.median(S, axis=1))[:, None], (P, qs.size))
    x0 = x.copy()
    for _ in range(200):
        F = _mix_cdf(x, M, S, W) - qs[None, :]
        lo = np.where(F < 0, x, lo)
        hi = np.where(F > 0, x, hi)
        f = _mix_pdf(x, M, S, W)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            step = F / f
        conv = np.isfinite(step) & (np.abs(step) <= xtol * (sc + np.abs(x)))
        xn = x - np.where(np.isfinite(step), step, 0.0)
        bad = ~conv & (~np.isfinite(step) | (xn <= lo) | (xn >= hi))
        if bad.any():
            # bisection on an asinh scale around the start: fast for huge brackets
            mid = x0 + sc * np.sinh(0.5 * (np.arcsinh((lo - x0) / sc)
                                           + np.arcsinh((hi - x0) / sc)))
            mid = np.where((mid > lo) & (mid < hi), mid, 0.5 * (lo + hi))
            xn = np.where(bad, mid, xn)
        x = xn
        if np.all(conv | (F == 0)):
            break
    return x


#: from this many probabilities on, tau quantiles start from the CDF tabulated at the nodes
_TABLE_MIN_Q = 16
#: |t - t_j| / h from which the tau CDF uses the asymptotic series of Si (_tau_cdf_many)
_SI_FAR = 100.0
#: points per block of those many-point evaluations
_BLOCK = 512


def _hermite_inverse(q, t0, t1, F0, F1, f0, f1, d0, d1):
    """x in [t0, t1] with H(x) = q, H the quintic Hermite interpolant of F with first and
    second derivatives (f, d) at t0 and t1 (bracketed Newton steps on H; a start only)."""
    d = t1 - t0
    m0, m1, a0, a1 = f0 * d, f1 * d, d0 * d * d, d1 * d * d
    c = (F0, m0, 0.5 * a0,
         -10 * F0 - 6 * m0 - 1.5 * a0 + 0.5 * a1 - 4 * m1 + 10 * F1,
         15 * F0 + 8 * m0 + 1.5 * a0 - a1 + 7 * m1 - 15 * F1,
         -6 * F0 - 3 * m0 - 0.5 * a0 + 0.5 * a1 - 3 * m1 + 6 * F1)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(F1 > F0, (q - F0) / (F1 - F0), 0.5)
    x = np.clip(np.where(np.isfinite(x), x, 0.5), 0.0, 1.0)
    for _ in range(6):
        H = c[5]
        dH = 5 * c[5]
        for i in (4, 3, 2, 1):
            H = H * x + c[i]
            dH = dH * x + i * c[i]
        H = H * x + c[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            xn = x - (H - q) / dH
        x = np.clip(np.where(np.isfinite(xn), xn, x), 0.0, 1.0)
    return t0 + x * d


# ------------------------------------------------------------------------------------------
# result
# ------------------------------------------------------------------------------------------

def _summ(mean, sd, med, lo, hi):
    return dict(mean=float(mean), sd=float(sd), median=float(med), lower=float(lo),
                upper=float(hi))


@dataclass(frozen=True)
class ExactResult:
    """Exact NNHM posterior. Build with :func:`fit_exact`.

    Attributes
    ----------
    y, sei : ndarray
        Data. ``labels``: study labels.
    mu_prior, tau_prior : Prior
    level : float
        Interval probability of the reported equal-tailed intervals (default 0.95).
    measure, scale : str
    prior_note : str
        Why the tau prior was chosen (e.g. the scale-aware default for MD), or ''.
    """

    y: np.ndarray
    sei: np.ndarray
    labels: tuple
    mu_prior: MuPrior
    tau_prior: TauPrior
    level: float
    measure: str
    scale: str
    prior_note: str
    _grid: _Grid = field(repr=False)
    _map: object = field(repr=False)
    #: findings about the fit (e.g. :func:`bayesmeta.checks.posterior_outside_data`), printed
    notes: tuple = ()

    # ---- basic properties --------------------------------------------------------------
    @property
    def k(self) -> int:
        return int(self.y.size)

    @property
    def _m0p0(self):
        if self.mu_prior.is_flat:
            return 0.0, 0.0
        return float(self.mu_prior.mean), 1.0 / float(self.mu_prior.sd) ** 2

    def _moment_finite(self, r: float) -> bool:
        """Does E[tau**r | y] exist? From the prior's tail and the likelihood's tau**-(k-1|k)."""
        return _moment_exists(self.tau_prior, self.k, self.mu_prior.is_flat, r)

    # ---- mixtures ------------------------------------------------------------------------
    def _mixture(self, param: str):
        """(M, S) arrays of shape (1, N) (or (k, N) for 'theta') for the normal mixture."""
        g = self._grid
        if param == "mu":
            return g.mhat[None, :], np.sqrt(g.V)[None, :]
        if param == "theta_new":
            return g.mhat[None, :], np.sqrt(g.V + g.tau ** 2)[None, :]
        if param == "theta":
            s2 = self.sei[:, None] ** 2
            b = s2 / (s2 + g.tau[None, :] ** 2)
            M = b * g.mhat[None, :] + (1 - b) * self.y[:, None]
            S = np.sqrt((1 - b) * s2 + b ** 2 * g.V[None, :])
            return M, S
        raise SpecError(f"unknown parameter '{param}'",
                        fix="use 'mu', 'tau', 'tau2', 'theta_new' or 'theta[i]'")

    def _mix_moments(self, param):
        M, S = self._mixture(param)
        W = self._grid.weight
        mean = M @ W
        var = (S ** 2 + M ** 2) @ W - mean ** 2
        # Var(theta_new) needs E[tau²]; so does Var(mu) under a flat prior (V ~ tau²/k).
        # Var(theta_i) is bounded: (1-b) s² + b² V <= s² + s⁴/(k tau²) for large tau.
        need_tau2 = param == "theta_new" or (param == "mu" and self.mu_prior.is_flat)
        if need_tau2 and not self._moment_finite(2):
            var = np.full_like(var, np.inf)
        return mean, np.sqrt(np.maximum(var, 0.0))

    # ---- tau ----------------------------------------------------------------------------
    def _tau_cdf_t(self, t):
        """Posterior CDF of tau at t-values (sinc indefinite integration)."""
        g = self._grid
        u = (np.asarray(t, dtype=float)[..., None] - g.t) / g.h
        si, _ = special.sici(math.pi * u)
        return np.clip(((0.5 + si / math.pi) * g.weight).sum(-1), 0.0, 1.0)

    def _tau_pdf_t(self, t):
        g = self._grid
        u = (np.asarray(t, dtype=float)[..., None] - g.t) / g.h
        return (np.sinc(u) * g.weight).sum(-1) / g.h

    def _tau_pdf_fast(self, t):
        """:meth:`_tau_pdf_t` for a 1-D array ``t``, with one sine per point: the nodes are
        integer multiples n_j of the step h, so sin(pi (t - t_j) / h) = (-1)^n_j sin(pi t / h)
        (equal up to rounding; it only scales the Newton steps of :meth:`_tau_quantiles`)."""
        t = np.asarray(t, dtype=float)
        if t.size > _BLOCK:
            return np.concatenate([self._tau_pdf_fast(t[i:i + _BLOCK])
                                   for i in range(0, t.size, _BLOCK)])
        g = self._grid
        u = (t[:, None] - g.t) / g.h
        sgn = 1.0 - 2.0 * (np.rint(g.t / g.h) % 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.sin(math.pi * t / g.h) / math.pi * ((g.weight * sgn) / u).sum(-1) / g.h
        on = (u == 0).any(-1)          # on a node: sinc is 1 there and 0 at the others
        if on.any():
            f[on] = (np.where(u[on] == 0, g.weight, 0.0)).sum(-1) / g.h
        return f

    def _tau_cdf_many(self, t):
        """:meth:`_tau_cdf_t` for a 1-D array ``t`` of many points, with few sine integrals.

        In units of the step, u_j = t/h - n_j exactly (h a power of two, n_j integers). Nodes
        with |u_j| < 100 use scipy's Si; the others the asymptotic series
        Si(pi u)/pi = sgn(u)/2 - (-1)^n_j [cos(pi t/h) v P(v^2) + sin(pi t/h) v^2 Q(v^2)] / pi,
        v = 1 / (pi u), P = 1 - 2! v^2 + 4! v^4 - 6! v^6, Q = 1 - 3! v^2 + 5! v^4 - 7! v^6,
        whose first omitted terms are below 1e-15 of the kept ones at pi |u| >= 314.
        """
        t = np.asarray(t, dtype=float)
        if t.size > _BLOCK:  # bounded memory: (points x nodes) arrays per block
            return np.concatenate([self._tau_cdf_many(t[i:i + _BLOCK])
                                   for i in range(0, t.size, _BLOCK)])
        g = self._grid
        x = t / g.h
        nj = np.rint(g.t / g.h)
        far_u = _SI_FAR
        # near nodes: a contiguous run of the sorted nodes around each point
        j0 = np.searchsorted(nj, x - far_u, side="right")
        j1 = np.searchsorted(nj, x + far_u, side="left")
        width = int(max((j1 - j0).max(initial=0), 1))
        idx = np.minimum(j0[:, None] + np.arange(width), nj.size - 1)
        near_ok = (np.arange(width)[None, :] < (j1 - j0)[:, None])
        un = x[:, None] - nj[idx]
        si, _ = special.sici(math.pi * un)
        near = (np.where(near_ok, (0.5 + si / math.pi) * g.weight[idx], 0.0)).sum(-1)
        below = np.concatenate([[0.0], np.cumsum(g.weight)])[j0]   # far nodes left of t
        # far nodes: the series (near ones masked out)
        u = x[:, None] - nj
        with np.errstate(divide="ignore"):
            v = np.where(np.abs(u) >= far_u, 1.0 / (math.pi * u), 0.0)
        v2 = v * v
        P = v * (1.0 + v2 * (-2.0 + v2 * (24.0 - 720.0 * v2)))
        Q = v2 * (1.0 + v2 * (-6.0 + v2 * (120.0 - 5040.0 * v2)))
        c = g.weight * (1.0 - 2.0 * (nj % 2))
        xr = x - 2.0 * np.rint(0.5 * x)                 # exact: the phase modulo 2
        far = -(np.cos(math.pi * xr) * (P @ c) + np.sin(math.pi * xr) * (Q @ c)) / math.pi
        return np.clip(below + near + far, 0.0, 1.0)

    @cached_property
    def _tau_table(self):
        """(t, F, f, f') at the grid nodes, for starting the Newton search of many quantiles.

        The nodes are integer multiples n_j of the step h, so at a node the sinc CDF and the
        derivative of the density are discrete convolutions of the weights with
        1/2 + Si(pi m)/pi and (-1)^m / m (m != 0; the derivative of sinc at integers), done by
        FFT; the density at a node is its weight / h (sinc is 1 at 0 and 0 at other integers).
        """
        g = self._grid
        n = np.rint(g.t / g.h).astype(np.int64)
        n -= n[0]
        L = int(n[-1]) + 1
        wd = np.zeros(L)
        wd[n] = g.weight
        m = np.arange(-(L - 1), L)
        si, _ = special.sici(math.pi * m)
        with np.errstate(divide="ignore"):
            dsinc = np.where(m == 0, 0.0, (1.0 - 2.0 * (m % 2)) / np.where(m == 0, 1, m))
        size = 1 << int(math.ceil(math.log2(3 * L)))
        fw = np.fft.rfft(wd, size)

        def conv(kernel):
            return np.fft.irfft(fw * np.fft.rfft(kernel, size), size)[L - 1:2 * L - 1][n]

        F = np.maximum.accumulate(np.clip(conv(0.5 + si / math.pi), 0.0, 1.0))
        return g.t, F, g.weight / g.h, conv(dsinc) / g.h ** 2

    def cdf(self, param: str, x):
        """Posterior CDF P(param <= x) for 'mu', 'tau', 'tau2', 'theta_new', 'theta[i]'."""
        x = np.asarray(x, dtype=float)
        if param in ("tau", "tau2"):
            tx = np.sqrt(np.maximum(x, 0.0)) if param == "tau2" else x
            if isinstance(self.tau_prior, FixedTau):
                return (tx >= self.tau_prior.value).astype(float)
            mp = self._map
            inside = (tx > mp.lo) & (tx < mp.hi)
            t = mp.t_of_z(mp.z_of_tau(np.where(inside, tx, mp.lo + 1.0)))
            out = np.where(inside, self._tau_cdf_t(t), np.where(tx >= mp.hi, 1.0, 0.0))
            return out
        M, S, W = self._param_mixture(param)
        return _mix_cdf(np.atleast_1d(x).ravel()[None, :], M, S, W).reshape(x.shape)

    def _param_mixture(self, param):
        if param.startswith("theta[") and param.endswith("]"):
            M, S = self._mixture("theta")
            i = self._study_index(param[6:-1])
            return M[i:i + 1], S[i:i + 1], self._grid.weight
        M, S = self._mixture(param)
        return M, S, self._grid.weight

    def _study_index(self, key) -> int:
        if key in [str(lab) for lab in self.labels]:
            return [str(lab) for lab in self.labels].index(key)
        try:
            i = int(key)
        except ValueError:
            raise SpecError(f"unknown study '{key}'", fix=f"use one of {list(self.labels)}") \
                from None
        if not 0 <= i < self.k:
            raise SpecError(f"study index {i} out of range 0..{self.k - 1}")
        return i

    def quantile(self, param: str, q):
        """Posterior quantile(s) of 'mu', 'tau', 'tau2', 'theta_new' or 'theta[i]'."""
        qa = np.atleast_1d(np.asarray(q, dtype=float))
        if np.any((qa <= 0) | (qa >= 1)):
            raise SpecError(f"quantile probabilities must be in (0, 1), got {q!r}")
        if param in ("tau", "tau2"):
            out = self._tau_quantiles(qa)
            out = out ** 2 if param == "tau2" else out
        else:
            M, S, W = self._param_mixture(param)
            out = _mix_quantiles(M, S, W, qa)[0]
        return out if np.ndim(q) else float(out[0])

    def _tau_quantiles(self, qs):
        if isinstance(self.tau_prior, FixedTau):
            return np.full(qs.shape, float(self.tau_prior.value))
        g, mp = self._grid, self._map
        if qs.size >= _TABLE_MIN_Q and g.t.size > 1:
            # start from the CDF at the nodes, interpolated (quintic Hermite on the CDF, its
            # density, weight / h at a node, and the density's slope); then Newton on the
            # sinc CDF in t
            tn, Fn, fn, dfn = self._tau_table
            j = np.clip(np.searchsorted(Fn, qs), 1, tn.size - 1)
            i = j - 1
            t = _hermite_inverse(qs, tn[i], tn[j], Fn[i], Fn[j], fn[i], fn[j], dfn[i], dfn[j])
            pdf, cdf = self._tau_pdf_fast, self._tau_cdf_many
        else:
            # start from the discrete weights
            cw = np.cumsum(g.weight)
            j = np.clip(np.searchsorted(cw, qs), 0, g.t.size - 1)
            t = g.t[j].astype(float)
            pdf, cdf = self._tau_pdf_t, self._tau_cdf_t
        lo = np.full(qs.shape, g.t[0] - 10 * g.h)
        hi = np.full(qs.shape, g.t[-1] + 10 * g.h)
        for _ in range(100):
            F = cdf(t) - qs
            f = pdf(t)
            lo = np.where(F < 0, t, lo)
            hi = np.where(F > 0, t, hi)
            with np.errstate(divide="ignore", invalid="ignore"):
                step = F / f
            conv = np.isfinite(step) & (f > 0) & (np.abs(step) <= 1e-13 * (1 + np.abs(t)))
            tn = t - np.where(np.isfinite(step), step, 0.0)
            bad = ~conv & (~np.isfinite(step) | (tn <= lo) | (tn >= hi) | (f <= 0))
            t = np.where(bad, 0.5 * (lo + hi), tn)
            if np.all(conv | (F == 0)):
                break
        return mp.tau_of_z(mp.z_of_t(t))

    # ---- summaries -----------------------------------------------------------------------
    def _ql(self):
        a = (1.0 - self.level) / 2.0
        return np.array([0.5, a, 1.0 - a])

    @cached_property
    def tau(self) -> dict:
        """Posterior summary of tau: mean, sd, median, lower, upper (``level`` ETI)."""
        g = self._grid
        m = float(g.weight @ g.tau) if self._moment_finite(1) else math.inf
        if self._moment_finite(2):
            sd = math.sqrt(max(float(g.weight @ g.tau ** 2) - m ** 2, 0.0))
        else:
            sd = math.inf
        med, lo, hi = self._tau_ql
        return _summ(m, sd, med, lo, hi)

    @cached_property
    def _tau_ql(self) -> np.ndarray:
        """Median and ``level`` ETI of tau (shared by :attr:`tau` and :attr:`tau2`)."""
        return self._tau_quantiles(self._ql())

    @cached_property
    def tau2(self) -> dict:
        """Posterior summary of tau²."""
        g = self._grid
        m = float(g.weight @ g.tau ** 2) if self._moment_finite(2) else math.inf
        if self._moment_finite(4):
            sd = math.sqrt(max(float(g.weight @ g.tau ** 4) - m ** 2, 0.0))
        else:
            sd = math.inf
        med, lo, hi = self._tau_ql ** 2
        return _summ(m, sd, med, lo, hi)

    def _mix_summary(self, param):
        mean, sd = self._mix_moments(param)
        M, S = self._mixture(param)
        qs = _mix_quantiles(M, S, self._grid.weight, self._ql())
        return [_summ(mean[i], sd[i], *qs[i]) for i in range(M.shape[0])]

    @cached_property
    def mu(self) -> dict:
        """Posterior summary of mu: mean, sd, median, lower, upper."""
        return self._mix_summary("mu")[0]

    @cached_property
    def theta_new(self) -> dict:
        """Posterior predictive summary of a new study's effect theta_new."""
        return self._mix_summary("theta_new")[0]

    @cached_property
    def _theta_rows(self) -> list[dict]:
        return self._mix_summary("theta")

    @cached_property
    def theta(self) -> pd.DataFrame:
        """Shrinkage estimates of each study's theta_i (index: study label)."""
        return pd.DataFrame(self._theta_rows,
                            index=pd.Index([str(lab) for lab in self.labels], name="study"))

    def summary(self, param: str) -> dict:
        """Summary dict (mean, sd, median, lower, upper) of a parameter."""
        if param in ("mu", "tau", "tau2", "theta_new"):
            return getattr(self, param)
        if param.startswith("theta[") and param.endswith("]"):
            return dict(self._theta_rows[self._study_index(param[6:-1])])
        raise SpecError(f"unknown parameter '{param}'",
                        fix="use 'mu', 'tau', 'tau2', 'theta_new' or 'theta[i]'")

    def interval(self, param: str, level: float = 0.95) -> tuple[float, float]:
        """Equal-tailed posterior interval at any ``level`` (at the fit's own ``level``, the
        summary's interval)."""
        if level == self.level and (param in ("mu", "tau", "tau2", "theta_new")
                                    or (param.startswith("theta[") and param.endswith("]"))):
            s = self.summary(param)
            return float(s["lower"]), float(s["upper"])
        a = (1.0 - level) / 2.0
        lo, hi = self.quantile(param, [a, 1.0 - a])
        return float(lo), float(hi)

    def prob_mu_below(self, c: float) -> float:
        """P(mu < c | y)."""
        return float(self.cdf("mu", c))

    def prob_theta_new_below(self, c: float) -> float:
        """P(theta_new < c | y) (posterior predictive)."""
        return float(self.cdf("theta_new", c))

    def density(self, param: str, grid) -> np.ndarray:
        """Posterior density of 'mu', 'tau', 'theta_new' or 'theta[i]' on ``grid``."""
        x = np.asarray(grid, dtype=float)
        if param == "tau":
            if isinstance(self.tau_prior, FixedTau):
                raise SpecError("tau is fixed: it has no posterior density")
            m0, p0 = self._m0p0
            ll, _, _ = _conditionals(np.atleast_1d(x).ravel(), self.y, self.sei ** 2, m0, p0)
            lp = self.tau_prior.logpdf_tau(np.atleast_1d(x).ravel())
            with np.errstate(invalid="ignore"):
                d = np.exp(lp + ll - self._grid.log_z)
            return np.where(np.isfinite(d), d, 0.0).reshape(x.shape)
        M, S, W = self._param_mixture(param)
        return _mix_pdf(np.atleast_1d(x).ravel()[None, :], M, S, W).reshape(x.shape)

    # ---- evidence ------------------------------------------------------------------------
    @property
    def log_marginal_likelihood(self) -> float | None:
        """log p(y): needs proper priors; ``None`` with a flat mu prior (undefined)."""
        if self.mu_prior.is_flat:
            return None
        return self._grid.log_z

    @cached_property
    def bayes_factor_tau0(self) -> float | None:
        """BF01 for tau = 0 against the tau prior: p(y | tau = 0) / p(y | tau ~ prior).

        Well defined also with a flat mu prior (the same improper constant cancels).
        """
        if isinstance(self.tau_prior, FixedTau):
            return None
        m0, p0 = self._m0p0
        ll0, _, _ = _conditionals(np.array([0.0]), self.y, self.sei ** 2, m0, p0)
        return float(math.exp(ll0[0] - self._grid.log_z))

    @cached_property
    def bayes_factor_mu0(self) -> float | None:
        """BF01 for mu = 0 against the mu prior (Savage-Dickey: posterior/prior density at 0).

        ``None`` with a flat mu prior (the Bayes factor is undefined).
        """
        if self.mu_prior.is_flat:
            return None
        post = float(self.density("mu", np.array([0.0]))[0])
        prior = float(np.exp(self.mu_prior.logpdf(0.0)))
        return post / prior

    # ---- output --------------------------------------------------------------------------
    def to_frame(self, analysis: str = "", outcome: str = "") -> pd.DataFrame:
        """Rows mu, tau, tau2, theta_new, theta[label] in the shared schema."""
        common = dict(analysis=analysis, outcome=outcome, source="bayesian",
                      method="exact-NNHM", level=self.level, interval="eti", scale=self.scale,
                      mcse=0.0)
        rows = []
        items = [("mu", self.mu), ("tau", self.tau), ("tau2", self.tau2),
                 ("theta_new", self.theta_new)]
        items += [(f"theta[{lab}]", r) for lab, r in zip(self.labels, self._theta_rows)]
        for name, s in items:
            rows.append(results.row(parameter=name, estimate=s["mean"], se=s["sd"],
                                    ci_low=s["lower"], ci_high=s["upper"], median=s["median"],
                                    **common))
        return results.frame(rows)

    def to_dict(self) -> dict:
        """JSON-ready summary (the ``bayesmeta bayes --json`` fields for the exact engine)."""
        def d(s):
            return {"mean": s["mean"], "sd": s["sd"], "median": s["median"],
                    "q025": s["lower"], "q975": s["upper"]}
        out = {"engine": "exact", "k": self.k, "measure": self.measure,
               "mu": d(self.mu), "tau": d(self.tau), "theta_new": d(self.theta_new),
               "p_mu_negative": self.prob_mu_below(0.0),
               "log_evidence": self.log_marginal_likelihood,
               "bayes_factor_mu0": self.bayes_factor_mu0,
               "bayes_factor_tau0": self.bayes_factor_tau0,
               "mu_prior": str(self.mu_prior), "tau_prior": str(self.tau_prior),
               "prior_note": self.prior_note, "notes": list(self.notes)}
        if self.level != 0.95:
            out["note"] = "q025/q975 hold the level-{self.level} interval"
        return out

    def __str__(self) -> str:
        lvl = f"{100 * self.level:g}%"
        lines = [
            f"Bayesian random-effects meta-analysis, exact NNHM posterior by quadrature "
            f"(k = {self.k}; scale: {self.scale})",
            f"priors: mu ~ {self.mu_prior}; tau ~ {self.tau_prior}",
        ]
        src = getattr(self.tau_prior, "source", "")
        if self.prior_note or src:
            lines.append(f"  tau prior: {self.prior_note or src}")
        lines.append("")
        hdr = f"{'':>10} {'mean':>10} {'median':>10} {'sd':>10}   {lvl} ETI"
        lines.append(hdr)

        def fmt(v):
            return f"{v:10.4f}" if math.isfinite(v) else f"{'inf':>10}"
        for name, s in (("mu", self.mu), ("tau", self.tau), ("theta_new", self.theta_new)):
            lines.append(f"{name:>10} {fmt(s['mean'])} {fmt(s['median'])} {fmt(s['sd'])}"
                         f"   [{s['lower']:.4f}, {s['upper']:.4f}]")
        lines.append("")
        ev = []
        lml = self.log_marginal_likelihood
        ev.append("log marginal likelihood = "
                  + (f"{lml:.4f}" if lml is not None else "undefined (flat mu prior)"))
        if self.bayes_factor_tau0 is not None:
            ev.append(f"BF01(tau = 0) = {self.bayes_factor_tau0:.4g}")
        if self.bayes_factor_mu0 is not None:
            ev.append(f"BF01(mu = 0) = {self.bayes_factor_mu0:.4g}")
        lines.append("evidence: " + "; ".join(ev))
        lines.append(f"P(mu < 0) = {self.prob_mu_below(0.0):.4f}; "
                     f"P(theta_new < 0) = {self.prob_theta_new_below(0.0):.4f}")
        if self.scale in ("logOR", "logRR", "logHR"):
            lines.append(f"estimates on the {self.scale} scale; exponentiate mu and its "
                         "interval for the ratio")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    __repr__ = __str__


# ------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------

def _check_data(yi, sei=None, vi=None):
    if sei is None and vi is None:
        raise DataError("need standard errors (sei) or variances (vi)")
    y = np.atleast_1d(np.asarray(yi, dtype=float))
    if sei is not None:
        s = np.atleast_1d(np.asarray(sei, dtype=float))
        col = "sei"
    else:
        v = np.atleast_1d(np.asarray(vi, dtype=float))
        col = "vi"
        if np.any(v <= 0) or not np.all(np.isfinite(v)):
            i = int(np.flatnonzero(~(np.isfinite(v) & (v > 0)))[0])
            raise DataError(f"vi must be finite and > 0, got {v[i]!r}", row=i + 1, column="vi")
        s = np.sqrt(v)
    if y.ndim != 1 or s.shape != y.shape:
        raise DataError(f"yi and {col} must be 1-D of equal length, got {y.shape} and {s.shape}")
    if y.size == 0:
        raise DataError("no studies (k = 0)", fix="give at least one study")
    bad = ~np.isfinite(y)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"yi must be finite, got {y[i]!r}", row=i + 1, column="yi")
    bad = ~(np.isfinite(s) & (s > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{col} must be finite and > 0, got {s[i]!r}", row=i + 1, column=col)
    return y, s


def _coerce_tau_prior(tau_prior):
    if isinstance(tau_prior, (int, float)) and not isinstance(tau_prior, bool):
        return FixedTau(float(tau_prior))
    if not isinstance(tau_prior, TauPrior):
        raise SpecError(f"tau_prior must be a tau prior (e.g. HalfNormal(0.5)) or a number, "
                        f"got {tau_prior!r}")
    if not getattr(tau_prior, "is_proper", True):
        raise SpecError(f"tau prior {tau_prior} is improper; the posterior may be improper",
                        fix="use a proper tau prior")
    return tau_prior


def fit_exact(yi, sei=None, *, vi=None, tau_prior=None, mu_prior=None, labels=None,
              level: float = 0.95, measure: str = "GEN", prior_note: str = "") -> ExactResult:
    """Exact posterior of the NNHM.

    Parameters
    ----------
    yi : array_like
        Effect estimates (analysis scale).
    sei, vi : array_like
        Standard errors or sampling variances (one of them).
    tau_prior : TauPrior or float
        Prior of tau (e.g. ``HalfNormal(0.5)``); a number fixes tau (0 gives the fixed-effect
        model). Required: there is no universal default (see
        :func:`bayesmeta.priors.default_tau_prior`).
    mu_prior : MuPrior, optional
        ``Normal(mean, sd)`` or ``Flat()`` (default).
    labels : sequence, optional
        Study labels (default ``1..k``).
    level : float
        Probability of the reported equal-tailed intervals.
    measure : str
        Effect measure (for labels only): ratio measures are on the log scale.
    prior_note : str
        Why this tau prior (printed).

    Returns
    -------
    ExactResult

    Raises
    ------
    DataError
        Non-finite yi, non-positive sei/vi, mismatched lengths, k = 0.
    SpecError
        Bad prior or level.
    """
    y, s = _check_data(yi, sei, vi)
    if tau_prior is None:
        raise SpecError("tau_prior is required",
                        fix="e.g. tau_prior=HalfNormal(0.5), or see priors.default_tau_prior")
    tau_prior = _coerce_tau_prior(tau_prior)
    mu_prior = Flat() if mu_prior is None else mu_prior
    if not isinstance(mu_prior, (Normal, Flat)):
        raise SpecError(f"mu_prior must be Normal(mean, sd) or Flat(), got {mu_prior!r}")
    if not (0 < level < 1):
        raise SpecError(f"level must be in (0, 1), got {level!r}")
    labels = tuple(range(1, y.size + 1)) if labels is None else tuple(labels)
    if len(labels) != y.size:
        raise DataError(f"{len(labels)} labels for {y.size} studies")
    m0, p0 = (0.0, 0.0) if mu_prior.is_flat else (float(mu_prior.mean), 1 / mu_prior.sd ** 2)
    try:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
            grid, mp = _build_grid(tau_prior, y, s ** 2, m0, p0)
    except (ArithmeticError, IndexError, ValueError) as err:
        # priors (or data) at the edge of double precision: the quadrature cannot represent the
        # posterior; say so in one line instead of failing somewhere inside it
        raise EstimationError(
            f"the exact posterior cannot be computed in double precision with mu ~ {mu_prior} "
            f"and tau ~ {tau_prior} for these data ({type(err).__name__}: {err}). Use priors "
            "on the scale of the data (e.g. the defaults).") from err
    meas = str(measure).upper()
    res = ExactResult(y=y, sei=s, labels=labels, mu_prior=mu_prior, tau_prior=tau_prior,
                      level=float(level), measure=meas, scale=_SCALES.get(meas, meas),
                      prior_note=prior_note, _grid=grid, _map=mp)
    note = posterior_outside_data(y, *res.interval("mu", res.level), parameter="mu",
                                  level=res.level, prior=mu_prior)
    if note is not None:
        warnings.warn(note, DataWarning, stacklevel=2)
        res = dataclasses.replace(res, notes=res.notes + (note,))
    return res


def fit_batch(Y, S, *, tau_prior, mu_prior=None, level: float = 0.95,
              quantiles: bool = True) -> pd.DataFrame:
    """Fit many datasets (rows of ``Y``/``S``, shape (n_datasets, k)); one row per dataset.

    Columns: ``mu_mean, mu_sd, mu_median, mu_lower, mu_upper`` and the same for ``tau`` and
    ``theta_new``, plus ``p_mu_negative`` and ``log_evidence``. Each dataset gets its own
    adaptive grid (so the accuracy is that of :func:`fit_exact`); ``quantiles=False`` skips
    medians and intervals for speed.
    """
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    S = np.atleast_2d(np.asarray(S, dtype=float))
    if Y.shape != S.shape:
        raise DataError(f"Y and S shapes differ: {Y.shape} vs {S.shape}")
    out = []
    for yrow, srow in zip(Y, S):
        r = fit_exact(yrow, srow, tau_prior=tau_prior, mu_prior=mu_prior, level=level)
        rec = {}
        for p in ("mu", "tau", "theta_new"):
            if quantiles:
                s = getattr(r, p)
            else:
                if p == "tau":
                    g = r._grid
                    m = float(g.weight @ g.tau)
                    s = dict(mean=m, sd=math.sqrt(max(float(g.weight @ g.tau ** 2) - m * m, 0)))
                else:
                    mean, sd = r._mix_moments(p)
                    s = dict(mean=float(mean[0]), sd=float(sd[0]))
            for key, v in s.items():
                rec[f"{p}_{key}"] = v
        rec["p_mu_negative"] = r.prob_mu_below(0.0)
        rec["log_evidence"] = r.log_marginal_likelihood
        out.append(rec)
    return pd.DataFrame(out)
