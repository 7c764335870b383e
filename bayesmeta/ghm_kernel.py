"""Gaussian algebra of the GHM given its hyperparameters, vectorised over many of them.

With ``beta ~ N(b0, P0^-1)`` (``P0`` diagonal; zero entries = flat), ``gamma ~ N(0, G)`` and
``y | beta, gamma ~ N(X beta + Z gamma, R)`` (:mod:`bayesmeta.ghm`), let
``Sigma = Z G Z' + R``. Given theta:

* ``A = X' Sigma^-1 X + P0``, ``beta_hat = A^-1 (X' Sigma^-1 y + P0 b0)``;
* ``log p(y | theta) = -1/2 log|Sigma| - 1/2 log|A| + 1/2 log|P0|_+ - 1/2 Q
  - (n - n_flat)/2 log 2 pi`` with ``Q = r' Sigma^-1 r + (beta_hat - b0)' P0 (beta_hat - b0)``,
  ``r = y - X beta_hat`` (the marginal density of y with beta integrated out; for flat components
  the restricted likelihood, whose dropped constant cancels in every posterior quantity);
* an estimand ``eta = L_b beta + L_g gamma`` has ``eta | theta, y ~ N(M, C)`` with
  ``K = L_g G Z'``, ``M = L_b beta_hat + K Sigma^-1 r``,
  ``E = L_b - K Sigma^-1 X`` and ``C = L_g G L_g' - K Sigma^-1 K' + E A^-1 E'``
  (Henderson's prediction variance: ``gamma | beta, y`` is the BLUP with covariance
  ``G - G Z' Sigma^-1 Z G``, then ``beta`` is integrated over ``N(beta_hat, A^-1)``).

Predictive estimands add the variance of new independent terms (a new study's ``u`` and ``e``).
"""

from __future__ import annotations

import math

import numpy as np

from bayesmeta.blas import single_threaded
from bayesmeta.ghm import Estimand, GHMDesign

_LOG2PI = math.log(2.0 * math.pi)
#: Scale hyperparameters above SCALE_MAX x the largest standard error are outside the domain:
#: there Cov(y) is too ill-conditioned for double precision (variance ratio 1e12) and its
#: likelihood cannot be evaluated; such nodes get log-likelihood -inf (weight 0). The posterior
#: mass there is negligible for any proper prior: the likelihood falls like (sigma / se)^-m
#: with m >= 1 the number of independent contrasts the component enters, times the prior's
#: tail mass beyond 1e6 x se.
SCALE_MAX = 1e6
SCALES = ("sigma_subgroup", "sigma_time", "sigma_study", "tau")
#: Nodes whose bound on the condition number of Sigma is at most COND_DIRECT are solved by LU
#: without a residual check: the residual of that solve relative to |Sigma| |W| is at most
#: ~n^2.5 eps cond (1e-8 for n = 18), far below the 1e-7 at which a node is dropped (the
#: measured ratio of the two is ~1e-17 x cond).
COND_DIRECT = 1e4


class Kernel:
    """Per-node Gaussian quantities of a design (see the module docstring)."""

    def __init__(self, design: GHMDesign, estimands: list[Estimand] | None = None):
        self.d = design
        self.X = design.X()
        self.Z = design.Z()
        self.b0, self.p0 = design.prior_mean()
        self.n_flat = int(np.sum(self.p0 == 0))
        self.logdet_p0 = float(np.sum(np.log(self.p0[self.p0 > 0])))
        self.set_estimands(design.estimands if estimands is None else estimands)

    def set_estimands(self, estimands: list[Estimand]) -> None:
        p = self.d.p
        self.estimands = list(estimands)
        L = np.array([e.L for e in self.estimands]).reshape(len(self.estimands), -1)
        self.Lb, self.Lg = L[:, :p], L[:, p:]

    def _extra(self, th: dict, N: int) -> np.ndarray:
        out = np.zeros((N, len(self.estimands)))
        for i, e in enumerate(self.estimands):
            for name, coef in e.extra:
                out[:, i] += coef if name == "const" else coef * th[name] ** 2
        return out

    def _lmin_v(self, th: dict, N: int) -> np.ndarray:
        """(N,) smallest eigenvalue of the sampling covariance V(r) at each node (-inf when r
        takes more than a few distinct values: every node is then checked by residual)."""
        r = np.asarray(th["r"], dtype=float) if "r" in th else np.zeros(N)
        u, inv = np.unique(r, return_inverse=True)
        if u.size > 8:
            return np.full(N, -np.inf)
        cache = self.__dict__.setdefault("_lmin_cache", {})
        lm = np.empty(u.size)
        for k, rv in enumerate(u):
            if rv not in cache:
                V = self.d.V({"r": np.array([rv])})[0]
                cache[rv] = float(np.linalg.eigvalsh(0.5 * (V + V.T))[0])
            lm[k] = cache[rv]
        return lm[inv.ravel()]

    def _solve(self, th: dict, extra_rhs=None):
        """Sigma, its log-determinant, Sigma^-1 [y, X, extra] (N, n, .) and a finite mask."""
        d = self.d
        G = None
        S = d.Sigma(th)
        N, n = S.shape[0], S.shape[1]
        rhs = np.concatenate([d.y[:, None], self.X], axis=1)
        k0 = rhs.shape[1]
        rhs = np.broadcast_to(rhs, (N,) + rhs.shape)
        if extra_rhs is not None:
            rhs = np.concatenate([rhs, extra_rhs], axis=2)
        # Sigma is positive definite by construction (R contains the sampling variances): a
        # non-positive determinant marks a numerically broken node
        with np.errstate(all="ignore"):
            sign, logdet = np.linalg.slogdet(S)
            ok = (sign > 0) & np.isfinite(logdet)
            # Sigma - V(r) is positive semi-definite (every other term is a covariance), so
            # cond(Sigma) <= trace(Sigma) / lambda_min(V(r)). Where that bound is below
            # COND_DIRECT an LU solve is accurate to ~n eps cond and needs no check; the
            # other nodes are solved through the inverse and checked by residual below
            easy = ok & (np.trace(S, axis1=1, axis2=2) <= COND_DIRECT * self._lmin_v(th, N))
            Sg = S if ok.all() else np.where(ok[:, None, None], S, np.eye(n))
            # (one batched call over every node is cheaper than selecting the easy ones)
            W = np.linalg.solve(Sg, rhs) if easy.any() else np.empty(rhs.shape)
            if not easy.all():
                hard = np.flatnonzero(~easy)
                Sh = Sg[hard]
                Wh = np.linalg.inv(Sh) @ rhs[hard]
                # a node whose Sigma is too ill-conditioned for double precision (a variance
                # component many orders of magnitude above the sampling variances, reached
                # only in the far tails of the proposal) gives a wrong solve, and a wrong
                # quadratic form could give it a spuriously high likelihood: such nodes are
                # dropped (weight 0)
                r0 = rhs[hard, :, :k0]
                res = np.max(np.abs(Sh @ Wh[:, :, :k0] - r0), axis=(1, 2))
                scale = np.max(np.abs(Sh), axis=(1, 2)) * np.max(np.abs(Wh[:, :, :k0]),
                                                                 axis=(1, 2)) + 1e-300
                ok[hard] &= np.isfinite(res) & (res <= 1e-7 * scale)
                W[hard] = Wh
        xmax = SCALE_MAX * float(np.max(d.se))
        for name in SCALES:
            if name in th:
                ok &= np.asarray(th[name]) <= xmax
        logdet = np.where(ok, logdet, 0.0)
        return G, logdet, W, ok

    @single_threaded
    def loglik(self, th: dict):
        """(log p(y | theta) (N,), beta_hat (N, p), A (N, p, p)); -inf where Sigma is not
        positive definite."""
        _, logdet, W, ok = self._solve(th)
        return self._ll(logdet, W, ok)

    def _ll(self, logdet, W, ok):
        d = self.d
        p = d.p
        # broken nodes (ok False) get neutral values; their log-likelihood is -inf below
        W = np.where(ok[:, None, None] & np.isfinite(W), W, 0.0)
        Siy, SiX = W[:, :, 0], W[:, :, 1:1 + p]
        A = self.X.T @ SiX + np.diag(self.p0)[None]
        A = np.where(ok[:, None, None], A, np.eye(p)[None])
        rhs = Siy @ self.X + self.p0 * self.b0
        bhat = np.linalg.solve(A, rhs[..., None])[..., 0]
        Sir = Siy - np.einsum("kij,kj->ki", SiX, bhat)
        r = d.y[None, :] - bhat @ self.X.T
        Q = np.sum(r * Sir, axis=1) + np.sum(self.p0 * (bhat - self.b0) ** 2, axis=1)
        _, ldA = np.linalg.slogdet(A)
        ll = (-0.5 * logdet - 0.5 * ldA + 0.5 * self.logdet_p0 - 0.5 * Q
              - 0.5 * (d.n - self.n_flat) * _LOG2PI)
        ll = np.where(ok & np.isfinite(ll), ll, -np.inf)
        return ll, bhat, A

    @single_threaded
    def full(self, th: dict):
        """(M (N, q), C (N, q, q), log p(y | theta) (N,)) of the estimands."""
        N = next(iter(th.values())).shape[0] if th else 1
        G = self.d.G(th)
        if G.shape[0] != N:
            G = np.broadcast_to(G, (N,) + G.shape[1:])
        K = self.Lg[None] @ G @ self.Z.T[None]                       # (N, q, n)
        _, logdet, W, ok = self._solve(th, np.swapaxes(K, 1, 2))
        ll, bhat, A = self._ll(logdet, W, ok)
        W = np.where(ok[:, None, None] & np.isfinite(W), W, 0.0)
        A = np.where(ok[:, None, None], A, np.eye(A.shape[1])[None])
        p = self.d.p
        SiX, SiK = W[:, :, 1:1 + p], W[:, :, 1 + p:]
        r = self.d.y[None, :] - bhat @ self.X.T
        M = bhat @ self.Lb.T + np.einsum("kiq,ki->kq", SiK, r)
        E = self.Lb[None] - np.swapaxes(SiK, 1, 2) @ self.X[None]    # (N, q, p)
        Ai = np.linalg.inv(A)
        C = (self.Lg[None] @ G @ self.Lg.T[None] - K @ SiK + E @ Ai @ np.swapaxes(E, 1, 2))
        C = 0.5 * (C + np.swapaxes(C, 1, 2))
        q = C.shape[1]
        idx = np.arange(q)
        # broken nodes (weight 0 in every integral): finite placeholders, never NaN
        M = np.where(ok[:, None] & np.all(np.isfinite(M), axis=1)[:, None], M, 0.0)
        C = np.where(ok[:, None, None], C, np.eye(q)[None])
        C[:, idx, idx] += self._extra(th, N)
        return M, C, ll

    def full_diag(self, th: dict, chunk: int = 512):
        """(M, diag C, ll) in chunks of nodes (memory stays O(chunk q²))."""
        N = next(iter(th.values())).shape[0] if th else 1
        Ms, Vs, lls = [], [], []
        for a in range(0, N, chunk):
            sub = {k: v[a:a + chunk] for k, v in th.items()}
            M, C, ll = self.full(sub)
            Ms.append(M)
            Vs.append(np.diagonal(C, axis1=1, axis2=2).copy())
            lls.append(ll)
        return np.concatenate(Ms), np.concatenate(Vs), np.concatenate(lls)
