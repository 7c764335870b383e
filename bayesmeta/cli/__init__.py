"""Command-line entry point: ``bayesmeta <command> ...``.

Each command lives in its own module ``bayesmeta.cli._<command>`` that provides
``add_parser(subparsers)`` and ``run(args) -> int``. A :class:`BayesMetaError` or an argument
error becomes one line on stderr and exit code 2 (a traceback only with ``--debug``); shared
help pieces (examples, measure columns, one-line errors) are in :mod:`bayesmeta.cli._help`.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import warnings

from bayesmeta.cli._help import Parser, epilog, wrap
from bayesmeta.exceptions import BayesMetaError

COMMANDS = ("classical", "bayes", "run", "simulate", "datasets", "validate")


def json_clean(obj):
    """Make ``obj`` JSON-safe for the ``--json`` outputs: non-finite floats become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_clean(v) for v in obj]
    return obj


DESCRIPTION = ("Bayesian and classical meta-analysis: pool study results from a CSV file, "
               "or run analysis specs and write a report a person can read.")

EPILOG = epilog(
    "bayesmeta classical trials.csv --measure OR            # metafor/RevMan-style pooling",
    "bayesmeta bayes trials.csv --measure OR                # Bayesian random effects",
    "bayesmeta run models/ --out my-report                  # specs -> my-report/index.html",
    "bayesmeta validate my_analysis.toml                    # check a spec, fit nothing",
    "bayesmeta datasets list                                # bundled example data",
    "bayesmeta simulate --n 2000 --k 2 3 5                  # interval coverage by simulation",
    notes=("Run 'bayesmeta COMMAND --help' for a command's options, the columns each measure "
           "needs and more examples.",))


def _build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="bayesmeta", description=wrap(DESCRIPTION), epilog=EPILOG)
    p.add_argument("--debug", action="store_true",
                   help="show Python tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           title="commands")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"bayesmeta.cli._{name}")
        except ModuleNotFoundError as err:
            if err.name != f"bayesmeta.cli._{name}":
                raise
            continue
        mod.add_parser(sub)
    return p


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    def _showwarning(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)
    warnings.showwarning = _showwarning
    try:
        return int(args.func(args) or 0)
    except BayesMetaError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # disk full, permission denied, a path component that is a file, ...: one line, exit 2
        if args.debug:
            raise
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        what = err.strerror or str(err)
        print(f"error: cannot read or write{where}: {what}. Check the path, permissions and "
              "free disk space.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. `bayesmeta datasets list | head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
