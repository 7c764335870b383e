"""Exact engine of the published-OR survival model: quadrature over sigma_time (and rho).

The model is that of :func:`bayesmeta.survival.fit_survival_published`. Given sigma_time and the
within-source correlation rho it is linear-Gaussian, so (mu, log OR_t) integrate out in closed
form and the posterior reduces to a one-dimensional integral over sigma_time (rho fixed) or a
two-dimensional one over sigma_time x rho (rho given a prior, :class:`RhoPrior`):

* rho fixed: the double-exponential trapezoid rule over sigma_time (as :mod:`bayesmeta.exact`
  over tau);
* rho ~ Beta prior: the Gauss-Jacobi rule of that Beta (the prior is the weight), and at
  each node the sigma_time rule above; the node's weight is the Gauss-Jacobi weight times the
  marginal likelihood p(y | rho) = ∫ p(sigma) p(y | sigma, rho) dsigma, which the sigma rule
  returns. Every marginal of mu and log OR_t is then a normal mixture over the
  (rho, sigma) nodes.

Correlation structures (:func:`bayesmeta.survival.corr_matrix`): ``exchangeable`` (every pair
rho) and ``ar1`` (rho ** (|t_i - t_j| / unit): decaying with the distance in time, Trikalinos &
Olkin 2012 Stat Med 31:3069 for cumulative ORs of the same patients).

A pooled-level additive bias (:class:`bayesmeta.bias_adjust.PooledBias`) shifts y and adds a
covariance shared by all time points before the fit.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from bayesmeta.crossed import CrossedMixture
from bayesmeta.exact import (FixedTau, _adaptive_trapezoid, _Map, _mix_cdf, _mix_quantiles,
                             _moment_exists)
from bayesmeta.exceptions import EstimationError, SpecError
from bayesmeta.mcmc import PosteriorResult, Report, _fmt_time
from bayesmeta.priors import Flat, Normal, TauPrior
from bayesmeta.survival import (_ABS_COLS, DEFAULT_THRESHOLD, _apply_bias, _p0_at,
                                _published_inputs, _published_priors, corr_matrix,
                                published_notes)

__all__ = ["fit_survival_published_exact", "ExactSurvivalResult", "ExactDiagnostics",
           "RhoPrior", "parse_rho_prior", "tau_prior_nodes"]

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
# per rho node when rho is integrated: the trapezoid error falls double-exponentially with
# the step, so a change below 1e-6 between steps h and h/2 leaves an error far below it at h/2,
# under the ~1e-8 error of the rho rule with the default n_rho
_QTOL_RHO = 1e-6
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

    def _cdf_t_lattice(self, t):
        """:meth:`_cdf_t` when every (t - t_n) / h is a multiple of 1/16 (the nodes are
        multiples of h, a power of 2, and so is t here): Si is evaluated once per distinct
        lattice value; the terms and their sum are the same floating-point numbers."""
        t = np.asarray(t, dtype=float)
        m = (t - t[0]) / self.h * 16.0                  # t = t[0] + m h / 16, m integer
        kn = (self.t - t[0]) / self.h * 16.0            # nodes: multiples of h / 16 too
        mi, ki = np.rint(m), np.rint(kn)
        if not (np.array_equal(mi, m) and np.array_equal(ki, kn)):
            return self._cdf_t(t)
        mi, ki = mi.astype(np.int64), ki.astype(np.int64)
        k0, k1 = int(mi.min() - ki.max()), int(mi.max() - ki.min())
        si, _ = special.sici(math.pi * (np.arange(k0, k1 + 1) / 16.0))
        g = 0.5 + si / math.pi                      # the same terms, once per lattice value
        k = (mi - k0)[:, None] - ki[None, :]        # 16 (t - t_n) / h - k0
        return np.clip((g[k] * self.weight).sum(-1), 0.0, 1.0)

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
        F = np.maximum.accumulate(self._cdf_t_lattice(tt))
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


def _prior_grid(prior, tol=_QTOL) -> _SigGrid:
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

    return _scale_grid(prior, logf, moments, sc, tol=tol)


def tau_prior_nodes(prior, tol: float = _QTOL) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes and weights (sum 1) of a scale prior: the double-exponential rule of
    the exact engines (moments converged to ``tol``); a ``FixedTau`` point mass is one node."""
    g = _prior_grid(prior, tol)
    return g.sigma.copy(), g.weight.copy()


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

    rho_nodes: int = 0

    def line(self) -> str:
        over = ("sigma_time" if not self.rho_nodes else
                f"sigma_time x rho ({self.rho_nodes} Gauss-Jacobi nodes for rho)")
        return (f"Exact engine: quadrature over {over} ({self.nodes} nodes, step "
                f"{self.step:g} on the sinh scale, moments converged to "
                f"{_QTOL if not self.rho_nodes else _QTOL_RHO:g}); summaries "
                f"and probabilities are exact (no Monte Carlo error); the {self.n_draws} stored "
                "draws are i.i.d. from the exact posterior.")

    def to_dict(self) -> dict:
        return {"engine": "exact", "nodes": self.nodes, "step": self.step,
                "rho_nodes": self.rho_nodes, "n_draws": self.n_draws, "clean": True,
                "divergences": 0}


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

    def survival_table(self, control_survival=None,
                       threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
        """The :func:`bayesmeta.survival.survival_table` columns, computed exactly (mixtures,
        not draws); absolute columns NaN without ``control_survival``."""
        return self._q.table(control_survival, threshold)

    def _row_quality(self, s: pd.Series) -> dict:
        return {"mcse": 0.0}

    def __str__(self) -> str:
        lines = [
            f"Bayesian {self.model} model, exact posterior by quadrature "
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


# ---------------------------------------------------------------------------------------------
# a prior on the within-source correlation
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RhoPrior:
    """rho = lower + (upper - lower) B with B ~ Beta(a, b) (Beta(1, 1): uniform).

    ``0 <= lower < upper <= 1``: the correlation of estimates from overlapping patients is
    positive. Parse from text with :func:`parse_rho_prior`.
    """

    a: float = 1.0
    b: float = 1.0
    lower: float = 0.0
    upper: float = 1.0
    source: str = field(default="", compare=False)

    def __post_init__(self):
        ok = (all(math.isfinite(v) for v in (self.a, self.b, self.lower, self.upper))
              and self.a > 0 and self.b > 0 and 0.0 <= self.lower < self.upper <= 1.0)
        if not ok:
            raise SpecError(f"Invalid rho prior Beta({self.a}, {self.b}) on ({self.lower}, "
                            f"{self.upper}): need a, b > 0 and 0 <= lower < upper <= 1",
                            key="rho_prior")

    def ppf(self, u):
        return self.lower + (self.upper - self.lower) * stats.beta.ppf(u, self.a, self.b)

    def cdf(self, r):
        return stats.beta.cdf((np.asarray(r, float) - self.lower) / (self.upper - self.lower),
                              self.a, self.b)

    def __str__(self) -> str:
        rng = "" if (self.lower, self.upper) == (0.0, 1.0) else \
            f" on ({self.lower:g}, {self.upper:g})"
        if self.a == 1.0 and self.b == 1.0:
            return f"Uniform({self.lower:g}, {self.upper:g})"
        return f"Beta({self.a:g}, {self.b:g}){rng}"

    def describe(self) -> str:
        return str(self) + (f" ({self.source})" if self.source else "")


def parse_rho_prior(text: str) -> RhoPrior:
    """``uniform``, ``uniform:LO:HI``, ``beta:A:B`` or ``beta:A:B:LO:HI``."""
    parts = [p.strip() for p in str(text).strip().lower().split(":")]
    try:
        nums = [float(x) for x in parts[1:]]
    except ValueError:
        nums = None
    if parts[0] == "uniform" and nums is not None and len(nums) in (0, 2):
        return RhoPrior(1.0, 1.0, *(nums or [0.0, 1.0]))
    if parts[0] == "beta" and nums is not None and len(nums) in (2, 4):
        return RhoPrior(*nums)
    raise SpecError(f"Invalid rho prior {text!r}", key="rho_prior",
                    fix="use uniform, uniform:LO:HI, beta:A:B or beta:A:B:LO:HI")


@functools.lru_cache(maxsize=64)
def _roots_jacobi(n: int, alpha: float, beta: float):
    """Gauss-Jacobi nodes and weights (cached: a rule depends only on its arguments)."""
    t, w = special.roots_jacobi(n, alpha, beta)
    t.flags.writeable = False
    w.flags.writeable = False
    return t, w


@dataclass(frozen=True)
class _RhoPost:
    """Posterior of rho from the Gauss-Jacobi rule of its Beta prior.

    On x = 2 (rho - lower) / (upper - lower) - 1 the prior is the Jacobi weight
    (1 - x)^(b-1) (1 + x)^(a-1), so the Gauss-Jacobi nodes integrate L(x) = p(y | rho(x))
    against it with spectral accuracy for a smooth L. The posterior CDF integrates the
    polynomial interpolant of L through the nodes against the same weight (a Gauss-Jacobi
    rule on the sub-interval, from the nearer end).
    """

    prior: RhoPrior
    x: np.ndarray
    rho: np.ndarray
    weight: np.ndarray         # posterior weight of each node (sum 1)
    coef: np.ndarray           # Legendre coefficients of L / max L in x
    z: float                   # ∫ L / max L x prior weight dx (same units as the rule)
    _qcache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, prior, x, gw, log_l):
        lmax = float(np.max(log_l))
        L = np.exp(log_l - lmax)
        w = gw * L
        coef = np.polynomial.legendre.legfit(x, L, x.size - 1)
        return cls(prior, x, prior.lower + (prior.upper - prior.lower) * 0.5 * (x + 1.0),
                   w / w.sum(), coef, float(w.sum()))

    def _tail(self, xr, lower: bool):
        a, b = self.prior.a, self.prior.b
        n = max(64, self.x.size)
        if lower:   # ∫_{-1}^{xr}: x = -1 + (xr + 1)(t + 1)/2, weight (1 + t)^(a-1)
            t, w = _roots_jacobi(n, 0.0, a - 1.0)
            xx = -1.0 + (xr + 1.0) * 0.5 * (t + 1.0)
            f = np.polynomial.legendre.legval(xx, self.coef) * (1.0 - xx) ** (b - 1.0)
            return ((xr + 1.0) / 2.0) ** a * float(w @ f)
        t, w = _roots_jacobi(n, b - 1.0, 0.0)   # ∫_{xr}^{1}, weight (1 - t)^(b-1)
        xx = xr + (1.0 - xr) * 0.5 * (t + 1.0)
        f = np.polynomial.legendre.legval(xx, self.coef) * (1.0 + xx) ** (a - 1.0)
        return ((1.0 - xr) / 2.0) ** b * float(w @ f)

    def cdf(self, r) -> float:
        p = self.prior
        xr = 2.0 * (float(r) - p.lower) / (p.upper - p.lower) - 1.0
        if xr <= -1.0:
            return 0.0
        if xr >= 1.0:
            return 1.0
        if xr <= 0.0:
            return float(np.clip(self._tail(xr, True) / self.z, 0.0, 1.0))
        return float(np.clip(1.0 - self._tail(xr, False) / self.z, 0.0, 1.0))

    def quantiles(self, qs):
        qs = np.atleast_1d(np.asarray(qs, float))
        todo = [float(q) for q in qs if float(q) not in self._qcache]
        if todo:
            self._qcache.update(zip(todo, self._quantiles(todo)))
        return np.array([self._qcache[float(q)] for q in qs])

    def _density(self, r) -> float:
        """d cdf / d rho: the interpolant of L times the prior weight, over z."""
        p = self.prior
        xr = 2.0 * (float(r) - p.lower) / (p.upper - p.lower) - 1.0
        if not -1.0 < xr < 1.0:
            return 0.0
        f = (float(np.polynomial.legendre.legval(xr, self.coef)) * (1.0 - xr) ** (p.b - 1.0)
             * (1.0 + xr) ** (p.a - 1.0))
        return f / self.z * 2.0 / (p.upper - p.lower)

    def _quantiles(self, qs):
        """Safeguarded Newton on :meth:`cdf` inside (lower, upper), to 1e-15."""
        out = []
        for q in qs:
            lo, hi = self.prior.lower, self.prior.upper
            r = float(np.clip(self.rho[np.searchsorted(np.cumsum(self.weight), q)], lo, hi))
            for _ in range(100):
                g = self.cdf(r) - q
                if g == 0.0:
                    break
                lo, hi = (r, hi) if g < 0 else (lo, r)
                d = self._density(r)
                rn = r - g / d if d > 0 else math.nan
                if not (lo < rn < hi):
                    rn = 0.5 * (lo + hi)
                if abs(rn - r) <= 1e-15 or hi - lo <= 1e-15:
                    r = rn
                    break
                r = rn
            out.append(r)
        return np.array(out)

    def summary_row(self):
        m = float(self.weight @ self.rho)
        sd = math.sqrt(max(float(self.weight @ self.rho ** 2) - m * m, 0.0))
        md, lo, hi = self.quantiles([0.5, 0.025, 0.975])
        return (m, sd, lo, hi, md)


@dataclass(frozen=True)
class _Block:
    """One rho node: its covariance, sigma_time grid and posterior weight."""

    rho: float
    C: np.ndarray
    grid: _SigGrid
    weight: float


class _PublishedExact:
    """Quadrature state: (rho, sigma_time) posterior nodes, tau_new prior grid, conditionals."""

    def __init__(self, times, y, A, m0, p0, blocks: list, tau_grid: _SigGrid,
                 tau_fin2: bool, sig_fin: tuple, rho_post: _RhoPost | None = None):
        self.times, self.y, self.A, self.m0, self.p0 = times, y, A, m0, p0
        self.blocks, self.tg, self.rho_post = blocks, tau_grid, rho_post
        self.tau_fin2, self.sig_fin = tau_fin2, sig_fin
        W = np.concatenate([b.weight * b.grid.weight for b in blocks])
        keep = W > 1e-300
        cat = {k: np.concatenate([b.grid.aux[k] for b in blocks])[keep]
               for k in ("mhat", "V", "tm", "tv")}
        self.W = W[keep] / W[keep].sum()
        self.mu_M, self.mu_S = cat["mhat"][None, :], np.sqrt(cat["V"])[None, :]
        self.th_M, self.th_S = cat["tm"].T, np.sqrt(cat["tv"]).T                  # (T, N)
        # the new-trial log OR is logOR[t] + tau_new z: the posterior nodes crossed with the
        # tau_new grid, evaluated from the two factors (bayesmeta.crossed); quantiles are
        # cached per (label, probability)
        self._new, self._qcache = {}, {}

    @property
    def n_nodes(self) -> int:
        return int(self.W.size)

    def _split(self, label):
        """("mu" | "logOR" | "logOR_new", time index)."""
        if label == "mu":
            return "mu", None
        for pre in ("logOR_new[", "logOR["):
            if label.startswith(pre) and label.endswith("]"):
                return pre[:-1], self.times.index(label[len(pre):-1])
        raise KeyError(f"no mixture for {label!r}")

    def new_trial_mixture(self, i: int) -> CrossedMixture:
        """logOR_new at time index i as :class:`bayesmeta.crossed.CrossedMixture`."""
        if i not in self._new:
            self._new[i] = CrossedMixture(self.th_M[i], self.th_S[i], self.W, self.tg.sigma,
                                          self.tg.weight)
        return self._new[i]

    def mixture(self, label):
        """(M, S, W) of mu / logOR[t] (rows (1, N)) or of logOR_new[t] (the crossed
        components, weights below 1e-16 of the largest pruned: pruned mass < 1e-11)."""
        kind, i = self._split(label)
        if kind == "mu":
            return self.mu_M, self.mu_S, self.W
        if kind == "logOR":
            return self.th_M[i:i + 1], self.th_S[i:i + 1], self.W
        tg = self.tg
        Wn = np.outer(self.W, tg.weight).ravel()
        keep = Wn > 1e-16 * Wn.max()
        M = np.repeat(self.th_M[i], tg.sigma.size)[keep]
        S = np.sqrt(self.th_S[i][:, None] ** 2 + tg.sigma[None, :] ** 2).ravel()[keep]
        return M[None, :], S[None, :], Wn[keep] / Wn[keep].sum()

    def cdf(self, label, x):
        kind, i = self._split(label)
        if kind == "logOR_new":
            return float(self.new_trial_mixture(i).cdf(float(x)))
        M, S, W = self.mixture(label)
        return float(_mix_cdf(np.array([[float(x)]]), M, S, W)[0, 0])

    def sigma_quantiles(self, qs):
        qs = np.atleast_1d(np.asarray(qs, float))
        todo = sorted({float(q) for q in qs if ("sigma_time", float(q)) not in self._qcache})
        if todo:
            got = self._sigma_quantiles(np.array(todo))
            self._qcache.update({("sigma_time", q): float(v) for q, v in zip(todo, got)})
        return np.array([self._qcache[("sigma_time", float(q))] for q in qs])

    def _sigma_cdf_pdf_z(self, z):
        """Mixture over the rho blocks of the sinc CDFs of sigma_time (each block's
        :meth:`_SigGrid._cdf_t`, clipped to [0, 1]) at z = z_of_tau(sigma) (Q,), and its
        derivative in z."""
        c, wm, tn, wn, h, bw = self._sig
        t = np.arcsinh((z[:, None] - c) / wm)                                 # (Q, B)
        u = (t[:, :, None] - tn[None]) / h[None, :, None]                      # (Q, B, N)
        si, _ = special.sici(math.pi * u)
        Fb = ((0.5 + si / math.pi) * wn).sum(-1)
        inside = (Fb > 0.0) & (Fb < 1.0)
        fb = np.where(inside, (np.sinc(u) * wn).sum(-1) / h, 0.0) / np.sqrt(
            wm ** 2 + (z[:, None] - c) ** 2)
        return np.clip(Fb, 0.0, 1.0) @ bw, fb @ bw

    def _sigma_quantiles(self, qs):
        if len(self.blocks) == 1:
            return self.blocks[0].grid.quantiles(qs)
        if any(b.grid.fixed for b in self.blocks):
            return self._sigma_quantiles_bisect(qs)
        # safeguarded Newton in z (the maps' common z = log sigma or logit scale), to 1e-14
        if not hasattr(self, "_sig"):
            B = len(self.blocks)
            N = max(b.grid.t.size for b in self.blocks)
            tn, wn = np.zeros((B, N)), np.zeros((B, N))
            for i, b in enumerate(self.blocks):
                tn[i, :b.grid.t.size], wn[i, :b.grid.t.size] = b.grid.t, b.grid.weight
            self._sig = (np.array([b.grid.mp.c for b in self.blocks]),
                         np.array([b.grid.mp.w for b in self.blocks]), tn, wn,
                         np.array([b.grid.h for b in self.blocks]),
                         np.array([b.weight for b in self.blocks]))
        mp = self.blocks[0].grid.mp
        zs = [b.grid.mp.z_of_t(np.array([b.grid.t[0] - 10 * b.grid.h,
                                         b.grid.t[-1] + 10 * b.grid.h])) for b in self.blocks]
        lo = np.full(qs.shape, min(z[0] for z in zs))
        hi = np.full(qs.shape, max(z[1] for z in zs))
        wb = self._sig[5]
        z = np.full(qs.shape, float(sum(w * b.grid.mp.z_of_t(
            b.grid.t[np.searchsorted(np.cumsum(b.grid.weight), 0.5)]) for w, b in zip(
                wb, self.blocks))))
        for _ in range(200):
            F, f = self._sigma_cdf_pdf_z(z)
            r = F - qs
            lo, hi = np.where(r < 0, z, lo), np.where(r > 0, z, hi)
            with np.errstate(divide="ignore", invalid="ignore"):
                step = r / f
            conv = np.isfinite(step) & (np.abs(step) <= 1e-14 * (1.0 + np.abs(z)))
            zn = z - np.where(np.isfinite(step), step, 0.0)
            bad = ~conv & (~np.isfinite(step) | (zn <= lo) | (zn >= hi))
            z = np.where(bad, 0.5 * (lo + hi), zn)
            if np.all(conv | (r == 0) | (hi - lo <= 1e-15 * (1.0 + np.abs(z)))):
                break
        return mp.tau_of_z(z)

    def _sigma_quantiles_bisect(self, qs):
        per = np.array([b.grid.quantiles(qs) for b in self.blocks])     # (B, Q)
        lo, hi = per.min(0), per.max(0)    # a mixture quantile lies between the components'
        wb = np.array([b.weight for b in self.blocks])
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            F = sum(w * b.grid.cdf(mid) for w, b in zip(wb, self.blocks))
            below = F < qs
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def _moments(self, M, S, W, finite=True):
        mean = M @ W
        var = (S ** 2 + M ** 2) @ W - mean ** 2
        sd = np.sqrt(np.maximum(var, 0.0)) if finite else np.full_like(mean, math.inf)
        return mean, sd

    def quantiles(self, label, qs):
        qs = np.atleast_1d(np.asarray(qs, float))
        todo = sorted({float(q) for q in qs if (label, float(q)) not in self._qcache})
        if todo:
            kind, i = self._split(label)
            if kind == "logOR_new":
                got = self.new_trial_mixture(i).quantile(np.array(todo))
            else:
                M, S, W = self.mixture(label)
                got = _mix_quantiles(M, S, W, np.array(todo))[0]
            self._qcache.update({(label, q): float(v) for q, v in zip(todo, got)})
        return np.array([self._qcache[(label, float(q))] for q in qs])

    def _fill_quantiles(self, labels, qs):
        """Cache the quantiles of mu / logOR[t] labels (one weight vector W) in one search."""
        qs = sorted({float(q) for q in qs})
        todo = [lab for lab in labels if any((lab, q) not in self._qcache for q in qs)]
        if not todo:
            return
        MS = [self.mixture(lab)[:2] for lab in todo]
        got = _mix_quantiles(np.vstack([m for m, _ in MS]), np.vstack([sd for _, sd in MS]),
                             self.W, np.array(qs))
        for lab, row in zip(todo, got):
            self._qcache.update({(lab, q): float(v) for q, v in zip(qs, row)})

    def _new_moments(self, i: int):
        """Mean and SD of logOR_new[t] = logOR[t] + tau_new z (tau_new independent, mean 0)."""
        mean, sd = self._moments(self.th_M[i:i + 1], self.th_S[i:i + 1], self.W)
        if not self.tau_fin2:
            return mean, np.full_like(sd, math.inf)
        return mean, np.sqrt(sd ** 2 + float(self.tg.weight @ self.tg.sigma ** 2))

    def summary(self, level: float = CI_PROB) -> pd.DataFrame:
        a = (1.0 - level) / 2.0
        ql = np.array([0.5, a, 1.0 - a])
        rows = {}
        fin_mu = self.p0 > 0 or self.sig_fin[1]
        self._fill_quantiles(["mu"] + [f"logOR[{t}]" for t in self.times], ql)
        for lab, M, S, W, fin in (
                [("mu", self.mu_M, self.mu_S, self.W, fin_mu)]
                + [(f"logOR[{t}]", self.th_M[i:i + 1], self.th_S[i:i + 1], self.W, True)
                   for i, t in enumerate(self.times)]):
            mean, sd = self._moments(M, S, W, fin)
            q = self.quantiles(lab, ql)
            rows[lab] = (float(mean[0]), float(sd[0]), q[1], q[2], q[0])
        for i, t in enumerate(self.times):
            mean, sd = self._new_moments(i)
            q = self.quantiles(f"logOR_new[{t}]", ql)
            rows[f"logOR_new[{t}]"] = (float(mean[0]), float(sd[0]), q[1], q[2], q[0])
        sig = np.concatenate([b.grid.sigma for b in self.blocks])
        ws = np.concatenate([b.weight * b.grid.weight for b in self.blocks])
        ws = ws / ws.sum()
        m1 = float(ws @ sig) if self.sig_fin[0] else math.inf
        sd = (math.sqrt(max(float(ws @ sig ** 2) - m1 ** 2, 0.0))
              if self.sig_fin[1] else math.inf)
        q = self.sigma_quantiles(ql)
        head = {"mu": rows.pop("mu"), "sigma_time": (m1, sd, q[1], q[2], q[0])}
        if self.rho_post is not None:
            m, sdr, lo, hi, md = self.rho_post.summary_row()
            if level != CI_PROB:
                md, lo, hi = self.rho_post.quantiles(ql)
            head["rho"] = (m, sdr, lo, hi, md)
        rows = {**head, **rows}
        pct = f"{100 * level:g}"
        df = pd.DataFrame.from_dict(rows, orient="index",
                                    columns=["mean", "sd", f"eti{pct}_lb", f"eti{pct}_ub",
                                             "median"])
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
            p0 = _p0_at(control_survival, t)
            for kind, lab in (("pooled", f"logOR[{t}]"), ("new_trial", f"logOR_new[{t}]")):
                md, lo, hi = self.quantiles(lab, ql)
                M, S, W = self.th_M[i:i + 1], self.th_S[i:i + 1], self.W
                if kind == "pooled":
                    cdf = _mix_cdf(np.array([[0.0, math.log(thr)]]), M, S, W)[0]
                else:
                    cdf = self.new_trial_mixture(i).cdf(np.array([0.0, math.log(thr)]))
                row = {"time": t, "kind": kind, "or_median": math.exp(md),
                       "or_ci_low": math.exp(lo), "or_ci_high": math.exp(hi),
                       "p_or_gt_1": float(1.0 - cdf[0]), "threshold": thr,
                       "p_or_gt_threshold": float(1.0 - cdf[1])}
                if p0 is None:
                    rows.append({**row, **dict.fromkeys(_ABS_COLS, math.nan),
                                 "p_benefit": float(1.0 - cdf[0])})
                    continue
                a = math.log(p0 / (1.0 - p0))
                # the survival difference expit(a + L) - p0 is increasing in L: its quantiles
                # are those of L mapped through it; its mean by Gauss-Hermite per component
                dmd, dlo, dhi = (float(special.expit(a + v)) - p0 for v in (md, lo, hi))
                if kind == "new_trial":
                    M, S, W = self.mixture(lab)
                dmean = float(_mix_mean_expit(a, M, S, W)[0]) - p0

                def nnt(d):
                    return math.inf if d == 0 else 1.0 / d

                nlo, nhi = (nnt(dhi), nnt(dlo)) if (dlo > 0 or dhi < 0) else (math.nan, math.nan)
                rows.append({
                    **row, "control_survival": p0,
                    "survival_diff_mean": dmean, "survival_diff_median": dmd,
                    "survival_diff_ci_low": dlo, "survival_diff_ci_high": dhi,
                    "nnt": nnt(dmd), "nnt_ci_low": nlo, "nnt_ci_high": nhi,
                    "p_benefit": float(1.0 - cdf[0])})
        df = pd.DataFrame(rows)
        df.attrs.update(ci_prob=CI_PROB, ci_kind="eti", engine="exact",
                        note="OR = survival odds ratio, > 1 favours group 1")
        return df

    def draws(self, n, seed, tau_prior):
        """Exact i.i.d. draws: rho node by its weight, sigma by inverse CDF, (mu, theta) |
        sigma, rho Gaussian, tau_new from its prior. Deterministic given ``seed``."""
        rng = np.random.default_rng(seed)
        T = len(self.times)
        if len(self.blocks) == 1:
            bidx = np.zeros(n, dtype=int)
        else:
            bidx = rng.choice(len(self.blocks), size=n,
                              p=np.array([b.weight for b in self.blocks]))
        sig, rho = np.empty(n), np.empty(n)
        mu, theta = np.empty(n), np.empty((n, T))
        for j, b in enumerate(self.blocks):
            sel = np.flatnonzero(bidx == j)
            if sel.size == 0:
                continue
            sg = b.grid.sample(rng.random(sel.size))
            c = _pub_conditionals(sg, self.y, b.C, self.A, self.m0, self.p0, full=True)
            m = c["mhat"] + np.sqrt(c["V"]) * rng.standard_normal(sel.size)
            ev, evec = np.linalg.eigh(c["Ac"])
            root = evec * np.sqrt(np.maximum(ev, 0.0))[:, None, :]
            theta[sel] = (m[:, None] * c["g"] + c["Gy"]
                          + np.einsum("nij,nj->ni", root, rng.standard_normal((sel.size, T))))
            sig[sel], rho[sel], mu[sel] = sg, b.rho, m
        u = rng.random(n)
        tau = (np.full(n, float(tau_prior.value)) if isinstance(tau_prior, FixedTau)
               else np.asarray(tau_prior.ppf_tau(u), dtype=float))
        new = theta + tau[:, None] * rng.standard_normal((n, T))
        return {"mu": mu, "sigma_time": sig, "rho": rho, "tau_new": tau, "log_or": theta,
                "log_or_new": new}


def fit_survival_published_exact(times, or_, ci_low, ci_high, *, rho=0.5,
                                 correlation: str = "exchangeable",
                                 structure: str = "exchangeable", or_means: str = "survival",
                                 mu_prior=None, sigma_prior=None, tau_new_prior=None,
                                 time_unit: float | None = None, bias=None, n_rho: int = 32,
                                 control_survival=None,
                                 threshold: float = DEFAULT_THRESHOLD, ci_level: float = 0.95,
                                 n_draws: int = 40_000, seed: int = 20240601,
                                 analysis: str = "", outcome: str = "survival"
                                 ) -> ExactSurvivalResult:
    """Exact posterior of the model of :func:`bayesmeta.survival.fit_survival_published` (same
    model, same defaults), by quadrature instead of MCMC.

    Given sigma_time and rho, (mu, log OR_t) are jointly Gaussian a posteriori (conjugate), and
    p(sigma_time | y, rho) ∝ p(sigma_time) N(y; m0 1, C(rho) + s0² 11' + sigma² A) is
    one-dimensional (A = I for ``structure="exchangeable"``, the random-walk covariance
    min(i, j) for ``"rw1"``). The sigma grid is the double-exponential (sinh) trapezoid rule of
    :mod:`bayesmeta.exact` with step halving until moments change by < 1e-11. Posterior mean,
    SD and quantiles of mu, sigma_time and log OR_t, P(OR_t > 1) and P(OR_t > threshold) are
    exact normal-mixture quantities. The new-trial predictive log OR_t + tau_new z is a mixture
    over the posterior nodes x the ``tau_new_prior`` grid (prior only: pooled data carry no
    information on the between-trial SD).

    ``rho``: a number (fixed), or a :class:`RhoPrior` / its text (``"uniform"``,
    ``"beta:2:2"``): rho is then integrated out with the ``n_rho``-node Gauss-Jacobi rule of
    the Beta prior, each node weighted by p(y | rho) = ∫ p(sigma) p(y | sigma, rho) dsigma
    (the sigma rule's normalising constant); the posterior of rho is reported (row ``rho``).

    ``bias``: a :class:`bayesmeta.bias_adjust.PooledBias` (mean shift and a variance shared by
    every time point). ``time_unit``: the distance unit of ``correlation="ar1"``.

    ``n_draws`` i.i.d. draws from the exact posterior (seeded) fill ``datatree["posterior"]``
    (chain = 1) for plots, ArviZ and NetCDF; no reported number comes from them.

    Returns
    -------
    ExactSurvivalResult
        ``summary``/``to_frame()`` rows mu, sigma_time, (rho,) logOR[t], logOR_new[t] (method
        ``"exact-survival"``, 95% ETI, mcse 0); ``extra["survival_table"]``, ``extra["rho"]``
        (the fixed value or NaN), ``extra["rho_prior"]``, ``extra["times"]``,
        ``extra["or_means"]``; ``clean`` is True.
    """
    import time as _time

    import xarray as xr

    import bayesmeta

    t0 = _time.perf_counter()
    t, y, se = _published_inputs(times, or_, ci_low, ci_high, or_means, structure, ci_level)
    n = len(t)
    rho_prior = parse_rho_prior(rho) if isinstance(rho, str) else (
        rho if isinstance(rho, RhoPrior) else None)
    if rho_prior is None and not isinstance(rho, (int, float)):
        raise SpecError(f"Invalid rho {rho!r}: a number or a rho prior", key="rho")
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

    tol = _QTOL if rho_prior is None else _QTOL_RHO

    def grid_at(r):
        C = corr_matrix(n, float(r), correlation, t, time_unit) * np.outer(se, se)
        yb, C = _apply_bias(y, C, bias)

        def logf(s):
            d = _pub_conditionals(s, yb, C, A, m0, p0)
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

        return C, yb, _scale_grid(sig_p, logf, moments, c, tol=tol)

    if rho_prior is None:
        C, yb, grid = grid_at(float(rho))
        blocks, rho_post = [_Block(float(rho), C, grid, 1.0)], None
    else:
        if int(n_rho) < 4:
            raise SpecError(f"Invalid n_rho {n_rho!r}: must be >= 4.", key="n_rho")
        x, gw = special.roots_jacobi(int(n_rho), rho_prior.b - 1.0, rho_prior.a - 1.0)
        r_nodes = rho_prior.lower + (rho_prior.upper - rho_prior.lower) * 0.5 * (x + 1.0)
        built = [grid_at(r) for r in r_nodes]
        yb = built[0][1]
        rho_post = _RhoPost.build(rho_prior, x, gw, np.array([g.log_z for _, _, g in built]))
        blocks = [_Block(float(r), C, g, float(w)) for r, (C, _, g), w in
                  zip(rho_post.rho, built, rho_post.weight)]
    tgrid = _prior_grid(tau_p, tol)
    q = _PublishedExact(tl, yb, A, m0, p0, blocks, tgrid, _moment_exists(tau_p, 0, False, 2),
                        sig_fin, rho_post)
    summ = q.summary()
    dr = q.draws(int(n_draws), seed, tau_p)

    def v(x):
        return ("chain", "draw"), x[None]

    def vt(x):
        return ("chain", "draw", "time"), x[None]

    dvars = {"mu": v(dr["mu"]), "sigma_time": v(dr["sigma_time"]), "tau_new": v(dr["tau_new"]),
             "log_or": vt(dr["log_or"]), "log_or_new": vt(dr["log_or_new"]),
             "or": vt(np.exp(dr["log_or"]))}
    if rho_post is not None:
        dvars["rho"] = v(dr["rho"])
    post = xr.Dataset(dvars, coords={"chain": [0], "draw": np.arange(int(n_draws)), "time": tl})
    post.attrs.update(inference_library="bayesmeta.survival_exact (quadrature, i.i.d. draws)")
    seconds = _time.perf_counter() - t0
    rho_val = float(rho) if rho_prior is None else math.nan
    attrs = {"model": "survival-published", "engine": "exact", "seed": int(seed),
             "n_draws": int(n_draws), "rho": rho_val,
             "rho_prior": "" if rho_prior is None else str(rho_prior),
             "correlation": correlation, "structure": structure, "or_means": or_means,
             "bias": "" if bias is None else bias.describe(),
             "quadrature_nodes": q.n_nodes, "compile_seconds": 0.0,
             "sampling_seconds": seconds, "bayesmeta_version": bayesmeta.__version__,
             "created": _dt.datetime.now(_dt.timezone.utc).isoformat()}
    C0 = blocks[0].C if rho_prior is None else None
    const = {"sei": ("time", se)}
    if C0 is not None:
        const["cov"] = (("time", "time2"), C0)
    dt = xr.DataTree.from_dict({
        "/": xr.Dataset(attrs=attrs), "/posterior": post,
        "/observed_data": xr.Dataset({"yi": ("time", y)}, coords={"time": tl}),
        "/constant_data": xr.Dataset(const, coords={"time": tl, "time2": tl})})
    reports = [Report("mu"), Report("sigma_time")]
    if rho_post is not None:
        reports.append(Report("rho"))
    reports += [Report("log_or", (("time", v_),), f"logOR[{v_}]", time=v_) for v_ in tl]
    reports += [Report("log_or_new", (("time", v_),), f"logOR_new[{v_}]", time=v_) for v_ in tl]
    priors = {"mu": mu_p.describe(), "sigma_time": sig_p.describe(),
              "tau_new": tau_p.describe()}
    if rho_prior is not None:
        priors["rho"] = rho_prior.describe()
    res = ExactSurvivalResult(
        model="survival-published", datatree=dt, summary=summ,
        diagnostics=ExactDiagnostics(nodes=q.n_nodes, step=float(blocks[0].grid.h),
                                     n_draws=int(n_draws),
                                     rho_nodes=0 if rho_prior is None else int(n_rho)),
        settings={"engine": "exact", "n_draws": int(n_draws), "seed": int(seed)},
        compile_seconds=0.0, sampling_seconds=seconds, priors=priors,
        reports=tuple(reports), measure="OR", scale="logOR", k=n, analysis=analysis,
        outcome=outcome,
        notes=published_notes(rho_val, correlation, structure, or_means, bias, rho_prior),
        extra={"times": tl, "rho": rho_val, "rho_prior": rho_prior, "or_means": or_means,
               "correlation": correlation, "structure": structure, "bias": bias,
               "inputs": {"times": list(times), "or": list(map(float, or_)),
                          "ci_low": list(map(float, ci_low)),
                          "ci_high": list(map(float, ci_high)), "ci_level": ci_level,
                          "time_unit": time_unit}},
        _q=q)
    res.extra["survival_table"] = q.table(control_survival, threshold)
    return res
