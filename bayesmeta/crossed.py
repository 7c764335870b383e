"""A normal mixture crossed with a between-trial SD grid, without forming the crossed components.

``theta ~ sum_k W_k N(M_k, S_k²)`` (an exact engine's posterior of a pooled effect) and
``tau ~ sum_j w_j delta(T_j)`` (the quadrature grid of a tau prior) give a new trial's true
effect ``theta + tau z`` and its estimate ``theta + tau z + se e`` (z, e ~ N(0, 1)): the mixture
``sum_kj W_k w_j N(M_k, S_k² + T_j² + se²)`` of K x J components (4 000 x 125 in the bundled
survival model). Two things are computed here from the K + J numbers instead:

* :class:`CrossedMixture` - CDF, density and quantiles:
  ``P(X <= x) = sum_k W_k H(x - M_k, sqrt(S_k² + se²))`` with
  ``H(d, s) = sum_j w_j Phi(d / sqrt(s² + T_j²))``, one smooth function of two variables per
  tau grid. It is tabulated on ``rho = asinh(|d| / s)`` and ``lambda = log s`` (step 0.05 in
  both, H(-d) = 1 - H(d)) and read by 6 x 6-point Lagrange interpolation, which is exact for
  polynomials of degree 5 in each variable: CDF errors stay below 1e-8 (3e-9 measured on the
  bundled model), quantiles within 1e-6 relative (``tests/test_crossed.py`` checks both
  against the direct K x J sum). Components of weight below 1e-15 of the largest are
  dropped (at most K 1e-15 of probability). Mixtures with at most ``EXACT_MAX`` crossed
  components are summed directly.
* :class:`TiltQuadrature` - the update after observing a new trial's estimate ``y``:
  ``P(theta <= x | y) = int_{-inf}^x p(theta) L(y - theta) dtheta / int p(theta) L(y - theta)
  dtheta`` with ``L(u) = sum_j w_j N(u; 0, T_j² + se²)`` (the likelihood of y given theta, tau
  integrated over its grid). This is the K x J conjugate-update sum regrouped as an integral
  over theta: composite 8-point Gauss-Legendre cells split at ``x``, each cell at most
  ``CELL`` local scales wide, where a component's local scale in the tilted integrand is
  ``(1/S_k² + 1/se²)^(-1/2)`` (the SD of its conjugate update) and the cells cover each
  component's mass to 12 SDs both at its mean and at its update toward the most extreme y;
  ``log p`` is summed exactly over every component at the nodes, and ``log L`` is read from a
  cubic Hermite table (step ``sqrt(min variance) / 32``) or summed exactly.

The quadrature has no pruning of small crossed weights, so it equals the full K x J sum;
a crossed mixture whose components of weight below 1e-16 of the largest were dropped differs
from it at extreme y (where those large-tau components dominate the update) by up to ~2e-4.

:class:`DensityQuadrature` gives expectations of smooth functions under the effect mixture
alone with the same cells (the mean of an absolute effect).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
from scipy import special

__all__ = ["CrossedMixture", "TiltQuadrature", "EXACT_MAX"]

#: crossed mixtures with at most this many components are summed directly (exact)
EXACT_MAX = 40_000
_H = 0.05                        # table step in rho = asinh(|d|/s) and in lambda = log s
_OFF = np.arange(-2, 4)          # 6-point Lagrange stencil around floor(position)
_LN2PI = math.log(2.0 * math.pi)
#: width of a theta cell in local scales (8-point Gauss-Legendre per cell): expectations
#: under the density alone use 2 (error ~1e-15; 3 gives ~4e-12), the tilted update 3 (its
#: cells are built for se / 2.5, finer still: error ~1e-16)
CELL = 3.0
CELL_DENSITY = 2.0
_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)
_REACH = 12.0                    # SDs of a component covered by the theta cells
#: log-weights below the largest by more than this are raised to it before exp: e^-700 is
#: nil beside 1 in any sum here, and exp is slow for results in the subnormal range
_FLOOR = -700.0


def _lagrange_coef() -> np.ndarray:
    """Monomial coefficients (6 x 6, ascending powers) of the Lagrange basis on offsets
    -2..3: row m is the polynomial that is 1 at offset m and 0 at the others."""
    C = np.zeros((6, 6))
    for m, om in enumerate(_OFF):
        others = [o for o in _OFF if o != om]
        C[m] = np.poly(others)[::-1] / np.prod([om - o for o in others])
    return C


_LC = _lagrange_coef()


def _weights(t: np.ndarray) -> np.ndarray:
    """Lagrange weights (..., 6) at fractional positions t in [0, 1), by Horner's rule."""
    t = t[..., None]
    w = np.broadcast_to(_LC[:, 5], t.shape[:-1] + (6,))
    for i in range(4, -1, -1):
        w = w * t + _LC[:, i]
    return w


class _HTable:
    """``H(d, s) = sum_j w_j Phi(d / sqrt(s² + T_j²))`` on the (rho, lambda) grid."""

    def __init__(self, T: np.ndarray, w: np.ndarray):
        keep = w > 0
        self.T2 = np.asarray(T, float)[keep] ** 2
        self.w = np.asarray(w, float)[keep]
        sig = self.w >= 1e-18 * self.w.max()
        self.tbig = float(np.sqrt(self.T2[sig].max()))
        self.l_lo = self.l_hi = None
        self.tabT = None                 # (lambda columns, rho rows), C-contiguous

    def _build(self, l_lo: int, l_hi: int):
        # rows: rho_i = i h for i = -3 .. n, n past :meth:`far` of the smallest s plus the
        # stencil
        s_min = math.exp(l_lo * _H)
        r_max = math.asinh(8.6 * math.sqrt(1.0 + (self.tbig / s_min) ** 2))
        n = int(math.ceil(r_max / _H)) + 4
        self.i_lo, self.n_rows = -3, n + 4
        r = np.sinh(_H * np.arange(self.i_lo, self.i_lo + self.n_rows))
        lam = _H * np.arange(l_lo, l_hi + 1)
        tab = np.empty((r.size, lam.size))
        # every entry depends on its (rho, lambda) only, not on the range built: a table grown
        # by other mixtures gives the same numbers
        T2, w = self.T2, self.w
        for c in range(0, lam.size, 8):
            s2 = np.exp(2.0 * lam[c:c + 8])
            a = 1.0 / np.sqrt(1.0 + T2[None, :] / s2[:, None])             # (L, J)
            tab[:, c:c + 8] = special.ndtr(r[:, None, None] * a[None]) @ w
        self.tabT, self.l_lo, self.l_hi = np.ascontiguousarray(tab.T), l_lo, l_hi

    def ensure(self, lam_min: float, lam_max: float):
        lo = int(math.floor(lam_min / _H)) - 2
        hi = int(math.floor(lam_max / _H)) + 3
        if self.tabT is None or lo < self.l_lo or hi > self.l_hi:
            lo2 = lo - 20 if self.l_lo is None else min(lo - 20, self.l_lo)
            hi2 = hi + 20 if self.l_hi is None else max(hi + 20, self.l_hi)
            self._build(lo2, hi2)

    @staticmethod
    def lam_stencil(s: np.ndarray):
        """First stencil column (K,), as a global lambda index, and weights (K, 6) of each
        component's lambda = log s."""
        x = np.log(s) / _H
        l0 = np.floor(x)
        return l0.astype(np.int64) - 2, _weights(x - l0)

    def reduce_lambda(self, lcols: np.ndarray, wl: np.ndarray, rows: int) -> np.ndarray:
        """The first ``rows`` rows of the table interpolated in lambda at each component:
        (K, rows), C-contiguous. ``lcols``: global lambda indices (:meth:`lam_stencil`),
        valid whatever columns the table has grown to since."""
        cols = lcols - self.l_lo
        if cols.min() < 0 or cols.max() + 5 > self.l_hi - self.l_lo:
            raise RuntimeError("lambda outside the table")
        rows = min(int(rows), self.tabT.shape[1])
        R = np.empty((cols.size, rows))
        order = np.argsort(cols, kind="stable")
        cs = cols[order]
        cuts = np.flatnonzero(np.diff(cs)) + 1
        for grp in np.split(order, cuts):      # components sharing a stencil: one product
            c = int(cols[grp[0]])
            R[grp] = wl[grp] @ self.tabT[c:c + 6, :rows]
        return R

    def far(self, s: np.ndarray) -> np.ndarray:
        """Position (in rows) beyond which H(d, s) = 1 to double precision, per s: where
        |d| / sqrt(s² + T²) >= 8.6 for every T of weight >= 1e-18 of the largest (a property
        of s alone, so the result does not depend on how far the table reaches)."""
        return np.arcsinh(8.6 * np.sqrt(1.0 + (self.tbig / s) ** 2)) / _H

    def rows_for(self, d: np.ndarray, s: np.ndarray) -> int:
        """Rows of the reduced table that H(d, s) reads."""
        x = np.arcsinh(np.abs(d) / s) / _H
        x = float(np.max(np.where(x > self.far(s), 0.0, x)))
        return int(x) - self.i_lo + 4

    def eval(self, d: np.ndarray, s: np.ndarray, R: np.ndarray, density: bool = False):
        """H(d, s) (and dH/dd) for d (N, K), s (K,), R = :meth:`reduce_lambda` of the
        components' lambda stencils."""
        ad = np.abs(d)
        x = np.arcsinh(ad / s) / _H
        far = x > self.far(s)
        x = np.where(far, 0.0, x)
        i0 = np.floor(x)
        t = x - i0
        nr = R.shape[1]
        if i0.size and int(i0.max()) - 2 - self.i_lo + 5 >= nr:
            raise RuntimeError("reduced table too short")
        base = (i0.astype(np.int64) - 2 - self.i_lo) + nr * np.arange(d.shape[-1])
        vl = R.ravel()[base[..., None] + (_OFF + 2)]                               # (N, K, 6)
        # the interpolating polynomial in t: coefficients P = vl C (Lagrange basis -> powers)
        P = (vl.reshape(-1, 6) @ _LC).reshape(vl.shape)
        h = P[..., 5]
        for i in range(4, -1, -1):
            h = h * t + P[..., i]
        h = np.where(far, 1.0, h)
        H = np.where(d >= 0, h, 1.0 - h)
        if not density:
            return H, None
        dh = 5.0 * P[..., 5]
        for i in range(4, 0, -1):
            dh = dh * t + i * P[..., i]
        dh = np.where(far, 0.0, dh / _H / np.sqrt(s * s + d * d))
        return H, dh


_TABLES: "OrderedDict[bytes, _HTable]" = OrderedDict()
#: mixtures holding their table interpolated in lambda (a few MB each): the most recent only
_REDUCED: "OrderedDict[int, CrossedMixture]" = OrderedDict()
_REDUCED_MAX = 8


def _table_for(T: np.ndarray, w: np.ndarray) -> _HTable:
    key = np.asarray(T, float).tobytes() + b"|" + np.asarray(w, float).tobytes()
    tab = _TABLES.get(key)
    if tab is None:
        tab = _TABLES[key] = _HTable(T, w)
        while len(_TABLES) > 8:
            _TABLES.popitem(last=False)
    else:
        _TABLES.move_to_end(key)
    return tab


class CrossedMixture:
    """``X = theta + tau z + se e``: ``sum_kj W_k w_j N(M_k, S_k² + T_j² + se²)``.

    ``exact=None`` sums directly when ``K J <= EXACT_MAX`` and reads the H table otherwise;
    ``True``/``False`` force either (the tests compare them).
    """

    def __init__(self, M, S, W, T, w, se: float = 0.0, *, exact: bool | None = None):
        M, S, W = (np.asarray(a, float).ravel() for a in (M, S, W))
        T, w = (np.asarray(a, float).ravel() for a in (T, w))
        # components below 1e-15 of the largest weight change no probability by more than
        # K 1e-15 (the crossed weights are W_k w_j: the tau weights are kept whole)
        k, j = W > 1e-15 * W.max(), w > 0
        self.M, self.S, self.W = M[k], S[k], W[k] / W[k].sum()
        self.T, self.w = T[j], w[j] / w[j].sum()
        self.se = float(se)
        self._qcache: dict = {}
        self._R = None
        self.s = np.sqrt(self.S ** 2 + self.se ** 2)
        if exact is None:
            exact = self.M.size * self.T.size <= EXACT_MAX
        if not exact and not np.all(self.s > 0):
            exact = True                   # point components: no lambda = log s
        self.exact = bool(exact)
        if not self.exact:
            self._tab = _table_for(self.T, self.w)
            ls = np.log(self.s)
            self._tab.ensure(float(ls.min()), float(ls.max()))
            self._cols, self._wl = _HTable.lam_stencil(self.s)

    def _reduced(self, rows: int) -> np.ndarray:
        """The H table interpolated at each component's lambda (at least ``rows`` rows; a
        multiple of 32 more than asked), kept while this mixture is among the last
        ``_REDUCED_MAX`` used (quantiles, then CDFs, of the same mixture)."""
        key = id(self)
        if (self._R is None or self._R[0] is not self._tab.tabT
                or (self._R[1].shape[1] < rows < self._tab.tabT.shape[1])):
            rows = 32 * (rows // 32 + 2)
            self._R = (self._tab.tabT, self._tab.reduce_lambda(self._cols, self._wl, rows))
            _REDUCED[key] = self
            while len(_REDUCED) > _REDUCED_MAX:
                _REDUCED.popitem(last=False)[1]._R = None
        else:
            _REDUCED.move_to_end(key)
        return self._R[1]

    # ---- moments -------------------------------------------------------------------------
    def mean(self) -> float:
        return float(self.W @ self.M)

    def var(self) -> float:
        m = self.mean()
        return float(self.W @ (self.S ** 2 + self.M ** 2) - m * m + self.w @ self.T ** 2
                     + self.se ** 2)

    # ---- CDF and density ------------------------------------------------------------------
    def cdf_pdf(self, x, density: bool = True):
        """P(X <= x) and the density at x, x any shape."""
        x = np.asarray(x, float)
        flat = x.reshape(-1)
        F, f = np.empty(flat.size), np.empty(flat.size)
        if self.exact:
            sd = np.sqrt(self.s[:, None] ** 2 + self.T[None, :] ** 2)              # (K, J)
            wkj = self.W[:, None] * self.w[None, :]
            step = max(1, 400_000 // sd.size)
            for i in range(0, flat.size, step):
                with np.errstate(divide="ignore", invalid="ignore"):
                    z = (flat[i:i + step, None, None] - self.M[None, :, None]) / sd[None]
                pos = sd[None] > 0
                z = np.where(pos, z, np.where(z >= 0, np.inf, -np.inf))
                F[i:i + step] = np.einsum("nkj,kj->n", special.ndtr(z), wkj)
                if density:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        dens = np.where(pos, np.exp(-0.5 * z * z) / (sd[None] * math.sqrt(
                            2 * math.pi)), 0.0)
                    f[i:i + step] = np.einsum("nkj,kj->n", dens, wkj)
        else:
            R = self._reduced(self._tab.rows_for(flat[:, None] - self.M[None, :], self.s)
                              if flat.size * self.M.size <= 2_000_000 else 1 << 30)
            step = max(1, 30_000 // self.M.size)
            for i in range(0, flat.size, step):
                d = flat[i:i + step, None] - self.M[None, :]
                H, dH = self._tab.eval(d, self.s, R, density)
                F[i:i + step] = H @ self.W
                if density:
                    f[i:i + step] = dH @ self.W
        F = np.clip(F, 0.0, 1.0)
        return (F.reshape(x.shape), f.reshape(x.shape) if density else None)

    def cdf(self, x) -> np.ndarray:
        return self.cdf_pdf(x, density=False)[0]

    def pdf(self, x) -> np.ndarray:
        return self.cdf_pdf(x)[1]

    def quantile(self, q, xtol: float = 1e-13) -> np.ndarray:
        """Quantiles by safeguarded Newton inside the bracket of the components' quantiles
        (cached per probability)."""
        q = np.atleast_1d(np.asarray(q, float))
        todo = sorted({float(v) for v in q.ravel() if float(v) not in self._qcache})
        if todo:
            self._qcache.update(zip(todo, self._quantile(np.array(todo), xtol)))
        return np.array([self._qcache[float(v)] for v in q.ravel()]).reshape(q.shape)

    def _quantile(self, q, xtol):
        z = special.ndtri(q)
        sd_lo = float(np.sqrt(self.s.min() ** 2 + self.T.min() ** 2))
        sd_hi = float(np.sqrt(self.s.max() ** 2 + self.T.max() ** 2))
        m_lo, m_hi = float(self.M.min()), float(self.M.max())
        lo = np.where(z < 0, m_lo + z * sd_hi, m_lo + z * sd_lo)
        hi = np.where(z < 0, m_hi + z * sd_lo, m_hi + z * sd_hi)
        lo, hi = lo - 1e-12 * (1 + np.abs(lo)), hi + 1e-12 * (1 + np.abs(hi))
        sc = float(np.median(self.s)) + 1e-300
        v = self.var()
        x = np.clip(self.mean() + (math.sqrt(v) if math.isfinite(v) else sc) * z, lo, hi)
        x0 = x.copy()
        for _ in range(200):
            F, f = self.cdf_pdf(x)
            r = F - q
            lo, hi = np.where(r < 0, x, lo), np.where(r > 0, x, hi)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                step = r / f
            conv = np.isfinite(step) & (np.abs(step) <= xtol * (sc + np.abs(x)))
            xn = x - np.where(np.isfinite(step), step, 0.0)
            bad = ~conv & (~np.isfinite(step) | (xn <= lo) | (xn >= hi))
            if bad.any():   # bisection on an asinh scale: quick for huge brackets
                mid = x0 + sc * np.sinh(0.5 * (np.arcsinh((lo - x0) / sc)
                                               + np.arcsinh((hi - x0) / sc)))
                mid = np.where((mid > lo) & (mid < hi), mid, 0.5 * (lo + hi))
                xn = np.where(bad, mid, xn)
            x = xn
            if np.all(conv | (r == 0) | (hi - lo <= xtol * (sc + np.abs(x)))):
                break
        return x


def _theta_cells(M, S, W, st, a, b, split=None, cell=None):
    """Gauss-Legendre cells in theta: (nodes, log weights, number of cells).

    Component k (of weight at least 1e-16 of the largest) needs theta in
    ``[M_k + a_k - 12 S_k, M_k + b_k + 12 S_k]`` resolved at its local scale ``st_k``.
    Components are grouped in classes of local scales within a factor 1.25; between
    consecutive class-hull ends the cell width is ``CELL`` times the smallest scale of the
    classes covering that stretch (none covering: no cells, no component's mass there).
    ``split`` is made a cell edge when inside."""
    rel = W >= 1e-16 * W.max()
    M, S, st, a, b = M[rel], S[rel], st[rel], a[rel], b[rel]
    lo, hi = M + a - _REACH * S, M + b + _REACH * S
    cls = np.floor(np.log(st) / math.log(1.25)).astype(np.int64)
    _, inv = np.unique(cls, return_inverse=True)
    n = int(inv.max()) + 1
    c_lo, c_hi, c_sc = np.full(n, np.inf), np.full(n, -np.inf), np.full(n, np.inf)
    np.minimum.at(c_lo, inv, lo)
    np.maximum.at(c_hi, inv, hi)
    np.minimum.at(c_sc, inv, st)
    cuts = [c_lo, c_hi]
    if split is not None and c_lo.min() < split < c_hi.max():
        cuts.append(np.array([float(split)]))
    bps = np.unique(np.concatenate(cuts))
    lefts, rights = [], []
    for a_, b_ in zip(bps[:-1], bps[1:]):
        cover = (c_lo <= a_) & (c_hi >= b_)
        if not cover.any():
            continue
        m = max(1, int(math.ceil((b_ - a_) / ((cell or CELL) * float(c_sc[cover].min())))))
        e = np.linspace(a_, b_, m + 1)
        lefts.append(e[:-1])
        rights.append(e[1:])
    lefts, rights = np.concatenate(lefts), np.concatenate(rights)
    half = 0.5 * (rights - lefts)
    theta = ((lefts + rights)[:, None] * 0.5 + half[:, None] * _GL_X).ravel()
    return theta, np.log((half[:, None] * _GL_W).ravel()), lefts.size


def _log_mix_density(theta, M, S, W):
    """log sum_k W_k N(theta; M_k, S_k²) at every theta (log-sum-exp).

    The exponents are a quadratic in theta, ``C0 + u C1 + u² C2`` with u = theta - c (c the
    weighted mean, so that |u| stays small); their rounding error is below
    1e-15 (|u| / S_k)², under 1e-9 for the ranges used here."""
    c = float(W @ M)
    u = np.asarray(theta, float) - c
    m = M - c
    iv = 1.0 / S ** 2
    C = np.stack([np.log(W) - np.log(S) - 0.5 * _LN2PI - 0.5 * m * m * iv, m * iv, -0.5 * iv])
    out = np.empty(u.size)
    step = max(1, 2_000_000 // M.size)
    for i in range(0, u.size, step):
        ui = u[i:i + step]
        e = np.multiply.outer(ui, C[1])
        e += C[0]
        e += np.multiply.outer(ui * ui, C[2])
        mx = e.max(1)
        e -= mx[:, None]
        np.maximum(e, _FLOOR, out=e)        # exp below e^-700 is slow (subnormal) and nil
        np.exp(e, out=e)
        out[i:i + step] = mx + np.log(e.sum(1))
    return out


def _clean(M, S, W):
    M, S, W = (np.asarray(v, float).ravel() for v in (M, S, W))
    k = W > 0
    if not np.all(S[k] > 0):
        raise ValueError("a theta quadrature needs every S_k > 0")
    return M[k], S[k], W[k] / W[k].sum()


class DensityQuadrature:
    """Expectations ``E[g(theta)]`` of smooth g under ``sum_k W_k N(M_k, S_k²)``:
    Gauss-Legendre cells at most ``CELL_DENSITY`` component SDs wide over every component's
    mass (12 SDs), the density summed exactly at the nodes."""

    def __init__(self, M, S, W):
        self.M, self.S, self.W = _clean(M, S, W)
        z = np.zeros_like(self.M)
        self.theta, log_om, self.n_cells = _theta_cells(self.M, self.S, self.W, self.S, z, z,
                                                        cell=CELL_DENSITY)
        lq = _log_mix_density(self.theta, self.M, self.S, self.W) + log_om
        self.q = np.exp(lq - lq.max())
        self.q /= self.q.sum()          # the rule integrates 1 to 1 within 1e-15 already

    def expect(self, g):
        """``sum_i q_i g(theta_i)`` for ``g`` mapping the nodes (n,) to (n, ...)."""
        return np.tensordot(self.q, g(self.theta), axes=(0, 0))


class TiltQuadrature:
    """``P(theta <= x | y)`` for many y at once, after a new trial's estimate y with standard
    error se (see the module docstring).

    The theta cells are built for ``se_cells`` and the y range ``[y_lo, y_hi]`` and serve
    every ``se >= se_cells`` and y in that range (:meth:`covers`): a larger se only widens the
    local scales ``(1/S_k² + 1/se²)^(-1/2)`` and shortens the updates' shifts
    ``(y - M_k) S_k² / (S_k² + se²)``. The kernel ``log L`` is tabulated per se.
    """

    def __init__(self, M, S, W, T, w, se_cells: float, x: float, y_lo: float, y_hi: float):
        self.M, self.S, self.W = _clean(M, S, W)
        T, w = (np.asarray(v, float).ravel() for v in (T, w))
        j = w > 0
        self.T, self.w = T[j], w[j] / w[j].sum()
        self.se_cells, self.x = float(se_cells), float(x)
        if not self.se_cells > 0:
            raise ValueError("TiltQuadrature needs se > 0")
        self.y_lo, self.y_hi = float(min(y_lo, y_hi)), float(max(y_lo, y_hi))
        M, S, se = self.M, self.S, self.se_cells
        st = 1.0 / np.sqrt(1.0 / S ** 2 + 1.0 / se ** 2)           # SD of a conjugate update
        g = S ** 2 / (S ** 2 + se ** 2)                              # largest update factor
        a = np.minimum(0.0, np.minimum((self.y_lo - M) * g, (self.y_hi - M) * g))
        b = np.maximum(0.0, np.maximum((self.y_lo - M) * g, (self.y_hi - M) * g))
        self.theta, log_om, self.n_cells = _theta_cells(M, S, self.W, st, a, b, split=self.x)
        self.below = self.theta < self.x
        self.lp = _log_mix_density(self.theta, M, S, self.W) + log_om
        self._ktab = {}

    def covers(self, se: float, y_lo: float, y_hi: float) -> bool:
        return se >= self.se_cells and self.y_lo <= y_lo and y_hi <= self.y_hi

    # ---- the likelihood of y given theta ---------------------------------------------------
    def _kernel_nodes(self, se):
        """(w_j, V_j = T_j² + se²) with the nodes T_j < 1e-5 se merged into one at their mean
        T² (V changes by < 1e-10 relative: identical to double precision in log L)."""
        key = ("nodes", float(se))
        if key not in self._ktab:
            V = self.T ** 2 + float(se) ** 2
            tiny = self.T < 1e-5 * float(se)
            if tiny.sum() > 1:
                wt = self.w[tiny].sum()
                V = np.append(V[~tiny], float(self.w[tiny] @ V[tiny]) / wt)
                w = np.append(self.w[~tiny], wt)
            else:
                w = self.w
            self._ktab[key] = (w, V)
        return self._ktab[key]

    def _logL_exact(self, u, se):
        u = np.asarray(u, float)
        w, V = self._kernel_nodes(se)
        lw = np.log(w) - 0.5 * np.log(V) - 0.5 * _LN2PI
        e = lw - 0.5 * (u[..., None] ** 2) / V
        mx = e.max(-1)
        r = np.exp(np.maximum(e - mx[..., None], _FLOOR))
        s = r.sum(-1)
        return mx + np.log(s), -(r * (u[..., None] / V)).sum(-1) / s

    def _logL_table(self, u, se):
        """Cubic Hermite interpolation of log L in |u| on a grid of step
        sqrt(min variance) / 32 (exact value and slope at the nodes), built once per se for
        every |y - theta| the cells and the y range can give."""
        key = float(se)
        if key not in self._ktab:
            d = math.sqrt(float(self.T.min() ** 2 + key ** 2)) / 32.0
            umax = max(abs(self.y_hi - self.theta.min()), abs(self.y_lo - self.theta.max()))
            grid = d * np.arange(int(math.ceil(umax / d)) + 3)
            f, df = self._logL_exact(grid, key)
            self._ktab[key] = (d, float(grid[-2]), f, df)
        d, ucov, f, df = self._ktab[key]
        au = np.abs(u)
        if au.max() > ucov:
            raise ValueError("y outside the range the quadrature was built for")
        xi = au / d
        i = np.floor(xi).astype(np.int64)
        t = xi - i
        t2, t3 = t * t, t * t * t
        return ((2 * t3 - 3 * t2 + 1) * f[i] + (t3 - 2 * t2 + t) * d * df[i]
                + (-2 * t3 + 3 * t2) * f[i + 1] + (t3 - t2) * d * df[i + 1])

    def cdf(self, ys, se: float, exact_kernel: bool = False) -> np.ndarray:
        """P(theta <= x | data, y_new = y) for each y in ``ys`` (a trial of standard error
        ``se >= se_cells``)."""
        ys = np.atleast_1d(np.asarray(ys, float))
        if not self.covers(float(se), float(ys.min()), float(ys.max())):
            raise ValueError("se or y outside what the quadrature was built for")
        out = np.empty(ys.size)
        step = max(1, 2_000_000 // (self.theta.size * (self.T.size if exact_kernel else 1)))
        for i in range(0, ys.size, step):
            u = ys[i:i + step, None] - self.theta[None, :]
            lL = self._logL_exact(u, se)[0] if exact_kernel else self._logL_table(u, se)
            e = self.lp[None, :] + lL
            e -= e.max(1)[:, None]
            np.maximum(e, _FLOOR, out=e)
            np.exp(e, out=e)
            out[i:i + step] = (e * self.below).sum(1) / e.sum(1)
        return out
