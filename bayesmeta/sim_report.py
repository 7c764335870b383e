"""The simulation analysis: operating characteristics of the intervals, as a report page.

A spec with a ``[simulation]`` section generates its data: :mod:`bayesmeta.simulate` runs
in-process at the spec's size and this module renders coverage, width and bias with their
Monte Carlo SEs, a figure and answer lines.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bayesmeta import plots
from bayesmeta.report import AnalysisOutput

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


def _coverage_view(table: pd.DataFrame, cells: list[str], methods, pct) -> pd.DataFrame:
    """Coverage "% (MC SE %)" with a row per cell (labels ``cells``, one per row of ``table``,
    in their order of first appearance) and a column per method (in ``methods``' order)."""
    show = table.assign(cell=cells, txt=[f"{pct(c)} ({100 * s:.1f})" for c, s in
                                         table[["coverage", "coverage_mcse"]].to_numpy()])
    piv = show.pivot(index="cell", columns="method", values="txt")
    return piv.loc[list(dict.fromkeys(cells)), [m for m in methods if m in piv.columns]]


def run_simulation(spec, ctx) -> AnalysisOutput:
    """Coverage, width and bias of 95% intervals with 2-10 studies, by simulation.

    Runs :func:`bayesmeta.simulate.simulate` in-process (no Dask cluster) with the spec's
    ``[simulation]`` settings (``fast_n_per_cell`` with ``--fast``); one chunk per cell, so the
    numbers depend only on the settings and the seed.
    """
    from bayesmeta import simulate as sim

    S = spec.simulation
    if S.model == "nested":
        return run_nested_simulation(spec, ctx)
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
    out = AnalysisOutput(name=spec.name, title=spec.analysis.title, kind="simulation",
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
    by_cell = table.sort_values(["scale", "k", "tau"], kind="stable")
    piv = _coverage_view(by_cell, [f"{r.scale}, k = {r.k}, tau = {r.tau:g}"
                                   for r in by_cell.itertuples()], methods, pct)
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
    return _finish(spec, out)


def run_nested_simulation(spec, ctx) -> AnalysisOutput:
    """The nested model's operating characteristics (``[simulation] model = "nested"``):
    coverage of the subgroup contrast per time and of the cell means, per true tau and
    r_true, by :func:`bayesmeta.simulate.simulate` in-process at the spec's size."""
    from bayesmeta import ghm_sim
    from bayesmeta import simulate as sim

    S = spec.simulation
    level = float(spec.report.ci_prob)
    n = int(S.fast_n_per_cell if ctx.fast else S.n_per_cell)
    seed = ctx.seed_for(spec)
    cfg = sim.config_from_spec(S, spec.given.get("simulation", ()), level=level, n=n, seed=seed,
                               chunk_size=n)
    cells = len(cfg.scenarios())
    ctx.progress(f"  simulate {cells} cells x {n} nested meta-analyses (in-process)")
    res = sim.simulate(cfg, out=None, workers=0, quiet=True, figure=False)
    table = res.table
    out = AnalysisOutput(name=spec.name, title=spec.analysis.title, kind="simulation",
                         description=spec.analysis.description, fast=ctx.fast)
    out.tables["coverage"] = table
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    taus = sorted(set(table["tau"]))
    tau_txt = "/".join(f"{t:g}" for t in taus)
    answers = []
    for k in sorted(set(table["k"])):
        for e in ghm_sim.ESTIMANDS:
            for r in sorted(set(table["r_true"])):
                g = table[(table["k"] == k) & (table["estimand"] == e) & (table["r_true"] == r)]
                parts = []
                for m in ghm_sim.METHODS:
                    cov = g[g["method"] == m].sort_values("tau")["coverage"]
                    if len(cov):
                        parts.append(f"{m} {'/'.join(pct(c) for c in cov)}%")
                answers.append(f"{e}, k = {k} per subgroup, r_true = {r:g}: coverage at tau = "
                               f"{tau_txt}: " + "; ".join(parts) + ".")
    out.answers = answers
    out.h("Do the nested model's intervals keep their promise?")
    piv = _coverage_view(table, [f"{r.estimand}, k = {r.k}, r_true = {r.r_true:g}, "
                                 f"tau = {r.tau:g}" for r in table.itertuples()],
                         ghm_sim.METHODS, pct)
    out.table("coverage_view", piv.reset_index(),
              f"Coverage of the true value by the {level:.0%} interval, % (Monte Carlo SE), "
              f"{n} simulated meta-analyses per row (3 contrasts or 6 cells each).", csv=False)
    out.figure("coverage", ghm_sim.nested_coverage_figure(table, level),
               f"Coverage against true tau, one panel per estimand x r_true, a line per method; "
               f"dashed: {level:.0%}; bars: ±2 MC SE.")
    out.h("Coverage, width and bias with Monte Carlo SEs")
    out.table("coverage_table", table, "All rows: coverage, mean interval width and bias of "
              "the point estimate (posterior mean for GHM), each with its MC SE; rmse; targets "
              "without an interval (n_failed).", csv=False, digits=4)
    out.h("Methods")
    cmd = (f"bayesmeta simulate {spec.path.name if spec.path else 'SPEC'} --n 1000 "
           f"--seed {seed} --out simulation-nested-full")
    out.p("Data-generating model: the Gaussian hierarchical model (bayesmeta.ghm_sim): two "
          "subgroups (true levels -0.5 and -0.2), k studies per subgroup, times 4, 12, 24, "
          "arms log-uniform on [15, 150] patients with outcome SD 1, cell deviations "
          "N(0, 0.2²), study effect N(0, (tau/2)²), within-cell heterogeneity N(0, tau²), "
          "sampling errors of a study correlated r_true across its times. Each simulated "
          "meta-analysis is analysed by the exact GHM with its default priors assuming "
          "r = 0.5 (GHM-r0.5) or 0 (GHM-r0), and by the REML twin assuming r = 0.5 with Wald "
          f"z (REML-z) or t (REML-t) intervals. n = {n} meta-analyses per row ({cells} "
          f"scenarios, {res.n_meta} in all, in-process, seed {seed})"
          + (" — the --fast size" if ctx.fast else "") + ". The MC SE treats the 3 contrasts "
          "(6 cells) of one meta-analysis as independent, so it is somewhat too small. "
          f"A larger run is `{cmd}` (resumable, on a local Dask cluster or --scheduler "
          "tcp://HOST:PORT); measured throughput: benchmarks/nested_sim.md.")
    if table["n_failed"].sum():
        out.warnings.append(f"{int(table['n_failed'].sum())} targets got no interval "
                            "(excluded from their row; counts in n_failed)")
    return _finish(spec, out)


def _finish(spec, out: AnalysisOutput) -> AnalysisOutput:
    """The spec's free-text notes and provenance paragraph, last on a simulation page."""
    from bayesmeta.sections import provenance_paragraph

    if spec.report.notes:
        out.p(spec.report.notes)
    provenance_paragraph(spec, out)
    return out
