"""The model registry: every model a design can be paired with, and what it needs.

Each :class:`ModelEntry` declares its source (classical | bayesian), its engines, its scope
(``cell``: one fit per outcome × subgroup × time cell; ``part``: one fit across the cells of
an outcome), the roles, measures and row kinds it needs, and a ``check`` that
``bayesmeta validate`` runs before anything is fitted. An unknown name, or a model the design
cannot carry, is one :class:`~bayesmeta.exceptions.SpecError` naming the key.

========================  ==========  =========================================================
model                     scope       what it is
========================  ==========  =========================================================
``fe``                    cell        inverse-variance common effect (``rma(method="FE")``)
``re``                    cell        random effects, any tau² estimator, Wald z or KNHA
``mh``                    cell        Mantel-Haenszel (2x2 counts)
``peto``                  cell        Peto's one-step OR (2x2 counts)
``multilevel``            part        classical twin of ``nested``: REML with fixed cell means,
                                      a study effect and the same sampling covariance (``rma.mv``
                                      with ``vcalc``); added when a study recurs over time
``nnhm``                  cell        normal-normal hierarchical model (exact | mcmc)
``nested``                part        Gaussian hierarchical model: subgroup means (fixed or
                                      random), cells over time (exchangeable | ar1 | car), a study
                                      effect shared across time, correlated sampling errors
                                      within a study (exact | mcmc; :mod:`bayesmeta.ghm`)
``binomial-normal``       cell        exact binomial likelihood, random log OR (mcmc)
``survival-published``    part        published ORs over time, correlated (exact | mcmc)
``survival-counts``       part        cumulative deaths per arm over time (mcmc)
========================  ==========  =========================================================

The fit functions take a :class:`~bayesmeta.design.Design`, the analysis settings (an
:class:`~bayesmeta.spec.AnalysisSpec`) and the run context, and return
:class:`~bayesmeta.fits.Fit` objects whose coordinates carry the cell.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from bayesmeta import vocab
from bayesmeta.design import Design
from bayesmeta.exceptions import SpecError
from bayesmeta.fits import ClassicalFit, DrawsFit, ExactFit, Fit, Param

#: time coordinate of an estimate pooled across time points
ACROSS_TIME = "all"


@dataclass(frozen=True)
class ModelEntry:
    """One model: what it needs and how it is fitted (see module docstring)."""

    name: str
    source: str
    scope: str
    engines: tuple = ("",)
    needs_roles: tuple = ()
    measures: tuple | None = None
    row_kinds: tuple = ("arms", "effect", "published")
    doc: str = ""
    check: Callable | None = None

    def validate(self, design: Design, spec, *, key: str) -> None:
        """Raise a SpecError naming ``key`` when the design cannot carry this model."""
        if self.measures is not None and design.measure not in self.measures:
            raise SpecError(f"model {self.name!r} needs measure "
                            f"{' or '.join(self.measures)}, the data use {design.measure!r}",
                            key=key)
        if design.row_kind not in self.row_kinds:
            raise SpecError(f"model {self.name!r} needs {' or '.join(self.row_kinds)} rows, the "
                            f"data are {design.row_kind} rows", key=key)
        for role in self.needs_roles:
            if not design.has(role):
                raise SpecError(f"model {self.name!r} needs a {role} column", key=key,
                                fix=f"Set the {role} column ([data] {role} = ... or "
                                    f"--{role} COL).")
        if self.check is not None:
            self.check(design, spec, key)


def _check_counts(design: Design, spec, key: str) -> None:
    need = {"ai", "ci", "n1i", "n2i"} if design.row_kind == "arms" else set()
    miss = sorted(need - set(design.rows.columns))
    if design.row_kind != "arms" or miss:
        raise SpecError(f"model needs 2x2 counts per study (ai, bi/n1i, ci, di/n2i)"
                        + (f"; missing {miss}" if miss else ""), key=key)


def nested_fits(d: Design) -> bool:
    """Can the nested model be fitted to this outcome part (two cells, or a study seen
    twice)?"""
    return len(d.split("subgroup", "time")) >= 2 or bool(d.repeated_studies())


def _check_nested(design: Design, spec, key: str) -> None:
    parts = [d for _, part in design.parts() for _, d in part.split("outcome")]
    if not any(nested_fits(d) for d in parts):
        n = max(len(d.split("subgroup", "time")) for d in parts)
        raise SpecError(f"model 'nested' needs at least two cells (time points or "
                        f"subgroups); the data have {n}", key=key,
                        fix="Use model 'nnhm', or give the time/subgroup columns.")


def _check_engine_exact(design: Design, spec, key: str) -> None:
    return None


MODELS: dict[str, ModelEntry] = {m.name: m for m in (
    ModelEntry("fe", "classical", "cell", doc="inverse-variance common effect"),
    ModelEntry("re", "classical", "cell", doc="random effects (tau² estimator, z or KNHA)"),
    ModelEntry("mh", "classical", "cell", measures=("OR", "RR", "RD"), row_kinds=("arms",),
               check=_check_counts, doc="Mantel-Haenszel"),
    ModelEntry("peto", "classical", "cell", measures=("OR", "PETO"), row_kinds=("arms",),
               check=_check_counts, doc="Peto one-step OR"),
    ModelEntry("multilevel", "classical", "part", needs_roles=("time",),
               row_kinds=("arms", "effect"),
               doc="REML twin of the nested model: fixed cell means, study effect, same V"),
    ModelEntry("nnhm", "bayesian", "cell", engines=("exact", "mcmc"),
               doc="normal-normal hierarchical model per cell (NNHM)"),
    ModelEntry("nested", "bayesian", "part", engines=("exact", "mcmc"), check=_check_nested,
               doc="nested model: subgroup means, cells (subgroup × time) over time, each "
                   "study's effect shared across its time points, correlated sampling errors "
                   "within a study"),
    ModelEntry("binomial-normal", "bayesian", "cell", engines=("mcmc",), measures=("OR",),
               row_kinds=("arms",), check=_check_counts,
               doc="binomial-normal model: exact binomial likelihood, random log odds ratio"),
    ModelEntry("survival-published", "bayesian", "part", engines=("exact", "mcmc"),
               needs_roles=("time",), measures=("OR",), row_kinds=("published",),
               doc="published odds ratios over time, partially pooled, with a within-source "
                   "correlation rho between time points"),
    ModelEntry("survival-counts", "bayesian", "part", engines=("mcmc",),
               needs_roles=("time",), measures=("OR",), row_kinds=("arms",),
               check=_check_counts, doc="cumulative deaths per arm over time"),
)}
BAYES_MODELS = tuple(n for n, m in MODELS.items() if m.source == "bayesian")
CLASSICAL_MODELS = tuple(n for n, m in MODELS.items() if m.source == "classical")


def get_model(name: str, *, key: str = "model") -> ModelEntry:
    """The registry entry of ``name``; an unknown name is one SpecError (did-you-mean)."""
    if name in MODELS:
        return MODELS[name]
    import difflib

    sug = difflib.get_close_matches(name.replace("_", "-"), list(MODELS), n=1, cutoff=0.5)
    raise SpecError(f"unknown model {name!r}: must be one of {list(MODELS)}", key=key,
                    fix=f"Did you mean '{sug[0]}'?" if sug else None)


def classical_model(method: str) -> str:
    """Registry name of a ``[classical] method``: FE/MH/PETO or a tau² estimator (re)."""
    return {"FE": "fe", "MH": "mh", "PETO": "peto"}.get(method.upper(), "re")


# --------------------------------------------------------------------------------------------
# fit helpers
# --------------------------------------------------------------------------------------------
@dataclass
class FitRequest:
    """What the pipeline hands a fit function besides the design: settings resolved once."""

    spec: Any
    ctx: Any
    mu_prior: Any = None
    tau_prior: Any = None
    prior_note: str = ""
    coords: dict = field(default_factory=dict)


def _labels(d: Design) -> list[str]:
    return [s if s else f"row {r}" for s, r in zip(d.rows["study"], d.rows["row"])]


def fit_classical_cell(model: str, d: Design, req: FitRequest) -> list[Fit]:
    """``fe``/``re``/``mh``/``peto`` on one cell's study rows."""
    from bayesmeta import classical

    c = req.spec.classical
    y, v = d.rows["yi"].to_numpy(float), d.rows["vi"].to_numpy(float)
    labels = _labels(d)
    preset = c.preset or None
    if model in ("mh", "peto"):
        r = d.rows
        n1 = r["n1i"].to_numpy(float) if "n1i" in r else r["ai"] + r["bi"]
        n2 = r["n2i"].to_numpy(float) if "n2i" in r else r["ci"] + r["di"]
        ai, ci = r["ai"].to_numpy(float), r["ci"].to_numpy(float)
        if model == "mh":
            def refit(level):
                return classical.rma_mh(ai, None, ci, None, n1i=n1, n2i=n2, measure=d.measure,
                                        studies=labels, level=level, preset=preset)
            method = "MH"
        else:
            def refit(level):
                return classical.rma_peto(ai, None, ci, None, n1i=n1, n2i=n2, studies=labels,
                                          level=level)
            method = "PETO"
    else:
        meth = c.method if model == "re" else "FE"

        def refit(level):
            return classical.rma(y, v, studies=labels, method=meth, test=c.test,
                                 measure=d.measure, preset=preset, level=level)
        method = None
    fit = ClassicalFit(model=model, source="classical", method="", measure=d.measure,
                       scale=d.scale, coords=dict(req.coords), refit=refit,
                       prediction=bool(c.prediction))
    fit.method = method or fit.result().label
    return [fit]


def fit_nnhm_cell(d: Design, req: FitRequest, *, engine: str, mu_prior=None, tau_prior=None,
                  setting: str = "") -> list[Fit]:
    """The NNHM on one cell. A cell of one published pooled estimate has no between-study
    variance to learn (its SE already contains it): tau = 0, the conjugate normal model."""
    from bayesmeta import exact

    mu_p = mu_prior if mu_prior is not None else req.mu_prior
    tau_p = tau_prior if tau_prior is not None else req.tau_prior
    y, s = d.rows["yi"].to_numpy(float), d.rows["sei"].to_numpy(float)
    labels = _labels(d)
    pooled = bool(d.rows["pooled"].all())
    notes = []
    if pooled:
        tau_p = exact.FixedTau(0.0)
        notes.append("a published pooled estimate carries no information on heterogeneity "
                     "(its SE already contains it): tau = 0, the conjugate normal model")
    suffix = f" [{setting}]" if setting else ""
    if engine == "mcmc" and not pooled:
        from bayesmeta import mcmc

        kw = req.ctx.sampling(req.spec, req.ctx.next_offset())
        res = mcmc.fit_nnhm(y, s, mu_prior=mu_p, tau_prior=tau_p, study=labels,
                            measure=d.measure, warn=False, **kw)
        f = DrawsFit(model="nnhm", source="bayesian", method=res.method + suffix,
                     measure=d.measure, scale=d.scale, coords=dict(req.coords),
                     notes=tuple(notes), result=res,
                     provenance={"priors": res.priors, "sampler": res.settings,
                                 "diagnostics": res.diagnostics.line()})
        return [f]
    with warnings.catch_warnings(record=True) as caught:
        # a sensitivity prior is meant to move the answer: its findings stay in the fit's
        # notes (and the sensitivity table) rather than warning
        warnings.simplefilter("always" if setting else "default")
        res = exact.fit_exact(y, s, tau_prior=tau_p, mu_prior=mu_p, labels=labels,
                              measure=d.measure, prior_note=req.prior_note)
    for w in caught:
        if setting:
            notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    method = ("conjugate-normal" if pooled else "exact-NNHM") + suffix
    f = ExactFit(model="nnhm", source="bayesian", method=method, measure=d.measure,
                 scale=d.scale, coords=dict(req.coords), notes=tuple(notes), result=res,
                 studies=not pooled, seed=int(req.ctx.seed_for(req.spec)),
                 only=("mu",) if pooled else (),  # tau fixed: only mu has a posterior
                 provenance={"priors": {"mu": str(res.mu_prior), "tau": str(res.tau_prior)}})
    return [f]


def fit_binomial_normal_cell(d: Design, req: FitRequest) -> list[Fit]:
    from bayesmeta import mcmc

    r = d.rows
    n1 = r["n1i"].to_numpy(float) if "n1i" in r else (r["ai"] + r["bi"]).to_numpy(float)
    n2 = r["n2i"].to_numpy(float) if "n2i" in r else (r["ci"] + r["di"]).to_numpy(float)
    kw = req.ctx.sampling(req.spec, req.ctx.next_offset())
    res = mcmc.fit_binomial_normal(r["ai"].to_numpy(float), n1, r["ci"].to_numpy(float), n2,
                                   mu_prior=req.mu_prior, tau_prior=req.tau_prior,
                                   study=_labels(d), warn=False, **kw)
    return [DrawsFit(model="binomial-normal", source="bayesian", method=res.method,
                     measure=d.measure, scale=d.scale, coords=dict(req.coords), result=res,
                     provenance={"priors": res.priors, "sampler": res.settings,
                                 "diagnostics": res.diagnostics.line()})]


def survival_fit(res, d: Design, coords: dict, setting: str = "") -> DrawsFit:
    """A survival result (exact or MCMC) as a :class:`Fit`: the pooled log OR at time t is
    ``mu`` at t, a new trial's log OR ``theta_new`` at t."""
    pm = {}
    for rep in res.reports:
        name = rep.label.split("[", 1)[0]
        if name == "logOR":
            pm[rep.label] = Param("mu", time=rep.time)
        elif name == "logOR_new":
            pm[rep.label] = Param("theta_new", time=rep.time)
        elif name == "mu":
            pm[rep.label] = Param("mu", time=ACROSS_TIME)
        else:
            pm[rep.label] = Param(name, {"time": rep.time} if rep.time else {})
    return DrawsFit(model=res.model, source="bayesian",
                    method=res.method + (f" [{setting}]" if setting else ""),
                    measure=d.measure, scale=d.scale, coords=dict(coords), result=res,
                    param_map=pm, notes=tuple(res.notes),
                    provenance={"priors": res.priors, "settings": res.settings,
                                "diagnostics": res.diagnostics.line()})
