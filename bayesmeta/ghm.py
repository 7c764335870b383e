"""Gaussian hierarchical model (GHM) for study x time x subgroup estimates: design and covariance.

Model
-----
Rows ``r`` carry an estimate ``y_r`` with standard error ``se_r``, a subgroup ``s(r)``, a time
``t(r)`` (label and, where needed, a numeric value), an optional study ``j(r)`` and a row kind
(a study's own estimate, ``h_r = 1``, or a published pooled estimate, ``h_r = 0``):

.. math::

    y_r = m_{s(r)} + d_{s(r),t(r)} + u_{j(r)} + h_r e_r + \\varepsilon_r

* subgroup means ``m_s``: ``subgroup="fixed"`` (independent normal priors; the implied prior of
  every contrast ``m_a - m_b`` is stated) or ``"random"`` (``m_s = mu + a_s``,
  ``a_s ~ N(0, sigma_subgroup²)``); with one subgroup there is one mean.
* cell deviations ``d_{s,.} ~ N(0, sigma_time² K(rho))``, independent across subgroups, over every
  time of the data (so that a subgroup's mean at a time it was not observed at exists, marked as
  extrapolation): ``"exchangeable"`` ``K = I``; ``"ar1"`` ``K_ik = rho^|i-k|`` over the ordered
  distinct times; ``"car"`` ``K_ik = rho^|t_i - t_k|`` on the numeric times (respects spacing).
  Present when the data have two or more distinct times.
* study effect ``u_j ~ N(0, sigma_study²)``, shared by all rows of study ``j``; present when a
  study has two or more rows.
* within-cell heterogeneity ``e_r ~ N(0, tau²)`` on study rows only (a pooled row's standard
  error already contains the heterogeneity of the studies it pools); present when there are
  study rows.
* sampling errors ``eps ~ N(0, V)``: ``V_rr = se_r²``; two rows of the same *correlation group*
  (same study, or same ``source`` for pooled rows, and same subgroup: different subgroups are
  different patients) at different times have correlation ``c(r, r')``:

  - ``"exchangeable"``: ``c = r`` (change scores of the same patients at several times);
  - ``"decay"``: ``c = r^|t - t'|`` (numeric times; ``r`` per unit of time; metafor's
    ``vcalc(phi=)``);
  - ``"ratio"``: ``c = sqrt(min(t, t') / max(t, t'))``, no parameter: the correlation of two
    cumulative proportions of the same cohort at follow-up times ``t < t'`` is
    ``sqrt(p_t (1 - p_t') / (p_t' (1 - p_t)))`` (Cov(p̂_t, p̂_t') = p_t (1 - p_t') / n; the same
    holds for their log odds by the delta method, Trikalinos & Olkin 2012), which is
    ``sqrt(t / t')`` when events are rare and the hazard constant (``p_t ∝ t``). Use it for
    cumulative binary outcomes (deaths by week t); it needs positive numeric times.

  ``r`` is known (a number), given a prior (integrated like any hyperparameter), or varied over
  a grid by :func:`bayesmeta.ghm_exact.r_sensitivity`.

Given the hyperparameters ``theta = (sigma_subgroup, sigma_time, rho, sigma_study, tau, r)`` (the
ones present), the model is Gaussian in the latent vector ``z = (beta, gamma)`` with ``beta`` the
means that have a normal (or flat) prior (``m_s``, or ``mu`` for random subgroups) and
``gamma = (a_s, d_{s,t}, u_j) ~ N(0, G(theta))``: ``y | z ~ N(X beta + Z gamma, R(theta))``,
``R = tau² diag(h) + V(r)``. This module builds ``X``, ``Z``, ``G``, ``R`` (vectorised over many
``theta``), the list of hyperparameters with their priors and transforms, and the estimands as
rows of a matrix over ``z`` (:class:`Estimand`). The engines are :mod:`bayesmeta.ghm_exact`
(quadrature), :mod:`bayesmeta.ghm_reml` (the classical twin) and :mod:`bayesmeta.ghm_pymc`
(MCMC check).

References
----------
Trikalinos TA, Olkin I (2012). Meta-analysis of effect sizes reported at multiple time points: a
multivariate approach. Clinical Trials 9(5):610-620. doi:10.1177/1740774512453218

Ishak KJ, Platt RW, Joseph L, Hanley JA, Caro JJ (2007). Meta-analysis of longitudinal studies.
Clinical Trials 4(5):525-539. doi:10.1177/1740774507083567 (AR(1) time structure of effects)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd
from scipy import special, stats

from bayesmeta import priors as P
from bayesmeta.exceptions import DataError, SpecError
from bayesmeta.fits import Param

__all__ = ["TIME_STRUCTURES", "SUBGROUP_MODES", "CORRELATION_FORMS", "ROW_KINDS", "BetaPrior",
           "Hyper", "Estimand", "Window", "GHMDesign", "build_design", "DEFAULT_R"]

TIME_STRUCTURES = ("exchangeable", "ar1", "car")
SUBGROUP_MODES = ("fixed", "random")
CORRELATION_FORMS = ("exchangeable", "decay", "ratio")
ROW_KINDS = ("study", "pooled", "subgroup_pooled")
#: within-group sampling correlation when none is given (stated in every fit's notes)
DEFAULT_R = 0.5
#: label of rows that belong to no named subgroup
ALL = "all"


# --------------------------------------------------------------------------------------------
# a prior for correlations
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BetaPrior(P.Prior):
    """A correlation ``x = lower + (upper - lower) * B``, ``B ~ Beta(a, b)``.

    Default ``Beta(1, 1)`` on (0, 1): uniform. Used for the time correlation ``rho`` and the
    within-study sampling correlation ``r``.
    """

    a: float = 1.0
    b: float = 1.0
    lower: float = 0.0
    upper: float = 1.0
    source: str = field(default="", compare=False)
    target: ClassVar[str] = "correlation"

    def __post_init__(self):
        for nm in ("a", "b"):
            v = getattr(self, nm)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise SpecError(f"BetaPrior: {nm} must be a finite number > 0, got {v!r}")
        if not (-1.0 <= self.lower < self.upper <= 1.0):
            raise SpecError(f"BetaPrior: need -1 <= lower < upper <= 1, got ({self.lower!r}, "
                            f"{self.upper!r})")

    def _u(self, x):
        return (np.asarray(x, dtype=float) - self.lower) / (self.upper - self.lower)

    def logpdf(self, x):
        u = self._u(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = stats.beta.logpdf(u, self.a, self.b) - math.log(self.upper - self.lower)
        return np.where((u > 0) & (u < 1), out, -np.inf)

    def cdf(self, x):
        return stats.beta.cdf(np.clip(self._u(x), 0.0, 1.0), self.a, self.b)

    def ppf(self, q):
        return self.lower + (self.upper - self.lower) * stats.beta.ppf(q, self.a, self.b)

    def mean(self) -> float:
        return self.lower + (self.upper - self.lower) * self.a / (self.a + self.b)

    def var(self) -> float:
        a, b = self.a, self.b
        return (self.upper - self.lower) ** 2 * a * b / ((a + b) ** 2 * (a + b + 1))


# --------------------------------------------------------------------------------------------
# hyperparameters
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hyper:
    """A free hyperparameter: its prior and the map to the real line used for integration.

    ``kind="scale"`` (a :class:`~bayesmeta.priors.TauPrior`): ``z = log(x - lower)``, or a logit
    for bounded priors; ``kind="corr"`` (:class:`BetaPrior`): logit on (lower, upper).
    """

    name: str
    prior: Any
    kind: str

    @property
    def bounds(self) -> tuple[float, float]:
        if self.kind == "corr":
            return float(self.prior.lower), float(self.prior.upper)
        hi = self.prior.upper if isinstance(self.prior, P.Uniform) else math.inf
        return float(self.prior.lower), float(hi)

    def x_of_z(self, z):
        lo, hi = self.bounds
        z = np.asarray(z, dtype=float)
        if math.isfinite(hi):
            return lo + (hi - lo) * special.expit(z)
        return lo + np.exp(np.minimum(z, 700.0))

    def z_of_x(self, x):
        lo, hi = self.bounds
        x = np.asarray(x, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            if math.isfinite(hi):
                return special.logit((x - lo) / (hi - lo))
            return np.log(x - lo)

    def logjac(self, z):
        """log dx/dz."""
        lo, hi = self.bounds
        z = np.asarray(z, dtype=float)
        if math.isfinite(hi):
            return math.log(hi - lo) + special.log_expit(z) + special.log_expit(-z)
        return z

    def logprior(self, x):
        if self.kind == "corr":
            return self.prior.logpdf(x)
        return self.prior.logpdf_tau(x)

    def prior_cdf(self, x):
        if self.kind == "corr":
            return self.prior.cdf(x)
        return self.prior.cdf_tau(x)

    def prior_ppf(self, q):
        if self.kind == "corr":
            return self.prior.ppf(q)
        return self.prior.ppf_tau(q)


# --------------------------------------------------------------------------------------------
# estimands
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimand:
    """A linear combination ``L z`` of the latent vector plus, for predictive quantities, the
    variance of new independent terms: ``extra = ((hyperparameter, coefficient), ...)`` adds
    ``coefficient * theta_h²`` (``sigma_study`` and ``tau`` for a new study).

    ``note`` is '' or why the estimand is an extrapolation (a subgroup not observed at a time).
    """

    param: Param
    L: np.ndarray
    extra: tuple = ()
    note: str = ""


@dataclass(frozen=True)
class Window:
    """A pre-specified average over times: ``name`` and ``{time label: weight}`` (weights are
    normalised to sum 1)."""

    name: str
    weights: tuple

    @staticmethod
    def make(name: str, weights: Mapping) -> "Window":
        w = {str(_fmt_time(k)): float(v) for k, v in dict(weights).items()}
        if not w or any(not math.isfinite(v) or v < 0 for v in w.values()) or sum(w.values()) <= 0:
            raise SpecError(f"Invalid time window {name!r}: weights must be >= 0 with a positive "
                            f"sum, got {weights!r}")
        tot = sum(w.values())
        return Window(str(name), tuple((k, v / tot) for k, v in w.items()))


def _fmt_time(t) -> str:
    try:
        f = float(t)
    except (TypeError, ValueError):
        return str(t)
    if not math.isfinite(f):
        return str(t)
    return str(int(f)) if f.is_integer() else repr(f)


def _num_time(t):
    try:
        f = float(t)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# --------------------------------------------------------------------------------------------
# the design
# --------------------------------------------------------------------------------------------
@dataclass
class GHMDesign:
    """A validated dataset with its model options: everything the engines need.

    Built by :func:`build_design`. ``rows`` is the cleaned table (one row per estimate, in the
    given order); levels are ``subgroups``, ``times`` (labels, ordered) with numeric
    ``time_values`` (NaN where a label is not numeric), ``studies`` (only those with a shared
    effect: two or more rows).
    """

    rows: pd.DataFrame
    y: np.ndarray
    se: np.ndarray
    h: np.ndarray
    s_idx: np.ndarray
    t_idx: np.ndarray
    j_idx: np.ndarray
    group: np.ndarray           # correlation group of each row (-1: independent)
    subgroups: list
    times: list
    time_values: np.ndarray
    studies: list
    time_structure: str
    subgroup_mode: str
    correlation: str
    mean_prior: Any
    hypers: list
    fixed: dict
    windows: list
    contrasts: list
    measure: str
    notes: list
    defaults: dict
    estimands: list = field(default_factory=list)

    # ---- sizes and layout ----------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.y.size)

    @property
    def n_s(self) -> int:
        return len(self.subgroups)

    @property
    def n_t(self) -> int:
        return len(self.times)

    @property
    def use_subgroup(self) -> bool:
        """Random subgroup deviations a_s present."""
        return self.subgroup_mode == "random" and self.n_s > 1

    @property
    def use_time(self) -> bool:
        return self.n_t > 1

    @property
    def use_rho(self) -> bool:
        return self.use_time and self.time_structure != "exchangeable"

    @property
    def use_study(self) -> bool:
        return len(self.studies) > 0

    @property
    def use_tau(self) -> bool:
        return bool(np.any(self.h > 0))

    @property
    def use_r(self) -> bool:
        """Some pair of rows has correlated sampling errors with a correlation that uses r."""
        return self.correlation != "ratio" and bool(self._pairs().any())

    @property
    def p(self) -> int:
        return 1 if (self.subgroup_mode == "random" or self.n_s == 1) else self.n_s

    @property
    def offsets(self) -> dict:
        """Start of each block of gamma: ``a`` (subgroup deviations), ``d`` (cells,
        subgroup-major), ``u`` (studies); ``g`` = length of gamma."""
        o, a = {}, 0
        o["a"] = a
        a += self.n_s if self.use_subgroup else 0
        o["d"] = a
        a += self.n_s * self.n_t if self.use_time else 0
        o["u"] = a
        a += len(self.studies)
        o["g"] = a
        return o

    @property
    def hyper_names(self) -> list[str]:
        return [h.name for h in self.hypers]

    def observed(self, s: int, t: int) -> bool:
        return bool(np.any((self.s_idx == s) & (self.t_idx == t)))

    # ---- matrices ------------------------------------------------------------------------
    def X(self) -> np.ndarray:
        X = np.zeros((self.n, self.p))
        if self.p == 1:
            X[:, 0] = 1.0
        else:
            X[np.arange(self.n), self.s_idx] = 1.0
        return X

    def Z(self) -> np.ndarray:
        o = self.offsets
        Z = np.zeros((self.n, o["g"]))
        i = np.arange(self.n)
        if self.use_subgroup:
            Z[i, o["a"] + self.s_idx] = 1.0
        if self.use_time:
            Z[i, o["d"] + self.s_idx * self.n_t + self.t_idx] = 1.0
        has = self.j_idx >= 0
        Z[i[has], o["u"] + self.j_idx[has]] = 1.0
        return Z

    def prior_mean(self) -> tuple[np.ndarray, np.ndarray]:
        """(b0, p0): prior means and precisions of beta (precision 0: flat)."""
        mp = self.mean_prior
        if mp.is_flat:
            return np.zeros(self.p), np.zeros(self.p)
        return np.full(self.p, float(mp.mean)), np.full(self.p, 1.0 / float(mp.sd) ** 2)

    def _pairs(self) -> np.ndarray:
        g = self.group
        same = (g[:, None] == g[None, :]) & (g[:, None] >= 0)
        np.fill_diagonal(same, False)
        return same

    def time_distance(self) -> np.ndarray:
        """(T, T) distances for K(rho): index differences (ar1) or |t_i - t_k| (car)."""
        idx = np.arange(self.n_t, dtype=float)
        if self.time_structure == "car":
            v = self.time_values
            return np.abs(v[:, None] - v[None, :])
        return np.abs(idx[:, None] - idx[None, :])

    # ---- hyperparameters -----------------------------------------------------------------
    def theta(self, X: np.ndarray | None = None, n: int | None = None) -> dict[str, np.ndarray]:
        """Constrained hyperparameters by name, (N,) each, from an (N, d) array of the free ones
        (columns in :attr:`hypers` order); fixed values broadcast."""
        if X is None:
            X = np.zeros((n or 1, 0))
        X = np.atleast_2d(np.asarray(X, dtype=float))
        N = X.shape[0]
        out = {h.name: X[:, k] for k, h in enumerate(self.hypers)}
        for k, v in self.fixed.items():
            out[k] = np.full(N, float(v))
        return out

    def G(self, th: dict) -> np.ndarray:
        """(N, g, g) prior covariance of gamma."""
        o = self.offsets
        N = next(iter(th.values())).shape[0] if th else 1
        G = np.zeros((N, o["g"], o["g"]))
        if self.use_subgroup:
            i = np.arange(self.n_s) + o["a"]
            G[:, i, i] = (th["sigma_subgroup"] ** 2)[:, None]
        if self.use_time:
            T = self.n_t
            if self.use_rho:
                rho = th["rho"][:, None, None]
                D = self.time_distance()[None]
                # ar1: integer lags (a negative rho alternates in sign); car: rho > 0
                K = np.power(rho, D)
            else:
                K = np.broadcast_to(np.eye(T), (N, T, T))
            K = K * (th["sigma_time"] ** 2)[:, None, None]
            for s in range(self.n_s):
                a = o["d"] + s * T
                G[:, a:a + T, a:a + T] = K
        if self.use_study:
            i = np.arange(len(self.studies)) + o["u"]
            G[:, i, i] = (th["sigma_study"] ** 2)[:, None]
        return G

    def corr_matrix(self, r) -> np.ndarray:
        """(N, n, n) correlation of the sampling errors for within-group correlations r (N,)."""
        r = np.atleast_1d(np.asarray(r, dtype=float))
        same = self._pairs().astype(float)
        t = self.row_time_values()
        if self.correlation == "exchangeable":
            C = r[:, None, None] * same[None]
        elif self.correlation == "decay":
            D = np.abs(t[:, None] - t[None, :])
            C = np.where(same[None] > 0, r[:, None, None] ** D[None], 0.0)
        else:
            lo, hi = np.minimum(t[:, None], t[None, :]), np.maximum(t[:, None], t[None, :])
            C = np.broadcast_to(np.where(same > 0, np.sqrt(lo / hi), 0.0),
                                (r.size, self.n, self.n)).copy()
        i = np.arange(self.n)
        C = np.array(C, dtype=float)
        C[:, i, i] = 1.0
        return C

    def row_time_values(self) -> np.ndarray:
        return self.time_values[self.t_idx]

    def V(self, th: dict) -> np.ndarray:
        """(N, n, n) sampling covariance."""
        N = next(iter(th.values())).shape[0] if th else 1
        r = th.get("r", np.zeros(N))
        return self.corr_matrix(r) * np.outer(self.se, self.se)[None]

    def R(self, th: dict) -> np.ndarray:
        """(N, n, n) residual covariance ``tau² diag(h) + V``."""
        R = self.V(th)
        if self.use_tau:
            i = np.arange(self.n)
            R[:, i, i] += (th["tau"] ** 2)[:, None] * self.h[None, :]
        return R

    def _rowpairs(self) -> dict:
        """Row-pair structure (computed once per design): same subgroup, time distances of the
        rows' cells, same study, same correlation group and the sampling-correlation lags."""
        c = self.__dict__.get("_rp")
        if c is None or c["n"] != self.n:
            t = self.row_time_values()
            same_g = self._pairs()
            c = {"n": self.n, "same_s": (self.s_idx[:, None] == self.s_idx[None, :]),
                 "dt": self.time_distance()[self.t_idx][:, self.t_idx] if self.n_t > 1 else
                 np.zeros((self.n, self.n)),
                 "same_j": (self.j_idx[:, None] == self.j_idx[None, :])
                 & (self.j_idx[:, None] >= 0),
                 "same_g": same_g, "se2": np.outer(self.se, self.se)}
            if self.correlation == "decay":
                c["lag"] = np.abs(t[:, None] - t[None, :])
            elif self.correlation == "ratio" and same_g.any():
                lo, hi = np.minimum(t[:, None], t[None, :]), np.maximum(t[:, None], t[None, :])
                c["ratio"] = np.where(same_g, np.sqrt(lo / hi), 0.0)
            self.__dict__["_rp"] = c
        return c

    def Sigma(self, th: dict) -> np.ndarray:
        """(N, n, n) covariance of y given beta and theta, ``Z G Z' + R``, assembled entry-wise
        from the row-pair structure (O(n²) per node instead of O(n g²))."""
        c = self._rowpairs()
        N = next(iter(th.values())).shape[0] if th else 1
        n = self.n
        S = np.broadcast_to(np.diag(self.se ** 2), (N, n, n)).copy()
        if c["same_g"].any():
            if self.correlation == "exchangeable":
                S += th["r"][:, None, None] * (c["same_g"] * c["se2"])[None]
            elif self.correlation == "decay":
                S += np.where(c["same_g"][None], th["r"][:, None, None] ** c["lag"][None],
                              0.0) * c["se2"][None]
            else:
                S += (c["ratio"] * c["se2"])[None]
        if self.use_tau:
            i = np.arange(n)
            S[:, i, i] += (th["tau"] ** 2)[:, None] * self.h[None, :]
        if self.use_subgroup:
            S += (th["sigma_subgroup"] ** 2)[:, None, None] * c["same_s"][None]
        if self.use_time:
            if self.use_rho:
                K = np.power(th["rho"][:, None, None], c["dt"][None])
            else:
                K = (c["dt"] == 0)[None].astype(float)
            S += (th["sigma_time"] ** 2)[:, None, None] * (c["same_s"][None] * K)
        if self.use_study:
            S += (th["sigma_study"] ** 2)[:, None, None] * c["same_j"][None]
        return S

    def subset(self, keep) -> "GHMDesign":
        """The same model (levels, hyperparameters, priors, estimands) on a subset of rows:
        for leave-one-out, where dropping a row must not change the model."""
        keep = np.asarray(keep, dtype=bool)
        out = GHMDesign(**{f: getattr(self, f) for f in self.__dataclass_fields__})
        for f in ("y", "se", "h", "s_idx", "t_idx", "j_idx", "group"):
            setattr(out, f, getattr(self, f)[keep])
        out.rows = self.rows[keep].reset_index(drop=True)
        return out

    def with_y(self, y) -> "GHMDesign":
        """The same design with other estimates (simulation, calibration)."""
        out = GHMDesign(**{f: getattr(self, f) for f in self.__dataclass_fields__})
        out.y = np.asarray(y, dtype=float).copy()
        return out

    # ---- description ---------------------------------------------------------------------
    def prior_table(self) -> pd.DataFrame:
        """One row per prior: parameter, prior, 95% prior interval, where it comes from."""
        rows = []
        mp = self.mean_prior
        which = "mu" if self.p == 1 else "m_s (each subgroup)"
        rows.append(dict(parameter=which, prior=str(mp), **_interval_of_mean(mp),
                         source=getattr(mp, "source", "")))
        for h in self.hypers:
            lo, hi = h.prior_ppf(np.array([0.025, 0.975]))
            rows.append(dict(parameter=h.name, prior=str(h.prior), lower=float(lo),
                             upper=float(hi), source=getattr(h.prior, "source", "")))
        for k, v in self.fixed.items():
            rows.append(dict(parameter=k, prior=f"fixed at {v:g}", lower=float(v),
                             upper=float(v), source=self.defaults.get(k, "")))
        for a, b in self.contrasts:
            lo, hi = self.contrast_prior_interval()
            rows.append(dict(parameter=f"contrast {self.subgroups[a]} - {self.subgroups[b]}",
                             prior=self.contrast_prior_text(), lower=lo, upper=hi,
                             source="implied by the priors above"))
        return pd.DataFrame(rows, columns=["parameter", "prior", "lower", "upper", "source"])

    def contrast_prior_interval(self, level: float = 0.95) -> tuple[float, float]:
        """Central prior interval of a subgroup contrast m_a - m_b implied by the priors."""
        q = 0.5 + level / 2
        if self.subgroup_mode == "fixed":
            if self.mean_prior.is_flat:
                return (-math.inf, math.inf)
            sd = math.sqrt(2.0) * float(self.mean_prior.sd)
            return (-stats.norm.ppf(q) * sd, stats.norm.ppf(q) * sd)
        # random: a_a - a_b ~ N(0, 2 sigma²), sigma from its prior: a scale mixture
        x = _scale_mixture_quantile(self._subgroup_prior(), math.sqrt(2.0), q)
        return (-x, x)

    def _subgroup_prior(self):
        for h in self.hypers:
            if h.name == "sigma_subgroup":
                return h.prior
        from bayesmeta.exact import FixedTau
        return FixedTau(float(self.fixed.get("sigma_subgroup", 0.0)))

    def contrast_prior_text(self) -> str:
        if self.subgroup_mode == "fixed":
            if self.mean_prior.is_flat:
                return "flat (improper) prior on each subgroup mean"
            return f"Normal(0, sd = {math.sqrt(2.0) * float(self.mean_prior.sd):.4g})"
        return f"Normal(0, 2 sigma_subgroup²), sigma_subgroup ~ {self._subgroup_prior()}"


def _interval_of_mean(mp) -> dict:
    if mp.is_flat:
        return dict(lower=-math.inf, upper=math.inf)
    z = stats.norm.ppf(0.975)
    return dict(lower=float(mp.mean - z * mp.sd), upper=float(mp.mean + z * mp.sd))


def _scale_mixture_quantile(prior, c: float, q: float) -> float:
    """q-quantile of c * sigma * Z, Z ~ N(0, 1), sigma from ``prior`` (by quadrature)."""
    from bayesmeta.exact import FixedTau
    if isinstance(prior, FixedTau):
        return c * prior.value * float(stats.norm.ppf(q))
    u = (np.arange(4000) + 0.5) / 4000
    sig = np.asarray(prior.ppf_tau(u), dtype=float)

    def F(x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.mean(special.ndtr(np.where(sig > 0, x / (c * sig), np.inf))))
    lo, hi = 0.0, 1.0
    while F(hi) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if F(mid) < q else (lo, mid)
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------------------------
# building a design from a table
# --------------------------------------------------------------------------------------------
def _clean_rows(data) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        data = pd.DataFrame(data)
    df = data.reset_index(drop=True).copy()
    if len(df) == 0:
        raise DataError("no rows", fix="give at least one estimate")
    if "yi" not in df:
        raise DataError("need a 'yi' column (the estimates)", column="yi")
    if "sei" not in df:
        if "vi" not in df:
            raise DataError("need 'sei' or 'vi'", column="sei",
                            fix="add the standard errors (sei) or sampling variances (vi)")
        v = pd.to_numeric(df["vi"], errors="coerce")
        df["sei"] = np.sqrt(v.where(v > 0))
    for col in ("yi", "sei"):
        v = pd.to_numeric(df[col], errors="coerce").astype(float)
        bad = ~np.isfinite(v.to_numpy())
        if col == "sei":
            bad |= ~(v.to_numpy() > 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"'{col}' must be finite{' and > 0' if col == 'sei' else ''}, got "
                            f"{df[col].iloc[i]!r}", row=i + 1, column=col)
        df[col] = v
    if "time" not in df:
        raise DataError("need a 'time' column (the follow-up time of each row)", column="time")
    miss = df["time"].isna() | (df["time"].astype(str).str.strip() == "")
    if miss.any():
        raise DataError("'time' missing", row=int(np.flatnonzero(miss)[0]) + 1, column="time")
    if "outcome" in df and df["outcome"].nunique() > 1:
        raise DataError(f"rows of {df['outcome'].nunique()} outcomes given", column="outcome",
                        fix="fit one outcome at a time")
    for col in ("study", "source", "subgroup"):
        if col not in df:
            df[col] = ""
        df[col] = ["" if (v is None or (isinstance(v, float) and math.isnan(v)) or pd.isna(v))
                   else str(v).strip() for v in df[col]]
    df["subgroup"] = [v if v else ALL for v in df["subgroup"]]
    if "row_kind" not in df:
        if "pooled" in df:
            df["row_kind"] = np.where(df["pooled"].astype(bool), "pooled", "study")
        else:
            df["row_kind"] = "study"
    df["row_kind"] = ["study" if (pd.isna(v) or str(v).strip() == "") else str(v).strip()
                      for v in df["row_kind"]]
    bad = ~df["row_kind"].isin(ROW_KINDS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"row_kind {df['row_kind'].iloc[i]!r} is not one of {list(ROW_KINDS)}",
                        row=i + 1, column="row_kind")
    nolab = (df["row_kind"] == "study") & (df["study"] == "")
    if nolab.any():
        raise DataError("a study row needs a study label", row=int(np.flatnonzero(nolab)[0]) + 1,
                        column="study", fix="label the study, or mark the row as pooled")
    df["time_label"] = [_fmt_time(t) for t in df["time"]]
    key = df["study"].where(df["row_kind"] == "study", df["source"])
    dup = df.assign(_k=key)[key != ""].duplicated(["_k", "time_label", "subgroup"], keep=False)
    if dup.any():
        i = int(np.flatnonzero(dup.reindex(df.index, fill_value=False).to_numpy())[0])
        raise DataError("two rows of the same study/source, time and subgroup", row=i + 1,
                        fix="each study or source gives one estimate per time and subgroup")
    return df


def _overlap_check(df: pd.DataFrame) -> None:
    """An all-patients row beside subgroup rows at the same time counts patients twice."""
    if df["subgroup"].nunique() < 2 or ALL not in set(df["subgroup"]):
        return
    for t in df.loc[df["subgroup"] == ALL, "time_label"]:
        if ((df["time_label"] == t) & (df["subgroup"] != ALL)).any():
            i = int(np.flatnonzero(((df["time_label"] == t) & (df["subgroup"] == ALL))
                                   .to_numpy())[0])
            raise DataError(f"an all-patients row and subgroup rows at time {t} describe the "
                            "same patients twice", row=i + 1, column="subgroup",
                            fix="fit the all-patients rows and the subgroup rows separately")


def _hyper_prior(value, default, kind: str, name: str, reason: str, fixed: dict, hypers: list,
                 defaults: dict, notes: list):
    """Resolve one hyperparameter: a number fixes it, a prior makes it free, None = default."""
    from bayesmeta.exact import FixedTau
    src = "given"
    if value is None:
        value, src = default, "default"
    if isinstance(value, str):
        value = P.parse_prior(value, kind="tau") if kind == "scale" else float(value)
    if isinstance(value, FixedTau):
        value = float(value.value)
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        v = float(value)
        ok = (v >= 0 and math.isfinite(v)) if kind == "scale" else (-1 < v < 1)
        if not ok:
            raise SpecError(f"Invalid {name} {value!r}: must be "
                            + ("a number >= 0" if kind == "scale" else "in (-1, 1)"), key=name)
        fixed[name] = v
        defaults[name] = reason if src == "default" else "given"
        notes.append(f"{name} fixed at {v:g}" + (f" ({reason})" if src == "default" else ""))
        return
    if kind == "scale" and not isinstance(value, P.TauPrior):
        raise SpecError(f"Invalid {name} prior {value!r}: must be a tau prior (e.g. "
                        "HalfNormal(0.5)) or a number", key=name)
    if kind == "corr" and not isinstance(value, BetaPrior):
        raise SpecError(f"Invalid {name} prior {value!r}: must be a BetaPrior or a number in "
                        "(-1, 1)", key=name)
    if kind == "scale" and not getattr(value, "is_proper", True):
        raise SpecError(f"{name} prior {value} is improper", key=name,
                        fix="use a proper prior")
    hypers.append(Hyper(name, value, kind))
    defaults[name] = reason if src == "default" else "given"
    notes.append(f"{name} ~ {value}" + (f" ({reason})" if src == "default" else ""))


def build_design(data, *, time_structure: str = "exchangeable", subgroup: str = "fixed",
                 correlation: str = "exchangeable", r=None, mean_prior=None,
                 sigma_time=None, sigma_study=None, tau=None, sigma_subgroup=None, rho=None,
                 windows: Mapping | None = None, contrasts=None, measure: str = "MD",
                 extrapolate: bool = False) -> GHMDesign:
    """Validate a table and fix the model: levels, hyperparameters and priors, estimands.

    Parameters
    ----------
    data : DataFrame
        Columns ``yi``, ``sei`` (or ``vi``), ``time``; optional ``time_value`` (numeric time of
        each row; default: the ``time`` label read as a number), ``subgroup`` (empty: one
        subgroup ``"all"``), ``study``, ``source`` (the published source of a pooled row),
        ``row_kind`` (``"study"`` default | ``"pooled"`` | ``"subgroup_pooled"``) or a boolean
        ``pooled`` column, optional ``n1i``/``n2i``/``ni`` (for the scale-aware default priors).
    time_structure : ``"exchangeable"`` | ``"ar1"`` | ``"car"``
    subgroup : ``"fixed"`` | ``"random"``
    correlation : ``"exchangeable"`` | ``"decay"`` | ``"ratio"``
        Form of the within-group sampling correlation (module docstring).
    r : float, BetaPrior or None
        Within-group sampling correlation: a number (known), a prior (integrated); default
        :data:`DEFAULT_R` (stated in the notes). Rejected with ``"ratio"`` (no parameter).
    mean_prior : Normal or Flat
        Prior of each fixed subgroup mean (or of mu for random subgroups); default
        :func:`bayesmeta.priors.default_mu_prior`.
    sigma_time, sigma_study, tau, sigma_subgroup : TauPrior, number or None
        Priors of the scale parameters (a number fixes one); default
        :func:`bayesmeta.priors.default_tau_prior` (scale-aware for MD).
    rho : BetaPrior, number or None
        Prior of the time correlation (``ar1``/``car``); default ``BetaPrior(1, 1)`` on (0, 1).
    windows : {name: {time: weight}}, optional
        Time windows whose weighted average is reported per subgroup; default one window
        ``"avg(...)"`` with equal weights on every time of the data.
    contrasts : list of (a, b), optional
        Subgroup contrasts a - b; default every pair (later minus earlier subgroup in the
        order of first appearance, the all-patients level excluded).
    extrapolate : bool
        Also report cell means and contrasts at times where a subgroup was not observed
        (marked ``extrapolation`` in the summary's ``note``).
    """
    if time_structure not in TIME_STRUCTURES:
        raise SpecError(f"Invalid time_structure {time_structure!r}: must be one of "
                        f"{list(TIME_STRUCTURES)}.", key="time_structure")
    if subgroup not in SUBGROUP_MODES:
        raise SpecError(f"Invalid subgroup {subgroup!r}: must be one of {list(SUBGROUP_MODES)}.",
                        key="subgroup")
    if correlation not in CORRELATION_FORMS:
        raise SpecError(f"Invalid correlation {correlation!r}: must be one of "
                        f"{list(CORRELATION_FORMS)}.", key="correlation")
    df = _clean_rows(data)
    _overlap_check(df)
    notes: list[str] = []
    # levels ---------------------------------------------------------------------------------
    named = [g for g in dict.fromkeys(df["subgroup"]) if g != ALL]
    subgroups = named + ([ALL] if ALL in set(df["subgroup"]) else [])
    if "time_value" in df:
        tv = pd.to_numeric(df["time_value"], errors="coerce").to_numpy(float)
        if not np.all(np.isfinite(tv)):
            i = int(np.flatnonzero(~np.isfinite(tv))[0])
            raise DataError("'time_value' must be a finite number", row=i + 1,
                            column="time_value")
    else:
        tv = np.array([_num_time(t) if _num_time(t) is not None else np.nan
                       for t in df["time_label"]], dtype=float)
    labels = list(dict.fromkeys(df["time_label"]))
    lab_val = {}
    for lab, v in zip(df["time_label"], tv):
        if lab in lab_val and not (np.isnan(lab_val[lab]) and np.isnan(v)) \
                and lab_val[lab] != v:
            raise DataError(f"time {lab!r} has two numeric values ({lab_val[lab]:g}, {v:g})",
                            column="time_value")
        lab_val[lab] = v
    numeric = all(np.isfinite(v) for v in lab_val.values())
    needs_num = time_structure in ("ar1", "car") or correlation in ("decay", "ratio")
    if needs_num and not numeric and len(labels) > 1:
        bad = [lab for lab, v in lab_val.items() if not np.isfinite(v)]
        raise DataError(f"times {bad} are not numbers; time_structure={time_structure!r} and "
                        f"correlation={correlation!r} need ordered numeric times",
                        column="time", fix="add a numeric 'time_value' column")
    times = sorted(labels, key=lambda lab: (lab_val[lab], lab)) if numeric else labels
    tvals = np.array([lab_val[lab] for lab in times], dtype=float)
    if correlation == "ratio" and numeric and np.any(tvals <= 0):
        raise DataError("correlation='ratio' needs positive times (sqrt(min/max) of follow-up)",
                        column="time")
    counts = df[df["study"] != ""].groupby("study").size()
    studies = [j for j in dict.fromkeys(df["study"]) if j and counts.get(j, 0) >= 2]
    s_idx = np.array([subgroups.index(g) for g in df["subgroup"]], dtype=int)
    t_idx = np.array([times.index(t) for t in df["time_label"]], dtype=int)
    j_idx = np.array([studies.index(j) if j in studies else -1 for j in df["study"]], dtype=int)
    h = (df["row_kind"] == "study").to_numpy(float)
    key = [(st if kind == "study" else src, g) if (st if kind == "study" else src) else None
           for st, src, kind, g in zip(df["study"], df["source"], df["row_kind"],
                                       df["subgroup"])]
    keys = [k for k in dict.fromkeys(key) if k is not None]
    group = np.array([keys.index(k) if k is not None else -1 for k in key], dtype=int)
    unlabelled = int(((df["row_kind"] != "study") & (df["source"] == "")
                      & (df["study"] == "")).sum())
    if unlabelled and len(df) > 1:
        notes.append(f"{unlabelled} pooled row(s) carry no study or source label: their sampling "
                     "errors are taken as independent of every other row")
    # priors ---------------------------------------------------------------------------------
    pdata = {"vi": df["sei"].to_numpy(float) ** 2}
    for c in ("n1i", "n2i", "ni"):
        if c in df:
            pdata[c] = pd.to_numeric(df[c], errors="coerce").to_numpy(float)
    if mean_prior is None:
        mean_prior, why = P.default_mu_prior(measure, pdata)
        notes.append(f"mean prior {mean_prior} ({why})")
    elif isinstance(mean_prior, str):
        mean_prior = P.parse_prior(mean_prior, kind="mu")
    if not isinstance(mean_prior, (P.Normal, P.Flat)):
        raise SpecError(f"mean_prior must be Normal(mean, sd) or Flat(), got {mean_prior!r}",
                        key="mean_prior")
    scale_default, scale_why = P.default_tau_prior(measure, pdata)
    fixed: dict = {}
    hypers: list[Hyper] = []
    defaults: dict = {}
    multi_sub = len(subgroups) > 1
    if subgroup == "random" and multi_sub:
        _hyper_prior(sigma_subgroup, scale_default, "scale", "sigma_subgroup", scale_why, fixed,
                     hypers, defaults, notes)
    elif sigma_subgroup is not None:
        raise SpecError("sigma_subgroup is used only with subgroup='random' and two or more "
                        "subgroups", key="sigma_subgroup")
    if len(times) > 1:
        _hyper_prior(sigma_time, scale_default, "scale", "sigma_time", scale_why, fixed, hypers,
                     defaults, notes)
        if time_structure != "exchangeable":
            if time_structure == "car" and isinstance(rho, BetaPrior) and rho.lower < 0:
                raise SpecError("car needs rho > 0 (rho^|t - t'| at non-integer lags)",
                                key="rho")
            if time_structure == "car" and isinstance(rho, (int, float)) and rho <= 0:
                raise SpecError(f"Invalid rho {rho!r}: car needs rho in (0, 1)", key="rho")
            _hyper_prior(rho, BetaPrior(1.0, 1.0, source="uniform on (0, 1)"), "corr", "rho",
                         "uniform on (0, 1)", fixed, hypers, defaults, notes)
        elif rho is not None:
            raise SpecError("rho is used only with time_structure 'ar1' or 'car'", key="rho")
    elif sigma_time is not None or rho is not None:
        raise SpecError("sigma_time/rho need two or more distinct times", key="sigma_time")
    if studies:
        _hyper_prior(sigma_study, scale_default, "scale", "sigma_study", scale_why, fixed,
                     hypers, defaults, notes)
    elif sigma_study is not None:
        raise SpecError("sigma_study needs a study with two or more rows", key="sigma_study")
    if h.any():
        _hyper_prior(tau, scale_default, "scale", "tau", scale_why, fixed, hypers, defaults,
                     notes)
    elif tau is not None:
        raise SpecError("tau (within-cell heterogeneity) needs study rows; every row is pooled",
                        key="tau")
    g = group
    has_pairs = bool(((g[:, None] == g[None, :]) & (g[:, None] >= 0)).sum() > len(g[g >= 0]))
    if correlation == "ratio":
        if r is not None:
            raise SpecError("correlation='ratio' has no parameter r", key="r")
        if has_pairs:
            notes.append("sampling correlation of rows of the same study/source: "
                         "sqrt(min(t, t')/max(t, t')) (cumulative outcomes)")
    elif has_pairs:
        if r is None:
            r_val = DEFAULT_R
            fixed["r"] = r_val
            defaults["r"] = "default"
            notes.append(f"within-study sampling correlation r = {r_val:g} ({correlation}; "
                         "default: change scores of the same patients are typically "
                         "correlated 0.5-0.9; vary it with r_sensitivity)")
        else:
            _hyper_prior(r, None, "corr", "r", "", fixed, hypers, defaults, notes)
        lo_r = fixed["r"] if "r" in fixed else next(x.prior.lower for x in hypers
                                                    if x.name == "r")
        if lo_r < 0 and (correlation == "decay" or "r" not in fixed):
            raise SpecError(f"r must be >= 0 for correlation={correlation!r}"
                            + (" (r^|t - t'| at non-integer lags)" if correlation == "decay"
                               else " when given a prior"), key="r")
    elif r is not None:
        raise SpecError("r is used only when a study or source has rows at two or more times "
                        "within a subgroup", key="r")
    if numeric and len(times) > 1 and time_structure == "car":
        notes.append(f"car: correlation rho^|t - t'| with t in the data's time unit "
                     f"(times {', '.join(times)})")
    # estimands ------------------------------------------------------------------------------
    if windows is None:
        windows = {f"avg({','.join(times)})": {t: 1.0 for t in times}} if len(times) > 1 else {}
    wins = [Window.make(k, v) for k, v in dict(windows).items()]
    for w in wins:
        unknown = [t for t, _ in w.weights if t not in times]
        if unknown:
            raise SpecError(f"window {w.name!r}: times {unknown} not in the data {times}",
                            key="windows")
        if w.name in times:
            raise SpecError(f"window name {w.name!r} equals a time label", key="windows")
    if contrasts is None:
        contrasts = [(named[j], named[i]) for i in range(len(named))
                     for j in range(i + 1, len(named))]
    cons = []
    for c in contrasts:
        a, b = tuple(c)
        miss = [x for x in (a, b) if x not in subgroups]
        if miss or a == b:
            raise SpecError(f"Invalid contrast {c!r}: subgroups {miss or [a]} "
                            f"{'not in the data ' + str(subgroups) if miss else 'repeated'}",
                            key="contrasts")
        cons.append((subgroups.index(a), subgroups.index(b)))
    d = GHMDesign(rows=df, y=df["yi"].to_numpy(float), se=df["sei"].to_numpy(float), h=h,
                  s_idx=s_idx, t_idx=t_idx, j_idx=j_idx, group=group, subgroups=subgroups,
                  times=times, time_values=tvals, studies=studies,
                  time_structure=time_structure, subgroup_mode=subgroup,
                  correlation=correlation, mean_prior=mean_prior, hypers=hypers, fixed=fixed,
                  windows=wins, contrasts=cons, measure=str(measure).upper(), notes=notes,
                  defaults=defaults)
    if subgroup == "fixed" and cons:
        notes.append(f"fixed subgroup means: implied prior of each contrast "
                     f"{d.contrast_prior_text()}, 95% within "
                     f"[{d.contrast_prior_interval()[0]:.4g}, "
                     f"{d.contrast_prior_interval()[1]:.4g}]")
    d.estimands = _estimands(d, extrapolate)
    return d


def _estimands(d: GHMDesign, extrapolate: bool) -> list[Estimand]:
    """Every reported linear combination of z = (beta, gamma)."""
    o = d.offsets
    p, g = d.p, o["g"]
    T = d.n_t
    out: list[Estimand] = []

    def level(s):  # m_s as a row over z
        L = np.zeros(p + g)
        if p == 1:
            L[0] = 1.0
        else:
            L[s] = 1.0
        if d.use_subgroup:
            L[p + o["a"] + s] = 1.0
        return L

    def cell(s, t):
        L = level(s)
        if d.use_time:
            L[p + o["d"] + s * T + t] = 1.0
        return L

    def window(s, w):
        L = np.zeros(p + g)
        for lab, wt in w.weights:
            L += wt * cell(s, d.times.index(lab))
        return L

    def obs_note(ss, ts):
        miss = [f"{d.subgroups[s]} at {d.times[t]}" for s in ss for t in ts
                if not d.observed(s, t)]
        return ("extrapolation: not observed: " + ", ".join(miss)) if miss else ""

    new_extra = tuple((nm, 1.0) for nm, use in (("sigma_study", d.use_study),
                                                 ("tau", d.use_tau)) if use)
    if d.subgroup_mode == "random" and d.n_s > 1:
        L = np.zeros(p + g)
        L[0] = 1.0
        out.append(Estimand(Param("mu"), L))
    for s, sg in enumerate(d.subgroups):
        sub = {} if d.n_s == 1 else {"subgroup": sg}
        out.append(Estimand(Param("mu", sub), level(s)))
        if d.use_time:
            for t, tl in enumerate(d.times):
                note = obs_note([s], [t])
                if note and not extrapolate:
                    continue
                out.append(Estimand(Param("mu", {**sub, "time": tl}), cell(s, t), note=note))
            for w in d.windows:
                ts = [d.times.index(lab) for lab, wt in w.weights if wt > 0]
                out.append(Estimand(Param("mu", {**sub, "time": w.name}), window(s, w),
                                    note=obs_note([s], ts)))
        if new_extra:
            for t, tl in enumerate(d.times):
                if not d.observed(s, t) and not extrapolate:
                    continue
                tc = {"time": tl} if d.use_time else {}
                out.append(Estimand(Param("theta_new", {**sub, **tc}), cell(s, t),
                                    extra=new_extra, note=obs_note([s], [t])))
    for a, b in d.contrasts:
        lab = f"{d.subgroups[a]} - {d.subgroups[b]}"
        out.append(Estimand(Param("contrast", subgroup=lab), level(a) - level(b),
                            note="difference of subgroup levels" if d.use_time else ""))
        if d.use_time:
            for t, tl in enumerate(d.times):
                note = obs_note([a, b], [t])
                if note and not extrapolate:
                    continue
                out.append(Estimand(Param("contrast", subgroup=lab, time=tl),
                                    cell(a, t) - cell(b, t), note=note))
            for w in d.windows:
                ts = [d.times.index(x) for x, wt in w.weights if wt > 0]
                out.append(Estimand(Param("contrast", subgroup=lab, time=w.name),
                                    window(a, w) - window(b, w), note=obs_note([a, b], ts)))
    return out
