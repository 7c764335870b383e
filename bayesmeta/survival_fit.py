"""Survival results as :class:`bayesmeta.fits.Fit`, the prior sets of the published-OR model, and
the other reading of published odds ratios.

* :class:`SurvivalExactFit` - the exact engine's result (:mod:`bayesmeta.survival_exact`) with
  exact quantiles at any level and exact probabilities, parameters ``Param("mu")``,
  ``Param("sigma_time")``, ``Param("rho")`` (when rho has a prior), ``Param("log_or",
  time=t)`` and ``Param("log_or_new", time=t)``; :meth:`SurvivalExactFit.effect` and
  :meth:`SurvivalExactFit.predictive` feed :mod:`bayesmeta.absolute` and
  :mod:`bayesmeta.newtrial`.
* :func:`as_fit` - the same parameter names for an MCMC survival result
  (:class:`bayesmeta.fits.DrawsFit`).
* :func:`published_prior_sets` - named (mu, sigma_time, tau_new) priors; the empirical set puts
  Turner et al. (2015)'s all-cause-mortality prior on the between-trial SD tau_new, the
  parameter that prior describes.
* :func:`other_reading` - the answer if the published ORs meant the other outcome (odds of
  death instead of survival, or the reverse).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayesmeta.exact import _mix_cdf, _mix_quantiles
from bayesmeta.exceptions import SpecError
from bayesmeta.fits import DrawsFit, Fit, Param, _summary_frame, as_param
from bayesmeta.mixture import EffectDistribution

__all__ = ["SurvivalExactFit", "as_fit", "published_prior_sets", "prior_kwargs",
           "other_reading"]

_LABEL = {"log_or": "logOR", "log_or_new": "logOR_new"}


def _label(param: Param) -> str:
    if param.name in _LABEL:
        return f"{_LABEL[param.name]}[{param.get('time')}]"
    return param.name


@dataclass
class SurvivalExactFit(Fit):
    """:class:`bayesmeta.fits.Fit` over an ``ExactSurvivalResult`` (exact at any level)."""

    result: Any = None
    other: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_result(cls, res, *, other: dict | None = None) -> "SurvivalExactFit":
        notes = tuple(res.notes)
        return cls(model="survival-published", source="bayesian", method=res.method,
                   measure="OR", scale="logOR", coords={"outcome": res.outcome},
                   notes=notes, provenance={"priors": dict(res.priors),
                                            "engine": res.diagnostics.to_dict(),
                                            "seed": res.settings.get("seed")},
                   result=res, other=dict(other or {}))

    def __getstate__(self):
        """Pickles without the caches (summaries, predictives: rebuilt on demand)."""
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    @property
    def _q(self):
        return self.result._q

    @property
    def times(self) -> list:
        return list(self.result.extra["times"])

    def params(self) -> list[Param]:
        out = [Param("mu"), Param("sigma_time")]
        if self._q.rho_post is not None:
            out.append(Param("rho"))
        out += [Param("log_or", time=t) for t in self.times]
        out += [Param("log_or_new", time=t) for t in self.times]
        return out

    def _check(self, param) -> Param:
        param = as_param(param)
        if param not in self.params():
            raise KeyError(f"no parameter {param}; have {[str(p) for p in self.params()]}")
        return param

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        key = ("summary", float(ci_prob))
        if key not in self._cache:
            self._cache[key] = self._summary(float(ci_prob))
        return self._cache[key].copy()

    def _summary(self, ci_prob: float) -> pd.DataFrame:
        a = (1.0 - float(ci_prob)) / 2.0
        qs = np.array([0.5, a, 1.0 - a])
        base = self.result.summary
        rows = []
        for p in self.params():
            lab = _label(p)
            if p.name == "sigma_time":
                md, lo, hi = self._q.sigma_quantiles(qs)
            elif p.name == "rho":
                md, lo, hi = self._q.rho_post.quantiles(qs)
            else:
                md, lo, hi = self._q.quantiles(lab, qs)
            rows.append((p, dict(estimate=float(base.loc[lab, "mean"]),
                                 se=float(base.loc[lab, "sd"]), median=float(md),
                                 ci_low=float(lo), ci_high=float(hi), interval="eti",
                                 mcse=0.0)))
        return _summary_frame(rows)

    def prob(self, param, *, below=None, above=None) -> float:
        if (below is None) == (above is None):
            raise ValueError("give exactly one of below= or above=")
        param = self._check(param)
        x = float(below if below is not None else above)
        if param.name == "sigma_time":
            c = float(sum(b.weight * b.grid.cdf(x)[0] for b in self._q.blocks))
        elif param.name == "rho":
            c = self._q.rho_post.cdf(x)
        else:
            c = self._q.cdf(_label(param), x)
        return c if below is not None else 1.0 - c

    def draws(self, param, n: int | None = None) -> np.ndarray:
        param = self._check(param)
        post = self.result.datatree["posterior"]
        var = param.name
        da = post[var].sel(time=param.get("time")) if param.get("time") else post[var]
        d = np.asarray(da.values, dtype=float).ravel()
        return d if n is None else d[:n]

    # ---- feeds for derived quantities ---------------------------------------------------
    def effect(self, param) -> EffectDistribution:
        """The exact posterior of ``log_or``/``log_or_new``/``mu`` as a normal mixture."""
        param = self._check(param)
        if param.name not in ("mu", "log_or", "log_or_new"):
            raise KeyError(f"{param} is not an effect")
        M, S, W = self._q.mixture(_label(param))
        return EffectDistribution.from_mixture(M[0], S[0], W, label=str(param))

    def predictive(self, time):
        """:class:`bayesmeta.newtrial.Predictive` of a new trial at ``time``: the pooled
        log OR's exact posterior crossed with the tau_new prior's quadrature grid (the same
        grid as ``log_or_new``)."""
        from bayesmeta.newtrial import Predictive

        key = ("predictive", str(time))
        if key not in self._cache:
            eff = self.effect(Param("log_or", time=time))
            tg = self._q.tg
            self._cache[key] = Predictive.crossed(
                eff.M, eff.S, eff.W, tg.sigma, tg.weight,
                f"tau_new ~ {self.result.priors.get('tau_new', '')}")
        return self._cache[key]

    def p_beyond(self, param, threshold: float, direction) -> float:
        """P(param beyond ``threshold`` in the benefit direction) (exact)."""
        p_above = self.prob(param, above=threshold)
        return direction.from_prob_above(p_above)


def as_fit(result, *, other: dict | None = None) -> Fit:
    """A survival result as :class:`bayesmeta.fits.Fit` with parameters ``mu``,
    ``sigma_time``, (``rho``,) ``log_or[time]``, ``log_or_new[time]`` (published model) or
    ``log_or[time]``, ``log_or_new[time]``, ``surv_control[time]`` and the model scalars
    (counts model)."""
    if hasattr(result, "_q") and getattr(result, "method", "") == "exact-survival":
        return SurvivalExactFit.from_result(result, other=other)
    pm = {}
    for rep in result.reports:
        if rep.time:
            pm[rep.label] = Param(rep.var, time=rep.time)
        else:
            pm[rep.label] = Param(rep.var)
    return DrawsFit(model=result.model, source="bayesian", method=result.method,
                    measure="OR", scale="logOR", coords={"outcome": result.outcome},
                    notes=tuple(result.notes), provenance={"priors": dict(result.priors)},
                    result=result, param_map=pm)


def published_prior_sets(names=None) -> dict:
    """Named priors of the published-OR survival model: ``{name: {"mu", "sigma_time",
    "tau_new"}}`` on the survival log OR (OR > 1 = benefit).

    * ``weakly_informative``: the engine's defaults, mu ~ N(0, 1.5), sigma_time ~ HN(0.5),
      tau_new ~ HN(0.5).
    * ``sceptical``: mu ~ N(0, log 2 / 1.96) (2.5% prior probability of an OR beyond 2 either
      way; Spiegelhalter et al. 2004, Sec. 5.5.2); other priors default.
    * ``enthusiastic``: mu ~ N(log 2, log 2 / 1.645) (5% prior probability of harm; Sec.
      5.5.3); other priors default.
    * ``empirical``: mu default; tau_new ~ Turner et al. (2015) Table IV, all-cause mortality,
      pharmacological vs placebo/control: log tau² ~ N(-3.95, 1.34²) - a prior for the
      between-trial SD, so it goes on tau_new; sigma_time (variation over follow-up within the
      same trials, which Turner's data do not describe) keeps its default.
    """
    from bayesmeta import priors as P
    from bayesmeta.survival import _published_priors

    mu0, sig0, tau0 = _published_priors(None, None, None)
    d = math.log(2.0)
    sets = {
        "weakly_informative": {"mu": mu0, "sigma_time": sig0, "tau_new": tau0},
        "sceptical": {"mu": P.Normal(0.0, d / 1.959963984540054,
                                     source=f"sceptical: P(|mu| > {d:.4g}) = 5%"),
                      "sigma_time": sig0, "tau_new": tau0},
        "enthusiastic": {"mu": P.Normal(d, d / 1.6448536269514722,
                                        source=f"enthusiastic: centred on {d:.4g}, "
                                               "P(harm) = 5%"),
                         "sigma_time": sig0, "tau_new": tau0},
        "empirical": {"mu": mu0, "sigma_time": sig0,
                      "tau_new": P.NAMED_PRIORS["turner2015-mortality-pharma"]},
    }
    if names is None:
        return sets
    unknown = [n for n in names if n not in sets]
    if unknown:
        raise SpecError(f"unknown prior set(s) {unknown} for the published survival model",
                        key="prior_sets", fix=f"use {list(sets)}")
    return {n: sets[n] for n in names}


def prior_kwargs(prior_set: dict) -> dict:
    """Keywords of the survival fits for one entry of :func:`published_prior_sets`."""
    names = {"mu": "mu_prior", "sigma_time": "sigma_prior", "tau_new": "tau_new_prior"}
    return {names[k]: v for k, v in prior_set.items()}


def other_reading(times, or_, ci_low, ci_high, *, or_means: str = "survival",
                  threshold: float = 1.5, **kw) -> pd.DataFrame:
    """The published ORs read the other way (``or_means`` flipped), refitted exactly.

    Returns one row per time: ``time``, ``or_means`` (the other reading), ``or_median`` (the
    survival OR under that reading), ``p_benefit`` (P(survival OR > 1)) and
    ``p_threshold`` (P(survival OR > threshold)). ``kw``: keywords of
    :func:`bayesmeta.survival_exact.fit_survival_published_exact`.
    """
    from bayesmeta.survival_exact import fit_survival_published_exact

    if or_means not in ("survival", "death"):
        raise SpecError(f"Invalid or_means {or_means!r}: must be one of ['survival', 'death'].")
    flip = "death" if or_means == "survival" else "survival"
    kw = {k: v for k, v in kw.items() if k not in ("control_survival", "n_draws")}
    res = fit_survival_published_exact(times, or_, ci_low, ci_high, or_means=flip,
                                       threshold=threshold, n_draws=1, **kw)
    q = res._q
    rows = []
    for i, t in enumerate(q.times):
        M, S, W = q.th_M[i:i + 1], q.th_S[i:i + 1], q.W
        c = _mix_cdf(np.array([[0.0, math.log(threshold)]]), M, S, W)[0]
        md = _mix_quantiles(M, S, W, np.array([0.5]))[0][0]
        rows.append({"time": t, "or_means": flip, "or_median": math.exp(md),
                     "p_benefit": float(1.0 - c[0]), "p_threshold": float(1.0 - c[1])})
    return pd.DataFrame(rows)
