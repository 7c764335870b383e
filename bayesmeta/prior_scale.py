"""The scale of the data-dependent default priors, robust to extreme precision ratios.

The default priors for MD-type measures (:func:`bayesmeta.priors.default_mu_prior`,
:func:`~bayesmeta.priors.default_tau_prior`) are scaled by the unit-information SD
``s_u = sqrt(sum n_i / sum 1/v_i)`` (Röver et al. 2021), the SD of one patient's outcome. That
pooled formula is a precision-weighted average: when a few studies are far more precise per
patient than the others (vi of 1e-8 beside 0.05 and 1e4), it is set by those few alone, and a
prior scaled from it can contradict every study (with yi = 0.1, 0.2, 0.25, 0.3 it gave
mu ~ Normal(0, 0.0013) and a posterior of mu at 0.0066, outside all four estimates).

:func:`data_scale` therefore compares ``s_u`` with the per-study unit-information SDs
``s_i = sqrt(n_i v_i)`` (with the assumed ``n`` when sizes are unknown). In data where the
studies measure the same outcome, the ``s_i`` agree and ``s_u`` is kept. When ``s_u`` is more
than :data:`COLLAPSE` times below their median, the median is used instead, with a
:class:`~bayesmeta.exceptions.DataWarning` that names the reason: a few extremely precise
studies cannot move a median (only a majority of studies can).

:func:`covering_scale` then makes sure the scale covers the study estimates themselves: the
mu prior's SD is at least the largest |yi| and the tau prior's scale at least a quarter of the
range of the yi (with a warning when it has to raise them). With both, no default prior can
contradict every study, whatever the precisions or the units of yi.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from bayesmeta.exceptions import DataWarning, SpecError

__all__ = ["ScaleChoice", "data_scale", "covering_scale", "COLLAPSE"]

#: s_u more than this factor below the median per-study unit-information SD counts as collapsed
#: (studies of one outcome give per-study SDs within a factor of 2-3 of each other)
COLLAPSE = 10.0


@dataclass(frozen=True)
class ScaleChoice:
    """The scale ``s`` for the default priors and how it was obtained (``how``: one phrase;
    ``fallback``: why the pooled s_u was not used, or '')."""

    s: float
    how: str
    fallback: str = ""


def data_scale(vi, n=None, *, fallback_n: int = 64, warn: bool = True) -> ScaleChoice:
    """Unit-information scale of a study table, falling back to the median per-study scale
    when a few very precise studies collapse the pooled one (see the module docstring).

    Parameters
    ----------
    vi : sampling variances (finite, > 0).
    n : total sample size per study, optional (else ``fallback_n`` per study).
    warn : emit the :class:`DataWarning` when falling back.
    """
    v = np.asarray(vi, dtype=float)
    if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise SpecError("unit-information SD needs finite positive sampling variances vi")
    if n is not None:
        nn = np.asarray(n, dtype=float)
        s_u = math.sqrt(nn.sum() / np.sum(1.0 / v))
        how = f"s_u = sqrt(sum n / sum 1/vi) from {v.size} studies' n and vi"
    else:
        nn = np.full(v.size, float(fallback_n))
        s_u = math.sqrt(fallback_n * v.size / np.sum(1.0 / v))
        how = f"sample sizes unknown: s_u = SE * sqrt(n) assuming n = {fallback_n} per study"
    per = np.sqrt(nn * v)
    med = float(np.median(per))
    if not (math.isfinite(s_u) and s_u > 0) or s_u * COLLAPSE < med:
        lo, hi = float(per.min()), float(per.max())
        n_prec = int(np.sum(per < med / COLLAPSE))
        reason = (f"per-patient precision differs by a factor of {(hi / lo) ** 2:.3g} between "
                  f"studies (per-study unit-information SDs {lo:.3g} to {hi:.3g}): the pooled "
                  f"s_u = {s_u:.4g} is set by the {n_prec} most precise stud"
                  f"{'y' if n_prec == 1 else 'ies'} and a prior scaled from it would contradict "
                  f"the others, so the default priors use the median per-study SD {med:.4g}")
        if warn:
            # one location for every caller, so the warning is shown once per run
            warnings.warn(f"default priors: {reason}", DataWarning, stacklevel=1)
        return ScaleChoice(med, f"median of sqrt(n_i vi) over {v.size} studies; {reason}",
                           reason)
    return ScaleChoice(s_u, how)


def covering_scale(s: float, yi, *, what: str, factor: float = 1.0,
                   warn: bool = True) -> tuple[float, str]:
    """``(scale, reason)``: ``s`` raised, when needed, to the spread of the study estimates.

    ``what="mu"``: the mu prior's SD is at least max |yi|, so every estimate lies within one
    prior SD of 0 and the prior cannot pull the pooled mean outside the estimates (the posterior
    mean given tau moves from the weighted mean of the data towards 0 by at most one posterior
    SD, since |ybar| sqrt(p0) <= 1 with prior precision p0 = 1 / s²). ``what="tau"``: the tau
    prior's scale is at least (max yi - min yi) / 4, the tau that would spread the estimates over
    their range. ``factor`` multiplies ``s`` (1/4 for the tau prior). ``reason`` is '' when ``s``
    already covers the estimates.
    """
    base = s * factor
    y = None if yi is None else np.asarray(yi, dtype=float)
    if y is None or y.size == 0 or not np.all(np.isfinite(y)):
        return base, ""
    need = float(np.max(np.abs(y))) if what == "mu" else float(np.ptp(y)) / 4.0
    if not need > base:
        return base, ""
    if what == "mu":
        reason = (f"the study estimates reach |yi| = {need:.4g}, beyond the unit-information "
                  f"scale {base:.4g}: mu's prior SD is set to {need:.4g} so that it does not "
                  "contradict them")
    else:
        reason = (f"the study estimates span {need * 4:.4g}, more than the unit-information "
                  f"scale allows for tau ({base:.4g}): tau's prior scale is set to a quarter of "
                  f"that range, {need:.4g}")
    if warn:
        warnings.warn(f"default priors: {reason}", DataWarning, stacklevel=1)
    return need, reason
