"""Nested-model simulation through ``bayesmeta simulate`` (the CLI, on Dask): throughput with
1 and 2 workers, and the coverage table; plus the NNHM simulation at large tau.

``python benchmarks/nested_sim.py [--part nnhm|w2|w1|md ...] [--n1 N] [--n2 N]`` runs the parts
(default all, in that order), keeps each part's raw result in ``benchmarks/nested_sim.json`` and
writes ``benchmarks/nested_sim.md`` from it:

* ``w2``: ``bayesmeta simulate models/simulations/simulation_nested.toml --n N2 --workers 2`` (N2 per
  scenario, 10 scenarios: k 3, tau 0/0.25/0.5/0.8/1, r_true 0/0.7): throughput and the
  coverage table (contrast and cells, per tau and r_true, with Monte Carlo SEs);
* ``w1``: the same spec with ``--n N1 --workers 1`` (another seed, so its meta-analyses are
  new ones): throughput with one Dask worker; the speed-up is w2 / w1 throughput;
* ``w2b``: 2 workers on N1/2 per scenario (seed 8), run right after ``w1`` so that the
  speed-up compares runs under similar load from other users;
* ``nnhm``: ``bayesmeta simulate --scale logOR --k 2 3 5 --tau 0 0.25 0.5 0.8 1 --priors
  weakly_informative empirical --n 10000``: the NNHM battery at the README's k, up to tau 1.

Throughput is ``timing.json``'s meta-analyses per second (clock started once the workers are
up and warm). The machine is shared by several developers: the load average before and after
each part is recorded; read timings as orders of magnitude. Nothing asserts on them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RAW = HERE / "nested_sim.json"
MD = HERE / "nested_sim.md"
SPEC = ROOT / "models" / "simulations" / "simulation_nested.toml"
METHODS = ("GHM-r0.5", "GHM-r0", "REML-z", "REML-t")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _chunk_seconds(folder: Path) -> dict:
    """Seconds each chunk spent in its worker (``chunks/*.json``): per meta-analysis, the
    in-worker cost, which rises when the workers compete for cores."""
    n = sec = cpu = 0
    for f in folder.glob("*.json"):
        c = json.loads(f.read_text())
        n += c["size"]
        sec += c["seconds"]
        cpu = None if cpu is None or "cpu_seconds" not in c else cpu + c["cpu_seconds"]
    return dict(n=n, seconds=sec, cpu_seconds=cpu)


def _cli(args: list[str], out: Path) -> dict:
    """Run ``bayesmeta simulate`` in a fresh process; its table, timing.json and wall time."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "bayesmeta", "simulate", *args, "--out", str(out), "--json",
           "--quiet"]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    timing = json.loads((out / "timing.json").read_text())
    return dict(chunk_seconds=_chunk_seconds(out / "chunks"),
                command="bayesmeta simulate " + " ".join(
                    a.replace(str(ROOT) + os.sep, "") for a in args),
                table=json.loads(p.stdout), timing=timing, wall_seconds=wall,
                load_before=list(load0), load_after=list(os.getloadavg()),
                stderr_last=p.stderr.strip().splitlines()[-1])


def part(name: str, n1: int, n2: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="nested-sim-bench-"))
    try:
        if name == "w2":
            return _cli([str(SPEC), "--n", str(n2), "--workers", "2", "--chunk-size", "20"],
                        tmp / "out")
        if name == "w1":
            return _cli([str(SPEC), "--n", str(n1), "--workers", "1", "--chunk-size", "20",
                         "--seed", "7"], tmp / "out")
        if name == "w2b":
            return _cli([str(SPEC), "--n", str(n1 // 2), "--workers", "2", "--chunk-size",
                         "20", "--seed", "8"], tmp / "out")
        if name == "nnhm":
            return _cli(["--scale", "logOR", "--k", "2", "3", "5", "--tau", "0", "0.25", "0.5",
                         "0.8", "1", "--priors", "weakly_informative", "empirical", "--n",
                         "10000", "--workers", "2", "--seed", "20240601"], tmp / "out")
        raise SystemExit(f"unknown part {name}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pct(c, s):
    return f"{100 * c:.1f} ({100 * s:.1f})"


def _load(r):
    return (f"{r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f} (1-min); "
            f"15-min {r['load_after'][2]:.2f}")


def render(raw: dict) -> str:
    L = ["# Nested-model simulation through `bayesmeta simulate` (Dask)", "",
         f"Measured {raw.get('date', '?')} on {raw.get('machine', '?')}. **The machine is "
         "shared by several developers**: other work ran beside these runs (load averages "
         "below), so throughputs are orders of magnitude and the speed-up is a lower bound of "
         "what 2 idle cores give. Script: `python benchmarks/nested_sim.py`; raw results: "
         "`benchmarks/nested_sim.json`.", ""]
    L += [f"Note: {n}" for n in raw.get("notes", [])] + ([""] if raw.get("notes") else [])
    w1, w2 = raw.get("w1"), raw.get("w2")
    if w1 or w2:
        L += ["## Throughput", "",
              "One nested meta-analysis = one simulated dataset (2 subgroups x k = 3 studies x "
              "3 times) analysed 4 ways (exact GHM with r = 0.5 and r = 0, REML twin z and t). "
              "Clock: `timing.json` of the run (started once the Dask workers are up and "
              "warm); wall: the whole CLI process (start-up, cluster, warm-up included).", "",
              "In-worker s per meta-analysis: the chunks' own wall clocks summed over the "
              "meta-analyses they ran, with the worker processes' CPU seconds where recorded "
              "(wall well above CPU: the workers waited for a core, i.e. competed with each "
              "other or with other users of the 2 cores).", "",
              "| run | command | meta-analyses | seconds | meta-analyses/s | in-worker s per "
              "meta-analysis | CLI wall s | load |",
              "|---|---|---|---|---|---|---|---|"]
        w2b = raw.get("w2b")
        for lab, r in (("1 worker", w1), ("2 workers", w2), ("2 workers, short", w2b)):
            if r:
                t = r["timing"]
                cs = r.get("chunk_seconds") or {}
                per = f"{cs['seconds'] / cs['n']:.3f}" if cs.get("n") else "n/a"
                if cs.get("n") and cs.get("cpu_seconds") is not None:
                    per += f" (CPU {cs['cpu_seconds'] / cs['n']:.3f})"
                L.append(f"| {lab} | `{r['command']}` | {t['n_meta_this_run']} | "
                         f"{t['seconds']:.1f} | {t['meta_per_second']:.3f} | {per} | "
                         f"{r['wall_seconds']:.1f} | {_load(r)} |")
        for lab, r in (("2 workers", w2), ("2 workers, short", w2b)):
            if w1 and r:
                ratio = r["timing"]["meta_per_second"] / w1["timing"]["meta_per_second"]
                L += ["", f"Speed-up {lab} / 1 worker: **{ratio:.2f}x** (throughput ratio; "
                          "the runs simulate the same scenario grid, so a meta-analysis costs "
                          "the same on average; the load during each run differs, see the "
                          "load column)."]
        L.append("")
    if w2:
        tab = pd.DataFrame(w2["table"])
        n = int(w2["timing"]["n_meta_this_run"])
        per = n // max(len(set(zip(tab["tau"], tab["r_true"], tab["k"]))), 1)
        L += ["## Coverage of 95% intervals (nested model)", "",
              f"From the 2-worker run: {n} simulated meta-analyses, {per} per (tau, r_true) "
              "scenario, k = 3 studies per subgroup. Coverage % (Monte Carlo SE, points). "
              "A contrast row pools the 3 times (3 per meta-analysis), a cell row the 6 "
              "subgroup x time cells; the MC SE treats them as independent, which they are "
              "not (they share the meta-analysis's study effects and tau), so it is "
              "somewhat too small. Every analysis assumes r = 0.5 except GHM-r0 (r = 0).", ""]
        for est in ("contrast", "cell"):
            L += [f"### {est}", "", "| r_true | tau | " + " | ".join(METHODS)
                  + " | mean width GHM-r0.5 / REML-t |", "|---|---|" + "---|" * len(METHODS)
                  + "---|"]
            g = tab[tab["estimand"] == est]
            for (r, t), h in g.groupby(["r_true", "tau"], sort=True):
                h = h.set_index("method")
                L.append(f"| {r:g} | {t:g} | " + " | ".join(
                    _pct(h.loc[m, "coverage"], h.loc[m, "coverage_mcse"]) for m in METHODS)
                    + f" | {h.loc['GHM-r0.5', 'width']:.2f} / {h.loc['REML-t', 'width']:.2f} |")
            L.append("")
        nf = int(tab["n_failed"].sum())
        L += [f"Targets without an interval (n_failed): {nf}.", "",
              "Lowest and highest coverage of each method over the 10 scenarios "
              "(tau x r_true), %:", "", "| estimand | " + " | ".join(METHODS) + " |",
              "|---|" + "---|" * len(METHODS)]
        for est in ("contrast", "cell"):
            g = tab[tab["estimand"] == est]
            cells = []
            for m in METHODS:
                h = g[g["method"] == m]
                lo, hi = h.loc[h["coverage"].idxmin()], h.loc[h["coverage"].idxmax()]
                cells.append(f"{100 * lo['coverage']:.1f} (tau {lo['tau']:g}, r_true "
                             f"{lo['r_true']:g}) - {100 * hi['coverage']:.1f}")
            L.append(f"| {est} | " + " | ".join(cells) + " |")
        L.append("")
    nn = raw.get("nnhm")
    if nn:
        tab = pd.DataFrame(nn["table"])
        t = nn["timing"]
        L += ["## NNHM simulation at large tau (log OR)", "",
              f"`{nn['command']}`: {t['n_meta_this_run']} meta-analyses in {t['seconds']:.1f} s "
              f"({t['meta_per_second']:.0f}/s, {t['workers']} workers, load {_load(nn)}). "
              "Coverage % (MC SE) of the 95% interval for mu, 10 000 meta-analyses per cell.",
              ""]
        ms = ["DL-z", "DL-HKSJ", "REML-z", "REML-HKSJ", "Bayes-weakly_informative",
              "Bayes-empirical"]
        L += ["| k | tau | " + " | ".join(ms) + " | width DL-HKSJ / Bayes WI |",
              "|---|---|" + "---|" * len(ms) + "---|"]
        for (k, tau), h in tab.groupby(["k", "tau"], sort=True):
            h = h.set_index("method")
            L.append(f"| {k} | {tau:g} | " + " | ".join(
                _pct(h.loc[m, "coverage"], h.loc[m, "coverage_mcse"]) for m in ms)
                + f" | {h.loc['DL-HKSJ', 'width']:.2f} / "
                  f"{h.loc['Bayes-weakly_informative', 'width']:.2f} |")
        L.append("")
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", nargs="+", default=["nnhm", "w2", "w1"],
                    choices=["nnhm", "w2", "w1", "w2b", "md"],
                    help="md: only re-render the Markdown; w2b: 2 workers on n1/2 per scenario "
                         "(right after w1, for a speed-up under similar load)")
    ap.add_argument("--n1", type=int, default=100, help="per scenario, 1-worker run (100)")
    ap.add_argument("--n2", type=int, default=200, help="per scenario, 2-worker run (200)")
    ap.add_argument("--chunks-of", nargs=2, metavar=("PART", "FOLDER"), default=None,
                    help="record the in-worker chunk seconds of PART from a copy of its "
                         "chunks/ folder")
    a = ap.parse_args(argv)
    raw = json.loads(RAW.read_text()) if RAW.exists() else {}
    if a.chunks_of:
        raw[a.chunks_of[0]]["chunk_seconds"] = _chunk_seconds(Path(a.chunks_of[1]))
        RAW.write_text(json.dumps(raw, indent=1))
    for p in a.part:
        if p == "md":
            continue
        print(f"part {p} ...", file=sys.stderr, flush=True)
        raw[p] = part(p, a.n1, a.n2)
        raw["date"] = dt.date.today().isoformat()
        raw["machine"] = (f"{_cpu()}, {os.cpu_count()} logical CPUs, {platform.system()} "
                          f"{platform.release()}, Python {platform.python_version()}")
        RAW.write_text(json.dumps(raw, indent=1))
        MD.write_text(render(raw) + "\n")
        print(raw[p]["stderr_last"], file=sys.stderr, flush=True)
    MD.write_text(render(raw) + "\n")
    print(MD.read_text())


if __name__ == "__main__":
    main()
