"""bayesmeta: Bayesian and classical meta-analysis, checked against metafor, RevMan and exact
posteriors.

Data flows one way: load + validate (:mod:`~bayesmeta.io`, :mod:`~bayesmeta.datasets`) ->
design (:mod:`~bayesmeta.design`: roles, effect sizes, row rules) -> models from the registry
(:mod:`~bayesmeta.registry`: classical :mod:`~bayesmeta.classical` | Bayesian
:mod:`~bayesmeta.exact`, :mod:`~bayesmeta.mcmc`, :mod:`~bayesmeta.survival`) -> fits
(:mod:`~bayesmeta.fits`) -> quantities (:mod:`~bayesmeta.quantities`) -> one results table
(:mod:`~bayesmeta.results`) -> report sections (:mod:`~bayesmeta.sections`). The pipeline
(:func:`analyze`, :mod:`~bayesmeta.pipeline`) runs it from Python, the CLI and specs alike.

Names are imported lazily: ``import bayesmeta`` does not import PyMC; the first use of an MCMC
function does.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("bayesmeta")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

# public name -> module that defines it (grouped by the stage of the data flow)
_EXPORTS = {
    # data
    "list_datasets": "datasets", "load_dataset": "datasets", "describe_dataset": "datasets",
    "read_table": "io",
    # effect sizes and published estimates
    "escalc": "effect_sizes", "to_analysis_scale": "published", "check_published": "published",
    # classical
    "rma": "classical", "rma_mh": "classical", "rma_peto": "classical", "rma_mods": "classical",
    "subgroup_analysis": "classical", "fit_multilevel": "classical",
    "egger_test": "bias", "rank_test": "bias", "trim_and_fill": "bias",
    "leave_one_out": "bias",
    # Bayesian
    "parse_prior": "priors", "prior_sets": "priors", "fit_exact": "exact",
    "fit_nnhm": "mcmc", "fit_binomial_normal": "mcmc", "fit_nested": "mcmc",
    "prior_sensitivity": "mcmc", "fit_survival_published": "survival",
    "fit_survival_counts": "survival", "survival_table": "survival",
    "check_convergence": "diagnostics",
    # the generic pipeline
    "analyze": "pipeline", "Design": "design", "MODELS": "registry",
    # compare and report
    "SCHEMA": "results", "load_spec": "spec",
}
_SUBMODULES = ("audit", "batch", "bias", "checks", "classical", "datasets", "design",
               "diagnostics", "effect_sizes", "exact", "exceptions", "fits", "fmt", "io",
               "labels", "mcmc", "pipeline", "priors", "published", "quantities", "recipes",
               "registry", "report", "results", "runner", "sections", "simulate", "spec",
               "survival", "vocab")

__all__ = ["__version__", *_EXPORTS, *_SUBMODULES]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"bayesmeta.{_EXPORTS[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"bayesmeta.{name}")
    else:
        raise AttributeError(f"module 'bayesmeta' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
