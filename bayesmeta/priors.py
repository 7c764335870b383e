"""Prior distributions for the normal-normal hierarchical model (NNHM): value objects.

A prior is an immutable (frozen) dataclass with a readable ``str``, e.g. ``HalfNormal(scale=0.5)``.
Two families:

* **mu priors** (overall effect): :class:`Normal`, :class:`Flat`. Methods ``logpdf(mu)``,
  ``to_pymc(name)``, property ``is_flat``.
* **tau priors** (between-study SD): :class:`HalfNormal`, :class:`HalfCauchy`,
  :class:`HalfStudentT`, :class:`Uniform`, :class:`Exponential`, :class:`LogNormalTau2`
  (normal on log tau², Turner et al. 2015) and :class:`LogStudentTTau2` (Student-t on log tau²,
  Rhodes et al. 2015). Methods ``logpdf_tau(tau)``, ``cdf_tau(tau)``, ``ppf_tau(q)``,
  ``to_pymc(name)``, ``describe()``.

Priors defined on log tau² carry the Jacobian in ``logpdf_tau``: if ``x = log tau²`` has density
``f(x)`` then tau has density ``f(2 log tau) * 2 / tau``.

:func:`parse_prior` reads CLI/spec strings (``halfnormal:0.5``, ``turner2015-all``, ...);
:func:`default_tau_prior` gives the measure-dependent (scale-aware for raw mean differences)
default with the reason text; :func:`prior_sets` gives the named sets used in sensitivity tables.

References
----------
Turner RM, Jackson D, Wei Y, Thompson SG, Higgins JPT (2015). Predictive distributions for
between-study heterogeneity and simple methods for their application in Bayesian meta-analysis.
Statistics in Medicine 34(6):984-998. doi:10.1002/sim.6381

Rhodes KM, Turner RM, Higgins JPT (2015). Predictive distributions were developed for the extent
of heterogeneity in meta-analyses of continuous outcome data. Journal of Clinical Epidemiology
68(1):52-60. doi:10.1016/j.jclinepi.2014.08.012

Röver C, Bender R, Dias S, Schmid CH, Schmidli H, Sturtz S, Weber S, Friede T (2021). On weakly
informative prior distributions for the heterogeneity parameter in Bayesian random-effects
meta-analysis. Research Synthesis Methods 12(4):448-474. doi:10.1002/jrsm.1475

Spiegelhalter DJ, Abrams KR, Myles JP (2004). Bayesian Approaches to Clinical Trials and
Health-Care Evaluation, Wiley, section 5.5 (sceptical and enthusiastic priors).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np
from scipy import special

from bayesmeta.exceptions import SpecError
from bayesmeta.prior_scale import covering_scale, data_scale

__all__ = [
    "Prior", "MuPrior", "TauPrior",
    "Normal", "Flat",
    "HalfNormal", "HalfCauchy", "HalfStudentT", "Uniform", "Exponential",
    "LogNormalTau2", "LogStudentTTau2",
    "NAMED_PRIORS", "parse_prior", "unit_information_sd", "default_tau_prior",
    "default_mu_prior", "prior_sets", "PRIOR_SET_NAMES", "outcome_sd",
]

_LOG2 = math.log(2.0)
#: largest prior location/scale accepted: its square (1e300) is still a finite double
_HUGE = 1e150
_LOG_TAU2_MAX = 460.0
_NORM_LOGC = 0.5 * math.log(2.0 * math.pi)


def _stats():
    """scipy.stats, imported when a Student-t prior needs it (it costs ~0.5 s to import, and
    the normal-based priors of the exact engine's default path do without it)."""
    from scipy import stats

    return stats


def _norm_logpdf(x, mean, sd):
    """Normal log density, the expression scipy.stats.norm.logpdf evaluates."""
    z = (np.asarray(x, dtype=float) - mean) / sd
    return -z ** 2 / 2.0 - _NORM_LOGC - np.log(sd)


def _norm_cdf(x, mean, sd):
    return special.ndtr((np.asarray(x, dtype=float) - mean) / sd)


def _norm_ppf(q, mean, sd):
    return special.ndtri(np.asarray(q, dtype=float)) * sd + mean


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _check_finite(cls, **values):
    for k, v in values.items():
        if not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
            raise SpecError(f"{cls}: {k} must be a finite number, got {v!r}")
        if abs(v) > _HUGE:  # its square must stay a finite double
            raise SpecError(f"{cls}: {k} must be at most {_HUGE:g} in absolute value, got {v!r}",
                            fix=f"give {k} on the analysis scale")


def _check_positive(cls, **values):
    _check_finite(cls, **values)
    for k, v in values.items():
        if v <= 0:
            raise SpecError(f"{cls}: {k} must be > 0, got {v!r}",
                            fix=f"give a positive {k}")
        if v < 1.0 / _HUGE:
            raise SpecError(f"{cls}: {k} must be at least {1.0 / _HUGE:g}, got {v!r}",
                            fix=f"give {k} on the analysis scale")


def _check_log_location(cls, mean):
    """A location on the log(tau²) scale: |mean| <= 460 keeps tau within 1e-100..1e100."""
    if abs(mean) > _LOG_TAU2_MAX:
        raise SpecError(f"{cls}: mean of log(tau²) must be within ±{_LOG_TAU2_MAX:g}, got "
                        f"{mean!r} (tau = exp(mean/2) would be beyond 1e±100)",
                        fix="give the mean of log(tau²), e.g. -2.56 (Turner et al. 2015)")


@dataclass(frozen=True)
class Prior:
    """Base class of all priors (value objects: equal when the parameters are equal).

    ``source`` is free text saying where the prior comes from (a citation or the reason it was
    chosen); it is not part of equality and not shown by ``str``, but ``describe()`` includes it.
    """

    target: ClassVar[str] = ""  # "mu" or "tau"

    def __str__(self) -> str:
        args = ", ".join(f"{f.name}={_fmt(getattr(self, f.name))}" for f in fields(self)
                         if f.name != "source")
        return f"{type(self).__name__}({args})"

    def describe(self) -> str:
        """One line: the distribution and where it comes from."""
        src = getattr(self, "source", "")
        return f"{self}" + (f" -- {src}" if src else "")


# --------------------------------------------------------------------------------------------
# mu priors
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MuPrior(Prior):
    """Prior for the overall mean effect mu."""

    target: ClassVar[str] = "mu"

    @property
    def is_flat(self) -> bool:
        return False


@dataclass(frozen=True)
class Normal(MuPrior):
    """mu ~ Normal(mean, sd)."""

    mean: float = 0.0
    sd: float = 1.0
    source: str = field(default="", compare=False)

    def __post_init__(self):
        if isinstance(self.sd, (int, float)) and math.isfinite(self.sd) and self.sd > _HUGE:
            raise SpecError(f"Normal: sd must be at most {_HUGE:g}, got {self.sd!r} (its square "
                            "overflows double precision)",
                            fix="use 'flat' for a prior that is flat over every value")
        _check_finite("Normal", mean=self.mean)
        _check_positive("Normal", sd=self.sd)

    def logpdf(self, mu):
        """Log density at ``mu`` (vectorised)."""
        return _norm_logpdf(mu, self.mean, self.sd)

    def to_pymc(self, name: str = "mu", **kw):
        """``pm.Normal(name, mu=mean, sigma=sd)``; call inside a ``pm.Model`` context."""
        import pymc as pm
        return pm.Normal(name, mu=self.mean, sigma=self.sd, **kw)


@dataclass(frozen=True)
class Flat(MuPrior):
    """Improper uniform prior on the whole real line for mu (``logpdf`` is 0 everywhere)."""

    source: str = field(default="", compare=False)

    @property
    def is_flat(self) -> bool:
        return True

    def logpdf(self, mu):
        """Log of the (unnormalised, improper) density: 0 everywhere."""
        return np.zeros_like(np.asarray(mu, dtype=float))

    def to_pymc(self, name: str = "mu", **kw):
        """``pm.Flat(name)``."""
        import pymc as pm
        return pm.Flat(name, **kw)


# --------------------------------------------------------------------------------------------
# tau priors
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TauPrior(Prior):
    """Prior for the between-study standard deviation tau >= 0.

    Subclasses implement ``logpdf_tau``, ``cdf_tau``, ``ppf_tau`` and ``to_pymc``.
    ``upper`` is the upper end of the support (``inf`` unless bounded).
    """

    target: ClassVar[str] = "tau"
    is_proper: ClassVar[bool] = True

    @property
    def upper(self) -> float:
        return math.inf

    @property
    def lower(self) -> float:
        return 0.0

    @property
    def tail(self) -> tuple[float, float]:
        """Right tail of the density as ``(a, b)``: p(tau) ~ tau**-a * log(tau)**-b.

        ``a = inf`` for light (faster than any power) or bounded tails. Used by the exact
        engine to decide which posterior moments exist.
        """
        return (math.inf, 0.0)

    def pdf_tau(self, tau):
        """Density of tau (vectorised)."""
        return np.exp(self.logpdf_tau(tau))

    def logpdf_tau(self, tau):  # pragma: no cover - abstract
        raise NotImplementedError

    def cdf_tau(self, tau):  # pragma: no cover - abstract
        raise NotImplementedError

    def ppf_tau(self, q):  # pragma: no cover - abstract
        raise NotImplementedError

    def to_pymc(self, name: str = "tau", **kw):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _tau(tau):
        return np.asarray(tau, dtype=float)


@dataclass(frozen=True)
class HalfNormal(TauPrior):
    """tau ~ half-normal with scale ``scale`` (the SD of the parent normal)."""

    scale: float = 0.5
    source: str = field(default="", compare=False)

    def __post_init__(self):
        _check_positive("HalfNormal", scale=self.scale)

    def logpdf_tau(self, tau):
        t = self._tau(tau)
        with np.errstate(divide="ignore"):
            out = _LOG2 + _norm_logpdf(t, 0.0, self.scale)
        return np.where(t >= 0, out, -np.inf)

    def cdf_tau(self, tau):
        t = np.maximum(self._tau(tau), 0.0)
        return special.erf(t / (self.scale * math.sqrt(2.0)))

    def ppf_tau(self, q):
        return self.scale * math.sqrt(2.0) * special.erfinv(np.asarray(q, dtype=float))

    def to_pymc(self, name: str = "tau", **kw):
        import pymc as pm
        return pm.HalfNormal(name, sigma=self.scale, **kw)


@dataclass(frozen=True)
class HalfCauchy(TauPrior):
    """tau ~ half-Cauchy with scale ``scale`` (Gelman 2006)."""

    scale: float = 1.0
    source: str = field(default="", compare=False)

    def __post_init__(self):
        _check_positive("HalfCauchy", scale=self.scale)

    @property
    def tail(self):
        return (2.0, 0.0)

    def logpdf_tau(self, tau):
        t = self._tau(tau)
        out = _LOG2 - math.log(math.pi * self.scale) - np.log1p((t / self.scale) ** 2)
        return np.where(t >= 0, out, -np.inf)

    def cdf_tau(self, tau):
        t = np.maximum(self._tau(tau), 0.0)
        return 2.0 / math.pi * np.arctan(t / self.scale)

    def ppf_tau(self, q):
        return self.scale * np.tan(0.5 * math.pi * np.asarray(q, dtype=float))

    def to_pymc(self, name: str = "tau", **kw):
        import pymc as pm
        return pm.HalfCauchy(name, beta=self.scale, **kw)


@dataclass(frozen=True)
class HalfStudentT(TauPrior):
    """tau ~ half-Student-t with ``nu`` degrees of freedom and scale ``scale``."""

    nu: float = 3.0
    scale: float = 1.0
    source: str = field(default="", compare=False)

    def __post_init__(self):
        _check_positive("HalfStudentT", nu=self.nu, scale=self.scale)

    @property
    def tail(self):
        return (self.nu + 1.0, 0.0)

    def logpdf_tau(self, tau):
        t = self._tau(tau)
        out = _LOG2 + _stats().t.logpdf(t, self.nu, 0.0, self.scale)
        return np.where(t >= 0, out, -np.inf)

    def cdf_tau(self, tau):
        t = np.maximum(self._tau(tau), 0.0)
        return 2.0 * _stats().t.cdf(t, self.nu, 0.0, self.scale) - 1.0

    def ppf_tau(self, q):
        return _stats().t.ppf(0.5 + 0.5 * np.asarray(q, dtype=float), self.nu, 0.0, self.scale)

    def to_pymc(self, name: str = "tau", **kw):
        import pymc as pm
        return pm.HalfStudentT(name, nu=self.nu, sigma=self.scale, **kw)


@dataclass(frozen=True)
class Uniform(TauPrior):
    """tau ~ Uniform(lower, upper), 0 <= lower < upper < inf."""

    lower: float = 0.0
    upper: float = 1.0  # shadows TauPrior.upper (end of support)
    source: str = field(default="", compare=False)

    def __post_init__(self):
        _check_finite("Uniform", lower=self.lower, upper=self.upper)
        if self.lower < 0:
            raise SpecError(f"Uniform: tau lower bound must be >= 0, got {self.lower!r}")
        if self.upper <= self.lower:
            raise SpecError(f"Uniform: upper ({self.upper!r}) must be > lower ({self.lower!r})")

    def logpdf_tau(self, tau):
        t = self._tau(tau)
        inside = (t >= self.lower) & (t <= self.upper)
        return np.where(inside, -math.log(self.upper - self.lower), -np.inf)

    def cdf_tau(self, tau):
        t = self._tau(tau)
        return np.clip((t - self.lower) / (self.upper - self.lower), 0.0, 1.0)

    def ppf_tau(self, q):
        return self.lower + np.asarray(q, dtype=float) * (self.upper - self.lower)

    def to_pymc(self, name: str = "tau", **kw):
        import pymc as pm
        return pm.Uniform(name, lower=self.lower, upper=self.upper, **kw)


@dataclass(frozen=True)
class Exponential(TauPrior):
    """tau ~ Exponential(rate) (mean 1/rate)."""

    rate: float = 1.0
    source: str = field(default="", compare=False)

    def __post_init__(self):
        _check_positive("Exponential", rate=self.rate)

    def logpdf_tau(self, tau):
        t = self._tau(tau)
        return np.where(t >= 0, math.log(self.rate) - self.rate * t, -np.inf)

    def cdf_tau(self, tau):
        t = np.maximum(self._tau(tau), 0.0)
        return -np.expm1(-self.rate * t)

    def ppf_tau(self, q):
        return -np.log1p(-np.asarray(q, dtype=float)) / self.rate

    def to_pymc(self, name: str = "tau", **kw):
        import pymc as pm
        return pm.Exponential(name, lam=self.rate, **kw)


@dataclass(frozen=True)
class LogNormalTau2(TauPrior):
    """log(tau²) ~ Normal(mean, sd): Turner et al. (2015) form (tau is log-normal(mean/2, sd/2)).

    ``logpdf_tau`` includes the Jacobian |d log tau² / d tau| = 2 / tau.
    """

    mean: float = -2.56
    sd: float = 1.74
    source: str = field(default="", compare=False)

    def __post_init__(self):
        _check_finite("LogNormalTau2", mean=self.mean)
        _check_log_location("LogNormalTau2", self.mean)
        _check_positive("LogNormalTau2", sd=self.sd)

    def logpdf_tau(self, tau):
        t = self._tau(tau)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = 2.0 * np.log(t)
            out = _norm_logpdf(x, self.mean, self.sd) + _LOG2 - np.log(t)
        return np.where(t > 0, out, -np.inf)

    def cdf_tau(self, tau):
        t = self._tau(tau)
        with np.errstate(divide="ignore"):
            x = 2.0 * np.log(np.maximum(t, 0.0))
        return _norm_cdf(x, self.mean, self.sd)

    def ppf_tau(self, q):
        return np.exp(0.5 * _norm_ppf(q, self.mean, self.sd))

    def to_pymc(self, name: str = "tau", **kw):
        """Sample ``log_<name>2`` ~ Normal and return ``pm.Deterministic(name, exp(x/2))``.

        ``kw`` (e.g. ``dims``) goes to both variables.
        """
        import pymc as pm
        x = pm.Normal(f"log_{name}2", mu=self.mean, sigma=self.sd, **kw)
        return pm.Deterministic(name, pm.math.exp(0.5 * x), **kw)


@dataclass(frozen=True)
class LogStudentTTau2(TauPrior):
    """log(tau²) ~ Student-t(nu, mean, scale): Rhodes et al. (2015) form.

    ``logpdf_tau`` includes the Jacobian 2 / tau.
    """

    nu: float = 5.0
    mean: float = -3.44
    scale: float = 2.59
    source: str = field(default="", compare=False)

    def __post_init__(self):
        _check_finite("LogStudentTTau2", mean=self.mean)
        _check_log_location("LogStudentTTau2", self.mean)
        _check_positive("LogStudentTTau2", nu=self.nu, scale=self.scale)

    @property
    def tail(self):
        # t density in x = log tau^2 ~ |x|^-(nu+1), times the Jacobian 2/tau
        return (1.0, self.nu + 1.0)

    def logpdf_tau(self, tau):
        t = self._tau(tau)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = 2.0 * np.log(t)
            out = _stats().t.logpdf(x, self.nu, self.mean, self.scale) + _LOG2 - np.log(t)
        return np.where(t > 0, out, -np.inf)

    def cdf_tau(self, tau):
        t = self._tau(tau)
        with np.errstate(divide="ignore"):
            x = 2.0 * np.log(np.maximum(t, 0.0))
        return _stats().t.cdf(x, self.nu, self.mean, self.scale)

    def ppf_tau(self, q):
        return np.exp(0.5 * _stats().t.ppf(np.asarray(q, dtype=float), self.nu, self.mean,
                                        self.scale))

    def to_pymc(self, name: str = "tau", **kw):
        """Sample ``log_<name>2`` ~ StudentT and return ``pm.Deterministic(name, exp(x/2))``."""
        import pymc as pm
        x = pm.StudentT(f"log_{name}2", nu=self.nu, mu=self.mean, sigma=self.scale, **kw)
        return pm.Deterministic(name, pm.math.exp(0.5 * x), **kw)


# --------------------------------------------------------------------------------------------
# Named empirical priors
# --------------------------------------------------------------------------------------------

_TURNER = ("Turner et al. (2015) Stat Med 34:984-998, doi:10.1002/sim.6381")
_RHODES = ("Rhodes et al. (2015) J Clin Epidemiol 68:52-60, doi:10.1016/j.jclinepi.2014.08.012")

#: Empirical heterogeneity priors selectable by name. Values checked against the published
#: tables as transcribed in R bayesmeta's ``TurnerEtAlParameters``/``RhodesEtAlParameters``:
#: Turner 2015 marginal setting (p. 993): log tau² ~ N(-2.56, 1.74²); Table IV, all-cause
#: mortality, pharmacological vs placebo/control: N(-3.95, 1.34²); Rhodes 2015 general setting
#: (start of Sec. 3.3): log tau² ~ t_5(-3.44, 2.59).
NAMED_PRIORS: dict[str, TauPrior] = {
    "turner2015-all": LogNormalTau2(
        -2.56, 1.74,
        source=f"empirical prior for log-OR, any outcome and comparison; {_TURNER}, p. 993"),
    "turner2015-mortality-pharma": LogNormalTau2(
        -3.95, 1.34,
        source=("empirical prior for log-OR, all-cause mortality, pharmacological vs "
                f"placebo/control; {_TURNER}, Table IV")),
    "rhodes2015-smd": LogStudentTTau2(
        5.0, -3.44, 2.59,
        source=f"empirical prior for SMD, general setting; {_RHODES}, Sec. 3.3"),
}

# grammar: name -> (constructor, number of numeric args, kind, usage)
_GRAMMAR = {
    "halfnormal": (HalfNormal, 1, "tau", "halfnormal:SCALE"),
    "halfcauchy": (HalfCauchy, 1, "tau", "halfcauchy:SCALE"),
    "halfstudentt": (HalfStudentT, 2, "tau", "halfstudentt:NU:SCALE"),
    "uniform": (Uniform, 2, "tau", "uniform:LOWER:UPPER"),
    "exponential": (Exponential, 1, "tau", "exponential:RATE"),
    "lognormal-tau2": (LogNormalTau2, 2, "tau", "lognormal-tau2:MEAN:SD"),
    "logt-tau2": (LogStudentTTau2, 3, "tau", "logt-tau2:NU:MEAN:SCALE"),
    "normal": (Normal, 2, "mu", "normal:MEAN:SD"),
    "flat": (Flat, 0, "mu", "flat"),
}


def parse_prior(text: str, kind: str | None = None) -> Prior:
    """Parse a prior from a CLI/spec string.

    Parameters
    ----------
    text : str
        ``halfnormal:S``, ``halfcauchy:S``, ``halfstudentt:NU:S``, ``uniform:A:B``,
        ``exponential:R``, ``lognormal-tau2:M:S``, ``logt-tau2:NU:M:S``, ``normal:M:S``,
        ``flat``, or a named empirical prior (:data:`NAMED_PRIORS`): ``turner2015-all``,
        ``turner2015-mortality-pharma``, ``rhodes2015-smd``. Case-insensitive.
    kind : {"tau", "mu"}, optional
        If given, the prior must be of that kind.

    Raises
    ------
    SpecError
        Unknown name (with a did-you-mean), wrong number of arguments, non-numeric or
        out-of-range parameters, or a prior of the wrong kind.

    Examples
    --------
    >>> str(parse_prior("halfnormal:0.5"))
    'HalfNormal(scale=0.5)'
    >>> str(parse_prior("turner2015-all"))
    'LogNormalTau2(mean=-2.56, sd=1.74)'
    """
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"empty prior specification {text!r}",
                        fix="use e.g. 'halfnormal:0.5' or 'normal:0:10'")
    s = text.strip().lower()
    head, *args = [p.strip() for p in s.split(":")]
    if s in NAMED_PRIORS:
        prior: Prior = NAMED_PRIORS[s]
    elif head in _GRAMMAR:
        ctor, nargs, _, usage = _GRAMMAR[head]
        if len(args) != nargs:
            raise SpecError(f"prior '{text}' needs {nargs} number(s): {usage}",
                            fix=f"write it as {usage}")
        try:
            nums = [float(a) for a in args]
        except ValueError:
            raise SpecError(f"prior '{text}': parameters must be numbers ({usage})") from None
        prior = ctor(*nums)
    else:
        choices = sorted(list(_GRAMMAR) + list(NAMED_PRIORS))
        near = difflib.get_close_matches(head if head not in ("",) else s, choices, n=3,
                                         cutoff=0.5)
        near += [c for c in difflib.get_close_matches(s, choices, n=3, cutoff=0.5)
                 if c not in near]
        hint = f"did you mean {' or '.join(repr(n) for n in near)}? " if near else ""
        raise SpecError(f"unknown prior '{text}'",
                        fix=f"{hint}Known priors: {', '.join(choices)}")
    if kind is not None and prior.target != kind:
        raise SpecError(f"prior '{text}' is a prior for {prior.target}, not for {kind}",
                        fix=("tau priors: halfnormal, halfcauchy, halfstudentt, uniform, "
                             "exponential, lognormal-tau2, logt-tau2, " + ", ".join(NAMED_PRIORS)
                             if kind == "tau" else "mu priors: normal:MEAN:SD or flat"))
    return prior


# --------------------------------------------------------------------------------------------
# Data-dependent defaults and prior sets
# --------------------------------------------------------------------------------------------

_RATIO = {"OR", "RR", "PETO", "LOGOR", "LOGRR", "HR", "LOGHR"}
_MEASURES = {"MD", "SMD", "OR", "RR", "RD", "PETO", "MC", "GEN", "LOGOR", "LOGRR", "HR", "LOGHR"}

#: Assumed total sample size per study when n is not given (used only to recover a unit
#: information SD from standard errors, s_u ≈ SE * sqrt(n)).
FALLBACK_N = 64


def _norm_measure(measure: str) -> str:
    m = str(measure).strip().upper()
    if m not in _MEASURES:
        near = difflib.get_close_matches(m, sorted(_MEASURES), n=2)
        raise SpecError(f"unknown measure '{measure}'",
                        fix=(f"did you mean {' or '.join(near)}? " if near else "")
                        + "Use one of MD, SMD, OR, RR, RD, PETO, MC, GEN")
    return m


def _extract(data):
    """(vi, n or None) from a DataFrame/mapping with vi|sei and ni|n1i+n2i columns."""
    if data is None:
        return None, None
    get = (lambda k: data[k] if k in data else None)
    vi = get("vi")
    if vi is None and get("sei") is not None:
        vi = np.asarray(get("sei"), dtype=float) ** 2
    vi = None if vi is None else np.asarray(vi, dtype=float)
    n = get("ni")
    if n is None and get("n1i") is not None and get("n2i") is not None:
        n = np.asarray(get("n1i"), dtype=float) + np.asarray(get("n2i"), dtype=float)
    n = None if n is None else np.asarray(n, dtype=float)
    if n is not None and (not np.all(np.isfinite(n)) or np.any(n <= 0)):
        n = None
    return vi, n


def unit_information_sd(vi, n=None) -> tuple[float, str]:
    """Unit-information SD s_u = sqrt(sum(n_i) / sum(1/v_i)) (Röver et al. 2021, Sec. 2.2).

    If ``n`` is missing, falls back to assuming every study has :data:`FALLBACK_N` patients,
    i.e. s_u = sqrt(FALLBACK_N * k / sum(1/v_i)). Returns ``(s_u, how)``.
    """
    v = np.asarray(vi, dtype=float)
    if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise SpecError("unit-information SD needs finite positive sampling variances vi")
    if n is not None:
        n = np.asarray(n, dtype=float)
        return (math.sqrt(n.sum() / np.sum(1.0 / v)),
                f"s_u = sqrt(sum n / sum 1/vi) from {v.size} studies' n and vi")
    return (math.sqrt(FALLBACK_N * v.size / np.sum(1.0 / v)),
            f"sample sizes unknown: s_u = SE * sqrt(n) assuming n = {FALLBACK_N} per study")


def _yi(data):
    """The study estimates of ``data`` (column ``yi``), or None."""
    if data is None or "yi" not in data:
        return None
    y = np.asarray(data["yi"], dtype=float)
    y = y[np.isfinite(y)]
    return y if y.size else None


def _scale(vi, n) -> tuple[float, str]:
    """(s, how): :func:`unit_information_sd`, or the median per-study unit-information SD when
    a few very precise studies collapse it (:func:`bayesmeta.prior_scale.data_scale`)."""
    c = data_scale(vi, n, fallback_n=FALLBACK_N)
    return c.s, c.how


def default_tau_prior(measure: str, data=None) -> tuple[TauPrior, str]:
    """Weakly informative default tau prior for ``measure``, and the reason (one sentence).

    * log-OR / log-RR / Peto (ratio measures): HalfNormal(0.5). tau = 0.5 means the odds
      ratios of individual studies vary by a factor of about exp(2*1.96*0.5) ≈ 7 across the 95%
      range, "fairly high" heterogeneity (Röver et al. 2021 discuss HN(0.5) among weakly
      informative choices for log-OR).
    * SMD: HalfNormal(0.5); the unit-information SD of an SMD is about 2, so this equals the
      scale-aware rule below with s_u = 2.
    * MD, MC, RD, GEN (no empirical prior exists): scale-aware HalfNormal(s_u / 4), where s_u is
      the unit-information SD (:func:`unit_information_sd`; the median per-study SD, with a
      warning, when a few very precise studies collapse it; at least a quarter of the range
      of the ``yi`` when ``data`` has them: :mod:`bayesmeta.prior_scale`).
      For a two-arm mean difference
      s_u ≈ 2 * outcome SD, so the scale is about half the outcome's SD: the same as HN(0.5) on
      the SMD scale. Our choice, following the unit-information reasoning of Röver et al. 2021.
      Needs ``data`` (``vi`` or ``sei``, optionally ``ni`` or ``n1i``/``n2i``).
    """
    m = _norm_measure(measure)
    if m in _RATIO:
        return (HalfNormal(0.5, source="weakly informative default for log ratio measures "
                           "(Röver et al. 2021)"),
                f"{m}: no data-dependent scale needed on the log-ratio scale; "
                "HalfNormal(0.5) puts 95% prior mass on tau < 0.98")
    if m == "SMD":
        return (HalfNormal(0.5, source="weakly informative default for SMD (unit information "
                           "SD ≈ 2, scale = s_u/4)"),
                "SMD: HalfNormal(0.5) = scale-aware rule s_u/4 with the SMD's s_u ≈ 2")
    vi, n = _extract(data)
    if vi is None:
        raise SpecError(f"{m}: the default tau prior is scale-aware and needs the studies' "
                        "sampling variances (vi or sei)",
                        fix="pass data with a vi or sei column, or give --tau-prior explicitly")
    su, how = _scale(vi, n)
    scale, raised = covering_scale(su, _yi(data), what="tau", factor=0.25)
    if raised:
        return (HalfNormal(scale, source=f"scale-aware default for {m}: {raised}"),
                f"{m}: tau ~ HalfNormal({scale:.4g}): {raised} (s_u = {su:.4g}: {how})")
    prior = HalfNormal(su / 4.0, source=(f"scale-aware default for {m}: HalfNormal(s_u/4), "
                                         f"s_u = {su:.4g} ({how})"))
    reason = (f"{m}: no empirical heterogeneity prior exists for raw {m} outcomes, so "
              f"tau ~ HalfNormal(s_u/4 = {su / 4:.4g}), s_u = {su:.4g} is the unit-information "
              f"SD ({how}); about half the outcome's SD, the analogue of HN(0.5) for SMD")
    return prior, reason


#: Clinically meaningful effect size (delta) used by the sceptical/enthusiastic sets, per scale.
#: log-OR/RR: log(2) (halving or doubling of the odds/risk); SMD: 0.5 (Cohen's "medium");
#: MD-type: 0.5 outcome SDs, i.e. s_u / 4.
def _delta(m: str, su: float | None) -> float:
    if m in _RATIO:
        return math.log(2.0)
    if m == "SMD":
        return 0.5
    return su / 4.0


def default_mu_prior(measure: str, data=None) -> tuple[MuPrior, str]:
    """Weakly informative mu prior: Normal(0, s_u) (unit-information prior on the effect).

    log-OR/RR: Normal(0, 4) (s_u of a log-OR with event rate 0.5 is 4); SMD: Normal(0, 2);
    MD-type: Normal(0, s_u) from data (the median per-study SD when a few very precise studies
    collapse s_u, and at least max |yi| when ``data`` has ``yi``, each with a warning:
    :mod:`bayesmeta.prior_scale`); Flat() if no data is given for an MD-type measure.
    """
    m = _norm_measure(measure)
    if m in _RATIO:
        return Normal(0.0, 4.0, source="unit-information prior for log ratios"), \
            "mu ~ Normal(0, 4): unit-information SD of a log odds ratio"
    if m == "SMD":
        return Normal(0.0, 2.0, source="unit-information prior for SMD"), \
            "mu ~ Normal(0, 2): unit-information SD of an SMD"
    vi, n = _extract(data)
    if vi is None:
        return Flat(source="no data to scale a proper prior"), "mu ~ flat (no data for scale)"
    su, how = _scale(vi, n)
    scale, raised = covering_scale(su, _yi(data), what="mu")
    if raised:
        return (Normal(0.0, scale, source=f"unit-information prior, widened: {raised}"),
                f"mu ~ Normal(0, {scale:.4g}): {raised} (s_u = {su:.4g}: {how})")
    return (Normal(0.0, su, source=f"unit-information prior, s_u = {su:.4g} ({how})"),
            f"mu ~ Normal(0, s_u = {su:.4g}): unit-information prior ({how})")


PRIOR_SET_NAMES = ("weakly_informative", "sceptical", "enthusiastic", "empirical")


def outcome_sd(measure: str, data) -> tuple[float, str] | None:
    """The outcome's SD for scaling an SMD prior to a mean difference, and how it was found.

    From per-arm SDs when given (MD: ``sd1i``/``sd2i`` with ``n1i``/``n2i``, pooled over arms
    and studies; MC: ``sdi`` with ``ni``); otherwise from the unit-information SD s_u
    (:func:`unit_information_sd`): for a two-arm MD with equal arms ``v = 4 sigma² / N``, so
    ``sigma = s_u / 2``; for a one-arm mean change ``v = sigma² / n``, so ``sigma = s_u``.
    None when neither is available.
    """
    m = _norm_measure(measure)
    if data is None or m not in ("MD", "MC"):
        return None
    get = (lambda k: np.asarray(data[k], dtype=float) if k in data else None)
    if m == "MD" and all(get(k) is not None for k in ("sd1i", "sd2i", "n1i", "n2i")):
        sd1, sd2, n1, n2 = (get(k) for k in ("sd1i", "sd2i", "n1i", "n2i"))
        ok = np.isfinite(sd1) & np.isfinite(sd2) & (n1 > 1) & (n2 > 1)
        if ok.any():
            num = np.sum((n1[ok] - 1) * sd1[ok] ** 2 + (n2[ok] - 1) * sd2[ok] ** 2)
            den = np.sum(n1[ok] + n2[ok] - 2)
            return math.sqrt(num / den), f"pooled within-arm SD of {int(ok.sum())} studies"
    if m == "MC" and get("sdi") is not None and get("ni") is not None:
        sd, n = get("sdi"), get("ni")
        ok = np.isfinite(sd) & (n > 1)
        if ok.any():
            return (math.sqrt(np.sum((n[ok] - 1) * sd[ok] ** 2) / np.sum(n[ok] - 1)),
                    f"pooled SD of {int(ok.sum())} studies")
    vi, n = _extract(data)
    if vi is None:
        return None
    su, how = unit_information_sd(vi, n)
    return (su / 2.0, f"s_u / 2 ({how})") if m == "MD" else (su, f"s_u ({how})")


def prior_sets(measure: str, data=None, *, benefit: int = -1,
               outcome_type: str | None = None) -> dict[str, tuple[MuPrior, TauPrior]]:
    """Named (mu prior, tau prior) pairs for prior-sensitivity analysis.

    Parameters
    ----------
    measure : str
        MD, SMD, OR, RR, RD, PETO, MC or GEN (ratio measures on the log scale).
    data : DataFrame or mapping, optional
        Study table with ``vi`` (or ``sei``) and optionally ``ni`` or ``n1i``/``n2i``; needed for
        MD-type measures (scale-aware priors).
    benefit : {-1, +1}
        Direction of a beneficial effect (-1: lower is better, e.g. log-OR of death). Used by
        the enthusiastic prior.
    outcome_type : {None, "all-cause mortality"}
        For log-OR: ``"all-cause mortality"`` selects Turner et al. (2015)'s prior for that
        outcome (pharmacological vs placebo/control) in the empirical set.

    Returns
    -------
    dict
        ``{"weakly_informative", "sceptical", "enthusiastic", "empirical"}`` → ``(mu, tau)``.
        Each prior's ``describe()`` says what it is and why.

    Notes
    -----
    With delta a clinically meaningful effect (log 2 for ratios, 0.5 for SMD, s_u/4 ≈ half an
    outcome SD for MD-type measures):

    * ``weakly_informative`` (default): :func:`default_mu_prior`, :func:`default_tau_prior`.
    * ``sceptical``: mu ~ Normal(0, delta/1.96): only 2.5% prior probability that the effect
      exceeds delta in either direction (Spiegelhalter et al. 2004, Sec. 5.5.2); default tau.
    * ``enthusiastic``: mu ~ Normal(benefit*delta, delta/1.645): centred on a meaningful
      benefit with 5% prior probability of harm (Spiegelhalter et al. 2004, Sec. 5.5.3);
      default tau.
    * ``empirical``: weakly informative mu with the empirical tau prior: Turner et al. 2015
      (all outcomes, or all-cause mortality with ``outcome_type``) for log-OR/Peto and, as an
      approximation, log-RR; Rhodes et al. 2015 (general) for SMD; for MD/MC the Rhodes SMD
      prior scaled by the outcome's SD (tau_MD = SD x tau_SMD, so log tau² shifts by
      2 log SD; :func:`outcome_sd`). Not offered (key absent) for RD/GEN, or for MD/MC when
      no SD can be found.
    """
    m = _norm_measure(measure)
    if benefit not in (-1, 1):
        raise SpecError(f"benefit must be -1 or +1, got {benefit!r}")
    mu_wi, _ = default_mu_prior(m, data)
    tau_wi, _ = default_tau_prior(m, data)
    su = None
    if m not in _RATIO and m != "SMD":
        vi, n = _extract(data)
        su = _scale(vi, n)[0] if vi is not None else None
    sets: dict[str, tuple[MuPrior, TauPrior]] = {"weakly_informative": (mu_wi, tau_wi)}
    if m in _RATIO or m == "SMD" or su is not None:
        d = _delta(m, su)
        sets["sceptical"] = (Normal(0.0, d / 1.959963984540054,
                                    source=f"sceptical: P(|mu| > {d:.4g}) = 5%"), tau_wi)
        sets["enthusiastic"] = (Normal(benefit * d, d / 1.6448536269514722,
                                       source=f"enthusiastic: centred on {benefit * d:.4g}, "
                                              "P(harm) = 5%"), tau_wi)
    if outcome_type not in (None, "all-cause mortality"):
        raise SpecError(f"Invalid outcome_type {outcome_type!r}",
                        fix="use 'all-cause mortality' or leave it unset")
    if m in ("OR", "PETO", "LOGOR"):
        tau_emp = NAMED_PRIORS["turner2015-mortality-pharma" if outcome_type
                               else "turner2015-all"]
    elif m in ("RR", "LOGRR"):
        base = NAMED_PRIORS["turner2015-all"]
        tau_emp = LogNormalTau2(base.mean, base.sd, source=base.source + "; derived for log-OR, "
                                "used for log-RR as an approximation")
    elif m == "SMD":
        tau_emp = NAMED_PRIORS["rhodes2015-smd"]
    elif m in ("MD", "MC") and outcome_sd(m, data) is not None:
        sd, how = outcome_sd(m, data)
        r = NAMED_PRIORS["rhodes2015-smd"]
        tau_emp = LogStudentTTau2(r.nu, r.mean + 2.0 * math.log(sd), r.scale, source=(
            f"Rhodes 2015 SMD prior scaled to {m} by the outcome SD {sd:.4g} ({how}): "
            f"log tau² ~ t_{r.nu:g}({r.mean:g} + 2 log {sd:.4g}, {r.scale:g}); {_RHODES}"))
    else:
        return sets
    sets["empirical"] = (mu_wi, tau_emp)
    return sets
