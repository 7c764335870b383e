"""A posterior of one effect as a normal mixture or as draws: the input of derived quantities.

Exact engines (quadrature over a scale parameter) give every marginal as a finite normal
mixture ``sum_k W_k N(M_k, S_k²)``; MCMC gives draws. :class:`EffectDistribution` holds either,
with the same methods (``cdf``, ``quantile``, ``sample``, ``prob``), so absolute effects
(:mod:`bayesmeta.absolute`) and new-trial quantities (:mod:`bayesmeta.newtrial`) are written
once. Draws are the mixture with ``S = 0`` and equal weights: the empirical distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from bayesmeta.exceptions import SpecError

__all__ = ["EffectDistribution"]


def _as1d(x, name):
    a = np.atleast_1d(np.asarray(x, dtype=float)).ravel()
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise SpecError(f"{name} must be a non-empty array of finite numbers")
    return a


@dataclass(frozen=True, eq=False)
class EffectDistribution:
    """``sum_k W_k N(M_k, S_k²)`` (``S_k = 0``: a point mass; draws are equal-weight points).

    Build with :meth:`from_mixture` (exact engines) or :meth:`from_draws` (MCMC, i.i.d.
    draws). ``exact`` is True for a mixture with every ``S_k > 0``: CDF-based quantities are
    then computed by quadrature rather than Monte Carlo.
    """

    M: np.ndarray
    S: np.ndarray
    W: np.ndarray
    exact: bool
    label: str = ""

    @classmethod
    def from_mixture(cls, M, S, W, label: str = "") -> "EffectDistribution":
        M, S, W = _as1d(M, "M"), _as1d(S, "S"), _as1d(W, "W")
        if not (M.size == S.size == W.size):
            raise SpecError("mixture means, SDs and weights must have the same length")
        if np.any(S < 0) or np.any(W < 0) or W.sum() <= 0:
            raise SpecError("mixture SDs and weights must be >= 0 (weights not all 0)")
        keep = W > 0
        return cls(M[keep], S[keep], W[keep] / W[keep].sum(), bool(np.all(S[keep] > 0)), label)

    @classmethod
    def from_draws(cls, draws, label: str = "") -> "EffectDistribution":
        d = _as1d(draws, "draws")
        return cls(d, np.zeros_like(d), np.full(d.size, 1.0 / d.size), False, label)

    @property
    def is_draws(self) -> bool:
        return not self.exact

    def cdf(self, x) -> np.ndarray:
        """P(X <= x), vectorised over ``x`` (any shape)."""
        x = np.asarray(x, dtype=float)
        flat = x.reshape(-1)
        if self.exact:
            out = np.empty(flat.size)
            for i in range(0, flat.size, 256):   # chunks keep the (chunk, K) array small
                z = (flat[i:i + 256, None] - self.M[None, :]) / self.S[None, :]
                out[i:i + 256] = special.ndtr(z) @ self.W
            return out.reshape(x.shape)
        srt = np.sort(self.M)
        return (np.searchsorted(srt, flat, side="right") / srt.size).reshape(x.shape)

    def cdf_pdf(self, x) -> tuple[np.ndarray, np.ndarray]:
        """P(X <= x) and the density at x (an exact mixture), vectorised over ``x``."""
        if not self.exact:
            raise ValueError("cdf_pdf needs a mixture with every S_k > 0")
        x = np.asarray(x, dtype=float)
        flat = x.reshape(-1)
        F, f = np.empty(flat.size), np.empty(flat.size)
        wd = self.W / (self.S * math.sqrt(2.0 * math.pi))
        step = max(1, 1_000_000 // self.M.size)
        for i in range(0, flat.size, step):
            z = (flat[i:i + step, None] - self.M[None, :]) / self.S[None, :]
            F[i:i + step] = special.ndtr(z) @ self.W
            # exp below e^-700 is nil here and slow (subnormal results): clamp the exponent
            f[i:i + step] = np.exp(np.maximum(-0.5 * z * z, -700.0)) @ wd
        return F.reshape(x.shape), f.reshape(x.shape)

    def prob(self, *, below: float | None = None, above: float | None = None) -> float:
        """P(X < below) or P(X > above) (exact for a mixture, share of draws otherwise)."""
        if (below is None) == (above is None):
            raise ValueError("give exactly one of below= or above=")
        if self.exact:
            c = float(self.cdf(below if below is not None else above))
            return c if below is not None else 1.0 - c
        if below is not None:
            return float(np.mean(self.M < below))
        return float(np.mean(self.M > above))

    def mean(self) -> float:
        return float(self.W @ self.M)

    def sd(self) -> float:
        m = self.mean()
        return math.sqrt(max(float(self.W @ (self.S ** 2 + self.M ** 2)) - m * m, 0.0))

    def quantile(self, q) -> np.ndarray:
        """Quantiles (exact mixture: bisection on the CDF to 1e-12; draws: ``np.quantile``)."""
        q = np.atleast_1d(np.asarray(q, dtype=float))
        if not self.exact:
            return np.quantile(self.M, q)
        zq = special.ndtri(np.clip(q, 1e-300, 1 - 1e-16))
        lo = np.min(self.M[None, :] + self.S[None, :] * zq[:, None], axis=1)
        hi = np.max(self.M[None, :] + self.S[None, :] * zq[:, None], axis=1)
        for _ in range(200):   # the q-quantile lies between the components' q-quantiles
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid) < q
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
            if np.all(hi - lo <= 1e-12 * (1.0 + np.abs(mid))):
                break
        return 0.5 * (lo + hi)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` i.i.d. draws (a draws-based distribution is resampled with replacement)."""
        k = rng.choice(self.M.size, size=int(n), p=self.W)
        return self.M[k] + self.S[k] * rng.standard_normal(int(n))

    def shifted(self, delta: float, extra_sd: float = 0.0) -> "EffectDistribution":
        """``X + delta + extra_sd * Z`` with independent Z ~ N(0, 1) (draws: exact only when
        ``extra_sd = 0``; otherwise the result is a mixture of ``N(draw + delta, extra_sd²)``)."""
        S = np.sqrt(self.S ** 2 + float(extra_sd) ** 2)
        return EffectDistribution(self.M + float(delta), S, self.W,
                                  bool(np.all(S > 0)), self.label)

    def negated(self) -> "EffectDistribution":
        return EffectDistribution(-self.M, self.S, self.W, self.exact, self.label)


def compress(M, S, W, *extra, m_bins: int = 600, s_bins: int = 60):
    """A normal mixture with fewer components and the same moments per cell: components are
    grouped on a grid of their means (``m_bins`` over the weighted 1e-12..1-1e-12 range, the
    tails in the end cells) and of log SDs (``s_bins``), and each cell becomes one component
    with the cell's total weight, mean and variance (within-cell spread of the means added to
    the variance). The mixture's mean and variance are unchanged; its CDF moves by far less
    than a cell's width relative to the component SDs (a cell spans 1/600 of the mixture's
    range of means). ``extra`` arrays (e.g. a second SD per component) are averaged by weight
    within a cell. Returns ``(M, S, W, *extra)``; mixtures of at most ``m_bins`` components
    are returned unchanged."""
    M, S, W = (np.asarray(x, dtype=float) for x in (M, S, W))
    extra = [np.asarray(x, dtype=float) for x in extra]
    if M.size <= m_bins:
        return (M, S, W, *extra)
    order = np.argsort(M)
    cw = np.cumsum(W[order]) / W.sum()
    lo = M[order][min(np.searchsorted(cw, 1e-12), M.size - 1)]
    hi = M[order][min(np.searchsorted(cw, 1 - 1e-12), M.size - 1)]
    width = max(hi - lo, 1e-300)
    mi = np.clip(((M - lo) / width * m_bins).astype(np.int64), 0, m_bins - 1)
    ls = np.log(np.maximum(S, 1e-300))
    sl, sh = ls.min(), ls.max()
    si = (np.zeros_like(mi) if sh <= sl else
          np.clip(((ls - sl) / (sh - sl) * s_bins).astype(np.int64), 0, s_bins - 1))
    for x in extra:  # extra SDs get their own log grid
        lx = np.log(np.maximum(x, 1e-300))
        if lx.max() > lx.min():
            si = si * s_bins + np.clip(((lx - lx.min()) / (lx.max() - lx.min()) * s_bins)
                                       .astype(np.int64), 0, s_bins - 1)
    cell = mi * (si.max() + 1) + si
    _, inv = np.unique(cell, return_inverse=True)
    w = np.bincount(inv, weights=W)
    m = np.bincount(inv, weights=W * M) / w
    v = np.bincount(inv, weights=W * (S ** 2 + M ** 2)) / w - m ** 2
    out_extra = [np.bincount(inv, weights=W * x) / w for x in extra]
    return (m, np.sqrt(np.maximum(v, 0.0)), w / w.sum(), *out_extra)
