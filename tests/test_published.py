"""bayesmeta.published: back-conversion and consistency verdicts.

References: closed forms (yi = log OR, sei = (log hi - log lo)/(2·1.959964); sei = |yi|/Φ⁻¹(1-P/2))
computed here with math/scipy independently of the module, and the printed numbers of the 2023
paper (Results text, Table 2) and 2014 paper (Figure 3, Table 2) whose inconsistencies were
checked by hand (see the `note` columns of the datasets).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayesmeta.datasets import load_dataset
from bayesmeta.exceptions import DataError, DataWarning
from bayesmeta.published import (Verdict, check_published, infer_decimals, to_analysis_scale,
                                 z_crit)
from tolerances import EXACT as _EXACT

EXACT = dict(rel=_EXACT["rtol"], abs=_EXACT["atol"])  # pytest.approx spelling

Z = 1.959963984540054  # Φ⁻¹(0.975)


def test_z_crit():
    assert z_crit(0.95) == pytest.approx(Z, **EXACT)
    assert z_crit(0.90) == pytest.approx(1.6448536269514722, **EXACT)


def test_or_back_conversion_closed_form():
    # 2023 survival 8 wk: OR 2.47 [1.38, 4.43]
    yi, sei = to_analysis_scale(2.47, 1.38, 4.43, "OR")
    assert yi == pytest.approx(math.log(2.47), **EXACT)
    assert sei == pytest.approx((math.log(4.43) - math.log(1.38)) / (2 * Z), **EXACT)


def test_md_back_conversion_closed_form():
    yi, sei = to_analysis_scale(-3.41, -5.41, -1.40, "MD")
    assert yi == -3.41
    assert sei == pytest.approx((-1.40 + 5.41) / (2 * Z), **EXACT)


def test_level_90():
    _, sei = to_analysis_scale(1.0, 0.0, 2.0, "MD", level=0.90)
    assert sei == pytest.approx(2.0 / (2 * 1.6448536269514722), **EXACT)


def test_from_p_when_ci_missing():
    yi, sei = to_analysis_scale(-2.35, None, None, "MD", p=0.002)
    assert sei == pytest.approx(2.35 / stats.norm.isf(0.001), **EXACT)
    yi, sei = to_analysis_scale(0.5, float("nan"), float("nan"), "RR", p=0.04)
    assert yi == pytest.approx(math.log(0.5), **EXACT)
    assert sei == pytest.approx(-math.log(0.5) / stats.norm.isf(0.02), **EXACT)


def test_from_p_bound_warns_upper_bound():
    with pytest.warns(DataWarning, match=r"P printed as '< 0.0001'.*upper bound"):
        _, sei = to_analysis_scale(-2.35, None, None, "MD", p=0.0001, p_op="<")
    assert sei == pytest.approx(2.35 / stats.norm.isf(0.00005), **EXACT)


def test_vectorised_arrays():
    yi, sei = to_analysis_scale(np.array([2.47, 2.21]), np.array([1.38, 1.31]),
                                np.array([4.43, 3.74]), "OR")
    assert yi == pytest.approx(np.log([2.47, 2.21]), **EXACT)
    assert sei == pytest.approx((np.log([4.43, 3.74]) - np.log([1.38, 1.31])) / (2 * Z), **EXACT)


def test_vectorised_dataframe_uses_row_measure():
    df = pd.DataFrame({"measure": ["OR", "MD"], "estimate": [2.47, -3.41],
                       "ci_low": [1.38, -5.41], "ci_high": [4.43, -1.40]})
    out = to_analysis_scale(df)
    assert out["yi"].tolist() == pytest.approx([math.log(2.47), -3.41], **EXACT)
    assert out["vi"].tolist() == pytest.approx(list(out["sei"] ** 2), **EXACT)
    assert "yi" not in df.columns  # input not modified


@pytest.mark.parametrize("args, msg", [
    ((0.0, 0.5, 2.0, "OR"), r"ratio measure must be > 0"),
    ((1.0, -0.5, 2.0, "RR"), r"ratio measure must be > 0"),
    ((1.0, 2.0, 0.5, "MD"), r"CI lower bound 2.0 is above the upper bound 0.5"),
    ((1.0, 1.0, 1.0, "MD"), r"zero width"),
    ((1.0, None, None, "MD"), r"neither a CI nor a P value"),
    ((1.0, 0.5, 2.0, "XYZ"), r"Invalid measure 'XYZ'"),
])
def test_back_conversion_errors(args, msg):
    with pytest.raises(DataError, match=msg):
        to_analysis_scale(*args)


def test_p_of_one_or_null_estimate():
    with pytest.raises(DataError, match=r"P must be in \(0, 1\)"):
        to_analysis_scale(1.0, None, None, "MD", p=1.0)
    with pytest.raises(DataError, match="at the null"):
        to_analysis_scale(0.0, None, None, "MD", p=0.5)


# --- verdicts ------------------------------------------------------------------------------------
def test_consistent_or():
    # 2023 survival 8 wk: OR 2.47, 95% CI 1.38–4.43, P = 0.002 (log midpoint 0.9053 ≈ log 2.47)
    v = check_published(2.47, 1.38, 4.43, "OR", p=0.002)
    assert isinstance(v, Verdict) and v.consistent and str(v) == "consistent"
    assert v.scale == "log"
    assert v.p_from_estimate == pytest.approx(
        2 * stats.norm.sf(math.log(2.47) / ((math.log(4.43) - math.log(1.38)) / (2 * Z))), **EXACT)


def test_pt_4wk_sign_lost_is_a_finding():
    # 2023 text: "MD -2.69, 95% CI -4.19–1.19, P = 0.0004" — midpoint -1.50, SE 1.3726,
    # P from estimate/SE = 2Φ(-2.69/1.3726) = 0.050; with ci_high = -1.19 everything agrees.
    v = check_published(-2.69, -4.19, 1.19, "MD", p=0.0004, decimals=2, p_decimals=4)
    assert not v.consistent
    assert v.findings[0] == "CI asymmetric (midpoint -1.500 vs estimate -2.690)"
    assert v.findings[1].startswith("P disagrees (printed 0.0004, from estimate/SE 0.05;")
    assert v.p_from_estimate == pytest.approx(2 * stats.norm.sf(2.69 / (5.38 / (2 * Z))), **EXACT)
    fixed = check_published(-2.69, -4.19, -1.19, "MD", p=0.0004, decimals=2, p_decimals=4)
    assert fixed.consistent


def test_pt_baseline_estimate_misprint_is_a_finding():
    # 2023 text: "MD -2.17, 95% CI -2.17–0.64, P = 0.29": CI midpoint -0.765, SE 0.7168,
    # P(midpoint) = 2Φ(-0.765/0.7168) = 0.286 -> "0.29" as printed; P(estimate) = 0.0025.
    v = check_published(-2.17, -2.17, 0.64, "MD", p=0.29)
    assert not v.consistent
    assert "CI asymmetric (midpoint -0.765 vs estimate -2.170)" in v.findings
    p_mid = 2 * stats.norm.sf(0.765 / (2.81 / (2 * Z)))
    assert v.p_from_midpoint == pytest.approx(p_mid, **EXACT)
    assert round(p_mid, 2) == 0.29
    assert any(f.startswith("P disagrees (printed 0.29") and "from CI midpoint 0.29" in f
               for f in v.findings)


def test_estimate_outside_ci():
    v = check_published(3.0, 0.5, 2.0, "MD")
    assert "estimate outside its CI (3 not in [0.5, 2])" in v.findings


def test_reversed_ci():
    v = check_published(1.0, 2.0, 0.5, "MD")
    assert v.findings == ("CI bounds reversed (low 2 > high 0.5)",)


def test_log_scale_asymmetry_message():
    # a CI symmetric on the natural, not the log, scale: 2.0 [1.0, 3.0]
    v = check_published(2.0, 1.0, 3.0, "OR", decimals=2)
    assert v.findings == ("CI asymmetric on log scale (midpoint 0.549 vs log estimate 0.693)",)


def test_rounding_tolerance_accepts_half_unit():
    # true MD 1.005 [0.0, 2.0] prints as 1.00 or 1.01 — both consistent at 2 decimals
    for est in (1.00, 1.01):
        assert check_published(est, 0.00, 2.00, "MD", decimals=2, ci_decimals=2).consistent
    assert not check_published(1.02, 0.00, 2.00, "MD", decimals=2, ci_decimals=2).consistent


def test_p_bound_handling():
    # estimate 3, SE 1 (CI 3 ± Z): P = 2Φ(-3) = 0.0027: "< 0.01" agrees, "< 0.001" does not
    lo, hi = 3 - Z, 3 + Z
    assert check_published(3.0, lo, hi, "MD", p=0.01, p_op="<", decimals=6).consistent
    assert check_published(3.0, lo, hi, "MD", p=0.0027, p_op="=", decimals=6).consistent
    assert not check_published(3.0, lo, hi, "MD", p=0.0037, p_op="=", decimals=6).consistent
    v = check_published(3.0, lo, hi, "MD", p=0.001, p_op="<", decimals=6)
    assert v.findings[0].startswith("P disagrees (printed < 0.001")


def test_infer_decimals():
    assert [infer_decimals(x) for x in (0.0004, 2.5, 3.0, 0.00001, 12)] == [4, 1, 0, 5, 0]


def test_invalid_p_op():
    with pytest.raises(DataError, match=r"Invalid p_op '<='"):
        check_published(1.0, 0.5, 1.5, "MD", p=0.1, p_op="<=")


# --- the bundled published tables ------------------------------------------------------------------
def test_2023_pooled_verdicts_flag_exactly_the_pt_rows():
    # hand check (see data/msc_2023_pooled.csv notes): only PT baseline and PT 4 wk are
    # internally inconsistent among the 36 printed estimates.
    d = load_dataset("msc_2023_pooled")
    out = check_published(d)
    bad = out[~out["consistent"]]
    assert sorted(zip(bad["outcome"], bad["time_wk"])) == [("PT", 0), ("PT", 4)]
    assert out["verdict"].where(out["consistent"]).dropna().eq("consistent").all()


def test_2014_table2_verdicts_match_recorded_findings():
    # hand check: estimate vs CI midpoint (ALB 8 wk, ALT 48 wk, TBIL 4 wk off beyond rounding)
    t = load_dataset("msc_2014_table2_onearm").assign(measure="MC")
    out = check_published(t)
    bad = out[~out["consistent"]]
    assert sorted(zip(bad["outcome"], bad["time_wk"])) == [("ALB", 8), ("ALT", 48), ("TBIL", 4)]
    for _, r in bad.iterrows():
        assert "CI midpoint" in r["note"]


def test_2014_fig3_peng_24wk_verdict():
    # 2014 Figure 3: Peng 24 wk printed -3.94 [-6.34, -0.98]; the CI is centred on -3.66
    f = load_dataset("meld_2014_fig3").rename(
        columns={"pub_md": "estimate", "pub_ci_low": "ci_low", "pub_ci_high": "ci_high"})
    out = check_published(f, measure="MD")
    bad = out[~out["consistent"]]
    assert list(zip(bad["study"], bad["time"])) == [("Peng L 2011", 24)]
    assert bad["verdict"].iloc[0] == "CI asymmetric (midpoint -3.660 vs estimate -3.940)"
