"""PyMC models for meta-analysis: NNHM, binomial-normal, nested (study/time/subgroup).

Every model is non-centred, has named ``coords``/``dims`` and returns an
:class:`MCMCResult` wrapping the ``xarray.DataTree`` that PyMC 6 / nutpie produce.

Public API
----------
:func:`fit_nnhm`             normal-normal hierarchical model (checked against ``bayesmeta.exact``)
:func:`fit_binomial_normal`  exact binomial likelihood, study baselines, random log-OR
:func:`fit_nested`           cells (subgroup x time) pooled toward subgroups, subgroups toward the
                             overall mean; study effect shared across time; tau per cell pooled
:func:`fit_nested_many`      several nested datasets, one compiled model (level flags, padding)
:func:`prior_sensitivity`    refit over ``bayesmeta.priors.prior_sets`` -> tidy table
:class:`SamplerSettings`     draws/tune/chains/cores/target_accept/sampler/seed
:class:`MCMCResult`          frozen result: datatree, summary, diagnostics, timings, ``to_frame``

Sampler choice (measured, see :data:`SAMPLER_MEASUREMENT` and benchmarks/results.md)
-------------------------------------------------------------------------------------
The default sampler is **nutpie**. For the NNHM, binomial-normal and nested models it evaluates
hand-written log-density kernels (:mod:`bayesmeta.mcmc_backend`, :mod:`bayesmeta.mcmc_kernels`)
that numba compiles once per machine and loads from its disk cache in later processes, so a fit
costs its sampling plus a fraction of a second, with no PyMC import (:data:`NUTPIE_ROUTE`).
Otherwise (``NUTPIE_ROUTE = "pytensor"``, priors the kernels do not implement, the survival
models) nutpie compiles the PyMC model, cached per model *structure* (model kind, array shapes,
priors) within the process; refits at the same shapes only swap data
(``compiled.with_data``). Compile (or kernel load) time and sampling time are recorded
separately on every result (``compile_seconds`` is 0 when nothing had to be compiled or loaded).

Measured (PyTensor route) with :func:`benchmark_samplers` (``python -m bayesmeta.mcmc``) on the shared 2-core
machine (load average 5-7, so read as orders of magnitude), 4 chains x 2000 draws + 1000 tune,
cores=2, seeds 1 and 2; compile = seconds to build+compile in a process whose numba disk cache
is warm (the first-ever compile took 14-28 s for nutpie and ~24 s for pymc under load); 0 = the
cached compiled model was reused; ESS/s = min bulk ESS of the monitored parameters per
sampling second:

======  =======  ==========  ===========  ============  ========  ===========
model   sampler  compile s   sampling s   min ESS bulk  ESS/s     divergences
======  =======  ==========  ===========  ============  ========  ===========
NNHM    nutpie   7.2 / 0     0.44 / 0.29  1080 / 1100   2480/3830 0 / 0
NNHM    pymc     1.3 / 1.2   16.7 / 26.8  2180 / 2370   130 / 88  0 / 0
nested  nutpie   3.8 / 0     1.35 / 1.52  2400 / 1940   1770/1280 0 / 0
nested  pymc     1.9 / 3.9   39.0 / 21.8  2500 / 3160   64 / 145  0 / 1
======  =======  ==========  ===========  ============  ========  ===========

(NNHM: BCG, k = 13, log OR; nested: the bundled 2014 arm data, target_accept 0.99.) nutpie samples
10-40x more effective draws per second and, with the cached compile, a refit costs well under
a second, so it is the default; the pymc sampler (``sampler="pymc"``) is kept for ``tune=0``
diagnostics and cross-checks. It also had 1 divergence on the nested model (seed 2).
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
from bayesmeta.exceptions import DataError, DataWarning, EstimationError, SpecError
from bayesmeta.io import check_role_values, is_missing_label

__all__ = [
    "SamplerSettings", "PosteriorResult", "MCMCResult", "fit_nnhm", "fit_binomial_normal", "fit_nested",
    "fit_nested_many",
    "prior_sensitivity", "clear_cache", "SAMPLER_MEASUREMENT", "ROW_KINDS",
]

CI_PROB = 0.95
CI_KIND = "eti"
SAMPLERS = ("nutpie", "pymc")

#: Measured sampler comparison (seed 1 / seed 2; see the module docstring and
#: :func:`benchmark_samplers`): wall seconds and min bulk ESS per sampling second.
SAMPLER_MEASUREMENT: dict[str, dict[str, tuple[float, float]]] = {
    "NNHM/nutpie": {"compile_s": (7.2, 0.0), "sampling_s": (0.44, 0.29),
                    "ess_per_s": (2480, 3830)},
    "NNHM/pymc": {"compile_s": (1.3, 1.2), "sampling_s": (16.7, 26.8), "ess_per_s": (130, 88)},
    "nested/nutpie": {"compile_s": (3.8, 0.0), "sampling_s": (1.35, 1.52),
                      "ess_per_s": (1770, 1280)},
    "nested/pymc": {"compile_s": (1.9, 3.9), "sampling_s": (39.0, 21.8),
                    "ess_per_s": (64, 145)},
}

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

    draws: int = 2000   # 1000 gave R-hat 1.010-1.013 on z for BCG (k=13) in 1 of 2 seeds
    tune: int = 1000
    chains: int = 4
    cores: int = 2
    target_accept: float = 0.99  # 0.95 gave 4 divergences on a k = 2 NNHM
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
        if self.sampler == "nutpie" and self.tune < 1:
            # nutpie 0.16 panics ("Poisoned sampler state mutex") without adaptation steps
            raise SpecError(f"Invalid tune {self.tune!r} for sampler 'nutpie': must be >= 1.",
                            fix="use tune >= 1, or sampler='pymc' for tune=0")

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


def _deterministic_numba():
    """Compile with pytensor's numba ``fastmath`` off: same seed -> identical draws whatever
    the state of the compile cache.

    With ``numba__fastmath = True`` (pytensor's default: reassoc, contract, afn, arcp, nsz) a
    kernel compiled fresh is optimised by LLVM together with its callers (inlined, re-associated,
    fused multiply-adds), while a kernel loaded from pytensor's numba disk cache is linked as
    separately compiled object code. The nested model's logp/gradient then differed in the last
    bits at 873 of 10,000 random points between a process with an empty
    ``base_compiledir`` and one with a warm cache (max |diff| 9e-13), and the NUTS
    trajectories diverged from the first adaptation steps (draws differing at Monte Carlo noise
    level). With fastmath off the two agree bitwise (IEEE semantics leave LLVM no choice);
    fastmath is part of pytensor's cache key, so no fastmath kernel is ever reused.
    """
    from pytensor import config

    return config.change_flags(numba__fastmath=False)


#: How ``sampler="nutpie"`` gets its log density: ``"kernels"`` (default) = the disk-cached
#: hand-written kernels of :mod:`bayesmeta.mcmc_backend` for the NNHM, binomial-normal and
#: nested models (no compile in later processes; PyMC is not imported); ``"pytensor"`` = nutpie
#: compiles the PyMC model in every process (5-15 s). Priors the kernels do not implement, and
#: the survival models, always take the PyMC route. Recorded as ``nutpie_route`` in the
#: DataTree's root attributes.
NUTPIE_ROUTES = ("kernels", "pytensor")
NUTPIE_ROUTE = "kernels"


def _kernel_route(s: SamplerSettings, *priors) -> bool:
    """Whether this fit samples with the cached kernels (see :data:`NUTPIE_ROUTE`)."""
    if NUTPIE_ROUTE not in NUTPIE_ROUTES:
        raise SpecError(f"Invalid bayesmeta.mcmc.NUTPIE_ROUTE {NUTPIE_ROUTE!r}: must be one of "
                        f"{list(NUTPIE_ROUTES)}.")
    if s.sampler != "nutpie" or NUTPIE_ROUTE != "kernels":
        return False
    from bayesmeta import mcmc_backend

    return mcmc_backend.supported(*priors) and mcmc_backend.available()[0]


def _sample_kernels(problem, s: SamplerSettings):
    """Sample a :class:`bayesmeta.mcmc_backend.Problem` with nutpie. Returns (datatree,
    compile_s, sampling_s); compile_s is the kernels' load (or first-ever compile) time, 0 when
    this process already had them."""
    from bayesmeta import mcmc_backend

    try:
        return mcmc_backend.sample(problem, draws=s.draws, tune=s.tune, chains=s.chains,
                                   cores=s.cores, seed=s.seed, target_accept=s.target_accept)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # nutpie's Rust panics are BaseException subclasses
        raise EstimationError(f"nutpie sampling failed: {err}; try sampler='pymc' or "
                              "more tuning steps") from err


def _sample(comp: _Compiled, data: dict[str, np.ndarray], s: SamplerSettings):
    """Sample ``comp`` with ``data`` swapped in. Returns (datatree, compile_s, sampling_s)."""
    data = {k: (np.asarray(v) if np.issubdtype(np.asarray(v).dtype, np.integer)
                else np.asarray(v, dtype=float)) for k, v in data.items()}
    logging.getLogger("pymc").setLevel(logging.ERROR)  # pymc resets its level on import
    if s.sampler == "nutpie":
        import nutpie
        compile_s = 0.0
        if comp.nutpie_model is None:
            t0 = time.perf_counter()
            with _deterministic_numba():
                comp.nutpie_model = nutpie.compile_pymc_model(comp.model)
            compile_s = time.perf_counter() - t0 + comp.build_seconds
        cm = comp.nutpie_model.with_data(**data)
        t0 = time.perf_counter()
        try:
            dt = nutpie.sample(cm, draws=s.draws, tune=s.tune, chains=s.chains, cores=s.cores,
                               seed=int(s.seed), progress_bar=False,
                               target_accept=s.target_accept)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # nutpie's Rust panics are BaseException subclasses
            raise EstimationError(f"nutpie sampling failed: {err}; try sampler='pymc' or "
                                  "more tuning steps") from err
        sample_s = time.perf_counter() - t0
    else:
        import pymc as pm
        with comp.model, _deterministic_numba():
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
    """az.summary (95% ETI, never ArviZ's 89% default) plus the median, indexed by label.

    The reported scalars are stacked along one dim of one variable, so ArviZ computes each
    statistic once over all of them (per variable it cost ~0.25 CPU-s for 17 scalars); the
    numbers are those of az.summary per scalar (tests/test_mcmc_backend.py)."""
    import arviz as az

    labels = [rep.label for rep in reports]
    arr = np.stack([np.asarray(_draws(dt, rep).values, dtype=float) for rep in reports], -1)
    da = xr.DataArray(arr, dims=("chain", "draw", "_label"), coords={"_label": labels})
    with warnings.catch_warnings():
        # (ArviZ's own notes on short chains and the arithmetic warnings of constant draws)
        warnings.filterwarnings("ignore", module=r"arviz")
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        summ = az.summary(xr.Dataset({"_v": da}), ci_prob=CI_PROB, ci_kind=CI_KIND)
    summ = pd.DataFrame(summ)
    if len(summ) != len(labels):  # pragma: no cover - guards ArviZ's row naming
        raise EstimationError(f"summary has {len(summ)} rows for {len(labels)} parameters")
    summ.index = labels
    summ["median"] = np.median(arr.reshape(-1, len(labels)), axis=0)
    return summ


@dataclass(frozen=True)
class PosteriorResult:
    """What every posterior-by-draws result shares (:class:`MCMCResult`,
    :class:`bayesmeta.survival.ExactSurvivalResult`), so the runner and report treat them alike.

    Attributes
    ----------
    model : str
        ``"NNHM"``, ``"binomial-normal"``, ``"nested"``, ``"survival-published"``, ...
    datatree : xarray.DataTree
        Posterior (MCMC or exact i.i.d. draws), sample_stats, observed_data, constant_data;
        root attrs carry the seed, sampler, priors and timings.
    summary : pandas.DataFrame
        The reported scalars, indexed by parameter label; columns mean, sd, eti95_lb,
        eti95_ub, median, mcse_mean (+ ess_bulk, ess_tail, r_hat, mcse_sd for MCMC).
    diagnostics
        :class:`~bayesmeta.diagnostics.Convergence` (MCMC) or the exact engine's own record.
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
    diagnostics: Any
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
    def clean(self) -> bool:  # pragma: no cover - subclasses say
        raise NotImplementedError

    @property
    def method(self) -> str:  # pragma: no cover - subclasses say
        raise NotImplementedError

    def draws(self, label: str) -> np.ndarray:
        """Flattened posterior draws of a reported scalar (by its label)."""
        for rep in self.reports:
            if rep.label == label:
                return np.asarray(_draws(self.datatree, rep).values, dtype=float).ravel()
        raise KeyError(f"no reported parameter {label!r}; have {[r.label for r in self.reports]}")

    def _row_quality(self, s: pd.Series) -> dict:
        """Monte Carlo columns of a ``to_frame`` row (``s``: the summary row)."""
        return {}

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
                median=s["median"], flag="" if self.clean else "NOT CLEAN",
                **self._row_quality(s)))
        df = results.frame(rows)
        df.attrs.update(ci_prob=CI_PROB, ci_kind=CI_KIND, measure=self.measure, scale=self.scale,
                        statistic_kind="", clean=self.clean,
                        diagnostics=self.diagnostics.to_dict())
        return df

    def save(self, path) -> None:
        """Write the DataTree to NetCDF (``datatree.to_netcdf``; needs h5netcdf + h5py); text
        variables, which h5netcdf cannot store, are dropped."""
        results.netcdf_ready(self.datatree).to_netcdf(path)


@dataclass(frozen=True)
class MCMCResult(PosteriorResult):
    """A fitted MCMC model (frozen); fields as :class:`PosteriorResult`.

    ``summary`` is ``az.summary(..., ci_prob=0.95, ci_kind="eti")`` of the reported scalars
    (+ median): columns mean, sd, eti95_lb, eti95_ub, ess_bulk, ess_tail, r_hat, mcse_mean,
    mcse_sd, median. ``diagnostics`` is a :class:`~bayesmeta.diagnostics.Convergence`
    (R-hat, ESS, divergences, E-BFMI and the ``clean`` flag).
    """

    diagnostics: Convergence

    @property
    def clean(self) -> bool:
        return self.diagnostics.clean

    @property
    def method(self) -> str:
        m = f"{self.model}-MCMC"
        return m if self.clean else m + " [NOT CLEAN]"

    def prob(self, label: str, *, below: float | None = None, above: float | None = None):
        """Posterior probability that a reported scalar is below/above a value."""
        d = self.draws(label)
        if (below is None) == (above is None):
            raise ValueError("give exactly one of below= or above=")
        return float(np.mean(d < below)) if below is not None else float(np.mean(d > above))

    def _row_quality(self, s: pd.Series) -> dict:
        return {"mcse": s["mcse_mean"], "ess_bulk": s["ess_bulk"], "r_hat": s["r_hat"]}

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
    if _kernel_route(s, mu_p, tau_p):
        from bayesmeta import mcmc_backend

        route = "kernels"
        dt, c_s, s_s = _sample_kernels(mcmc_backend.nnhm_problem(yi, sei, mu_p, tau_p), s)
    else:
        route = "pytensor"
        key = ("nnhm", k, _prior_key(mu_p), _prior_key(tau_p))
        comp = _get_compiled(key, _build_nnhm(k, mu_p, tau_p, yi, sei))
        dt, c_s, s_s = _sample(comp, {"yi": yi, "sei": sei}, s)
    dt = _finish_tree(dt, coords={"study": labels},
                      observed={"yi": ("study", yi)},
                      constant={"sei": ("study", sei), "vi": ("study", sei ** 2)},
                      attrs={"model": "NNHM", "seed": s.seed, "sampler": s.sampler,
                             **_route_attr(s, route),
                             "mu_prior": str(mu_p), "tau_prior": str(tau_p),
                             "compile_seconds": c_s, "sampling_seconds": s_s})
    reports = [Report("mu"), Report("tau"), Report("tau2"), Report("theta_new")]
    reports += [Report("theta", (("study", lab),), f"theta[{lab}]") for lab in labels]
    return _make_result("NNHM", dt, reports, s, c_s, s_s,
                        {"mu": mu_p.describe(), "tau": tau_p.describe()},
                        measure=measure, scale=_scale_of(measure), k=k, analysis=analysis,
                        outcome=outcome, monitor=["mu", "tau", "z", "z_new"], warn=warn)


# ---------------------------------------------------------------------------------------------
# 2. binomial-normal model
# ---------------------------------------------------------------------------------------------

def _build_binomial(k, mu_prior, tau_prior, baseline_sd, data):
    import pymc as pm

    def builder():
        with pm.Model(coords={"study": [f"s{i}" for i in range(k)]}) as m:
            a = pm.Data("ai", data["ai"], dims="study")
            n1 = pm.Data("n1i", data["n1i"], dims="study")
            c = pm.Data("ci", data["ci"], dims="study")
            n2 = pm.Data("n2i", data["n2i"], dims="study")
            mu = mu_prior.to_pymc("mu")
            tau = tau_prior.to_pymc("tau")
            alpha = pm.Normal("alpha", 0.0, baseline_sd, dims="study")  # baseline log-odds
            z = pm.Normal("z", 0.0, 1.0, dims="study")
            delta = pm.Deterministic("theta", mu + tau * z, dims="study")
            z_new = pm.Normal("z_new", 0.0, 1.0)
            pm.Deterministic("theta_new", mu + tau * z_new)
            pm.Deterministic("tau2", tau ** 2)
            # symmetric split of the log-OR (Smith, Spiegelhalter & Thomas 1995)
            pm.Binomial("a_obs", n=n1, p=pm.math.invlogit(alpha + 0.5 * delta), observed=a,
                        dims="study")
            pm.Binomial("c_obs", n=n2, p=pm.math.invlogit(alpha - 0.5 * delta), observed=c,
                        dims="study")
        return m, ("ai", "n1i", "ci", "n2i")

    return builder


def fit_binomial_normal(ai, n1i, ci, n2i, *, mu_prior=None, tau_prior=None, study=None,
                        baseline_sd: float = 5.0, settings: SamplerSettings | None = None,
                        analysis: str = "", outcome: str = "", warn: bool = True,
                        **sampling) -> MCMCResult:
    """Binomial-normal random-effects model for 2x2 tables (log odds ratio).

    a_i ~ Bin(n1_i, expit(alpha_i + theta_i/2)), c_i ~ Bin(n2_i, expit(alpha_i - theta_i/2)),
    alpha_i ~ N(0, baseline_sd²) (study baseline log-odds, fixed effects), theta_i = mu + tau z_i.
    The exact binomial likelihood needs no continuity correction for zero cells; tables with no
    events (or all events) in both arms carry no information on theta and are kept as they are.

    Parameters
    ----------
    ai, n1i : events and total in group 1 (experimental); ci, n2i : same in group 2 (control).
    mu_prior, tau_prior : default ``priors.default_mu_prior("OR")``/``default_tau_prior("OR")``.

    Returns
    -------
    MCMCResult
        ``mu`` (pooled log-OR), ``tau``, ``tau2``, ``theta_new``, ``theta[<study>]``.

    References
    ----------
    Smith TC, Spiegelhalter DJ, Thomas A (1995). Bayesian approaches to random-effects
    meta-analysis: a comparative study. Stat Med 14:2685-2699. doi:10.1002/sim.4780142408
    """
    n1i = _vec("n1i", n1i)
    k = n1i.size
    ai, ci, n2i = _vec("ai", ai, k), _vec("ci", ci, k), _vec("n2i", n2i, k)
    for name, ev, n in (("ai", ai, n1i), ("ci", ci, n2i)):
        bad = (ev < 0) | (ev > n) | (ev != np.round(ev)) | (n < 1) | (n != np.round(n))
        if bad.any():
            raise DataError(f"'{name}' must be whole numbers in [0, n] with n >= 1; "
                            f"{int(bad.sum())} studies violate this: "
                            f"{[_labels(study, k)[i] for i in np.flatnonzero(bad)]}")
    labels = _labels(study, k)
    s = _settings(settings, sampling)
    mu_p, tau_p = _resolve_priors("OR", None, mu_prior, tau_prior)
    data = {"ai": ai, "n1i": n1i, "ci": ci, "n2i": n2i}
    if _kernel_route(s, mu_p, tau_p):
        from bayesmeta import mcmc_backend

        route = "kernels"
        dt, c_s, s_s = _sample_kernels(mcmc_backend.binomial_problem(
            ai, n1i, ci, n2i, mu_p, tau_p, float(baseline_sd)), s)
    else:
        route = "pytensor"
        key = ("binomial-normal", k, float(baseline_sd), _prior_key(mu_p), _prior_key(tau_p))
        comp = _get_compiled(key, _build_binomial(k, mu_p, tau_p, float(baseline_sd), data))
        dt, c_s, s_s = _sample(comp, data, s)
    dt = _finish_tree(dt, coords={"study": labels},
                      observed={"ai": ("study", ai), "ci": ("study", ci)},
                      constant={"n1i": ("study", n1i), "n2i": ("study", n2i)},
                      attrs={"model": "binomial-normal", "seed": s.seed, "sampler": s.sampler,
                             **_route_attr(s, route),
                             "mu_prior": str(mu_p), "tau_prior": str(tau_p),
                             "baseline_sd": float(baseline_sd),
                             "compile_seconds": c_s, "sampling_seconds": s_s})
    reports = [Report("mu"), Report("tau"), Report("tau2"), Report("theta_new")]
    reports += [Report("theta", (("study", lab),), f"theta[{lab}]") for lab in labels]
    return _make_result("binomial-normal", dt, reports, s, c_s, s_s,
                        {"mu": mu_p.describe(), "tau": tau_p.describe(),
                         "alpha": f"Normal(0, {baseline_sd:g}) per study (baseline log-odds)"},
                        measure="OR", scale="logOR", k=k, analysis=analysis, outcome=outcome,
                        monitor=["mu", "tau", "z", "alpha", "z_new"], warn=warn)


# ---------------------------------------------------------------------------------------------
# 3. nested model: study / time / subgroup
# ---------------------------------------------------------------------------------------------

#: What a row of the nested-model input is.
ROW_KINDS = ("study", "pooled", "subgroup_pooled")
NESTED_TARGET_ACCEPT = 0.99
ALL_PATIENTS = "all"


def _time_sort_key(t):
    try:
        return (0, float(t), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(t))


def _fmt_time(t) -> str:
    try:
        f = float(t)
        return str(int(f)) if f.is_integer() else str(f)
    except (TypeError, ValueError):
        return str(t)


def _row_name(df, i) -> str:
    r = df.loc[i]
    parts = [f"row {i}"]
    if r.get("study", ""):
        parts.append(f"study={r['study']!s}")
    parts.append(f"time={r['time']!s}")
    parts.append(f"subgroup={r['subgroup']!s}")
    parts.append(f"row_kind={r['row_kind']!s}")
    return " ".join(parts)


def find_overlaps(df: pd.DataFrame) -> list[tuple[int, list[int], str]]:
    """Rows that summarise other rows of ``df`` (would count patients twice).

    Returns ``[(coarse_row, [finer rows], reason), ...]``:

    * an all-patients ``pooled`` row and any ``subgroup_pooled`` or ``study`` row at the same
      time (the all-patients estimate is built from those patients);
    * a ``subgroup_pooled`` row and ``study`` rows of the same subgroup at the same time.
    """
    out = []
    for i, r in df.iterrows():
        same_t = df.index[(df["time"] == r["time"]) & (df.index != i)]
        if r["row_kind"] == "pooled":
            fine = [j for j in same_t if df.at[j, "row_kind"] in ("subgroup_pooled", "study")]
            if fine:
                out.append((i, fine, "an all-patients pooled estimate and estimates of the same "
                                     "patients at the same time"))
        elif r["row_kind"] == "subgroup_pooled":
            fine = [j for j in same_t if df.at[j, "row_kind"] == "study"
                    and df.at[j, "subgroup"] == r["subgroup"]]
            if fine:
                out.append((i, fine, "a subgroup pooled estimate and the study rows it pools"))
    return out


def _prepare_nested(data, overlap: str) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        data = pd.DataFrame(data)
    df = data.reset_index(drop=True).copy()
    if overlap not in ("raise", "drop_pooled"):
        raise SpecError(f"Invalid overlap {overlap!r}: must be one of ['raise', 'drop_pooled'].")
    if "yi" not in df:
        raise DataError("nested model needs a 'yi' column", column="yi")
    if "sei" not in df:
        if "vi" not in df:
            raise DataError("nested model needs 'sei' or 'vi'", column="sei",
                            fix="add the standard errors (sei) or sampling variances (vi)")
        df["sei"] = np.sqrt(np.asarray(df["vi"], dtype=float))
    if "time" not in df:
        raise DataError("nested model needs a 'time' column (follow-up time of each row)",
                        column="time")
    if "outcome" in df and df["outcome"].nunique() > 1:
        raise DataError(f"rows of {df['outcome'].nunique()} outcomes "
                        f"{sorted(map(str, df['outcome'].unique()))} given",
                        column="outcome", fix="fit one outcome at a time")
    if "row_kind" not in df:
        df["row_kind"] = "study"
    bad = sorted(set(map(str, df["row_kind"])) - set(ROW_KINDS))
    if bad:
        raise DataError(f"Invalid row_kind {bad}: must be one of {list(ROW_KINDS)}.",
                        column="row_kind")
    # every row needs a time; study rows need a subgroup once any study row has one (an empty
    # cell would otherwise become the all-patients level, silently)
    check_role_values(df, ["time"])
    if "subgroup" in df:
        study_rows = (df["row_kind"] == "study").to_numpy()
        named = np.array([not is_missing_label(v) for v in df["subgroup"]], bool)
        if (named & study_rows).any():
            check_role_values(df, ["subgroup"], where=study_rows,
                              fix="Fill in the subgroup of every study row, or leave it empty "
                                  "on all of them (then the rows are all patients).")
    if "subgroup" not in df:
        df["subgroup"] = ALL_PATIENTS
    df["subgroup"] = [ALL_PATIENTS if (pd.isna(v) or str(v).strip() == "") else str(v)
                      for v in df["subgroup"]]
    if "study" not in df:
        df["study"] = ""
    df["study"] = ["" if pd.isna(v) else str(v) for v in df["study"]]
    for col in ("yi", "sei"):
        v = pd.to_numeric(df[col], errors="coerce")
        if v.isna().any() or not np.all(np.isfinite(v)):
            rows = [int(i) for i in df.index[v.isna() | ~np.isfinite(v.fillna(0))]]
            raise DataError(f"'{col}' missing or non-finite in rows {rows}", column=col)
        df[col] = v.astype(float)
    if (df["sei"] <= 0).any():
        raise DataError(f"'sei' must be > 0; rows {df.index[df['sei'] <= 0].tolist()} are not",
                        column="sei")
    if df["time"].isna().any():
        raise DataError(f"'time' missing in rows {df.index[df['time'].isna()].tolist()}",
                        column="time")
    miss = df.index[(df["row_kind"] == "study") & (df["study"] == "")].tolist()
    if miss:
        raise DataError(f"rows {miss} have row_kind 'study' but no study label", column="study")
    bad_sub = df.index[(df["row_kind"] == "subgroup_pooled")
                       & (df["subgroup"] == ALL_PATIENTS)].tolist()
    if bad_sub:
        raise DataError(f"rows {bad_sub} have row_kind 'subgroup_pooled' but no subgroup",
                        column="subgroup", fix="name the subgroup or use row_kind 'pooled'")
    bad_all = df.index[(df["row_kind"] == "pooled") & (df["subgroup"] != ALL_PATIENTS)].tolist()
    if bad_all:
        raise DataError(f"rows {bad_all} have row_kind 'pooled' (all patients) but a subgroup "
                        f"label", column="row_kind", fix="use row_kind 'subgroup_pooled'")
    key = ["study", "time", "subgroup", "row_kind"]
    dup = df[df.duplicated(key, keep=False) & (df["row_kind"] == "study")]
    if len(dup):
        raise DataError(f"duplicate study rows (same study, time, subgroup): "
                        f"{[_row_name(df, i) for i in dup.index]}",
                        fix="each study contributes one row per time point and subgroup")
    ov = find_overlaps(df)
    if ov:
        desc = "; ".join(f"{_row_name(df, i)} overlaps {[_row_name(df, j) for j in fine]} "
                         f"({why})" for i, fine, why in ov)
        if overlap == "raise":
            raise DataError(f"overlapping rows would count the same patients twice: {desc}",
                            column="row_kind",
                            fix="drop the coarser rows, or pass overlap='drop_pooled' to drop "
                                "them with a warning")
        drop = sorted({i for i, _, _ in ov})
        warnings.warn(f"{len(drop)} overlapping pooled rows were dropped so that no patients "
                      f"are counted twice: {[_row_name(df, i) for i in drop]}", DataWarning,
                      stacklevel=3)
        df = df.drop(index=drop).reset_index(drop=True)
    return df


# Prior parameters, indices, masks and level flags of the nested model are data (``pm.Data``):
# one compiled model serves every dataset with the same padded sizes and the same prior
# *families*. See :func:`fit_nested_many`.

def _prior_family(p) -> tuple[str, dict]:
    """(cache-key part, {parameter: value}) of a prior whose parameters can be data.

    Families not listed keep their parameters in the graph (the whole prior is in the key)."""
    from bayesmeta import priors as P

    t = type(p)
    if t is P.Normal:
        return "Normal", {"mean": p.mean, "sd": p.sd}
    if t is P.HalfNormal:
        return "HalfNormal", {"scale": p.scale}
    if t is P.HalfCauchy:
        return "HalfCauchy", {"scale": p.scale}
    if t is P.HalfStudentT:
        return f"HalfStudentT(nu={float(p.nu)!r})", {"scale": p.scale}
    if t is P.Exponential:
        return "Exponential", {"rate": p.rate}
    return _prior_key(p), {}


def _prior_rv(p, name: str, params: dict | None = None):
    """Inside a model: prior ``p`` for ``name``, its parameters taken from ``params``
    (``{parameter: tensor}``, slots of the packed data vector, see :func:`_nested_layout`);
    families without data parameters (:func:`_prior_family`) keep them in the graph."""
    import pymc as pm

    fam, fparams = _prior_family(p)
    if not fparams:
        return p.to_pymc(name)
    d = params
    if fam == "Normal":
        return pm.Normal(name, mu=d["mean"], sigma=d["sd"])
    if fam == "HalfNormal":
        return pm.HalfNormal(name, sigma=d["scale"])
    if fam == "HalfCauchy":
        return pm.HalfCauchy(name, beta=d["scale"])
    if fam.startswith("HalfStudentT"):
        return pm.HalfStudentT(name, nu=float(p.nu), sigma=d["scale"])
    return pm.Exponential(name, lam=d["rate"])


#: The nested model's per-row data, packed as the columns of one float array ``nested_obs``
#: (indices are small integers stored exactly as floats and cast in the graph).
_OBS_COLUMNS = ("yi", "sei", "obs_mask", "het_mask", "s_idx", "t_idx", "j_idx")

#: Scale parameters that take the heterogeneity prior.
_HET_SCALES = ("sigma_subgroup", "sigma_time", "sigma_study")


def _nested_layout(mu_prior, het_prior, tau_prior, n_s: int, n_t: int) -> dict[str, Any]:
    """Slots of the packed scalar data vector ``nested_par``: level flags, prior parameters
    (``{name}_prior_{parameter}``), ``sigma_logtau_sd``, the contrast's two subgroup indices,
    then ``cell_centred`` (a slice of n_s * n_t entries, row-major).

    Why packed: nutpie compiles one extraction function per shared variable into its logp
    wrapper, and that wrapper is compiled afresh in every process (numba cannot cache it). With
    the 19 separate ``pm.Data`` of the first version the nested model took 13-16 s to compile
    warm; packed into two arrays, about half (measured in benchmarks/)."""
    names = ["use_subgroup", "use_time", "use_study"]
    for rv, p in (("mu", mu_prior), *((h, het_prior) for h in _HET_SCALES),
                  ("tau0", tau_prior)):
        names += [f"{rv}_prior_{k}" for k in _prior_family(p)[1]]
    names += ["sigma_logtau_sd", "contrast_a", "contrast_b"]
    layout: dict[str, Any] = {n: i for i, n in enumerate(names)}
    layout["cell_centred"] = slice(len(names), len(names) + n_s * n_t)
    layout["size"] = len(names) + n_s * n_t
    return layout


def _prior_data(p, name: str) -> dict:
    return {f"{name}_prior_{k}": float(v) for k, v in _prior_family(p)[1].items()}


#: Names of the nested model's structural dims, in the order of ``_NestedPrep.sizes``.
_NESTED_DIMS = ("obs", "subgroup", "time", "study")

#: Smallest padded sizes of a nested fit (covers every bundled nested dataset: at most 6 rows,
#: 3 subgroups, 3 weeks, 2 studies with a shared effect), so that every small nested fit of a
#: process shares one compiled model. Larger data pad up to the next power of two. Kept tight:
#: with time 4 / study 4 (9 more prior-only z's) the brms-reference fit of the 2014 arm data had 1-2
#: divergences in 2 of 4 seeds (4 x 5000 draws), with these sizes 0 in 4 seeds.
NESTED_MIN_PAD = {"obs": 8, "subgroup": 3, "time": 3, "study": 2}

#: Which outputs belong to which level; dropped from every output when the level is switched off.
_LEVEL_VARS = {
    "use_subgroup": ("sigma_subgroup", "z_subgroup"),
    "use_time": ("sigma_time", "z_cell"),
    "use_study": ("sigma_study", "z_study", "u_study"),
    "het": ("tau0", "sigma_logtau", "z_logtau", "tau"),
    "contrast": ("contrast", "contrast_subgroup"),
}


def _size_class(n: int, minimum: int) -> int:
    """``minimum`` if ``n`` fits, else the next power of two >= ``n``."""
    n = int(n)
    return minimum if n <= minimum else 1 << (n - 1).bit_length()


def _build_nested(sizes, mu_prior, het_prior, tau_prior):
    """Builder of the nested model at (padded) ``sizes = (n_obs, n_s, n_t, n_j)``.

    One graph for every structure: all levels (subgroup, time, study effect, per-cell tau) are
    always built and the presence of each is *data*: 0/1 flags ``use_subgroup``, ``use_time``,
    ``use_study`` multiply the level's contribution to the cell means, and the tau block enters
    only through ``het_mask`` (0 on every row when there are no study rows). All other data
    are data too: the per-row columns :data:`_OBS_COLUMNS` (yi, sei, obs_mask, het_mask and the
    subgroup/time/study indices) packed in ``nested_obs``, and the flags, prior parameters,
    sigma_logtau_sd, contrast indices and cell_centred packed in ``nested_par``
    (:func:`_nested_layout`); padded rows have ``obs_mask = 0``.
    Why a switched-off level leaves the posterior of the real parameters unchanged: see
    :func:`fit_nested_many`.
    """
    import pymc as pm
    import pytensor.tensor as pt
    from pytensor.compile.sharedvalue import SharedVariable

    n_obs, n_s, n_t, n_j = sizes
    lay = _nested_layout(mu_prior, het_prior, tau_prior, n_s, n_t)
    # initial values matter: nutpie's initial points are evaluated with these (not with the
    # data swapped in later), so the prior parameters must be those of real priors
    par0 = np.zeros(lay["size"])
    vals = {"use_subgroup": 1.0, "use_time": 1.0, "use_study": 1.0, "sigma_logtau_sd": 0.5,
            "contrast_a": 0.0, "contrast_b": float(min(1, n_s - 1)),
            **_prior_data(mu_prior, "mu"), **_prior_data(tau_prior, "tau0"),
            **{k: v for h in _HET_SCALES for k, v in _prior_data(het_prior, h).items()}}
    for name, v in vals.items():
        par0[lay[name]] = v

    def builder():
        coords = {"subgroup": [f"g{i}" for i in range(n_s)], "time": [f"t{i}" for i in range(n_t)],
                  "obs": [f"o{i}" for i in range(n_obs)], "study": [f"s{i}" for i in range(n_j)]}
        with pm.Model(coords=coords) as m:
            obs = pm.Data("nested_obs", np.zeros((n_obs, len(_OBS_COLUMNS))))
            par = pm.Data("nested_par", par0)
            col = {c: obs[:, i] for i, c in enumerate(_OBS_COLUMNS)}
            y, se, mask, het = col["yi"], col["sei"], col["obs_mask"], col["het_mask"]
            s_idx, t_idx, j_idx = (pt.cast(col[c], "int64") for c in ("s_idx", "t_idx", "j_idx"))
            use_s, use_t, use_j = (par[lay[f]] for f in ("use_subgroup", "use_time", "use_study"))

            def prior(p, name):
                return _prior_rv(p, name, {k: par[lay[f"{name}_prior_{k}"]]
                                           for k in _prior_family(p)[1]})

            mu = prior(mu_prior, "mu")
            # subgroup level: with use_subgroup = 0, mu_subgroup = mu exactly
            sig_sub = prior(het_prior, "sigma_subgroup")
            z_sub = pm.Normal("z_subgroup", 0.0, 1.0, dims="subgroup")
            mu_sub = pm.Deterministic("mu_subgroup", mu + use_s * (sig_sub * z_sub),
                                      dims="subgroup")
            # time level, per-cell choice (data): c = 0 non-centred, z ~ N(0, 1),
            # mu_cell = mu_s + s z; c = 1 centred, z ~ N(mu_s, s), mu_cell = z (cells with
            # precise data; only ever with use_time = 1). use_time = 0: mu_cell = mu_s exactly
            sig_time = prior(het_prior, "sigma_time")
            c = par[lay["cell_centred"]].reshape((n_s, n_t))
            z_cell = pm.Normal("z_cell", c * mu_sub[:, None], sig_time ** c,
                               dims=("subgroup", "time"))
            mu_cell = pm.Deterministic(
                "mu_cell", mu_sub[:, None] + use_t * (sig_time ** (1.0 - c) * z_cell
                                                      - c * mu_sub[:, None]),
                dims=("subgroup", "time"))
            # study effect shared across a study's rows; index n_j = "no shared effect"
            sig_study = prior(het_prior, "sigma_study")
            z_study = pm.Normal("z_study", 0.0, 1.0, dims="study")
            u = pm.Deterministic("u_study", use_j * (sig_study * z_study), dims="study")
            u0 = pt.concatenate([u, pt.zeros(1)])
            mean = mu_cell[s_idx, t_idx] + u0[j_idx]
            # per-cell tau, entering only rows with het_mask = 1 (study rows)
            tau0 = prior(tau_prior, "tau0")
            sig_lt = pm.HalfNormal("sigma_logtau", par[lay["sigma_logtau_sd"]])
            z_lt = pm.Normal("z_logtau", 0.0, 1.0, dims=("subgroup", "time"))
            tau = pm.Deterministic("tau", pt.exp(pt.log(tau0) + sig_lt * z_lt),
                                   dims=("subgroup", "time"))
            var = se ** 2 + het * tau[s_idx, t_idx] ** 2
            # padded rows (mask 0): N(y | 0, 1), a constant with zero gradient
            pm.Normal("y", mu=mask * mean, sigma=pt.sqrt(mask * var + (1.0 - mask)),
                      observed=y, dims="obs")
            ca, cb = (pt.cast(par[lay[f]], "int64") for f in ("contrast_a", "contrast_b"))
            pm.Deterministic("contrast", mu_cell[ca] - mu_cell[cb], dims="time")
            pm.Deterministic("contrast_subgroup", mu_sub[ca] - mu_sub[cb])
        names = tuple(n for n, v in m.named_vars.items() if isinstance(v, SharedVariable))
        return m, names

    return builder


@dataclass
class _NestedPrep:
    """A validated nested-model dataset: rows, levels, indices, priors, settings."""

    df: pd.DataFrame
    subgroups: list
    times: list
    tlab: list
    studies: list
    s_idx: tuple
    t_idx: tuple
    j_idx: tuple
    het_mask: tuple
    contrast: tuple | None
    c_ij: tuple | None
    mu_p: Any
    het_p: Any
    tau_p: Any
    sigma_logtau_sd: float
    settings: SamplerSettings
    measure: str
    analysis: str
    outcome: str
    warn: bool

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        return (len(self.df), len(self.subgroups), len(self.times), len(self.studies))

    @property
    def flags(self) -> tuple[bool, ...]:
        """(use_subgroup, use_time, use_study, has_het_rows, has_contrast): which levels are
        switched on (data flags of the one compiled model, not structure)."""
        return (len(self.subgroups) > 1, len(self.times) > 1, len(self.studies) > 0,
                any(self.het_mask), self.c_ij is not None)

    @property
    def group_key(self) -> tuple:
        """What must agree for two datasets to share one compiled model (sizes aside): the
        prior *families* only (levels are switched by data flags)."""
        return ("nested", _prior_family(self.mu_p)[0], _prior_family(self.het_p)[0],
                _prior_family(self.tau_p)[0])

    def size_class(self) -> tuple[int, int, int, int]:
        """Default padded sizes: :data:`NESTED_MIN_PAD`, or the next power of two above it."""
        return tuple(_size_class(n, NESTED_MIN_PAD[d]) for d, n in zip(_NESTED_DIMS,
                                                                         self.sizes))

    def padded(self, pad_to=None) -> tuple[int, int, int, int]:
        """Sizes the model is fitted at. ``None``: the size class (:meth:`size_class`); a
        dict or tuple: exactly those sizes, but never below the real sizes nor below 1
        (``{}`` = the real sizes)."""
        if pad_to is None:
            return self.size_class()
        if isinstance(pad_to, dict):
            unknown = set(pad_to) - set(_NESTED_DIMS)
            if unknown:
                raise ValueError(f"unknown pad_to dims {sorted(unknown)}; known: "
                                 f"{list(_NESTED_DIMS)}")
            pad_to = tuple(int(pad_to.get(d, 0)) for d in _NESTED_DIMS)
        return tuple(max(a, int(b), 1) for a, b in zip(self.sizes, pad_to))


def _nested_prepare(data, *, mu_prior=None, het_prior=None, tau_prior=None,
                    sigma_logtau_sd: float = 0.5, measure: str = "MD", contrast=None,
                    overlap: str = "raise", settings: SamplerSettings | None = None,
                    analysis: str = "", outcome: str = "", warn: bool = True,
                    **sampling) -> _NestedPrep:
    df = _prepare_nested(data, overlap)
    # 0.99: at 0.95 the bundled 2014 arm data gave 1 divergence (6 rows, 8+ scale parameters)
    s = _settings(settings or SamplerSettings(target_accept=NESTED_TARGET_ACCEPT), sampling)
    if not (isinstance(sigma_logtau_sd, (int, float, np.integer, np.floating))
            and math.isfinite(sigma_logtau_sd) and sigma_logtau_sd > 0):
        raise SpecError(f"Invalid sigma_logtau_sd {sigma_logtau_sd!r}: must be a number > 0.")
    subgroups = list(dict.fromkeys(df["subgroup"]))
    named = [g for g in subgroups if g != ALL_PATIENTS]
    subgroups = named + ([ALL_PATIENTS] if ALL_PATIENTS in subgroups else [])
    times = sorted(dict.fromkeys(df["time"]), key=_time_sort_key)
    tlab = [_fmt_time(t) for t in times]
    counts = df[df["study"] != ""].groupby("study").size()
    studies = [j for j in dict.fromkeys(df["study"]) if j and counts.get(j, 0) >= 2]
    s_idx = tuple(subgroups.index(g) for g in df["subgroup"])
    t_idx = tuple(times.index(t) for t in df["time"])
    j_idx = tuple(studies.index(j) if j in studies else -1 for j in df["study"])  # -1: none
    het_mask = tuple(int(k == "study") for k in df["row_kind"])
    if contrast is None:
        if len(named) >= 2:
            contrast = (named[0], named[1])
    if contrast is not None:
        contrast = tuple(contrast)
        missing = [g for g in contrast if g not in subgroups]
        if missing:
            raise SpecError(f"Invalid contrast {contrast!r}: subgroups {missing} not in "
                            f"the data {subgroups}.")
    c_ij = None if contrast is None else (subgroups.index(contrast[0]),
                                          subgroups.index(contrast[1]))
    sei = df["sei"].to_numpy(float)
    pdata = {"vi": sei ** 2}
    if {"n1i", "n2i"} <= set(df.columns):
        pdata.update(n1i=df["n1i"].to_numpy(float), n2i=df["n2i"].to_numpy(float))
    mu_p, tau_p = _resolve_priors(measure, pdata, mu_prior, tau_prior)
    het_p = tau_p if het_prior is None else _resolve_priors(measure, pdata, mu_p, het_prior)[1]
    return _NestedPrep(df=df, subgroups=subgroups, times=times, tlab=tlab, studies=studies,
                       s_idx=s_idx, t_idx=t_idx, j_idx=j_idx, het_mask=het_mask,
                       contrast=contrast, c_ij=c_ij, mu_p=mu_p, het_p=het_p, tau_p=tau_p,
                       sigma_logtau_sd=float(sigma_logtau_sd), settings=s, measure=measure,
                       analysis=analysis, outcome=outcome, warn=warn)


def _nested_data(prep: _NestedPrep, sizes) -> dict[str, np.ndarray]:
    """The model's data at padded ``sizes``: real rows first, padded rows after them with
    y = 0, se = 1, obs_mask = 0 (no likelihood); real levels first, padded levels after."""
    n_obs, n_s, n_t, n_j = sizes
    k = len(prep.df)
    pad = n_obs - k

    def padv(x, fill, dtype):
        return np.concatenate([np.asarray(x, dtype=dtype), np.full(pad, fill, dtype=dtype)])

    j = np.array([n_j if v < 0 else v for v in prep.j_idx], dtype=float)
    cols = {"yi": padv(prep.df["yi"], 0.0, float), "sei": padv(prep.df["sei"], 1.0, float),
            "obs_mask": padv(np.ones(k), 0.0, float),
            "s_idx": padv(prep.s_idx, 0, float), "t_idx": padv(prep.t_idx, 0, float),
            "j_idx": padv(j, n_j, float), "het_mask": padv(prep.het_mask, 0.0, float)}
    has_s, has_t, has_j, has_het, has_c = prep.flags
    vals = {"use_subgroup": float(has_s), "use_time": float(has_t), "use_study": float(has_j)}
    vals.update(_prior_data(prep.mu_p, "mu"))
    for name in _HET_SCALES:
        vals.update(_prior_data(prep.het_p, name))
    vals.update(_prior_data(prep.tau_p, "tau0"))
    vals["sigma_logtau_sd"] = prep.sigma_logtau_sd
    vals["contrast_a"], vals["contrast_b"] = (prep.c_ij if has_c else (0, min(1, n_s - 1)))
    lay = _nested_layout(prep.mu_p, prep.het_p, prep.tau_p, n_s, n_t)
    par = np.zeros(lay["size"])
    for name, v in vals.items():
        par[lay[name]] = float(v)
    par[lay["cell_centred"]] = (_cell_centring(prep, n_s, n_t) if has_t
                                else np.zeros((n_s, n_t))).ravel()
    return {"nested_obs": np.column_stack([cols[c] for c in _OBS_COLUMNS]),
            "nested_par": par}


def _cell_centring(prep: _NestedPrep, n_s: int, n_t: int) -> np.ndarray:
    """1 for cells fitted centred, 0 for non-centred (padded and unobserved cells: 0).

    With one subgroup and at least 3 precise cells, the precise cells are centred: a cell is
    precise when its rows are published pooled estimates (no per-cell tau) whose combined SE
    is below the prior median of sigma_time; the data then pin that cell mean
    more tightly than the prior spread of cells, where the non-centred form makes mu and z
    strongly correlated (a bundled 2023 all-patients fit: R-hat(mu) 1.013 at 4 x 1000 draws).
    Either form is the same model (same joint density of the cell means); only the geometry the
    sampler sees differs (Papaspiliopoulos, Roberts & Skold 2007, Stat Sci 22:59-73).
    """
    c = np.zeros((n_s, n_t))
    scale = float(prep.het_p.ppf_tau(0.5))
    info: dict[tuple, float] = {}
    het_cell = set()
    for a, b, h, se in zip(prep.s_idx, prep.t_idx, prep.het_mask, prep.df["sei"]):
        info[(a, b)] = info.get((a, b), 0.0) + 1.0 / float(se) ** 2
        if h:
            het_cell.add((a, b))
    precise = [(a, b) for (a, b), w in info.items()
               if (a, b) not in het_cell and math.sqrt(1.0 / w) < scale]
    # only where sigma_time is pinned by the data: one subgroup, at least 3 precise cells. With a subgroup level or fewer cells sigma_time can drift toward 0 and
    # centred cells then form a funnel (8 divergences on two-subgroup bundled 2023 rows).
    # ... and only when the precise cells clearly differ (Cochran's Q > 2 (m - 1), I² > 50%):
    # with cells that agree sigma_time's posterior reaches 0 and centred cells are a funnel
    # (12 divergences on the 2023 TB all-patients rows).
    m = len(precise)
    if len(prep.subgroups) == 1 and m >= 3:
        y = np.asarray(prep.df["yi"], dtype=float)
        cy = {}
        for a, b, yy, se in zip(prep.s_idx, prep.t_idx, y, prep.df["sei"]):
            cy.setdefault((a, b), []).append((yy, 1.0 / float(se) ** 2))
        ym = np.array([sum(v * w for v, w in cy[k]) / sum(w for _, w in cy[k]) for k in precise])
        wm = np.array([info[k] for k in precise])
        q = float(np.sum(wm * (ym - np.sum(wm * ym) / wm.sum()) ** 2))
        if q <= 2.0 * (m - 1):
            return c
        for a, b in precise:
            c[a, b] = 1.0
    return c


def _nested_problem(prep: _NestedPrep, sizes, data: dict[str, np.ndarray]):
    """The kernels' :class:`~bayesmeta.mcmc_backend.Problem` of a prepared dataset at padded
    ``sizes``, from the same packed arrays the PyMC model reads (:func:`_nested_data`)."""
    from bayesmeta import mcmc_backend

    n_obs, n_s, n_t, n_j = sizes
    par = data["nested_par"]
    lay = _nested_layout(prep.mu_p, prep.het_p, prep.tau_p, n_s, n_t)
    flags = tuple(par[lay[f]] for f in ("use_subgroup", "use_time", "use_study"))
    return mcmc_backend.nested_problem(
        data["nested_obs"], sizes, flags, par[lay["sigma_logtau_sd"]],
        (par[lay["contrast_a"]], par[lay["contrast_b"]]), par[lay["cell_centred"]],
        prep.mu_p, prep.het_p, prep.tau_p)


def _route_attr(s: SamplerSettings, route: str) -> dict:
    return {"nutpie_route": route} if s.sampler == "nutpie" else {}


def _trim(dt, real: dict[str, int]):
    """Drop padded entries (the trailing positions of each structural dim) from every group."""

    def f(ds):
        sel = {d: slice(0, n) for d, n in real.items() if d in ds.dims and ds.sizes[d] != n}
        return ds.isel(sel) if sel else ds

    return dt.map_over_datasets(f)


def _drop_levels(dt, flags):
    """Drop the parameters of switched-off levels (prior-only draws) from every group, and
    dims no variable uses any more (``study`` without a shared study effect)."""
    use_s, use_t, use_j, has_het, has_c = flags
    off = [lvl for lvl, on in (("use_subgroup", use_s), ("use_time", use_t),
                               ("use_study", use_j), ("het", has_het), ("contrast", has_c))
           if not on]
    drop = {v for lvl in off for v in _LEVEL_VARS[lvl]}

    def f(ds):
        ds = ds.drop_vars([v for v in drop if v in ds.data_vars])
        used = {d for v in ds.data_vars.values() for d in v.dims}
        unused = [d for d in ("study",) if d in ds.dims and d not in used]
        return ds.drop_dims(unused) if unused else ds

    return dt.map_over_datasets(f)


def _nested_fit(prep: _NestedPrep, sizes) -> MCMCResult:
    """Fit one prepared dataset with the compiled model of its (flags, padded sizes, prior
    families); drop padded entries from every output."""
    s = prep.settings
    df, subgroups, times, tlab, studies = (prep.df, prep.subgroups, prep.times, prep.tlab,
                                           prep.studies)
    s_idx, t_idx, het_mask, c_ij, contrast = (prep.s_idx, prep.t_idx, prep.het_mask, prep.c_ij,
                                              prep.contrast)
    mu_p, het_p, tau_p = prep.mu_p, prep.het_p, prep.tau_p
    data = _nested_data(prep, sizes)
    if _kernel_route(s, mu_p, het_p, tau_p):
        route = "kernels"
        dt, c_s, s_s = _sample_kernels(_nested_problem(prep, sizes, data), s)
    else:
        route = "pytensor"
        key = prep.group_key + (tuple(sizes),)
        comp = _get_compiled(key, _build_nested(tuple(sizes), mu_p, het_p, tau_p))
        missing = set(comp.data_names) - set(data)
        if missing:  # pragma: no cover - guards the builder/data contract
            raise EstimationError(f"nested model data missing {sorted(missing)}")
        dt, c_s, s_s = _sample(comp, {k: data[k] for k in comp.data_names}, s)
    dt = _trim(_drop_levels(dt, prep.flags), dict(zip(_NESTED_DIMS, prep.sizes)))
    yi, sei = df["yi"].to_numpy(float), df["sei"].to_numpy(float)
    obs_lab = [f"{r.study or r.row_kind}|{r.subgroup}|{_fmt_time(r.time)}"
               for r in df.itertuples()]
    coords = {"subgroup": subgroups, "time": tlab, "obs": obs_lab}
    if studies:
        coords["study"] = studies
    real = dict(zip(_NESTED_DIMS, prep.sizes))
    dt = _finish_tree(dt, coords=coords, observed={"yi": ("obs", yi)},
                      constant={"sei": ("obs", sei),
                                "row_kind": ("obs", df["row_kind"].astype(str).to_numpy()),
                                "heterogeneity_row": ("obs", np.array(het_mask, dtype=float))},
                      attrs={"model": "nested", "seed": s.seed, "sampler": s.sampler,
                             **_route_attr(s, route),
                             "mu_prior": str(mu_p), "het_prior": str(het_p),
                             "tau_prior": str(tau_p), "compile_seconds": c_s,
                             "sampling_seconds": s_s,
                             "padded_sizes": str(dict(zip(_NESTED_DIMS, sizes))),
                             "real_sizes": str(real)})
    post = dt["posterior"]
    reports = [Report("mu", (), "mu")]
    if len(subgroups) > 1:
        reports += [Report("mu_subgroup", (("subgroup", g),), f"mu[{g}]", subgroup=g)
                    for g in subgroups]
    observed_cells = sorted(set(zip(s_idx, t_idx)))
    reports += [Report("mu_cell", (("subgroup", subgroups[a]), ("time", tlab[b])),
                       f"mu[{subgroups[a]}, {tlab[b]}]", subgroup=subgroups[a], time=tlab[b])
                for a, b in observed_cells]
    extra = {"subgroups": subgroups, "times": tlab, "studies_with_shared_effect": studies,
             "n_rows": len(df), "rows": df.copy(), "real_sizes": real,
             "padded_sizes": dict(zip(_NESTED_DIMS, sizes))}
    if c_ij is not None:
        cname = f"{contrast[0]} - {contrast[1]}"
        both = [tlab[b] for b in range(len(times))
                if (c_ij[0], b) in observed_cells and (c_ij[1], b) in observed_cells]
        reports += [Report("contrast", (("time", t),), f"contrast[{t}]", subgroup=cname, time=t)
                    for t in both]
        reports.append(Report("contrast_subgroup", (), "contrast", subgroup=cname))
        pneg = {t: float((post["contrast"].sel(time=t) < 0).mean()) for t in both}
        pneg[""] = float((post["contrast_subgroup"] < 0).mean())
        extra.update(contrast=tuple(contrast), p_contrast_negative=pneg)
    for v in ("sigma_subgroup", "sigma_time", "sigma_study", "tau0", "sigma_logtau"):
        if v in post:
            reports.append(Report(v))
    if "tau" in post:
        het_cells = sorted({(a, b) for a, b, h in zip(s_idx, t_idx, het_mask) if h})
        reports += [Report("tau", (("subgroup", subgroups[a]), ("time", tlab[b])),
                           f"tau[{subgroups[a]}, {tlab[b]}]", subgroup=subgroups[a],
                           time=tlab[b]) for a, b in het_cells]
    monitor = [v for v in post.data_vars if v.startswith("z") or v in
               ("mu", "sigma_subgroup", "sigma_time", "sigma_study", "tau0", "sigma_logtau",
                "log_tau02")]
    notes = []
    if c_ij is not None:
        notes.append("Subgroup contrast " + cname + ": P(contrast < 0) = " + ", ".join(
            f"{t or 'overall'}: {p:.3f}" for t, p in extra["p_contrast_negative"].items()))
    priors_d = {"mu": mu_p.describe(), "sigma_subgroup/time/study": het_p.describe(),
                "tau0": tau_p.describe(),
                "sigma_logtau": f"HalfNormal(scale={prep.sigma_logtau_sd:g})"}
    return _make_result("nested", dt, reports, s, c_s, s_s, priors_d, measure=prep.measure,
                        scale=_scale_of(prep.measure), k=len(df), analysis=prep.analysis,
                        outcome=prep.outcome, notes=notes, extra=extra, monitor=monitor,
                        warn=prep.warn)


def fit_nested(data, *, mu_prior=None, het_prior=None, tau_prior=None,
               sigma_logtau_sd: float = 0.5, measure: str = "MD", contrast=None,
               overlap: str = "raise", settings: SamplerSettings | None = None,
               analysis: str = "", outcome: str = "", warn: bool = True,
               pad_to: dict | None = None, **sampling) -> MCMCResult:
    """Nested hierarchical model: cells (subgroup x time) within subgroups within the overall mean.

    .. math::

        y_r &\\sim N(\\mu_{s(r),t(r)} + u_{j(r)},\\; se_r^2 + h_r \\tau_{s(r),t(r)}^2) \\\\
        \\mu_{s,t} &= \\mu_s + \\sigma_{time} z_{s,t}, \\quad
        \\mu_s = \\mu + \\sigma_{subgroup} z_s \\\\
        u_j &= \\sigma_{study} z_j \\quad \\text{(shared across a study's time points)} \\\\
        \\log \\tau_{s,t} &= \\log \\tau_0 + \\sigma_{\\log\\tau} z^{\\tau}_{s,t}

    with all z ~ N(0, 1) (non-centred). ``h_r = 1`` for ``study`` rows (residual between-study
    heterogeneity within the cell) and 0 for published pooled rows (their SE already includes
    the heterogeneity of the studies they pool). Cells with two studies borrow strength for
    tau through tau0 and sigma_logtau instead of collapsing to tau = 0. The subgroup level is
    switched off with one subgroup (``mu_s = mu``), the time level with one time point
    (``mu_{s,t} = mu_s``), the study effect when no study has two or more rows (``u = 0``),
    the tau block when there are no study rows (all ``h_r = 0``). Switching is by 0/1 data
    flags in one compiled model; the switched-off parameters are not reported and appear in
    no output, and the posterior of the others is exactly that of the model without the level
    (see :func:`fit_nested_many`).

    Parameters
    ----------
    data : DataFrame
        Columns ``yi``, ``sei`` (or ``vi``), ``time``; optional ``study`` (rows with the same
        study share the study effect), ``subgroup`` (empty = ``"all"``), ``row_kind``
        (``"study"`` default | ``"pooled"`` all patients | ``"subgroup_pooled"``), ``outcome``
        (one value only). A pooled row with no study label gets no shared effect.
    mu_prior : prior of the overall mean (default ``priors.default_mu_prior(measure, data)``).
    het_prior : prior of sigma_subgroup, sigma_time and sigma_study (default: the tau default).
    tau_prior : prior of tau0, the typical within-cell heterogeneity (default
        ``priors.default_tau_prior(measure, data)``).
    sigma_logtau_sd : scale of the half-normal prior of sigma_logtau (0.5: cell taus within a
        factor of about e^1 of tau0 a priori).
    contrast : (a, b), optional
        Subgroup contrast a minus b, per time point; default: the first minus the second
        subgroup in order of appearance (``"all"`` excluded).
    overlap : {"raise", "drop_pooled"}
        Overlapping rows (an all-patients pooled row and subgroup/study rows at the same time, or
        a subgroup pooled row and its study rows) are refused with a :class:`DataError`
        (default) or the coarser rows are dropped with a :class:`DataWarning` naming them.
    pad_to : dict, optional
        Sizes ``{"obs": n, "subgroup": n, "time": n, "study": n}`` to fit at (each at least
        the real size and 1; missing dims are not padded; ``{}`` = the real sizes). Default:
        the size class, :data:`NESTED_MIN_PAD` or the next power of two above it, so that
        every small nested fit of a process shares one compiled model. Padding never changes
        the posterior of the real parameters (see :func:`fit_nested_many`) and padded entries
        never appear in any output.

    Notes
    -----
    An all-patients ``pooled`` row that overlaps nothing (e.g. a bundled 2023 pooled MD at week 4, where
    no subgroup estimates were published) is kept as a level ``"all"`` of its own, pooled toward
    the overall mean like a subgroup; it is never part of a subgroup contrast. Published pooled
    rows without a ``study`` (source) label share no random effect, so the correlation of
    pooled estimates at different weeks built from the same trials is *not* modelled unless a
    common source label is given (then ``sigma_study`` carries it).

    Returns
    -------
    MCMCResult
        Reported: ``mu`` (overall), ``mu`` per subgroup, ``mu`` per observed cell (subgroup,
        time), ``contrast`` per time point with both subgroups observed and overall (time "")
        with ``extra["p_contrast_negative"]``, heterogeneity SDs, ``tau`` per observed cell.
    """
    prep = _nested_prepare(data, mu_prior=mu_prior, het_prior=het_prior, tau_prior=tau_prior,
                           sigma_logtau_sd=sigma_logtau_sd, measure=measure, contrast=contrast,
                           overlap=overlap, settings=settings, analysis=analysis,
                           outcome=outcome, warn=warn, **sampling)
    return _nested_fit(prep, prep.padded(pad_to))


def fit_nested_many(datasets, *, options: dict | None = None, **kw) -> dict[str, MCMCResult]:
    """Fit the nested model to several datasets with one compiled model.

    Parameters
    ----------
    datasets : dict[str, DataFrame]
        ``{name: rows}``, each as for :func:`fit_nested`.
    options : dict[str, dict], optional
        Per-dataset keyword arguments of :func:`fit_nested` (e.g. ``seed``, ``outcome``,
        ``contrast``, priors) overriding the common ``**kw``.
    **kw
        Common keyword arguments of :func:`fit_nested` (priors, ``measure``, sampler
        settings, ...), except ``pad_to``.

    Returns
    -------
    dict[str, MCMCResult]
        In the order of ``datasets``. ``compile_seconds`` is 0 for every fit that reused a
        compiled model; ``extra["padded_sizes"]`` records the sizes it was fitted at.

    Notes
    -----
    All datasets are fitted with **one** compiled model: the levels a dataset has (more than
    one subgroup -> the subgroup level; more than one time -> the time level; a study with two
    or more rows -> the shared study effect; study rows -> the per-cell tau block; a subgroup
    contrast) are 0/1 data flags, prior parameters, indices and masks are data, and every
    dataset is padded to the largest size class (:meth:`_NestedPrep.size_class`) among them.
    Only different prior *families* need another compile. The cache is module-level, so
    :func:`fit_nested` calls at the same size class (the default) reuse it as well.

    Why a switched-off level cannot change the posterior: with ``use_subgroup = 0`` the cell
    means are built from ``mu_s = mu + 0 * sigma_subgroup * z_s = mu`` exactly (likewise
    ``use_time = 0``: ``mu_{s,t} = mu_s``; ``use_study = 0``: ``u_j = 0``; no study rows:
    ``het_mask = 0`` so tau never enters a variance). The likelihood then does not depend on
    that level's parameters (sigma_subgroup, z_s, ...), and their priors are independent of
    everything else, so the joint posterior factorises as p(real parameters | y) x p(level
    parameters): the marginal posterior of the real parameters is exactly that of the model
    built without the level, and the level's parameters are draws from their prior. They are
    dropped from every output (DataTree, summary, ``to_frame()``, diagnostics), so the reported
    parameters are those of the model without the level.

    Why padding cannot change the posterior: a padded row has ``obs_mask = 0``, its likelihood
    term is N(0 | 0, 1), a constant in every parameter; a padded subgroup, time or study only adds
    independent N(0, 1) variables (z) that no real row's likelihood uses. The joint posterior
    therefore factorises as p(real parameters | y) x prod N(z_pad | 0, 1): the marginal posterior
    of every real parameter is exactly that of the unpadded model. Only the Monte Carlo draws
    differ (the sampler explores a larger space), so a padded and an unpadded fit agree within
    Monte Carlo error, not bit for bit; re-running the same set of datasets with the same seeds
    gives identical draws.
    """
    if "pad_to" in kw:
        raise TypeError("fit_nested_many chooses pad_to itself")
    options = dict(options or {})
    unknown = set(options) - set(datasets)
    if unknown:
        raise ValueError(f"options for unknown datasets {sorted(unknown)}")
    preps = {name: _nested_prepare(d, **{**kw, **options.get(name, {})})
             for name, d in datasets.items()}
    pad = tuple(np.max([p.size_class() for p in preps.values()], axis=0).tolist()) \
        if preps else ()
    return {name: _nested_fit(p, p.padded(pad)) for name, p in preps.items()}


# ---------------------------------------------------------------------------------------------
# 7. prior sensitivity
# ---------------------------------------------------------------------------------------------

def prior_sensitivity(yi, sei, *, measure: str, data=None, study=None, benefit: int = -1,
                      sets: dict | None = None, settings: SamplerSettings | None = None,
                      warn: bool = True, **sampling) -> pd.DataFrame:
    """Refit the NNHM over the named prior sets of ``priors.prior_sets(measure, data)``.

    Parameters
    ----------
    yi, sei : effects and standard errors on the analysis scale.
    measure : str
        Effect measure (chooses the prior sets).
    data : DataFrame, optional
        Passed to ``prior_sets`` (needs ``vi``/``sei`` and ideally ``n1i``/``n2i`` for MD);
        default: ``{"vi": sei**2}``.
    sets : dict, optional
        ``{name: (mu_prior, tau_prior)}`` to use instead of ``prior_sets``.

    Returns
    -------
    DataFrame
        Tidy: one row per (prior set, parameter in mu, tau, theta_new). Columns prior_set,
        mu_prior, tau_prior, parameter, mean, sd, ci_low, ci_high (95% ETI), median,
        p_negative (P(parameter < 0); NaN for tau), mcse_mean, ess_bulk, r_hat, clean.
    """
    from bayesmeta import priors as P

    sei = _vec("sei", sei)
    if sets is None:
        sets = P.prior_sets(measure, data if data is not None else {"vi": sei ** 2},
                            benefit=benefit)
    rows = []
    for name, (mp, tp) in sets.items():
        fit = fit_nnhm(yi, sei, mu_prior=mp, tau_prior=tp, study=study, measure=measure,
                       settings=settings, warn=warn, **sampling)
        for par in ("mu", "tau", "theta_new"):
            s = fit.summary.loc[par]
            rows.append({"prior_set": name, "mu_prior": str(mp), "tau_prior": str(tp),
                         "parameter": par, "mean": s["mean"], "sd": s["sd"],
                         "ci_low": s["eti95_lb"], "ci_high": s["eti95_ub"],
                         "median": s["median"],
                         "p_negative": (math.nan if par == "tau"
                                        else fit.prob(par, below=0.0)),
                         "mcse_mean": s["mcse_mean"], "ess_bulk": s["ess_bulk"],
                         "r_hat": s["r_hat"], "clean": fit.clean})
    df = pd.DataFrame(rows)
    df.attrs.update(ci_prob=CI_PROB, ci_kind=CI_KIND, measure=measure,
                    scale=_scale_of(measure))
    return df


# ---------------------------------------------------------------------------------------------
# sampler measurement (python -m bayesmeta.mcmc)
# ---------------------------------------------------------------------------------------------

def benchmark_samplers(samplers=SAMPLERS, seeds=(1, 2)) -> pd.DataFrame:
    """Measure pymc NUTS against nutpie on the NNHM (BCG, k = 13) and the nested model (2014
    arm data): compile seconds, sampling seconds, min bulk ESS of the monitored
    parameters, ESS per sampling second, divergences. The first seed of each sampler starts
    from an empty model cache (cold compile inside this process; numba's disk cache may be
    warm), later seeds reuse it.
    """
    from pathlib import Path

    from bayesmeta import priors as P

    root = Path(__file__).resolve().parents[1] / "data"
    bcg = pd.read_csv(root / "bcg.csv")
    bcg_y = np.log(bcg["ai"] * bcg["di"] / (bcg["bi"] * bcg["ci"])).to_numpy()
    bcg_s = np.sqrt(1 / bcg["ai"] + 1 / bcg["bi"] + 1 / bcg["ci"] + 1 / bcg["di"]).to_numpy()
    meld = pd.read_csv(root / "meld_2014_fig3.csv")
    meld = meld.assign(yi=meld["m1i"] - meld["m2i"],
                       vi=meld["sd1i"] ** 2 / meld["n1i"] + meld["sd2i"] ** 2 / meld["n2i"])
    rows = []
    for sampler in samplers:
        clear_cache()
        for seed in seeds:
            for model in ("NNHM", "nested"):
                if model == "NNHM":
                    fit = fit_nnhm(bcg_y, bcg_s, mu_prior=P.Normal(0, 4),
                                   tau_prior=P.HalfNormal(0.5), sampler=sampler, seed=seed,
                                   warn=False)
                else:
                    fit = fit_nested(meld, sampler=sampler, seed=seed, warn=False)
                d = fit.diagnostics
                rows.append({"model": model, "sampler": sampler, "seed": seed,
                             "compile_s": fit.compile_seconds,
                             "sampling_s": fit.sampling_seconds,
                             "ess_bulk_min": d.ess_bulk_min,
                             "ess_per_s": d.ess_bulk_min / fit.sampling_seconds,
                             "divergences": d.divergences, "r_hat_max": d.r_hat_max})
    return pd.DataFrame(rows)


if __name__ == "__main__":  # pragma: no cover
    with pd.option_context("display.width", 140):
        print(benchmark_samplers().to_string(float_format=lambda v: f"{v:.3g}"))
