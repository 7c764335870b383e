"""Benchmarks: ``python benchmarks/run.py [--quick] [--skip-mcmc] [--skip-run] [--sim-n N]``.

Writes ``benchmarks/results.md``: a Markdown table of timings with ratios against a baseline
measured in the same run (so machines and load cancel out):

1. exact NNHM (``bayesmeta.exact.fit_exact``) per fit at k = 2, 10, 50 vs the PyMC NNHM
   (``bayesmeta.mcmc.fit_nnhm``: compile and sampling timed separately, 4 chains x 1000 draws);
2. classical full battery (``classical.rma`` for every tau² estimator x {z, KNHA}) at k = 10,
   1 000, 10 000, each k in a subprocess with a time limit (a quadratic-memory implementation
   must not take the machine down);
3. batch throughput (meta-analyses/s): ``batch.classical_batch`` and ``batch.exact_batch`` vs a
   loop over the scalar engines;
4. ``bayesmeta run`` of every bundled spec, cold (fresh process, empty compile cache) and
   warm (cache filled);
5. ``bayesmeta simulate`` throughput with one and two local worker processes (speed-up).

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
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
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
            rows.append(dict(group="exact NNHM", case=f"k = {k}: PyMC NNHM compile (nutpie)",
                             seconds=comp, baseline="exact", ratio=f"{comp / t_ex:.0f}x"))
            rows.append(dict(group="exact NNHM",
                             case=f"k = {k}: PyMC NNHM sampling 4x{draws} (+{draws} tune)",
                             seconds=samp, baseline="exact", ratio=f"{samp / t_ex:.0f}x"))
        except Exception as err:  # noqa: BLE001 - report, don't die
            rows.append(dict(group="exact NNHM", case=f"k = {k}: PyMC NNHM",
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


def bench_run(rows, quick):
    if not (ROOT / "bayesmeta" / "cli" / "_run.py").exists():
        rows.append(dict(group="bayesmeta run", case="runner not present", seconds=float("nan"),
                         baseline="", ratio="skipped"))
        return
    # issue 4's targets: every bundled analysis, cold (fresh process, empty pytensor compile
    # cache) < 90 s and warm (fresh process, cache filled by the cold run) < 30 s
    args = [] if not quick else [str(ROOT / "models" / "bcg.toml"), "--fast"]
    label = "all bundled specs" if not quick else "bcg.toml --fast"
    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, MPLBACKEND="Agg", PYTENSOR_FLAGS=f"base_compiledir={cache}")
        times = []
        for i in range(1 + (4 if not quick else 2)):
            t0 = time.perf_counter()
            p = subprocess.run([PY, "-m", "bayesmeta", "run", *args, "--out", f"{d}/r{i}",
                                "-q"], capture_output=True, text=True, env=env, cwd=ROOT,
                               timeout=900)
            times.append(time.perf_counter() - t0)
            if p.returncode != 0:
                rows.append(dict(group="bayesmeta run", case=label, seconds=float("nan"),
                                 baseline="", ratio=f"failed (exit {p.returncode})"))
                return
    warm = sorted(times[1:])
    med = statistics.median(warm)
    rows.append(dict(group="bayesmeta run", case=f"cold: {label} (fresh process, empty cache)",
                     seconds=times[0], baseline="", ratio="target < 90 s" if not quick else ""))
    rows.append(dict(group="bayesmeta run",
                     case=f"warm: {label} (median of {len(warm)} further runs; all: "
                          + ", ".join(f"{t:.1f}" for t in warm) + " s)",
                     seconds=med, baseline="cold", ratio=f"{times[0] / med:.1f}x faster"
                     + (f"; worst {warm[-1]:.1f} s; target < 30 s" if not quick else "")))


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--skip-mcmc", action="store_true")
    ap.add_argument("--skip-run", action="store_true")
    ap.add_argument("--sim-n", type=int, default=100_000, help="simulate: total meta-analyses")
    ap.add_argument("--out", default=str(HERE / "results.md"))
    a = ap.parse_args(argv)
    rows = []
    steps = [("exact vs PyMC", lambda: bench_exact_vs_pymc(rows, a.quick, a.skip_mcmc)),
             ("classical battery", lambda: bench_classical(rows, a.quick)),
             ("batch", lambda: bench_batch(rows, a.quick)),
             ("run", lambda: (None if a.skip_run else bench_run(rows, a.quick))),
             ("simulate", lambda: bench_simulate(rows, a.sim_n, a.quick))]
    for name, fn in steps:
        print(f"benchmark: {name} ...", file=sys.stderr, flush=True)
        fn()
    import bayesmeta
    lines = [
        "# bayesmeta benchmarks", "",
        f"Generated by `python benchmarks/run.py` on {time.strftime('%Y-%m-%d %H:%M')}: "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs "
        f"({platform.machine()}), bayesmeta {bayesmeta.__version__}. Ratios are against the "
        "baseline named in the row, measured in the same run. Medians of repeats; the machine "
        "is shared, so expect noise of tens of percent.", "",
        "| group | case | seconds | baseline | ratio / throughput |",
        "|---|---|---:|---|---|",
    ]
    for r in rows:
        s = r["seconds"]
        st = "n/a" if s != s else (f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.2f} s")
        lines.append(f"| {r['group']} | {r['case']} | {st} | {r['baseline']} | {r['ratio']} |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    (HERE / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
