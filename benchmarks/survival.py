"""CPU time of the bundled survival analysis: ``python benchmarks/survival.py [--repeat N]
[--tree PATH] [--label TEXT] [--write]``.

Times ``pipeline.run_analysis(load_spec("models/survival_2023.toml"))`` in fresh processes
(CPU seconds of this process, ``time.process_time``): the first call in a process (imports
that happen on first use, such as xarray's dask check, included) and a second call in the same
process (warm). ``--tree PATH`` times another checkout instead (e.g. a commit exported with
``git archive COMMIT | tar -x -C /tmp/old``), so that before and after are measured by the
same script; ``--calls 1`` skips the warm call (for a slow tree). ``--write`` appends the
result as a row of ``benchmarks/survival.md``.

CPU time, not wall time, because the machine is usually shared; it still grows when other
processes compete for the caches, so compare rows measured close in time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_CHILD = r"""
import json, sys, time
from bayesmeta.spec import load_spec
from bayesmeta import pipeline
spec = load_spec("models/survival_2023.toml")
out = []
for _ in range(int(sys.argv[1])):
    c0 = time.process_time()
    pipeline.run_analysis(spec)
    out.append(time.process_time() - c0)
print(json.dumps(out))
"""


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def measure(tree: Path, repeat: int, calls: int = 2) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), MPLBACKEND="Agg")
    cold, warm, loads = [], [], []
    for _ in range(repeat):
        loads.append(_load())
        p = subprocess.run([sys.executable, "-c", _CHILD, str(calls)], cwd=tree, env=env,
                           capture_output=True, text=True, timeout=3600)
        if p.returncode != 0:
            raise SystemExit(p.stderr[-2000:])
        got = json.loads(p.stdout.strip().splitlines()[-1])
        cold.append(got[0])
        warm.extend(got[1:])
    return {"cold": statistics.median(cold),
            "warm": statistics.median(warm) if warm else float("nan"),
            "all_cold": cold, "all_warm": warm, "load": statistics.median(loads)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--calls", type=int, default=2, choices=(1, 2))
    ap.add_argument("--tree", type=Path, default=ROOT)
    ap.add_argument("--label", default="")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    r = measure(args.tree.resolve(), args.repeat, args.calls)
    label = args.label or ("this tree" if args.tree.resolve() == ROOT else str(args.tree))
    warm = f"{r['warm']:.2f}" if r["all_warm"] else "-"
    runs = ", ".join(f"{v:.2f}" for v in r["all_cold"])
    if r["all_warm"]:
        runs += " / " + ", ".join(f"{v:.2f}" for v in r["all_warm"])
    line = (f"| {dt.datetime.now():%Y-%m-%d %H:%M} | {label} | {r['cold']:.2f} | {warm} | "
            f"{args.repeat} ({runs}) | {r['load']:.1f} |")
    print(line)
    if args.write:
        out = HERE / "survival.md"
        if not out.exists():
            out.write_text(
                "# Survival analysis CPU time\n\n"
                "`python benchmarks/survival.py --write`: CPU seconds of "
                "`pipeline.run_analysis` on `models/survival_2023.toml` (main fit, 15 "
                "sensitivity fits, the other reading, absolute effects at 4 times, new trials "
                "of 3 sizes at 4 times), medians over fresh processes; cold = first call in a "
                "process, warm = second call. Machine: "
                f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                f"{platform.python_version()}; shared with other developers' jobs (load = "
                "1-minute load average when the runs started), so CPU times carry tens of "
                "percent of noise.\n\n"
                "| when | code | cold CPU s | warm CPU s | runs (cold / warm) | load |\n"
                "|---|---|---:|---:|---|---:|\n")
        with out.open("a") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
