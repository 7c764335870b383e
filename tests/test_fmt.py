"""Display formatting (bayesmeta.fmt).

References: Altman DG, "Confidence intervals for the number needed to treat", BMJ
1998;317:1309-12 (doi:10.1136/bmj.317.7168.1309): its running example is an absolute risk
reduction of 0.10 with 95% CI -0.05 to 0.25 (Figure 1, "95% confidence interval for NNT=10";
Figure 2 maps the same interval to "NNTH 20 to ∞ to NNTB 4", as restated in R G Newcombe's
reply, BMJ rapid response 5 Jan 1999). Barrowman NJ, CMAJ 2002;166:1676-7 applies Altman's
method to ARR 16.6% (95% CI 0.9% to 32.2%) and prints NNT "approximately 6" with interval
"approximately 3.1-111.1". Other expected values are closed forms (1/RD, exp of a log ratio)
computed in the test, or the definitions stated in each test.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesmeta import fmt


# ---------------------------------------------------------------- prob
@pytest.mark.parametrize("p, text", [
    (1.0, "> 0.999"), (0.99951, "> 0.999"), (0.9994, "0.999"), (0.5, "0.500"),
    (0.0004, "< 0.001"), (0.0, "< 0.001"), (0.0123, "0.012"), (float("nan"), "NA"),
    (None, "NA")])
def test_prob_never_prints_certainty(p, text):
    assert fmt.prob(p) == text


def test_prob_digits():
    assert fmt.prob(0.99, digits=1) == "> 0.9"
    assert fmt.prob(0.04, digits=1) == "< 0.1"
    assert fmt.prob(0.25, digits=2) == "0.25"


# ---------------------------------------------------------------- estimate_ci
def test_estimate_ci_ratio_on_natural_scale():
    # OR 0.62 [0.45, 0.85] stored as logs; exp(log(x)) = x (closed form)
    s = fmt.estimate_ci(math.log(0.62), math.log(0.45), math.log(0.85), ratio=True)
    assert s == "0.62 [0.45, 0.85]"


def test_estimate_ci_plain_and_digits():
    assert fmt.estimate_ci(-1.234, -2.5, 0.049, digits=1) == "-1.2 [-2.5, 0.0]"
    assert fmt.estimate_ci(1.0, 0.5, 1.5) == "1.00 [0.50, 1.50]"
    # no "-0.00": a sign that rounds away is dropped
    assert fmt.estimate_ci(-0.001, -0.3, 0.2, digits=1) == "0.0 [-0.3, 0.2]"


def test_estimate_ci_small_ratio_keeps_significant_digits():
    assert fmt.estimate_ci(math.log(0.0043), math.log(0.001), math.log(0.02), ratio=True) \
        == "0.0043 [0.001, 0.02]"


def test_estimate_ci_missing_and_infinite():
    assert fmt.estimate_ci(0.3, float("nan"), float("nan")) == "0.30"
    assert fmt.estimate_ci(0.0, -math.inf, math.inf, ratio=True) == "1.00 [0.00, \u221e]"


# ---------------------------------------------------------------- nnt_altman
def test_nnt_altman_1998_running_example():
    """Altman 1998, Figures 1-2: ARR 0.10 (95% CI -0.05 to 0.25) -> NNTB 10, interval
    NNTH 20 to infinity to NNTB 4 (written from the lower ARR limit to the upper)."""
    assert fmt.nnt_altman(-0.05, 0.25, 0.10) == "NNTB 10 (NNTH 20 to \u221e to NNTB 4)"


def test_nnt_barrowman_2002_significant_example():
    """Barrowman 2002 (Altman's method): ARR 16.6% (0.9% to 32.2%) -> NNT about 6, 95% CI
    about 3.1 to 111.1 (printed with one decimal)."""
    assert fmt.nnt_altman(0.009, 0.322, 0.166, digits=1) == "NNTB 6.0 (3.1 to 111.1)"
    # whole patients, rounded up: ceil(6.02) = 7, ceil(3.11) = 4, ceil(111.1) = 112
    assert fmt.nnt_altman(0.009, 0.322, 0.166) == "NNTB 7 (4 to 112)"


def test_nnt_harm_is_named_nnth():
    # mirror of the Altman example: ARR -0.10 (-0.25 to 0.05)
    assert fmt.nnt_altman(-0.25, 0.05, -0.10) == "NNTH 10 (NNTH 4 to \u221e to NNTB 20)"
    assert fmt.nnt_altman(-0.25, -0.04, -0.10) == "NNTH 10 (4 to 25)"


def test_nnt_edge_cases():
    assert fmt.nnt_altman(0.0, 0.25, 0.1) == "NNTB 10 (4 to \u221e)"
    assert fmt.nnt_altman(-0.2, 0.1, 0.0) == "NNT \u221e (NNTH 5 to \u221e to NNTB 10)"
    assert fmt.nnt_altman(float("nan"), 0.2, 0.1) == "NA"
    assert fmt.nnt_altman(0.25, -0.05, 0.10) == fmt.nnt_altman(-0.05, 0.25, 0.10)  # order


_NNT = re.compile(r"^(NNTB|NNTH) (\d+) \((?:(NNTH) (\d+) to \u221e to (NNTB) (\d+)|(\d+) to "
                  r"(\d+))\)$")


@settings(max_examples=300, deadline=None)
@given(st.floats(-0.9, 0.9), st.floats(-0.9, 0.9), st.floats(0.0, 1.0))
def test_nnt_property_reciprocal_of_rd(a, b, u):
    """Every printed number is ceil(1/|RD|) of the matching bound (closed form), the labels
    follow the signs, and the interval crosses infinity exactly when the RD interval holds 0."""
    lo, hi = min(a, b), max(a, b)
    mid = lo + u * (hi - lo)
    if min(abs(lo), abs(hi), abs(mid)) < 1e-6:
        return
    m = _NNT.match(fmt.nnt_altman(lo, hi, mid))
    assert m, fmt.nnt_altman(lo, hi, mid)
    ceil = lambda x: math.ceil(round(1 / abs(x), 9))  # noqa: E731
    assert m.group(1) == ("NNTB" if mid > 0 else "NNTH") and int(m.group(2)) == ceil(mid)
    if lo < 0 < hi:
        assert int(m.group(4)) == ceil(lo) and int(m.group(6)) == ceil(hi)
    else:
        assert m.group(7) is not None
        near, far = (hi, lo) if lo > 0 else (lo, hi)
        assert (int(m.group(7)), int(m.group(8))) == (ceil(near), ceil(far))


# ---------------------------------------------------------------- level order
def test_level_sort_key_numeric_not_text():
    assert fmt.sorted_levels(["12", "24", "4"]) == ["4", "12", "24"]
    assert fmt.sorted_levels(["24 wk", "4 wk", "12 wk"]) == ["4 wk", "12 wk", "24 wk"]
    assert fmt.sorted_levels(["overall", "12", "2.5", "-1"]) == ["-1", "2.5", "12", "overall"]
    assert fmt.sorted_levels(["week 12", "week 4", "Alpha"]) == ["week 4", "week 12", "Alpha"]
    assert fmt.sorted_levels([12, 4, 24.0]) == [4, 12, 24.0]
    assert sorted(["b", None, "A", "3"], key=fmt.level_sort_key) == ["3", "A", "b", None]


# ---------------------------------------------------------------- headers and glossary
def test_human_header_table_and_fallback():
    assert fmt.human_header("p_or_gt_threshold") == "P(OR > threshold)"
    assert fmt.human_header("survival_diff_median") == "survival difference (median)"
    assert fmt.human_header("clean") == "diagnostics passed"
    assert fmt.human_header("r_hat") == "R-hat"
    assert fmt.human_header("some_new_col") == "some new col"
    assert fmt.human_header("published: published (printed)") == "published (printed)"
    assert fmt.human_header("bayesian: exact-NNHM") == "bayesian: exact-NNHM"
    assert all("_" not in v for v in fmt.HEADERS.values())


def test_glossary_covers_the_jargon_and_finds_terms():
    for t in ("NNHM", "ETI", "E-BFMI", "R-hat", "ESS", "MCSE", "tau", "I\u00b2",
              "prediction interval", "NNTB", "NNTH", "P(benefit)"):
        assert fmt.GLOSSARY.get(t), t
    found = fmt.glossary_terms("exact NNHM; R-hat 1.00, min ESS 800, E-BFMI fine; the "
                               "Prediction interval; I\u00b2 = 40%; MCSEs")
    assert found[:1] == ["NNHM"]
    assert {"R-hat", "ESS", "E-BFMI", "prediction interval", "I\u00b2"} <= set(found)
    assert "MCSE" not in found and "ETI" not in found  # whole words only


def test_num_formats():
    assert fmt.num(np.float64(2.0)) == "2.00"
    assert fmt.num(-math.inf) == "-\u221e"
    assert fmt.num(0.00001234, keep_small=True) == "1.2e-05"
    assert fmt.num(0.00001234) == "0.00"
