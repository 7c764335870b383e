"""Report sections: pure functions of an :class:`~bayesmeta.pipeline.Analysis`.

Each section says whether it applies to what was fitted and renders itself into an
:class:`~bayesmeta.report.AnalysisOutput` (headings, paragraphs, tables, figures, answer
lines). Nothing here fits a model; numbers come from the analysis's fits and quantities at the
analysis's interval level, and words from :class:`~bayesmeta.labels.Labels`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bayesmeta import plots, registry, results, vocab
from bayesmeta.fits import Param
from bayesmeta.labels import Labels, prob
from bayesmeta.report import AnalysisOutput


def labels_for(an) -> Labels:
    return Labels(measure=an.design.measure, time_unit=an.spec.data.time_unit,
                  direction=an.spec.report.direction)


def _lev(an) -> str:
    return f"{100 * an.ci_prob:g}%"


def _cell_order(an, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by outcome (given order), subgroup, then time numerically."""
    from bayesmeta.design import level_order

    oc = {o: i for i, o in enumerate(an.design.levels("outcome"))}
    sg = {g: i for i, g in enumerate(an.design.levels("subgroup"))}
    tl = {t: i for i, t in enumerate(level_order(list(frame["time"]) + ["all"], numeric=True))}
    key = frame.apply(lambda r: (oc.get(r["outcome"], -1), sg.get(r["subgroup"], -1)
                                 if r["subgroup"] else -2, tl.get(r["time"], 10**6)), axis=1)
    return frame.assign(_k=key).sort_values("_k", kind="stable").drop(columns="_k")


#: marker of an estimate at a cell or over times where its subgroup was not observed
EXTRAPOLATED = " (EXTRAPOLATION)"


def _extrapolated(row) -> bool:
    """True for a results row flagged as an extrapolation (the nested model's ``flag``)."""
    return "EXTRAPOLATION" in str(row.get("flag", "") or "")


# --------------------------------------------------------------------------------------------
# answers
# --------------------------------------------------------------------------------------------
def answers(an, out: AnalysisOutput, L: Labels) -> None:
    lev = _lev(an)
    exc = an.exceedance()
    for r in an.fits():
        f = r.fit
        if f.model == "multilevel":
            summ = f.summary(an.ci_prob)
            for p, s in summ.iterrows():
                if p.name == "mu" and p.get("time").startswith("avg("):
                    g = p.get("subgroup")
                    out.answers.append(
                        f"{_who(r)}{g + ', ' if g else ''}{L.time(p.get('time'))}, counting "
                        f"each study once (classical twin, {f.method}): {L.effect} "
                        f"{L.ci(s['estimate'], s['ci_low'], s['ci_high'])} ({lev} CI).")
    by = {}
    for r in an.fits():
        if r.fit.model in ("multilevel",):
            continue
        by.setdefault((r.outcome, r.part, r.fit.source, r.fit.method), []).append(r)
    for (oc, part, source, method), recs in by.items():
        items = []
        for r in recs:
            summ = r.fit.summary(an.ci_prob)
            for p, s in summ.iterrows():
                if p.name != "mu" or str(s.get("note", "") or "").startswith("extrapolation"):
                    continue  # extrapolated cells are in the results table, flagged
                cell = L.cell(r.fit.coord(p, "subgroup") if an.design.has("subgroup") else "",
                              r.fit.coord(p, "time"))
                txt = f"{cell}: {L.ci(s['estimate'], s['ci_low'], s['ci_high'])}"
                if source == "bayesian" and len(exc):
                    m = exc[(exc["outcome"] == oc) & (exc["part"] == part)
                            & (exc["method"] == r.fit.method)
                            & (exc["subgroup"] == r.fit.coord(p, "subgroup"))
                            & (exc["time"] == r.fit.coord(p, "time"))]
                    if len(m):
                        txt += f", P({L.benefit(an.fit_sign(r))}) {_eq(m['p_benefit'].iloc[0])}"
                items.append(txt)
        if not items:
            continue
        kind = "Classical" if source == "classical" else "Bayesian"
        out.answers.append(f"{_who_parts(oc, part, an)}{kind} ({method}), {L.effect} "
                           f"({lev} {'CI' if source == 'classical' else 'CrI'}): "
                           + "; ".join(items) + ".")
    thr = an.spec.report.thresholds
    if thr and len(exc):
        for t in thr:
            col = f"p_beyond_{t:g}"
            sub = exc[exc[col].notna()] if col in exc else exc.iloc[:0]
            if len(sub):
                out.answers.append(
                    f"P({L.beyond(t, an.sign(sub['outcome'].iloc[0]))}): " + "; ".join(
                        f"{_cellname(an, L, r)} {prob(r[col])}" for _, r in sub.iterrows()
                        if r["parameter"] == "mu") + ".")
    con = an.contrasts()
    for oc, g in (con.groupby("outcome", sort=False) if len(con) else []):
        out.answers.append(
            f"{oc + ': ' if oc else ''}subgroup contrast {g['contrast'].iloc[0].replace(' - ', ' − ')}"
            f" ({'ratio of ' + L.effect + 's, ' if L.ratio else ''}{lev} CrI): " + "; ".join(
                f"{L.time(t) if t != 'all' else 'subgroup means'} "
                f"{L.ci(e, a, b)}, P(first better) {_eq(pf)}"
                + (" (EXTRAPOLATION: a subgroup not observed at these times)" if ex else "")
                for t, e, a, b, pf, ex in g.assign(
                    extrapolation=g.get("extrapolation", False))[[
                        "time", "estimate", "ci_low", "ci_high", "p_first_better",
                        "extrapolation"]].itertuples(index=False)) + "."
            + _contrast_prior(an, oc))
    out.answers += list(an.answers)
    if an.audit is not None and len(an.audit):
        a = an.audit
        ok = int(a["verdict"].str.startswith("reproduced").sum())
        bad = [f"{r.item} {r.quantity}: {r.verdict}" for r in a.itertuples()
               if not r.verdict.startswith("reproduced") and r.verdict != "not checkable"]
        out.answers.append(f"Audit: {ok} of {len(a)} printed numbers reproduced at printed "
                           "precision" + ("; " + "; ".join(bad) if bad else "") + ".")


def _contrast_prior(an, outcome) -> str:
    """The stated prior of a fixed-subgroup contrast (from the nested fit's notes)."""
    for r in an.fits(source="bayesian", model="nested"):
        if r.outcome == outcome:
            for n in r.fit.notes:
                if "implied prior of each contrast" in n:
                    scale = f" (on the {an.design.scale} scale)" if vocab.is_ratio(
                        an.design.measure) else ""
                    return " Prior" + scale + ": " + n.split(": ", 1)[1] + "."
    return ""


def _eq(p: float) -> str:
    s = prob(p)
    return s if s.startswith(("<", ">")) else f"= {s}"


def _who(r) -> str:
    return f"{r.outcome}: " if r.outcome else ""


def _who_parts(oc, part, an) -> str:
    bits = [x for x in (oc, "" if not part or part == an.design.total_level else part) if x]
    if part and part == an.design.total_level:
        bits.append(f"{part} (all patients)")
    return (", ".join(bits) + ": ") if bits else ""


def _cellname(an, L, r) -> str:
    return ", ".join(x for x in (r["outcome"], r["subgroup"], L.time(r["time"])) if x) \
        or "overall"


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------
def data_section(an, out, L) -> None:
    out.h("Data")
    out.p(an.design.describe() + (f" Rows are printed pooled estimates: their SEs already "
                                  "include the heterogeneity of the studies they pool."
                                  if an.design.row_kind == "published" else ""))
    if an.design.info:
        out.ul(an.design.info)
    for w in an.warnings:
        if w not in out.warnings:
            out.warnings.append(w)


def side_by_side(an, out, L) -> None:
    df = an.to_frame()
    d = df[df["parameter"] == "mu"].copy()
    if not len(d):
        return
    d = _cell_order(an, d)
    d["col"] = d["source"] + ": " + d["method"]
    cols = list(dict.fromkeys(d["col"]))
    rows = []
    for (oc, sg, t), g in d.groupby(["outcome", "subgroup", "time"], sort=False):
        rec = {"outcome": oc, "subgroup": sg, "time": L.time(t)}
        for c in cols:
            m = g[g["col"] == c]
            rec[c] = (L.ci(*m.iloc[0][["estimate", "ci_low", "ci_high"]])
                      + (EXTRAPOLATED if _extrapolated(m.iloc[0]) else "")) if len(m) else ""
        rows.append(rec)
    show = pd.DataFrame(rows)
    for c in ("outcome", "subgroup", "time"):
        if not show[c].astype(bool).any():
            show = show.drop(columns=c)
    out.h("Published vs classical vs Bayesian")
    out.table("side_by_side", df, f"Pooled {L.effect} per cell: estimate [{_lev(an)} "
              f"interval]{' on the ratio scale' if L.ratio else ''}. Classical: confidence "
              "intervals; Bayesian: posterior mean and equal-tailed credible interval. A time "
              "of 'all ... (pooled)' is an estimate across time points."
              + (" EXTRAPOLATION: an average over times at which the subgroup was not observed "
                 "(the model's prediction there enters it)." if any(
                     _extrapolated(r) for _, r in d.iterrows()) else ""),
              show=show, csv=False)
    out.summary = summary_table(an, L, d)


def summary_table(an, L, d: pd.DataFrame) -> pd.DataFrame:
    """One line per cell: published | classical | Bayesian | P(benefit) (the first
    classical and Bayesian method of each cell; the index shows it under the answers)."""
    exc = an.exceedance()
    rows = []
    for (oc, sg, t), g in d.groupby(["outcome", "subgroup", "time"], sort=False):
        rec = {"outcome": oc, "subgroup": sg, "time": L.time(t)}
        pb = ""
        for src in ("published", "classical", "bayesian"):
            m = g[g["source"] == src]
            rec[src] = (L.ci(*m.iloc[0][["estimate", "ci_low", "ci_high"]]) + f" ({m.iloc[0]['method']})"
                        + (EXTRAPOLATED if _extrapolated(m.iloc[0]) else "") if len(m) else "")
            if src == "bayesian" and len(m) and len(exc):
                e = exc[(exc["outcome"] == oc) & (exc["subgroup"] == sg) & (exc["time"] == t)
                        & m.iloc[0]["method"].startswith(tuple(exc["method"]))]
                pb = prob(e["p_benefit"].iloc[0]) if len(e) else ""
        rec[f"P({L.benefit(an.sign(oc))})"] = pb
        rows.append(rec)
    out = pd.DataFrame(rows)
    for c in ("outcome", "subgroup", "published", "classical"):
        if c in out and not out[c].astype(bool).any():
            out = out.drop(columns=c)
    return out


def forest(an, out, L) -> None:
    tf = "exp" if L.ratio else "none"
    lev = an.ci_prob
    z = float(__import__("scipy.stats", fromlist=["norm"]).norm.ppf(0.5 + lev / 2))
    res = an.to_frame()
    for oc in (an.design.levels("outcome") or [""]):
        sub = an.design if not oc else an.design.subset(outcome=oc)
        r = sub.rows
        panel = [L.cell(g if an.design.has("subgroup") else "", t) for g, t in
                 zip(r["subgroup"], r["time"])]
        st = pd.DataFrame({"panel": panel, "study": [s or "published" for s in r["study"]],
                           "estimate": r["yi"], "ci_low": r["yi"] - z * r["sei"],
                           "ci_high": r["yi"] + z * r["sei"]})
        if an.design.row_kind == "published":
            st = st.iloc[:0]
        rr = _cell_order(an, res[(res["parameter"] == "mu")
                                 & (res["outcome"] == (oc or res["outcome"]))])
        pooled = pd.DataFrame([{"panel": L.cell(x.subgroup if an.design.has("subgroup") else "",
                                                x.time),
                                "source": x.source, "label": f"{x.source}: {x.method}",
                                "estimate": x.estimate, "ci_low": x.ci_low,
                                "ci_high": x.ci_high} for x in rr.itertuples()])
        if not len(pooled):
            continue
        order = list(dict.fromkeys(list(st["panel"]) + list(pooled["panel"])))
        name = "forest" + (f"_{_safe(oc)}" if oc else "")
        out.figure(name, plots.plot_forest(st, pooled, panel_order=order, transform=tf,
                                           xlabel=f"{oc + ': ' if oc else ''}{L.effect}"),
                   f"{oc + ': ' if oc else ''}per-study effects (black) and pooled estimates "
                   f"(published grey, classical black, Bayesian blue), {_lev(an)} intervals.")


def _safe(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def tests(an, out, L) -> None:
    if not len(an.tests):
        return
    out.h("Test for subgroup differences")
    t = an.tests.copy()
    t["time"] = [L.time(x) for x in t["time"]]
    out.table("subgroup_tests", an.tests, "Chi² test that the subgroups' pooled effects are "
              "equal (RevMan's test for subgroup differences; subgroups are independent "
              "patients).", show=t)


def contrasts(an, out, L) -> None:
    con = an.contrasts()
    cl = an.classical_contrasts()
    if not len(con) and not len(cl):
        return
    out.h("Subgroup contrasts")
    rows = []
    for x in cl.itertuples():
        rows.append({"outcome": x.outcome, "contrast": x.subgroup, "time": L.time(x.time),
                     "source": "classical", "method": x.method,
                     "estimate": L.ci(x.estimate, x.ci_low, x.ci_high), "P(first better)": ""})
    for x in con.itertuples():
        rows.append({"outcome": x.outcome, "contrast": x.contrast, "time": L.time(x.time),
                     "source": "bayesian", "method": x.method,
                     "estimate": L.ci(x.estimate, x.ci_low, x.ci_high),
                     "P(first better)": prob(x.p_first_better),
                     "note": ("EXTRAPOLATION: a subgroup not observed at these times"
                              if bool(getattr(x, "extrapolation", False)) else "")})
    if len(con):
        out.tables["contrasts"] = con
    view = pd.DataFrame(rows)
    if "note" in view and not view["note"].astype(bool).any():
        view = view.drop(columns="note")
    priors = "".join(f" {oc + ': ' if oc else ''}{_contrast_prior(an, oc).strip()}"
                     for oc in dict.fromkeys(con["outcome"] if len(con) else [])
                     if _contrast_prior(an, oc))
    out.table("contrast_view", view, f"Difference between the first-named and the second "
              f"subgroup ({_lev(an)} interval) at each time where both are observed, between "
              "the subgroup means, and averaged over the times of the window (marked "
              "EXTRAPOLATION where a subgroup was not observed at some of them); "
              "'P(first better)' is the posterior probability that the first-named subgroup "
              "has the more beneficial effect." + priors, csv=False)


def probabilities(an, out, L) -> None:
    exc = an.exceedance()
    if not len(exc):
        return
    out.tables["probabilities"] = exc
    show = exc.copy()
    show["time"] = [L.time(t) for t in show["time"]]
    for c in [c for c in show.columns if c.startswith("p_")]:
        show[c] = [prob(v) for v in show[c]]
    ren = {"p_benefit": "P(benefit)"}
    for t in an.spec.report.thresholds:
        ren[f"p_beyond_{t:g}"] = f"P(beyond {t:g})"
    show = show.rename(columns=ren)
    for c in ("outcome", "part", "subgroup", "time"):
        if c in show and not show[c].astype(bool).any():
            show = show.drop(columns=c)
    out.h("Probability of benefit")
    out.table("probabilities_view", show, "Posterior probability that the pooled effect is "
              f"on the benefit side ({an.spec.report.direction.replace('_', ' ')}), and beyond "
              "each stated threshold.", csv=False)


def sensitivity(an, out, L) -> None:
    sf = an.sensitivity_frame()
    if not len(sf):
        return
    out.tables["sensitivity"] = sf
    d = _cell_order(an, sf[sf["parameter"] == "mu"])
    setting = d["method"].str.extract(r"\[(.*)\]")[0].fillna(d["method"])
    model = d["method"].str.extract(r"^([^\s\[(]+)")[0].fillna("")
    if model.nunique() > 1:  # settings of different models side by side: name the model
        setting = model + ": " + setting
    show = pd.DataFrame({"outcome": d["outcome"], "cell": [
        L.cell(g if an.design.has("subgroup") else "", t) for g, t in zip(d["subgroup"],
                                                                           d["time"])],
        "setting": setting, L.effect: [L.ci(a, b, c) + (EXTRAPOLATED if _extrapolated(r) else "")
                                       for (a, b, c), (_, r) in zip(
                                           d[["estimate", "ci_low", "ci_high"]].to_numpy(),
                                           d.iterrows())]})
    if not show["outcome"].astype(bool).any():
        show = show.drop(columns="outcome")
    out.h("Sensitivity")
    out.table("sensitivity_view", show, f"Pooled {L.effect} ({_lev(an)} CrI) under each prior "
              "set or setting.", csv=False)
    out.figure("sensitivity", plots.plot_sensitivity(pd.DataFrame({
        "group": show["cell"], "setting": setting, "estimate": d["estimate"],
        "ci_low": d["ci_low"], "ci_high": d["ci_high"]}), transform="exp" if L.ratio else "none",
        xlabel=L.effect), f"Pooled {L.effect} under each setting.")


def diagnostics(an, out, L) -> None:
    rows = []
    for r in an.fits(source="bayesian"):
        line = r.fit.provenance.get("diagnostics")
        if line:
            rows.append({"outcome": r.outcome, "part": r.part, "cell": L.cell(
                r.fit.coords.get("subgroup", "") if an.design.has("subgroup") else "",
                r.fit.coords.get("time", "")), "method": r.fit.method,
                "converged cleanly": "yes" if r.fit.clean else "NO",
                "diagnostics": line})
    if not rows:
        return
    out.h("Sampler diagnostics")
    out.table("diagnostics", pd.DataFrame(rows), "R-hat (should be ≤ 1.01), effective sample "
              "sizes, divergent transitions and energy (E-BFMI) of every MCMC fit; exact engines "
              "need none.")


def audit_section(an, out, L) -> None:
    if an.audit is None or not len(an.audit):
        return
    cols = an.extra.get("audit_columns", ("item", "published", "recomputed", "bayesian",
                                          "bayesian_ci_low", "bayesian_ci_high", "verdict",
                                          "diagnosis"))
    cols = [c for c in cols if c in an.audit.columns]
    out.h("Published-number audit")
    out.table("audit_view", an.audit, an.extra.get(
        "audit_caption", "Printed estimate, CI and P checked against each other; the Bayesian "
                         "estimate of the same cell beside it."), show=an.audit[cols], csv=False)


def methods(an, out, L) -> None:
    from bayesmeta import pipeline

    out.h("Methods")
    d, spec = an.design, an.spec
    lines = [f"Effect: {L.effect} ({d.scale} scale), "
             f"{spec.report.direction.replace('_', ' ')}."]
    cl = an.fits(source="classical")
    if cl:
        meths = sorted({r.fit.method for r in cl})
        lines.append(f"Classical: {', '.join(meths)} per cell"
                     f" ({'Wald z' if spec.classical.test == 'z' else 'Knapp-Hartung t'}"
                     f"{', preset ' + spec.classical.preset if spec.classical.preset else ''}).")
    engines = {"exact": "exact posterior by numerical integration (no sampling)",
               "mcmc": "posterior sampled by MCMC (NUTS)"}
    for name in pipeline.bayes_models(spec):
        entry = registry.MODELS[name]
        lines.append(f"Bayesian: {entry.doc} ({name}), "
                     f"{engines[pipeline.engine_for(spec, name)]}.")
    seen = set()
    for r in an.fits(source="bayesian"):
        pri = r.fit.provenance.get("priors")
        key = (r.fit.method.split(" [")[0], str(pri))
        if pri and key not in seen:
            seen.add(key)
            lines.append(f"{r.fit.method} priors: "
                         + "; ".join(f"{k} ~ {v}" for k, v in dict(pri).items()) + ".")
        for n in r.fit.notes:
            if n not in seen:
                seen.add(n)
                lines.append(n[0].upper() + n[1:] + ("" if n.endswith(".") else "."))
    samp = [r.fit.provenance.get("sampler") for r in an.fits(source="bayesian")
            if r.fit.provenance.get("sampler")]
    if samp:
        s = samp[0]
        lines.append(f"MCMC: {s.get('sampler')} NUTS, {s.get('chains')} chains × "
                     f"{s.get('draws')} draws after {s.get('tune')} tuning steps, target "
                     f"acceptance {s.get('target_accept')}, seeds from {s.get('seed')}.")
    for line in lines:
        out.p(line)
    if spec.report.notes:
        out.p(spec.report.notes)
    provenance_paragraph(spec, out)


def provenance_paragraph(spec, out) -> None:
    """The spec's ``[provenance]``: who wrote it, when and why (page and provenance.json)."""
    prov = spec.provenance
    who = "; ".join(f"{k}: {v}" for k, v in (("author", prov.author), ("date", prov.date))
                    if v)
    if who or prov.rationale:
        out.p("Specification" + (f" ({who})" if who else "") + "."
              + (f" Rationale: {prov.rationale}" if prov.rationale else ""))
    out.provenance.update({k: getattr(prov, k) for k in ("author", "date", "rationale")
                           if getattr(prov, k)})


def model_checks(an, out, L) -> None:
    from bayesmeta.check_sections import correlation_answers, model_checks as render_checks

    correlation_answers(an, out, L)
    render_checks(an, out, L)


SECTIONS = (data_section, side_by_side, forest, tests, contrasts, probabilities, sensitivity,
            model_checks, diagnostics, audit_section, methods)


def render(an, *, fast: bool = False) -> AnalysisOutput:
    """The report page of one analysis."""
    from bayesmeta.audit import frame as audit_frame

    spec = an.spec
    out = AnalysisOutput(name=an.name, title=spec.analysis.title, kind="analysis",
                         description=spec.analysis.description, fast=fast)
    given = (spec.given or {}).get("analysis", ())
    out.priority = float(spec.analysis.priority) if "priority" in given else None
    L = labels_for(an)
    answers(an, out, L)
    for section in SECTIONS:
        section(an, out, L)
    extra_survival(an, out, L)
    out.tables["results"] = an.to_frame()
    out.tables["audit"] = an.audit if an.audit is not None else audit_frame([])
    for r in an.fits(source="bayesian"):
        dt = (getattr(getattr(r.fit, "result", None), "datatree", None)
              or getattr(r.fit, "datatree", None))
        if dt is not None:
            key = "_".join(_safe(x) for x in (r.outcome, r.part, r.fit.model,
                                              r.fit.coords.get("subgroup", ""),
                                              r.fit.coords.get("time", "")) if x)
            out.datatrees[key] = dt
    return out


def extra_survival(an, out, L) -> None:
    """Absolute benefit and a new trial for the published-OR survival model."""
    from bayesmeta.survival_sections import render_survival

    if an.extra.get("survival"):
        render_survival(an, out, L)
