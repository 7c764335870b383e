"""Checks of a fitted result against its own data, usable by every engine.

:func:`posterior_outside_data`: a pooled estimate is a compromise between the studies (the
fixed-effect and random-effects means are weighted averages, so they lie between the smallest
and the largest estimate) unless the prior pulls it away. A posterior interval of the pooled
mean lying entirely outside the range of every study estimate therefore means the prior, not
the data, decided the result: that must be said, not printed as a finding.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["posterior_outside_data"]


def posterior_outside_data(yi, lower: float, upper: float, *, parameter: str = "mu",
                           level: float = 0.95, prior=None) -> str | None:
    """A one-sentence note if the interval ``[lower, upper]`` of a pooled parameter lies
    entirely below the smallest or above the largest study estimate; else None.

    Parameters
    ----------
    yi : study estimates (analysis scale); non-finite values are ignored.
    lower, upper : the posterior interval of the pooled parameter.
    parameter : its name, for the message.
    level : the interval's probability, for the message.
    prior : the prior of the parameter (its ``str`` is named in the message), optional.

    Examples
    --------
    >>> posterior_outside_data([0.1, 0.2, 0.3], 0.004, 0.009) is not None
    True
    >>> posterior_outside_data([0.1, 0.2, 0.3], 0.05, 0.25) is None
    True
    """
    y = np.asarray(yi, dtype=float)
    y = y[np.isfinite(y)]
    if y.size == 0 or not (math.isfinite(lower) and math.isfinite(upper)):
        return None
    lo, hi = float(y.min()), float(y.max())
    if lower <= hi and upper >= lo:
        return None
    side = "below the smallest" if upper < lo else "above the largest"
    who = f" {prior}" if prior is not None else ""
    return (f"the {100 * level:g}% interval of {parameter} [{lower:.4g}, {upper:.4g}] lies "
            f"{side} study estimate (estimates range from {lo:.4g} to {hi:.4g}): the prior"
            f"{who}, not the data, determines it; check the prior's location and scale against "
            "the data")
