"""``bayesmeta validate [SPEC ...]``: check analysis specs without running anything."""

from __future__ import annotations

import sys

from bayesmeta.cli._help import FORMATTER, epilog
from bayesmeta.exceptions import BayesMetaError


def add_parser(subparsers):
    p = subparsers.add_parser(
        "validate", help="validate analysis specs (models/*.toml) without running them",
        description="Validate analysis specs (syntax, keys, values and the data each one "
                    "names) without fitting anything.\nWith no SPEC, validates the bundled "
                    "specs in models/. Exit code 2 if any spec is invalid.",
        epilog=epilog("bayesmeta validate                       # the bundled specs",
                      "bayesmeta validate my_analysis.toml",
                      "bayesmeta validate my_specs/             # every *.toml in a folder"),
        formatter_class=FORMATTER)
    p.add_argument("specs", nargs="*", metavar="SPEC",
                   help="spec files or directories (default: the bundled models/)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bayesmeta.spec import expand_spec_args, load_spec

    paths = expand_spec_args(args.specs)
    if not paths:
        print("error: no spec files found", file=sys.stderr)
        return 2
    bad = 0
    for path in paths:
        try:
            spec = load_spec(path)
        except BayesMetaError as err:  # SpecError, or DataError for the data it names
            bad += 1
            print(f"error: {err}", file=sys.stderr)
            continue
        print(f"ok  {spec.name:<22} {spec.kind:<20} {path}  sha256 {spec.sha256[:12]}")
    if bad:
        print(f"{bad} of {len(paths)} spec(s) invalid", file=sys.stderr)
        return 2
    return 0
