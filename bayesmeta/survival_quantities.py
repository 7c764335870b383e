"""What the survival answer needs beyond the posterior: a sensitivity grid, ranges, absolute
effects, a new trial and the other reading of the ORs. Numbers only; the report words them
(:mod:`bayesmeta.survival_sections`).

One published-OR survival analysis (one subgroup's ORs over time) is fitted under

* the main setting: ``[bayes] correlation`` (AR(1) by default) with ``rho ~ [bayes] rho_prior``
  (uniform by default) integrated out, the model's default priors, no bias;
* the correlation axis: each structure × each fixed rho of ``[sensitivity] rho``;
* the prior axis: each ``[sensitivity] prior_sets`` entry (priors on the parameters they
  describe: :func:`bayesmeta.survival_fit.published_prior_sets`);
* the bias axis: ``[sensitivity] bias_sd`` (additive bias of the pooled log OR, mean 0) and
  ``bias_exaggeration`` (the published OR exaggerates the benefit by that factor);

with rho integrated at 12 Gauss-Jacobi nodes outside the main fit (32): the probabilities agree
to about 1e-4. :func:`bayesmeta.ranges.answer_ranges` then gives each probability's main value
and its range over every axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesmeta.fits import Param

#: Gauss-Jacobi nodes of rho outside the main fit (probabilities within ~1e-4 of 32 nodes)
SENS_RHO_NODES = 12


@dataclass
class SurvivalAnswer:
    """Everything the survival section shows for one subgroup's ORs over time."""

    coords: dict
    fit: object                          # the main fit (bayesmeta.survival_fit.SurvivalExactFit)
    times: list
    grid: pd.DataFrame                   # one row per (setting, time)
    ranges: pd.DataFrame                 # bayesmeta.ranges.answer_ranges
    axes: tuple
    main: dict
    sens_fits: list = field(default_factory=list)   # (setting dict, fit)
    absolute: pd.DataFrame | None = None
    new_trial: pd.DataFrame | None = None
    other: pd.DataFrame | None = None
    thresholds: tuple = ()
    notes: list = field(default_factory=list)


def _setting_label(s: dict) -> str:
    parts = [f"{s['correlation']}, rho {s['rho']}"]
    if s["prior"] != "default":
        parts.append(f"prior set {s['prior']}")
    if s["bias"] != "none":
        parts.append(f"bias {s['bias']}")
    return "; ".join(parts)


def analyse(rows: pd.DataFrame, spec, ctx, *, analysis: str, outcome: str,
            coords: dict) -> SurvivalAnswer:
    """Fit the main model and the sensitivity grid to one subgroup's published ORs (rows sorted
    by time, columns ``time, estimate, ci_low, ci_high``) and compute the answers."""
    from bayesmeta import absolute as A
    from bayesmeta import newtrial as NT
    from bayesmeta.bias_adjust import PooledBias
    from bayesmeta.direction import Direction
    from bayesmeta.ranges import answer_ranges
    from bayesmeta.survival_exact import fit_survival_published_exact
    from bayesmeta.survival_fit import (as_fit, other_reading, prior_kwargs,
                                        published_prior_sets)

    rep, sens, bay = spec.report, spec.sensitivity, spec.bayes
    times = rows["time"].tolist()
    orr, lo, hi = (rows[c].to_numpy(float) for c in ("estimate", "ci_low", "ci_high"))
    or_means = "death" if rep.events == "deaths" else "survival"
    thr = tuple(float(t) for t in rep.thresholds) or (1.5,)
    if or_means == "death":  # thresholds are stated on the published (death) scale
        thr = tuple(1.0 / t for t in thr)
    seed = ctx.sampling(spec, ctx.next_offset())["seed"]
    n_draws = 4000 if ctx.fast else 40_000
    rho_main = bay.rho_prior or (sorted(sens.rho)[len(sens.rho) // 2] if sens.rho else 0.5)
    base_kw = dict(or_means=or_means, threshold=thr[0], analysis=analysis, outcome=outcome)
    if spec.bayes.mu_prior:
        base_kw["mu_prior"] = spec.bayes.mu_prior
    if spec.bayes.tau_prior:
        base_kw["sigma_prior"] = spec.bayes.tau_prior

    def fit(correlation, rho, priors=None, bias=None, main=False):
        kw = dict(base_kw, **(priors or {}))
        return fit_survival_published_exact(
            times, orr, lo, hi, rho=rho, correlation=correlation, bias=bias,
            n_rho=32 if main else SENS_RHO_NODES, n_draws=n_draws if main else 1,
            seed=seed, **kw)

    main_s = {"correlation": bay.correlation, "rho": "prior" if bay.rho_prior else
              f"{rho_main:g}", "prior": "default", "bias": "none"}
    res = fit(bay.correlation, rho_main, main=True)
    main_fit = as_fit(res)
    settings = [(main_s, main_fit)]
    for corr in ("ar1", "exchangeable"):
        for r in sens.rho:
            settings.append(({"correlation": corr, "rho": f"{r:g}", "prior": "default",
                              "bias": "none"}, as_fit(fit(corr, r))))
    sets = published_prior_sets(list(sens.prior_sets)) if sens.prior_sets else {}
    for name, pset in sets.items():
        if name == "weakly_informative":
            continue  # the defaults: the main setting
        settings.append(({**main_s, "prior": name},
                         as_fit(fit(bay.correlation, rho_main, prior_kwargs(pset)))))
    biases = [(f"SD {s:g}", PooledBias(0.0, float(s), "stated in [sensitivity] bias_sd"))
              for s in sens.bias_sd if s > 0]
    biases += [(f"OR exaggerated x{f:g}", PooledBias.exaggeration(
        float(f), 0.0, "stated in [sensitivity] bias_exaggeration")) for f in
        sens.bias_exaggeration]
    for label, b in biases:
        settings.append(({**main_s, "bias": label}, as_fit(fit(bay.correlation, rho_main,
                                                               bias=b))))
    # the grid of probabilities (and survival ORs) per setting and time; the median does not
    # depend on the interval level, so it is read from the summary at the report's level (the
    # one the results table reads, cached by the fit)
    level = float(rep.ci_prob)
    grid = []
    for s, f in settings:
        summ = f.summary(level)
        for t in times:
            p = Param("log_or", time=t)
            rec = {**s, "time": t, "or_median": math.exp(summ.loc[p, "median"]),
                   "p_benefit": f.prob(p, above=0.0)}
            for x in thr:
                rec[f"p_or_gt_{x:g}"] = f.prob(p, above=math.log(x))
            grid.append(rec)
    grid = pd.DataFrame(grid)
    axes = ("correlation", "rho", "prior", "bias")
    quantities = ["p_benefit"] + [f"p_or_gt_{x:g}" for x in thr]
    ranges = answer_ranges(grid, quantities, axes, main=main_s, by=("time",))
    ans = SurvivalAnswer(coords=coords, fit=main_fit, times=times, grid=grid, ranges=ranges,
                         axes=axes, main=main_s, sens_fits=settings[1:], thresholds=thr)
    ans.notes += list(res.notes)
    # absolute effects, from the stated control risk per time (never a default)
    direction = Direction(better="higher_is_better", events="survivors")
    base_stmt = {str(k): str(v[0]) for k, v in dict(rep.baseline).items()}
    missing = [t for t in times if t not in base_stmt]
    if base_stmt and not missing:
        ev = rep.events or "survivors"
        absr, ntr = [], []
        for t in times:
            b = A.baseline_from_statement(base_stmt[t], events=ev, source=rep.baseline_source,
                                          where=f"report.baseline.{t}")
            eff = main_fit.effect(Param("log_or", time=t))
            ae = A.absolute_effect(eff, b, direction, scale="logOR", mcid=float(rep.mcid),
                                   level=float(rep.ci_prob))
            absr.append({"time": t, "baseline": base_stmt[t], **ae.as_dict()})
            surv = b if b.events == "survivors" else b.complement()
            p0 = float(np.asarray(surv.quantile([0.5]), float).ravel()[0])
            for n in (rep.new_trial_n or (100,)):
                pred = main_fit.predictive(t)
                nt = NT.new_trial(pred, direction, n_per_arm=int(n), control_risk=p0,
                                  effect_for_se=float(main_fit.summary(level).loc[
                                      Param("log_or", time=t), "median"]),
                                  level=float(rep.ci_prob))
                ntr.append({"time": t, **nt.as_dict()})
        ans.absolute = pd.DataFrame(absr)
        ans.new_trial = pd.DataFrame(ntr)
    elif base_stmt:
        ans.notes.append("absolute effects need the control-arm risk at every time point; "
                         f"[report] baseline has none for {', '.join(missing)}")
    ans.other = other_reading(times, orr, lo, hi, or_means=or_means, threshold=thr[0],
                              rho=rho_main, correlation=bay.correlation,
                              n_rho=SENS_RHO_NODES, seed=seed)
    return ans
