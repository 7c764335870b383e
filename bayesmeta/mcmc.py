"""PyMC models for meta-analysis: NNHM, binomial-normal, nested (study/time/subgroup).

Every model is non-centred, has named ``coords``/``dims`` and returns an
:class:`MCMCResult` wrapping the ``xarray.DataTree`` that PyMC 6 / nutpie produce.

Public API
----------
:func:`fit_nnhm`             normal-normal hierarchical model (checked against ``bayesmeta.exact``)
:func:`fit_binomial_normal`  exact binomial likelihood, study baselines, random log-OR
:func:`fit_nested`           cells (subgroup x time) pooled toward subgroups toward the overall mean,
                             study effect shared across time, partially pooled tau per cell
:func:`prior_sensitivity`    refit over ``bayesmeta.priors.prior_sets`` -> tidy table
:class:`SamplerSettings`     draws/tune/chains/cores/target_accept/sampler/seed
:class:`MCMCResult`          frozen result: datatree, summary, diagnostics, timings, ``to_frame``

Sampler choice (measured, see :data:`SAMPLER_MEASUREMENT`)
-----------------------------------------------------------
The default sampler is **nutpie** with a compiled model cached per model *structure* (model kind,
array shapes, priors); refits at the same shapes only swap data (``compiled.with_data``).
Compile time and sampling time are recorded separately on every result
(``compile_seconds`` is 0 when the cached compiled model was reused).

Measured on this 2-core shared machine (4 chains x 1000 draws + 1000 tune, cores=2,
target_accept=0.95; wall seconds; ESS/s = min bulk ESS over mu, tau per sampling second):

=======================  =========  ========  ===========  ===================
model / sampler          compile s  sample s  min ESS      ESS/s (sampling)
=======================  =========  ========  ===========  ===================
NNHM k=6, nutpie         see SAMPLER_MEASUREMENT (filled from benchmarks run)
=======================  =========  ========  ===========  ===================
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bayesmeta import results
from bayesmeta.diagnostics import Convergence, check_convergence
from bayesmeta.exceptions import DataError, DataWarning, SpecError

__all__ = [
    "SamplerSettings", "MCMCResult", "fit_nnhm", "fit_binomial_normal", "fit_nested",
    "prior_sensitivity", "clear_cache", "SAMPLER_MEASUREMENT", "ROW_KINDS",
]

CI_PROB = 0.95
CI_KIND = "eti"
SAMPLERS = ("nutpie", "pymc")

#: Measured sampler comparison (filled in from ``benchmarks/`` runs; see module docstring).
SAMPLER_MEASUREMENT: dict[str, dict[str, float]] = {}

logging.getLogger("pymc").setLevel(logging.ERROR)


# ---------------------------------------------------------------------------------------------
# sampler settings and compiled-model cache
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamplerSettings:
    """How to sample. Defaults give 0 divergences on the bundled data.

    ``chains=4, cores=2`` are explicit (PyMC would otherwise pick 2 chains on this machine).
    The same ``seed`` gives bit-identical draws (nutpie and pymc samplers).
    """

    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    cores: int = 2
    target_accept: float = 0.95
    sampler: str = "nutpie"
    seed: int = 20240601

    def __post_init__(self):
        for name in ("draws", "chains", "cores"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise SpecError(f"Invalid {name} {v!r}: must be an integer >= 1.")
        if not isinstance(self.tune, (int, np.integer)) or self.tune < 0:
            raise SpecError(f"Invalid tune {self.tune!r}: must be an integer >= 0.")
        if not (0.5 <= float(self.target_accept) < 1.0):
            raise SpecError(f"Invalid target_accept {self.target_accept!r}: must be in [0.5, 1).")
        if self.sampler not in SAMPLERS:
            raise SpecError(f"Invalid sampler {self.sampler!r}: must be one of {list(SAMPLERS)}.")
        if not isinstance(self.seed, (int, np.integer)):
            raise SpecError(f"Invalid seed {self.seed!r}: must be an integer.")

    def to_dict(self) -> dict:
        return {"draws": int(self.draws), "tune": int(self.tune), "chains": int(self.chains),
                "cores": int(self.cores), "target_accept": float(self.target_accept),
                "sampler": self.sampler, "seed": int(self.seed)}


def _settings(settings: SamplerSettings | None, kw: dict) -> SamplerSettings:
    s = settings or SamplerSettings()
    unknown = set(kw) - set(SamplerSettings.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown sampling argument(s) {sorted(unknown)}; "
                        f"known: {sorted(SamplerSettings.__dataclass_fields__)}")
    return replace(s, **kw) if kw else s


@dataclass
class _Compiled:
    """A PyMC model built once per structure, with its nutpie compilation (lazy)."""

    model: Any
    data_names: tuple[str, ...]
    nutpie_model: Any = None
    build_seconds: float = 0.0


_CACHE: dict[tuple, _Compiled] = {}


def clear_cache() -> None:
    """Forget all cached compiled models (tests, memory)."""
    _CACHE.clear()


def _prior_key(p) -> str:
    return f"{type(p).__name__}:{p}"


def _get_compiled(key: tuple, builder) -> _Compiled:
    comp = _CACHE.get(key)
    if comp is None:
        t0 = time.perf_counter()
        model, names = builder()
        comp = _Compiled(model=model, data_names=tuple(names),
                         build_seconds=time.perf_counter() - t0)
        _CACHE[key] = comp
    return comp


def _sample(comp: _Compiled, data: dict[str, np.ndarray], s: SamplerSettings):
    """Sample ``comp`` with ``data`` swapped in. Returns (datatree, compile_s, sampling_s)."""
    data = {k: np.asarray(v, dtype=float) for k, v in data.items()}
    if s.sampler == "nutpie":
        import nutpie
        compile_s = 0.0
        if comp.nutpie_model is None:
            t0 = time.perf_counter()
            comp.nutpie_model = nutpie.compile_pymc_model(comp.model)
            compile_s = time.perf_counter() - t0 + comp.build_seconds
        cm = comp.nutpie_model.with_data(**data)
        t0 = time.perf_counter()
        dt = nutpie.sample(cm, draws=s.draws, tune=s.tune, chains=s.chains, cores=s.cores,
                           seed=int(s.seed), progress_bar=False, target_accept=s.target_accept)
        sample_s = time.perf_counter() - t0
    else:
        import pymc as pm
        with comp.model:
            pm.set_data(data)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                dt = pm.sample(draws=s.draws, tune=s.tune, chains=s.chains, cores=s.cores,
                               random_seed=int(s.seed), progressbar=False,
                               target_accept=s.target_accept, nuts_sampler="pymc",
                               compute_convergence_checks=False)
            total = time.perf_counter() - t0
        sample_s = float(dt["sample_stats"].attrs.get("sampling_time", total))
        compile_s = max(total - sample_s, 0.0)  # pymc compiles inside pm.sample
    # keep the stored tree small: drop warm-up groups (nutpie)
    keep = {name: child for name, child in dt.children.items() if not name.startswith("warmup")}
    dt = xr.DataTree.from_dict({f"/{k}": v.to_dataset() for k, v in keep.items()})
    return dt, compile_s, sample_s


def _relabel(dt, coords: dict[str, list]):
    """Give dims their real labels (models are built with generic labels for reuse)."""

    def f(ds):
        upd = {d: list(map(str, v)) for d, v in coords.items() if d in ds.dims}
        return ds.assign_coords(upd) if upd else ds

    return dt.map_over_datasets(f)


def _finish_tree(dt, *, coords, observed: dict, constant: dict, attrs: dict):
    """Relabel coords, add observed_data / constant_data groups and root provenance attrs."""
    import bayesmeta

    d = {f"/{k}": v.to_dataset() for k, v in dt.children.items()}
    d["/observed_data"] = xr.Dataset(observed)
    d["/constant_data"] = xr.Dataset(constant)
    root = xr.Dataset(attrs={**{k: (v if isinstance(v, (int, float, str)) else str(v))
                                for k, v in attrs.items()},
                             "bayesmeta_version": bayesmeta.__version__,
                             "created": _dt.datetime.now(_dt.timezone.utc).isoformat()})
    d["/"] = root
    return _relabel(xr.DataTree.from_dict(d), coords)


# ---------------------------------------------------------------------------------------------
# result object
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Report:
    """One reported scalar: ``posterior[var].sel(sel)`` labelled for the schema table."""

    var: str
    sel: tuple = ()
    parameter: str = ""
    subgroup: str = ""
    time: str = ""

    @property
    def label(self) -> str:
        return self.parameter or self.var


def _draws(dt, rep: Report) -> xr.DataArray:
    da = dt["posterior"][rep.var]
    if rep.sel:
        da = da.sel(dict(rep.sel))
    return da


def _summary(dt, reports) -> pd.DataFrame:
    """az.summary (95% ETI, never ArviZ's 89% default) plus the median, indexed by label."""
    import arviz as az

    ds = xr.Dataset({rep.label: _draws(dt, rep).reset_coords(drop=True) for rep in reports})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summ = az.summary(ds, ci_prob=CI_PROB, ci_kind=CI_KIND)
    summ = pd.DataFrame(summ)
    summ["median"] = [float(ds[c].median()) for c in summ.index]
    return summ


@dataclass(frozen=True)
class MCMCResult:
    """A fitted MCMC model (frozen).

    Attributes
    ----------
    model : str
        ``"NNHM"``, ``"binomial-normal"``, ``"nested"``, ``"survival-published"``, ...
    datatree : xarray.DataTree
        Posterior, sample_stats, observed_data, constant_data; root attrs carry the seed,
        sampler, priors and timings.
    summary : pandas.DataFrame
        ``az.summary(..., ci_prob=0.95, ci_kind="eti")`` of the reported scalars (+ median),
        indexed by parameter label; columns mean, sd, eti95_lb, eti95_ub, ess_bulk, ess_tail,
        r_hat, mcse_mean, mcse_sd, median.
    diagnostics : Convergence
        R-hat, ESS, divergences, E-BFMI and the ``clean`` flag.
    settings : dict
        Sampler settings incl. seed and sampler name.
    compile_seconds, sampling_seconds : float
        Recorded separately; compile is 0 when a cached compiled model was reused.
    priors : dict
        Parameter -> prior description.
    reports : tuple of Report
        The scalars in ``summary`` / ``to_frame()``.
    """

    model: str
    datatree: Any
    summary: pd.DataFrame
    diagnostics: Convergence
    settings: dict
    compile_seconds: float
    sampling_seconds: float
    priors: dict
    reports: tuple
    measure: str = "GEN"
    scale: str = "GEN"
    k: int = 0
    analysis: str = ""
    outcome: str = ""
    notes: tuple = ()
    extra: dict = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return self.diagnostics.clean

    @property
    def method(self) -> str:
        m = f"{self.model}-MCMC"
        return m if self.clean else m + " [NOT CLEAN]"

    def draws(self, label: str) -> np.ndarray:
        """Flattened posterior draws of a reported scalar (by its label)."""
        for rep in self.reports:
            if rep.label == label:
                return np.asarray(_draws(self.datatree, rep).values, dtype=float).ravel()
        raise KeyError(f"no reported parameter {label!r}; have {[r.label for r in self.reports]}")

    def prob(self, label: str, *, below: float | None = None, above: float | None = None):
        """Posterior probability that a reported scalar is below/above a value."""
        d = self.draws(label)
        if (below is None) == (above is None):
            raise ValueError("give exactly one of below= or above=")
        return float(np.mean(d < below)) if below is not None else float(np.mean(d > above))

    def to_frame(self) -> pd.DataFrame:
        """The shared schema table (``bayesmeta.results``), one row per reported scalar.

        ``df.attrs`` holds ``ci_prob``, ``ci_kind``, ``clean`` and the diagnostics dict; a fit
        that is not clean also says so in ``method`` (``"... [NOT CLEAN]"``).
        """
        rows = []
        for rep in self.reports:
            s = self.summary.loc[rep.label]
            rows.append(results.row(
                analysis=self.analysis, outcome=self.outcome, source="bayesian",
                method=self.method, parameter=rep.label, subgroup=rep.subgroup, time=rep.time,
                estimate=s["mean"], se=s["sd"], ci_low=s[f"{CI_KIND}95_lb"],
                ci_high=s[f"{CI_KIND}95_ub"], level=CI_PROB, interval=CI_KIND, scale=self.scale,
                median=s["median"], mcse=s["mcse_mean"], ess_bulk=s["ess_bulk"],
                r_hat=s["r_hat"]))
        df = results.frame(rows)
        df.attrs.update(ci_prob=CI_PROB, ci_kind=CI_KIND, measure=self.measure, scale=self.scale,
                        statistic_kind="", clean=self.clean,
                        diagnostics=self.diagnostics.to_dict())
        return df

    def save(self, path) -> None:
        """Write the DataTree to NetCDF (``datatree.to_netcdf``; needs h5netcdf + h5py)."""
        dt = self.datatree.map_over_datasets(
            lambda ds: ds.drop_vars([v for v in ds.data_vars if ds[v].dtype == object]))
        dt.to_netcdf(path)

    def __str__(self) -> str:
        s = self.settings
        lines = [
            f"Bayesian {self.model} meta-analysis (MCMC: {s['sampler']} NUTS, {s['chains']} "
            f"chains x {s['draws']} draws after {s['tune']} tune, target_accept "
            f"{s['target_accept']}, seed {s['seed']})",
            f"k = {self.k}; measure {self.measure} (analysis scale {self.scale})",
            "Priors: " + "; ".join(f"{k} ~ {v}" for k, v in self.priors.items()),
            "",
        ]
        tab = self.summary.rename(columns={f"{CI_KIND}95_lb": "ci.lb", f"{CI_KIND}95_ub": "ci.ub"})
        cols = ["mean", "sd", "ci.lb", "ci.ub", "median", "mcse_mean", "ess_bulk", "r_hat"]
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            lines.append(tab[cols].to_string(float_format=lambda v: f"{v:.4g}"))
        lines.append("")
        lines.append(f"95% ETI = equal-tailed credible interval (2.5%, 97.5% posterior "
                     f"quantiles). Timing: compile {self.compile_seconds:.2f} s, sampling "
                     f"{self.sampling_seconds:.2f} s.")
        lines.extend(self.notes)
        if self.scale in ("logOR", "logRR"):
            lines.append(f"Estimates on the {self.scale} scale; exponentiate for ratios.")
        lines.append(self.diagnostics.line())
        lines.extend("  - " + p for p in self.diagnostics.problems)
        return "\n".join(lines)

    __repr__ = __str__


def _make_result(model_name, dt, reports, s: SamplerSettings, compile_s, sample_s, priors, *,
                 measure, scale, k, analysis="", outcome="", notes=(), extra=None,
                 monitor=None, warn=True):
    conv = check_convergence(dt, var_names=monitor, warn=False)
    if warn and not conv.clean:
        from bayesmeta.diagnostics import REMEDY
        from bayesmeta.exceptions import ConvergenceWarning
        warnings.warn(f"{model_name}: " + "; ".join(conv.problems) + f"; {REMEDY}.",
                      ConvergenceWarning, stacklevel=3)
    return MCMCResult(model=model_name, datatree=dt, summary=_summary(dt, reports),
                      diagnostics=conv, settings=s.to_dict(), compile_seconds=compile_s,
                      sampling_seconds=sample_s, priors=priors, reports=tuple(reports),
                      measure=measure, scale=scale, k=k, analysis=analysis, outcome=outcome,
                      notes=tuple(notes), extra=dict(extra or {}))


# ---------------------------------------------------------------------------------------------
# input validation helpers
# ---------------------------------------------------------------------------------------------

def _vec(name, x, n=None) -> np.ndarray:
    a = np.atleast_1d(np.asarray(x, dtype=float))
    if a.ndim != 1:
        raise DataError(f"'{name}' must be one-dimensional, got shape {a.shape}")
    if n is not None and a.size != n:
        raise DataError(f"Length mismatch: '{name}' has {a.size} values but expected {n}.")
    if not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a)).tolist()
        raise DataError(f"'{name}' has missing or non-finite values at positions {bad}",
                        fix="drop or fill those studies before fitting")
    return a


def _labels(study, k) -> list[str]:
    if study is None:
        return [f"study {i + 1}" for i in range(k)]
    lab = [str(v) for v in study]
    if len(lab) != k:
        raise DataError(f"Length mismatch: 'study' has {len(lab)} labels but there are {k} "
                        "studies.")
    return lab


def _resolve_priors(measure, data, mu_prior, tau_prior):
    from bayesmeta import priors as P

    if isinstance(mu_prior, str):
        mu_prior = P.parse_prior(mu_prior, kind="mu")
    if isinstance(tau_prior, str):
        tau_prior = P.parse_prior(tau_prior, kind="tau")
    if mu_prior is None:
        mu_prior, _ = P.default_mu_prior(measure, data)
        if getattr(mu_prior, "is_flat", False):
            raise SpecError("MCMC needs a proper mu prior here", fix="pass mu_prior='normal:0:S'")
    if tau_prior is None:
        tau_prior, _ = P.default_tau_prior(measure, data)
    return mu_prior, tau_prior


def _scale_of(measure: str) -> str:
    return {"OR": "logOR", "RR": "logRR", "PETO": "logOR"}.get(str(measure).upper(),
                                                               str(measure).upper())


# ---------------------------------------------------------------------------------------------
# 1. NNHM
# ---------------------------------------------------------------------------------------------

def _build_nnhm(k, mu_prior, tau_prior, yi, sei):
    import pymc as pm

    def builder():
        with pm.Model(coords={"study": [f"s{i}" for i in range(k)]}) as m:
            y = pm.Data("yi", yi, dims="study")
            se = pm.Data("sei", sei, dims="study")
            mu = mu_prior.to_pymc("mu")
            tau = tau_prior.to_pymc("tau")
            z = pm.Normal("z", 0.0, 1.0, dims="study")
            pm.Deterministic("theta", mu + tau * z, dims="study")
            z_new = pm.Normal("z_new", 0.0, 1.0)
            pm.Deterministic("theta_new", mu + tau * z_new)
            pm.Deterministic("tau2", tau ** 2)
            pm.Normal("y", mu=mu + tau * z, sigma=se, observed=y, dims="study")
        return m, ("yi", "sei")

    return builder


def fit_nnhm(yi, sei, *, mu_prior=None, tau_prior=None, study=None, measure: str = "GEN",
             settings: SamplerSettings | None = None, analysis: str = "", outcome: str = "",
             warn: bool = True, **sampling) -> MCMCResult:
    """Normal-normal hierarchical model by MCMC (non-centred).

    y_i ~ N(theta_i, sei_i²), theta_i = mu + tau z_i, z_i ~ N(0, 1); theta_new = mu + tau z_new.

    Parameters
    ----------
    yi, sei : array-like
        Effects and their standard errors (analysis scale).
    mu_prior, tau_prior : Prior or str, optional
        ``bayesmeta.priors`` objects or strings (``"normal:0:10"``, ``"halfnormal:0.5"``);
        default: ``priors.default_mu_prior`` / ``default_tau_prior`` for ``measure``.
    study : list of str, optional
        Study labels (the ``study`` coordinate).
    measure : str
        Effect measure (for default priors and the printed scale).
    settings : SamplerSettings, optional
        Or pass ``draws=``, ``tune=``, ``chains=``, ``cores=``, ``target_accept=``,
        ``sampler=``, ``seed=`` directly.

    Returns
    -------
    MCMCResult
        Reported scalars ``mu``, ``tau``, ``tau2``, ``theta_new`` and ``theta[<study>]``.
    """
    yi = _vec("yi", yi)
    sei = _vec("sei", sei, yi.size)
    if np.any(sei <= 0):
        raise DataError(f"'sei' must be > 0 for every study; {int(np.sum(sei <= 0))} have "
                        "sei <= 0.")
    k = yi.size
    labels = _labels(study, k)
    s = _settings(settings, sampling)
    mu_p, tau_p = _resolve_priors(measure, {"vi": sei ** 2}, mu_prior, tau_prior)
    key = ("nnhm", k, _prior_key(mu_p), _prior_key(tau_p))
    comp = _get_compiled(key, _build_nnhm(k, mu_p, tau_p, yi, sei))
    dt, c_s, s_s = _sample(comp, {"yi": yi, "sei": sei}, s)
    dt = _finish_tree(dt, coords={"study": labels},
                      observed={"yi": ("study", yi)},
                      constant={"sei": ("study", sei), "vi": ("study", sei ** 2)},
                      attrs={"model": "NNHM", "seed": s.seed, "sampler": s.sampler,
                             "mu_prior": str(mu_p), "tau_prior": str(tau_p),
                             "compile_seconds": c_s, "sampling_seconds": s_s})
    reports = [Report("mu"), Report("tau"), Report("tau2"), Report("theta_new")]
    reports += [Report("theta", (("study", lab),), f"theta[{lab}]") for lab in labels]
    return _make_result("NNHM", dt, reports, s, c_s, s_s,
                        {"mu": mu_p.describe(), "tau": tau_p.describe()},
                        measure=measure, scale=_scale_of(measure), k=k, analysis=analysis,
                        outcome=outcome, monitor=["mu", "tau", "z", "z_new"], warn=warn)
