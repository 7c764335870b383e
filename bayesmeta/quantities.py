"""Derived quantities over fits: pure functions, no formatting.

* :func:`exceedance` — P(benefit) and P(effect beyond each threshold) in the stated direction,
  for every pooled effect of a Bayesian fit.
* :func:`classical_contrasts` — the difference of two subgroups' pooled effects per time
  point from independent per-cell classical fits (Wald).
* :func:`bayes_contrasts` — the contrasts a Bayesian fit reports, with the probability that
  the first-named subgroup does better.

Thresholds are stated on the scale a person reads (a ratio for OR/RR): a threshold ``t`` with
``lower_is_better`` asks P(effect < t); with ``higher_is_better`` P(effect > t).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bayesmeta import vocab
from bayesmeta.fits import Fit, Param


def benefit_probability(fit: Fit, param: Param, value: float, sign: int) -> float:
    """P(param beyond ``value`` in the benefit direction): P(< value) when ``sign`` = -1,
    P(> value) when +1 (``value`` on the analysis scale)."""
    return fit.prob(param, below=value) if sign < 0 else fit.prob(param, above=value)


def exceedance(fit: Fit, *, measure: str, sign: int, thresholds=(),
               names=("mu",)) -> pd.DataFrame:
    """One row per pooled-effect parameter of a Bayesian fit: P(benefit) and P(beyond each
    threshold).

    Columns: ``parameter, subgroup, time, method, p_benefit`` and one ``p_beyond_<t>`` per
    threshold (``t`` as given, natural scale).
    """
    rows = []
    summ = fit.summary(0.95) if fit.model == "nested" else None  # notes mark extrapolation
    for p in fit.params():
        if p.name not in names:
            continue
        if summ is not None and "note" in summ and str(summ.loc[p, "note"] or "").startswith(
                "extrapolation"):
            continue  # a subgroup at a time it was not observed at: in the table, flagged
        rec = {"parameter": p.name, "subgroup": fit.coord(p, "subgroup"),
               "time": fit.coord(p, "time"), "method": fit.method,
               "p_benefit": benefit_probability(fit, p, 0.0, sign)}
        for t in thresholds:
            rec[f"p_beyond_{t:g}"] = benefit_probability(
                fit, p, vocab.to_analysis(float(t), measure), sign)
        rows.append(rec)
    return pd.DataFrame(rows)


def classical_contrasts(cell_fits: dict, pair: tuple[str, str], level: float = 0.95,
                        *, scale: str = "") -> list[dict]:
    """Wald contrasts a − b per time from per-cell classical fits.

    ``cell_fits``: ``{(subgroup, time): Fit}``; the two subgroups' studies are independent, so
    ``se = sqrt(se_a² + se_b²)``. Returns schema-row dicts (parameter ``contrast``, subgroup
    ``"a - b"``), only for times where both subgroups were fitted.
    """
    from scipy import stats

    a, b = pair
    z = vocab.z_quantile(level)
    out = []
    times = [t for (g, t) in cell_fits if g == a]
    for t in times:
        if (b, t) not in cell_fits:
            continue
        fa, fb = cell_fits[(a, t)], cell_fits[(b, t)]
        sa, sb = fa.summary(level).iloc[0], fb.summary(level).iloc[0]
        est = sa["estimate"] - sb["estimate"]
        se = math.sqrt(sa["se"] ** 2 + sb["se"] ** 2)
        zz = est / se if se > 0 else math.nan
        out.append(dict(source="classical", method=f"difference of {fa.method} estimates",
                        parameter="contrast", subgroup=f"{a} - {b}", time=t, estimate=est,
                        se=se, ci_low=est - z * se, ci_high=est + z * se, level=level,
                        interval="wald-z", scale=scale, statistic=zz,
                        p_value=2 * stats.norm.sf(abs(zz)) if se > 0 else math.nan))
    return out


def bayes_contrasts(fit: Fit, *, sign: int, level: float = 0.95) -> pd.DataFrame:
    """The ``contrast`` parameters of a Bayesian fit with P(first-named subgroup better):
    P(a − b < 0) when lower is better, P(a − b > 0) when higher is better."""
    summ = fit.summary(level)
    rows = []
    for p, s in summ.iterrows():
        if p.name != "contrast":
            continue
        rows.append({"contrast": fit.coord(p, "subgroup"), "time": fit.coord(p, "time"),
                     "method": fit.method, "estimate": s["estimate"], "ci_low": s["ci_low"],
                     "ci_high": s["ci_high"], "level": level,
                     "p_first_better": benefit_probability(fit, p, 0.0, sign),
                     "p_below_0": fit.prob(p, below=0.0),
                     "extrapolation": str(s.get("note", "") or "").startswith(
                         "extrapolation")})
    return pd.DataFrame(rows)
