"""Report section: workflow checks of the Bayesian fits (:mod:`bayesmeta.workflow`).

For every nested fit: prior vs posterior per parameter (contraction; "decided by the prior"
below :data:`bayesmeta.workflow.CONTRACTION_MIN`; prior-data conflict when the posterior median
sits in the far tail of its prior), the rows outside their prior or posterior predictive
interval, and the leave-one-out comparison against the simpler models. NNHM cells add their
prior vs posterior table. Every flag is also an answer line, next to the answers it qualifies.
"""

from __future__ import annotations

import pandas as pd

from bayesmeta.labels import Labels
from bayesmeta.report import AnalysisOutput
from bayesmeta.workflow import CONFLICT_TAIL, CONTRACTION_MIN


def _where(outcome, part, an) -> str:
    bits = [x for x in (outcome, part if part and part != an.design.total_level else "") if x]
    return (", ".join(bits) + ": ") if bits else ""


def _name(key, outcome, part) -> str:
    from bayesmeta.sections import _safe

    return "_".join(_safe(x) for x in ("checks", key, outcome, part) if x)


def _flag(r) -> str:
    out = []
    if r["decided_by_prior"]:
        out.append(f"decided by the prior (contraction {r['contraction']:.2f})")
    if r["prior_data_conflict"]:
        out.append(f"prior-data conflict (prior CDF at the posterior median "
                   f"{r['prior_cdf_at_median']:.2g})")
    return "; ".join(out)


def _pp_view(t: pd.DataFrame, L: Labels) -> pd.DataFrame:
    cols = [c for c in ("priors", "subgroup", "time") if c in t and t[c].astype(bool).any()]
    v = t[cols + ["parameter", "prior"]].copy()
    if "time" in v:
        v["time"] = [L.time(str(x)).replace(" ", "\u00a0") if str(x) else ""
                     for x in v["time"]]
    # prior and posterior moments share one scale: the parameter's log where the prior is set
    # on it (e.g. a log-t prior of tau²), so both say so
    def on(sc, p):
        return f" on log {p}" if sc == "log" else ""

    v["prior mean (SD)"] = [f"{m:.3g} ({s:.3g}){on(sc, p)}" for m, s, sc, p in
                            t[["prior_mean", "prior_sd", "scale", "parameter"]].to_numpy()]
    v["posterior mean (SD)"] = [f"{m:.3g} ({s:.3g}){on(sc, p)}" for m, s, sc, p in
                                t[["post_mean", "post_sd", "scale", "parameter"]].to_numpy()]
    v["contraction"] = t["contraction"].to_numpy()
    v["prior CDF at posterior median"] = t["prior_cdf_at_median"].to_numpy()
    v["flag"] = [_flag(r) for _, r in t.iterrows()]
    return v if v["flag"].astype(bool).any() else v.drop(columns="flag")


def model_checks(an, out: AnalysisOutput, L: Labels) -> None:
    if not an.checks:
        return
    out.h("Model checks")
    out.p(f"Contraction is 1 − posterior variance / prior variance: below {CONTRACTION_MIN:g} "
          "the data have barely moved the prior and the parameter is decided by the prior. A "
          f"prior-data conflict is a posterior median beyond the prior's {CONFLICT_TAIL:g} or "
          f"{1 - CONFLICT_TAIL:g} quantile. Predictive checks flag a row outside the central "
          "99% of its prior (conflict) or posterior (outlying) predictive distribution. The "
          "leave-one-out tables compare the expected log predictive density (elpd) of the "
          "fitted model with the simpler models it generalises: higher is better, and a "
          "difference within about 2 SE is not a preference.")
    for (outcome, part), checks in an.checks.items():
        where = _where(outcome, part, an)
        for key, title in (("prior_posterior", "prior vs posterior"),
                           ("nnhm_prior_posterior", "prior vs posterior, per cell")):
            t = checks.get(key)
            if t is None or not len(t):
                continue
            name = _name(key, outcome, part)
            out.tables[name] = t
            out.table(name + "_view", _pp_view(t, L), f"{where}{title}.", csv=False)
            for _, r in t.iterrows():
                f = _flag(r)
                if f and r.get("priors", "main") == "main":
                    cell = L.cell(r.get("subgroup", ""), r.get("time", ""))
                    out.answers.append(f"{where}Check: {r['parameter']}"
                                       f"{' (' + cell + ')' if cell != 'overall' else ''} is "
                                       f"{f}.")
        for key, label in (("prior_predictive", "prior-data conflict"),
                           ("posterior_predictive", "outlying")):
            t = checks.get(key)
            if t is None:
                continue
            out.tables[_name(key, outcome, part)] = t
            bad = t[t["flag"] != ""] if len(t) else t
            if len(bad):
                rows = "; ".join(f"{r.study or 'pooled'} {L.time(str(r.time))}"
                                 for r in bad.itertuples())
                out.answers.append(f"{where}Check: {len(bad)} of {len(t)} rows flagged "
                                   f"{label} ({rows}).")
            elif len(t):
                out.p(f"{where}{key.replace('_', ' ')}: all {len(t)} rows inside their central "
                      "99% interval.")
            elif t.attrs.get("note"):
                out.p(f"{where}{key.replace('_', ' ')}: {t.attrs['note']}.")
        loo = checks.get("loo")
        if loo is not None and len(loo):
            out.tables[_name("loo", outcome, part)] = loo
            out.table(_name("loo", outcome, part) + "_view", loo,
                      f"{where}leave-one-out comparison (elpd).", csv=False)


def correlation_answers(an, out: AnalysisOutput, L: Labels) -> None:
    """One answer line per nested fit: the within-study correlation assumed and the
    across-time estimand (and subgroup contrasts) at every ``r`` of the sensitivity grid."""
    sens = [r for r in an.fits(role="sensitivity") if r.setting.startswith("r = ")]
    if not sens:
        return
    lev = f"{100 * an.ci_prob:g}%"
    for main in an.fits(source="bayesian", model="nested"):
        mine = [r for r in sens if (r.outcome, r.part) == (main.outcome, main.part)]
        if not mine:
            continue
        assumed = next((n for n in main.fit.notes if n.startswith("within-study sampling "
                                                                   "correlation")), "")
        pieces = []
        for r in mine:
            s = r.fit.summary(an.ci_prob)
            for p, v in s.iterrows():
                t = p.get("time")
                if p.name in ("mu", "contrast") and t.startswith("avg(") and \
                        not str(v.get("note", "")).startswith("extrapolation"):
                    g = p.get("subgroup")
                    pieces.append((p.name, g, t, r.setting,
                                   L.ci(v["estimate"], v["ci_low"], v["ci_high"])))
        if not pieces:
            continue
        by = {}
        for name, g, t, setting, txt in pieces:
            by.setdefault((name, g, t), []).append(f"{setting}: {txt}")
        where = _where(main.outcome, main.part, an)
        for (name, g, t), items in by.items():
            what = (f"contrast {g.replace(' - ', ' − ')}" if name == "contrast"
                    else (g + ", " if g else "") + L.effect)
            r_txt = assumed.split("(")[0].replace("within-study sampling correlation", "")
            out.answers.append(f"{where}Within-study correlation of sampling errors across "
                               f"times (assumed {r_txt.strip() or 'as in the methods'}; "
                               "refitted at each r): "
                               f"{what}, {L.time(t)} ({lev} CrI) " + "; ".join(items) + ".")
