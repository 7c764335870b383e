"""What a new trial would show: predictive, assurance and tipping point from ONE distribution.

Model (the random-effects model of the pooled evidence, extended by one new trial):

* theta: the pooled effect, posterior ``sum_k W_k N(M_k, S_k²)`` (exact engines) or draws
  (``S_k = 0``, equal weights);
* the new trial's true effect ``theta_new = theta + tau_new z`` (z ~ N(0, 1)), with the
  between-trial SD ``tau_new`` carried by each component (``T_k``): a prior grid crossed with
  the posterior components (:meth:`Predictive.from_effect`), or joint draws of
  (theta, tau) from a model that estimates tau;
* its estimate ``y_new ~ N(theta_new, se²)``, ``se`` the trial's standard error
  (:func:`trial_se`: from n per arm and the control risk, for a log odds ratio).

Everything below is a property of that one distribution:

* **predictive**: ``y_new | data ~ sum_k W_k N(M_k, S_k² + T_k² + se²)`` (and theta_new
  without ``se``);
* **assurance**: P(the trial's own two-sided ``1 - alpha`` test shows benefit)
  = P(sign * y_new > z_{1-alpha/2} se);
* **tipping point**: the observed ``y_new`` at which the updated posterior of theta (the
  current evidence plus the new trial, whose estimate informs theta only through
  ``N(y_new; theta, T² + se²)``) gives P(benefit) = ``target``; and the predictive
  probability that the trial lands beyond it.

Given a component, theta and y_new are jointly normal, so the update is a conjugate normal
update per component with reweighting ``W_k N(y; M_k, S_k² + T_k² + se²)``: exact for a
mixture, importance reweighting of draws otherwise. Tests check each quantity against a Monte
Carlo simulation of the model.

A predictive built as an effect mixture crossed with a tau grid (:meth:`Predictive.from_effect`
with a prior, :meth:`bayesmeta.survival_fit.SurvivalExactFit.predictive`) keeps the two factors
and computes its CDF, quantiles and the tipping-point scan with :mod:`bayesmeta.crossed`
(without forming the K x J crossed components once they number more than
:data:`bayesmeta.crossed.EXACT_MAX`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from bayesmeta.crossed import EXACT_MAX, CrossedMixture, TiltQuadrature
from bayesmeta.direction import Direction
from bayesmeta.exceptions import SpecError
from bayesmeta.mixture import EffectDistribution

__all__ = ["Predictive", "trial_se", "assurance", "tipping_point", "updated_prob_benefit",
           "new_trial", "NewTrial", "tau_nodes"]


def tau_nodes(prior) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes (weights sum to 1) of a between-trial SD prior: the double-exponential
    rule of the exact engines (:func:`bayesmeta.survival_exact.tau_prior_nodes`); a point
    mass (``FixedTau``) is one node."""
    from bayesmeta.survival_exact import tau_prior_nodes

    return tau_prior_nodes(prior)


class Predictive:
    """``theta ~ sum_k W_k N(M_k, S_k²)`` with component between-trial SD ``T_k``.

    ``factors = (M_e, S_e, W_e, T_j, w_j)``, when given, says that the components are the
    effect mixture ``(M_e, S_e, W_e)`` crossed with the tau grid ``(T_j, w_j)``
    (:meth:`crossed`): ``M, S, T, W`` are then that cross (weights below 1e-16 of the largest
    pruned), formed only when read; CDFs, quantiles and the tipping-point scan use the factors
    (:mod:`bayesmeta.crossed`).
    """

    def __init__(self, M, S, T, W, source: str = "", factors: tuple | None = None):
        self._flat = None if M is None else tuple(
            np.asarray(a, dtype=float) for a in (M, S, T, W))
        self.source = source
        self.factors = factors
        self._cache: dict = {}

    def __repr__(self) -> str:
        n = (f"{self.factors[0].size} x {self.factors[3].size} crossed"
             if self.factors is not None else str(self._flat[0].size))
        return f"Predictive({n} components, source={self.source!r})"

    def __getstate__(self):
        return {"_flat": self._flat, "source": self.source, "factors": self.factors,
                "_cache": {}}

    @property
    def M(self) -> np.ndarray:
        return self._cross()[0]

    @property
    def S(self) -> np.ndarray:
        return self._cross()[1]

    @property
    def T(self) -> np.ndarray:
        return self._cross()[2]

    @property
    def W(self) -> np.ndarray:
        return self._cross()[3]

    def _cross(self):
        if self._flat is None:
            M, S, W, T, w = self.factors
            K, J = M.size, T.size
            Wc = (W[:, None] * w[None, :]).ravel()
            keep = Wc > 1e-16 * Wc.max()
            self._flat = (np.repeat(M, J)[keep], np.repeat(S, J)[keep], np.tile(T, K)[keep],
                          Wc[keep] / Wc[keep].sum())
        return self._flat

    @classmethod
    def crossed(cls, M, S, W, T, w, source: str = "") -> "Predictive":
        """The effect mixture ``(M, S, W)`` crossed with the tau grid ``(T, w)``."""
        M, S, W, T, w = (np.asarray(a, dtype=float).ravel() for a in (M, S, W, T, w))
        return cls(None, None, None, None, source, factors=(M, S, W, T, w))

    def _fast(self) -> bool:
        f = self.factors
        return f is not None and f[0].size * f[3].size > EXACT_MAX and bool(np.all(f[1] > 0))

    def _mix(self, se: float) -> CrossedMixture:
        key = ("mix", float(se))
        if key not in self._cache:
            M, S, W, T, w = self.factors
            self._cache[key] = CrossedMixture(M, S, W, T, w, se)
        return self._cache[key]

    @classmethod
    def from_effect(cls, effect: EffectDistribution, tau_prior=None, *, tau_draws=None,
                    source: str = "") -> "Predictive":
        """Cross the effect's posterior with a tau prior (independent: pooled estimates carry
        no information on tau), or pair draws with joint ``tau_draws``."""
        if tau_draws is not None:
            td = np.asarray(tau_draws, dtype=float).ravel()
            if effect.exact or td.size != effect.M.size:
                raise SpecError("tau_draws must pair one-to-one with the effect's draws")
            return cls(effect.M, effect.S, td, effect.W, source or "joint draws of (theta, tau)")
        if tau_prior is None:
            raise SpecError("a new-trial predictive needs the between-trial SD: give tau_prior "
                            "(or joint tau_draws)", key="tau_new_prior")
        t, tw = tau_nodes(tau_prior)
        return cls.crossed(effect.M, effect.S, effect.W, t, tw,
                           source or f"tau_new ~ {tau_prior}")

    def _sd(self, se: float = 0.0) -> np.ndarray:
        return np.sqrt(self.S ** 2 + self.T ** 2 + float(se) ** 2)

    def cdf(self, x, se: float = 0.0) -> np.ndarray:
        """P(y_new <= x) for a trial with standard error ``se`` (se = 0: theta_new)."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        if self._fast():
            return self._mix(se).cdf(x)
        sd = self._sd(se)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (x[:, None] - self.M[None, :]) / sd[None, :]
        z = np.where(sd[None, :] > 0, z, np.where(x[:, None] >= self.M[None, :], np.inf,
                                                  -np.inf))
        return special.ndtr(z) @ self.W

    def quantile(self, q, se: float = 0.0) -> np.ndarray:
        q = np.atleast_1d(np.asarray(q, dtype=float))
        if self._fast():
            return self._mix(se).quantile(q)
        sd = self._sd(se)
        zq = special.ndtri(q)
        lo = np.min(self.M[None, :] + sd[None, :] * zq[:, None], axis=1) - 1e-9
        hi = np.max(self.M[None, :] + sd[None, :] * zq[:, None], axis=1) + 1e-9
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid, se) < q
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def sample(self, n: int, rng: np.random.Generator, se: float = 0.0) -> dict:
        """Joint draws of the model: theta, tau, theta_new and y_new."""
        k = rng.choice(self.M.size, size=int(n), p=self.W)
        th = self.M[k] + self.S[k] * rng.standard_normal(int(n))
        tn = th + self.T[k] * rng.standard_normal(int(n))
        return {"theta": th, "tau": self.T[k], "theta_new": tn,
                "y_new": tn + float(se) * rng.standard_normal(int(n))}

    def posterior_cdf(self, x: float) -> float:
        """P(theta <= x | data) (the current posterior of the pooled effect)."""
        if self._fast():
            M, S, W = self.factors[:3]
            return float(special.ndtr((float(x) - M) / S) @ W)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (float(x) - self.M) / self.S
        z = np.where(self.S > 0, z, np.where(x >= self.M, np.inf, -np.inf))
        return float(special.ndtr(z) @ self.W)

    def updated_cdf(self, y: float, se: float, x: float) -> float:
        """P(theta <= x | data, y_new = y): conjugate update per component, reweighted."""
        v = self.S ** 2 + self.T ** 2 + float(se) ** 2
        lw = np.log(self.W) - 0.5 * np.log(v) - 0.5 * (float(y) - self.M) ** 2 / v
        w = np.exp(lw - lw.max())
        w /= w.sum()
        k = self.S ** 2 / v
        m = self.M + k * (float(y) - self.M)
        s = np.sqrt(np.maximum(self.S ** 2 * (1.0 - k), 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (float(x) - m) / s
        z = np.where(s > 0, z, np.where(x >= m, np.inf, -np.inf))
        return float(special.ndtr(z) @ w)

    def updated_cdfs(self, ys, se: float, x: float) -> np.ndarray:
        """:meth:`updated_cdf` at every y in ``ys``. A crossed predictive larger than
        :data:`bayesmeta.crossed.EXACT_MAX` uses :class:`bayesmeta.crossed.TiltQuadrature`,
        built for the range of ``ys`` and reused by later calls that it covers."""
        ys = np.atleast_1d(np.asarray(ys, dtype=float))
        if self._fast():
            lo, hi = float(ys.min()), float(ys.max())
            key = ("tilt", float(x))
            tq = self._cache.get(key)
            if tq is None or not tq.covers(float(se), lo, hi):
                # cells for se / 2.5 and a 10% wider y range also serve the next trials
                # asked for (smaller se: more patients; or the same se)
                M, S, W, T, w = self.factors
                pad = 0.05 * (hi - lo)
                tq = self._cache[key] = TiltQuadrature(M, S, W, T, w, float(se) / 2.5, x,
                                                       lo - pad, hi + pad)
            return tq.cdf(ys, se)
        v = self.S ** 2 + self.T ** 2 + float(se) ** 2
        k = self.S ** 2 / v
        s = np.sqrt(np.maximum(self.S ** 2 * (1.0 - k), 0.0))
        lw0 = np.log(self.W) - 0.5 * np.log(v)
        out = np.empty(ys.size)
        step = max(1, 2_000_000 // self.M.size)
        for i in range(0, ys.size, step):
            y = ys[i:i + step, None]
            lw = lw0 - 0.5 * (y - self.M) ** 2 / v
            w = np.exp(lw - lw.max(1)[:, None])
            m = self.M + k * (y - self.M)
            with np.errstate(divide="ignore", invalid="ignore"):
                z = (float(x) - m) / s
            z = np.where(s > 0, z, np.where(x >= m, np.inf, -np.inf))
            out[i:i + step] = (special.ndtr(z) * w).sum(1) / w.sum(1)
        return out


def trial_se(n_per_arm: float, p0: float, effect: float, scale: str = "logOR") -> float:
    """Expected SE of a two-arm trial's log odds ratio with ``n_per_arm`` per arm, control
    risk ``p0`` and true log OR ``effect`` (treated risk ``expit(logit p0 + effect)``):
    ``sqrt(1/(n p1 (1-p1)) + 1/(n p0 (1-p0)))`` (the Woolf variance at expected counts)."""
    if scale != "logOR":
        raise SpecError(f"trial_se is defined for logOR, not {scale!r}; give se directly")
    n = float(n_per_arm)
    if not (n >= 2 and 0.0 < p0 < 1.0 and math.isfinite(effect)):
        raise SpecError(f"trial_se needs n_per_arm >= 2 and 0 < p0 < 1 (got {n_per_arm!r}, "
                        f"{p0!r})", key="new_trial_n")
    p1 = float(special.expit(special.logit(p0) + effect))
    return math.sqrt(1.0 / (n * p1 * (1.0 - p1)) + 1.0 / (n * p0 * (1.0 - p0)))


def assurance(pred: Predictive, se: float, direction: Direction, *, alpha: float = 0.05,
              null: float = 0.0) -> float:
    """P(a new trial's two-sided ``1 - alpha`` test is significant in the benefit direction)."""
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    if direction.sign > 0:
        return float(1.0 - pred.cdf(null + z * se, se)[0])
    return float(pred.cdf(null - z * se, se)[0])


def updated_prob_benefit(pred: Predictive, y: float, se: float, direction: Direction,
                         null: float = 0.0) -> float:
    """P(benefit of the pooled effect | current data, a new trial observing ``y``)."""
    c = pred.updated_cdf(y, se, null)
    return 1.0 - c if direction.sign > 0 else c


def tipping_point(pred: Predictive, se: float, direction: Direction, *, target: float = 0.5,
                  null: float = 0.0, reach: float = 40.0, step: float = 0.125) -> dict:
    """The new-trial estimate at which the updated P(benefit) equals ``target``.

    Scans estimates from the predictive median toward harm (toward benefit when the current
    P(benefit) is already below ``target``) in steps of ``step`` predictive SDs up to
    ``reach`` SDs, and solves for the first crossing (Brent). Returns ``{"y": y*,
    "found": bool, "p_current": P(benefit) now, "p_beyond": predictive P(y_new beyond y*),
    "p_extreme": the updated P(benefit) closest to ``target`` over the scanned range,
    "y_extreme": where}``. When the updated probability never reaches ``target`` (with
    uncertain between-trial SD an extreme estimate is explained as heterogeneity and moves
    the pooled effect less, so the update need not be monotone in y), ``found`` is False and
    ``y`` and ``p_beyond`` are NaN: no single trial with this SE overturns the conclusion.
    """
    if not 0.0 < target < 1.0:
        raise SpecError(f"Invalid target {target!r}: must be in (0, 1).")
    if not (se > 0 and math.isfinite(se)):
        raise SpecError(f"Invalid trial se {se!r}: must be finite and > 0.")
    s = direction.sign
    below = pred.posterior_cdf(null)
    p_now = 1.0 - below if s > 0 else below
    centre = float(pred.quantile(0.5, se)[0])
    if pred.factors is not None:
        M, S, W, T, w = pred.factors
        var = float(W @ S ** 2 + w @ T ** 2)
    else:
        var = float(pred.W @ (pred.S ** 2 + pred.T ** 2))
    scale = math.sqrt(var + se ** 2)

    def fv(ys):
        c = pred.updated_cdfs(ys, se, null)
        return (1.0 - c if s > 0 else c) - target

    def f(y):
        return float(fv([y])[0])

    toward = -s if f(centre) > 0 else s
    ys = centre + toward * scale * step * np.arange(int(reach / step) + 1)
    fs = fv(ys)
    j = int(np.argmin(np.abs(fs)))
    out = {"p_current": p_now, "p_extreme": float(fs[j] + target), "y_extreme": float(ys[j])}
    cross = np.flatnonzero(np.sign(fs[1:]) != np.sign(fs[:-1]))
    if cross.size == 0:
        return {"y": math.nan, "found": False, "p_beyond": math.nan, **out}
    k = int(cross[0])
    y = optimize.brentq(f, min(ys[k], ys[k + 1]), max(ys[k], ys[k + 1]), xtol=1e-12,
                        rtol=1e-12, maxiter=500)
    c = float(pred.cdf(y, se)[0])
    # "beyond" = on the far side of y* from the current evidence
    return {"y": float(y), "found": True, "p_beyond": c if toward < 0 else 1.0 - c, **out}


@dataclass(frozen=True)
class NewTrial:
    """A new trial with ``n_per_arm`` patients per arm (numbers only)."""

    n_per_arm: int
    se: float
    control_risk: float
    theta_new_low: float
    theta_new_median: float
    theta_new_high: float
    y_new_low: float
    y_new_median: float
    y_new_high: float
    p_benefit_new: float
    assurance: float
    tipping_y: float
    tipping_found: bool
    p_beyond_tipping: float
    p_benefit_extreme: float
    p_benefit_current: float
    level: float
    alpha: float
    target: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def new_trial(pred: Predictive, direction: Direction, *, n_per_arm: int, control_risk: float,
              effect_for_se: float, level: float = 0.95, alpha: float = 0.05,
              target: float = 0.5, null: float = 0.0) -> NewTrial:
    """Predictive interval, assurance and tipping point of one planned trial.

    ``se`` = :func:`trial_se` at ``control_risk`` (a central value of the control risk of the
    events the log OR counts) and ``effect_for_se`` (e.g. the posterior median log OR): the
    planned trial's expected SE, used by all three quantities.
    """
    se = trial_se(n_per_arm, control_risk, effect_for_se)
    a = (1.0 - level) / 2.0
    tq = pred.quantile([a, 0.5, 1.0 - a], 0.0)
    yq = pred.quantile([a, 0.5, 1.0 - a], se)
    c0 = float(pred.cdf(null, 0.0)[0])
    tp = tipping_point(pred, se, direction, target=target, null=null)
    return NewTrial(
        n_per_arm=int(n_per_arm), se=se, control_risk=float(control_risk),
        theta_new_low=float(tq[0]), theta_new_median=float(tq[1]), theta_new_high=float(tq[2]),
        y_new_low=float(yq[0]), y_new_median=float(yq[1]), y_new_high=float(yq[2]),
        p_benefit_new=1.0 - c0 if direction.sign > 0 else c0,
        assurance=assurance(pred, se, direction, alpha=alpha, null=null),
        tipping_y=tp["y"], tipping_found=tp["found"], p_beyond_tipping=tp["p_beyond"],
        p_benefit_extreme=tp["p_extreme"],
        p_benefit_current=tp["p_current"], level=float(level), alpha=float(alpha),
        target=float(target))
