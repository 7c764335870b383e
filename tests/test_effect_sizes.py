"""escalc: closed forms, continuity-correction policy, validation.

References: closed-form formulas written out independently in each test (Hedges 1981 J via
math.gamma; Deeks & Higgins 2010 for RevMan's J and SMD variance); metafor's escalc outputs
are compared in tests/test_metafor_reference.py.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from bayesmeta.effect_sizes import escalc, hedges_j, revman5_options
from bayesmeta.exceptions import DataError, DataWarning
from tests.tolerances import EXACT

ARMS = dict(m1i=[-0.45, -6.13], sd1i=[2.24, 0.93], n1i=[20, 6],
            m2i=[0.5, -4.34], sd2i=[2.57, 3.89], n2i=[20, 15], study=["Amer", "Peng"])


def test_md_closed_form():
    out = escalc("MD", ARMS)
    np.testing.assert_allclose(out["yi"], [-0.95, -1.79], **EXACT)
    np.testing.assert_allclose(out["vi"], [2.24 ** 2 / 20 + 2.57 ** 2 / 20,
                                           0.93 ** 2 / 6 + 3.89 ** 2 / 15], **EXACT)
    assert out.attrs["scale"] == "MD" and list(out["study"]) == ["Amer", "Peng"]


def test_smd_exact_j_and_ls_variance():
    out = escalc("SMD", ARMS)
    for i in range(2):
        n1, n2 = ARMS["n1i"][i], ARMS["n2i"][i]
        m = n1 + n2 - 2
        sp = math.sqrt(((n1 - 1) * ARMS["sd1i"][i] ** 2 + (n2 - 1) * ARMS["sd2i"][i] ** 2) / m)
        j = math.gamma(m / 2) / (math.sqrt(m / 2) * math.gamma((m - 1) / 2))
        g = j * (ARMS["m1i"][i] - ARMS["m2i"][i]) / sp
        assert out["yi"][i] == pytest.approx(g, rel=1e-12)
        assert out["vi"][i] == pytest.approx(1 / n1 + 1 / n2 + g ** 2 / (2 * (n1 + n2)), rel=1e-12)


def test_smd_revman5_option():
    out = escalc("SMD", ARMS, **revman5_options("SMD"))
    for i in range(2):
        n1, n2 = ARMS["n1i"][i], ARMS["n2i"][i]
        N = n1 + n2
        sp = math.sqrt(((n1 - 1) * ARMS["sd1i"][i] ** 2 + (n2 - 1) * ARMS["sd2i"][i] ** 2) / (N - 2))
        g = (1 - 3 / (4 * N - 9)) * (ARMS["m1i"][i] - ARMS["m2i"][i]) / sp
        assert out["yi"][i] == pytest.approx(g, rel=1e-12)
        assert out["vi"][i] == pytest.approx(N / (n1 * n2) + g ** 2 / (2 * (N - 3.94)), rel=1e-12)


def test_hedges_j_approximation_close_to_exact_for_large_n():
    m = np.array([10.0, 50.0, 500.0])
    assert np.all(np.abs(hedges_j(m, "revman5") - hedges_j(m, "exact")) < 1e-3)


def test_mc_and_gen():
    out = escalc("MC", mi=[-1.0, 2.0], sdi=[2.0, 3.0], ni=[4, 9])
    np.testing.assert_allclose(out["yi"], [-1.0, 2.0], **EXACT)
    np.testing.assert_allclose(out["vi"], [1.0, 1.0], **EXACT)
    g = escalc("GEN", yi=[0.1, 0.2], sei=[0.5, 0.25])
    np.testing.assert_allclose(g["vi"], [0.25, 0.0625], **EXACT)


def test_binary_closed_forms_without_zero_cells():
    a, b, c, d = 12.0, 38.0, 20.0, 30.0
    kw = dict(ai=[a], bi=[b], ci=[c], di=[d])
    o = escalc("OR", **kw)
    assert o["yi"][0] == pytest.approx(math.log(a * d / (b * c)), rel=1e-12)
    assert o["vi"][0] == pytest.approx(1 / a + 1 / b + 1 / c + 1 / d, rel=1e-12)
    r = escalc("RR", **kw)
    assert r["yi"][0] == pytest.approx(math.log((a / 50) / (c / 50)), rel=1e-12)
    d_ = escalc("RD", ai=[a], n1i=[50], ci=[c], n2i=[50])
    assert d_["yi"][0] == pytest.approx(a / 50 - c / 50, rel=1e-12)
    p = escalc("PETO", **kw)
    N, n1, n2, m1 = 100.0, 50.0, 50.0, a + c
    V = m1 * (N - m1) * n1 * n2 / (N ** 2 * (N - 1))
    assert p["yi"][0] == pytest.approx((a - n1 * m1 / N) / V, rel=1e-12)


SPARSE = dict(ai=[0, 0, 3, 2], n1i=[10, 12, 20, 15], ci=[2, 0, 5, 2], n2i=[10, 11, 20, 15],
              study=["A", "B", "C", "D"])


def test_cc_only0_warns_with_names_and_counts():
    with pytest.warns(DataWarning, match=r"0.5 added to every cell of 2 2x2 table\(s\).*A, B"):
        out = escalc("OR", SPARSE)
    a, b, c, d = 0.5, 10.5, 2.5, 8.5
    assert out["yi"][0] == pytest.approx(math.log(a * d / (b * c)), rel=1e-12)
    assert np.isfinite(out["yi"][1])


def test_drop00_excludes_double_zero_with_message():
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = escalc("OR", SPARSE, drop00=True)
    msgs = [str(w.message) for w in rec if issubclass(w.category, DataWarning)]
    assert any("1 study with zero events (or all events) in both arms excluded from OR: B" in m
               for m in msgs)
    assert np.isnan(out["yi"][1]) and np.isfinite(out["yi"][0])
    assert len(out) == 4                       # rows are never silently removed


@pytest.mark.parametrize("measure", ["OR", "RR"])
@pytest.mark.parametrize("drop00", [False, True])
def test_all_double_zero_ratio_refused(measure, drop00):
    """Closed form: with zero events in both arms of every table the likelihood of OR/RR is
    flat, so no estimate exists; 0.5 everywhere would give log(1) = 0 from the correction
    alone. Refuse with a DataError naming the file and pointing to RD (defined: 0)."""
    data = dict(ai=[0, 0], n1i=[10, 12], ci=[0, 0], n2i=[10, 11], study=["A", "B"])
    with pytest.raises(DataError, match=r"all 2 studies have zero events in both arms.*RD") as e:
        escalc(measure, data, drop00=drop00, file="zero.csv")
    assert "zero.csv" in str(e.value)
    rd = escalc("RD", data)                     # RD stays defined
    assert np.isfinite(rd["yi"]).all()


def test_cc_none_gives_missing_and_says_so():
    with pytest.warns(DataWarning, match="undefined OR"):
        out = escalc("OR", SPARSE, cc_policy="none")
    assert np.isnan(out["yi"][0]) and np.isnan(out["yi"][1]) and np.isfinite(out["yi"][2])


def test_missing_values_become_nan_with_warning():
    data = dict(ARMS, m1i=[np.nan, -6.13])
    with pytest.warns(DataWarning, match="Amer"):
        out = escalc("MD", data)
    assert np.isnan(out["yi"][0]) and np.isfinite(out["yi"][1])


@pytest.mark.parametrize("data,measure,column,problem", [
    (dict(ARMS, sd1i=[-1.0, 0.93]), "MD", "sd1i", "standard deviation"),
    (dict(ai=[5], n1i=[3], ci=[1], n2i=[10]), "OR", "n1i", "events cannot exceed"),
    (dict(ai=[-1], n1i=[3], ci=[1], n2i=[10]), "OR", "ai", "count >= 0"),
    (dict(ai=[1.5], n1i=[3], ci=[1], n2i=[10]), "OR", "ai", "whole number"),
    (dict(yi=[0.1], vi=[0.0]), "GEN", "vi", "> 0"),
    (dict(yi=[0.1]), "GEN", "vi", "needs column"),
    (dict(mi=["x"], sdi=[1.0], ni=[3]), "MC", "mi", "not a number"),
])
def test_bad_input_raises_located_data_error(data, measure, column, problem):
    with pytest.raises(DataError, match=problem) as e:
        escalc(measure, data)
    assert e.value.column == column


def test_unknown_measure():
    with pytest.raises(ValueError, match="measure must be one of"):
        escalc("HR", ARMS)
