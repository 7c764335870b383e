"""The nested model on one outcome part of a design: the Gaussian hierarchical model
(:mod:`bayesmeta.ghm`) with its settings from ``[bayes]``, the within-study correlation
sensitivity, the classical twin and the workflow checks.

Settings (``[bayes]``, model ``nested``; every one is stated in the report):

* ``time_structure``: ``exchangeable`` | ``ar1`` (ordered times) | ``car`` (numeric spacing);
* ``subgroup_effect``: ``fixed`` (default: each subgroup its own mean, with the implied prior
  of the contrast stated) | ``random``;
* ``study_time``: ``independent`` | ``ar1`` | ``car``: a study's deviations across its times;
* ``within_correlation``: ``exchangeable`` | ``decay`` | ``ratio``: form of the correlation of
  the sampling errors of one study's (or one published source's) rows at different times;
* ``within_r``: that correlation: a number, a prior ``"beta:A:B"`` (on (0, 1)), or empty for
  :data:`bayesmeta.ghm.DEFAULT_R`;
* ``window``: the times whose equally weighted average is the across-time estimand (default
  every time of the data);
* ``extrapolate``: also report subgroup cells at times the subgroup was not observed at;
* ``checks``: the workflow checks (prior and posterior predictive, contraction and conflict,
  LOO against the simpler models).

``[sensitivity] within_r``: the known values of ``r`` the model is refitted at (default
0, 0.5, 0.8, 0.9; empty = none).

Published rows without a study column are taken to come from one source (the data file): a
subgroup's rows at different times then share patients and are correlated at ``r``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmeta.design import Design
from bayesmeta.exceptions import SpecError
from bayesmeta.fits import Fit, Param, RenamedFit
from bayesmeta.registry import ACROSS_TIME  # a subgroup's hierarchical mean over time points


#: ``[bayes]`` keys read by the nested model only
NESTED_KEYS = ("time_structure", "subgroup_effect", "study_time", "within_correlation",
               "within_r", "window", "extrapolate", "checks")


def ghm_table(d: Design) -> pd.DataFrame:
    """The rows of a design part in :func:`bayesmeta.ghm_build.build_design`'s format."""
    r = d.rows
    pub = d.row_kind == "published"
    out = pd.DataFrame({"yi": r["yi"].to_numpy(float), "sei": r["sei"].to_numpy(float)})
    if d.has("time"):
        out["time"] = r["time"].astype(str).to_numpy()
        if "time_value" in r and pd.to_numeric(r["time_value"], errors="coerce").notna().all():
            out["time_value"] = pd.to_numeric(r["time_value"]).to_numpy(float)
    else:
        out["time"] = "1"
    out["subgroup"] = (r["subgroup"].astype(str).to_numpy() if d.has("subgroup") else "")
    labels = r["study"].astype(str).to_numpy() if "study" in r else np.array([""] * len(r))
    if pub:
        src = labels if d.has("study") else np.array([Path(str(d.file)).stem or "source"]
                                                     * len(r))
        out["study"] = ""
        out["source"] = src
        out["row_kind"] = "pooled"
    else:
        out["study"] = [s if s else f"row {i}" for s, i in zip(labels, r["row"])]
        out["row_kind"] = "study"
    for c in ("n1i", "n2i", "ni"):
        if c in r:
            out[c] = pd.to_numeric(r[c], errors="coerce").to_numpy(float)
    return out


def _r_value(text):
    """``within_r`` as build_design's ``r``: None (default), a number, or a BetaPrior."""
    from bayesmeta.ghm import BetaPrior

    if text in ("", None):
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip().lower()
    try:
        return float(s)
    except ValueError:
        pass
    parts = s.split(":")
    if parts[0] == "beta" and len(parts) == 3:
        try:
            a, b = float(parts[1]), float(parts[2])
        except ValueError:
            a = b = math.nan
        if a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b):
            return BetaPrior(a, b, source=f"beta:{parts[1]}:{parts[2]} (given)")
    if s == "uniform":
        return BetaPrior(1.0, 1.0, source="uniform on (0, 1) (given)")
    raise SpecError(f"Invalid within_r {text!r}", key="bayes.within_r",
                    fix="Give a number in [0, 1), 'uniform' or 'beta:A:B'.")


def check_settings(spec, models, design: Design | None = None) -> None:
    """Spec-level checks of the nested keys (values; keys given without the nested model;
    window times against the design's times)."""
    b = spec.bayes
    given = (spec.given or {}).get("bayes", frozenset())
    if "nested" not in models:
        for k in NESTED_KEYS:
            if k in given:
                raise SpecError(f"'{k}' applies to model 'nested' only", key=f"bayes.{k}")
        if "within_r" in (spec.given or {}).get("sensitivity", frozenset()):
            raise SpecError("'within_r' applies to model 'nested' only",
                            key="sensitivity.within_r")
        return
    r = _r_value(b.within_r)
    if isinstance(r, float) and not 0.0 <= r < 1.0:
        raise SpecError(f"Invalid within_r {b.within_r!r}: must be in [0, 1)",
                        key="bayes.within_r")
    if b.within_correlation == "ratio" and r is not None:
        raise SpecError("within_correlation 'ratio' has no parameter (sqrt(min(t,t')/max(t,t')))"
                        "; within_r contradicts it", key="bayes.within_r")
    if b.window and design is not None and design.has("time"):
        from bayesmeta.ghm import fmt_time

        have = {fmt_time(t) for t in design.rows["time"]}
        miss = [w for w in b.window if fmt_time(_num_label(w)) not in have]
        if miss:
            raise SpecError(f"window times {miss} are not in the data (times "
                            f"{', '.join(sorted(have, key=_sort_key))})", key="bayes.window")
    for x in spec.sensitivity.within_r:
        if not 0.0 <= x < 1.0:
            raise SpecError(f"Invalid within_r {x!r}: must be in [0, 1)",
                            key="sensitivity.within_r")
    if spec.sensitivity.within_r and b.within_correlation == "ratio" and \
            "within_r" in (spec.given or {}).get("sensitivity", frozenset()):
        raise SpecError("within_correlation 'ratio' has no parameter to vary",
                        key="sensitivity.within_r")


def options(spec, d: Design, req, pair=None) -> dict:
    """build_design keyword options of a part from the spec (priors from the request)."""
    b = spec.bayes
    opts = dict(time_structure=b.time_structure, subgroup=b.subgroup_effect,
                study_time=b.study_time, correlation=b.within_correlation,
                r=_r_value(b.within_r), measure=d.measure, extrapolate=bool(b.extrapolate))
    if spec.bayes.mu_prior:
        opts["mean_prior"] = req.mu_prior
    if spec.bayes.tau_prior:
        for k in ("sigma_time", "sigma_study", "tau"):
            opts[k] = req.tau_prior
    if pair is not None:
        opts["contrasts"] = [tuple(pair)]
    if b.window:
        want = [str(_num_label(w)) for w in b.window]
        opts["windows"] = {f"avg({','.join(want)})": {t: 1.0 for t in want}}
    return opts


def _num_label(w):
    if isinstance(w, float) and w.is_integer():
        return int(w)
    return w


def _drop_absent(opts: dict, table: pd.DataFrame) -> tuple[dict, list]:
    """Options a part cannot carry are dropped (with the reason in the fit's notes) rather
    than refused: a spec may name a window or a time structure that applies to one outcome
    and not another (a one-time part has no time structure). Returns (options, reasons)."""
    from bayesmeta.ghm import fmt_time

    o = dict(opts)
    why = []
    times = set(fmt_time(t) for t in table["time"])
    if len(times) < 2:
        if o.get("time_structure", "exchangeable") != "exchangeable":
            why.append(f"time_structure {o['time_structure']!r} not used: one time point")
        o["time_structure"] = "exchangeable"
        o.pop("windows", None)
    elif "windows" in o:
        (name, w), = o["windows"].items()
        miss = [t for t in w if t not in times]
        if miss:  # the spec's window exists in the design (checked), not in this part
            o.pop("windows")
            why.append(f"window {name} not reported here: times {', '.join(miss)} are not in "
                       "these rows")
    return o, why


def part_options(spec, d: Design, req, pair=None, table=None) -> tuple[dict, list]:
    """(build_design options, reasons for dropped ones) of one part: :func:`options` with
    what the part cannot carry dropped."""
    return _drop_absent(options(spec, d, req, pair), ghm_table(d) if table is None else table)


def _sort_key(t):
    try:
        return (0, float(t), t)
    except ValueError:
        return (1, 0.0, t)


def _rename(inner: Fit, *, model: str, method: str, d: Design, coords: dict,
            notes=(), hidden=()) -> Fit:
    """The GHM fit in the pipeline's coordinates: a subgroup's hierarchical mean is ``mu`` at
    time ``all``; the rest as the GHM names them."""
    names = {}
    for p in inner.params():
        if p.name in ("mu", "contrast") and not p.get("time"):
            names[Param(p.name, {**dict(p.coords), "time": ACROSS_TIME})] = p
    return NestedFit(model=model, source=inner.source, method=method, measure=d.measure,
                     scale=d.scale, coords=dict(coords), inner=inner, names=names,
                     notes=tuple(inner.notes) + tuple(notes),
                     provenance=dict(getattr(inner, "provenance", {}) or {}),
                     hidden=tuple(hidden))


@dataclass
class NestedFit(RenamedFit):
    """A renamed GHM fit whose results table marks extrapolated estimands; parameters named
    in ``hidden`` (e.g. the classical twin's prediction without ``[classical]
    prediction``) are not reported."""

    hidden: tuple = ()

    def params(self) -> list[Param]:
        return [p for p in super().params() if p.name not in self.hidden]

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        s = super().summary(ci_prob)
        return s[[p.name not in self.hidden for p in s.index]]

    @property
    def datatree(self):
        return getattr(self.inner, "datatree", None)

    def to_frame(self, ci_prob: float = 0.95, *, analysis: str = "",
                 outcome: str | None = None) -> pd.DataFrame:
        from bayesmeta.ghm_exact import mark_extrapolation

        df = super().to_frame(ci_prob, analysis=analysis, outcome=outcome)
        return mark_extrapolation(df, _ParamsView(self, self.design))

    @property
    def design(self):
        return self.inner.design

    def quantile(self, param, q):
        return self.inner.quantile(self._in(param), q)

    @property
    def nodes(self):
        return getattr(self.inner, "nodes", None)


class _ParamsView:
    """(params, design) of a renamed fit in the inner fit's names, for mark_extrapolation."""

    def __init__(self, fit, design):
        self.design = design
        self._p = [fit._in(p) for p in fit.params()]

    def params(self):
        return self._p


def fit_part(d: Design, req, *, engine: str, pair=None, setting: str = "",
             r_override=None) -> Fit:
    """The nested model on one part (exact or MCMC), as a pipeline fit."""
    from bayesmeta.ghm_build import build_design

    spec, ctx = req.spec, req.ctx
    table = ghm_table(d)
    opts, why = part_options(spec, d, req, pair, table)
    if r_override is not None:
        opts["r"] = float(r_override)
    outcome = req.coords.get("outcome", "")
    try:
        design = build_design(table, **opts)
    except SpecError as err:
        if err.key in ("r",) and r_override is None and opts.get("r") is not None:
            raise SpecError(err.problem, key="bayes.within_r", fix=err.fix) from err
        if err.key in ("study_time", "rho_within", "rho", "sigma_time", "windows",
                       "contrasts"):
            raise SpecError(err.problem, key=f"bayes.{_SPEC_KEY.get(err.key, err.key)}",
                            fix=err.fix) from err
        raise
    suffix = f" [{setting}]" if setting else ""
    if engine == "mcmc":
        from bayesmeta.ghm_pymc import fit_ghm_mcmc

        kw = ctx.sampling(spec, ctx.next_offset())
        inner = fit_ghm_mcmc(design=design, draws=kw["draws"], tune=kw["tune"],
                             chains=kw["chains"], seed=kw["seed"],
                             target_accept=kw["target_accept"], sampler=kw.get("sampler",
                                                                               "nutpie"))
        method = "MCMC-GHM"
    else:
        from bayesmeta.ghm_exact import fit_design

        inner = fit_design(design, outcome=outcome, seed=int(ctx.seed_for(spec)))
        method = "exact-GHM"
    method += f" ({_structure_text(design)})" + suffix
    return _rename(inner, model="nested", method=method, d=d, coords=req.coords, notes=why)


_SPEC_KEY = {"rho": "time_structure", "sigma_time": "time_structure", "windows": "window",
             "contrasts": "contrast", "rho_within": "study_time"}


def _structure_text(design) -> str:
    bits = [f"times {design.time_structure}" if len(design.times) > 1 else "one time",
            f"subgroups {design.subgroup_mode}" if len(design.subgroups) > 1 else ""]
    if design.study_time != "independent":
        bits.append(f"study x time {design.study_time}")
    form = "" if design.correlation == "exchangeable" else f" {design.correlation}"
    if "r" in design.fixed:
        bits.append(f"r {design.fixed['r']:g}{form}")
    elif "r" in design.hyper_names:
        bits.append(f"r integrated{form}")
    elif design.correlation == "ratio":
        bits.append("r ratio sqrt(t/t')")
    return ", ".join(b for b in bits if b)


def r_grid(spec, design_has_pairs: bool) -> tuple:
    if not design_has_pairs or spec.bayes.within_correlation == "ratio":
        return ()
    return tuple(float(x) for x in spec.sensitivity.within_r)


def has_pairs(fit: Fit) -> bool:
    d = fit.design
    g = np.asarray(d.group)
    return bool(((g[:, None] == g[None, :]) & (g[:, None] >= 0)).sum() > int((g >= 0).sum()))


def twin(d: Design, req, *, pair=None) -> Fit:
    """The classical twin: REML with fixed cell means, a study intercept, the study x time
    structure and the same sampling covariance (a known r: the spec's, or the mean of its
    prior, stated)."""
    from bayesmeta.ghm import BetaPrior
    from bayesmeta.ghm_build import build_design
    from bayesmeta.ghm_reml import fit_ghm_reml

    spec = req.spec
    table = ghm_table(d)
    opts, why = part_options(spec, d, req, pair, table)
    notes = list(why)
    r = opts.get("r")
    if isinstance(r, BetaPrior):
        opts["r"] = float(r.mean())
        notes.append(f"within-study correlation r = {r.mean():.3g} (the mean of its Bayesian prior "
                     f"{r}): REML needs a known r")
    struct = {"independent": "CS", "ar1": "AR", "car": "CAR"}[spec.bayes.study_time]
    test = "knha" if spec.classical.test == "knha" else "z"
    for k in ("mean_prior", "sigma_time", "sigma_study", "tau", "sigma_subgroup"):
        opts.pop(k, None)
    opts["time_structure"] = "car" if struct == "CAR" else "exchangeable"
    opts["subgroup"] = "fixed"
    opts.pop("study_time", None)
    design = build_design(table, **opts)
    fit = fit_ghm_reml(design=design, struct=struct, method="REML", test=test,
                       measure=d.measure, outcome=req.coords.get("outcome", ""))
    return _rename(fit, model="multilevel", method=f"REML-GHM ({struct}, "
                   f"r {design.fixed.get('r', 0):.3g}{', KNHA' if test == 'knha' else ''})",
                   d=d, coords=req.coords, notes=notes,
                   hidden=() if spec.classical.prediction else ("theta_new",))
