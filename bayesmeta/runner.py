"""Run analysis specs and write the report: many specs, one worker for MCMC, provenance.

:func:`run` validates every spec first (nothing runs if one is invalid: each spec's design is
built and every requested model checked against it), runs each through the generic pipeline
(:func:`bayesmeta.pipeline.run_analysis`, rendered by :mod:`bayesmeta.sections`) or, for a
spec with a ``[simulation]`` section, :func:`bayesmeta.sim_report.run_simulation`, and writes
the report atomically (:func:`bayesmeta.report.write_report`).

Same seed → identical numbers: exact and classical engines are deterministic, MCMC fits get
seeds derived from the spec seed (``seed + i`` for the i-th MCMC fit of an analysis).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import pandas as pd

from bayesmeta import results
from bayesmeta.exceptions import BayesMetaError, EstimationError, SpecError
from bayesmeta.pipeline import RunContext
from bayesmeta.report import AnalysisOutput, prerender, write_report
from bayesmeta.spec import AnalysisSpec, expand_spec_args, load_spec

__all__ = ["RunContext", "run", "run_spec", "provenance", "write_outputs"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_spec(spec: AnalysisSpec, ctx: RunContext) -> AnalysisOutput:
    """Run one validated spec: the generic pipeline, or the simulation."""
    from bayesmeta import pipeline, sections
    from bayesmeta.sim_report import run_simulation

    t0 = time.perf_counter()
    ctx = RunContext(fast=ctx.fast, seed=ctx.seed, progress=ctx.progress, verbose=ctx.verbose)
    try:
        if spec.is_simulation:
            out = run_simulation(spec, ctx)
        else:
            out = sections.render(pipeline.run_analysis(spec, ctx), fast=ctx.fast)
    except (BayesMetaError, OSError):
        raise  # already a one-line message (the CLI formats OSError itself)
    except Exception as err:  # noqa: BLE001 - an unexpected failure (sampler crash, bug)
        what = " ".join(str(err).split()) or "no message"
        raise EstimationError(
            f"analysis '{spec.name}' failed: {type(err).__name__}: {what}. "
            "Rerun with --debug for the traceback; if the data and spec look right, please "
            "report it as a bug") from err
    out.seconds = time.perf_counter() - t0
    if "priority" in (spec.given or {}).get("analysis", ()):
        out.priority = float(spec.analysis.priority)
    out.provenance.update({
        "spec": str(spec.path.name) if spec.path else None, "spec_sha256": spec.sha256,
        "data": spec.data_path.name if spec.data_path else None,
        "data_sha256": _sha256(spec.data_path) if spec.data_path else None,
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
    """Does this analysis fit PyMC models (and so pay a compile)?"""
    return spec.uses_mcmc()


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
            with warnings.catch_warnings(record=True):  # the parent has shown them
                warnings.simplefilter("always")
                spec = load_spec(p)
            ctx.progress(f"{spec.name} ({spec.kind}){' --fast' if fast else ''}")
            out = run_spec(spec, ctx)
            prerender(out)  # figures and NetCDF as bytes here: the parent has less to draw
            conn.send(("ok", out))
    except BaseException as err:  # noqa: BLE001 - handed to the parent, which re-raises it
        conn.send(("error", err))
    finally:
        conn.close()


def _run_all(specs, ctx: RunContext, jobs: int) -> list[AnalysisOutput]:
    """Run every spec; return outputs in spec order.

    With ``jobs > 1`` the MCMC analyses run in one worker process (one process pays the
    samplers' start-up) while this process runs the exact and classical ones; without MCMC
    analyses, every second analysis runs in the worker. Each analysis is seeded from its own
    spec, so the numbers do not depend on the schedule. The worker is terminated on any error
    or interrupt before the report is written.
    """
    say = ctx.progress
    n = len(specs)
    mcmc_idx = [i for i, s in enumerate(specs) if _uses_mcmc(s)]
    if not mcmc_idx and n >= 3:
        mcmc_idx = list(range(1, n, 2))
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
        say(f"  {len(mcmc_idx)} analys{'is' if len(mcmc_idx) == 1 else 'es'} "
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
    # refuse a foreign or unwritable --out folder before fitting anything
    from bayesmeta.report import check_out_dir

    check_out_dir(out_dir)
    ctx = RunContext(fast=fast, seed=seed, progress=say, verbose=progress is not None)
    t_all = time.perf_counter()
    outputs = _run_all(specs, ctx, jobs)
    return write_outputs(outputs, out_dir, ctx=ctx, argv=argv, progress=say,
                         seconds=time.perf_counter() - t_all)


def write_outputs(outputs: list[AnalysisOutput], out_dir, *, ctx: RunContext | None = None,
                  argv=None, progress=None, seconds: float | None = None) -> Path:
    """Write rendered analyses as one report (``results.csv``, ``audit.csv``, pages)."""
    ctx = ctx or RunContext()
    res = [o.tables["results"] for o in outputs if "results" in o.tables]
    auds = [o.tables["audit"] for o in outputs if "audit" in o.tables and len(o.tables["audit"])]
    results_all = results.concat(*res) if res else None
    audit_all = pd.concat(auds, ignore_index=True) if auds else None
    prov = provenance(outputs, ctx, argv)
    if seconds is not None:
        prov["seconds_total"] = round(seconds, 2)
    write_report(outputs, out_dir, prov, audit=audit_all, results=results_all,
                 progress=progress or (lambda msg: None))
    return Path(out_dir)
