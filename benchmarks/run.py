"""Benchmarks: ``python benchmarks/run.py [--quick] [--skip-mcmc] [--skip-run] [--skip-routes]
[--skip-anchors] [--skip-engines] [--skip-latency] [--warm N] [--sim-n N]``.

Writes ``benchmarks/results.md`` (and ``results.json``: the engine/batch/simulate rows, read by
the report; ``latency.json``: the latency, run, routes and anchors figures): the machine, the date and load, each
latency target with its measured figure, then the tables below. Wall time beside CPU time
(user + system of the measured processes): the machine is shared, so wall time varies with the
load and CPU time is the steadier figure. Ratios are against a baseline measured in the same run.

1. per-analysis latency (``latency.analyses``): one fresh process per analysis (NNHM by
   ``bayesmeta bayes --engine mcmc``; the nested model by ``bayesmeta bayes --model nested``,
   exact and ``--engine mcmc``; binomial-normal and the library ``mcmc.fit_nested`` by a script),
   cold (empty compile caches) and warm, with the fit's own kernel-load and sampling seconds,
   beside ``bayesmeta bayes`` (exact) and ``bayesmeta classical``;
2. ``bayesmeta run`` of every bundled spec, cold and warm, with peak memory;
3. anchors (``anchors.py``): PyMC's default ``pm.sample`` on the same model, R metafor ``rma()``,
   R bayesmeta ``bayesmeta()`` and brms (nested model: first fit and refit), skipped with a note
   when absent;
4. the routes measured to choose the MCMC backend (``latency.routes``), cold and warm;
5. exact NNHM vs MCMC per fit, classical battery, batch throughput, ``bayesmeta simulate``.

A skipped part keeps the figures of the previous run (``latency.json`` / ``results.json``),
shown under a heading that names the date they were measured on, so a partial re-run never
presents old figures as new ones.

Timings are medians of repeats; no test asserts on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parent
PY = sys.executable


def _median_time(fn, repeat=5, number=1):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        ts.append((time.perf_counter() - t0) / number)
    return statistics.median(ts)


def _data(k, seed=1):
    rng = np.random.default_rng(seed)
    v = rng.uniform(0.02, 0.5, k)
    y = rng.normal(-0.3, np.sqrt(v + 0.09))
    return y, v


def bench_exact_vs_pymc(rows, quick, skip_mcmc):
    from bayesmeta import exact, priors

    tp = priors.HalfNormal(0.5)
    for k in (2, 10, 50):
        y, v = _data(k)
        t_ex = _median_time(lambda: exact.fit_exact(y, vi=v, tau_prior=tp).mu, repeat=7)
        rows.append(dict(group="exact NNHM", case=f"k = {k}: fit_exact (+ mu summary)",
                         seconds=t_ex, baseline="", ratio=""))
        if skip_mcmc:
            continue
        try:
            from bayesmeta import mcmc
            mcmc.clear_cache()
            draws = 300 if quick else 1000
            r1 = mcmc.fit_nnhm(y, np.sqrt(v), tau_prior=tp, draws=draws, tune=draws,
                               chains=4, cores=2, warn=False)
            r2 = mcmc.fit_nnhm(y, np.sqrt(v), tau_prior=tp, draws=draws, tune=draws,
                               chains=4, cores=2, warn=False, seed=2)
            comp, samp = r1.compile_seconds, statistics.median([r1.sampling_seconds,
                                                                 r2.sampling_seconds])
            rows.append(dict(group="exact NNHM",
                             case=f"k = {k}: MCMC NNHM kernel load (0 once loaded)",
                             seconds=comp, baseline="exact", ratio=f"{comp / t_ex:.0f}x"))
            rows.append(dict(group="exact NNHM",
                             case=f"k = {k}: MCMC NNHM sampling 4x{draws} (+{draws} tune)",
                             seconds=samp, baseline="exact", ratio=f"{samp / t_ex:.0f}x"))
        except Exception as err:  # noqa: BLE001 - report, don't die
            rows.append(dict(group="exact NNHM", case=f"k = {k}: MCMC NNHM",
                             seconds=float("nan"), baseline="", ratio=f"failed: {err}"[:80]))


_BATTERY = r"""
import sys, time, warnings, numpy as np
warnings.simplefilter("ignore")
from bayesmeta import classical
k = int(sys.argv[1])
rng = np.random.default_rng(1)
v = rng.uniform(0.02, 0.5, k); y = rng.normal(-0.3, np.sqrt(v + 0.09))
classical.rma(y[:5], v[:5], method="DL")
t0 = time.perf_counter()
for m in classical.METHODS:
    for t in classical.TESTS:
        classical.rma(y, v, method=m, test=t)
print(time.perf_counter() - t0)
"""


def bench_classical(rows, quick):
    from bayesmeta import classical

    n_fits = len(classical.METHODS) * len(classical.TESTS)
    base = None
    for k in (10, 1000, 10000):
        limit = 120
        try:
            out = subprocess.run([PY, "-c", _BATTERY, str(k)], capture_output=True, text=True,
                                 timeout=limit, cwd=ROOT)
            sec = float(out.stdout.strip().splitlines()[-1])
            note = ""
        except subprocess.TimeoutExpired:
            sec, note = float("nan"), f"> {limit} s (stopped)"
        except (ValueError, IndexError):
            sec, note = float("nan"), "failed: " + out.stderr.strip().splitlines()[-1][:60]
        if k == 10:
            base = sec
        rows.append(dict(group="classical battery",
                         case=f"k = {k}: {n_fits} fits (9 tau² estimators x z/KNHA)",
                         seconds=sec, baseline="k = 10" if k != 10 else "",
                         ratio=note or ("" if k == 10 else f"{sec / base:.0f}x")))


def bench_batch(rows, quick):
    import warnings

    from bayesmeta import batch, classical, exact, priors

    n, k = (2000 if quick else 10000), 10
    rng = np.random.default_rng(3)
    V = rng.uniform(0.02, 0.5, (n, k))
    Y = rng.normal(-0.3, np.sqrt(V + 0.09))
    tp = priors.HalfNormal(0.5)
    m_loop = 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_loop = _median_time(lambda: [classical.rma(Y[i], V[i], method=m, test=t)
                                       for i in range(m_loop) for m in ("DL", "REML", "PM")
                                       for t in ("z", "knha")], repeat=3) / m_loop
    t_b = _median_time(lambda: batch.classical_batch(Y, V, methods=("DL", "REML", "PM")),
                       repeat=3) / n
    rows.append(dict(group="batch (k = 10)", case="classical.rma loop: DL/REML/PM x z/KNHA",
                     seconds=t_loop, baseline="", ratio=f"{1 / t_loop:.0f} meta-analyses/s"))
    rows.append(dict(group="batch (k = 10)", case=f"classical_batch, same battery, n = {n}",
                     seconds=t_b, baseline="loop", ratio=f"{t_loop / t_b:.0f}x faster; "
                     f"{1 / t_b:.0f} meta-analyses/s"))
    t_eloop = _median_time(lambda: [exact.fit_exact(Y[i], vi=V[i], tau_prior=tp).mu
                                    for i in range(50)], repeat=3) / 50
    t_eb = _median_time(lambda: batch.exact_batch(Y, V, tau_prior=tp, G=96, median=False),
                        repeat=3) / n
    rows.append(dict(group="batch (k = 10)", case="fit_exact loop (mu mean/sd/ETI)",
                     seconds=t_eloop, baseline="", ratio=f"{1 / t_eloop:.0f} meta-analyses/s"))
    rows.append(dict(group="batch (k = 10)", case=f"exact_batch (G = 96), n = {n}",
                     seconds=t_eb, baseline="loop", ratio=f"{t_eloop / t_eb:.0f}x faster; "
                     f"{1 / t_eb:.0f} meta-analyses/s"))


def bench_simulate(rows, sim_n, quick):
    from bayesmeta import simulate as sim

    per = max(sim_n // 40, 10)
    cfg = sim.SimulationConfig(n=per, chunk_size=max(per // 2, 10))
    res = {}
    for w in (1, 2):
        r = sim.simulate(cfg, workers=w, quiet=True, figure=False)
        res[w] = r
        rows.append(dict(group="simulate", case=f"{r.n_meta} meta-analyses x (6 classical + "
                         f"4 Bayes), {w} worker(s)", seconds=r.seconds,
                         baseline="1 worker" if w == 2 else "",
                         ratio=(f"{r.throughput:.0f}/s" + (
                             f"; speed-up {res[1].seconds / r.seconds:.2f}x" if w == 2 else ""))))
    return res


#: Routes measured once by hand and not re-run here (their dependencies are not installed):
#: (route, figures). The JAX route needs jax + jaxlib (365 MB); with jax installed, every
#: ``import arviz`` (arviz_base probes for numpyro/jax) took ~2 s longer, for every bayesmeta
#: user of the venv, so it was uninstalled after measuring.
MANUAL_ROUTES = [
    ("nutpie JAX backend + JAX persistent compilation cache (jax/jaxlib 0.12.0.1, 2026-12-05, "
     "load average 1.5-3.5)",
     "NNHM BCG, 4 x 2000 + 1000, one fresh process each: cold 26.9 s wall (compile 0.3 s + "
     "sampling 23.1 s), warm 32.4 and 35.0 s (sampling 28.3, 31.2 s): the log density is a "
     "Python callback into JAX (GIL, ~100 us per gradient), so the persistent cache saves "
     "nothing that matters; +365 MB installed (jaxlib 330 MB). Rejected."),
    ("nutpie Python-callback interface calling the cached kernel as a numba function "
     "(2026-12-05, prototype, load average 4)",
     "warm process: kernel load 0.25 s, sampling 6.3-6.6 s (275 000 gradient calls through "
     "Python, GIL shared by the two chains), 10-13 s per process. Rejected: the C-callback "
     "interface runs the same kernel in 0.2-0.4 s."),
]


def _f(x, unit="s", nd=2):
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    return f"{x:.{nd}f} {unit}" if unit else f"{x:.{nd}f}"


def _machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                   .splitlines() if line.startswith("MemTotal")) / 2 ** 20
    except (OSError, StopIteration, ValueError):
        mem = float("nan")
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GB RAM, {platform.system()} {platform.machine()}"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for p in ("numpy", "numba", "nutpie", "pymc", "pytensor", "arviz"):
        try:
            out.append(f"{p} {version(p)}")
        except PackageNotFoundError:
            out.append(f"{p} (absent)")
    return ", ".join(out)


#: the per-analysis targets: one MCMC analysis of a 10-40 row table; the exact nested row (the
#: default engine of the nested model) is held to the same figures
TARGETS = {"NNHM MCMC": (3.0, 15.0), "binomial-normal MCMC": (3.0, 15.0),
           "nested MCMC": (3.0, 15.0), "nested exact": (3.0, 15.0)}

#: part of the results -> its heading's name, for the note on figures kept from a previous run
PARTS = {"latency": "per-analysis latency", "run": "`bayesmeta run`", "routes": "routes",
         "anchors": "anchors", "engines": "engines, batch and simulation"}


def _stale(stale: dict, part: str) -> str:
    """Heading suffix of a part whose figures were kept from a previous run ('' if measured)."""
    return f" (not re-run: figures of {stale[part]})" if part in stale else ""


def latency_sections(lat, runall, routes_, anch, stale=None) -> list[str]:
    stale = stale or {}
    L = []
    by = {r["model"]: r for r in lat}
    # targets
    L += ["## Targets", "",
          "| target | measured wall (CPU) | met? |", "|---|---|---|"]
    for model, (tw, tc) in TARGETS.items():
        r = by.get(model)
        if not r or "error" in r:
            L.append(f"| {model}: one CLI call, ≤ {tw:g} s warm, ≤ {tc:g} s cold | "
                     f"{(r or {}).get('error', 'not run')} | no |")
            continue
        L.append(f"| {model}: one CLI call on a 10-40 row table (here 13-18), ≤ {tw:g} s warm | "
                 f"{_f(r['warm_wall'])} ({_f(r['warm_cpu'])} CPU) | "
                 f"{'yes' if r['warm_wall'] <= tw else 'no (wall)'}"
                 f"{'' if r['warm_wall'] <= tw or r['warm_cpu'] > tw else '; CPU time is within'} |")
        L.append(f"| {model}: same, ≤ {tc:g} s cold | {_f(r['cold_wall'])} "
                 f"({_f(r['cold_cpu'])} CPU) | {'yes' if r['cold_wall'] <= tc else 'no'} |")
    imp = by.get("imports")
    if imp and "error" not in imp:
        L.append(f"| baseline: the imports alone of a warm MCMC call (no work) | "
                 f"{_f(imp['warm_wall'])} ({_f(imp['warm_cpu'])} CPU) | - |")
    if runall and "error" not in runall:
        L.append(f"| `bayesmeta run`, all bundled specs, ≤ 10 s warm | {_f(runall['warm_wall'])} "
                 f"({_f(runall['warm_cpu'])} CPU) | {'yes' if runall['warm_wall'] <= 10 else 'no'} |")
        L.append(f"| `bayesmeta run`, all bundled specs, ≤ 30 s cold | {_f(runall['cold_wall'])} "
                 f"({_f(runall['cold_cpu'])} CPU) | {'yes' if runall['cold_wall'] <= 30 else 'no'} |")
        L.append(f"| `bayesmeta run` peak memory (reported) | {runall['tree_mb']:.0f} MB all "
                 f"processes; {runall['rss_mb']:.0f} MB largest process | - |")
    L += ["", "Same seed, same draws, cold or warm cache: guarded by "
          "`tests/test_mcmc.py::test_nested_same_seed_identical_with_cold_and_warm_compile_cache` "
          "(`-m slow`, both nutpie routes).", ""]
    # per-analysis latency
    L += ["## Per-analysis latency (one fresh process per call)" + _stale(stale, "latency"),
          "",
          "Cold: empty compile caches (`NUMBA_CACHE_DIR`, PyTensor `base_compiledir`); warm: "
          "median of the further runs with the caches the cold run filled. *load* = the fit's "
          "kernel load (warm) or first compile (cold); *sampling* = nutpie's sampling, 4 chains "
          "x 2000 draws + 1000 tune (printed by the script rows only). CPU = user + system of the "
          "process.", "",
          "| case | cold wall (CPU) | cold load + sampling | warm wall (CPU) | warm load + "
          "sampling | all warm walls | peak RSS |", "|---|---|---|---|---|---|---:|"]
    for r in lat:
        if "error" in r:
            L.append(f"| {r['case']} | failed: {r['error']} | | | | | |")
            continue
        ls = (lambda a, b: "-" if a != a else f"{a:.2f} + {b:.2f} s")
        L.append(f"| {r['case']} | {_f(r['cold_wall'])} ({_f(r['cold_cpu'])}) | "
                 f"{ls(r['cold_compile'], r['cold_sampling'])} | {_f(r['warm_wall'])} "
                 f"({_f(r['warm_cpu'])}) | {ls(r['warm_compile'], r['warm_sampling'])} | "
                 + ", ".join(f"{w:.2f}" for w in r["warm_walls"]) + f" | {r['rss_mb']:.0f} MB |")
    L.append("")
    if runall:
        L += ["## `bayesmeta run` (all bundled specs)" + _stale(stale, "run"), ""]
        if "error" in runall:
            L.append(f"failed: {runall['error']}")
        else:
            L += ["| | wall | CPU | peak memory, all processes | largest process |",
                  "|---|---:|---:|---:|---:|",
                  f"| cold | {_f(runall['cold_wall'])} | {_f(runall['cold_cpu'])} | "
                  f"{runall['tree_mb']:.0f} MB | {runall['rss_mb']:.0f} MB |",
                  f"| warm (median; all: {', '.join(f'{w:.1f}' for w in runall['warm_walls'])}"
                  f" s) | {_f(runall['warm_wall'])} | {_f(runall['warm_cpu'])} | | |"]
        L.append("")
    # anchors
    if anch is not None:
        nn = by.get("NNHM MCMC", {})
        ne = by.get("nested fit_nested", {})  # the model brms fits
        ex = by.get("NNHM exact", {})
        cl = by.get("classical", {})
        rt = {r["route"]: r for r in (routes_ or [])}
        if "anchors" not in stale:
            head = " (same run" + (", except the PyMC rows" if "routes" in stale else "") + ")"
        elif "latency" in stale:
            head = _stale(stale, "anchors")
        else:
            head = (_stale(stale, "anchors")[:-1] + "; *ours* from this run: the ratios compare "
                    "runs at different loads)")
        L += ["## Anchors" + head, "",
              "| anchor | its figure | ours | ratio (anchor / ours) |", "|---|---|---|---|"]

        def row(name, theirs, ours, note=""):
            ratio = (f"{theirs / ours:.1f}x" if theirs and ours and theirs == theirs
                     and ours == ours else "-")
            L.append(f"| {name} | {_f(theirs)} | {_f(ours)}{note} | {ratio} |")

        # the PyMC anchors are the routes table's rows: dated when that part was not re-run
        rnote = (f"; the routes table's figure of {stale['routes']}, *ours* from this run"
                 if "routes" in stale else "")
        pd_ = rt.get("pymc-default", {})
        if "warm_wall" in pd_:
            row("PyMC default `pm.sample()` on the same NNHM, fresh process, warm (nutpie, "
                f"compiles per process{rnote})", pd_["warm_wall"], nn.get("warm_wall"),
                " (`bayesmeta bayes --engine mcmc`, warm)")
        pn = rt.get("pymc-nuts", {})
        if "warm_wall" in pn:
            row("PyMC's own NUTS (`nuts_sampler='pymc'`), same NNHM, fresh process, warm"
                + (f" ({rnote[2:]})" if rnote else ""),
                pn["warm_wall"], nn.get("warm_wall"), " (same)")
        m = anch.get("metafor", {})
        if "skipped" in m:
            L.append(f"| R metafor `rma()` | skipped: {m['skipped']} | | |")
        else:
            row(f"R metafor {m.get('metafor', '')} `rma()` REML: one Rscript process",
                m["process_s"], cl.get("warm_wall"), " (`bayesmeta classical`, warm)")
            row("R metafor `rma()` alone, per fit", m["rma_s"], None)
            row("R metafor process vs exact Bayesian NNHM CLI", m["process_s"],
                ex.get("warm_wall"), " (`bayesmeta bayes`, exact)")
        b = anch.get("bayesmeta", {})
        if "skipped" in b:
            L.append(f"| R bayesmeta `bayesmeta()` | skipped: {b['skipped']} | | |")
        else:
            row("R bayesmeta `bayesmeta()`: one Rscript process", b["process_s"],
                ex.get("warm_wall"), " (`bayesmeta bayes`, exact)")
        br = anch.get("brms", {})
        ours = anch.get("ours_nested_in_session", {})
        if "skipped" in br:
            L.append(f"| brms (nested model) | skipped: {br['skipped']} | | |")
        else:
            row(f"brms {br.get('brms', '')} nested model, first fit in a fresh R session "
                "(Stan compile + sampling), sim6x3", br["first_s"], ne.get("cold_wall"),
                " (`fit_nested` script, cold process)")
            row("brms first fit vs our warm process", br["first_s"], ne.get("warm_wall"),
                " (`fit_nested` script, warm process)")
            w = ours.get("warm") or {}
            row("brms refit in the same R session (`update(newdata=)`, no recompile)",
                br["refit_s"], w.get("refit_s"), " (`fit_nested` refit in the same process)")
        L.append("")
    # routes
    if routes_:
        L += ["## Routes measured for the MCMC backend (NNHM, BCG, 4 x 2000 + 1000 draws)"
              + _stale(stale, "routes"), "",
              "One fresh process per run; cold = empty caches. *compile* = what the process "
              "spent before sampling (PyTensor/numba compile, or the kernels' load), "
              "*sampling* = the sampler's own time.", "",
              "| route | cold: compile + sampling, wall (CPU) | warm: compile + sampling, "
              "wall (CPU) | mean mu | divergences |", "|---|---|---|---:|---:|"]
        for r in routes_:
            if "error" in r:
                L.append(f"| {r['case']} | {r['error']} | | | |")
                continue
            def cs(c, s_):
                return (f"{s_:.2f} s (compile inside)" if c != c else f"{c:.2f} + {s_:.2f} s")

            L.append(f"| {r['case']} | {cs(r['cold_compile'], r['cold_sampling'])}, "
                     f"{_f(r['cold_wall'])} ({_f(r['cold_cpu'])}) | "
                     f"{cs(r['warm_compile'], r['warm_sampling'])}, {_f(r['warm_wall'])} "
                     f"({_f(r['warm_cpu'])}) | "
                     f"{r.get('mu_mean', float('nan')):.4f} | {r.get('divergences', '')} |")
        for name, text in MANUAL_ROUTES:
            L.append(f"| {name} | {text} | | | |")
        L += ["", "Chosen: nutpie with the hand-written kernels (`bayesmeta/mcmc_kernels.py`, "
              "numba `cache=True`, handed to nutpie as C callbacks). It is the only route whose "
              "compile survives the process (numba cannot cache the closure nutpie builds from "
              "a PyTensor graph), and nutpie's sampling (C callback, no GIL) is 10-100x faster "
              "than PyMC's own NUTS or a Python callback. What is left of a warm call is "
              "imports (numpy/pandas/xarray, scipy.stats and arviz, which nutpie imports), "
              "numba's start-up with the kernel load, sampling and the summary.", ""]
    return L


def _previous(out_md: Path) -> tuple[dict, list, dict]:
    """The previous run's latency.json, results.json rows and {part: "date, load a / b / c"}.

    Files written before the per-part dates were recorded carry one date (results.md's
    "Generated ... on DATE" line) and one load for every part."""
    lat = json.loads((HERE / "latency.json").read_text()) if (HERE / "latency.json").exists() \
        else {}
    rows = json.loads((HERE / "results.json").read_text()) if (HERE / "results.json").exists() \
        else []
    when = dict(lat.get("measured") or {})
    if not when:
        date = "an earlier run"
        if out_md.exists():
            for line in out_md.read_text().splitlines():
                if line.startswith("Generated by") and " on " in line:
                    date = line.split(" on ", 1)[1].split(" (", 1)[0]
                    break
        load = lat.get("load") or []
        ld = (f", load average {load[0][0]:.1f} at the start and {load[1][0]:.1f} at the end"
              if len(load) == 2 else "")
        when = {part: date + ld for part in PARTS}
    return lat, rows, when


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--skip-mcmc", action="store_true")
    ap.add_argument("--skip-run", action="store_true")
    ap.add_argument("--skip-routes", action="store_true")
    ap.add_argument("--skip-anchors", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-engines", action="store_true",
                    help="exact vs MCMC, classical battery, batch and simulate")
    ap.add_argument("--warm", type=int, default=3, help="warm repeats per latency case")
    ap.add_argument("--sim-n", type=int, default=100_000, help="simulate: total meta-analyses")
    ap.add_argument("--out", default=str(HERE / "results.md"))
    a = ap.parse_args(argv)
    import latency

    prev, prev_rows, prev_when = _previous(HERE / "results.md")
    rows = []
    state = {"lat": [], "runall": None, "routes": None, "anchors": None}
    skipped = {"latency": a.skip_latency, "run": a.skip_run, "routes": a.skip_routes,
               "anchors": a.skip_anchors, "engines": a.skip_engines}
    load0 = os.getloadavg()
    t_start = time.strftime('%Y-%m-%d %H:%M')

    def anchors_step():
        from anchors import anchors
        state["anchors"] = anchors()

    steps = [("latency", "per-analysis latency",
              lambda: state.__setitem__("lat", latency.analyses(a.warm))),
             ("run", "bayesmeta run",
              lambda: state.__setitem__("runall", latency.run_all(a.warm))),
             ("routes", "routes",
              lambda: state.__setitem__("routes", latency.routes(max(1, a.warm - 1)))),
             ("anchors", "anchors", anchors_step),
             ("engines", "exact vs MCMC", lambda: bench_exact_vs_pymc(rows, a.quick, a.skip_mcmc)),
             ("engines", "classical battery", lambda: bench_classical(rows, a.quick)),
             ("engines", "batch", lambda: bench_batch(rows, a.quick)),
             ("engines", "simulate", lambda: bench_simulate(rows, a.sim_n, a.quick))]
    when = {}
    for part, name, fn in steps:
        if skipped[part]:
            continue
        l0 = os.getloadavg()
        print(f"benchmark: {name} ...", file=sys.stderr, flush=True)
        fn()
        l1 = os.getloadavg()
        if part in when:  # several steps of one part: keep the first start load
            when[part] = when[part].rsplit(" and ", 1)[0] + f" and {l1[0]:.1f} at the end"
        else:
            when[part] = (f"{t_start}, load average {l0[0]:.1f} at the start and {l1[0]:.1f} "
                          "at the end")
    # a skipped part keeps the previous run's figures, marked with the date they were taken
    stale = {}
    keep = {"latency": ("lat", "latency"), "run": ("runall", "run"),
            "routes": ("routes", "routes"), "anchors": ("anchors", "anchors")}
    for part, (key, pkey) in keep.items():
        if skipped[part] and prev.get(pkey) is not None:
            state[key] = prev[pkey]
            stale[part] = when[part] = prev_when.get(part, "an earlier run")
    if skipped["engines"] and prev_rows:
        rows = prev_rows
        stale["engines"] = when["engines"] = prev_when.get("engines", "an earlier run")
    load1 = os.getloadavg()
    import bayesmeta
    lines = [
        "# bayesmeta benchmarks", "",
        f"Generated by `python benchmarks/run.py` on {t_start} (finished "
        f"{time.strftime('%H:%M')}): {_machine()}; Python {platform.python_version()}, "
        f"bayesmeta {bayesmeta.__version__}; {_versions()}.", "",
        f"**The machine is shared** (six developers on 2 cores while this ran: load average "
        f"{load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f} at the start, {load1[0]:.1f} / "
        f"{load1[1]:.1f} / {load1[2]:.1f} at the end; 1, 5, 15 min). Wall times grow with the "
        "load; CPU time (user + system of the measured processes) is the steadier figure, and "
        "on an idle machine a call's wall time is about its CPU time (less where nutpie "
        "samples two chains at once). Ratios are against a baseline measured in the same run.",
        "",
    ]
    if stale:
        lines += ["Parts not re-run in this run keep their previous figures, under a heading "
                  "that gives the date: " + "; ".join(f"{PARTS[k]}: {v}"
                                                       for k, v in stale.items()) + ".", ""]
    lines += latency_sections(state["lat"], state["runall"], state["routes"], state["anchors"],
                              stale)
    lines += ["## Engines, batch and simulation" + _stale(stale, "engines"), "",
              "| group | case | seconds | baseline | ratio / throughput |",
              "|---|---|---:|---|---|"]
    for r in rows:
        s = r["seconds"]
        st = "n/a" if s is None or s != s else (f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.2f} s")
        lines.append(f"| {r['group']} | {r['case']} | {st} | {r['baseline']} | {r['ratio']} |")
    Path(a.out).write_text("\n".join(lines) + "\n")

    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if k not in ("stdout", "stderr")}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    # results.json keeps its list-of-rows format (bayesmeta.runner reads it)
    (HERE / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    (HERE / "latency.json").write_text(json.dumps(clean(
        {"latency": state["lat"], "run": state["runall"], "routes": state["routes"],
         "anchors": state["anchors"], "load": [load0, load1], "measured": when}), indent=1,
        default=str))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
