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
  study rows. ``study_time="independent"`` (default): independent across a study's times, so
  ``u_j + e_r`` is compound symmetry within a study; ``"ar1"`` / ``"car"``: a study's ``e`` at
  its times (within a subgroup) are correlated ``rho_within^|i-k|`` (positions) /
  ``rho_within^|t-t'|`` (times), the study x time structures of metafor's ``rma.mv``
  (``struct = "AR"`` / ``"CAR"``), so that the classical twin (:mod:`bayesmeta.ghm_reml`) is
  the same model for every ``struct``.
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

Given the hyperparameters ``theta = (sigma_subgroup, sigma_time, rho, sigma_study, tau,
rho_within, r)`` (the ones present), the model is Gaussian in the latent vector
``z = (beta, gamma)`` with ``beta`` the means that have a normal (or flat) prior (``m_s``, or
``mu`` for random subgroups) and ``gamma = (a_s, d_{s,t}, u_j) ~ N(0, G(theta))``:
``y | z ~ N(X beta + Z gamma, R(theta))``, ``R = tau² E(rho_within) + V(r)``. This module holds
the design (:class:`GHMDesign`: ``X``, ``Z``, ``G``, ``R`` and ``Sigma = Z G Z' + R``
vectorised over many ``theta``), the hyperparameters with their priors and transforms
(:class:`Hyper`, :class:`BetaPrior`) and the estimands as rows of a matrix over ``z``
(:class:`Estimand`, :class:`Window`); :mod:`bayesmeta.ghm_build` builds a design from a table.
The engines are :mod:`bayesmeta.ghm_exact` (quadrature, :mod:`bayesmeta.ghm_quad`,
:mod:`bayesmeta.ghm_kernel`), :mod:`bayesmeta.ghm_reml` (the classical twin) and
:mod:`bayesmeta.ghm_pymc` (MCMC check); :mod:`bayesmeta.workflow` checks any Bayesian fit.

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
from bayesmeta.exceptions import SpecError
from bayesmeta.fits import Param

__all__ = ["TIME_STRUCTURES", "STUDY_TIME", "SUBGROUP_MODES", "CORRELATION_FORMS", "ROW_KINDS", "BetaPrior",
           "Hyper", "Estimand", "Window", "GHMDesign", "build_design", "DEFAULT_R", "fmt_time",
           "num_time"]

TIME_STRUCTURES = ("exchangeable", "ar1", "car")
STUDY_TIME = ("independent", "ar1", "car")
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
        w = {str(fmt_time(k)): float(v) for k, v in dict(weights).items()}
        if not w or any(not math.isfinite(v) or v < 0 for v in w.values()) or sum(w.values()) <= 0:
            raise SpecError(f"Invalid time window {name!r}: weights must be >= 0 with a positive "
                            f"sum, got {weights!r}")
        tot = sum(w.values())
        return Window(str(name), tuple((k, v / tot) for k, v in w.items()))


def fmt_time(t) -> str:
    """A time label: integral numbers without decimals (``4.0`` -> ``"4"``), else as given."""
    try:
        f = float(t)
    except (TypeError, ValueError):
        return str(t)
    if not math.isfinite(f):
        return str(t)
    return str(int(f)) if f.is_integer() else repr(f)


def num_time(t):
    """The number a time label stands for, or None."""
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
    study_time: str = "independent"

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
    def use_rho_within(self) -> bool:
        """A study's within-cell deviations are correlated across its times (study_time
        ``"ar1"``/``"car"``) and some study has two such rows."""
        return (self.study_time != "independent" and self.use_tau
                and bool(np.any(self._same_study_time() & (self._within_distance() > 0))))

    def _same_study_time(self) -> np.ndarray:
        """Row pairs of the same study and subgroup, both study rows (h = 1), i != k."""
        st = self.rows["study"].to_numpy()
        h = self.h > 0
        same = (st[:, None] == st[None, :]) & h[:, None] & h[None, :] & \
            (self.s_idx[:, None] == self.s_idx[None, :]) & (st[:, None] != "")
        np.fill_diagonal(same, False)
        return same

    def _within_distance(self) -> np.ndarray:
        """Lags of the study x time correlation: positions in the ordered times (ar1) or
        |t - t'| (car)."""
        if self.study_time == "car":
            t = self.row_time_values()
            return np.abs(t[:, None] - t[None, :])
        return np.abs(self.t_idx[:, None] - self.t_idx[None, :]).astype(float)

    def within_corr(self, th: dict) -> np.ndarray | None:
        """(N, n, n) off-diagonal correlation of the within-cell deviations e (None when they
        are independent)."""
        if not self.use_rho_within:
            return None
        same = self._same_study_time()
        D = self._within_distance()
        return np.where(same[None], np.power(th["rho_within"][:, None, None], D[None]), 0.0)

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
        """(N, n, n) residual covariance ``tau² E + V`` (``E = diag(h)``, plus the study x time
        correlations of :meth:`within_corr`)."""
        R = self.V(th)
        if self.use_tau:
            i = np.arange(self.n)
            R[:, i, i] += (th["tau"] ** 2)[:, None] * self.h[None, :]
            W = self.within_corr(th)
            if W is not None:
                R += (th["tau"] ** 2)[:, None, None] * W
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
                 "same_g": same_g, "se2": np.outer(self.se, self.se),
                 "within": ((self._same_study_time(), self._within_distance())
                            if self.use_rho_within else None)}
            if self.correlation == "decay":
                c["lag"] = np.abs(t[:, None] - t[None, :])
            elif self.correlation == "ratio" and same_g.any():
                lo, hi = np.minimum(t[:, None], t[None, :]), np.maximum(t[:, None], t[None, :])
                c["ratio"] = np.where(same_g, np.sqrt(lo / hi), 0.0)
            self.__dict__["_rp"] = c
        return c

    def _sigma_terms(self) -> tuple:
        """The parts of Sigma linear in a hyperparameter function, computed once per design:
        (constant (n, n), names, powers, matrices (k + 1, n*n): the k terms, then the
        constant) with ``Sigma = constant + sum_j th[name_j] ** power_j * matrix_j`` plus the
        terms that are not linear (correlations raised to lags), added by :meth:`Sigma`."""
        c = self._rowpairs()
        t = c.get("terms")
        if t is not None:
            return t
        n = self.n
        const = np.diag(self.se ** 2)
        names, powers, mats = [], [], []
        if c["same_g"].any():
            if self.correlation == "exchangeable":
                names.append("r"), powers.append(1), mats.append(c["same_g"] * c["se2"])
            elif self.correlation != "decay":
                const = const + c["ratio"] * c["se2"]
        if self.use_tau:
            names.append("tau"), powers.append(2), mats.append(np.diag(self.h.astype(float)))
        if self.use_subgroup:
            names.append("sigma_subgroup"), powers.append(2), mats.append(c["same_s"] * 1.0)
        if self.use_time and not self.use_rho:
            names.append("sigma_time"), powers.append(2)
            mats.append(c["same_s"] * (c["dt"] == 0))
        if self.use_study:
            names.append("sigma_study"), powers.append(2), mats.append(c["same_j"] * 1.0)
        # the constant is the last row, multiplied by a column of ones: one pass over the
        # (N, n, n) result
        M = np.array(mats + [const], dtype=float).reshape(len(mats) + 1, n * n)
        t = (const, names, powers, M)
        c["terms"] = t
        return t

    def Sigma(self, th: dict) -> np.ndarray:
        """(N, n, n) covariance of y given beta and theta, ``Z G Z' + R``, assembled from the
        row-pair structure (O(n²) per node instead of O(n g²)): the terms linear in a
        hyperparameter function in one matrix product over the nodes, then the
        correlations raised to lags."""
        c = self._rowpairs()
        const, names, powers, M = self._sigma_terms()
        N = next(iter(th.values())).shape[0] if th else 1
        n = self.n
        coef = np.column_stack([np.asarray(th[k], dtype=float) ** pw
                                for k, pw in zip(names, powers)] + [np.ones(N)])
        S = (coef @ M).reshape(N, n, n)
        if c["same_g"].any() and self.correlation == "decay":
            S += np.where(c["same_g"][None], th["r"][:, None, None] ** c["lag"][None],
                          0.0) * c["se2"][None]
        if self.use_tau and c["within"] is not None:
            S += (th["tau"] ** 2)[:, None, None] * np.where(
                c["within"][0][None], np.power(th["rho_within"][:, None, None],
                                               c["within"][1][None]), 0.0)
        if self.use_time and self.use_rho:
            K = np.power(th["rho"][:, None, None], c["dt"][None])
            S += (th["sigma_time"] ** 2)[:, None, None] * (c["same_s"][None] * K)
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


def build_design(data, **options) -> GHMDesign:
    """Validate a table and fix the model: see :func:`bayesmeta.ghm_build.build_design`."""
    from bayesmeta.ghm_build import build_design as _build
    return _build(data, **options)
