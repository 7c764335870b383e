"""Absolute effects: a relative effect combined with a baseline risk that has its own uncertainty.

Baseline risk (the control-arm risk of the outcome's events, per time point) is data, never a
default:

* :func:`baseline_from_statement` - a user statement: ``events/n`` (``"12/40"``) or a central
  value with a range (``"0.80 (0.70-0.88)"``, read as an equal-tailed interval at ``level``).
  Both become a Beta distribution; the mappings are documented there.
* :func:`baseline_from_counts` - study-level control-arm counts: a random-effects model on
  the logit of the control risk at each time (binomial likelihood, exact 2-D quadrature over
  the mean logit and the between-study SD).
* :func:`require_baseline` - the one-line :class:`SpecError` when an absolute effect is asked
  for without a baseline.

:func:`absolute_effect` combines the effect's posterior (log OR, or log HR for a cumulative
risk) with the baseline distribution, assuming the two are independent (the baseline is
estimated from control arms or stated, the effect from the comparison), and returns the risk
difference with its interval, P(benefit), P(gain > a stated clinically important difference)
and the number needed to treat in Altman's form (:class:`NNT`). Direction and events come from
:class:`bayesmeta.direction.Direction`.

References: Altman DG (1998). Confidence intervals for the number needed to treat. BMJ
317:1309-1312. doi:10.1136/bmj.317.7168.1309
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from bayesmeta.crossed import DensityQuadrature
from bayesmeta.direction import Direction
from bayesmeta.exceptions import DataError, DataWarning, SpecError
from bayesmeta.mixture import EffectDistribution

__all__ = ["BetaRisk", "LogitMixtureRisk", "baseline_from_statement", "baseline_from_counts",
           "require_baseline", "absolute_effect", "AbsoluteEffect", "NNT", "SCALES"]

#: effect scales with an absolute conversion: treated risk p1 from control risk p0 and x
#: logOR: logit p1 = logit p0 + x; logHR: 1 - p1 = (1 - p0) ** exp(x) (proportional hazards,
#: p = cumulative risk of the event by the time point)
SCALES = ("logOR", "logHR")
_HOW_TO = ('state the control-arm risk per time point as events/n (e.g. "12/40") or as a '
           'central value with a range (e.g. "0.80 (0.70-0.88)"), or give study-level '
           'control-arm counts')
_GL_NODES = 128


# ---------------------------------------------------------------------------------------------
# baseline risk distributions
# ---------------------------------------------------------------------------------------------
class _Risk:
    events: str | None
    source: str
    how: str

    def _check_events(self):
        if self.events is not None and self.events not in ("deaths", "survivors"):
            raise SpecError(f"Invalid events {self.events!r}: must be 'deaths' or 'survivors'")

    def quantile(self, q) -> np.ndarray:
        p, w = self.nodes()
        o = np.argsort(p)
        cw = np.cumsum(w[o])
        return np.interp(np.atleast_1d(q), cw - 0.5 * w[o], p[o])

    def summary(self, level: float = 0.95) -> dict:
        a = (1.0 - level) / 2.0
        lo, md, hi = self.quantile([a, 0.5, 1.0 - a])
        p, w = self.nodes()
        return {"mean": float(w @ p), "median": float(md), "low": float(lo),
                "high": float(hi), "level": level}


@dataclass(frozen=True)
class BetaRisk(_Risk):
    """p ~ Beta(a, b): the control-arm risk of ``events``."""

    a: float
    b: float
    events: str | None = None
    source: str = ""
    how: str = ""

    def __post_init__(self):
        if not (math.isfinite(self.a) and math.isfinite(self.b) and self.a > 0 and self.b > 0):
            raise SpecError(f"Beta risk needs a > 0 and b > 0, got a={self.a!r}, b={self.b!r}")
        self._check_events()

    def nodes(self, n: int = _GL_NODES):
        """Gauss-Jacobi rule for the Beta weight (exact for polynomials of degree < 2n)."""
        x, w = special.roots_jacobi(n, self.b - 1.0, self.a - 1.0)
        if not (np.all(np.isfinite(w)) and w.sum() > 0):   # extreme a, b: quantile-scale rule
            u, w = np.polynomial.legendre.leggauss(n)
            return stats.beta.ppf(0.5 * (u + 1.0), self.a, self.b), w / w.sum()
        return 0.5 * (x + 1.0), w / w.sum()

    def quantile(self, q) -> np.ndarray:
        return stats.beta.ppf(np.atleast_1d(q), self.a, self.b)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.beta(self.a, self.b, size=int(n))

    def complement(self) -> "BetaRisk":
        ev = {"deaths": "survivors", "survivors": "deaths"}.get(self.events)
        return BetaRisk(self.b, self.a, ev, self.source, self.how + "; complemented (1 - p)")

    def describe(self) -> str:
        s = self.summary()
        return (f"Beta({self.a:.4g}, {self.b:.4g}) (median {s['median']:.3g}, 95% interval "
                f"{s['low']:.3g} to {s['high']:.3g}){': ' + self.how if self.how else ''}"
                f"{'; source: ' + self.source if self.source else ''}")


@dataclass(frozen=True, eq=False)
class LogitMixtureRisk(_Risk):
    """logit p ~ sum_k w_k N(m_k, s_k²) (``s_k = 0``: a point); from :func:`baseline_from_counts`."""

    m: np.ndarray
    s: np.ndarray
    w: np.ndarray
    events: str | None = None
    source: str = ""
    how: str = ""

    def __post_init__(self):
        self._check_events()

    def _full_nodes(self, n: int = 24):
        z, gw = np.polynomial.hermite_e.hermegauss(n)
        gw = gw / gw.sum()
        pos = self.s > 0
        eta = np.concatenate([self.m[~pos], (self.m[pos, None] + self.s[pos, None] * z).ravel()])
        wt = np.concatenate([self.w[~pos], (self.w[pos, None] * gw).ravel()])
        return eta, wt / wt.sum()

    def cdf_logit(self, x) -> np.ndarray:
        """P(logit p <= x)."""
        x = np.atleast_1d(np.asarray(x, float))
        pos = self.s > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (x[:, None] - self.m[None, :]) / np.where(pos, self.s, 1.0)[None, :]
        F = np.where(pos[None, :], special.ndtr(z), (x[:, None] >= self.m[None, :]) * 1.0)
        return F @ self.w

    def nodes(self, n: int = _GL_NODES):
        """A quadrature rule for the distribution of p: the points themselves when every
        component is a point (a grid from :func:`baseline_from_counts`) and they number at
        most 16 n; the Gauss-Hermite nodes of every component when they are few (<= 4 n);
        else ``n`` Gauss-Legendre nodes on the quantile scale, p_j = Q(u_j), with Q
        interpolated from the CDF (cumulative weights, or the mixture CDF on 4097 points of
        logit p)."""
        points = not np.any(self.s > 0)
        if (points and self.m.size <= 16 * n) or self.m.size * 24 <= 4 * n:
            eta, wt = self._full_nodes()       # the grid itself: a trapezoid rule
            return special.expit(eta), wt
        if points:   # a very fine grid of points: its CDF is the cumulative sum
            u, gw = np.polynomial.legendre.leggauss(n)
            o = np.argsort(self.m)
            cw = np.cumsum(self.w[o])
            eta = np.interp(0.5 * (u + 1.0), cw - 0.5 * self.w[o], self.m[o])
            return special.expit(eta), gw / gw.sum()
        u, gw = np.polynomial.legendre.leggauss(n)
        u = 0.5 * (u + 1.0)
        lo = float(np.min(self.m - 9.0 * self.s)) - 0.5
        hi = float(np.max(self.m + 9.0 * self.s)) + 0.5
        grid = np.linspace(lo, hi, 4097)
        F = np.concatenate([self.cdf_logit(grid[i:i + 512]) for i in range(0, grid.size, 512)])
        F = np.maximum.accumulate(F)
        keep = np.concatenate([[True], np.diff(F) > 0])
        return special.expit(np.interp(u, F[keep], grid[keep])), gw / gw.sum()
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        k = rng.choice(self.m.size, size=int(n), p=self.w / self.w.sum())
        return special.expit(self.m[k] + self.s[k] * rng.standard_normal(int(n)))

    def complement(self) -> "LogitMixtureRisk":
        ev = {"deaths": "survivors", "survivors": "deaths"}.get(self.events)
        return LogitMixtureRisk(-self.m, self.s, self.w, ev, self.source,
                                self.how + "; complemented (1 - p)")

    def describe(self) -> str:
        s = self.summary()
        return (f"median {s['median']:.3g}, 95% interval {s['low']:.3g} to {s['high']:.3g}"
                f"{': ' + self.how if self.how else ''}"
                f"{'; source: ' + self.source if self.source else ''}")


# ---------------------------------------------------------------------------------------------
# (b) a user statement
# ---------------------------------------------------------------------------------------------
_FRAC = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")
_RANGE = re.compile(r"^\s*([0-9.]+)\s*[\(\[]\s*([0-9.]+)\s*(?:-|–|to|,)\s*([0-9.]+)\s*[\)\]]\s*$")


def _beta_from_interval(low: float, high: float, level: float) -> tuple[float, float]:
    """(a, b) of the Beta whose equal-tailed ``level`` interval is (low, high)."""
    qa, qb = (1.0 - level) / 2.0, (1.0 + level) / 2.0
    # start: moments of the logit-normal with that interval, mapped to a Beta
    z = special.ndtri(qb)
    m = 0.5 * (special.logit(low) + special.logit(high))
    s = (special.logit(high) - special.logit(low)) / (2 * z)
    mean = special.expit(m)
    var = (mean * (1 - mean) * s) ** 2
    k = max(mean * (1 - mean) / var - 1.0, 0.5)
    x0 = np.log([max(mean * k, 1e-3), max((1 - mean) * k, 1e-3)])

    def resid(x):
        a, b = np.exp(x)
        return [special.logit(stats.beta.ppf(qa, a, b)) - special.logit(low),
                special.logit(stats.beta.ppf(qb, a, b)) - special.logit(high)]

    sol = optimize.least_squares(resid, x0, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    a, b = np.exp(sol.x)
    if np.max(np.abs(resid(sol.x))) > 1e-6:
        raise SpecError(f"no Beta distribution has the {level:.0%} interval {low:g} to {high:g}",
                        fix=_HOW_TO)
    return float(a), float(b)


def baseline_from_statement(value, *, events: str | None = None, level: float = 0.95,
                            source: str = "", where: str = "") -> BetaRisk:
    """A stated control-arm risk with its uncertainty, as a Beta distribution.

    Parameters
    ----------
    value : str, tuple or mapping
        * ``"x/n"`` or ``(x, n)``: x events among n control patients -> ``Beta(x + 1/2,
          n - x + 1/2)``, the posterior under the Jeffreys prior Beta(1/2, 1/2) (mean
          (x + 1/2)/(n + 1); its 95% interval is the Jeffreys interval, Brown, Cai & DasGupta
          2001 Stat Sci 16:101).
        * ``"c (lo-hi)"``, ``"c [lo, hi]"`` or ``{"central": c, "low": lo, "high": hi}``: a
          central value with a range read as the equal-tailed ``level`` interval -> the Beta
          whose ``(1-level)/2`` and ``(1+level)/2`` quantiles are ``lo`` and ``hi`` exactly
          (solved numerically). ``c`` is checked against that Beta's median: a
          :class:`DataWarning` when they differ by more than 10% of the range.
        A bare number has no uncertainty and is refused.
    events : {"deaths", "survivors"} or None
        What the risk is the risk of (the control survival is the risk of ``"survivors"``).
    level : float
        Coverage of a stated range.
    source : str
        Where the statement comes from (quoted in reports).
    where : str
        Name of the key in error messages (e.g. ``"control_risk.12"``).
    """
    key = where or "control_risk"
    if not 0.0 < float(level) < 1.0:
        raise SpecError(f"Invalid level {level!r}: must be in (0, 1).", key=key)
    if isinstance(value, str) and _FRAC.match(value):
        x, n = (float(g) for g in _FRAC.match(value).groups())
        value = (x, n)
    if isinstance(value, tuple) and len(value) == 2:
        x, n = float(value[0]), float(value[1])
        if not (n > 0 and 0 <= x <= n and x == round(x) and n == round(n)):
            raise SpecError(f"Invalid events/n {value!r}: need whole 0 <= events <= n, n > 0",
                            key=key, fix=_HOW_TO)
        return BetaRisk(x + 0.5, n - x + 0.5, events, source,
                        f"{x:g}/{n:g} -> Beta(events + 1/2, n - events + 1/2) (Jeffreys)")
    if isinstance(value, str) and _RANGE.match(value):
        c, lo, hi = (float(g) for g in _RANGE.match(value).groups())
        value = {"central": c, "low": lo, "high": hi}
    if isinstance(value, Mapping) and {"central", "low", "high"} <= set(value):
        c, lo, hi = float(value["central"]), float(value["low"]), float(value["high"])
        if not (0.0 < lo < c < hi < 1.0):
            raise SpecError(f"Invalid risk statement {c:g} ({lo:g}-{hi:g}): need "
                            "0 < low < central < high < 1", key=key, fix=_HOW_TO)
        a, b = _beta_from_interval(lo, hi, float(level))
        med = float(stats.beta.median(a, b))
        if abs(med - c) > 0.1 * (hi - lo):
            warnings.warn(f"{key}: the Beta with {level:.0%} interval {lo:g}-{hi:g} has median "
                          f"{med:.3g}, not the stated {c:g}; the interval was kept (state a "
                          "range centred on the value to avoid this)", DataWarning, stacklevel=2)
        return BetaRisk(a, b, events, source,
                        f"{c:g} ({lo:g}-{hi:g}) read as the {level:.0%} equal-tailed interval "
                        "-> Beta matching both ends")
    raise SpecError(f"Invalid control-arm risk {value!r}: a risk needs its uncertainty", key=key,
                    fix=_HOW_TO)


def require_baseline(baseline: Mapping | None, times) -> dict:
    """The baseline per time point, or the one-line :class:`SpecError` saying how to give it."""
    times = [str(t) for t in times]
    got = {str(k): v for k, v in (baseline or {}).items()}
    missing = [t for t in times if t not in got]
    if missing:
        raise SpecError("absolute effects (risk difference, NNT) need the control-arm risk at "
                        f"every time point; missing for {', '.join(missing)}",
                        key="control_risk", fix=_HOW_TO)
    return {t: got[t] for t in times}


# ---------------------------------------------------------------------------------------------
# (a) study-level control-arm counts: random effects on the logit of the control risk
# ---------------------------------------------------------------------------------------------
_AGH_X, _AGH_W = np.polynomial.hermite_e.hermegauss(32)


def _study_loglik(x, n, alpha, sigma):
    """log ∫ Bin(x; n, expit eta) N(eta; alpha, sigma²) d eta, adaptive Gauss-Hermite.

    Shapes: x, n (k,); alpha (A,); sigma scalar -> (A, k). The rule is centred and scaled at
    the Laplace approximation of the integrand (binomial information at the empirical logit
    combined with the normal), so it stays accurate from sigma -> 0 to large sigma.
    """
    ph = (x + 0.5) / (n + 1.0)
    yh = np.log(ph / (1.0 - ph))
    info = n * ph * (1.0 - ph)
    prec = info + 1.0 / sigma ** 2
    m = (info * yh + alpha[:, None] / sigma ** 2) / prec          # (A, k)
    s = 1.0 / np.sqrt(prec)                                      # (k,)
    eta = m[..., None] + s[None, :, None] * _AGH_X               # (A, k, G)
    lbin = (special.gammaln(n + 1) - special.gammaln(x + 1) - special.gammaln(n - x + 1))
    lf = (lbin[None, :, None] + x[None, :, None] * special.log_expit(eta)
          + (n - x)[None, :, None] * special.log_expit(-eta)
          - 0.5 * ((eta - alpha[:, None, None]) / sigma) ** 2 - math.log(sigma)
          - 0.5 * math.log(2 * math.pi))
    # ∫ f = s ∑ w_g f(m + s z_g) / φ(z_g), with w_g normalised to φ
    lw = np.log(_AGH_W / math.sqrt(2 * math.pi)) + 0.5 * _AGH_X ** 2 + 0.5 * math.log(2 * math.pi)
    return np.log(s)[None, :] + special.logsumexp(lf + lw, axis=-1)


def _logit_re_posterior(x, n, alpha_prior, sigma_prior, n_sigma=64, max_alpha=4001):
    """p(alpha, sigma | x) on a product rule: a uniform alpha grid (trapezoid) common to all
    sigma nodes x Gauss-Legendre nodes on the sigma prior's quantile scale (the prior is the
    weight). Returns ``(alpha grid, sigma nodes, W)`` with W (A, J) normalised.

    The alpha grid covers +-10 normal-approximation posterior SDs of alpha given each sigma
    node and its step is a fifth of the smallest such SD, so every conditional is resolved.
    """
    u, gw = np.polynomial.legendre.leggauss(n_sigma)
    sig = np.maximum(np.asarray(sigma_prior.ppf_tau(0.5 * (u + 1.0)), dtype=float), 1e-8)
    gw = 0.5 * gw
    ph = (x + 0.5) / (n + 1.0)
    yh = np.log(ph / (1.0 - ph))
    vh = 1.0 / (x + 0.5) + 1.0 / (n - x + 0.5)
    m0, s0 = float(alpha_prior.mean), float(alpha_prior.sd)
    w = 1.0 / (vh[None, :] + sig[:, None] ** 2)                               # (J, k)
    prec = w.sum(1) + 1.0 / s0 ** 2
    am = (w @ yh + m0 / s0 ** 2) / prec
    asd = 1.0 / np.sqrt(prec)
    lo, hi = float(np.min(am - 10 * asd)), float(np.max(am + 10 * asd))
    h = max(float(asd.min()) / 5.0, (hi - lo) / (max_alpha - 1))
    a = np.arange(lo, hi + h, h)
    ll = np.stack([_study_loglik(x, n, a, sg).sum(1) for sg in sig], axis=1)   # (A, J)
    lp = ll + stats.norm.logpdf(a, m0, s0)[:, None] + np.log(gw)[None, :]
    W = np.exp(lp - lp.max())
    return a, sig, W / W.sum()


def _predictive_bins(a, sig, W):
    """Distribution of eta = alpha + sigma z on bins of the alpha grid's step: for each sigma
    node, the alpha weights convolved with the bin-integrated normal kernel (exact as sigma ->
    0, where the kernel becomes the identity). Returns (bin centres, probabilities)."""
    h = a[1] - a[0]
    cols = W.sum(0) > 1e-14
    ext = int(math.ceil(9.0 * float(sig[cols].max()) / h)) + 1
    centres = a[0] + h * np.arange(-ext, a.size + ext)
    P = np.zeros(centres.size)
    for j in np.flatnonzero(cols):
        half = int(math.ceil(9.0 * sig[j] / h)) + 1
        d = h * np.arange(-half, half + 1)
        ker = special.ndtr((d + h / 2) / sig[j]) - special.ndtr((d - h / 2) / sig[j])
        P[ext - half: ext - half + a.size + 2 * half] += np.convolve(W[:, j], ker)
    return centres, P / P.sum()


def baseline_from_counts(data, *, events_col: str = "ci", n_col: str = "n2i",
                         time_col: str = "time", study_col: str = "study",
                         events: str | None = "deaths", which: str = "predictive",
                         alpha_prior=None, sigma_prior=None, source: str = "") -> dict:
    """Control-arm risk per time point from study-level counts (random effects on the logit).

    At each time t: ``x_it ~ Bin(n_it, expit(eta_it))``, ``eta_it ~ N(alpha_t, sigma_t²)``,
    with ``alpha_t ~ Normal(0, 2)`` (control risks between about 2% and 98% a priori) and
    ``sigma_t ~ HalfNormal(1)`` unless given. The posterior of (alpha_t, sigma_t) is computed
    by product quadrature (each study's random effect integrated by adaptive Gauss-Hermite).

    ``which``: ``"predictive"`` (default) - the control risk of a new setting,
    ``expit(alpha + sigma z)``: the between-study spread of baseline risk is part of the
    uncertainty of an absolute effect; ``"typical"`` - the risk of a typical study,
    ``expit(alpha)``. Either is returned as the distribution of logit p on a fine uniform grid
    (``LogitMixtureRisk`` with point components): alpha on the posterior's trapezoid grid, the
    predictive on bins of the same width (bin-integrated normal kernel per sigma node).

    Returns ``{time: LogitMixtureRisk}`` (times as text, in order of appearance).
    """
    from bayesmeta import priors as P

    if which not in ("predictive", "typical"):
        raise SpecError(f"Invalid which {which!r}: must be 'predictive' or 'typical'.")
    alpha_prior = alpha_prior or P.Normal(0.0, 2.0)
    sigma_prior = sigma_prior or P.HalfNormal(1.0)
    if not isinstance(alpha_prior, P.Normal):
        raise SpecError(f"alpha_prior must be Normal(mean, sd), got {alpha_prior!r}")
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    for c in (events_col, n_col, time_col):
        if c not in df:
            raise DataError(f"control-arm counts need column '{c}'", column=c)
    out = {}
    for t, g in df.groupby(df[time_col].astype(str), sort=False):
        x = pd.to_numeric(g[events_col], errors="coerce").to_numpy(float)
        n = pd.to_numeric(g[n_col], errors="coerce").to_numpy(float)
        bad = ~(np.isfinite(x) & np.isfinite(n) & (n > 0) & (x >= 0) & (x <= n))
        if bad.any():
            raise DataError(f"time {t}: control counts need 0 <= {events_col} <= {n_col}, "
                            f"{n_col} > 0", column=events_col)
        a, sig, W = _logit_re_posterior(x, n, alpha_prior, sigma_prior)
        m, w = (a, W.sum(1)) if which == "typical" else _predictive_bins(a, sig, W)
        keep = w > 1e-15
        m, w, s = m[keep], w[keep], np.zeros(int(keep.sum()))
        how = (f"{which} control risk from {len(x)} stud{'y' if len(x) == 1 else 'ies'} "
               f"(random effects on the logit: alpha ~ {alpha_prior}, sigma ~ {sigma_prior})")
        out[str(t)] = LogitMixtureRisk(m, s, w / w.sum(), events, source, how)
    return out


# ---------------------------------------------------------------------------------------------
# the absolute effect
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NNT:
    """Number needed to treat from a benefit-oriented risk difference and its interval.

    ``gain`` (positive = benefit) with interval ``(gain_low, gain_high)`` at ``level``.
    Following Altman (1998), an interval that contains no difference runs through infinity:
    from NNTB ``1/gain_high`` to infinity to NNTH ``1/|gain_low|``. The numbers:

    * ``kind``: ``"NNTB"`` (gain > 0), ``"NNTH"`` (gain < 0) or ``"none"`` (gain = 0);
      ``value = 1/|gain|`` (inf when gain = 0).
    * ``first``, ``second``: the interval ends as ``(kind, value)``, the first from
      ``gain_high`` and the second from ``gain_low`` (each NNTB when its end is > 0, NNTH
      when < 0, ``("none", inf)`` when 0).
    * ``through_infinity``: True when ``gain_low < 0 < gain_high``.
    """

    gain: float
    gain_low: float
    gain_high: float
    level: float

    @staticmethod
    def _end(g: float) -> tuple[str, float]:
        if g > 0:
            return "NNTB", 1.0 / g
        if g < 0:
            return "NNTH", -1.0 / g
        return "none", math.inf

    @property
    def kind(self) -> str:
        return self._end(self.gain)[0]

    @property
    def value(self) -> float:
        return self._end(self.gain)[1]

    @property
    def first(self) -> tuple[str, float]:
        return self._end(self.gain_high)

    @property
    def second(self) -> tuple[str, float]:
        return self._end(self.gain_low)

    @property
    def through_infinity(self) -> bool:
        return self.gain_low < 0.0 < self.gain_high

    def as_dict(self, prefix: str = "nnt") -> dict:
        return {f"{prefix}_kind": self.kind, f"{prefix}": self.value,
                f"{prefix}_first_kind": self.first[0], f"{prefix}_first": self.first[1],
                f"{prefix}_second_kind": self.second[0], f"{prefix}_second": self.second[1],
                f"{prefix}_through_infinity": self.through_infinity}


@dataclass(frozen=True)
class AbsoluteEffect:
    """Risk difference at one time point (numbers only; display is the report's job).

    ``rd_*``: treated minus control risk of the direction's events (deaths or survivors);
    ``gain_*``: the same oriented so that positive = benefit (``sign * rd``). ``p_benefit`` =
    P(gain > 0), ``p_mcid`` = P(gain > mcid). Intervals are equal-tailed at ``level``.
    """

    rd_median: float
    rd_mean: float
    rd_low: float
    rd_high: float
    gain_median: float
    gain_mean: float
    gain_low: float
    gain_high: float
    p_benefit: float
    mcid: float
    p_mcid: float
    nnt: NNT
    level: float
    baseline: dict
    method: str
    scale: str
    direction: str
    notes: tuple = field(default=())

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in (
            "rd_median", "rd_mean", "rd_low", "rd_high", "gain_median", "gain_mean",
            "gain_low", "gain_high", "p_benefit", "mcid", "p_mcid", "level", "method", "scale",
            "direction")}
        d.update({f"baseline_{k}": v for k, v in self.baseline.items()})
        d.update(self.nnt.as_dict())
        return d


def _p1(p0, x, scale):
    if scale == "logOR":
        return special.expit(special.logit(p0) + x)
    return -np.expm1(np.exp(x) * np.log1p(-p0))          # 1 - (1 - p0) ** HR


def _x_for_rd(p0, r, scale):
    """Effect x at which p1(p0, x) - p0 = r (monotone increasing in x); +-inf outside (0, 1)."""
    p1 = p0 + r
    with np.errstate(divide="ignore", invalid="ignore"):
        if scale == "logOR":
            x = special.logit(p1) - special.logit(p0)
        else:
            x = np.log(np.log1p(-p1) / np.log1p(-p0))
    x = np.where(p1 >= 1.0, np.inf, x)
    return np.where(p1 <= 0.0, -np.inf, x)


def _rd_cdf(r, eff: EffectDistribution, p, w, scale, density: bool = False):
    """P(p1 - p0 <= r) = sum_j w_j P(X <= x(p_j, r)), r (Q,) -> (Q,); with ``density`` also
    its derivative in r, sum_j w_j f_X(x(p_j, r)) dx/dr."""
    r = np.asarray(r, float)
    xq = _x_for_rd(p[None, :], r[:, None], scale)                          # (Q, J)
    fin = np.isfinite(xq)
    F = np.where(xq == np.inf, 1.0, 0.0)
    if not density:
        F[fin] = eff.cdf(xq[fin])
        return F @ w
    dF = np.zeros_like(F)
    F[fin], f = eff.cdf_pdf(xq[fin])
    p1 = (p[None, :] + r[:, None])[fin]
    # dx/dr: logit(p1) - logit(p0) -> 1 / (p1 (1 - p1)); log(log(1 - p1) / log(1 - p0)) ->
    # -1 / ((1 - p1) log(1 - p1))
    dx = (1.0 / (p1 * (1.0 - p1)) if scale == "logOR" else
          -1.0 / ((1.0 - p1) * np.log1p(-p1)))
    dF[fin] = f * dx
    return F @ w, dF @ w


def _rd_quantiles(qs, eff, p, w, scale, start=None):
    """Quantiles of the risk difference: safeguarded Newton in (-1, 1) (bisection whenever a
    step leaves the bracket), to 1e-14: a Newton step below 1e-8 leaves an error below
    |G''/2G'| 1e-16, well under 1e-14 for a risk difference's distribution, so it ends the
    search. ``start``: starting values (default: the normal approximation's quantiles of the
    effect at the baseline's weighted mean)."""
    qs = np.asarray(qs, float)
    lo, hi = np.full(qs.size, -1.0), np.full(qs.size, 1.0)
    if start is None:
        pm = float(w @ p)
        start = _p1(pm, eff.mean() + eff.sd() * special.ndtri(qs), scale) - pm
    r = np.clip(np.asarray(start, float), -1.0 + 1e-9, 1.0 - 1e-9)
    for _ in range(200):
        G, dG = _rd_cdf(r, eff, p, w, scale, density=True)
        g = G - qs
        lo, hi = np.where(g < 0, r, lo), np.where(g > 0, r, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = g / dG
        conv = np.isfinite(step) & (np.abs(step) <= 1e-8)
        rn = r - np.where(np.isfinite(step), step, 0.0)
        bad = ~np.isfinite(step) | (rn <= lo) | (rn >= hi)
        r = np.where(bad, 0.5 * (lo + hi), rn)
        if np.all((conv & ~bad) | (g == 0) | (hi - lo <= 1e-15)):
            break
    return r


def absolute_effect(effect: EffectDistribution, baseline, direction: Direction, *,
                    scale: str = "logOR", mcid: float = 0.0, level: float = 0.95,
                    method: str = "auto", n_draws: int = 200_000, seed: int = 0
                    ) -> AbsoluteEffect:
    """Posterior of the risk difference from an effect and a baseline risk distribution.

    Parameters
    ----------
    effect : EffectDistribution
        Posterior of the effect on ``scale`` for the direction's events (log OR of death when
        ``events="deaths"``).
    baseline : BetaRisk or LogitMixtureRisk
        Control-arm risk. If its ``events`` differ from ``direction.events`` it is
        complemented (control survival <-> control risk of death).
    direction : Direction
        Orients the gain (``sign * rd``), P(benefit) and P(gain > mcid).
    scale : {"logOR", "logHR"}
        ``logHR`` needs the cumulative risk of the event (``events="deaths"`` or None).
    mcid : float
        A clinically important difference on the risk scale (e.g. 0.10 = 10 points).
    method : {"auto", "quadrature", "monte-carlo"}
        ``quadrature`` (the default for a mixture effect): P(rd <= r) =
        E_p0[P(X <= x(p0, r))] with a Gauss rule over the baseline and the exact mixture CDF;
        quantiles by safeguarded Newton (to 1e-14), the mean by Gauss-Legendre cells over the
        effect's density. ``monte-carlo`` pairs effect draws with independent baseline
        draws (``seed``; the default for a draws-based effect).

    Returns
    -------
    AbsoluteEffect
    """
    if scale not in SCALES:
        raise SpecError(f"absolute effects are defined for {list(SCALES)}, not {scale!r}",
                        key="scale")
    if baseline is None:
        raise SpecError("an absolute effect needs a control-arm risk", key="control_risk",
                        fix=_HOW_TO)
    if not 0.0 < float(level) < 1.0:
        raise SpecError(f"Invalid level {level!r}: must be in (0, 1).")
    if not (math.isfinite(mcid) and -1.0 < mcid < 1.0):
        raise SpecError(f"Invalid mcid {mcid!r}: a risk difference in (-1, 1).", key="mcid")
    base = baseline
    notes = []
    if direction.events and base.events and base.events != direction.events:
        base = base.complement()
        notes.append(f"control risk of {baseline.events} complemented to {base.events}")
    if scale == "logHR" and direction.events == "survivors":
        raise SpecError("a hazard ratio compares hazards of the event: use events = deaths "
                        "with scale logHR", key="events")
    if method == "auto":
        method = "quadrature" if effect.exact else "monte-carlo"
    if method not in ("quadrature", "monte-carlo"):
        raise SpecError(f"Invalid method {method!r}: 'auto', 'quadrature' or 'monte-carlo'.")
    sign = direction.sign
    a = (1.0 - level) / 2.0
    if method == "quadrature":
        if not effect.exact:
            raise SpecError("method 'quadrature' needs a mixture effect (draws: 'monte-carlo')")
        p, w = base.nodes()
        keep = w > 1e-16 * w.max()       # dropped weight < 1e-14: no visible change
        p, w = p[keep], w[keep] / w[keep].sum()
        keep = effect.W > 1e-15 * effect.W.max()
        if not keep.all():               # likewise for the effect's components
            effect = EffectDistribution.from_mixture(effect.M[keep], effect.S[keep],
                                                     effect.W[keep], effect.label)
        qs = np.array([a, 0.5, 1.0 - a])
        # Newton with a 16-node baseline rule gives the start of Newton with the full rule
        # (which then needs one or two steps); the result is the full rule's root
        p16, w16 = base.nodes(16)
        r16 = _rd_quantiles(qs, effect, p16, w16 / w16.sum(), scale)
        rlo, rmd, rhi = _rd_quantiles(qs, effect, p, w, scale, start=r16)
        # mean: E[p1] over the effect's density by Gauss-Legendre cells in x
        # (bayesmeta.crossed.DensityQuadrature), then over the baseline nodes
        dq = DensityQuadrature(effect.M, effect.S, effect.W)
        ep1 = dq.expect(lambda x: _p1(p[None, :], x[:, None], scale))
        rmean = float(w @ (ep1 - p))
        # P(gain > 0) and P(gain > mcid), gain = sign * rd
        c0, cm = _rd_cdf(np.array([0.0, sign * mcid]), effect, p, w, scale)
        p_ben, p_mcid = (1.0 - float(c0), 1.0 - float(cm)) if sign > 0 else (float(c0),
                                                                            float(cm))
        n_used = 0
    else:
        rng = np.random.default_rng(seed)
        if effect.exact:
            xd = effect.sample(int(n_draws), rng)
        else:   # every draw once per copy, each copy with its own baseline draws
            xd = np.tile(effect.M, max(1, math.ceil(int(n_draws) / effect.M.size)))
        p0 = base.sample(xd.size, rng)
        rd = _p1(p0, xd, scale) - p0
        rlo, rmd, rhi = np.quantile(rd, [a, 0.5, 1.0 - a])
        rmean = float(rd.mean())
        gain = sign * rd
        p_ben = float(np.mean(gain > 0))
        p_mcid = float(np.mean(gain > mcid))
        n_used = int(xd.size)
    g = (sign * rmd, sign * rmean) + ((rlo, rhi) if sign > 0 else (-rhi, -rlo))
    bs = base.summary(level)
    return AbsoluteEffect(
        rd_median=float(rmd), rd_mean=float(rmean), rd_low=float(rlo), rd_high=float(rhi),
        gain_median=float(g[0]), gain_mean=float(g[1]), gain_low=float(g[2]),
        gain_high=float(g[3]), p_benefit=p_ben, mcid=float(mcid), p_mcid=p_mcid,
        nnt=NNT(float(g[0]), float(g[2]), float(g[3]), float(level)), level=float(level),
        baseline={"events": base.events, "median": bs["median"], "low": bs["low"],
                  "high": bs["high"], "mean": bs["mean"], "description": base.describe()},
        method=method + (f" ({n_used} draws, seed {seed})" if n_used else ""), scale=scale,
        direction=direction.describe(), notes=tuple(notes))
