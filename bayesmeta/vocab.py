"""The package's vocabulary in one place: measures, scales, estimators, tests, directions.

Every module that needs one of these lists imports it from here, so a new measure or
estimator is added once.
"""

from __future__ import annotations

import math

#: effect measures (metafor's names; MC = one-group mean change, GEN = given yi/vi)
MEASURES = ("MD", "SMD", "OR", "RR", "RD", "PETO", "MC", "GEN")
#: measures computed from 2x2 counts
BINARY = ("OR", "RR", "RD", "PETO")
#: measures analysed on the log scale (displayed exponentiated)
RATIO = ("OR", "RR", "PETO")
#: analysis scale of each measure
SCALE = {"MD": "MD", "SMD": "SMD", "OR": "logOR", "RR": "logRR", "RD": "RD", "PETO": "logOR",
         "MC": "MC", "GEN": "GEN"}
#: the ratio a person reads for a measure analysed on the log scale
RATIO_NAME = {"OR": "OR", "RR": "RR", "PETO": "OR"}

#: tau² estimators (random effects) and the common-effect methods
TAU2_METHODS = ("DL", "REML", "ML", "PM", "HE", "SJ", "EB", "HS")
COMMON_METHODS = ("FE", "MH", "PETO")
METHODS = COMMON_METHODS + TAU2_METHODS
TESTS = ("z", "knha")
PRESETS = ("revman5", "revman_web")

#: which sign of the effect is a benefit
DIRECTIONS = ("lower_is_better", "higher_is_better")

#: what a row of the input is
ROW_KINDS = ("auto", "arms", "effect", "published")
#: the roles a column can play in a design
ROLES = ("study", "time", "subgroup", "outcome")


def is_ratio(measure: str) -> bool:
    """Is ``measure`` analysed on the log scale (and read as a ratio)?"""
    return str(measure).upper() in RATIO


def scale_of(measure: str) -> str:
    return SCALE.get(str(measure).upper(), str(measure))


def benefit_sign(direction: str) -> int:
    """+1 when a higher effect is a benefit, -1 when a lower one is."""
    if direction not in DIRECTIONS:
        raise ValueError(f"Invalid direction {direction!r}: must be one of {list(DIRECTIONS)}.")
    return 1 if direction == "higher_is_better" else -1


def z_quantile(level: float) -> float:
    """Two-sided normal quantile of an interval of probability ``level`` (1.959964 at 0.95)."""
    from scipy import special

    return float(special.ndtri(0.5 + float(level) / 2.0))


def to_natural(x: float, measure: str) -> float:
    """A value on the analysis scale as a person reads it (exp for ratio measures)."""
    return math.exp(x) if is_ratio(measure) else float(x)


def to_analysis(x: float, measure: str) -> float:
    """A value as a person states it (a ratio for ratio measures) on the analysis scale."""
    if is_ratio(measure):
        if not x > 0:
            raise ValueError(f"a ratio must be > 0, got {x!r}")
        return math.log(x)
    return float(x)
