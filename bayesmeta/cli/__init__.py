"""Command-line entry point: ``bayesmeta <command> ...``.

Each command lives in its own module ``bayesmeta.cli._<command>`` that provides
``add_parser(subparsers)`` and ``run(args) -> int``. A :class:`BayesMetaError` or an argument
error becomes one line on stderr and exit code 2 (a traceback only with ``--debug``); shared
help pieces (examples, measure columns, one-line errors) are in :mod:`bayesmeta.cli._help`.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import math
import os
import sys
import warnings

from bayesmeta.cli._help import Parser, epilog, wrap
from bayesmeta.exceptions import BayesMetaError
from bayesmeta.textsafe import SafeStream, terminal_safe

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



def _stdout_closed(err: OSError) -> bool:
    return isinstance(err, BrokenPipeError) or err.errno == errno.EPIPE


def _silence_stdout():
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # pragma: no cover - no real file descriptor
        pass


def main(argv=None) -> int:
    """Run one command. Everything it prints passes through
    :func:`bayesmeta.textsafe.terminal_safe` (labels from the user's files cannot send escape
    sequences to the terminal); an error or warning is one line."""
    parser = _build_parser()
    args = parser.parse_args(argv)

    def _showwarning(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {terminal_safe(message, newlines=False)}", file=sys.stderr)

    saved = warnings.showwarning, sys.stdout, sys.stderr
    warnings.showwarning = _showwarning
    sys.stdout, sys.stderr = SafeStream(sys.stdout), SafeStream(sys.stderr)
    try:
        try:
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed stdout shows here, not at interpreter exit
            return code
        except BayesMetaError as err:
            if args.debug:
                raise
            print(f"error: {terminal_safe(err, newlines=False)}", file=sys.stderr)
            return 2
        except OSError as err:
            if _stdout_closed(err):
                # the reader stopped early (e.g. `bayesmeta datasets list | head`): not an error
                _silence_stdout()
                return 0
            # disk full, permission denied, a path component that is a file, ...: one line
            if args.debug:
                raise
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            what = err.strerror or str(err)
            print(terminal_safe(f"error: cannot read or write{where}: {what}. Check the path, "
                                "permissions and free disk space.", newlines=False),
                  file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
    finally:
        warnings.showwarning = saved[0]
        sys.stdout, sys.stderr = saved[1], saved[2]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
