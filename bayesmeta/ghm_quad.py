"""Integration over the GHM hyperparameters: nodes and weights of p(theta | y).

The free hyperparameters are mapped to the real line (:class:`bayesmeta.ghm.Hyper`: log for
scales, logit for correlations) and the log posterior ``log p(y | theta) + log p(theta) +
log |d theta / d z|`` is integrated in those coordinates ``z``:

* **d <= 2: tensor-product double-exponential trapezoid rule.** Each axis is centred at the
  posterior mode and scaled by its Laplace standard deviation, then ``z = c + w sinh(t)``; the
  integrand decays double-exponentially in ``t`` so the trapezoid rule converges exponentially
  (Takahasi & Mori 1974; the rule of :mod:`bayesmeta.exact`, here on a product grid). The step
  halves until the posterior moments of ``z`` and of the mean parameters change by less than
  ``tol`` (relative, floor 1) between two steps; the change at the last step is the accuracy
  diagnostic. Marginal CDFs of a hyperparameter use the sinc indefinite integral of the
  marginal weights (Stenger 1993), which converges at the same rate.
* **d >= 3: quasi-Monte Carlo importance sampling.** A multivariate t proposal (5 degrees of
  freedom) from the Laplace approximation, adapted twice to the weighted moments of a pilot
  pass, used as a defensive mixture with a 3x wider copy (1/5 of the points); scrambled Sobol
  points with a fixed seed (deterministic); weights Pareto-smoothed
  (PSIS, Vehtari et al. 2024) and every reported quantity Rao-Blackwellised (a Gaussian mixture
  over the nodes, never a histogram of draws). Diagnostics: Pareto k-hat of the weights,
  effective sample size, and the estimated Monte Carlo error of each mean in posterior SDs
  (the i.i.d. formula for self-normalised importance sampling, an upper estimate for QMC).
  A fit is flagged inaccurate when k-hat > 0.7 or an error estimate exceeds ``is_tol``.

References
----------
Takahasi H, Mori M (1974). Double exponential formulas for numerical integration. Publ. RIMS
9:721-741. Stenger F (1993). Numerical Methods Based on Sinc and Analytic Functions. Springer.
Vehtari A, Simpson D, Gelman A, Yao Y, Gabry J (2024). Pareto smoothed importance sampling.
JMLR 25(72):1-58. Owen AB (2013). Monte Carlo theory, methods and examples, ch. 9 and 17.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, special, stats

from bayesmeta.exceptions import EstimationError
from bayesmeta.ghm import GHMDesign
from bayesmeta.ghm_kernel import SCALE_MAX, Kernel

__all__ = ["Nodes", "ISampler", "integrate", "TOL", "IS_TOL"]

TOL = 1e-10

IS_TOL = 0.02           # Monte Carlo error of a mean, in posterior SDs, above which we flag
_ZSPAN = 40.0           # |z - mode| covered by the initial trapezoid grid
_LCUT = 32.0            # grid boxes shrink to the nodes with log weight above max - _LCUT
_WMIN = 1e-16           # final nodes with a smaller normalised weight are dropped


@dataclass
class Nodes:
    """Posterior nodes of the hyperparameters: ``z`` (N, d) unconstrained, ``x`` (N, d)
    constrained, ``weight`` (N,) normalised; ``kind`` is ``"none"`` (no free
    hyperparameter), ``"tensor"`` or ``"qmc-is"``. For tensor grids, ``t`` (N, d) grid
    coordinates, ``h`` the step, ``centre``/``width`` of each axis map."""

    z: np.ndarray
    x: np.ndarray
    weight: np.ndarray
    kind: str
    log_evidence: float
    diagnostics: dict = field(default_factory=dict)
    t: np.ndarray | None = None
    h: float = 0.0
    centre: np.ndarray | None = None
    width: np.ndarray | None = None
    mode: np.ndarray | None = None
    cov: np.ndarray | None = None
    sampler: object = field(default=None, repr=False)


class _Target:
    """log posterior of the free hyperparameters in unconstrained coordinates."""

    def __init__(self, design: GHMDesign, kernel: Kernel):
        self.d, self.k = design, kernel
        self.h = design.hypers
        # largest scale hyperparameter evaluated (see bayesmeta.ghm_kernel.SCALE_MAX)
        self.xmax = SCALE_MAX * float(np.max(design.se))

    def x_of_z(self, Z):
        Z = np.atleast_2d(Z)
        return np.column_stack([h.x_of_z(Z[:, i]) for i, h in enumerate(self.h)]) \
            if self.h else np.zeros((Z.shape[0], 0))

    def __call__(self, Z, with_aux=False):
        Z = np.atleast_2d(np.asarray(Z, dtype=float))
        X = self.x_of_z(Z)
        lp = np.zeros(Z.shape[0])
        for i, h in enumerate(self.h):
            with np.errstate(divide="ignore", invalid="ignore"):
                lp = lp + h.logprior(X[:, i]) + h.logjac(Z[:, i])
        good = np.isfinite(lp)
        for i, h in enumerate(self.h):
            if h.kind == "scale":
                good &= X[:, i] <= self.xmax
        ll = np.full(Z.shape[0], -np.inf)
        bhat = np.zeros((Z.shape[0], self.d.p))
        if good.any():
            th = self.d.theta(X[good])
            with np.errstate(all="ignore"):
                ll[good], bhat[good], _ = self.k.loglik(th)
        out = np.where(good, lp + ll, -np.inf)
        out = np.where(np.isfinite(out), out, -np.inf)
        return (out, X, bhat) if with_aux else out


def _start(target: _Target) -> np.ndarray:
    """Best of a few starting points: prior quantiles 0.25/0.5/0.75 of each hyperparameter."""
    hs = target.h
    cands = []
    for q in (0.5, 0.25, 0.75, 0.1):
        x = np.array([float(h.prior_ppf(q)) for h in hs])
        for i, h in enumerate(hs):
            lo, hi = h.bounds
            x[i] = min(max(x[i], lo + 1e-6 * (1 + abs(lo))), hi - 1e-6 if math.isfinite(hi)
                       else x[i])
        cands.append(np.array([h.z_of_x(x[i]) for i, h in enumerate(hs)], dtype=float))
    C = np.array(cands)
    C = np.where(np.isfinite(C), C, 0.0)
    v = target(C)
    return C[int(np.argmax(v))]


def _grad_hess(target, z, eps=1e-4):
    """Central-difference gradient and Hessian in one batched evaluation."""
    d = z.size
    E = np.eye(d) * eps
    pts = [z]
    for i in range(d):
        pts += [z + E[i], z - E[i]]
    for i in range(d):
        for j in range(i + 1, d):
            pts += [z + E[i] + E[j], z + E[i] - E[j], z - E[i] + E[j], z - E[i] - E[j]]
    f = target(np.array(pts))
    f0 = f[0]
    g = np.zeros(d)
    H = np.zeros((d, d))
    for i in range(d):
        fp, fm = f[1 + 2 * i], f[2 + 2 * i]
        g[i] = (fp - fm) / (2 * eps)
        H[i, i] = (fp - 2 * f0 + fm) / eps ** 2
    k = 1 + 2 * d
    for i in range(d):
        for j in range(i + 1, d):
            a, b, c, e = f[k:k + 4]
            H[i, j] = H[j, i] = (a - b - c + e) / (4 * eps ** 2)
            k += 4
    return g, H


def _mode(target: _Target):
    """Posterior mode in z and a positive-definite covariance (inverse negative Hessian,
    eigenvalues clipped to [1e-4, 25])."""
    z0 = _start(target)
    d = z0.size

    def fg(z):
        f = target(z[None])[0]
        if not np.isfinite(f):
            return 1e300, np.zeros(d)
        g, _ = _grad_hess_grad(target, z)
        return -f, -g

    res = optimize.minimize(fg, z0, jac=True, method="BFGS",
                            options=dict(gtol=1e-6, maxiter=500))
    z = res.x if np.isfinite(res.fun) else z0
    _, H = _grad_hess(target, z)
    ev, U = np.linalg.eigh(0.5 * (-H + -H.T))
    ev = np.where(np.isfinite(ev), ev, 1.0)
    cov = U @ np.diag(1.0 / np.clip(ev, 1.0 / 25.0, 1e4)) @ U.T
    return z, cov


def _grad_hess_grad(target, z, eps=1e-5):
    d = z.size
    E = np.eye(d) * eps
    pts = np.concatenate([z[None] + E, z[None] - E])
    f = target(pts)
    return (f[:d] - f[d:]) / (2 * eps), None


# --------------------------------------------------------------------------------------------
# tensor-product sinh trapezoid (d <= 2)
# --------------------------------------------------------------------------------------------
def _tensor(target: _Target, mode, cov, tol, hmin, scale_b):
    d = mode.size
    c = mode.copy()
    w = np.sqrt(np.clip(np.diag(cov), 1e-6, 100.0))
    tlim = np.arcsinh(_ZSPAN / w)
    box = np.column_stack([-tlim, tlim])

    def grid(h, box):
        """Grid points T = k h (k integer, exact in binary) and the integer ranges of k."""
        ks = [np.arange(math.ceil(lo / h - 1e-9), math.floor(hi / h + 1e-9) + 1)
              for lo, hi in box]
        K = np.stack(np.meshgrid(*ks, indexing="ij"), -1).reshape(-1, d)
        return K * h, K, ks

    def evaluate(T):
        Z = c + w * np.sinh(T)
        lp, X, bhat = target(Z, with_aux=True)
        lg = lp + np.sum(np.log(w) + np.log(np.cosh(T)), axis=1)
        return Z, X, bhat, np.where(np.isfinite(lg), lg, -np.inf)

    def evaluate_level(T, K, last):
        """:func:`evaluate` on a grid of step h, taking the points of the previous grid (step
        2h: the points whose k are all even) from ``last`` instead of evaluating them again."""
        if last is None:
            return evaluate(T)
        ks0, vals = last
        start = np.array([a[0] for a in ks0])
        shape = tuple(a.size for a in ks0)
        K2 = K // 2
        old = np.all(K % 2 == 0, axis=1) & np.all((K2 >= start) & (K2 < start + shape), axis=1)
        new = evaluate(T[~old])
        idx = np.ravel_multi_index(tuple((K2[old] - start).T), shape)
        out = []
        for a, b in zip(vals, new):
            v = np.empty((T.shape[0],) + b.shape[1:], dtype=b.dtype)
            v[~old] = b
            v[old] = a[idx]
            out.append(v)
        return tuple(out)

    def moments(Z, bhat, wt):
        m = [wt @ Z, wt @ Z ** 2, wt @ bhat / scale_b, wt @ bhat ** 2 / scale_b ** 2]
        return np.concatenate([np.ravel(v) for v in m])

    h = 0.5
    prev, change, prev_change, err = None, math.inf, math.inf, math.inf
    trace = []
    last = None
    while True:
        T, K, ks = grid(h, box)
        Z, X, bhat, lg = evaluate_level(T, K, last)
        last = (ks, (Z, X, bhat, lg))
        lmax = lg.max()
        if not np.isfinite(lmax):
            raise EstimationError("the hyperparameter posterior is zero on the whole grid")
        g = np.exp(lg - lmax)
        wt = g / g.sum()
        mom = moments(Z, bhat, wt)
        trace.append((h, int(T.shape[0]), None if prev is None else float(np.max(np.abs(mom - prev) / np.maximum(np.abs(mom), 1.0)))))
        if prev is not None:
            change = float(np.max(np.abs(mom - prev) / np.maximum(np.abs(mom), 1.0)))
            # exponential convergence: once the changes shrink fast, the error of the finer
            # rule is about change² / previous change (the error of step h/2 is about the
            # square of that of step h)
            err = (change ** 2 / prev_change
                   if math.isfinite(prev_change) and change < 0.01 * prev_change else change)
            if err <= tol or h <= hmin:
                break
            prev_change = change
        prev = mom
        keep = lg > lmax - _LCUT
        lo = T[keep].min(0) - 2 * h
        hi = T[keep].max(0) + 2 * h
        box = np.column_stack([np.maximum(lo, -tlim), np.minimum(hi, tlim)])
        h /= 2.0
    keep = wt > _WMIN
    log_z = float(lmax + math.log(g.sum() * h ** d))
    wt = wt[keep] / wt[keep].sum()
    return Nodes(z=Z[keep], x=X[keep], weight=wt, kind="tensor", log_evidence=log_z,
                 diagnostics={"nodes": int(keep.sum()), "step": h, "max_change": change,
                              "error_estimate": err, "tol": tol,
                              "accurate": bool(err <= max(tol, 1e-6)),
                              "levels": trace},
                 t=T[keep], h=h, centre=c, width=w, mode=mode, cov=cov)


# --------------------------------------------------------------------------------------------
# QMC importance sampling (d >= 3)
# --------------------------------------------------------------------------------------------
_NU = 5.0
ADAPT_ROUNDS = 3
WIDE = 3.0


def _t_points(mean, cov, u):
    """Multivariate t points (5 df) from uniforms ``u`` (n, d + 1) and their log density."""
    d = mean.size
    u = np.clip(u, 1e-12, 1 - 1e-12)
    n = special.ndtri(u[:, :d])
    chi = stats.chi2.ppf(u[:, d], _NU)
    L = np.linalg.cholesky(cov)
    Z = mean + (n @ L.T) * np.sqrt(_NU / chi)[:, None]
    logq = stats.multivariate_t(loc=mean, shape=cov, df=_NU).logpdf(Z)
    return Z, np.atleast_1d(logq)


def _gpdfit(x):
    """Generalised Pareto fit to exceedances ``x`` (ascending, > 0): Zhang & Stephens (2009)
    posterior-mean estimate with the weakly informative prior on k of Vehtari et al. (2024)."""
    n = x.size
    m = 30 + int(math.sqrt(n))
    b = 1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))
    b = b / (3.0 * x[int(n / 4 + 0.5) - 1]) + 1.0 / x[-1]
    ks = np.mean(np.log1p(-b[:, None] * x[None, :]), axis=1)
    ll = n * (np.log(-b / ks) - ks - 1.0)
    w = 1.0 / np.sum(np.exp(ll[None, :] - ll[:, None]), axis=1)
    b_post = float(np.sum(b * w / w.sum()))
    k = float(np.mean(np.log1p(-b_post * x)))
    sigma = -k / b_post
    k = (n * k + 10.0 * 0.5) / (n + 10.0)
    return k, sigma


def _psis(lw):
    """Pareto-smoothed log weights (normalised to max 0) and the Pareto k-hat (Vehtari et al.
    2024): the largest M = min(S/5, 3 sqrt(S)) weights are replaced by the expected order
    statistics of a generalised Pareto fitted to them, truncated at the largest raw weight."""
    lw = np.asarray(lw, dtype=float) - np.max(lw)
    S = lw.size
    M = int(math.ceil(min(0.2 * S, 3.0 * math.sqrt(S))))
    o = np.argsort(lw)
    if M < 5 or S < 10:
        return lw, math.inf
    tail = o[-M:]
    cut = lw[o[-M - 1]]
    ex = np.exp(lw[tail]) - math.exp(cut)
    if not np.all(ex > 0) or ex[-1] <= ex[0]:
        return lw, 0.0
    k, sigma = _gpdfit(ex)
    p = (np.arange(M) + 0.5) / M
    q = sigma * np.expm1(-k * np.log1p(-p)) / k if abs(k) > 1e-12 else -sigma * np.log1p(-p)
    out = lw.copy()
    out[tail] = np.minimum(np.log(q + math.exp(cut)), 0.0)
    return out, float(k)


class ISampler:
    """Quasi-Monte Carlo importance sampling with a t proposal adapted once; :meth:`extend`
    doubles the point set with the next points of the same scrambled Sobol sequence (the union
    is again a Sobol set), reusing every evaluated point."""

    def __init__(self, target: _Target, mode, cov, m, seed):
        self.target, self.seed = target, int(seed)
        d = mode.size
        mean, cov = mode, cov * 1.5 ** 2
        # adaptation: twice, the proposal takes the (PSIS-weighted) mean and covariance of
        # the posterior estimated from the previous proposal's points
        for r in range(ADAPT_ROUNDS):
            u = stats.qmc.Sobol(d + 1, scramble=True, seed=seed + 100 * r).random_base2(m - 1)
            Z, lq = _t_points(mean, cov, u)
            lw = target(Z) - lq
            if not np.isfinite(lw).any():
                raise EstimationError("importance sampling: the posterior is zero at every "
                                      "point")
            lws, _ = _psis(np.where(np.isfinite(lw), lw, -1e300))
            wt = np.exp(lws - lws.max())
            wt /= wt.sum()
            mean = wt @ Z
            dz = Z - mean
            cov = (dz * wt[:, None]).T @ dz
            cov = 0.5 * (cov + cov.T) + 1e-8 * np.eye(d)
        self.mean, self.cov = mean, cov
        self.sobol = stats.qmc.Sobol(d + 1, scramble=True, seed=seed + 1)
        self.sobol_wide = stats.qmc.Sobol(d + 1, scramble=True, seed=seed + 2)
        self.Z = np.zeros((0, d))
        self.X = np.zeros((0, d))
        self.lw = np.zeros(0)
        self.n_main = 0
        self._add(2 ** m)

    def _add(self, n):
        # defensive mixture (Hesterberg 1995; balance heuristic of multiple importance
        # sampling): n points from the adapted proposal (slightly widened) and n/4 from a
        # WIDE-times wider one (both Sobol sets of power-of-2 size), every point weighted by
        # the mixture density, so that no weight can exceed 5 p / q_wide where the adapted
        # proposal misses a tail
        n2 = max(n // 4, 1)
        c1, c2 = self.cov * 1.2 ** 2, self.cov * WIDE ** 2
        Z1, _ = _t_points(self.mean, c1, self.sobol.random(n))
        Z2, _ = _t_points(self.mean, c2, self.sobol_wide.random(n2))
        Z = np.concatenate([Z1, Z2])
        f = n / (n + n2)
        lq = np.logaddexp(math.log(f) + stats.multivariate_t(self.mean, c1, df=_NU).logpdf(Z),
                          math.log(1 - f) + stats.multivariate_t(self.mean, c2,
                                                                 df=_NU).logpdf(Z))
        lp, X, _ = self.target(Z, with_aux=True)
        lw = np.where(np.isfinite(lp), lp - lq, -np.inf)
        self.n_main += n
        self.Z = np.concatenate([self.Z, Z])
        self.X = np.concatenate([self.X, X])
        self.lw = np.concatenate([self.lw, lw])

    def extend(self) -> int:
        """Double the points; returns the index of the first new one."""
        k = self.lw.size
        self._add(self.n_main)
        return k

    def nodes(self) -> Nodes:
        lw = self.lw
        fin = np.isfinite(lw)
        lmax = lw[fin].max()
        log_z = float(lmax + math.log(np.mean(np.where(fin, np.exp(lw - lmax), 0.0))))
        lws, khat = _psis(np.where(fin, lw, -1e300))
        wt = np.where(fin, np.exp(lws - lws.max()), 0.0)
        wt /= wt.sum()
        ess = float(1.0 / np.sum(wt ** 2))
        return Nodes(z=self.Z, x=self.X, weight=wt, kind="qmc-is", log_evidence=log_z,
                     diagnostics={"nodes": int(wt.size), "khat": khat, "ess": ess,
                                  "seed": self.seed, "accurate": bool(khat <= 0.7)},
                     mode=self.mean, cov=self.cov, sampler=self)


def integrate(design: GHMDesign, kernel: Kernel, *, tol: float = TOL, tensor_max_dim: int = 2,
              qmc_log2: int = 12, seed: int = 20240611) -> Nodes:
    """Posterior nodes and weights of the free hyperparameters (module docstring)."""
    target = _Target(design, kernel)
    d = len(design.hypers)
    scale_b = float(np.sqrt(np.median(design.se ** 2)))
    if d == 0:
        lp, X, bhat = target(np.zeros((1, 0)), with_aux=True)
        return Nodes(z=np.zeros((1, 0)), x=np.zeros((1, 0)), weight=np.ones(1), kind="none",
                     log_evidence=float(lp[0]), diagnostics={"nodes": 1, "accurate": True})
    mode, cov = _mode(target)
    if d <= tensor_max_dim:
        hmin = 1.0 / 256 if d == 1 else (1.0 / 32 if d == 2 else 1.0 / 8)
        return _tensor(target, mode, cov, tol, hmin, scale_b)
    return ISampler(target, mode, cov, qmc_log2, seed).nodes()
