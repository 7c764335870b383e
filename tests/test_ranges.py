"""bayesmeta.ranges.answer_ranges.

Reference: a grid built from a known function of the settings, so every minimum, maximum and
argument is known in closed form; and the survival sensitivity grid (rho x prior set x bias)
of the 2023 ORs, whose per-setting values are recomputed here one by one.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from bayesmeta.exceptions import SpecError
from bayesmeta.ranges import answer_ranges


def _grid():
    rows = []
    for t, rho, ps, bias in itertools.product(["4", "8"], [0.0, 0.5, 0.9], ["wi", "sc"],
                                              ["none", "sd 0.5"]):
        p = 0.9 - 0.1 * rho - (0.05 if ps == "sc" else 0) - (0.2 if bias != "none" else 0)
        p += 0.01 if t == "8" else 0.0
        rows.append({"time": t, "rho": rho, "prior_set": ps, "bias": bias, "p": p,
                     "q": np.nan if (rho == 0.9 and ps == "sc") else 2 * p})
    return pd.DataFrame(rows)


def test_ranges_closed_form():
    g = _grid()
    main = {"rho": 0.5, "prior_set": "wi", "bias": "none"}
    r = answer_ranges(g, ["p", "q"], ["rho", "prior_set", "bias"], main=main)
    row = r[(r.time == "4") & (r.quantity == "p") & (r.over == "all")].iloc[0]
    assert row["main"] == pytest.approx(0.85)
    assert row["high"] == pytest.approx(0.9) and row["low"] == pytest.approx(0.9 - 0.09 - 0.25)
    assert row["low_at"] == {"rho": 0.9, "prior_set": "sc", "bias": "sd 0.5"}
    assert row["high_at"] == {"rho": 0.0, "prior_set": "wi", "bias": "none"}
    assert row["n_settings"] == 12
    # over one axis, the others held at the main setting
    rr = r[(r.time == "8") & (r.quantity == "p") & (r.over == "rho")].iloc[0]
    assert (rr["low"], rr["high"], rr["n_settings"]) == pytest.approx((0.82, 0.91, 3))
    rb = r[(r.time == "8") & (r.quantity == "p") & (r.over == "bias")].iloc[0]
    assert (rb["low"], rb["high"]) == pytest.approx((0.66, 0.86))
    # NaN entries are skipped and counted out
    rq = r[(r.time == "4") & (r.quantity == "q") & (r.over == "all")].iloc[0]
    assert rq["n_settings"] == 10 and rq["low"] == pytest.approx(2 * (0.9 - 0.05 - 0.2 - 0.05))


def test_ranges_errors():
    g = _grid()
    with pytest.raises(SpecError, match="lacks columns"):
        answer_ranges(g, ["p"], ["rho", "seed"], main={"rho": 0.5, "seed": 1})
    with pytest.raises(SpecError, match="every axis"):
        answer_ranges(g, ["p"], ["rho", "bias"], main={"rho": 0.5})


@pytest.mark.slow   # ~10 s: eight exact fits
def test_survival_grid_ranges():
    """rho (fixed values and a prior) x prior set x bias on the 2023 ORs: every range equals
    the min/max of the per-setting probabilities computed here one fit at a time."""
    from bayesmeta.bias_adjust import PooledBias
    from bayesmeta.survival_exact import fit_survival_published_exact
    from bayesmeta.survival_fit import prior_kwargs, published_prior_sets

    times, orr = [4, 8, 12, 24], [4.12, 2.47, 2.21, 1.71]
    lo, hi = [0.52, 1.38, 1.31, 0.92], [32.53, 4.43, 3.74, 3.19]
    sets = published_prior_sets(["weakly_informative", "sceptical"])
    biases = {"none": None, "sd 0.5": PooledBias(0.0, 0.5)}
    rows = []
    for rho, (sn, ps), (bn, b) in itertools.product([0.0, 0.9], sets.items(), biases.items()):
        fit = fit_survival_published_exact(times, orr, lo, hi, rho=rho, bias=b, n_draws=1,
                                           **prior_kwargs(ps))
        tab = fit.extra["survival_table"].query("kind == 'pooled'")
        for _, t in tab.iterrows():
            rows.append({"time": t["time"], "rho": rho, "prior_set": sn, "bias": bn,
                         "p_or_gt_1": t["p_or_gt_1"], "p_or_gt_1.5": t["p_or_gt_threshold"]})
    g = pd.DataFrame(rows)
    r = answer_ranges(g, ["p_or_gt_1", "p_or_gt_1.5"], ["rho", "prior_set", "bias"],
                      main={"rho": 0.9, "prior_set": "weakly_informative", "bias": "none"})
    for (t, q), sub in g.melt(["time", "rho", "prior_set", "bias"], var_name="quantity") \
            .groupby(["time", "quantity"]):
        row = r[(r.time == t) & (r.quantity == q) & (r.over == "all")].iloc[0]
        assert row["low"] == sub["value"].min() and row["high"] == sub["value"].max()
    # bias widens the range downward at 8 weeks
    row8 = r[(r.time == "8") & (r.quantity == "p_or_gt_1") & (r.over == "bias")].iloc[0]
    assert row8["low_at"]["bias"] == "sd 0.5" and row8["low"] < row8["main"]
