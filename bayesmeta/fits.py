"""One interface for every fitted model: :class:`Fit`, with parameters as name + coordinates.

A fit is read, not formatted: ``to_frame(ci_prob=...)`` chooses the interval level when the
results are read (never when the model is fitted), ``prob`` and ``draws`` feed the derived
quantities (:mod:`bayesmeta.quantities`), and labels are the report's job.

A parameter is a :class:`Param`: a name (``"mu"``, ``"tau"``, ``"theta_new"``,
``"contrast"``, ``"sigma_time"``, ``"theta"``) plus coordinates (``{"subgroup": "A", "time":
"12"}``, ``{"study": "Smith 2001"}``). In the shared results table (:mod:`bayesmeta.results`)
the ``time`` and ``subgroup`` coordinates fill the columns of the same name; a ``study``
coordinate is written into the parameter label (``theta[Smith 2001]``), the only coordinate
without a column of its own.

Adapters here give the existing result classes this interface:

========================  =================================================================
:class:`ClassicalFit`     :class:`bayesmeta.classical.ClassicalResult` (refitted at the read
                          level: Wald/t intervals, prediction interval, Q-profile CIs)
:class:`ExactFit`         :class:`bayesmeta.exact.ExactResult` (quantiles at any level,
                          exact CDF; i.i.d. draws for quantities that need them)
:class:`DrawsFit`         any :class:`bayesmeta.mcmc.PosteriorResult` (MCMC or exact i.i.d.
                          draws): equal-tailed intervals from the draws at the read level
========================  =================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from bayesmeta import results

#: coordinates that have a column of their own in the results table
COORD_COLUMNS = ("time", "subgroup")


@dataclass(frozen=True)
class Param:
    """A parameter: ``name`` plus coordinates, e.g. ``Param("mu", time="12", subgroup="A")``.

    Coordinates are stored sorted as ``(role, level)`` pairs (levels as text) so that two
    ``Param`` objects with the same name and coordinates are equal and hashable.
    """

    name: str
    coords: tuple[tuple[str, str], ...] = ()

    def __init__(self, name: str, coords: Mapping[str, Any] | Iterable | None = None, **kw):
        items = dict(coords or {})
        items.update(kw)
        object.__setattr__(self, "name", str(name))
        object.__setattr__(self, "coords", tuple(sorted((str(k), str(v))
                                                        for k, v in items.items())))

    def get(self, role: str, default: str = "") -> str:
        return dict(self.coords).get(role, default)

    @property
    def label(self) -> str:
        """The ``parameter`` column of the results table: the name, plus any coordinate that
        has no column of its own in brackets (``theta[Smith 2001]``)."""
        rest = [v for k, v in self.coords if k not in COORD_COLUMNS]
        return f"{self.name}[{', '.join(rest)}]" if rest else self.name

    def __str__(self) -> str:
        return self.name + ("[" + ", ".join(f"{k}={v}" for k, v in self.coords) + "]"
                            if self.coords else "")


def as_param(p: "Param | str", **coords) -> Param:
    """``Param`` from a ``Param`` or a name (with coordinates as keywords)."""
    return p if isinstance(p, Param) else Param(p, coords)


def _z(level: float) -> float:
    from scipy import special

    return float(special.ndtri(0.5 + level / 2.0))


def _check_level(ci_prob: float) -> float:
    ci_prob = float(ci_prob)
    if not 0.0 < ci_prob < 1.0:
        from bayesmeta.exceptions import SpecError
        raise SpecError(f"Invalid ci_prob {ci_prob!r}: must be in (0, 1).",
                        fix="use e.g. 0.95 or 0.9")
    return ci_prob


# --------------------------------------------------------------------------------------------
# the interface
# --------------------------------------------------------------------------------------------
@dataclass
class Fit:
    """What every fitted model offers (classical or Bayesian).

    Attributes
    ----------
    model : str
        Registry name of the model (``"re"``, ``"nnhm"``, ``"nested"``, ...).
    source : str
        ``"classical"`` or ``"bayesian"``.
    method : str
        The ``method`` column of the results table (``"REML"``, ``"exact-NNHM"``, ...).
    measure, scale : str
        Effect measure and analysis scale (``"OR"`` / ``"logOR"``).
    coords : dict
        Coordinates shared by every parameter of this fit (a per-cell fit carries its
        ``{"time": ..., "subgroup": ..., "outcome": ...}``); a parameter's own coordinates
        take precedence.
    notes : tuple of str
        Statements that move the answer (prior choice and why, rows dropped, ...), for the
        report next to the numbers.
    provenance : dict
        Priors' descriptions, sampler settings, seed, timings.
    """

    model: str
    source: str
    method: str
    measure: str
    scale: str
    coords: dict = field(default_factory=dict)
    notes: tuple = ()
    provenance: dict = field(default_factory=dict)

    # ---- to be provided ------------------------------------------------------------------
    def params(self) -> list[Param]:
        raise NotImplementedError

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """One row per parameter (index: :class:`Param`), columns ``estimate, se, ci_low,
        ci_high, median, interval, statistic, df, p_value, mcse, ess_bulk, r_hat``
        (NaN where a column does not apply)."""
        raise NotImplementedError

    @property
    def clean(self) -> bool:
        """False for an MCMC fit that failed its diagnostics (or a classical fit that did not
        converge); its rows carry ``flag``."""
        return True

    @property
    def flag(self) -> str:
        return ""

    # ---- Bayesian fits -------------------------------------------------------------------
    def draws(self, param: Param | str, n: int | None = None) -> np.ndarray:
        """Posterior draws of one parameter (joint across parameters of the same fit:
        the i-th draw of two parameters comes from the same posterior draw)."""
        raise TypeError(f"{self.method} ({self.source}) has no posterior draws")

    def prob(self, param: Param | str, *, below: float | None = None,
             above: float | None = None) -> float:
        """Posterior probability that ``param`` is below / above a value (exact where the
        engine is exact, else the share of draws)."""
        if (below is None) == (above is None):
            raise ValueError("give exactly one of below= or above=")
        d = self.draws(param)
        return float(np.mean(d < below)) if below is not None else float(np.mean(d > above))

    # ---- shared --------------------------------------------------------------------------
    def coord(self, param: Param, role: str) -> str:
        return param.get(role, str(self.coords.get(role, "")))

    def to_frame(self, ci_prob: float = 0.95, *, analysis: str = "",
                 outcome: str | None = None) -> pd.DataFrame:
        """The shared results table (:data:`bayesmeta.results.SCHEMA`) at level ``ci_prob``."""
        ci_prob = _check_level(ci_prob)
        summ = self.summary(ci_prob)
        rows = []
        # plain dicts per row (iterrows builds a Series per row: most of the time here)
        for p, s in zip(summ.index, summ.to_dict("records")):
            rows.append(results.row(
                analysis=analysis,
                outcome=str(outcome if outcome is not None else self.coords.get("outcome", "")),
                source=self.source, method=self.method, parameter=p.label,
                subgroup=self.coord(p, "subgroup"), time=self.coord(p, "time"),
                estimate=s.get("estimate"), se=s.get("se"), ci_low=s.get("ci_low"),
                ci_high=s.get("ci_high"), level=ci_prob, interval=s.get("interval") or "",
                scale=self.scale, statistic=s.get("statistic"), df=s.get("df"),
                p_value=s.get("p_value"), median=s.get("median"), mcse=s.get("mcse"),
                ess_bulk=s.get("ess_bulk"), r_hat=s.get("r_hat"), flag=self.flag))
        df = results.frame(rows)
        df.attrs.update(ci_prob=ci_prob, measure=self.measure, scale=self.scale)
        return df

    def find(self, name: str, **coords) -> Param:
        """The parameter with this name whose coordinates include ``coords``; a ``KeyError``
        naming the candidates when none or several match."""
        want = {k: str(v) for k, v in coords.items()}
        hits = [p for p in self.params()
                if p.name == name and all(p.get(k) == v for k, v in want.items())]
        if len(hits) != 1:
            have = [str(p) for p in self.params() if p.name == name]
            raise KeyError(f"{'no' if not hits else 'several'} parameter {name!r} with "
                           f"{want}; have {have}")
        return hits[0]


def _summary_frame(rows: list[tuple[Param, dict]]) -> pd.DataFrame:
    cols = ["estimate", "se", "ci_low", "ci_high", "median", "interval", "statistic", "df",
            "p_value", "mcse", "ess_bulk", "r_hat"]
    df = pd.DataFrame([{c: r.get(c, math.nan if c != "interval" else "") for c in cols}
                       for _, r in rows], columns=cols)
    df.index = pd.Index([p for p, _ in rows], dtype=object)
    return df


# --------------------------------------------------------------------------------------------
# classical
# --------------------------------------------------------------------------------------------
@dataclass
class ClassicalFit(Fit):
    """A classical univariate fit (:func:`bayesmeta.classical.rma` and friends).

    ``refit(level)`` returns the :class:`~bayesmeta.classical.ClassicalResult` at an interval
    level (the fit is deterministic and cheap, so the read level is honoured exactly: Wald or
    t interval, prediction interval and Q-profile CIs of tau² all at that level).
    ``studies`` adds one ``theta`` row per study (observed effect with its Wald interval).
    """

    refit: Callable[[float], Any] = None
    studies: bool = False
    prediction: bool = True

    def __post_init__(self):
        self._cache = lru_cache(maxsize=8)(self.refit)

    def result(self, ci_prob: float = 0.95):
        return self._cache(round(float(ci_prob), 12))

    @property
    def clean(self) -> bool:
        return bool(getattr(self.result(), "converged", True))

    @property
    def flag(self) -> str:
        return "" if self.clean else "NOT CONVERGED"

    def params(self) -> list[Param]:
        r = self.result()
        out = [Param("mu"), Param("tau2"), Param("tau")]
        if self.prediction:
            out.append(Param("theta_new"))
        if self.studies:
            out += [Param("theta", study=s) for s in r.studies["study"]]
        return out

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        r = self.result(ci_prob)
        interval = "wald-z" if r.test == "z" else "t"
        rows = [
            (Param("mu"), dict(estimate=r.estimate, se=r.se, ci_low=r.ci_low,
                               ci_high=r.ci_high, interval=interval, statistic=r.statistic,
                               df=r.df, p_value=r.p)),
            (Param("tau2"), dict(estimate=r.tau2, se=r.tau2_se, ci_low=r.tau2_ci[0],
                                 ci_high=r.tau2_ci[1], interval="q-profile")),
            (Param("tau"), dict(estimate=r.tau, ci_low=r.tau_ci[0], ci_high=r.tau_ci[1],
                                interval="q-profile")),
        ]
        if self.prediction:
            rows.append((Param("theta_new"), dict(estimate=r.estimate,
                                                  se=math.sqrt(r.tau2 + r.se ** 2),
                                                  ci_low=r.pi_low, ci_high=r.pi_high,
                                                  interval="wald-z" if r.pi_df is None
                                                  else "t", df=r.pi_df)))
        if self.studies:
            z = _z(ci_prob)
            for s in r.studies.itertuples():
                se = math.sqrt(s.vi) if math.isfinite(s.vi) else math.nan
                rows.append((Param("theta", study=s.study),
                             dict(estimate=s.yi, se=se, ci_low=s.yi - z * se,
                                  ci_high=s.yi + z * se, interval="wald-z")))
        return _summary_frame(rows)


# --------------------------------------------------------------------------------------------
# exact normal-normal posterior
# --------------------------------------------------------------------------------------------
@dataclass
class ExactFit(Fit):
    """The exact NNHM posterior (:class:`bayesmeta.exact.ExactResult`)."""

    result: Any = None
    n_draws: int = 40_000
    seed: int = 0
    studies: bool = True
    #: report only these parameter names (e.g. ``("mu",)`` when tau is fixed)
    only: tuple = ()

    def _name(self, param: Param) -> str:
        if param.name == "theta":
            return f"theta[{param.get('study')}]"
        return param.name

    def params(self) -> list[Param]:
        out = [Param("mu"), Param("tau"), Param("tau2"), Param("theta_new")]
        if self.studies:
            out += [Param("theta", study=str(s)) for s in self.result.labels]
        return [p for p in out if not self.only or p.name in self.only]

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        res = self.result
        rows = []
        for p in self.params():
            name = self._name(p)
            s = res.summary(name)
            lo, hi = res.interval(name, ci_prob)
            rows.append((p, dict(estimate=s["mean"], se=s["sd"], median=s["median"],
                                 ci_low=lo, ci_high=hi, interval="eti", mcse=0.0)))
        return _summary_frame(rows)

    def prob(self, param, *, below=None, above=None) -> float:
        if (below is None) == (above is None):
            raise ValueError("give exactly one of below= or above=")
        param = as_param(param)
        x = below if below is not None else above
        c = float(self.result.cdf(self._name(param), x))
        return c if below is not None else 1.0 - c

    def draws(self, param, n: int | None = None) -> np.ndarray:
        """Exact draws by inverse CDF at common uniforms (joint only through tau: each
        parameter's draws are marginal draws; use :meth:`prob` for exact probabilities)."""
        param = as_param(param)
        n = int(n or self.n_draws)
        u = np.random.default_rng(self.seed).uniform(size=n)
        u = np.clip(u, 1e-12, 1 - 1e-12)
        return np.asarray(self.result.quantile(self._name(param), u), float)


# --------------------------------------------------------------------------------------------
# posterior draws (MCMC, or exact i.i.d. draws kept in a DataTree)
# --------------------------------------------------------------------------------------------
def _split_label(label: str) -> tuple[str, list[str]]:
    if label.endswith("]") and "[" in label:
        name, rest = label.split("[", 1)
        return name, [x.strip() for x in rest[:-1].split(",")]
    return label, []


@dataclass
class DrawsFit(Fit):
    """Any :class:`bayesmeta.mcmc.PosteriorResult`: intervals are equal-tailed quantiles of
    the draws at the read level; Monte Carlo columns come from the result's summary.

    ``param_map`` maps each reported label of the result to its :class:`Param`; by default
    the label's bracket part is read as the study (``theta[Smith]``) and the report's own
    ``time``/``subgroup`` become coordinates.
    """

    result: Any = None
    param_map: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.param_map:
            pm = {}
            for rep in self.result.reports:
                name, rest = _split_label(rep.label)
                coords = {}
                if rep.time:
                    coords["time"] = rep.time
                if rep.subgroup:
                    coords["subgroup"] = rep.subgroup
                if name == "theta" and rest:
                    coords["study"] = ", ".join(rest)
                elif rest and not coords:
                    coords["level"] = ", ".join(rest)
                pm[rep.label] = Param(name, coords)
            self.param_map = pm
        self._by_param = {p: lab for lab, p in self.param_map.items()}

    @property
    def clean(self) -> bool:
        return bool(self.result.clean)

    @property
    def flag(self) -> str:
        return "" if self.clean else "NOT CLEAN"

    def params(self) -> list[Param]:
        return list(self.param_map.values())

    def label_of(self, param) -> str:
        param = as_param(param)
        try:
            return self._by_param[param]
        except KeyError:
            raise KeyError(f"no parameter {param}; have {[str(p) for p in self.params()]}") \
                from None

    def draws(self, param, n: int | None = None) -> np.ndarray:
        d = self.result.draws(self.label_of(param))
        return d if n is None else d[:n]

    def prob(self, param, *, below=None, above=None) -> float:
        if hasattr(self.result, "prob"):
            return float(self.result.prob(self.label_of(param), below=below, above=above))
        return super().prob(param, below=below, above=above)

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        a = (1.0 - ci_prob) / 2.0
        rows = []
        for lab, p in self.param_map.items():
            s = self.result.summary.loc[lab]
            if hasattr(self.result, "quantiles"):  # an exact engine: exact quantiles
                lo, hi = self.result.quantiles(lab, [a, 1.0 - a])
            else:
                lo, hi = np.quantile(self.result.draws(lab), [a, 1.0 - a])
            rows.append((p, dict(estimate=s["mean"], se=s["sd"], median=s["median"],
                                 ci_low=float(lo), ci_high=float(hi), interval="eti",
                                 mcse=s.get("mcse_mean", math.nan),
                                 ess_bulk=s.get("ess_bulk", math.nan),
                                 r_hat=s.get("r_hat", math.nan))))
        return _summary_frame(rows)


# --------------------------------------------------------------------------------------------
# another fit under the pipeline's parameter names
# --------------------------------------------------------------------------------------------
@dataclass
class RenamedFit(Fit):
    """A fit whose parameters are reported under other names and coordinates (e.g. a model's
    ``log_or`` at time t as the pipeline's cell effect ``mu`` at t). ``names`` maps each
    reported :class:`Param` to the inner fit's; parameters not in ``names`` are reported as
    they are. Everything else is the inner fit's."""

    inner: Any = None
    names: dict = field(default_factory=dict)

    def __post_init__(self):
        self._back = {v: k for k, v in self.names.items()}

    @property
    def clean(self) -> bool:
        return self.inner.clean

    @property
    def flag(self) -> str:
        return self.inner.flag

    @property
    def result(self):
        return getattr(self.inner, "result", None)

    def _in(self, param) -> Param:
        param = as_param(param)
        return self.names.get(param, param)

    def params(self) -> list[Param]:
        return [self._back.get(p, p) for p in self.inner.params()]

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        s = self.inner.summary(ci_prob)
        s.index = pd.Index([self._back.get(p, p) for p in s.index], dtype=object)
        return s

    def prob(self, param, *, below=None, above=None) -> float:
        return self.inner.prob(self._in(param), below=below, above=above)

    def draws(self, param, n: int | None = None) -> np.ndarray:
        return self.inner.draws(self._in(param), n)
