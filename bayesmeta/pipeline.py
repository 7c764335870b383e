"""One generic analysis: design → classical and Bayesian fits → quantities → one results table.

The same pipeline serves a spec (``bayesmeta run``), the CLI (``bayesmeta bayes`` /
``classical``) and Python (:func:`analyze`):

1. **Design** (:class:`bayesmeta.design.Design`): roles, effect sizes, row rules, identity.
2. **Parts**: rows that summarise other rows' patients (a ``total_level`` subgroup) are
   analysed apart, never pooled with them; each outcome is analysed on its own.
3. **Classical fits**: the ``[classical]`` method per cell (outcome × subgroup × time); the
   test for subgroup differences where subgroups are independent; across time points the
   nested model's REML twin (``multilevel``: fixed cell means, a study effect, a study's
   sampling errors correlated across its time points) — the naive pooled overall of a
   study's repeated time points is never produced, and a warning names the repeated studies.
4. **Bayesian fits**: each ``[bayes] model`` from the registry (per cell or across cells),
   prior sensitivity per cell (exact NNHM under each prior set).
5. **Quantities**: P(benefit) and P(beyond thresholds) in the stated direction, subgroup
   contrasts per time.

The interval level is chosen when results are read: ``Analysis.to_frame(ci_prob=...)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from bayesmeta import quantities, registry, results, vocab
from bayesmeta.design import Design
from bayesmeta.exceptions import DataWarning, SpecError
from bayesmeta.fits import Fit

ACROSS_TIME = registry.ACROSS_TIME


# --------------------------------------------------------------------------------------------
# run context
# --------------------------------------------------------------------------------------------
@dataclass
class RunContext:
    """Run-wide settings: --fast, --seed override, progress; MCMC seeds per fit."""

    fast: bool = False
    seed: int | None = None
    progress: Callable[[str], None] = lambda msg: None
    verbose: bool = False  # a worker process prints its own progress on stderr
    _offset: int = 0

    def seed_for(self, spec) -> int:
        return int(self.seed if self.seed is not None else spec.sampling.seed)

    def next_offset(self) -> int:
        """The i-th MCMC fit of an analysis gets seed + i (same seeds whatever the schedule)."""
        i = self._offset
        self._offset += 1
        return i

    def sampling(self, spec, offset: int = 0) -> dict:
        """Keyword arguments for ``bayesmeta.mcmc`` (fast: few draws, 2 chains, pymc)."""
        s = spec.sampling
        kw = dict(draws=int(s.draws), tune=int(s.tune), chains=int(s.chains),
                  target_accept=float(s.target_accept), sampler=s.sampler,
                  seed=(self.seed_for(spec) + offset) % 2**32)
        if self.fast:  # pymc's sampler compiles in ~1 s vs nutpie's 5-8 s (stack-notes)
            kw.update(draws=int(s.fast_draws), tune=int(s.fast_tune), chains=2, sampler="pymc")
        return kw


# --------------------------------------------------------------------------------------------
# the result collection
# --------------------------------------------------------------------------------------------
@dataclass
class FitRecord:
    """A fit and where it belongs: outcome, part, and main result or sensitivity setting."""

    fit: Fit
    outcome: str = ""
    part: str = ""
    role: str = "main"          # "main" | "sensitivity"
    setting: str = ""


@dataclass
class Analysis:
    """Everything one analysis produced; read it at any level with :meth:`to_frame`.

    Attributes
    ----------
    spec : AnalysisSpec
        The settings (from a spec file, the CLI or :func:`analyze`).
    design : Design
    records : list of FitRecord
    tests : DataFrame
        Tests for subgroup differences (``outcome, part, time, by, q, df, p, method``).
    warnings : list of str
        What the user must know (repeated studies, rows left out, fits not clean).
    published : DataFrame
        The published input rows in the results schema (``source = "published"``).
    audit : DataFrame or None
        Published-number audit rows (:mod:`bayesmeta.audit` columns).
    extra : dict
        Tables a recipe adds (name → DataFrame).
    checks : dict
        Workflow checks of the nested fits: (outcome, part) → {check name: DataFrame}
        (:mod:`bayesmeta.workflow`); ``"nnhm"`` fits add their prior-posterior table.
    """

    spec: Any
    design: Design
    records: list = field(default_factory=list)
    tests: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: list = field(default_factory=list)
    published: pd.DataFrame | None = None
    audit: pd.DataFrame | None = None
    extra: dict = field(default_factory=dict)
    answers: list = field(default_factory=list)
    checks: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.analysis.name

    @property
    def ci_prob(self) -> float:
        return float(self.spec.report.ci_prob)

    def fits(self, *, role: str = "main", source: str | None = None,
             model: str | None = None) -> list[FitRecord]:
        return [r for r in self.records if r.role == role
                and (source is None or r.fit.source == source)
                and (model is None or r.fit.model == model)]

    def sign(self, outcome: str) -> int:
        """+1 if a higher effect is a benefit for this outcome, -1 if lower."""
        rep = self.spec.report
        s = vocab.benefit_sign(rep.direction)
        return -s if outcome and outcome in rep.reversed_outcomes else s

    def _frame(self, recs, ci_prob) -> pd.DataFrame:
        frames = []
        for r in recs:
            df = r.fit.to_frame(ci_prob, analysis=self.name, outcome=r.outcome)
            if r.part and r.part != self.design.total_level:
                df["method"] = df["method"] + f" ({r.part})"
            frames.append(df)
        return results.concat(*frames) if frames else results.frame([])

    def to_frame(self, ci_prob: float | None = None) -> pd.DataFrame:
        """Published, classical and Bayesian rows (main fits and contrasts) in the shared
        schema, intervals at ``ci_prob`` (default: the analysis's ``[report] ci_prob``)."""
        lev = self.ci_prob if ci_prob is None else ci_prob
        frames = []
        if self.published is not None and len(self.published):
            frames.append(self.published)
        frames.append(self._frame(self.fits(), lev))
        frames.append(self.classical_contrasts(lev))
        return results.concat(*frames)

    def sensitivity_frame(self, ci_prob: float | None = None) -> pd.DataFrame:
        lev = self.ci_prob if ci_prob is None else ci_prob
        return self._frame(self.fits(role="sensitivity"), lev)

    def classical_contrasts(self, ci_prob: float | None = None) -> pd.DataFrame:
        lev = self.ci_prob if ci_prob is None else ci_prob
        pair = contrast_pair(self.spec, self.design, strict=False)
        rows = []
        if pair is None:
            return results.frame([])
        by_outcome: dict = {}
        for r in self.fits(source="classical"):
            if r.fit.model in ("fe", "re", "mh", "peto") and r.part != self.design.total_level:
                g, t = r.fit.coords.get("subgroup", ""), r.fit.coords.get("time", "")
                by_outcome.setdefault(r.outcome, {})[(g, t)] = r.fit
        for oc, cells in by_outcome.items():
            for row in quantities.classical_contrasts(cells, pair, lev,
                                                      scale=self.design.scale):
                rows.append(results.row(analysis=self.name, outcome=oc, **row))
        return results.frame(rows)

    def fit_sign(self, record) -> int:
        """The benefit sign of one fit's effects: the outcome's, reversed for a fit that
        reports the opposite event (``scale_reversed``: e.g. a survival odds ratio fitted to
        counts of deaths, log OR(survival) = -log OR(death))."""
        s = self.sign(record.outcome)
        return -s if getattr(record.fit, "scale_reversed", False) else s

    def exceedance(self) -> pd.DataFrame:
        """P(benefit) and P(beyond each ``[report] thresholds``) for every Bayesian pooled
        effect (main fits), in each outcome's direction. Thresholds are on the data's scale;
        for a fit on the reversed scale a threshold t is the reversed fit's 1/t (ratio) or -t."""
        frames = []
        ratio = vocab.is_ratio(self.design.measure)
        for r in self.fits(source="bayesian"):
            thr = list(self.spec.report.thresholds)
            rev = getattr(r.fit, "scale_reversed", False)
            d = quantities.exceedance(r.fit, measure=self.design.measure,
                                      sign=self.fit_sign(r),
                                      thresholds=[(1.0 / t if ratio else -t) if rev else t
                                                  for t in thr])
            if rev and thr:  # columns named by the thresholds on the data's scale
                d = d.rename(columns={f"p_beyond_{(1.0 / t if ratio else -t):g}":
                                      f"p_beyond_{t:g}" for t in thr})
            if len(d):
                d.insert(0, "outcome", r.outcome)
                d.insert(1, "part", r.part)
                frames.append(d)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def contrasts(self, ci_prob: float | None = None) -> pd.DataFrame:
        """Bayesian subgroup contrasts with P(first-named subgroup better)."""
        lev = self.ci_prob if ci_prob is None else ci_prob
        frames = []
        for r in self.fits(source="bayesian"):
            d = quantities.bayes_contrasts(r.fit, sign=self.fit_sign(r), level=lev)
            if len(d):
                d.insert(0, "outcome", r.outcome)
                frames.append(d)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def __str__(self) -> str:
        from bayesmeta.summary_text import analysis_text

        return analysis_text(self)

    __repr__ = __str__

    def write_report(self, out_dir, *, progress=None) -> Any:
        """Write the report of this one analysis to ``out_dir`` (as ``bayesmeta run``)."""
        from bayesmeta.runner import write_outputs
        from bayesmeta.sections import render

        return write_outputs([render(self)], out_dir, progress=progress)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def contrast_pair(spec, design: Design, *, strict: bool = True) -> tuple[str, str] | None:
    """The subgroup contrast a − b: the spec's ``[bayes] contrast``, else the first two
    subgroup levels in order (the total level excluded); None with fewer than two. With
    ``strict`` a named level missing from the design is an error, else (a part of the design
    without those subgroups) None."""
    levels = [g for g in design.levels("subgroup") if g != design.total_level]
    given = tuple(spec.bayes.contrast)
    if given:
        missing = [g for g in given if g not in levels]
        if missing and not strict:
            return None
        if missing:
            raise SpecError(f"contrast level(s) {missing} not in the subgroup column "
                            f"{design.roles.get('subgroup')!r} (levels: {levels})",
                            key="bayes.contrast",
                            fix="Use two of the listed levels, e.g. "
                                f"{levels[:2] if len(levels) > 1 else levels}.")
        return given[0], given[1]
    return (levels[0], levels[1]) if len(levels) >= 2 else None


def resolve_priors(spec, measure: str, rows: pd.DataFrame):
    """(mu prior, tau prior, sentence): the spec's priors, else the measure's defaults computed
    from the outcome's rows (their reason stated)."""
    from bayesmeta import priors as P

    data = {"vi": rows["vi"].to_numpy(float), "yi": rows["yi"].to_numpy(float)}
    for c in ("n1i", "n2i", "ni"):
        if c in rows:
            data[c] = pd.to_numeric(rows[c], errors="coerce").to_numpy(float)
    if spec.bayes.mu_prior:
        mu = P.parse_prior(spec.bayes.mu_prior, kind="mu")
        mu_why = f"mu ~ {mu} (set by the user)"
    else:
        mu, mu_why = P.default_mu_prior(measure, data)
    if spec.bayes.tau_prior:
        tau = P.parse_prior(spec.bayes.tau_prior, kind="tau")
        tau_why = f"tau ~ {tau} (set by the user)"
        src = getattr(tau, "source", "")
        if src:
            tau_why += f": {src}"
    else:
        tau, tau_why = P.default_tau_prior(measure, data)
        tau_why = f"tau ~ {tau}: {tau_why}"
    return mu, tau, f"{mu_why}. {tau_why}."


def prior_sets(spec, measure: str, rows: pd.DataFrame, sign: int) -> dict:
    """The ``[sensitivity]`` prior sets and extra tau priors: name → (mu prior, tau prior)."""
    from bayesmeta import priors as P

    if not spec.sensitivity.prior_sets and not spec.sensitivity.tau_priors:
        return {}
    data = {"vi": rows["vi"].to_numpy(float), "yi": rows["yi"].to_numpy(float)}
    sets = P.prior_sets(measure, data, benefit=sign)
    out = {name: sets[name] for name in spec.sensitivity.prior_sets}
    for text in spec.sensitivity.tau_priors:
        tau = P.parse_prior(text, kind="tau")
        out[f"tau ~ {tau}"] = (sets["weakly_informative"][0], tau)
    return out


def _cell_coords(base: dict, cell: dict) -> dict:
    return {**base, **cell}


# --------------------------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------------------------
def build_design(spec, frame=None, *, warn: bool = True) -> Design:
    """The spec's design: its data file (or ``frame``) with the spec's roles and rules."""
    d = spec.data
    include = {k: list(v) for k, v in dict(d.include or {}).items()}
    if d.outcomes:
        if not d.outcome:
            raise SpecError("'outcomes' needs the outcome column ([data] outcome)",
                            key="data.outcomes")
        include[d.outcome] = list(d.outcomes)
    src = frame if frame is not None else spec.data_path
    return Design.from_frame(
        src, d.measure, study=d.study or None, time=d.time or None,
        subgroup=d.subgroup or None, outcome=d.outcome or None, row_kind=d.row_kind,
        include=include, exclude={k: list(v) for k, v in dict(d.exclude or {}).items()},
        total_level=d.total_level or None, arm=d.arm or None,
        file=None if frame is not None else str(spec.data_path), warn=warn)


def bayes_models(spec) -> list[str]:
    m = spec.bayes.model
    return [m] if isinstance(m, str) else list(m)


def engine_for(spec, model: str) -> str:
    """The engine a model runs on: the spec's, or with ``auto`` the model's first (exact
    where it has one)."""
    e = spec.bayes.engine
    return registry.MODELS[model].engines[0] if e == "auto" else e


def check(spec, design: Design) -> None:
    """Everything ``run`` would refuse, before anything is fitted: each model against the
    design, the contrast levels, the engine."""
    c_model = registry.classical_model(spec.classical.method)
    if design.row_kind != "published":
        registry.get_model(c_model, key="classical.method").validate(
            design, spec, key="classical.method")
    entries = [registry.get_model(name, key="bayes.model") for name in bayes_models(spec)]
    for entry in entries:  # a contradiction within the spec first, then spec against data
        if spec.bayes.engine != "auto" and spec.bayes.engine not in entry.engines:
            raise SpecError(f"model {entry.name!r} has no engine {spec.bayes.engine!r}: its "
                            f"engines are {list(entry.engines)}", key="bayes.engine",
                            fix=f"Set engine = '{entry.engines[0]}'.")
    for entry in entries:
        entry.validate(design, spec, key="bayes.model")
    from bayesmeta import nested_part

    nested_part.check_settings(spec, bayes_models(spec), design)
    contrast_pair(spec, design)
    if spec.audit.recipe:
        from bayesmeta.recipes import RECIPES

        RECIPES[spec.audit.recipe].validate(spec, design)
    by = spec.classical.by
    if by and by not in design.rows.columns and by not in design.roles.values():
        import difflib
        from pathlib import Path

        from bayesmeta.design import CANONICAL

        cols = [c for c in design.roles.values() if c] + [
            c for c in design.rows.columns if c not in CANONICAL and c not in design.roles.values()]
        sug = difflib.get_close_matches(by, cols, n=1, cutoff=0.6)
        raise SpecError(f"[classical] by names column {by!r}, which is not in "
                        f"{Path(design.file).name} (columns: {', '.join(cols)})",
                        key="classical.by",
                        fix=f"Did you mean {sug[0]!r}?" if sug else "Name one of the columns.")


def run_analysis(spec, ctx: RunContext | None = None, *, frame=None,
                 design: Design | None = None) -> Analysis:
    """Fit everything the spec asks for on its design; see the module docstring."""
    ctx = ctx or RunContext()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        design = design or getattr(spec, "design", None) or build_design(spec, frame)
    an = Analysis(spec=spec, design=design)
    an.warnings += [n for n in design.notes]
    check(spec, design)
    if design.row_kind == "published":
        an.published = published_rows(design, spec)
    tests = []
    nested_jobs = []
    for oc, odesign in design.split("outcome"):
        for part_label, od in odesign.parts():
            outcome = oc.get("outcome", spec.analysis.outcome)
            base = {"outcome": outcome}
            if part_label and part_label == design.total_level:
                base["subgroup"] = part_label
            mu_p, tau_p, why = resolve_priors(spec, od.measure, od.rows)
            req = registry.FitRequest(spec=spec, ctx=ctx, mu_prior=mu_p, tau_prior=tau_p,
                                      prior_note=why)
            ctx.progress(f"  {outcome or 'data'}{' / ' + part_label if part_label else ''}: "
                         f"{od.k} rows")
            if od.row_kind != "published":
                tests += _classical(an, od, req, base, outcome, part_label)
            for name in bayes_models(spec):
                entry = registry.MODELS[name]
                if entry.scope == "cell":
                    _bayes_cells(an, name, od, req, base, outcome, part_label)
                elif name == "nested":
                    if registry.nested_fits(od):
                        nested_jobs.append((od, req, base, outcome, part_label))
                    else:
                        an.warnings.append(
                            f"{outcome or 'data'}{' (' + part_label + ')' if part_label else ''}"
                            f": {od.k} row(s) in one cell, nothing for the nested model to "
                            "pool; see the published table")
                elif name.startswith("survival-"):
                    fit = (_survival_published if name == "survival-published"
                           else _survival_counts)
                    for sc, sd in od.split("subgroup"):  # over time, per subgroup
                        fit(an, sd, req, {**base, **sc}, outcome, part_label)
            _sensitivity(an, od, req, base, outcome, part_label)
    for job in nested_jobs:
        _nested(an, *job)
    an.tests = pd.DataFrame(tests)
    _audit(an)
    for r in an.records:
        if not r.fit.clean:
            an.warnings.append(f"{r.outcome + ': ' if r.outcome else ''}{r.fit.method} is "
                               f"{r.fit.flag}: treat its numbers with caution")
    an.warnings += [str(w.message) for w in caught
                    if not issubclass(w.category, DataWarning)]
    return an


def _audit(an: Analysis) -> None:
    """The published-number audit: a table of published estimates is checked among itself
    (estimate, CI and P), with the Bayesian estimate of the same cell beside it; a recipe
    adds its own (recomputation from bundled data)."""
    from bayesmeta import audit
    from bayesmeta.recipes import run_recipe

    d = an.design
    frames = []
    if d.row_kind == "published":
        bmap = {}
        ratio = vocab.is_ratio(d.measure)
        for r in an.fits(source="bayesian"):
            summ = r.fit.summary(an.ci_prob)
            for p, s in summ.iterrows():
                if p.name != "mu":
                    continue
                key = (r.outcome, r.fit.coord(p, "time"), r.fit.coord(p, "subgroup"))
                if key in bmap:
                    continue
                if ratio:
                    bmap[key] = (math.exp(s["median"]), math.exp(s["ci_low"]),
                                 math.exp(s["ci_high"]), r.fit.method)
                else:
                    bmap[key] = (s["estimate"], s["ci_low"], s["ci_high"], r.fit.method)
        rows = d.rows
        if d.excluded is not None and len(d.excluded):  # audited, not analysed
            rows = pd.concat([rows, d.excluded], ignore_index=True)
            rows = rows.sort_values("row", kind="stable").reset_index(drop=True)
        rows = rows.assign(outcome=[o or an.spec.analysis.outcome for o in rows["outcome"]])
        frames.append(audit.audit_published_table(
            rows, analysis=an.name, measure=d.measure, bayes=bmap,
            item_cols=("outcome", "time", "subgroup")))
    out = run_recipe(an)
    if out is not None:
        frames.append(out.audit)
        if out.published is not None and len(out.published):
            an.published = (out.published if an.published is None
                            else results.concat(an.published, out.published))
        an.answers += out.answers
        an.warnings += out.warnings
        an.extra["audit_caption"] = out.caption
        an.extra["audit_columns"] = out.columns
    an.audit = pd.concat(frames, ignore_index=True) if frames else None


def published_rows(design: Design, spec) -> pd.DataFrame:
    """The published input rows in the results schema (their own printed CI, 95%)."""
    rows = []
    src = design.rows
    if design.excluded is not None and len(design.excluded):  # printed, though not analysed
        src = pd.concat([src, design.excluded], ignore_index=True).sort_values(
            "row", kind="stable")
    from bayesmeta.published import to_analysis_scale

    for r in src.itertuples(index=False):
        est, lo, hi = (float(getattr(r, c)) for c in ("estimate", "ci_low", "ci_high"))
        se = float(r.sei)
        if not math.isfinite(se):
            se = float(to_analysis_scale(est, lo, hi, design.measure)[1])
        if vocab.is_ratio(design.measure):
            est, lo, hi = math.log(est), math.log(lo), math.log(hi)
        p = getattr(r, "p_printed", getattr(r, "p", math.nan))
        rows.append(results.row(
            analysis=spec.analysis.name, outcome=r.outcome or spec.analysis.outcome,
            source="published", method="published (printed)", parameter="mu",
            time=r.time, subgroup=r.subgroup, estimate=est, se=se, ci_low=lo, ci_high=hi,
            level=0.95, interval="published", scale=design.scale,
            p_value=p if isinstance(p, (int, float)) else None))
    return results.frame(rows)


def _classical(an: Analysis, od: Design, req, base, outcome, part) -> list[dict]:
    spec = req.spec
    model = registry.classical_model(spec.classical.method)
    tests = []
    for cell, cd in od.split("subgroup", "time"):
        for f in registry.fit_classical_cell(model, cd, _req(req, base, cell)):
            an.records.append(FitRecord(f, outcome, part))
    # subgroups at each time point: independent patients, so the test for differences holds
    sub_col = spec.classical.by if spec.classical.by and spec.classical.by != od.roles.get(
        "time") else ("subgroup" if od.has("subgroup") else "")
    if sub_col:
        col = "subgroup" if sub_col in ("subgroup", od.roles.get("subgroup")) else sub_col
        if col != "subgroup":  # a grouping column that is not a role: no silent '' level
            from bayesmeta.io import check_role_values

            probe = od.rows.copy()
            probe.attrs = {"file": od.file, "rows": od.rows["row"].tolist()}
            check_role_values(probe, [col], file=od.file)
        for tcell, td in od.split("time"):
            groups = td.rows[col].astype(str).tolist()
            if len(set(groups)) < 2:
                continue
            tests.append(_subgroup_test(td, groups, spec, outcome, part, tcell.get("time", ""),
                                        od.roles.get(col, col)))
    # across time points
    rep = od.repeated_studies("time")
    if od.has("time") and len(od.levels("time")) > 1:
        if rep:
            an.warnings.append(
                f"{outcome + ': ' if outcome else ''}{len(rep)} stud"
                f"{'y appears' if len(rep) == 1 else 'ies appear'} at several time points ("
                + "; ".join(f"{s}: {', '.join(t)}" for s, t in rep.items())
                + "): no classical estimate pools the time points as if they were different "
                  "studies; across time only the nested model's REML twin (multilevel) pools "
                  "them, counting each study once")
            from bayesmeta import nested_part

            f = nested_part.twin(od, _req(req, base, {}),
                                 pair=contrast_pair(spec, od, strict=False))
            an.records.append(FitRecord(f, outcome, part))
        elif spec.classical.by and spec.classical.by == od.roles.get("time"):
            groups = od.rows["time"].tolist()
            tests.append(_subgroup_test(od, groups, spec, outcome, part, ACROSS_TIME,
                                        od.roles["time"]))
    return tests


def _subgroup_test(d: Design, groups, spec, outcome, part, time, by) -> dict:
    from bayesmeta import classical

    method = spec.classical.method if spec.classical.method not in ("MH", "PETO") else "FE"
    res = classical.subgroup_analysis(d.rows["yi"].to_numpy(float), d.rows["vi"].to_numpy(float),
                                      groups, studies=registry._labels(d), method=method,
                                      test=spec.classical.test, measure=d.measure,
                                      preset=spec.classical.preset or None)
    t = res.subgroup_test
    return {"outcome": outcome, "part": part, "time": time, "by": by,
            "levels": " | ".join(map(str, res.subgroups)), "q": float(t["q"]),
            "df": int(t["df"]), "p": float(t["p"]), "i2": float(t["i2"]),
            "method": f"test for subgroup differences ({method})"}


def _req(req, base, cell) -> registry.FitRequest:
    return registry.FitRequest(spec=req.spec, ctx=req.ctx, mu_prior=req.mu_prior,
                               tau_prior=req.tau_prior, prior_note=req.prior_note,
                               coords=_cell_coords(base, cell))


def _bayes_cells(an, name, od, req, base, outcome, part):
    engine = engine_for(req.spec, name)
    for cell, cd in od.split("subgroup", "time"):
        r = _req(req, base, cell)
        if name == "nnhm":
            fits = registry.fit_nnhm_cell(cd, r, engine=engine)
            _nnhm_check(an, fits, req, outcome, part, cell)
        elif name == "binomial-normal":
            fits = registry.fit_binomial_normal_cell(cd, r)
        else:  # pragma: no cover - registry and pipeline disagree
            raise SpecError(f"model {name!r} has no cell fit")
        an.records += [FitRecord(f, outcome, part) for f in fits]


def _nnhm_check(an, fits, req, outcome, part, cell, setting: str = "") -> None:
    """Prior vs posterior of an NNHM cell (contraction, prior-data conflict): collected per
    outcome and part under ``"nnhm"``."""
    from bayesmeta import workflow

    for f in fits:
        if f.method.startswith("conjugate"):
            continue  # tau fixed at 0: nothing but mu, whose prior is the stated default
        t = workflow.prior_posterior_nnhm(f, req.mu_prior, req.tau_prior)
        if len(t):
            t.insert(0, "time", cell.get("time", ""))
            t.insert(0, "subgroup", cell.get("subgroup", ""))
            t.insert(0, "priors", setting or "main")
            bucket = an.checks.setdefault((outcome, part), {})
            prev = bucket.get("nnhm_prior_posterior")
            bucket["nnhm_prior_posterior"] = t if prev is None else pd.concat(
                [prev, t], ignore_index=True)


def _sensitivity(an, od, req, base, outcome, part):
    if "nnhm" not in bayes_models(req.spec):  # other models carry their own sensitivity
        return
    sets = prior_sets(req.spec, od.measure, od.rows, an.sign(outcome))
    if not sets:
        return
    for name, (mu, tau) in sets.items():
        for cell, cd in od.split("subgroup", "time"):
            fits = registry.fit_nnhm_cell(cd, _req(req, base, cell), engine="exact",
                                          mu_prior=mu, tau_prior=tau, setting=name)
            for f in fits:
                an.records.append(FitRecord(f, outcome, part, role="sensitivity",
                                            setting=name))
            r = registry.FitRequest(spec=req.spec, ctx=req.ctx, mu_prior=mu, tau_prior=tau)
            _nnhm_check(an, fits, r, outcome, part, cell, setting=name)


def _nested(an, od, req, base, outcome, part):
    """The nested model on one part: main fit, within-study correlation sensitivity and the
    workflow checks (:mod:`bayesmeta.nested_part`)."""
    from bayesmeta import nested_part, workflow

    spec, ctx = req.spec, req.ctx
    engine = engine_for(spec, "nested")
    pair = contrast_pair(spec, od, strict=False)
    r = _req(req, base, {})
    ctx.progress(f"  nested ({engine}): {outcome or 'data'}{' / ' + part if part else ''}")
    fit = nested_part.fit_part(od, r, engine=engine, pair=pair)
    an.records.append(FitRecord(fit, outcome, part))
    design = fit.design
    if nested_part.has_pairs(fit):
        for rv in nested_part.r_grid(spec, True):
            try:
                f = nested_part.fit_part(od, r, engine="exact", pair=pair,
                                         setting=f"r = {rv:g}", r_override=rv)
            except SpecError as err:
                an.warnings.append(f"{outcome or 'data'}: within_r {rv:g} not fitted: "
                                   f"{err.problem}")
                continue
            an.records.append(FitRecord(f, outcome, part, role="sensitivity",
                                        setting=f"r = {rv:g}"))
    if spec.bayes.checks:
        opts, _ = nested_part.part_options(spec, od, req, pair)
        try:
            checks = workflow.workflow_checks(
                fit.inner, nested_part.ghm_table(od), model_options=opts,
                loo=design.n <= 60, level=an.ci_prob)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
            # a check that cannot be computed numerically is reported, not fatal
            checks = {}
            an.warnings.append(f"{outcome or 'data'}: workflow checks not computed ({err})")
        an.checks[(outcome, part)] = checks


def _survival_published(an, od, req, base, outcome, part):
    """Published ORs over time (one subgroup): the main fit, the sensitivity grid and the
    survival answers (:mod:`bayesmeta.survival_quantities`)."""
    from bayesmeta.fits import Param, RenamedFit

    spec, ctx = req.spec, req.ctx
    r = od.rows.iloc[np.argsort(od.rows["time_value"].to_numpy(float), kind="stable")]
    if engine_for(spec, "survival-published") == "mcmc":
        from bayesmeta import survival
        from bayesmeta.survival_fit import as_fit

        res = survival.fit_survival_published(
            r["time"].tolist(), *(r[c].to_numpy(float) for c in ("estimate", "ci_low",
                                                                  "ci_high")),
            or_means="death" if spec.report.events == "deaths" else "survival",
            analysis=an.name, outcome=outcome, warn=False,
            **ctx.sampling(spec, ctx.next_offset()))
        inner = as_fit(res)
        an.warnings.append(f"{outcome or 'survival'}: absolute effects and a new trial are "
                           "computed from the exact engine; with engine 'mcmc' only the "
                           "posterior is reported")
        sa = None
    else:
        from bayesmeta import survival_quantities

        sa = survival_quantities.analyse(r, spec, ctx, analysis=an.name, outcome=outcome,
                                         coords=dict(base))
        inner = sa.fit
        an.extra.setdefault("survival", []).append(sa)
    names = {Param("mu", time=ACROSS_TIME): Param("mu")}
    for t in r["time"]:
        names[Param("mu", time=t)] = Param("log_or", time=t)
        names[Param("theta_new", time=t)] = Param("log_or_new", time=t)
    fit = RenamedFit(model="survival-published", source="bayesian", method=inner.method,
                     measure=od.measure, scale=od.scale, coords=dict(base), notes=inner.notes,
                     provenance=inner.provenance, inner=inner, names=names)
    an.records.append(FitRecord(fit, outcome, part))
    if sa is not None:
        for setting, f in sa.sens_fits:
            from bayesmeta.survival_quantities import _setting_label

            g = RenamedFit(model="survival-published", source="bayesian",
                           method=f.method + f" [{_setting_label(setting)}]",
                           measure=od.measure, scale=od.scale, coords=dict(base),
                           inner=f, names=names)
            an.records.append(FitRecord(g, outcome, part, role="sensitivity",
                                        setting=_setting_label(setting)))


def _survival_counts(an, od, req, base, outcome, part):
    from bayesmeta import survival

    spec, ctx = req.spec, req.ctx
    r = od.rows
    n1 = r["n1i"] if "n1i" in r else r["ai"] + r["bi"]
    n2 = r["n2i"] if "n2i" in r else r["ci"] + r["di"]
    data = pd.DataFrame({"study": r["study"], "time": r["time"], "ai": r["ai"], "n1i": n1,
                         "ci": r["ci"], "n2i": n2})
    kw = ctx.sampling(spec, ctx.next_offset())
    events = spec.report.events or "deaths"
    res = survival.fit_survival_counts(data, events=events, analysis=an.name,
                                       outcome=outcome or "survival", warn=False, **kw)
    fit = registry.survival_fit(res, od, base)
    # the model reports cumulative survival odds ratios; counts of deaths make the data's OR
    # an odds ratio of death, its reciprocal: the benefit direction of the fit is reversed
    fit.scale_reversed = events == "deaths"
    if fit.scale_reversed:
        fit.method += " (survival OR: > 1 favours the treatment)"
    an.records.append(FitRecord(fit, outcome, part))


# --------------------------------------------------------------------------------------------
# Python entry point
# --------------------------------------------------------------------------------------------
def analyze(data, *, measure: str, study: str | None = None, time: str | None = None,
            subgroup: str | None = None, outcome: str | None = None, models=None,
            ci_prob: float = 0.95, seed: int | None = None, fast: bool = False,
            name: str = "analysis", title: str | None = None, **options) -> Analysis:
    """Analyse a table (CSV path or DataFrame) with every requested model.

    Parameters
    ----------
    data : str, Path or DataFrame
    measure : str
        ``MD, SMD, OR, RR, RD, PETO, MC, GEN``.
    study, time, subgroup, outcome : str, optional
        Columns playing each role.
    models : str or list, optional
        Bayesian models (registry names, e.g. ``"nested"``); default ``"nnhm"``.
    ci_prob : float
        Interval level of the printed results (any level can be read later with
        ``to_frame(ci_prob=...)``).
    seed, fast : MCMC seed and smoke-test settings.
    **options
        Any spec key, by section: ``method="DL"``, ``test="knha"``, ``engine="mcmc"``,
        ``contrast=("A", "B")``, ``direction="higher_is_better"``, ``thresholds=[1.5]``,
        ``tau_prior="halfnormal:0.5"``, ``prior_sets=[...]``, ``total_level="all"``,
        ``include={...}``, ``exclude={...}``, ``row_kind="published"``... An unknown option
        is an error (did-you-mean).

    Returns
    -------
    Analysis
        Prints like metafor; ``to_frame(ci_prob=...)`` gives the shared results table;
        ``write_report(dir)`` writes the HTML/CSV report.

    Examples
    --------
    >>> import bayesmeta as bm
    >>> an = bm.analyze("trials.csv", measure="MD", study="trial", time="week",
    ...                 subgroup="disease", models="nested", contrast=("A", "B"))  # doctest: +SKIP
    >>> an.to_frame(ci_prob=0.9)                                                   # doctest: +SKIP
    """
    from bayesmeta.spec import spec_from_options

    spec = spec_from_options(name=name, title=title or name, measure=measure, study=study,
                             time=time, subgroup=subgroup, outcome=outcome, model=models,
                             ci_prob=ci_prob, **options)
    frame = data if isinstance(data, pd.DataFrame) else None
    if frame is None:
        from pathlib import Path
        spec = spec.with_data_path(Path(data))
    ctx = RunContext(fast=fast, seed=seed)
    return run_analysis(spec, ctx, frame=frame)
