"""What the quick command-line paths import (their latency is mostly imports; see
benchmarks/results.md). Reference: the module map's rule that exact-only work needs no PyMC
(DEVELOPING.md), and the measured import costs: scipy.stats ~0.5 s, arviz (with matplotlib via
arviz_plots) ~0.5 s, numba ~0.2 s, PyMC/PyTensor ~1 s, CPU seconds on the project machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROBE = r"""
import sys
from bayesmeta.cli import main
code = main(sys.argv[1:])
heavy = ("pymc", "pytensor", "arviz", "numba", "nutpie", "matplotlib", "scipy.stats", "dask")
print(code, sorted(m for m in heavy if m in sys.modules))
"""


def _imports(*argv) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", _PROBE, *argv], env=env, capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_exact_bayes_cli_imports_no_sampler_stack():
    """`bayesmeta bayes DATA --measure RR` (exact engine, default priors) imports none of
    PyMC, PyTensor, ArviZ, numba, nutpie, matplotlib, scipy.stats or Dask."""
    assert _imports("bayes", str(ROOT / "data" / "bcg.csv"), "--measure", "RR") == "0 []"


def test_classical_cli_imports_no_sampler_stack():
    """`bayesmeta classical DATA --measure RR` imports no sampler stack (scipy.stats it needs)."""
    line = _imports("classical", str(ROOT / "data" / "bcg.csv"), "--measure", "RR")
    assert line in ("0 []", "0 ['scipy.stats']"), line
