"""``bayesmeta run [SPEC ...] [--out DIR] [--seed N] [--fast] [--svg]``: run analyses, write the
report.

The output directory is checked before anything is fitted (:func:`bayesmeta.report.
check_out_dir`), so a refused ``--out`` costs nothing.
"""

from __future__ import annotations

import os
import signal
import sys

from bayesmeta.cli._help import FORMATTER, epilog, nonnegative_int, positive_int, wrap

DESCRIPTION = """Run analysis specs (default: every bundled spec in models/) and write
index.html (answers first), one page and Markdown file per analysis, CSV tables, figures
(PNG; SVG too with --svg), posterior NetCDF files and provenance.json into the output
directory.

The output directory must be new, empty or an earlier bayesmeta report; it is checked before
anything is fitted, and replaced atomically at the end: an interrupted run leaves the previous
report intact."""

EPILOG = epilog(
    "bayesmeta run                                   # every bundled spec -> reports/",
    "bayesmeta run models/survival_2023.toml --out my-report --seed 7",
    "bayesmeta run my_specs/ --fast --out /tmp/smoke   # few MCMC draws: a quick check",
    notes=("A spec names its data and model; 'bayesmeta validate SPEC' checks it without "
           "fitting.",))


def add_parser(subparsers):
    p = subparsers.add_parser(
        "run", help="run analysis specs and write the report (reports/index.html)",
        description=wrap(DESCRIPTION), epilog=EPILOG, formatter_class=FORMATTER)
    p.add_argument("specs", nargs="*", metavar="SPEC",
                   help="spec files or directories (default: the bundled models/)")
    p.add_argument("--out", default="reports", metavar="DIR",
                   help="output directory (default: ./reports)")
    p.add_argument("--seed", type=nonnegative_int, default=None, metavar="N",
                   help="override every spec's sampling seed")
    p.add_argument("--fast", action="store_true",
                   help="few MCMC draws (smoke test); the report says so")
    p.add_argument("-j", "--jobs", type=positive_int, default=min(2, os.cpu_count() or 1),
                   metavar="N",
                   help="1: run analyses one after another; 2 or more (2 is the default on "
                        ">= 2 cores; more than 2 runs as 2): this process and one worker share "
                        "the analyses, longest first, MCMC ones in the worker (same numbers)")
    p.add_argument("--svg", action="store_true",
                   help="also write every figure as SVG beside its PNG (DIR/NAME/figures/)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception so the atomic writer cleans up."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through a subprocess test
    raise _Terminated()


def run(args) -> int:
    from bayesmeta.report import check_out_dir

    check_out_dir(args.out)  # before any fitting: the same refusal the writer would give
    from bayesmeta import runner

    def progress(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        out = runner.run(args.specs, out_dir=args.out, seed=args.seed, fast=args.fast,
                         jobs=args.jobs, progress=None if args.quiet else progress,
                         argv=["bayesmeta", *sys.argv[1:]], svg=args.svg)
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress(f"report: {out / 'index.html'}")
    return 0
