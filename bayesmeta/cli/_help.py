"""Pieces every command's parser shares: one-line errors, refused repeats, examples and the
columns each measure needs.

- :class:`Parser` prints an argument error as one line (``error: bayesmeta classical: ...;
  see 'bayesmeta classical --help'``) and exits with code 2; repeating an option that takes
  one value is such an error, and an option that takes a list collects the values of every
  repeat (``--k 2 3 --k 5`` is ``--k 2 3 5``).
- :func:`epilog` formats the examples (and, on request, :func:`measure_columns_text`) shown
  under a command's ``--help``; pass ``formatter_class=FORMATTER`` so line breaks are kept.
- :func:`probability`, :func:`positive_int`, :func:`nonnegative_int` are argparse types whose
  errors name the rule broken.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

MEASURE_NAMES = {
    "MD": "mean difference",
    "SMD": "standardised mean difference (Hedges' g)",
    "OR": "odds ratio",
    "RR": "risk ratio",
    "RD": "risk difference",
    "PETO": "Peto odds ratio",
    "MC": "mean change in one arm",
    "GEN": "any effect with its variance or SE",
}


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs; option help wraps as usual."""

    def __init__(self, prog, **kw):
        kw.setdefault("max_help_position", 30)
        super().__init__(prog, **kw)


FORMATTER = Formatter


class _Once(argparse.Action):
    """Store one value; a repeated option is an error, a repeated list option extends."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given_options", {})
        if option_string is not None and self.dest in given:
            if self.nargs in ("+", "*"):
                values = list(given[self.dest]) + list(values)
            else:
                parser.error(f"{option_string} given twice ({given[self.dest]!r}, then "
                             f"{values!r}); give it once")
        given[self.dest] = values
        setattr(namespace, self.dest, values)


class Parser(argparse.ArgumentParser):
    """ArgumentParser with one-line errors (exit code 2) and refused repeated options.

    Sub-command parsers made with ``add_subparsers().add_parser`` are of the same class.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", FORMATTER)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        if args and str(args[0]).startswith("-") and kwargs.get("action") in (None, "store"):
            kwargs["action"] = _Once
        return super().add_argument(*args, **kwargs)

    def error(self, message):
        message = " ".join(str(message).split())
        sys.stderr.write(f"error: {self.prog}: {message}; see '{self.prog} --help'\n")
        sys.exit(2)


def measure_columns_text() -> str:
    """The columns each measure needs (metafor's names), one line per measure."""
    from bayesmeta.io import MEASURE_COLUMNS

    lines = []
    for m, name in MEASURE_NAMES.items():
        alts = "  or  ".join(" ".join(a) for a in MEASURE_COLUMNS.get(m, ()))
        lines.append(f"  {m:<5} {name:<43} {alts}")
    lines += ["  Optional: study (labels). Group 1 (m1i, sd1i, n1i, ai, bi) is the treatment, "
              "group 2 the control;",
              "  ai/ci = events, bi/di = non-events, n1i/n2i = patients, m = mean, sd = SD."]
    return "\n".join(lines)


def epilog(*examples: str, columns: bool = False, notes: tuple[str, ...] = ()) -> str:
    """Text under a command's ``--help``: examples, optional measure columns, notes."""
    parts = []
    if examples:
        parts.append("examples:\n" + "\n".join(f"  {e}" for e in examples))
    if columns:
        parts.append("columns each --measure needs (one row per study):\n"
                     + measure_columns_text())
    parts.extend(textwrap.fill(n, 88) for n in notes)
    return "\n\n".join(parts)


def wrap(text: str, width: int = 88) -> str:
    """A description paragraph wrapped for :data:`FORMATTER` (which keeps line breaks)."""
    return "\n\n".join(textwrap.fill(" ".join(par.split()), width)
                       for par in text.split("\n\n"))


def probability(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (e.g. 0.95)")
    return x


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            x = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if x < minimum:
            raise argparse.ArgumentTypeError(f"{x} is below {minimum}")
        return x
    parse.__name__ = f"int>={minimum}"
    return parse


positive_int = _int_at_least(1)
nonnegative_int = _int_at_least(0)
