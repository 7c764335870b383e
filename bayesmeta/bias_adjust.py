"""Additive bias adjustment for study design (Turner et al. 2009 form, empirical numbers).

A study estimate ``y_i`` of design d is modelled as ``y_i = theta_i + sign * beta_i + e_i``
with an additive bias ``beta_i ~ N(m_d, s_d²)`` that exaggerates benefit when ``m_d > 0``
(``sign`` from :class:`bayesmeta.direction.Direction`). Integrating beta_i out gives the
adjusted estimate ``y_i - sign * m_d`` with variance ``v_i + s_d²``: Turner et al. (2009)
adjust each study this way with elicited per-study biases, independent across studies; here
the numbers come from a table per design (:data:`DESIGN_BIAS`), so the adjustment is that of
Welton et al. (2009) with the mean bias taken as known and the between-study variation of bias
as the extra variance.

For a published *pooled* estimate (no study rows) :class:`PooledBias` shifts the pooled log
OR and adds variance; for several time points from the same studies the bias is shared, so
the extra variance enters every pair of times (``s² 11'``).

Numbers used by default (log OR, positive = exaggerated benefit):

========================  ============  =====================================================
design                    mean, SD      source
========================  ============  =====================================================
randomised, blinded       0, 0          reference category
randomised, not blinded   objective outcome: ROR 1.01 (95% CI 0.92-1.10) -> mean
                          -log 1.01 = -0.00995, SD (log 1.10 - log 0.92)/(2 x 1.96) =
                          0.0456; subjective outcome: ROR 0.75 (0.61-0.93) -> mean 0.288,
                          SD 0.108. Wood et al. (2008) BMJ 336:601, abstract (lack of
                          blinding; ROR < 1 = exaggerated benefit).
non-randomised            mean 0, SD 0.5 (sensitivity 0.3): the direction of bias of
                          non-random allocation is not predictable (Odgaard-Jensen et al.
                          2011, Cochrane MR000012, "it is not generally possible to predict
                          the magnitude, or even the direction"), so the mean is 0 and the
                          SD is an assumption (0.5: the bias alone moves an OR by up to a
                          factor exp(1.96 x 0.5) = 2.7 either way); not an empirical
                          estimate.
========================  ============  =====================================================

A design that is non-randomised *and* not blinded adds both biases (means and variances add).

References
----------
Turner RM, Spiegelhalter DJ, Smith GCS, Thompson SG (2009). Bias modelling in evidence
synthesis. J R Stat Soc A 172:21-47. doi:10.1111/j.1467-985X.2008.00547.x
Welton NJ, Ades AE, Carlin JB, Altman DG, Sterne JAC (2009). Models for potentially biased
evidence in meta-analysis using empirically based priors. J R Stat Soc A 172:119-136.
doi:10.1111/j.1467-985X.2008.00548.x
Wood L, Egger M, Gluud LL, et al. (2008). Empirical evidence of bias in treatment effect
estimates in controlled trials with different interventions and outcomes: meta-epidemiological
study. BMJ 336:601-605. doi:10.1136/bmj.39465.451748.AD
Odgaard-Jensen J, Vist GE, Timmer A, et al. (2011). Randomisation to protect against selection
bias in healthcare trials. Cochrane Database Syst Rev MR000012.
doi:10.1002/14651858.MR000012.pub3
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmeta.direction import Direction
from bayesmeta.exceptions import DataError, SpecError

__all__ = ["BiasPrior", "PooledBias", "DESIGN_BIAS", "design_bias", "parse_design",
           "adjust_studies", "AdjustedStudies", "sensitivity_settings", "design_columns"]

_Z = 1.959963984540054


@dataclass(frozen=True)
class BiasPrior:
    """Additive bias on the analysis scale: mean (positive = exaggerated benefit) and SD."""

    mean: float
    sd: float
    source: str = ""

    def __post_init__(self):
        if not (math.isfinite(self.mean) and math.isfinite(self.sd) and self.sd >= 0):
            raise SpecError(f"bias prior needs a finite mean and SD >= 0, got {self.mean!r}, "
                            f"{self.sd!r}", key="bias")

    @classmethod
    def from_ror(cls, ror: float, lo: float, hi: float, source: str = "") -> "BiasPrior":
        """From a ratio of odds ratios (< 1 = exaggerated benefit for OR < 1 = benefit) and its
        95% CI: mean ``-log ROR``, SD ``(log hi - log lo) / (2 x 1.96)``."""
        return cls(-math.log(ror), (math.log(hi) - math.log(lo)) / (2 * _Z), source)

    def __add__(self, other: "BiasPrior") -> "BiasPrior":
        return BiasPrior(self.mean + other.mean, math.hypot(self.sd, other.sd),
                         "; ".join(s for s in (self.source, other.source) if s))

    def describe(self) -> str:
        return (f"additive bias ~ N({self.mean:.4g}, {self.sd:.4g}²) on the analysis scale "
                "(positive = exaggerated benefit)" + (f"; {self.source}" if self.source else ""))


_WOOD = "Wood et al. (2008) BMJ 336:601, lack of blinding"
_ODGAARD = ("assumed: direction of non-random-allocation bias not predictable (Odgaard-Jensen "
            "et al. 2011, Cochrane MR000012), SD an assumption")

#: (randomised, blinded, outcome type) -> BiasPrior. outcome type: "objective" (e.g. all-cause
#: mortality) or "subjective". See the module docstring for the derivation of each number.
DESIGN_BIAS = {
    "not_blinded": {
        "objective": BiasPrior.from_ror(1.01, 0.92, 1.10, f"{_WOOD}, objective outcomes: "
                                        "ROR 1.01 (0.92-1.10)"),
        "subjective": BiasPrior.from_ror(0.75, 0.61, 0.93, f"{_WOOD}, subjective outcomes: "
                                         "ROR 0.75 (0.61-0.93)"),
    },
    "non_randomised": BiasPrior(0.0, 0.5, _ODGAARD),
}


def design_bias(randomised: bool, blinded: bool, outcome_type: str = "objective", *,
                nrs_sd: float | None = None) -> BiasPrior:
    """The bias prior of one design (sum of the non-randomised and not-blinded parts)."""
    if outcome_type not in ("objective", "subjective"):
        raise SpecError(f"Invalid outcome_type {outcome_type!r}: 'objective' or 'subjective'",
                        key="outcome_type")
    parts = []
    if not randomised:
        nr = DESIGN_BIAS["non_randomised"]
        parts.append(nr if nrs_sd is None else BiasPrior(0.0, float(nrs_sd), nr.source))
    if not blinded:
        parts.append(DESIGN_BIAS["not_blinded"][outcome_type])
    if not parts:
        return BiasPrior(0.0, 0.0, "randomised and blinded: no bias assumed")
    return parts[0] if len(parts) == 1 else parts[0] + parts[1]


_RAND = {"randomised": True, "randomized": True, "rct": True, "yes": True, "true": True,
         "1": True, "non-randomised": False, "non-randomized": False, "nonrandomised": False,
         "nonrandomized": False, "nrs": False, "observational": False, "cohort": False,
         "no": False, "false": False, "0": False}
_BLIND = {"blinded": True, "blind": True, "double-blind": True, "yes": True, "true": True,
          "1": True, "not blinded": False, "unblinded": False, "open": False,
          "open-label": False, "no": False, "false": False, "0": False}


def parse_design(randomised, blinded=None, *, row: int | None = None) -> tuple[bool, bool]:
    """(randomised, blinded) from text or booleans. ``blinded`` missing -> not blinded
    (the conservative reading). Unknown words are a :class:`DataError` naming the row."""
    def get(v, table, col):
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        key = str(v).strip().lower()
        if key not in table:
            raise DataError(f"unknown {col} value {v!r}", row=row, column=col,
                            fix=f"use one of {sorted(set(k for k in table if not k.isdigit()))}")
        return table[key]

    r = get(randomised, _RAND, "randomised")
    b = False if blinded is None or (isinstance(blinded, float) and math.isnan(blinded)) \
        else get(blinded, _BLIND, "blinded")
    return r, b


@dataclass(frozen=True)
class AdjustedStudies:
    """Bias-adjusted study estimates: ``yi = y - sign * mean``, ``vi = v + sd²``."""

    yi: np.ndarray
    vi: np.ndarray
    bias_mean: np.ndarray
    bias_sd: np.ndarray
    n_adjusted: int
    notes: tuple


def adjust_studies(yi, vi, randomised, blinded, direction: Direction, *,
                   outcome_type: str = "objective", nrs_sd: float | None = None,
                   table: dict | None = None) -> AdjustedStudies:
    """Turner-style additive adjustment of study estimates for their design.

    ``randomised``/``blinded``: per-study values accepted by :func:`parse_design`.
    ``table``: optional ``{(randomised, blinded): BiasPrior}`` overriding :func:`design_bias`.
    """
    y = np.asarray(yi, dtype=float)
    v = np.asarray(vi, dtype=float)
    n = y.size
    rnd = list(randomised) if np.ndim(randomised) else [randomised] * n
    bl = list(blinded) if blinded is not None and np.ndim(blinded) else [blinded] * n
    if not (len(rnd) == len(bl) == v.size == n):
        raise DataError(f"design columns have {len(rnd)}/{len(bl)} values for {n} studies")
    m = np.zeros(n)
    s = np.zeros(n)
    seen = {}
    for i in range(n):
        key = parse_design(rnd[i], bl[i], row=i + 1)
        bp = (table or {}).get(key) or design_bias(*key, outcome_type, nrs_sd=nrs_sd)
        m[i], s[i] = bp.mean, bp.sd
        seen.setdefault(key, (bp, 0))
        seen[key] = (bp, seen[key][1] + 1)
    notes = tuple(f"{c} stud{'y' if c == 1 else 'ies'} "
                  f"{'randomised' if k[0] else 'non-randomised'}, "
                  f"{'blinded' if k[1] else 'not blinded'}: {bp.describe()}"
                  for k, (bp, c) in seen.items())
    adj = (m != 0) | (s != 0)
    return AdjustedStudies(y - direction.sign * m, v + s ** 2, m, s, int(adj.sum()), notes)


@dataclass(frozen=True)
class PooledBias:
    """Additive bias of a published pooled estimate: mean shift (positive = exaggerated
    benefit, e.g. ``log(1.2)`` for an OR exaggerated by 20%) and SD, shared by every time
    point of the same pooled studies."""

    mean: float = 0.0
    sd: float = 0.0
    source: str = ""

    def __post_init__(self):
        BiasPrior(self.mean, self.sd)

    @classmethod
    def exaggeration(cls, factor: float, sd: float = 0.0, source: str = "") -> "PooledBias":
        """A ratio estimate exaggerated by ``factor`` (1.2 = 20%) on average."""
        if not factor > 0:
            raise SpecError(f"Invalid exaggeration factor {factor!r}: must be > 0", key="bias")
        return cls(math.log(factor), sd, source)

    @property
    def active(self) -> bool:
        return self.mean != 0.0 or self.sd != 0.0

    def apply(self, y, cov, direction: Direction) -> tuple[np.ndarray, np.ndarray]:
        """``(y - sign * mean, cov + sd² 11')`` for estimates ``y`` with covariance ``cov``."""
        y = np.asarray(y, dtype=float)
        cov = np.asarray(cov, dtype=float)
        return y - direction.sign * self.mean, cov + self.sd ** 2

    def describe(self) -> str:
        parts = []
        if self.mean:
            parts.append(f"mean exaggeration {self.mean:+.4g} on the log scale "
                         f"(factor {math.exp(self.mean):.3g})")
        if self.sd:
            parts.append(f"SD {self.sd:.4g} shared across time points")
        txt = "pooled-level additive bias: " + (", ".join(parts) if parts else "none")
        return txt + (f"; {self.source}" if self.source else "")

    def label(self) -> str:
        if not self.active:
            return "no bias adjustment"
        return (f"bias N({self.mean:.3g}, {self.sd:.3g}²)")


def sensitivity_settings(sds=(0.3, 0.5), exaggeration: float | None = 1.2,
                         exaggeration_sd: float = 0.0) -> dict:
    """Named pooled-bias settings for a sensitivity row: ``{"none": ..., "sd 0.3": ...}``."""
    out = {"none": PooledBias()}
    for s in sds:
        out[f"bias sd {s:g}"] = PooledBias(0.0, float(s), "additive bias, mean 0 (assumed)")
    if exaggeration:
        out[f"exaggeration x{exaggeration:g}"] = PooledBias.exaggeration(
            exaggeration, exaggeration_sd, "mean exaggeration (assumed)")
    return out


# reading a design column from a study table
def design_columns(df: pd.DataFrame, randomised_col: str = "randomised",
                   blinded_col: str = "blinded"):
    """(randomised, blinded) lists from a study table; missing column -> DataError naming it."""
    if randomised_col not in df:
        raise DataError(f"bias adjustment needs a '{randomised_col}' column", column=randomised_col,
                        fix="add randomised = yes/no per study, or switch bias adjustment off")
    bl = df[blinded_col].tolist() if blinded_col in df else [None] * len(df)
    return df[randomised_col].tolist(), bl
