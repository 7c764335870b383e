"""Direction of benefit: one setting read by every probability, contrast and absolute effect.

An effect ``x`` on the analysis scale (log OR, MD, ...) is a *benefit* when it lies on the
better side of the null: ``x > null`` for ``higher_is_better``, ``x < null`` for
``lower_is_better``. For a binary outcome the setting also says what the counted events are:

* ``events="deaths"``: the odds ratio compares the odds of the adverse event (death), so lower
  is better; the baseline risk is the control-arm risk of the event;
* ``events="survivors"``: the odds ratio compares the odds of being event-free (survival), so
  higher is better; the baseline risk is the control-arm survival.

The two readings describe the same data: the log OR of survivors is minus the log OR of deaths,
and the control survival is one minus the control risk of death. :meth:`Direction.reexpressed`
returns the other reading; quantities computed from either agree (tests check it).

``benefit(x)`` orients any effect so that positive means benefit; ``prob_benefit`` and
``prob_beyond`` are the exceedance probabilities in the benefit direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayesmeta.exceptions import SpecError

__all__ = ["Direction", "BETTER", "EVENTS"]

BETTER = ("higher_is_better", "lower_is_better")
EVENTS = ("deaths", "survivors")
_IMPLIED = {"deaths": "lower_is_better", "survivors": "higher_is_better"}


@dataclass(frozen=True)
class Direction:
    """Which side of the null is a benefit, and (binary outcomes) what the events are.

    Parameters
    ----------
    better : {"higher_is_better", "lower_is_better"}, optional
        Omitted for a binary outcome: implied by ``events``.
    events : {"deaths", "survivors"} or None
        What a binary outcome counts. ``deaths`` implies ``lower_is_better`` and ``survivors``
        ``higher_is_better``; a contradicting ``better`` is a :class:`SpecError`.
    """

    better: str = ""
    events: str | None = None

    def __post_init__(self):
        if self.events is not None and self.events not in EVENTS:
            raise SpecError(f"Invalid events {self.events!r}: must be one of {list(EVENTS)}.",
                            key="events")
        better = self.better
        if not better:
            if self.events is None:
                raise SpecError("direction needs better= (higher_is_better or lower_is_better) "
                                "or events= (deaths or survivors)", key="direction")
            better = _IMPLIED[self.events]
            object.__setattr__(self, "better", better)
        if better not in BETTER:
            raise SpecError(f"Invalid direction {better!r}: must be one of {list(BETTER)}.",
                            key="direction")
        if self.events is not None and better != _IMPLIED[self.events]:
            raise SpecError(f"direction {better!r} contradicts events {self.events!r}: an odds "
                            f"ratio of {self.events} is better when "
                            f"{_IMPLIED[self.events].split('_')[0]}",
                            key="direction",
                            fix=f"use direction = \"{_IMPLIED[self.events]}\" or swap events")

    # ---- orientation -------------------------------------------------------------------
    @property
    def sign(self) -> int:
        """+1 when higher is better, -1 when lower is better."""
        return 1 if self.better == "higher_is_better" else -1

    def benefit(self, x):
        """``x`` oriented so that positive = benefit (``sign * x``)."""
        return self.sign * np.asarray(x, dtype=float) if np.ndim(x) else self.sign * float(x)

    def prob_benefit(self, draws, null: float = 0.0) -> float:
        """Share of ``draws`` on the better side of ``null`` (ties count as no benefit)."""
        d = np.asarray(draws, dtype=float)
        return float(np.mean(self.sign * (d - null) > 0))

    def prob_beyond(self, draws, threshold: float) -> float:
        """Share of ``draws`` beyond ``threshold`` in the benefit direction (``> thr`` when
        higher is better, ``< thr`` when lower is better)."""
        return self.prob_benefit(draws, threshold)

    def from_prob_above(self, p_above: float) -> float:
        """P(benefit) from an exact P(x > null) (continuous distributions: P(x = null) = 0)."""
        return float(p_above) if self.sign > 0 else 1.0 - float(p_above)

    # ---- the other reading ---------------------------------------------------------------
    def flipped(self) -> "Direction":
        """The opposite direction with the same events label removed (a different claim about
        the same numbers: P(benefit) becomes 1 - P(benefit))."""
        return Direction("lower_is_better" if self.sign > 0 else "higher_is_better")

    def reexpressed(self) -> "Direction":
        """The same claim read with the complementary events (deaths <-> survivors): pair it
        with ``-x`` on a log odds-ratio scale and ``1 - p`` for a baseline risk."""
        if self.events is None:
            raise SpecError("reexpressed() needs events (deaths or survivors)")
        return Direction(events="survivors" if self.events == "deaths" else "deaths")

    def describe(self) -> str:
        side = "higher" if self.sign > 0 else "lower"
        ev = f"; events = {self.events}" if self.events else ""
        return f"{side} is better{ev}"
