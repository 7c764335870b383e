"""Labels: how a result is named for a person (time unit, measure, direction, numbers).

Computation never formats; this is where numbers and coordinates become words. Every label
comes from the data or the spec (``[data] time_unit``, ``[report] direction``), never from a
domain default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bayesmeta import vocab

#: effect names a person reads, by measure
EFFECT_NAMES = {"MD": "MD", "SMD": "SMD", "OR": "OR", "RR": "RR", "PETO": "OR", "RD": "RD",
                "MC": "mean change", "GEN": "effect"}


def prob(p: float) -> str:
    """A probability for display: 3 decimals; "> 0.999" / "< 0.001" at the ends."""
    if p is None or not math.isfinite(p):
        return ""
    if p > 0.999:
        return "> 0.999"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}"


@dataclass(frozen=True)
class Labels:
    """Display rules of one analysis."""

    measure: str
    time_unit: str = ""
    direction: str = "lower_is_better"
    digits: int = 2

    @property
    def effect(self) -> str:
        return EFFECT_NAMES.get(self.measure, self.measure)

    @property
    def ratio(self) -> bool:
        return vocab.is_ratio(self.measure)

    def time(self, t: str) -> str:
        """``"12"`` → "week 12" (with time_unit week) or "time 12"; ``"all"`` → "all times";
        ``""`` → ""."""
        if t == "":
            return ""
        if t == "all":
            return f"all {self.time_unit + 's' if self.time_unit else 'times'} (pooled)"
        if t.startswith("avg(") and t.endswith(")"):
            unit = self.time_unit + "s" if self.time_unit else "times"
            return f"average of {unit} {', '.join(t[4:-1].split(','))}"
        return f"{self.time_unit or 'time'} {t}"

    def cell(self, subgroup: str = "", time: str = "", outcome: str = "") -> str:
        parts = [x for x in (outcome, subgroup, self.time(time)) if x]
        return ", ".join(parts) if parts else "overall"

    def nat(self, x: float) -> float:
        return vocab.to_natural(x, self.measure) if math.isfinite(x) else x

    def num(self, x: float, digits: int | None = None) -> str:
        d = self.digits if digits is None else digits
        return "" if x is None or not math.isfinite(x) else f"{x:.{d}f}"

    def ci(self, est: float, lo: float, hi: float, digits: int | None = None) -> str:
        """``est [lo, hi]`` on the natural scale (exp for ratio measures)."""
        if not all(map(math.isfinite, (est, lo, hi))):
            return ""
        e, a, b = self.nat(est), self.nat(lo), self.nat(hi)
        return f"{self.num(e, digits)} [{self.num(a, digits)}, {self.num(b, digits)}]"

    def benefit(self, sign: int) -> str:
        """The benefit side of the null, e.g. "OR > 1" or "MD < 0"."""
        null = "1" if self.ratio else "0"
        return f"{self.effect} {'>' if sign > 0 else '<'} {null}"

    def beyond(self, t: float, sign: int) -> str:
        return f"{self.effect} {'>' if sign > 0 else '<'} {t:g}"
