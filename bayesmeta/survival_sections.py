"""Report section for survival models: absolute benefit and what a new trial would show.

Renders from the survival fit's own table (``extra["survival_table"]``: posterior OR per time,
P(OR > 1), P(OR > threshold), the absolute survival gain for the stated control-arm survival
and its NNT) and the sensitivity fits (rho, prior sets).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from bayesmeta import plots
from bayesmeta.labels import prob

Z975 = float(stats.norm.ppf(0.975))


def new_trial_rows(post_logor: np.ndarray, post_new: np.ndarray, p0: float, ns, time: str):
    """What a new trial of n patients per arm would show (normal approximations, stated).

    * assurance: P(the new trial's own 95% CI excludes OR = 1 in favour of the treatment),
      averaging the power over the predictive distribution of its true log OR;
    * tipping point: the new trial's observed OR below which the updated posterior (current
      posterior, normal approximation, combined with the trial's estimate) gives
      P(OR > 1) < 0.5.
    """
    m, sd = float(np.mean(post_logor)), float(np.std(post_logor))
    rows = []
    for n in ns:
        odds0 = p0 / (1 - p0)
        orr = math.exp(m)
        p1 = orr * odds0 / (1 + orr * odds0)
        se = math.sqrt(1 / (n * p1 * (1 - p1)) + 1 / (n * p0 * (1 - p0)))
        power = float(np.mean(stats.norm.sf(Z975 - post_new / se)))
        y_tip = -m * se ** 2 / sd ** 2
        rows.append({"time": time, "n_per_arm": int(n), "control_survival": p0,
                     "trial_se_logor": se, "assurance_significant_benefit": power,
                     "tipping_or": math.exp(y_tip)})
    return rows


def render_survival(an, out, L) -> None:
    for coords, main in an.extra.get("survival_main", []):
        if "survival_table" in main.extra:
            _render_one(an, out, L, coords, main)


def _render_one(an, out, L, coords, main) -> None:
    sg = coords.get("subgroup", "")
    tag = f"{sg}: " if sg else ""
    rep = an.spec.report
    p0 = an.extra.get("survival_p0")
    rho0 = an.extra.get("survival_rho0")
    tab = main.extra["survival_table"]
    pooled = tab[tab["kind"] == "pooled"].reset_index(drop=True)
    thr = float(rep.thresholds[0]) if rep.thresholds else 1.5
    key = "" if not sg else "_" + "".join(c if c.isalnum() else "-" for c in sg.lower())
    out.tables["survival_table" + key] = tab
    sens = []
    for r in an.fits(role="sensitivity"):
        if r.fit.coords.get("subgroup", "") != sg:
            continue
        res = r.fit.result
        if "survival_table" in getattr(res, "extra", {}):
            t_ = res.extra["survival_table"]
            t_ = t_[t_["kind"] == "pooled"].copy()
            t_.insert(0, "setting", r.setting)
            t_.insert(1, "clean", res.clean)
            sens.append(t_)
    sens_tab = pd.concat(sens, ignore_index=True) if sens else None
    post = main.datatree["posterior"]
    nt = []
    for t in pooled["time"]:
        d = np.asarray(post["log_or"].sel(time=t).values, float).ravel()
        dn = np.asarray(post["log_or_new"].sel(time=t).values, float).ravel()
        nt += new_trial_rows(d, dn, p0, rep.new_trial_n or (100,), t)
    nt_tab = pd.DataFrame(nt)
    out.tables["new_trial" + key] = nt_tab
    out.answers.append(
        f"{tag}For a control-arm survival of {p0:.0%} (see Methods), absolute survival gain "
        "(median, 95% CrI) and NNT: " + "; ".join(
            f"{L.time(r['time'])} {100 * r['survival_diff_median']:.1f} points "
            f"[{100 * r['survival_diff_ci_low']:.1f}, {100 * r['survival_diff_ci_high']:.1f}], "
            f"NNT {r['nnt']:.1f}" for _, r in pooled.iterrows()) + ".")
    if sens_tab is not None:
        out.tables["sensitivity_survival" + key] = sens_tab
        out.answers.append(
            f"{tag}Sensitivity: P(OR > 1) ranges over rho and prior sets from " + "; ".join(
                f"{L.time(t)} {prob(g['p_or_gt_1'].min())}–{prob(g['p_or_gt_1'].max())}"
                for t, g in sens_tab.groupby("time", sort=False)) + ".")
    if len(nt_tab):
        big = nt_tab[nt_tab["n_per_arm"] == nt_tab["n_per_arm"].max()]
        out.answers.append(
            f"{tag}A new trial with {int(big['n_per_arm'].iloc[0])} patients per arm: predictive "
            "probability that it shows a significant benefit " + "; ".join(
                f"{L.time(r['time'])} {r['assurance_significant_benefit']:.2f}"
                for _, r in big.iterrows())
            + "; it would overturn the current conclusion (P(OR > 1) below 0.5) if it "
              "observed an OR below " + "; ".join(
                  f"{L.time(r['time'])} {r['tipping_or']:.2f}" for _, r in big.iterrows())
            + ".")
    out.h(f"{tag}Absolute benefit" if tag else "Absolute benefit")
    view = pd.DataFrame({
        "time": [L.time(t) for t in pooled["time"]],
        "posterior OR [95% CrI]": [f"{a:.2f} [{b:.2f}, {c:.2f}]" for a, b, c in
                                   pooled[["or_median", "or_ci_low", "or_ci_high"]].to_numpy()],
        "P(OR > 1)": [prob(x) for x in pooled["p_or_gt_1"]],
        f"P(OR > {thr:g})": [prob(x) for x in pooled["p_or_gt_threshold"]],
        "survival gain (points)": [f"{100 * a:.1f} [{100 * b:.1f}, {100 * c:.1f}]" for a, b, c in
                                   pooled[["survival_diff_median", "survival_diff_ci_low",
                                           "survival_diff_ci_high"]].to_numpy()],
        "NNT": pooled["nnt"]})
    out.table("survival_view" + key, view, f"Control-arm survival {p0:.0%}; rho = {rho0:g}.",
              csv=False)
    post_df = pd.DataFrame({"time": pooled["time"].astype(float),
                            "estimate": np.log(pooled["or_median"]),
                            "ci_low": np.log(pooled["or_ci_low"]),
                            "ci_high": np.log(pooled["or_ci_high"])})
    pub = an.published
    pubd = None
    if pub is not None and len(pub):
        pub = pub[pub["subgroup"] == sg] if sg else pub
        pubd = pd.DataFrame({"time": pub["time"].astype(float), "estimate": pub["estimate"],
                             "ci_low": pub["ci_low"], "ci_high": pub["ci_high"]})
    probd = pd.concat([pd.DataFrame({"time": pooled["time"].astype(float), "label": "P(OR > 1)",
                                     "value": pooled["p_or_gt_1"]}),
                       pd.DataFrame({"time": pooled["time"].astype(float),
                                     "label": f"P(OR > {thr:g})",
                                     "value": pooled["p_or_gt_threshold"]})])
    out.figure("survival_over_time" + key, plots.plot_over_time(
        post_df, published=pubd, prob=probd, transform="exp", threshold=thr,
        ylabel="survival OR"),
        "Posterior survival OR over time (median, 95% CrI band) beside the published OR, and "
        "the posterior probabilities of benefit.")
    if len(nt_tab):
        out.h(f"{tag}What would a new trial need to show?")
        out.table("new_trial_view" + key, nt_tab, "Predictive: assurance = probability that a new "
                  "trial with n patients per arm finds a significant benefit (two-sided 5%); "
                  "tipping OR = the observed OR below which the combined evidence would make "
                  "benefit less likely than not. Normal approximations on the log-OR scale.",
                  csv=False)
    out.p(f"Absolute benefit: control-arm survival {p0:.0%}. Source: "
          f"{rep.control_survival_source} The survival with treatment is the control odds "
          "times the OR; the gain is the difference, NNT its reciprocal.")
