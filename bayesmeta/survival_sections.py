"""Report section of the published-OR survival model: how certain the benefit is.

Renders a :class:`bayesmeta.survival_quantities.SurvivalAnswer` (computed, never here): the
posterior survival OR per time with P(benefit) and P(OR > threshold), each with its range over
every sensitivity axis; the absolute survival gain and NNT (Altman's form) for the stated
control-arm survival; what a new trial would show; the other reading of the ORs.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bayesmeta import plots
from bayesmeta.fmt import nnt_altman
from bayesmeta.labels import prob

AXIS_WORDS = {"correlation": "correlation structure", "rho": "within-source correlation rho",
              "prior": "prior set", "bias": "bias adjustment"}


def render_survival(an, out, L) -> None:
    for sa in an.extra.get("survival", []):
        _render_one(an, out, L, sa)


def _rng(r) -> str:
    lo, hi = prob(r.low), prob(r.high)
    return lo if lo == hi else f"{lo} to {hi}"


def _render_one(an, out, L, sa) -> None:
    rep = an.spec.report
    sg = sa.coords.get("subgroup", "")
    tag = f"{sg}: " if sg else ""
    key = "" if not sg else "_" + "".join(c if c.isalnum() else "-" for c in sg.lower())
    lev = f"{100 * an.ci_prob:g}%"
    rg = sa.ranges
    allr = rg[rg["over"] == "all"]
    thr = sa.thresholds
    main = sa.grid
    m = main
    for ax, v in sa.main.items():
        m = m[m[ax] == v]
    # -- answers ------------------------------------------------------------------------
    out.answers.append(
        f"{tag}Probability of any survival benefit, P(OR > 1), with its range over "
        + ", ".join(AXIS_WORDS[a] for a in sa.axes) + ": " + "; ".join(
            f"{L.time(r.time)} {prob(r.main)} ({_rng(r)})"
            for r in allr[allr["quantity"] == "p_benefit"].itertuples()) + ".")
    for x in thr:
        q = allr[allr["quantity"] == f"p_or_gt_{x:g}"]
        out.answers.append(
            f"{tag}Of a clinically relevant benefit, P(OR > {x:g}): " + "; ".join(
                f"{L.time(r.time)} {prob(r.main)} ({_rng(r)})" for r in q.itertuples())
            + ".")
    if sa.absolute is not None and len(sa.absolute):
        a = sa.absolute
        mcid = float(rep.mcid)
        src = str(rep.baseline_source or "").strip()
        out.answers.append(
            f"{tag}Absolute survival gain for the stated control-arm survival (percentage "
            f"points, median [{lev} CrI]) and NNT: " + "; ".join(
                f"{L.time(r.time)}: control {r.baseline}, gain {100 * r.gain_median:.1f} "
                f"[{100 * r.gain_low:.1f}, {100 * r.gain_high:.1f}], "
                f"{nnt_altman(r.gain_low, r.gain_high, r.gain_median)}"
                + (f", P(gain > {100 * mcid:g} points) {prob(r.p_mcid)}" if mcid else "")
                for r in a.itertuples()) + ". The control-arm survival is an input, not "
            "estimated from these ORs" + (f"; its stated source: {src}" if src else
                                          " (no source stated)")
            + ("" if src.endswith(".") else "."))
    else:
        out.answers.append(
            f"{tag}No absolute survival gain or NNT: they need the control-arm survival at "
            "each time point with its uncertainty ([report] baseline, e.g. "
            "{ 24 = \"30/54\" } or { 4 = \"0.8 (0.65-0.9)\" }, and baseline_source).")
    if sa.new_trial is not None and len(sa.new_trial):
        nt = sa.new_trial
        big = nt[nt["n_per_arm"] == nt["n_per_arm"].max()]
        n = int(big["n_per_arm"].iloc[0])
        parts = []
        if len(big) > 1 and not big["tipping_found"].astype(bool).any():
            out.answers.append(
                f"{tag}A new trial with {n} patients per arm (between-trial heterogeneity "
                "included): assurance " + "; ".join(
                    f"{L.time(r.time)} {prob(r.assurance)}" for r in big.itertuples())
                + ". No result of such a trial would make benefit less likely than not at any "
                "of these times (lowest updated P(OR > 1): " + "; ".join(
                    f"{L.time(r.time)} {prob(r.p_benefit_extreme)}" for r in big.itertuples())
                + "): an extreme result is partly read as between-trial heterogeneity.")
            big = big.iloc[:0]
        for r in big.itertuples():
            tip = (f"it would make benefit less likely than not if it observed an OR below "
                   f"{math.exp(r.tipping_y):.2f} (predictive probability "
                   f"{prob(r.p_beyond_tipping)})" if r.tipping_found else
                   "no result of such a trial would make benefit less likely than not "
                   f"(the lowest updated P(OR > 1) is {prob(r.p_benefit_extreme)}: an extreme "
                   "result is partly read as between-trial heterogeneity)")
            parts.append(f"{L.time(r.time)}: assurance {prob(r.assurance)}; {tip}")
        if parts:
            out.answers.append(f"{tag}A new trial with {n} patients per arm (between-trial "
                               "heterogeneity included): " + "; ".join(parts) + ".")
    if sa.other is not None and len(sa.other):
        out.answers.append(
            f"{tag}Reading: these ORs are read as odds ratios of "
            f"{'death' if rep.events == 'deaths' else 'survival'}; read the other way, "
            "P(survival benefit) would be " + "; ".join(
                f"{L.time(r.time)} {prob(r.p_benefit)}" for r in sa.other.itertuples())
            + ".")
    # -- page ---------------------------------------------------------------------------
    out.h(f"{tag}How certain is the survival benefit?")
    view = pd.DataFrame({
        "time": [L.time(t) for t in m["time"]],
        f"survival OR (median [{lev} CrI])": [
            _or_ci(sa.fit, t, an.ci_prob) for t in m["time"]],
        "P(OR > 1)": [prob(v) for v in m["p_benefit"]],
        **{f"P(OR > {x:g})": [prob(v) for v in m[f"p_or_gt_{x:g}"]] for x in thr}})
    out.table("survival_view" + key, main, "The main analysis: "
              + _setting_words(sa.main) + ".", show=view)
    rshow = rg.assign(time=[L.time(t) for t in rg["time"]],
                      over=[AXIS_WORDS.get(o, "every axis") for o in rg["over"]],
                      quantity=[_qname(q) for q in rg["quantity"]],
                      main=[prob(v) for v in rg["main"]], low=[prob(v) for v in rg["low"]],
                      high=[prob(v) for v in rg["high"]])
    out.table("survival_ranges" + key, rg, "Each probability under the main setting and its "
              "lowest and highest value over every sensitivity axis together and over each "
              "alone.", show=rshow[["time", "quantity", "main", "over", "low", "high",
                                    "n_settings"]])
    if sa.absolute is not None and len(sa.absolute):
        a = sa.absolute
        show = pd.DataFrame({
            "time": [L.time(t) for t in a["time"]],
            "control survival (stated input)": a["baseline"],
            f"survival gain, points [{lev} CrI]": [
                f"{100 * r.gain_median:.1f} [{100 * r.gain_low:.1f}, {100 * r.gain_high:.1f}]"
                for r in a.itertuples()],
            "P(gain > 0)": [prob(v) for v in a["p_benefit"]],
            "NNT": [nnt_altman(r.gain_low, r.gain_high, r.gain_median) for r in a.itertuples()]})
        if float(rep.mcid):
            show[f"P(gain > {100 * float(rep.mcid):g} points)"] = [prob(v) for v in a["p_mcid"]]
        out.table("survival_absolute" + key, a, "Absolute survival gain (treatment minus "
                  "control survival) combining the posterior OR with the stated control-arm "
                  f"survival and its uncertainty. Source: {rep.baseline_source}", show=show)
    if sa.new_trial is not None and len(sa.new_trial):
        nt = sa.new_trial
        show = pd.DataFrame({
            "time": [L.time(t) for t in nt["time"]], "patients per arm": nt["n_per_arm"],
            "assurance": [prob(v) for v in nt["assurance"]],
            "tipping OR": [f"{math.exp(r.tipping_y):.2f}" if r.tipping_found else
                           "not reachable" for r in nt.itertuples()],
            "lowest updated P(OR > 1)": [prob(v) for v in nt["p_benefit_extreme"]]})
        out.table("new_trial" + key, nt, "What a new trial would show, from one predictive "
                  "distribution that includes the between-trial SD (tau_new): assurance = "
                  "probability that its own 95% CI excludes OR = 1 in favour of the treatment; "
                  "tipping OR = the observed OR at which the updated P(OR > 1) falls to 0.5.",
                  show=show)
    post = pd.DataFrame([{"time": float(t), **_lor(sa.fit, t, an.ci_prob)} for t in sa.times])
    pub = an.published
    pubd = None
    if pub is not None and len(pub):
        pub = pub[pub["subgroup"] == sg] if sg else pub
        pubd = pd.DataFrame({"time": pub["time"].astype(float), "estimate": pub["estimate"],
                             "ci_low": pub["ci_low"], "ci_high": pub["ci_high"]})
    probd = pd.concat([pd.DataFrame({"time": m["time"].astype(float), "label": "P(OR > 1)",
                                     "value": m["p_benefit"].to_numpy()})]
                      + [pd.DataFrame({"time": m["time"].astype(float),
                                       "label": f"P(OR > {x:g})",
                                       "value": m[f"p_or_gt_{x:g}"].to_numpy()}) for x in thr])
    out.figure("survival_over_time" + key, plots.plot_over_time(
        post, published=pubd, prob=probd, transform="exp", threshold=thr[0],
        ylabel="survival OR", xlabel=L.time_unit + "s" if L.time_unit else "time"),
        f"Posterior survival OR over time (median, {lev} CrI band) beside the published OR, "
        "and the posterior probabilities of benefit.")
    for n in sa.notes:
        out.p(n[0].upper() + n[1:] + ("" if n.endswith(".") else "."))


def _setting_words(s: dict) -> str:
    rho = "rho integrated over its prior" if s["rho"] == "prior" else f"rho = {s['rho']}"
    return (f"{s['correlation']} correlation over time, {rho}, "
            f"{'default priors' if s['prior'] == 'default' else 'prior set ' + s['prior']}, "
            f"{'no bias adjustment' if s['bias'] == 'none' else s['bias']}")


def _qname(q: str) -> str:
    return "P(OR > 1)" if q == "p_benefit" else f"P(OR > {q.split('_gt_')[1]})"


def _lor(fit, t, level) -> dict:
    from bayesmeta.fits import Param

    s = fit.summary(level).loc[Param("log_or", time=t)]
    return {"estimate": s["median"], "ci_low": s["ci_low"], "ci_high": s["ci_high"]}


def _or_ci(fit, t, level) -> str:
    d = _lor(fit, t, level)
    return f"{math.exp(d['estimate']):.2f} [{math.exp(d['ci_low']):.2f}, " \
           f"{math.exp(d['ci_high']):.2f}]"
