"""Plain-text summary of an analysis, laid out like metafor's printout (for ``print(an)``)."""

from __future__ import annotations

import pandas as pd

from bayesmeta.labels import Labels, prob


def analysis_text(an) -> str:
    """A header (design, models), one block per outcome with every pooled effect at the
    analysis's level on the natural scale, P(benefit) for Bayesian rows, then warnings."""
    L = Labels(measure=an.design.measure, time_unit=an.spec.data.time_unit,
               direction=an.spec.report.direction)
    lev = f"{100 * an.ci_prob:g}%"
    lines = [f"Meta-analysis '{an.name}': {an.design.describe()}",
             f"Effect {L.effect}" + (" (shown as a ratio; analysed on the log scale)"
                                     if L.ratio else "")
             + f"; {an.spec.report.direction.replace('_', ' ')}; intervals {lev}.", ""]
    df = an.to_frame()
    exc = an.exceedance()
    d = df[df["parameter"].isin(["mu", "contrast"])]
    for oc, g in d.groupby("outcome", sort=False):
        if oc:
            lines.append(f"== {oc} ==")
        rows = []
        for r in g.itertuples():
            pb = ""
            if r.source == "bayesian" and len(exc) and r.parameter == "mu":
                m = exc[(exc["outcome"] == oc) & (exc["time"] == r.time)
                        & (exc["subgroup"] == r.subgroup)
                        & exc["method"].apply(lambda x: r.method.startswith(x))]
                pb = prob(m["p_benefit"].iloc[0]) if len(m) else ""
            rows.append({"source": r.source, "method": r.method, "parameter": r.parameter,
                         "subgroup": r.subgroup, "time": L.time(r.time),
                         "estimate [CI]": L.ci(r.estimate, r.ci_low, r.ci_high, 3),
                         "P(benefit)": pb})
        t = pd.DataFrame(rows)
        for c in ("subgroup", "time", "P(benefit)"):
            if not t[c].astype(bool).any():
                t = t.drop(columns=c)
        with pd.option_context("display.width", 140, "display.max_colwidth", 60):
            lines.append(t.to_string(index=False))
        lines.append("")
    if len(an.tests):
        for r in an.tests.itertuples():
            lines.append(f"Test for subgroup differences ({r.by}{', ' + L.time(r.time) if r.time else ''}"
                         f"): Q = {r.q:.2f}, df = {r.df}, p = {r.p:.4g}")
        lines.append("")
    for w in an.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines).rstrip() + "\n"
