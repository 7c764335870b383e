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
import queue
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import pandas as pd

from bayesmeta import results
from bayesmeta.blas import one_blas_thread
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


def _claim(counter, order):
    """The next index of ``order`` not yet taken by either process (``None`` when all are)."""
    with counter.get_lock():
        k = counter.value
        if k >= len(order):
            return None
        counter.value = k + 1
    return order[k]


#: what every analysis imports (its classical twin, checks, figures): the worker imports them
#: while the parent validates the specs
_WORKER_IMPORTS = ("bayesmeta.pipeline", "bayesmeta.sections", "bayesmeta.plots",
                   "bayesmeta.classical", "bayesmeta.exact", "bayesmeta.checks",
                   "bayesmeta.check_sections", "bayesmeta.audit", "bayesmeta.workflow",
                   "scipy.stats")


def _preimport() -> None:
    import importlib

    for name in _WORKER_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:  # only a head start: the analysis imports what it needs itself
            pass


def _run_in_worker(plan_conn, conn, counter, fast, seed, verbose=False, svg=False):
    """Worker-process entry (top level, so it pickles).

    Imports the analysis modules while the parent validates the specs, then waits for the plan
    ``(paths, pinned, order)`` (stops at end of file: the parent gave up): runs the ``pinned`` analyses (indices into
    ``paths``; the MCMC ones), then claims analyses from ``order`` through the shared
    ``counter`` until none is left. Each analysis is loaded from its path (the parent has
    validated it), run, prerendered, and sent back as ``("ok", index, output)``; then
    ``("done", None, None)``, or ``("error", None, exception)``.
    """
    try:
        # numba fastmath off process-wide, also for processes this worker starts (pymc's own
        # sampler runs chains in child processes): see bayesmeta.mcmc._deterministic_numba
        flags = os.environ.get("PYTENSOR_FLAGS", "")
        os.environ["PYTENSOR_FLAGS"] = ",".join(filter(None, [flags, "numba__fastmath=False"]))
        _preimport()

        try:
            plan = plan_conn.recv()
        except EOFError:
            plan = None
        if plan is None:
            return
        paths, pinned, order = plan
        ctx = RunContext(fast=fast, seed=seed, progress=_worker_say if verbose else
                         (lambda msg: None))

        def one(i):
            with warnings.catch_warnings(record=True):  # the parent has shown them
                warnings.simplefilter("always")
                spec = load_spec(paths[i])
            ctx.progress(f"{spec.name} ({spec.kind}){' --fast' if fast else ''}")
            out = run_spec(spec, ctx)
            prerender(out, svg=svg)  # figures and NetCDF as bytes, drawn here
            conn.send(("ok", i, out))

        with one_blas_thread():  # this process shares the cores with the parent
            for i in pinned:
                one(i)
            while (i := _claim(counter, order)) is not None:
                one(i)
        conn.send(("done", None, None))
    except BaseException as err:  # noqa: BLE001 - handed to the parent, which re-raises it
        conn.send(("error", None, err))
    finally:
        conn.close()


class _Worker:
    """The second process of a ``jobs > 1`` run: started before the specs are validated (its
    imports overlap the validation), given its plan afterwards, its results collected by a
    thread as they arrive (so it never waits for the parent to read)."""

    def __init__(self, ctx: RunContext, svg: bool = False):
        import multiprocessing as mp

        # spawn: a clean interpreter (no inherited numba/OpenMP threads); not a daemon, so the
        # pymc sampler may start its own chain processes inside it
        ctxmp = mp.get_context("spawn")
        plan_r, self.plan = ctxmp.Pipe(duplex=False)
        self.conn, child = ctxmp.Pipe(duplex=False)
        self.counter = ctxmp.Value("i", 0)
        self.proc = ctxmp.Process(target=_run_in_worker, daemon=False,
                                  args=(plan_r, child, self.counter, ctx.fast, ctx.seed,
                                        ctx.verbose, svg))
        self.proc.start()
        plan_r.close()
        child.close()
        self.inbox: queue.Queue = queue.Queue()
        self.reader: threading.Thread | None = None

    def start(self, paths, pinned, order) -> None:
        """Send the plan; collect results from now on."""
        try:
            self.plan.send(([str(p) for p in paths], list(pinned), list(order)))
        except OSError:  # a broken pipe here is the worker's, not stdout's
            self.proc.join(timeout=5)
            raise EstimationError(self.died()) from None
        self.plan.close()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                msg = ("died", None, None)
            except BaseException as err:  # noqa: BLE001 - e.g. an output that cannot unpickle
                msg = ("error", None, err)
            self.inbox.put(msg)
            if msg[0] != "ok":
                return

    def died(self) -> str:
        return ("the worker process running analyses beside this one died (exit code "
                f"{self.proc.exitcode})")

    def claim(self, order):
        return _claim(self.counter, order)

    def close(self) -> None:
        """Stop the worker: once it has sent everything it exits by itself; before that (no
        plan was sent, or an error or interrupt here) it is terminated."""
        if self.reader is None or self.reader.is_alive():
            self.proc.terminate()
        self.proc.join()
        if self.reader is not None:
            self.reader.join()
        self.plan.close()
        self.conn.close()


def _expected_seconds(specs, out_dir) -> list[float]:
    """Expected cost of each analysis, to start the longest first: its run time recorded in
    the previous report in ``out_dir`` (``provenance.json``); an analysis without one gets the
    mean of the others (all equal, so the order given, when none is known). Only the order
    of the work depends on it, never a number."""
    import json

    try:
        prov = json.loads((Path(out_dir) / "provenance.json").read_text(encoding="utf-8"))
        past = {str(k): float(a["seconds"]) for k, a in prov["analyses"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        past = {}
    known = [past[s.name] for s in specs if s.name in past]
    mean = sum(known) / len(known) if known else 0.0
    return [past.get(s.name, mean) for s in specs]


def _run_all(specs, ctx: RunContext, jobs: int, *, worker: _Worker | None = None,
             expected: list[float] | None = None, svg: bool = False) -> list[AnalysisOutput]:
    """Run every spec; return outputs in spec order.

    With ``jobs > 1`` (and two or more analyses) a worker process runs beside this one: the
    MCMC analyses go to the worker (one process pays the samplers' start-up); every other
    analysis is claimed by whichever process is free next, longest first by ``expected``
    seconds (ties in the order given), and each process renders the figures of the analyses it
    ran. Each analysis is seeded from its own spec, so the numbers do not depend on the
    schedule. The worker is stopped on any error or interrupt before the report is written.
    ``svg``: figures are prerendered with SVG copies (see :func:`bayesmeta.report.prerender`).
    """
    say = ctx.progress
    n = len(specs)
    outputs: list[AnalysisOutput | None] = [None] * n
    own = worker is None and jobs > 1 and n > 1
    if own:
        worker = _Worker(ctx, svg)
    if worker is None:
        for i, spec in enumerate(specs):
            say(f"[{i + 1}/{n}] {spec.name} ({spec.kind}){' --fast' if ctx.fast else ''}")
            outputs[i] = run_spec(spec, ctx)
            say(f"      done in {outputs[i].seconds:.1f} s")
        return outputs
    try:
        pinned = [i for i, s in enumerate(specs) if _uses_mcmc(s)]
        cost = list(expected) if expected is not None else [0.0] * n
        order = sorted((i for i in range(n) if i not in pinned), key=lambda i: -cost[i])
        worker.start([s.path for s in specs], pinned, order)
        if pinned:
            say(f"  a worker process runs the MCMC analys{'is' if len(pinned) == 1 else 'es'} "
                f"({', '.join(specs[i].name for i in pinned)}) and shares the others")
        else:
            say("  a worker process shares the analyses")

        finished = False

        def collect(block: bool) -> None:
            """Take the worker's results (waiting for all of them when ``block``)."""
            nonlocal finished
            while not finished and (block or not worker.inbox.empty()):
                status, i, value = worker.inbox.get()
                if status == "error":
                    raise value
                if status == "died":
                    worker.proc.join(timeout=5)  # its exit code, when it has one
                    raise EstimationError(worker.died()) from None
                if status == "done":
                    finished = True
                else:
                    outputs[i] = value
                    say(f"[{i + 1}/{n}] {value.name} ({value.kind}) done in "
                        f"{value.seconds:.1f} s (worker)")

        with one_blas_thread():
            while (i := worker.claim(order)) is not None:
                spec = specs[i]
                say(f"[{i + 1}/{n}] {spec.name} ({spec.kind}){' --fast' if ctx.fast else ''}")
                outputs[i] = run_spec(spec, ctx)
                prerender(outputs[i], svg=svg)  # figures drawn in the process that ran it
                say(f"      done in {outputs[i].seconds:.1f} s")
                collect(block=False)
            collect(block=True)
        missing = [specs[i].name for i, o in enumerate(outputs) if o is None]
        if missing:
            raise EstimationError(f"the worker process finished without running {missing}")
    finally:
        if own:
            worker.close()
    return outputs


def run(spec_args=(), *, out_dir="reports", seed: int | None = None, fast: bool = False,
        progress: Callable[[str], None] | None = None, argv=None, jobs: int = 2,
        svg: bool = False) -> Path:
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
        2 (default): a worker process runs beside this one (the MCMC analyses in it, the
        others shared, longest first by the run times in a previous report in ``out_dir``);
        1: serial. The numbers are the same either way.
    progress : callable, optional
        Receives progress lines; with ``jobs = 2`` the worker prints its own lines, prefixed
        ``(worker)``, on stderr (none when ``progress`` is None).
    svg : bool
        Also write every figure as SVG beside its PNG (``<name>/figures/<f>.svg``).
    """
    say = progress or (lambda msg: None)
    paths = expand_spec_args(list(spec_args))
    if not paths:
        raise SpecError("no spec files found", fix="Give .toml files or a directory of them.")
    ctx = RunContext(fast=fast, seed=seed, progress=say, verbose=progress is not None)
    # the worker imports the analysis modules while the specs are validated here
    worker = _Worker(ctx, svg) if jobs > 1 and len(paths) > 1 else None
    try:
        specs = [load_spec(p) for p in paths]  # validate all before running any
        names = [s.name for s in specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SpecError(f"analysis names must be unique; repeated: {dup}")
        # refuse a foreign or unwritable --out folder before fitting anything
        from bayesmeta.report import check_out_dir

        check_out_dir(out_dir)
        t_all = time.perf_counter()
        outputs = _run_all(specs, ctx, jobs, worker=worker,
                           expected=_expected_seconds(specs, out_dir), svg=svg)
        return write_outputs(outputs, out_dir, ctx=ctx, argv=argv, progress=say,
                             seconds=time.perf_counter() - t_all, svg=svg)
    finally:
        if worker is not None:  # after the writing: its exit overlaps it
            worker.close()


def write_outputs(outputs: list[AnalysisOutput], out_dir, *, ctx: RunContext | None = None,
                  argv=None, progress=None, seconds: float | None = None,
                  svg: bool = False) -> Path:
    """Write rendered analyses as one report (``results.csv``, ``audit.csv``, pages; SVG
    copies of the figures with ``svg``)."""
    ctx = ctx or RunContext()
    res = [o.tables["results"] for o in outputs if "results" in o.tables]
    auds = [o.tables["audit"] for o in outputs if "audit" in o.tables and len(o.tables["audit"])]
    results_all = results.concat(*res) if res else None
    audit_all = pd.concat(auds, ignore_index=True) if auds else None
    prov = provenance(outputs, ctx, argv)
    if seconds is not None:
        prov["seconds_total"] = round(seconds, 2)
    write_report(outputs, out_dir, prov, audit=audit_all, results=results_all,
                 progress=progress or (lambda msg: None), svg=svg)
    return Path(out_dir)
