"""Run analysis specs: one function per analysis ``kind``, then the report.

:func:`run` validates every spec first (nothing runs if one is invalid), runs each analysis
through its kind function (:data:`KINDS`), collects the schema tables, the audit and the figures
into :class:`bayesmeta.report.AnalysisOutput` objects and writes the report atomically.

Kinds
-----
``fig3_meld``           2014 Figure 3: RevMan 5 IV-FE by week + overall + subgroup test beside the
                        printed numbers; exact NNHM per week; nested MCMC model (study effect
                        shared across weeks) with its classical twin (two-level REML)
``one_arm``             single-arm change from baseline (MC), DL random effects per time point
                        beside the published one-arm table; exact NNHM per time point
``survival_published``  survival ORs over time from published OR/CI with correlation rho;
                        P(OR > 1), P(OR > threshold), absolute gain and NNT, predictive
``nested_published``    published pooled MDs by outcome x week x subgroup through the nested model
``complications``       single published ORs re-analysed (conjugate normal on log OR)
``generic``             any study-level dataset: classical + exact NNHM + prior sensitivity
``simulation``          operating characteristics of the intervals (``bayesmeta.simulate``,
                        in-process): coverage/width/bias with MC SEs, figure, answer lines

Same seed → identical numbers: the exact engine and the classical engine are deterministic, MCMC
fits get seeds derived from the spec seed (``seed + i`` for the i-th fit of an analysis).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

from bayesmeta import audit as _audit
from bayesmeta import plots, results
from bayesmeta.exceptions import BayesMetaError, EstimationError, SpecError
from bayesmeta.report import AnalysisOutput, prerender, write_report
from bayesmeta.spec import AnalysisSpec, expand_spec_args, load_spec, read_data

Z975 = float(stats.norm.ppf(0.975))


# --------------------------------------------------------------------------------------------
# context
# --------------------------------------------------------------------------------------------
@dataclass
class RunContext:
    """Run-wide settings: --fast, --seed override and the progress callback."""

    fast: bool = False
    seed: int | None = None
    progress: Callable[[str], None] = lambda msg: None
    verbose: bool = False  # a worker process prints its own progress on stderr

    def seed_for(self, spec: AnalysisSpec) -> int:
        return int(self.seed if self.seed is not None else spec.sampling.seed)

    def sampling(self, spec: AnalysisSpec, offset: int = 0) -> dict:
        """Keyword arguments for ``bayesmeta.mcmc`` (fast: few draws, 2 chains, pymc)."""
        s = spec.sampling
        kw = dict(draws=int(s.draws), tune=int(s.tune), chains=int(s.chains),
                  target_accept=float(s.target_accept), sampler=s.sampler,
                  seed=(self.seed_for(spec) + offset) % 2**32)
        if self.fast:  # pymc's sampler compiles in ~1 s vs nutpie's 5-8 s (stack-notes)
            kw.update(draws=int(s.fast_draws), tune=int(s.fast_tune), chains=2, sampler="pymc")
        return kw


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _published_table(spec: AnalysisSpec) -> pd.DataFrame:
    """The bundled dataset of published numbers a spec audits against (``data.published``),
    through :func:`bayesmeta.datasets.load_dataset`: SHA-256 and declared column types checked."""
    from bayesmeta.datasets import load_dataset

    df = load_dataset(spec.data.published)
    for c in df.columns:  # optional integer columns with blanks: float NaN, as the audit expects
        if isinstance(df[c].dtype, pd.Int64Dtype) and df[c].isna().any():
            df[c] = df[c].astype(float)
    return df


def _dataset_frame(spec: AnalysisSpec) -> pd.DataFrame:
    """The spec's data: a user file read and validated by ``bayesmeta.io`` (via
    :func:`bayesmeta.spec.read_data`, errors name file, row and column), or a bundled dataset."""
    return read_data(spec)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _fmt_ci(est, lo, hi, transform="none", d=2) -> str:
    if transform == "exp":
        est, lo, hi = math.exp(est), math.exp(lo), math.exp(hi)
    if not all(np.isfinite([est, lo, hi])):
        return ""
    return f"{est:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"


def _with(df: pd.DataFrame, **cols) -> pd.DataFrame:
    df = df.copy()
    for k, v in cols.items():
        df[k] = v
    return results.check_frame(df)


def _priors_for(spec: AnalysisSpec, measure: str, data) -> tuple:
    """(mu_prior, tau_prior, sentence): spec strings, else the measure's defaults with reasons."""
    from bayesmeta import priors as P

    if spec.bayes.mu_prior:
        mu = P.parse_prior(spec.bayes.mu_prior, kind="mu")
        mu_why = f"mu ~ {mu} (set in the spec)"
    else:
        mu, mu_why = P.default_mu_prior(measure, data)
    if spec.bayes.tau_prior:
        tau = P.parse_prior(spec.bayes.tau_prior, kind="tau")
        tau_why = f"tau ~ {tau} (set in the spec)"
        src = getattr(tau, "source", "")
        if src:
            tau_why += f": {src}"
    else:
        tau, tau_why = P.default_tau_prior(measure, data)
        tau_why = f"tau ~ {tau}: {tau_why}"
    return mu, tau, f"{mu_why}. {tau_why}."


def _prior_sets(spec: AnalysisSpec, measure: str, data, benefit: int):
    from bayesmeta import priors as P

    if not spec.sensitivity.prior_sets:
        return {}
    sets = P.prior_sets(measure, data, benefit=benefit)
    out = {name: sets[name] for name in spec.sensitivity.prior_sets if name in sets}
    for text in spec.sensitivity.tau_priors:
        tau = P.parse_prior(text, kind="tau")
        out[f"tau ~ {tau}"] = (sets["weakly_informative"][0], tau)
    return out


def _benefit(spec: AnalysisSpec, outcome: str = "") -> int:
    lower = spec.report.direction == "lower_is_better"
    if outcome and outcome in spec.report.reversed_outcomes:
        lower = not lower
    return -1 if lower else 1


def _exact(y, s, mu, tau, labels, measure, note=""):
    from bayesmeta.exact import fit_exact

    return fit_exact(np.asarray(y, float), np.asarray(s, float), tau_prior=tau, mu_prior=mu,
                     labels=list(labels), measure=measure, prior_note=note)


def _exact_frame(res, *, analysis, outcome, time="", subgroup="") -> pd.DataFrame:
    return _with(res.to_frame(analysis=analysis, outcome=outcome), time=time, subgroup=subgroup)


def _tau_curves(res, panel: str, upper: float | None = None) -> pd.DataFrame:
    hi = upper or max(3 * float(res.tau["upper"]), 1e-3)
    grid = np.linspace(1e-6, hi, 240)
    prior = np.exp(res.tau_prior.logpdf_tau(grid))
    post = res.density("tau", grid)
    return pd.DataFrame({"panel": panel, "tau": grid, "prior": prior, "posterior": post})


def _sens_rows(sets, y, s, labels, measure, *, analysis, outcome, time="", subgroup=""):
    rows = []
    for name, (mu, tau) in sets.items():
        r = _exact(y, s, mu, tau, labels, measure)
        df = _exact_frame(r, analysis=analysis, outcome=outcome, time=time, subgroup=subgroup)
        df = df[df["parameter"].isin(["mu", "tau", "theta_new"])].copy()
        df["method"] = f"exact-NNHM [{name}]"
        rows.append((name, r, df))
    return rows


def _side_by_side(rows: pd.DataFrame, *, parameter="mu", transform="none", keys=("time",),
                  digits=2) -> pd.DataFrame:
    """Wide display: one line per key, one column per source/method."""
    d = rows[rows["parameter"] == parameter]
    cols = list(dict.fromkeys(d["source"] + ": " + d["method"]))
    out = []
    for key, g in d.groupby(list(keys), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rec = dict(zip(keys, key))
        for c in cols:
            m = g[(g["source"] + ": " + g["method"]) == c]
            rec[c] = _fmt_ci(*m.iloc[0][["estimate", "ci_low", "ci_high"]], transform,
                             digits) if len(m) else ""
        out.append(rec)
    return pd.DataFrame(out)


def _mcmc_available(name: str) -> bool:
    from bayesmeta import mcmc

    return hasattr(mcmc, name)


def _methods_mcmc(ctx: RunContext, kw: dict) -> str:
    return (f"MCMC: {kw['sampler']} NUTS, {kw['chains']} chains × {kw['draws']} draws after "
            f"{kw['tune']} tuning steps, target_accept {kw['target_accept']}, seed {kw['seed']}"
            + (" (--fast: smoke-test settings)" if ctx.fast else "") + ".")


# --------------------------------------------------------------------------------------------
# kind: fig3_meld
# --------------------------------------------------------------------------------------------
def _audit_section(out: AnalysisOutput, aud: pd.DataFrame, caption: str,
                   cols=("item", "published", "recomputed", "bayesian", "bayesian_ci_low",
                         "bayesian_ci_high", "verdict", "diagnosis")) -> None:
    """The "Published-number audit" section of an analysis page."""
    out.h("Published-number audit")
    out.table("audit_view", aud, caption, show=aud[list(cols)], csv=False)


def run_fig3_meld(spec: AnalysisSpec, ctx: RunContext) -> AnalysisOutput:
    """2014 Figure 3: classical reproduction, exact NNHM per week, nested model."""
    from bayesmeta import classical
    from bayesmeta.effect_sizes import escalc

    name, outc = spec.name, spec.analysis.outcome or "MELD"
    out = AnalysisOutput(name=name, title=spec.analysis.title, kind=spec.kind,
                         description=spec.analysis.description, fast=ctx.fast)
    arms = _dataset_frame(spec)
    tcol, scol = spec.data.time, spec.data.study
    es = escalc(spec.data.measure, arms)
    weeks = [str(t) for t in dict.fromkeys(es[tcol])]
    labels = [f"{s}, {t} wk" for s, t in zip(es[scol], es[tcol])]
    groups = es[tcol].astype(str).tolist()
    ctx.progress(f"  classical: {spec.classical.method} by week (preset {spec.classical.preset})")
    sub = classical.subgroup_analysis(es["yi"], es["vi"], groups, studies=labels,
                                      method=spec.classical.method, test=spec.classical.test,
                                      measure=spec.data.measure,
                                      preset=spec.classical.preset or None)
    cl = []
    for w in weeks:
        r = sub.subgroups[w]
        cl.append(r.to_frame(analysis=name, outcome=outc, time=w, studies=False))
    cl.append(sub.overall.to_frame(analysis=name, outcome=outc, time="all", studies=False))
    classical_rows = results.concat(*cl)
    classical_rows = classical_rows[classical_rows["parameter"] != "theta_new"]

    # published rows (printed subtotals / overall)
    pub = _published_table(spec)
    prow = []
    for (lev, t), g in pub[pub["quantity"].isin(["md", "ci_low", "ci_high"])].groupby(
            ["level", "time"], dropna=False, sort=False):
        v = dict(zip(g["quantity"], g["value"]))
        tt = "all" if lev == "overall" else str(int(t))
        prow.append(results.row(analysis=name, outcome=outc, source="published",
                                method="RevMan IV-FE (printed)", parameter="mu", time=tt,
                                estimate=v["md"], ci_low=v["ci_low"], ci_high=v["ci_high"],
                                level=0.95, interval="published", scale="MD"))
    published_rows = results.frame(prow)

    # exact NNHM per week
    mu_p, tau_p, why = _priors_for(spec, spec.data.measure, es)
    ctx.progress(f"  exact NNHM per week ({tau_p})")
    bay, ex_fits, curves = [], {}, []
    for w in weeks:
        m = (es[tcol].astype(str) == w).to_numpy()
        r = _exact(es["yi"][m], np.sqrt(es["vi"][m]), mu_p, tau_p, es[scol][m],
                   spec.data.measure, why)
        ex_fits[w] = r
        bay.append(_exact_frame(r, analysis=name, outcome=outc, time=w))
        curves.append(_tau_curves(r, f"{w} wk"))
    exact_rows = results.concat(*bay)

    # nested model (study effect shared across weeks) + classical twin
    nested_rows, nested = None, None
    ml = classical.fit_multilevel(es["yi"], es["vi"], es[scol], es[tcol], method="REML",
                                  measure=spec.data.measure)
    ml_rows = _with(ml.to_frame(analysis=name, outcome=outc), time="all")
    kw = ctx.sampling(spec)
    if spec.bayes.engine == "mcmc" and _mcmc_available("fit_nested"):
        ctx.progress(f"  nested MCMC ({kw['chains']}x{kw['draws']})")
        nested = _fit_nested_arm(es, spec, mu_p, tau_p, kw, scol, tcol, name, outc)
        nested_rows = nested.to_frame()
        # the overall mean is the 'all weeks' row; cell means are the per-week pooled effects
        is_mu = nested_rows["parameter"] == "mu"
        nested_rows.loc[is_mu, "time"] = "all"
        cell = nested_rows["parameter"].str.match(r"^mu\[")
        nested_rows.loc[cell, "parameter"] = "mu"
        nested_rows.loc[cell, "subgroup"] = ""
        out.datatrees["nested"] = nested.datatree
    elif spec.bayes.engine == "mcmc":
        out.warnings.append("nested MCMC model not available in this build "
                            "(bayesmeta.mcmc.fit_nested missing); only the exact per-week "
                            "model is shown")
    frames = [published_rows, classical_rows, exact_rows, ml_rows]
    if nested_rows is not None:
        frames.append(nested_rows)
    allrows = results.concat(*frames)
    out.tables["results"] = allrows

    # sensitivity (exact, per week)
    sets = _prior_sets(spec, spec.data.measure, es, _benefit(spec, outc))
    sens = []
    for w in weeks:
        m = (es[tcol].astype(str) == w).to_numpy()
        for nm, _, df in _sens_rows(sets, es["yi"][m], np.sqrt(es["vi"][m]), es[scol][m],
                                    spec.data.measure, analysis=name, outcome=outc, time=w):
            sens.append(df)
    sens_rows = results.concat(*sens) if sens else None

    # audit
    bsub = {w: (r.mu["mean"], r.mu["lower"], r.mu["upper"], "exact-NNHM")
            for w, r in ex_fits.items()}
    btheta = {}
    for w, r in ex_fits.items():
        for st, th in r.theta.iterrows():
            btheta[f"{st}, {w} wk"] = (th["mean"], th["lower"], th["upper"], "exact-NNHM")
    bover = None
    if nested_rows is not None:
        mr = nested_rows[(nested_rows["parameter"] == "mu") & (nested_rows["time"] == "all")]
        if len(mr):
            mr = mr.iloc[0]
            bover = (mr["estimate"], mr["ci_low"], mr["ci_high"], mr["method"])
    arm_text = pd.read_csv(spec.data_path, dtype=str, keep_default_na=False,
                           encoding="utf-8-sig")  # validated above: UTF-8 (BOM allowed)
    aud = _audit.audit_fig3(es, pub, sub, labels=labels, analysis=name, bayes_subtotal=bsub,
                            bayes_theta=btheta, bayes_overall=bover, arm_text=arm_text)
    out.tables["audit"] = aud

    # ---- page
    fe = sub.overall
    n_ok = int(aud["verdict"].str.startswith("reproduced").sum())
    w_last = weeks[-1]
    out.answers = [
        f"Pooled MD (MSC − control), RevMan IV fixed effect: "
        + "; ".join(f"{w} wk {_fmt_ci(sub.subgroups[w].estimate, sub.subgroups[w].ci_low, sub.subgroups[w].ci_high)}"
                    for w in weeks)
        + f"; overall {_fmt_ci(fe.estimate, fe.ci_low, fe.ci_high)} (this overall pools the "
          "same patients three times).",
        "Bayesian (exact NNHM, 95% credible interval): "
        + "; ".join(f"{w} wk {_fmt_ci(r.mu['mean'], r.mu['lower'], r.mu['upper'])}, "
                    f"P(MD < 0) = {r.prob_mu_below(0.0):.3f}" for w, r in ex_fits.items())
        + ". With two studies per week the random-effects posterior is much wider than the "
          "fixed-effect CI: heterogeneity cannot be estimated from two studies.",
        f"Audit: {n_ok} of {len(aud)} printed numbers reproduced at printed precision; "
        + "; ".join(f"{r.item} {r.quantity}: {r.verdict}" for r in aud.itertuples()
                    if not r.verdict.startswith("reproduced")),
    ]
    if nested_rows is not None:
        mr = nested_rows[(nested_rows["parameter"] == "mu") & (nested_rows["time"] == "all")]
        if len(mr):
            mr = mr.iloc[0]
            out.answers.insert(2, "Nested model (study effect shared across weeks): overall "
                               f"MD {_fmt_ci(mr['estimate'], mr['ci_low'], mr['ci_high'])}, "
                               f"vs two-level REML {_fmt_ci(ml.estimate, ml.ci_low, ml.ci_high)}.")
    out.h("Published vs classical vs Bayesian")
    out.table("side_by_side", allrows, "Pooled MD by week: printed (RevMan), recomputed "
              "classically from the arm data, and Bayesian posteriors (mean [95% interval]).",
              show=_side_by_side(allrows, keys=("time",)), csv=False)
    out.h("Forest plot")
    st = pd.DataFrame({"panel": [f"{t} wk" for t in es[tcol]], "study": es[scol],
                       "estimate": es["yi"], "ci_low": es["yi"] - Z975 * np.sqrt(es["vi"]),
                       "ci_high": es["yi"] + Z975 * np.sqrt(es["vi"]),
                       "weight": sub.overall.weights.to_numpy()})
    sh = pd.DataFrame([{"panel": f"{w} wk", "study": s_, "estimate": th["mean"],
                        "ci_low": th["lower"], "ci_high": th["upper"]}
                       for w, r in ex_fits.items() for s_, th in r.theta.iterrows()])
    pooled = []
    for _, r in allrows[allrows["parameter"] == "mu"].iterrows():
        panel = "overall" if r["time"] == "all" else f"{r['time']} wk"
        pooled.append({"panel": panel, "source": r["source"], "label": f"{r['source']}: "
                       f"{r['method']}", "estimate": r["estimate"], "ci_low": r["ci_low"],
                       "ci_high": r["ci_high"]})
    out.figure("forest", plots.plot_forest(
        st, pd.DataFrame(pooled), shrinkage=sh,
        panel_order=[f"{w} wk" for w in weeks] + ["overall"],
        xlabel="MELD change, MD (MSC − control); < 0 favours MSC"),
        "Per-study MD with 95% CI (black squares, size ∝ weight), Bayesian shrinkage estimates "
        "(blue), pooled estimates: published (grey), classical (black), Bayesian (blue).")
    out.figure("tau", plots.plot_tau_prior_posterior(pd.concat(curves), xlabel="tau (MELD points)"),
               f"Between-study SD tau: prior ({tau_p}) vs exact posterior, per week.")
    if sens_rows is not None:
        out.h("Prior sensitivity")
        sd = sens_rows[sens_rows["parameter"] == "mu"]
        out.tables["sensitivity"] = sens_rows
        show = pd.DataFrame({"week": sd["time"], "prior set": sd["method"].str.extract(
            r"\[(.*)\]")[0], "mu": [_fmt_ci(a, b, c) for a, b, c in
                                  sd[["estimate", "ci_low", "ci_high"]].to_numpy()]})
        out.table("sensitivity_view", show, "Pooled MD per week under each prior set (exact).",
                  csv=False)
        out.figure("sensitivity", plots.plot_sensitivity(
            pd.DataFrame({"group": sd["time"] + " wk", "setting": show["prior set"],
                          "estimate": sd["estimate"], "ci_low": sd["ci_low"],
                          "ci_high": sd["ci_high"]}), xlabel="MD"),
            "Pooled MD per week under each prior set.")
    out.h("Published-number audit")
    out.table("audit_view", aud, "Every printed number of Figure 3: published, recomputed from "
              "the arm data, Bayesian posterior where one exists, verdict.",
              show=aud[["item", "quantity", "published", "recomputed", "bayesian",
                        "bayesian_ci_low", "bayesian_ci_high", "verdict", "diagnosis"]],
              csv=False)
    out.h("Methods")
    out.p("Effect: mean difference of the MELD change from baseline, MSC minus control "
          "(negative = larger MELD decrease with MSC). Classical: inverse-variance fixed effect "
          "per week with RevMan 5 settings (Wald z, Q-based I²), the overall pooling all six "
          "rows, and RevMan's test for subgroup differences. The classical twin of the nested "
          "model is a two-level REML model (study, study/week; metafor rma.mv).")
    out.p("Bayesian: normal-normal hierarchical model per week, posterior by exact quadrature "
          f"over tau (no sampling). Priors: {why} With only two studies per week the data "
          "cannot inform tau, so its prior matters: the sensitivity table shows how much.")
    if nested is not None:
        out.p("Nested model: " + "; ".join(f"{k} ~ {v}" for k, v in nested.priors.items())
              + ". " + _methods_mcmc(ctx, kw) + " " + nested.diagnostics.line())
    out.provenance = {"seed": kw["seed"], "priors": why}
    return out


def _fit_nested_arm(es, spec, mu_p, tau_p, kw, scol, tcol, name, outc):
    """Adapter to ``bayesmeta.mcmc.fit_nested`` for study-level rows (study × time)."""
    from bayesmeta import mcmc

    data = pd.DataFrame({"yi": es["yi"].to_numpy(float), "sei": np.sqrt(es["vi"].to_numpy(float)),
                         "study": es[scol].astype(str), "time": es[tcol].astype(str),
                         "row_kind": "study"})
    for c in ("n1i", "n2i"):
        if c in es:
            data[c] = es[c].to_numpy(float)
    return _nested(data, spec, mu_p, tau_p, kw, name, outc)


def _nested(data, spec, mu_p, tau_p, kw, name, outc, **extra):
    """``mcmc.fit_nested`` with the run's sampling settings (target_accept at least the
    engine's nested default, which gave 0 divergences on the bundled data)."""
    from bayesmeta import mcmc

    kw = dict(kw)
    kw["target_accept"] = max(kw["target_accept"],
                              getattr(mcmc, "NESTED_TARGET_ACCEPT", kw["target_accept"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mcmc.fit_nested(data, mu_prior=mu_p, tau_prior=tau_p, measure=spec.data.measure,
                               analysis=name, outcome=outc, **extra, **kw)


# --------------------------------------------------------------------------------------------
# kind: one_arm
# --------------------------------------------------------------------------------------------
def run_one_arm(spec: AnalysisSpec, ctx: RunContext) -> AnalysisOutput:
    """MSC-arm change from baseline (MC) per time point, DL RE, beside the published table."""
    from bayesmeta import classical
    from bayesmeta.effect_sizes import escalc

    name, outc = spec.name, spec.analysis.outcome or "MELD"
    out = AnalysisOutput(name=name, title=spec.analysis.title, kind=spec.kind,
                         description=spec.analysis.description, fast=ctx.fast)
    arms = _dataset_frame(spec)
    if {"mi", "sdi", "ni"} <= set(arms.columns):
        one = arms
    else:  # two-arm table: the experimental (MSC) arm, group 1
        one = arms.assign(mi=arms["m1i"], sdi=arms["sd1i"], ni=arms["n1i"])
    es = escalc("MC", one)
    tcol, scol = spec.data.time, spec.data.study
    times = [str(t) for t in dict.fromkeys(es[tcol])]
    pub = _published_table(spec)
    pub_o = pub[pub["outcome"] == outc]
    mu_p, tau_p, why = _priors_for(spec, "MC", es.assign(ni=es["ni"]))
    rows, fits, ex_fits, curves, aud_rows = [], {}, {}, [], []
    for t in times:
        m = (es[tcol].astype(str) == t).to_numpy()
        r = classical.rma(es["yi"][m], es["vi"][m], studies=es[scol][m].tolist(),
                          method=spec.classical.method, test=spec.classical.test, measure="MC")
        fits[t] = r
        rows.append(r.to_frame(analysis=name, outcome=outc, time=t, studies=False))
        x = _exact(es["yi"][m], np.sqrt(es["vi"][m]), mu_p, tau_p, es[scol][m], "MC", why)
        ex_fits[t] = x
        rows.append(_exact_frame(x, analysis=name, outcome=outc, time=t))
        curves.append(_tau_curves(x, f"{t} wk"))
        pr = pub_o[pub_o["time_wk"].astype(str) == t]
        for p in pr.itertuples():
            rows.append(results.frame([results.row(
                analysis=name, outcome=outc, source="published", method="RE (Meta Analyst, printed)",
                parameter="mu", time=t, estimate=p.estimate, ci_low=p.ci_low, ci_high=p.ci_high,
                level=0.95, interval="published", scale="MC")]))
            same_k = int(p.n_studies) == int(m.sum())
            b = (x.mu["mean"], x.mu["lower"], x.mu["upper"], "exact-NNHM")
            for q, pv, rv, dec in (("estimate", p.estimate, r.estimate, 2),
                                   ("ci_low", p.ci_low, r.ci_low, 2),
                                   ("ci_high", p.ci_high, r.ci_high, 2),
                                   ("i2", p.i2, r.i2_q / 100, 3), ("p_het", p.p_het, r.q_p, 3)):
                if same_k:
                    v, d = _audit._verdict(pv, rv, dec)
                    if v == "discrepancy":
                        d += (f"; MSC arms of the bundled studies: n = "
                              f"{', '.join(str(int(n)) for n in es['ni'][m])} (total "
                              f"{int(es['ni'][m].sum())}) vs {int(p.n_cases)} cases printed")
                else:
                    v, d = "not checkable", (f"Table 2 pools {int(p.n_studies)} studies at {t} wk; "
                                             f"the bundled arm data hold {int(m.sum())}")
                aud_rows.append(dict(
                    analysis=name, item=f"{outc} one-arm {t} wk", quantity=q, time=t,
                    printed=p.printed, published=pv, decimals=dec,
                    recomputed=rv if same_k else math.nan,
                    recomputed_from=f"MSC arms, {spec.classical.method} random effects",
                    verdict=v, diagnosis=d,
                    **(dict(bayesian=b[0], bayesian_ci_low=b[1], bayesian_ci_high=b[2],
                            bayesian_method=b[3]) if q in ("estimate", "ci_low", "ci_high")
                       else {})))
    allrows = results.concat(*rows)
    allrows = allrows[allrows["parameter"] != "theta_new"].reset_index(drop=True)
    out.tables["results"] = allrows
    # every other Table 2 row: internal consistency only
    other = pub[~((pub["outcome"] == outc) & pub["time_wk"].astype(str).isin(times))]
    aud = pd.concat([_audit.frame(aud_rows),
                     _audit.audit_published_table(other, analysis=name, measure="MC",
                                                  item_cols=("outcome", "time_wk"))],
                    ignore_index=True)
    out.tables["audit"] = aud
    n_ok = int(aud["verdict"].str.startswith("reproduced").sum())
    out.answers = [
        "MSC-arm MELD change from baseline, DL random effects: " + "; ".join(
            f"{t} wk {_fmt_ci(f.estimate, f.ci_low, f.ci_high)} (I² {f.i2_q:.0f}%)"
            for t, f in fits.items()),
        "Bayesian (exact NNHM): " + "; ".join(
            f"{t} wk {_fmt_ci(x.mu['mean'], x.mu['lower'], x.mu['upper'])}"
            for t, x in ex_fits.items())
        + ". One-arm changes mix treatment effect with natural course and regression to the "
          "mean; they are not comparative evidence.",
        f"Audit: {n_ok} of {len(aud)} Table 2 numbers reproduced; "
        + "; ".join(f"{r.item} {r.quantity}: {r.verdict}" for r in aud.itertuples()
                    if not r.verdict.startswith("reproduced")),
    ]
    out.h("Published vs classical vs Bayesian")
    out.table("side_by_side", allrows, "Mean MELD change in MSC arms by week.",
              show=_side_by_side(allrows, keys=("time",)), csv=False)
    st = pd.DataFrame({"panel": [f"{t} wk" for t in es[tcol]], "study": es[scol],
                       "estimate": es["yi"], "ci_low": es["yi"] - Z975 * np.sqrt(es["vi"]),
                       "ci_high": es["yi"] + Z975 * np.sqrt(es["vi"])})
    sh = pd.DataFrame([{"panel": f"{t} wk", "study": s_, "estimate": th["mean"],
                        "ci_low": th["lower"], "ci_high": th["upper"]}
                       for t, x in ex_fits.items() for s_, th in x.theta.iterrows()])
    pooled = pd.DataFrame([{"panel": f"{r['time']} wk", "source": r["source"],
                            "label": f"{r['source']}: {r['method']}", "estimate": r["estimate"],
                            "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
                           for _, r in allrows[allrows["parameter"] == "mu"].iterrows()])
    out.figure("forest", plots.plot_forest(st, pooled, shrinkage=sh,
                                           xlabel="MELD change from baseline (MSC arm)"),
               "MSC-arm change per study and pooled (published grey, classical black, "
               "Bayesian blue).")
    out.figure("tau", plots.plot_tau_prior_posterior(pd.concat(curves)),
               f"tau prior ({tau_p}) vs posterior per week.")
    sets = _prior_sets(spec, "MC", es, _benefit(spec, outc))
    if sets:
        sens = []
        for t in times:
            m = (es[tcol].astype(str) == t).to_numpy()
            sens += [df for _, _, df in _sens_rows(sets, es["yi"][m], np.sqrt(es["vi"][m]),
                                                   es[scol][m], "MC", analysis=name,
                                                   outcome=outc, time=t)]
        sr = results.concat(*sens)
        out.tables["sensitivity"] = sr
        sd = sr[sr["parameter"] == "mu"]
        out.figure("sensitivity", plots.plot_sensitivity(pd.DataFrame({
            "group": sd["time"] + " wk", "setting": sd["method"].str.extract(r"\[(.*)\]")[0],
            "estimate": sd["estimate"], "ci_low": sd["ci_low"], "ci_high": sd["ci_high"]}),
            xlabel="mean change"), "Pooled change under each prior set.")
    out.h("Published-number audit")
    out.table("audit_view", aud, "Table 2: MELD rows recomputed from the MSC arms where the same "
              "studies are bundled; all other rows checked for internal consistency "
              "(estimate vs CI midpoint).", show=aud[["item", "quantity", "published",
                                                     "recomputed", "bayesian", "verdict",
                                                     "diagnosis"]], csv=False)
    out.h("Methods")
    out.p("Single-group meta-analysis of the mean change from baseline in the MSC arms "
          "(yi = mean change, vi = SD²/n), DerSimonian-Laird random effects as Table 2 "
          f"(Meta Analyst). Bayesian: exact NNHM; priors: {why}")
    out.provenance = {"priors": why}
    return out


# --------------------------------------------------------------------------------------------
# published pooled rows (2023)
# --------------------------------------------------------------------------------------------
def _published_subset(spec: AnalysisSpec) -> pd.DataFrame:
    from bayesmeta.published import to_analysis_scale

    df = _dataset_frame(spec)
    d = spec.data
    if d.outcomes:
        df = df[df[d.outcome_column].isin(d.outcomes)]
    df = df.reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = to_analysis_scale(df, measure=spec.data.measure)
    return _resolve_inconsistent(df, spec.data.measure)


def _resolve_inconsistent(df: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Printed rows whose estimate, CI and P contradict each other: use the reading the P supports.

    If the printed P matches the CI midpoint (not the estimate), the estimate is the misprint:
    yi = CI midpoint. If it matches the estimate (not the midpoint), the CI is the misprint:
    sei from the estimate and P. The choice is recorded in column ``model_input``.
    """
    from bayesmeta.published import check_published, to_analysis_scale

    df = df.copy()
    df["model_input"] = "as printed"
    for i, r in df.iterrows():
        p = r.get("p_printed", math.nan)
        if not (isinstance(p, float) and math.isfinite(p)):
            continue
        v = check_published(r["estimate"], r["ci_low"], r["ci_high"], measure, p=p,
                            p_op=r.get("p_op", "=") or "=")
        if v.consistent or not any(f.startswith("P disagrees") for f in v.findings):
            continue
        d_mid = abs(math.log(max(v.p_from_midpoint, 1e-300)) - math.log(p))
        d_est = abs(math.log(max(v.p_from_estimate, 1e-300)) - math.log(p))
        if d_mid < d_est:
            df.at[i, "yi"] = v.midpoint
            df.at[i, "model_input"] = (f"estimate misprinted: yi = CI midpoint {v.midpoint:.4g} "
                                       f"(the printed P {p:g} matches the CI, not the estimate)")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yi, sei = to_analysis_scale(r["estimate"], None, None, measure, p=p,
                                            p_op=r.get("p_op", "=") or "=")
            df.at[i, "sei"] = sei
            df.at[i, "vi"] = sei ** 2
            df.at[i, "model_input"] = (f"CI misprinted: SE {sei:.4g} from the estimate and P "
                                       f"{p:g} (the printed CI does not match them)")
    return df


def _pub_rows(df, *, analysis, spec, outcome_col, tcol, scol, scale) -> pd.DataFrame:
    rows = []
    for r in df.to_dict("records"):
        t = "" if tcol == "" or pd.isna(r.get(tcol)) else _audit._s(r[tcol])
        sg = "" if scol == "" or pd.isna(r.get(scol)) else str(r[scol])
        rows.append(results.row(analysis=analysis, outcome=str(r[outcome_col]),
                                source="published", method="published (printed)",
                                parameter="mu", time=t, subgroup=sg,
                                estimate=_h(r["estimate"], scale), se=r["sei"],
                                ci_low=_h(r["ci_low"], scale), ci_high=_h(r["ci_high"], scale),
                                level=0.95,
                                interval="published", scale=scale,
                                p_value=r.get("p_printed")))
    return results.frame(rows)


def _h(x, scale):
    """Printed value on the analysis scale (log for ratio scales)."""
    return math.log(x) if scale in ("logOR", "logRR") else float(x)


def _conjugate(y, s, mu_prior):
    """Posterior of a single pooled effect y ~ N(theta, s²) with theta ~ mu_prior (exact)."""
    from bayesmeta.exact import FixedTau

    return _exact([y], [s], mu_prior, FixedTau(0.0), ["published"], "GEN")


# --------------------------------------------------------------------------------------------
# kind: complications
# --------------------------------------------------------------------------------------------
def run_complications(spec: AnalysisSpec, ctx: RunContext) -> AnalysisOutput:
    from bayesmeta import priors as P

    name = spec.name
    out = AnalysisOutput(name=name, title=spec.analysis.title, kind=spec.kind,
                         description=spec.analysis.description, fast=ctx.fast)
    df = _published_subset(spec)
    scale = "logOR" if spec.data.measure == "OR" else "logRR"
    oc = spec.data.outcome_column
    pub_rows = _pub_rows(df, analysis=name, spec=spec, outcome_col=oc, tcol="", scol="",
                         scale=scale)
    sets = P.prior_sets(spec.data.measure, None, benefit=_benefit(spec))
    chosen = spec.sensitivity.prior_sets or ("weakly_informative",)
    bay, probs, bmap = [], [], {}
    thr = spec.report.thresholds
    for r in df.to_dict("records"):
        for sname in chosen:
            mu, _ = sets[sname]
            x = _conjugate(r["yi"], r["sei"], mu)
            s = x.mu
            bay.append(results.row(analysis=name, outcome=r[oc], source="bayesian",
                                   method=f"conjugate-normal [{sname}]", parameter="mu",
                                   estimate=s["mean"], se=s["sd"], ci_low=s["lower"],
                                   ci_high=s["upper"], median=s["median"], level=0.95,
                                   interval="eti", scale=scale, mcse=0.0))
            rec = {"outcome": r[oc], "prior set": sname, "mu prior": str(mu),
                   "OR (95% CrI)": _fmt_ci(s["mean"], s["lower"], s["upper"], "exp"),
                   "P(OR < 1)": x.prob_mu_below(0.0)}
            for t in thr:
                rec[f"P(OR < {t:g})"] = x.prob_mu_below(math.log(t))
            probs.append(rec)
            if sname == chosen[0]:
                bmap[(r[oc], "", "all")] = (math.exp(s["median"]), math.exp(s["lower"]),
                                            math.exp(s["upper"]), f"conjugate-normal [{sname}]")
    allrows = results.concat(pub_rows, results.frame(bay))
    out.tables["results"] = allrows
    ptab = pd.DataFrame(probs)
    out.tables["probabilities"] = ptab
    aud = _audit.audit_published_table(df, analysis=name, measure=spec.data.measure,
                                       item_cols=(oc, "time_wk", "subgroup"), bayes=bmap)
    out.tables["audit"] = aud
    wi = ptab[ptab["prior set"] == chosen[0]]
    out.answers = [f"{r['outcome']}: OR {r['OR (95% CrI)']}, P(OR < 1) = {r['P(OR < 1)']:.2f}"
                   for _, r in wi.iterrows()]
    out.answers.append("Printed OR, CI and P agree with each other for "
                       f"{int((aud['verdict'] == 'reproduced').sum())} of {len(aud)} rows.")
    out.h("Published vs Bayesian")
    out.table("side_by_side", allrows, "Odds ratios (MSC vs control; < 1 = fewer events).",
              show=_side_by_side(allrows, keys=("outcome",), transform="exp"), csv=False)
    out.table("probabilities_view", ptab, "Posterior probabilities under each prior set.",
              csv=False)
    pooled = pd.DataFrame([{"panel": r["outcome"], "source": r["source"],
                            "label": f"{r['source']}: {r['method']}", "estimate": r["estimate"],
                            "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
                           for _, r in allrows.iterrows()])
    out.figure("forest", plots.plot_forest(pd.DataFrame(columns=["panel", "study", "estimate",
                                                                 "ci_low", "ci_high"]),
                                           pooled, transform="exp",
                                           xlabel="odds ratio (MSC vs control)"),
               "Published OR (grey) and posterior OR under each prior set (blue).")
    _audit_section(out, aud, "Printed OR, CI and P checked against each other.")
    out.h("Methods")
    out.p("Each printed pooled OR is turned into log OR and SE (SE from the 95% CI width on the "
          "log scale). A single pooled estimate carries no information on heterogeneity, so the "
          "Bayesian re-analysis is the conjugate normal model on log OR with the mu prior of "
          "each prior set: "
          + "; ".join(f"{n}: mu ~ {sets[n][0]}" for n in chosen)
          + ". The sceptical prior puts 95% probability on ORs between 0.5 and 2.")
    return out


# --------------------------------------------------------------------------------------------
# kind: generic
# --------------------------------------------------------------------------------------------
def run_generic(spec: AnalysisSpec, ctx: RunContext) -> AnalysisOutput:
    from bayesmeta import classical
    from bayesmeta.effect_sizes import escalc

    name, outc = spec.name, spec.analysis.outcome
    m = spec.data.measure
    tf = spec.report.transform
    out = AnalysisOutput(name=name, title=spec.analysis.title, kind=spec.kind,
                         description=spec.analysis.description, fast=ctx.fast)
    raw = _dataset_frame(spec)
    es = escalc(m, raw)
    es = es[np.isfinite(es["yi"]) & np.isfinite(es["vi"])].reset_index(drop=True)
    labels = es[spec.data.study].astype(str).tolist()
    ctx.progress(f"  classical {spec.classical.method}")
    cr = classical.rma(es["yi"], es["vi"], studies=labels, method=spec.classical.method,
                       test=spec.classical.test, measure=m,
                       preset=spec.classical.preset or None)
    crow = cr.to_frame(analysis=name, outcome=outc, studies=False)
    if not spec.classical.prediction:
        crow = crow[crow["parameter"] != "theta_new"]
    mu_p, tau_p, why = _priors_for(spec, m, es)
    x = _exact(es["yi"], np.sqrt(es["vi"]), mu_p, tau_p, labels, m, why)
    xrow = _exact_frame(x, analysis=name, outcome=outc)
    rows = [crow, xrow]
    kw = ctx.sampling(spec)
    if spec.bayes.engine == "mcmc":
        from bayesmeta import mcmc

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mc = mcmc.fit_nnhm(es["yi"], np.sqrt(es["vi"]), mu_prior=mu_p, tau_prior=tau_p,
                               study=labels, measure=m, analysis=name, outcome=outc, **kw)
        rows.append(mc.to_frame())
        out.datatrees["nnhm"] = mc.datatree
    allrows = results.concat(*rows)
    out.tables["results"] = allrows
    sets = _prior_sets(spec, m, es, _benefit(spec, outc))
    sens = _sens_rows(sets, es["yi"], np.sqrt(es["vi"]), labels, m, analysis=name, outcome=outc)
    thr = spec.report.thresholds
    ratio = tf == "exp"
    nat = (lambda v: math.exp(v)) if ratio else (lambda v: v)
    unit = "RR" if m == "RR" else ("OR" if m in ("OR", "PETO") else m)
    better = _benefit(spec, outc)
    pb = x.prob_mu_below(0.0) if better < 0 else 1 - x.prob_mu_below(0.0)
    out.answers = [
        f"Classical {cr.label}: {unit} {_fmt_ci(cr.estimate, cr.ci_low, cr.ci_high, tf)}, "
        f"tau² = {cr.tau2:.3f}, I² = {cr.i2:.0f}%"
        + (f", 95% prediction interval {_fmt_ci(cr.estimate, cr.pi_low, cr.pi_high, tf)}"
           if spec.classical.prediction else "") + ".",
        f"Bayesian (exact NNHM): {unit} {_fmt_ci(x.mu['median'], x.mu['lower'], x.mu['upper'], tf)}"
        f" (posterior median, 95% CrI), tau {x.tau['median']:.3f} "
        f"[{x.tau['lower']:.3f}, {x.tau['upper']:.3f}]; P(benefit) = {pb:.3f}; predictive "
        f"{_fmt_ci(x.theta_new['median'], x.theta_new['lower'], x.theta_new['upper'], tf)}.",
    ]
    for t in thr:
        c = math.log(t) if ratio else t
        pt = x.prob_mu_below(c) if better < 0 else 1 - x.prob_mu_below(c)
        out.answers.append(f"P({unit} {'<' if better < 0 else '>'} {t:g}) = {pt:.3f}.")
    out.h("Classical vs Bayesian")
    out.table("side_by_side", allrows, f"Pooled {unit} (mean/estimate [95% interval]).",
              show=_side_by_side(allrows, keys=("outcome",), transform=tf, digits=3), csv=False)
    st = pd.DataFrame({"panel": "studies", "study": labels, "estimate": es["yi"],
                       "ci_low": es["yi"] - Z975 * np.sqrt(es["vi"]),
                       "ci_high": es["yi"] + Z975 * np.sqrt(es["vi"]),
                       "weight": cr.weights.to_numpy()})
    sh = pd.DataFrame([{"panel": "studies", "study": s_, "estimate": th["mean"],
                        "ci_low": th["lower"], "ci_high": th["upper"]}
                       for s_, th in x.theta.iterrows()])
    pooled = pd.DataFrame([{"panel": "studies", "source": r["source"],
                            "label": f"{r['source']}: {r['method']}", "estimate": r["estimate"],
                            "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
                           for _, r in allrows[allrows["parameter"] == "mu"].iterrows()])
    out.figure("forest", plots.plot_forest(st, pooled, shrinkage=sh, transform=tf,
                                           xlabel=f"{unit}"),
               "Observed effects (black), Bayesian shrinkage (blue), pooled classical and "
               "Bayesian.")
    out.figure("tau", plots.plot_tau_prior_posterior(_tau_curves(x, "tau")),
               f"tau: prior {tau_p} vs posterior.")
    if sens:
        sr = results.concat(*[d for _, _, d in sens])
        out.tables["sensitivity"] = sr
        sd = sr[sr["parameter"] == "mu"]
        setting = sd["method"].str.extract(r"\[(.*)\]")[0]
        out.h("Prior sensitivity")
        out.table("sensitivity_view", pd.DataFrame({
            "prior set": setting, "mu prior": [str(sets[n][0]) for n in setting],
            "tau prior": [str(sets[n][1]) for n in setting],
            unit: [_fmt_ci(a, b, c, tf, 3) for a, b, c in
                   sd[["median", "ci_low", "ci_high"]].to_numpy()]}),
            "Posterior median and 95% CrI under each prior set.", csv=False)
        out.figure("sensitivity", plots.plot_sensitivity(pd.DataFrame({
            "group": "mu", "setting": setting, "estimate": sd["median"],
            "ci_low": sd["ci_low"], "ci_high": sd["ci_high"]}), transform=tf, xlabel=unit),
            "Pooled effect under each prior set.")
    out.tables["audit"] = _audit.frame([])
    out.h("Methods")
    out.p(f"Classical: {cr.label} random effects ({'Wald z' if cr.test == 'z' else 'KNHA t'}). "
          f"Bayesian: exact NNHM by quadrature; priors: {why}")
    return out


# --------------------------------------------------------------------------------------------
# simulation: operating characteristics of the intervals (bayesmeta.simulate, in-process)
# --------------------------------------------------------------------------------------------
SIM_COLUMNS = ("scale", "k", "tau", "method", "n", "coverage", "coverage_mcse", "width",
               "width_mcse", "bias", "bias_mcse", "rmse", "n_failed")


def _sim_label(method: str) -> str:
    if method.startswith("Bayes-"):
        return f"Bayes ({method[6:].replace('_', ' ')})"
    return method


def _sim_throughput() -> tuple[str, float]:
    """The 1-worker ``bayesmeta simulate`` throughput from benchmarks/results.json, if shipped:
    (text, meta-analyses per second or nan)."""
    import json
    import re

    from bayesmeta.spec import models_dir

    f = models_dir().parent / "benchmarks" / "results.json"
    try:
        rows = json.loads(f.read_text(encoding="utf-8"))
        r = next(r for r in rows if r.get("group") == "simulate" and "1 worker" in r["case"]
                 and not r.get("baseline"))
        m = re.match(r"\s*([0-9.]+)/s", str(r["ratio"]))
        return (f"{r['ratio']} with one worker process on 2 shared cores ({r['case']}: "
                f"{r['seconds']:.0f} s; benchmarks/results.md)",
                float(m.group(1)) if m else math.nan)
    except (OSError, ValueError, StopIteration, KeyError, TypeError):
        return "see benchmarks/results.md", math.nan


def _bench_table() -> pd.DataFrame | None:
    """benchmarks/results.json as a table (source tree only; None when not shipped)."""
    import json

    from bayesmeta.spec import models_dir

    f = models_dir().parent / "benchmarks" / "results.json"
    try:
        rows = json.loads(f.read_text(encoding="utf-8"))
        return pd.DataFrame(rows, columns=["group", "case", "seconds", "baseline", "ratio"])
    except (OSError, ValueError, TypeError):
        return None


def run_simulation(spec: AnalysisSpec, ctx: RunContext) -> AnalysisOutput:
    """Coverage, width and bias of 95% intervals with 2-10 studies, by simulation.

    Runs :func:`bayesmeta.simulate.simulate` in-process (no Dask cluster) with the spec's
    ``[simulation]`` settings (``fast_n_per_cell`` with ``--fast``); one chunk per cell, so the
    numbers depend only on the settings and the seed.
    """
    from bayesmeta import simulate as sim

    S = spec.simulation
    level = float(spec.report.ci_prob)
    n = int(S.fast_n_per_cell if ctx.fast else S.n_per_cell)
    seed = ctx.seed_for(spec)
    cfg = sim.SimulationConfig(n=n, ks=tuple(int(k) for k in S.k), scales=tuple(S.scales),
                               taus=tuple(float(t) for t in S.tau) or None,
                               prior_sets=tuple(S.priors), seed=seed, chunk_size=n,
                               level=level)
    cells = len(cfg.scenarios())
    ctx.progress(f"  simulate {cells} cells x {n} meta-analyses (in-process)")
    res = sim.simulate(cfg, out=None, workers=0, quiet=True, figure=False)
    table = res.table.loc[:, list(SIM_COLUMNS)]
    out = AnalysisOutput(name=spec.name, title=spec.analysis.title, kind=spec.kind,
                         description=spec.analysis.description, fast=ctx.fast)
    out.tables["coverage"] = table
    methods = [f"{m}-{t}" for m in sim.CLASSICAL for t in ("z", "HKSJ")] + \
        [f"Bayes-{p}" for p in S.priors]
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    mcse95 = math.sqrt(level * (1 - level) / n)

    # answers: per small k, coverage of each interval family across the tau grid
    def cov(scale, k, m):
        g = table[(table["scale"] == scale) & (table["k"] == k) & (table["method"] == m)]
        return g.sort_values("tau")

    answers = []
    for scale in cfg.scales:
        taus = sorted(set(table.loc[table["scale"] == scale, "tau"]))
        tau_txt = "/".join(f"{t:g}" for t in taus)
        for k in [k for k in sorted(set(cfg.ks)) if k <= 5]:
            parts = []
            for m in ("DL-z", "REML-z", "DL-HKSJ") + tuple(f"Bayes-{p}" for p in S.priors):
                g = cov(scale, k, m)
                parts.append(f"{_sim_label(m)} {'/'.join(pct(c) for c in g['coverage'])}%")
            answers.append(f"{scale}, k = {k}: coverage at tau = {tau_txt}: " + "; ".join(parts)
                           + f" (MC SE about {100 * mcse95:.1f} points).")
        small = table[(table["scale"] == scale) & (table["k"] <= 5)]
        if len(small):
            worst = small.loc[small.groupby("method")["coverage"].idxmin()]
            keep = [m for m in methods if m in set(worst["method"]) and
                    (worst.set_index("method").loc[m, "coverage"]
                     >= level - 2 * worst.set_index("method").loc[m, "coverage_mcse"])]
            fail = worst[~worst["method"].isin(keep)].sort_values("coverage")
            wid = small.groupby("method")["width"].mean()
            answers.append(
                f"{scale}, k = 2-5: keep the {level:.0%} promise in every cell (lowest coverage "
                f">= {level:.0%} - 2 MC SE): {', '.join(_sim_label(m) for m in keep) or 'none'}"
                + (f"; fall short: " + ", ".join(
                    f"{_sim_label(r.method)} (down to {pct(r.coverage)}% at k = {r.k}, tau = "
                    f"{r.tau:g})" for r in fail.itertuples()) if len(fail) else "")
                + f" (with {len(set(small['k'])) * len(set(small['tau']))} cells per "
                f"method, one cell 2 MC SE short can be chance). Mean width (k = 2-5, all tau): "
                + ", ".join(f"{_sim_label(m)} {wid[m]:.2f}" for m in ("REML-z", "REML-HKSJ")
                            + tuple(f"Bayes-{p}" for p in S.priors) if m in wid) + ".")
    if any(k == 2 for k in cfg.ks):
        g = table[table["k"] == 2].set_index(["scale", "tau", "method"])["coverage"].unstack()
        if all(c in g for c in ("DL-z", "REML-z", "PM-z")) and \
                np.allclose(g["DL-z"], g["REML-z"]) and np.allclose(g["DL-z"], g["PM-z"]):
            answers.append("With k = 2, DL, REML and PM give the same tau² (all solve "
                           "(y1 - y2)² = v1 + v2 + 2 tau², truncated at 0), hence the same "
                           "intervals.")
    out.answers = answers

    out.h("Which intervals keep their 95% promise with 2-5 studies?")
    show = table.assign(cell=[f"{r.scale}, k = {r.k}, tau = {r.tau:g}"
                              for r in table.itertuples()],
                        txt=[f"{pct(c)} ({100 * s:.1f})" for c, s in
                             table[["coverage", "coverage_mcse"]].to_numpy()])
    piv = show.pivot(index="cell", columns="method", values="txt")
    order = list(dict.fromkeys(show.sort_values(["scale", "k", "tau"])["cell"]))
    piv = piv.loc[order, [m for m in methods if m in piv.columns]]
    piv.columns = [_sim_label(m) for m in piv.columns]
    out.table("coverage_view", piv.reset_index(),
              f"Coverage of the true mu by the {level:.0%} interval, % (Monte Carlo SE), "
              f"{n} simulated meta-analyses per cell.", csv=False)
    out.figure("coverage", sim.coverage_figure(table, level, x="k", methods=methods),
               f"Coverage against k, one panel per true tau, a line per method; dashed: "
               f"{level:.0%}; bars: ±2 MC SE.")
    out.h("Coverage, width and bias with Monte Carlo SEs")
    out.table("coverage_table", table.assign(method=[_sim_label(m) for m in table["method"]]),
              "All cells: coverage, mean interval width and bias of the point estimate "
              "(posterior mean for Bayes), each with its MC SE; rmse; fits that failed.",
              csv=False, digits=4)
    out.h("Methods")
    p0 = sim.SCALES
    dgm = []
    for scale in cfg.scales:
        q = p0[scale]
        lo, hi = q["n_range"]
        if scale == "logOR":
            v = (f"log OR: arms of n_i patients, n_i log-uniform on [{lo}, {hi}], control risk "
                 f"p_i ~ U(0.15, 0.45), v_i = 2 / (n_i p_i (1 - p_i))")
        else:
            v = (f"MD: change scores with SD {q['sd']:g}, arms of n_i log-uniform on "
                 f"[{lo}, {hi}], v_i = 2 x {q['sd']:g}² / n_i")
        dgm.append(f"{v}; mu = {q['mu']:g}")
    tau_arg = " ".join(f"{t:g}" for t in S.tau)
    tp_text, tp_rate = _sim_throughput()
    cmd = (f"bayesmeta simulate --n 10000 --k {' '.join(str(k) for k in cfg.ks)} --scale "
           f"{' '.join(cfg.scales)}" + (f" --tau {tau_arg}" if tau_arg else "")
           + f" --priors {' '.join(S.priors)} --seed {seed} --out simulation-full")
    out.p(f"Data-generating model: normal-normal, theta_i ~ N(mu, tau²), y_i ~ N(theta_i, v_i), "
          f"unequal study sizes ({'; '.join(dgm)}). Each simulated meta-analysis is analysed "
          f"by DL, REML and PM with Wald z and HKSJ (Knapp-Hartung) intervals and by the exact "
          f"Bayesian NNHM (quadrature over tau; equal-tailed {level:.0%} credible interval) "
          f"under the prior sets {', '.join(S.priors)} (bayesmeta.priors.prior_sets). "
          f"n = {n} meta-analyses per cell ({cells} cells, {res.n_meta} in all, in-process, "
          f"seed {seed})"
          + (" — the --fast size" if ctx.fast else "") + f"; the Monte Carlo SE of a coverage "
          f"near {level:.0%} is sqrt({level:g} x {1 - level:.2g} / {n}) = {100 * mcse95:.2f} "
          f"percentage points (coverage, mean width and bias each carry their own MC SE in the "
          f"table). This run is sized for the report; the full-size run is `{cmd}` (n = 10 000 "
          f"per cell, MC SE {100 * math.sqrt(level * (1 - level) / 10000):.2f} points; "
          f"resumable, on a local Dask cluster or --scheduler tcp://HOST:PORT); measured "
          f"throughput: {tp_text}"
          + (f", i.e. about {cells * 10000 / tp_rate / 60:.0f} min for these {cells} cells "
             f"(fewer prior sets are faster)" if math.isfinite(tp_rate) else "") + ".")
    bench = _bench_table()
    if bench is not None:
        out.h("Benchmarks")
        out.table("benchmarks", bench, "Committed benchmark results (`python benchmarks/run.py`"
                  " -> benchmarks/results.md): ratios are against a baseline measured in the "
                  "same run, on the project's 2-core machine.", csv=False)
    if res.table["n_failed"].sum():
        out.warnings.append(f"{int(res.table['n_failed'].sum())} fits returned no interval "
                            "(excluded from their cell; counts in n_failed)")
    if spec.report.notes:
        out.p(spec.report.notes)
    return out


# --------------------------------------------------------------------------------------------
# kinds that need the nested / survival MCMC engines
# --------------------------------------------------------------------------------------------
def _engine_missing(spec, ctx, what) -> AnalysisOutput:
    out = AnalysisOutput(name=spec.name, title=spec.analysis.title, kind=spec.kind,
                         description=spec.analysis.description, fast=ctx.fast)
    df = _published_subset(spec)
    scale = {"OR": "logOR", "RR": "logRR"}.get(spec.data.measure, spec.data.measure)
    out.tables["results"] = _pub_rows(df, analysis=spec.name, spec=spec,
                                      outcome_col=spec.data.outcome_column, tcol=spec.data.time,
                                      scol=spec.data.subgroup, scale=scale)
    aud = _audit.audit_published_table(df, analysis=spec.name, measure=spec.data.measure,
                                       item_cols=(spec.data.outcome_column, spec.data.time,
                                                  spec.data.subgroup))
    out.tables["audit"] = aud
    out.warnings.append(f"{what} is not available in this build; only the published numbers "
                        "and their audit are shown")
    out.h("Published-number audit")
    out.table("audit_view", aud, "Printed estimate, CI and P checked against each other.",
              show=aud[["item", "published", "recomputed", "verdict", "diagnosis"]], csv=False)
    return out


def _new_trial_rows(post_logor: np.ndarray, post_new: np.ndarray, p0: float, ns, time: str):
    """What a new trial of n patients per arm would show (normal approximations, stated).

    * assurance: P(the new trial's own 95% CI excludes OR = 1 in favour of MSC), averaging the
      power over the predictive distribution of its true log OR;
    * tipping point: the new trial's observed OR below which the updated posterior (current
      posterior, normal approximation, combined with the trial's estimate) gives P(OR > 1) < 0.5.
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


def run_survival_published(spec: AnalysisSpec, ctx: RunContext) -> AnalysisOutput:
    """Survival ORs over time: posterior OR, P(OR > 1), P(OR > threshold), absolute gain, NNT,
    prior sets x rho, new-trial predictive."""
    from bayesmeta import priors as P
    from bayesmeta import survival

    name, outc = spec.name, spec.analysis.outcome or "survival"
    out = AnalysisOutput(name=name, title=spec.analysis.title, kind=spec.kind,
                         description=spec.analysis.description, fast=ctx.fast)
    df = _published_subset(spec)
    tcol = spec.data.time
    df = df.sort_values(tcol, key=lambda c: c.astype(float)).reset_index(drop=True)
    times = [_audit._s(t) for t in df[tcol]]
    orr, lo, hi = (df[c].to_numpy(float) for c in ("estimate", "ci_low", "ci_high"))
    p0 = float(spec.report.control_survival) if math.isfinite(spec.report.control_survival) \
        else survival.DEFAULT_CONTROL_SURVIVAL
    thr = float(spec.report.thresholds[0]) if spec.report.thresholds else \
        survival.DEFAULT_THRESHOLD
    rhos = list(spec.sensitivity.rho) or [0.5]
    rho0 = min(rhos, key=lambda r: (abs(r - 0.5), r))
    mu_prior = spec.bayes.mu_prior or None
    tau_prior = spec.bayes.tau_prior or None
    offset = [0]
    exact = spec.bayes.engine == "exact"
    n_draws = 4000 if ctx.fast else 40_000   # exact i.i.d. draws kept for the DataTree only

    def fit(rho, mu_p=None, sig_p=None):
        kw = ctx.sampling(spec, offset[0])
        offset[0] += 1
        if exact:  # the model is Gaussian given sigma_time: quadrature, no sampling
            return survival.fit_survival_published_exact(
                times, orr, lo, hi, rho=rho, mu_prior=mu_p, sigma_prior=sig_p,
                control_survival=p0, threshold=thr, analysis=name, outcome=outc,
                n_draws=n_draws, seed=kw["seed"]), kw
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return survival.fit_survival_published(
                times, orr, lo, hi, rho=rho, mu_prior=mu_p, sigma_prior=sig_p,
                control_survival=p0, threshold=thr, analysis=name, outcome=outc, **kw), kw

    ctx.progress(f"  survival model, rho = {rho0:g}")
    main, kw0 = fit(rho0, mu_prior, tau_prior)
    out.datatrees["survival"] = main.datatree
    tab = main.extra["survival_table"]
    pooled_tab = tab[tab["kind"] == "pooled"].reset_index(drop=True)
    # schema rows
    pub_rows = _pub_rows(df, analysis=name, spec=spec, outcome_col=spec.data.outcome_column,
                         tcol=tcol, scol="", scale="logOR")
    brows = main.to_frame()
    allrows = results.concat(pub_rows, brows)
    out.tables["results"] = allrows
    out.tables["survival_table"] = tab
    # rho sensitivity (engine default priors) and prior sets (at rho0)
    sens = []
    for r in rhos:
        if r == rho0:
            res = main
        else:
            ctx.progress(f"  survival model, rho = {r:g}")
            res, _ = fit(r, mu_prior, tau_prior)
        sens.append(_pooled_survival_rows(res, f"rho = {r:g}"))
    sets = P.prior_sets("OR", None, benefit=+1)
    for sname in spec.sensitivity.prior_sets:
        mu_p, tau_p = sets[sname]
        ctx.progress(f"  survival model, prior set {sname}")
        res, _ = fit(rho0, mu_p, tau_p)
        sens.append(_pooled_survival_rows(res, f"{sname} (rho = {rho0:g})"))
    sens_tab = pd.concat(sens, ignore_index=True)
    out.tables["sensitivity"] = sens_tab
    # new trial
    post = main.datatree["posterior"]
    nt = []
    for t in times:
        d = np.asarray(post["log_or"].sel(time=t).values, float).ravel()
        dn = np.asarray(post["log_or_new"].sel(time=t).values, float).ravel()
        nt += _new_trial_rows(d, dn, p0, spec.report.new_trial_n or (100,), t)
    nt_tab = pd.DataFrame(nt)
    out.tables["new_trial"] = nt_tab
    # audit (printed OR/CI/P among themselves) with the posterior beside it
    bmap = {(outc, r["time"], "all"): (r["or_median"], r["or_ci_low"], r["or_ci_high"],
                                      main.method) for _, r in pooled_tab.iterrows()}
    aud = _audit.audit_published_table(df, analysis=name, measure="OR",
                                       item_cols=(spec.data.outcome_column, tcol, "subgroup"),
                                       bayes=bmap)
    out.tables["audit"] = aud

    # ---- page
    def pr(x):
        return f"{x:.2f}" if x < 0.995 else f"{x:.3f}"
    out.answers = [
        "Posterior survival OR (MSC vs control; median, 95% CrI): " + "; ".join(
            f"{r['time']} wk {r['or_median']:.2f} [{r['or_ci_low']:.2f}, {r['or_ci_high']:.2f}]"
            for _, r in pooled_tab.iterrows()) + f" (rho = {rho0:g}).",
        "Probability of any survival benefit, P(OR > 1): " + "; ".join(
            f"{r['time']} wk {pr(r['p_or_gt_1'])}" for _, r in pooled_tab.iterrows())
        + f". Of a clinically relevant benefit, P(OR > {thr:g}): " + "; ".join(
            f"{r['time']} wk {pr(r['p_or_gt_threshold'])}" for _, r in pooled_tab.iterrows())
        + ".",
        f"For a control-arm survival of {p0:.0%} (see Methods), absolute survival gain "
        "(median, 95% CrI) and NNT: " + "; ".join(
            f"{r['time']} wk {100 * r['survival_diff_median']:.1f} points "
            f"[{100 * r['survival_diff_ci_low']:.1f}, {100 * r['survival_diff_ci_high']:.1f}], "
            f"NNT {r['nnt']:.1f}" for _, r in pooled_tab.iterrows()) + ".",
        "Sensitivity: P(OR > 1) ranges over rho and prior sets from " + "; ".join(
            f"{t} wk {pr(g['p_or_gt_1'].min())}–{pr(g['p_or_gt_1'].max())}"
            for t, g in sens_tab.groupby("time", sort=False)) + ".",
    ]
    if len(nt_tab):
        big = nt_tab[nt_tab["n_per_arm"] == nt_tab["n_per_arm"].max()]
        out.answers.append(
            f"A new trial with {int(big['n_per_arm'].iloc[0])} patients per arm: predictive "
            "probability that it shows a significant benefit " + "; ".join(
                f"{r['time']} wk {r['assurance_significant_benefit']:.2f}"
                for _, r in big.iterrows())
            + "; it would overturn the current conclusion (P(OR > 1) below 0.5) if it observed "
              "an OR below " + "; ".join(f"{r['time']} wk {r['tipping_or']:.2f}"
                                         for _, r in big.iterrows()) + ".")
    out.h("Published vs Bayesian, per week")
    view = pd.DataFrame({
        "week": pooled_tab["time"],
        "published OR [95% CI]": [_fmt_ci(a, b, c) for a, b, c in
                                  df[["estimate", "ci_low", "ci_high"]].to_numpy()],
        "published P": df["p_printed"].to_numpy(),
        "posterior OR [95% CrI]": [f"{a:.2f} [{b:.2f}, {c:.2f}]" for a, b, c in
                                   pooled_tab[["or_median", "or_ci_low", "or_ci_high"]].to_numpy()],
        "P(OR > 1)": pooled_tab["p_or_gt_1"], f"P(OR > {thr:g})": pooled_tab["p_or_gt_threshold"],
        "survival gain (points)": [f"{100 * a:.1f} [{100 * b:.1f}, {100 * c:.1f}]" for a, b, c in
                                   pooled_tab[["survival_diff_median", "survival_diff_ci_low",
                                               "survival_diff_ci_high"]].to_numpy()],
        "NNT": pooled_tab["nnt"]})
    out.table("survival_view", view, f"Control-arm survival {p0:.0%}; rho = {rho0:g}.", csv=False)
    post_df = pd.DataFrame({"time": pooled_tab["time"].astype(float),
                            "estimate": np.log(pooled_tab["or_median"]),
                            "ci_low": np.log(pooled_tab["or_ci_low"]),
                            "ci_high": np.log(pooled_tab["or_ci_high"])})
    pubd = pd.DataFrame({"time": df[tcol].astype(float), "estimate": np.log(orr),
                         "ci_low": np.log(lo), "ci_high": np.log(hi)})
    prob = pd.concat([pd.DataFrame({"time": pooled_tab["time"].astype(float), "label": "P(OR > 1)",
                                    "value": pooled_tab["p_or_gt_1"]}),
                      pd.DataFrame({"time": pooled_tab["time"].astype(float),
                                    "label": f"P(OR > {thr:g})",
                                    "value": pooled_tab["p_or_gt_threshold"]})])
    out.figure("survival_over_time", plots.plot_over_time(
        post_df, published=pubd, prob=prob, transform="exp", threshold=thr,
        ylabel="survival OR (MSC vs control)"),
        "Posterior survival OR over time (median, 95% CrI band) beside the published OR, and the "
        "posterior probabilities of benefit.")
    out.h("Sensitivity to rho and priors")
    sv = sens_tab[["setting", "time", "or_median", "or_ci_low", "or_ci_high", "p_or_gt_1",
                   "p_or_gt_threshold", "survival_diff_median", "nnt", "clean"]]
    out.table("sensitivity_view", sv, "Posterior OR and probabilities per setting.", csv=False)
    out.figure("sensitivity", plots.plot_sensitivity(pd.DataFrame({
        "group": sens_tab["time"] + " wk", "setting": sens_tab["setting"],
        "estimate": np.log(sens_tab["or_median"]), "ci_low": np.log(sens_tab["or_ci_low"]),
        "ci_high": np.log(sens_tab["or_ci_high"])}), transform="exp", xlabel="survival OR"),
        "Posterior survival OR per week under each rho and prior set.")
    out.h("What would a new trial need to show?")
    out.table("new_trial_view", nt_tab, "Predictive: assurance = probability that a new trial "
              "with n patients per arm finds a significant benefit (two-sided 5%); tipping OR = "
              "the observed OR below which the combined evidence would make benefit less likely "
              "than not. Normal approximations on the log-OR scale.", csv=False)
    _audit_section(out, aud, "Printed OR, CI and P checked against each other.")
    out.h("Methods")
    out.p("Direction: the 2023 Results read OR > 1 as a higher chance of survival with MSC "
          "(its Methods call the OR the relative likelihood of death); we follow the Results, "
          "so OR > 1 = benefit.")
    out.p("Model: the four published log ORs (SE from the 95% CI width on the log scale) come "
          "from overlapping patients, so their sampling errors are correlated with an unknown "
          f"within-source correlation rho (exchangeable); the main analysis uses rho = {rho0:g} "
          f"and the sensitivity table varies it over {', '.join(f'{r:g}' for r in rhos)}. The "
          "true log ORs are partially pooled over time around a common mean. Priors: "
          + "; ".join(f"{k} ~ {v}" for k, v in main.priors.items()) + ". These are the "
          "survival engine's defaults: a normal prior on the log OR that makes ORs beyond 20 "
          "implausible, and half-normal time-to-time variation. "
          + ("Given the time-to-time SD the model is Gaussian, so the posterior is computed "
             "exactly by quadrature over it (bayesmeta.survival.fit_survival_published_exact; "
             f"the stored draws are exact i.i.d. draws, seed {kw0['seed']})." if exact
             else _methods_mcmc(ctx, kw0))
          + " " + main.diagnostics.line())
    out.p(f"Absolute benefit: control-arm survival {p0:.0%}. Source: "
          f"{spec.report.control_survival_source} The survival of MSC patients is the control "
          "odds times the OR; the gain is the difference, NNT its reciprocal.")
    out.provenance = {"seed": kw0["seed"], "rho": rho0, "control_survival": p0}
    return out


def _nested_outcome_data(g: pd.DataFrame, tcol: str, scol: str):
    """(all-patients rows, subgroup rows, excluded notes, baseline rows) for one outcome.

    Week-0 rows are the arms' difference *before* treatment: a check of baseline balance, not a
    treatment effect, so they are kept out of the model (pooling them toward the same mean as the
    follow-up effects would pull that mean toward 0); they stay in the published table and the
    audit."""
    g = g.copy()
    g["time"] = g[tcol].map(_audit._s)
    g["subgroup"] = g[scol].astype(str)
    amb = g["note"].fillna("").str.startswith("AMBIGUOUS") if "note" in g else False
    excluded = g[amb]
    g = g[~amb]
    base = pd.to_numeric(g[tcol], errors="coerce") == 0
    baseline, g = g[base], g[~base]
    allp = g[g["subgroup"] == "all"].assign(row_kind="pooled")
    subs = g[g["subgroup"] != "all"].assign(row_kind="subgroup_pooled")
    return allp, subs, excluded, baseline


def run_nested_published(spec: AnalysisSpec, ctx: RunContext) -> AnalysisOutput:
    """Published pooled MDs per outcome through the nested model: time structure of the
    all-patients estimates, and subgroup x time with the ACLF − cirrhosis contrast."""
    name = spec.name
    out = AnalysisOutput(name=name, title=spec.analysis.title, kind=spec.kind,
                         description=spec.analysis.description, fast=ctx.fast)
    df = _published_subset(spec)
    oc, tcol, scol = spec.data.outcome_column, spec.data.time, spec.data.subgroup
    frames = [_pub_rows(df, analysis=name, spec=spec, outcome_col=oc, tcol=tcol, scol=scol,
                        scale=spec.data.measure)]
    bmap, answers, contrasts, fits, i = {}, [], [], [], 0
    # all fits at once: one compiled model per structure (mcmc.fit_nested_many pads the
    # datasets of a structure to common sizes), instead of one compile per outcome
    datasets, options, excluded_by, baselines = {}, {}, {}, []
    for outcome in spec.data.outcomes:
        g = df[df[oc] == outcome]
        allp, subs, excluded_by[outcome], base = _nested_outcome_data(g, tcol, scol)
        baselines += [f"{outcome} {r['subgroup']}" for _, r in base.iterrows()]
        if len(allp) < 2 and (len(subs) < 2 or subs["subgroup"].nunique() < 2):
            answers.append(f"{outcome}: {len(allp) + len(subs)} follow-up estimate(s) printed, "
                           "nothing to pool: see the published table")
        for label, part in (("all patients over time", allp), ("by subgroup", subs)):
            if len(part) < 2 or (label == "by subgroup" and part["subgroup"].nunique() < 2):
                continue
            datasets[(outcome, label)] = part[["yi", "sei", "time", "subgroup",
                                               "row_kind"]].reset_index(drop=True)
            options[(outcome, label)] = {"seed": ctx.sampling(spec, i)["seed"],
                                         "outcome": outcome}
            i += 1
    if datasets:
        ctx.progress(f"  nested: {len(datasets)} fits ("
                     + ", ".join(f"{o} {lab} {len(d)} rows" for (o, lab), d in datasets.items())
                     + ")")
        fitted = _nested_many(datasets, options, spec, P_default_mu(spec),
                              spec.bayes.tau_prior or None, ctx.sampling(spec), name)
    for outcome in spec.data.outcomes:
        excluded = excluded_by[outcome]
        for label in ("all patients over time", "by subgroup"):
            if (outcome, label) not in datasets:
                continue
            res = fitted[(outcome, label)]
            fits.append((outcome, label, res))
            fr = res.to_frame()
            fr["method"] = fr["method"] + f" ({label})"
            frames.append(fr)
            key_t = "" if label == "by subgroup" else "all"
            for _, r in fr[fr["parameter"].str.startswith("mu[")].iterrows():
                bmap[(outcome, r["time"], r["subgroup"])] = (
                    r["estimate"], r["ci_low"], r["ci_high"], r["method"])
            pneg = res.extra.get("p_contrast_negative")
            if pneg:
                c = res.extra.get("contrast")
                for t, p in pneg.items():
                    row = fr[(fr["parameter"] == (f"contrast[{t}]" if t else "contrast"))]
                    est = row.iloc[0] if len(row) else None
                    contrasts.append({"outcome": outcome, "contrast": f"{c[0]} − {c[1]}",
                                      "time": t or "all weeks",
                                      "estimate": est["estimate"] if est is not None else math.nan,
                                      "ci_low": est["ci_low"] if est is not None else math.nan,
                                      "ci_high": est["ci_high"] if est is not None else math.nan,
                                      "P(contrast < 0)": p})
            if label == "all patients over time":
                m = fr[fr["parameter"] == "mu"].iloc[0]
                better = _benefit(spec, outcome)
                pb = res.prob("mu", below=0.0) if better < 0 else res.prob("mu", above=0.0)
                answers.append(f"{outcome}: overall MD {_fmt_ci(m['estimate'], m['ci_low'], m['ci_high'])}"
                               f" across weeks, P(benefit) = {pb:.2f}")
        if len(excluded):
            out.warnings.append(f"{outcome}: {len(excluded)} row(s) with an ambiguous subgroup "
                                "label excluded from the subgroup model (see audit)")
        out.datatrees.update({f"{o}_{'time' if lab.startswith('all') else 'subgroup'}": r.datatree
                              for o, lab, r in fits if o == outcome})
    allrows = results.concat(*frames)
    out.tables["results"] = allrows
    diag = pd.DataFrame([{"outcome": o, "model": lab, "rows": r.k, "clean": r.clean,
                          "diagnostics": r.diagnostics.line()} for o, lab, r in fits])
    for o, lab, r in fits:
        if not r.clean:
            out.warnings.append(f"{o} ({lab}): MCMC diagnostics not clean: "
                                + "; ".join(r.diagnostics.problems)
                                + " — treat this fit's numbers with caution")
    ctab = pd.DataFrame(contrasts)
    if len(ctab):
        out.tables["contrasts"] = ctab
    aud = _audit.audit_published_table(df, analysis=name, measure=spec.data.measure,
                                       item_cols=(oc, tcol, scol), bayes=bmap)
    out.tables["audit"] = aud
    out.answers = answers + ([
        "Subgroup contrast ACLF − cirrhosis: " + "; ".join(
            f"{r['outcome']} {r['time']}: {_fmt_ci(r['estimate'], r['ci_low'], r['ci_high'])}, "
            f"P(< 0) = {r['P(contrast < 0)']:.2f}" for _, r in ctab.iterrows())] if len(ctab)
        else [])
    fixed = df[df["model_input"] != "as printed"]
    for _, r in fixed.iterrows():
        out.warnings.append(f"{r[oc]} {_audit._s(r[tcol])} wk {r[scol]}: {r['model_input']}")
    if baselines:
        out.p(f"Week-0 (baseline) rows ({', '.join(baselines)}) compare the arms before "
              "treatment: they check baseline balance and are not treatment effects, so they are "
              "shown as published and audited but not entered into the nested model.")
    out.h("Published vs Bayesian")
    mu_rows = allrows[allrows["parameter"].str.startswith("mu[") |
                      (allrows["source"] == "published")].copy()
    mu_rows["parameter"] = "mu"
    out.table("side_by_side", allrows, "Per outcome, week and subgroup: published pooled MD "
              "and the nested-model posterior of that cell (mean [95% CrI]).",
              show=_side_by_side(mu_rows, keys=("outcome", "time", "subgroup")), csv=False)
    if len(ctab):
        out.h("Subgroup contrast (ACLF − cirrhosis)")
        out.table("contrast_view", ctab, "Posterior of the subgroup difference per week; the "
                  "Bayesian counterpart of RevMan's test for subgroup differences.", csv=False)
    for outcome in spec.data.outcomes:
        sel = allrows[(allrows["outcome"] == outcome) & (
            (allrows["source"] == "published") | allrows["parameter"].str.startswith("mu["))]
        if not len(sel):
            continue
        pooled = pd.DataFrame([{"panel": f"{r['subgroup'] or 'all'}",
                                "source": r["source"],
                                "label": _cell_label(r["time"], r["source"]),
                                "estimate": r["estimate"], "ci_low": r["ci_low"],
                                "ci_high": r["ci_high"]} for _, r in sel.iterrows()])
        out.figure(f"forest_{re_safe(outcome)}", plots.plot_forest(
            pd.DataFrame(columns=["panel", "study", "estimate", "ci_low", "ci_high"]), pooled,
            xlabel=f"{outcome}: MD (MSC − control)"),
            f"{outcome}: published pooled MD per week and subgroup (grey) and nested-model "
            "posterior of each cell (blue).")
    if len(diag):
        out.h("MCMC diagnostics")
        out.table("diagnostics", diag, "Every nested fit: R-hat, ESS, divergences.")
    out.h("Published-number audit")
    out.table("audit_view", aud, "Printed MD, CI and P checked against each other; nested-model "
              "posterior of the same cell beside it.",
              show=aud[["item", "published", "recomputed", "bayesian", "bayesian_ci_low",
                        "bayesian_ci_high", "verdict", "diagnosis"]], csv=False)
    out.h("Methods")
    out.p("Each printed MD with its 95% CI becomes yi and SE. Rows for all patients and rows "
          "for a subgroup summarise the same patients, so they are never pooled together: per "
          "outcome, the all-patients estimates form one nested model over weeks (each week "
          "partially pooled toward the outcome's mean), and the subgroup estimates a second "
          "(cells subgroup × week pooled toward their subgroup, subgroups toward the mean), "
          "which gives the ACLF − cirrhosis contrast. Rows printed once for 'both subgroups' "
          "are excluded from the subgroup model. Priors: the engine's scale-aware defaults "
          "(bayesmeta.priors.default_mu_prior / default_tau_prior for MD from the rows' SEs). "
          + (_methods_mcmc(ctx, ctx.sampling(spec)) if fits else ""))
    return out


def _nested_many(datasets, options, spec, mu_p, tau_p, kw, name):
    """``mcmc.fit_nested_many`` with the run's sampling settings (per-fit seeds in
    ``options``; target_accept at least the engine's nested default)."""
    from bayesmeta import mcmc

    kw = dict(kw)
    kw.pop("seed", None)
    kw["target_accept"] = max(kw["target_accept"],
                              getattr(mcmc, "NESTED_TARGET_ACCEPT", kw["target_accept"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mcmc.fit_nested_many(datasets, options=options, mu_prior=mu_p, tau_prior=tau_p,
                                    measure=spec.data.measure, analysis=name, **kw)


def _pooled_survival_rows(res, setting: str) -> pd.DataFrame:
    """The pooled rows of a survival fit's table, labelled with its sensitivity setting."""
    t_ = res.extra["survival_table"]
    t_ = t_[t_["kind"] == "pooled"].copy()
    t_.insert(0, "setting", setting)
    t_.insert(1, "clean", res.clean)
    return t_


def _cell_label(time: str, source: str) -> str:
    """Forest-plot row of a nested-model cell: "12 wk · bayesian"; a subgroup mean (no
    time) is "all weeks (subgroup mean) · bayesian"."""
    return (f"{time} wk" if str(time) else "all weeks (subgroup mean)") + f" · {source}"


def P_default_mu(spec):
    from bayesmeta import priors as P

    return P.parse_prior(spec.bayes.mu_prior, kind="mu") if spec.bayes.mu_prior else None


def re_safe(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


KINDS: dict[str, Callable[[AnalysisSpec, RunContext], AnalysisOutput]] = {
    "fig3_meld": run_fig3_meld,
    "one_arm": run_one_arm,
    "survival_published": run_survival_published,
    "nested_published": run_nested_published,
    "complications": run_complications,
    "generic": run_generic,
    "simulation": run_simulation,
}


def run_spec(spec: AnalysisSpec, ctx: RunContext) -> AnalysisOutput:
    """Run one validated spec through its kind function."""
    fn = KINDS[spec.kind]
    t0 = time.perf_counter()
    try:
        out = fn(spec, ctx)
    except (BayesMetaError, OSError):
        raise  # already a one-line message (the CLI formats OSError itself)
    except Exception as err:  # noqa: BLE001 - an unexpected failure (sampler crash, bug)
        what = " ".join(str(err).split()) or "no message"
        raise EstimationError(
            f"analysis '{spec.name}' ({spec.kind}) failed: {type(err).__name__}: {what}. "
            "Rerun with --debug for the traceback; if the data and spec look right, please "
            "report it as a bug") from err
    out.seconds = time.perf_counter() - t0
    out.provenance.update({
        "spec": str(spec.path.name), "spec_sha256": spec.sha256,
        "data": spec.data_path.name, "data_sha256": _sha256(spec.data_path),
        "published": spec.published_path.name if spec.published_path else None,
        "published_sha256": _sha256(spec.published_path) if spec.published_path else None,
        "seed": ctx.seed_for(spec), "kind": spec.kind, "fast": ctx.fast,
        "seconds": round(out.seconds, 2)})
    return out


def provenance(outputs, ctx: RunContext, argv) -> dict:
    import importlib.metadata as md

    from bayesmeta import __version__

    def ver(p):
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return None
    deps = ["numpy", "scipy", "pandas", "xarray", "pymc", "pytensor", "arviz", "arviz-base",
            "arviz-stats", "nutpie", "matplotlib", "h5netcdf", "h5py"]
    return {
        "bayesmeta_version": __version__,
        "python": sys.version.split()[0], "platform": platform.platform(),
        "dependencies": {d: ver(d) for d in deps},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(argv or ["bayesmeta", "run"]),
        "fast": ctx.fast, "seed": ctx.seed,
        "analyses": {o.name: o.provenance for o in outputs},
    }


def _uses_mcmc(spec: AnalysisSpec) -> bool:
    """Does this analysis fit PyMC models (and so pay nutpie's numba compile)?"""
    return spec.kind in ("fig3_meld", "nested_published") or spec.bayes.engine == "mcmc"


def _worker_say(msg: str) -> None:
    print(f"  (worker) {msg.strip()}", file=sys.stderr, flush=True)


def _run_in_worker(conn, paths, fast, seed, verbose=False):
    """Worker-process entry (top level, so it pickles): load and run the specs in order (the
    parent has validated them already; specs travel as paths); send back ("ok", output) as each
    finishes (the parent renders its figures while the next one runs), or ("error",
    exception)."""
    try:
        # numba fastmath off process-wide, also for processes this worker starts (pymc's own
        # sampler runs chains in child processes): see bayesmeta.mcmc._deterministic_numba
        flags = os.environ.get("PYTENSOR_FLAGS", "")
        os.environ["PYTENSOR_FLAGS"] = ",".join(filter(None, [flags, "numba__fastmath=False"]))
        ctx = RunContext(fast=fast, seed=seed, progress=_worker_say if verbose else
                         (lambda msg: None))
        for p in paths:
            spec = load_spec(p)
            ctx.progress(f"{spec.name} ({spec.kind}){' --fast' if fast else ''}")
            conn.send(("ok", run_spec(spec, ctx)))
    except BaseException as err:  # noqa: BLE001 - handed to the parent, which re-raises it
        conn.send(("error", err))
    finally:
        conn.close()


def _run_all(specs, ctx: RunContext, jobs: int) -> list[AnalysisOutput]:
    """Run every spec; return outputs in spec order.

    With ``jobs > 1`` the MCMC analyses run in one worker process (so their one compiled nested
    model is shared, as in a serial run) while this process runs the exact and classical ones.
    Each analysis is seeded from its own spec, so the numbers do not depend on the schedule.
    The worker is terminated on any error or interrupt before the report is written.
    """
    say = ctx.progress
    n = len(specs)
    mcmc_idx = [i for i, s in enumerate(specs) if _uses_mcmc(s)]
    rest_idx = [i for i in range(n) if i not in mcmc_idx]
    outputs: list[AnalysisOutput | None] = [None] * n
    proc = conn = None
    if jobs > 1 and mcmc_idx and rest_idx:
        import multiprocessing as mp

        # spawn: a clean interpreter (no inherited numba/OpenMP threads); not a daemon, so the
        # pymc sampler may start its own chain processes inside it
        ctxmp = mp.get_context("spawn")
        conn, child = ctxmp.Pipe(duplex=False)
        proc = ctxmp.Process(target=_run_in_worker, daemon=False,
                             args=(child, [str(specs[i].path) for i in mcmc_idx], ctx.fast,
                                   ctx.seed, ctx.verbose))
        proc.start()
        child.close()
        say(f"  {len(mcmc_idx)} MCMC analys{'is' if len(mcmc_idx) == 1 else 'es'} "
            f"({', '.join(specs[i].name for i in mcmc_idx)}) running in a worker process")
        serial = rest_idx
    else:
        serial = list(range(n))
    try:
        for i in serial:
            spec = specs[i]
            say(f"[{i + 1}/{n}] {spec.name} ({spec.kind}){' --fast' if ctx.fast else ''}")
            outputs[i] = run_spec(spec, ctx)
            if proc is not None:  # render figures while the worker is still sampling
                prerender(outputs[i])
            say(f"      done in {outputs[i].seconds:.1f} s")
        if proc is not None:
            for k, i in enumerate(mcmc_idx):
                try:
                    status, value = conn.recv()
                except EOFError:
                    raise EstimationError(f"the worker process running the MCMC analyses died "
                                          f"(exit code {proc.exitcode})",
                                          ) from None
                if status == "error":
                    raise value
                outputs[i] = value
                say(f"[{i + 1}/{n}] {value.name} ({value.kind}) done in {value.seconds:.1f} s "
                    "(worker)")
                if k + 1 < len(mcmc_idx):  # render while the worker runs the next one
                    prerender(value)
    finally:
        if proc is not None:
            if proc.is_alive():
                proc.terminate()
            proc.join()
            conn.close()
    return outputs


def run(spec_args=(), *, out_dir="reports", seed: int | None = None, fast: bool = False,
        progress: Callable[[str], None] | None = None, argv=None, jobs: int = 2) -> Path:
    """Validate and run specs, write the report; return the output directory.

    Parameters
    ----------
    spec_args : sequence of paths
        Spec files or directories; empty → every bundled spec.
    out_dir : path
        Report directory (replaced atomically).
    seed : int, optional
        Overrides every spec's seed.
    fast : bool
        Few MCMC draws (smoke tests); the report says so.
    jobs : int
        2 (default): MCMC analyses run in a worker process beside the others; 1: serial.
        The numbers are the same either way.
    progress : callable, optional
        Receives progress lines; with ``jobs = 2`` the worker prints its own lines, prefixed
        ``(worker)``, on stderr (none when ``progress`` is None).
    """
    say = progress or (lambda msg: None)
    paths = expand_spec_args(list(spec_args))
    if not paths:
        raise SpecError("no spec files found", fix="Give .toml files or a directory of them.")
    specs = [load_spec(p) for p in paths]  # validate all before running any
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"analysis names must be unique; repeated: {dup}")
    # refuse a foreign --out folder before fitting anything (write_report checks it again)
    from bayesmeta.outdir import claim_dir
    from bayesmeta.report import MARKER

    claim_dir(out_dir, marker=MARKER, what="report")
    ctx = RunContext(fast=fast, seed=seed, progress=say, verbose=progress is not None)
    t_all = time.perf_counter()
    outputs = _run_all(specs, ctx, jobs)
    res = [o.tables["results"] for o in outputs if "results" in o.tables]
    auds = [o.tables["audit"] for o in outputs if "audit" in o.tables and len(o.tables["audit"])]
    results_all = results.concat(*res) if res else None
    audit_all = pd.concat(auds, ignore_index=True) if auds else None
    prov = provenance(outputs, ctx, argv)
    prov["seconds_total"] = round(time.perf_counter() - t_all, 2)
    write_report(outputs, out_dir, prov, audit=audit_all, results=results_all, progress=say)
    return Path(out_dir)
