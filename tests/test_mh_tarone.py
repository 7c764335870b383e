"""Tarone's test for heterogeneity of odds ratios in ``rma_mh`` (and the Breslow-Day statistic).

Reference: tests/reference/metafor_mh_tarone.json, written by
tests/reference/metafor_mh_tarone.R with metafor 3.8.1 ``rma.mh(..., measure = "OR")``
(R 4.2.2; fields ``TA``, ``TAp``, ``BD``, ``BDp``, ``k.pos``; df = k.pos - 1), on dat.bcg,
dat.nielweise2007 (zero cells, a double-zero table), dat.hahn2001 (three double-zero tables)
and two constructed sets (a zero-cell table, a no-event table, an events-only table).
Tolerance: relative 1e-8 (both sides are closed forms; measured agreement is ~1e-13).
The hand check recomputes Breslow-Day with ``scipy.optimize.brentq`` on the odds-ratio
equation instead of the quadratic, so a wrong root choice cannot pass.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, stats

from bayesmeta import classical as cl

pytestmark = pytest.mark.reference

REF = json.loads((Path(__file__).parent / "reference" / "metafor_mh_tarone.json").read_text())
TOL = dict(rtol=1e-8, atol=0.0)


def _fit(tn):
    t = REF["tables"][tn]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cl.rma_mh(t["ai"], t["bi"], t["ci"], t["di"], measure="OR", studies=t["study"])


def test_reference_covers_the_datasets():
    """The JSON holds every dataset the brief names, each with a defined Tarone statistic."""
    assert set(REF["tarone"]) == {"bcg", "nielweise2007", "hahn2001", "handmade",
                                  "handmade_full"}
    assert REF["meta"]["metafor"] == "3.8.1"
    for tn, ref in REF["tarone"].items():
        assert ref["TA"] is not None and ref["TAp"] is not None, tn
    # the sparse sets really do exclude tables (otherwise they test nothing extra)
    assert REF["tarone"]["hahn2001"]["k_pos"] < REF["tarone"]["hahn2001"]["k"]
    assert REF["tarone"]["handmade_full"]["k_pos"] == REF["tarone"]["handmade_full"]["k"] - 2


@pytest.mark.parametrize("tn", sorted(REF["tarone"]))
def test_tarone_matches_metafor(tn):
    ref = REF["tarone"][tn]
    res = _fit(tn)
    np.testing.assert_allclose(res.estimate, ref["estimate"], **TOL, err_msg="MH estimate")
    assert res.extra["tarone_df"] == ref["df"] == ref["k_pos"] - 1
    for ours, theirs in (("tarone", "TA"), ("tarone_p", "TAp"), ("breslow_day", "BD"),
                         ("breslow_day_p", "BDp")):
        np.testing.assert_allclose(res.extra[ours], ref[theirs], **TOL, err_msg=f"{tn}: {ours}")


def _expected_a(n1, n2, m1, psi):
    """Expected cell a given margins and odds ratio psi: brentq on the log odds ratio."""
    lo, hi = max(0.0, m1 - n2), min(n1, m1)

    def f(x):
        return math.log(x) + math.log(n2 - m1 + x) - math.log(n1 - x) - math.log(m1 - x) \
            - math.log(psi)
    eps = 1e-12 * (hi - lo)
    return optimize.brentq(f, lo + eps, hi - eps, xtol=1e-14, rtol=1e-15)


def test_breslow_day_by_root_finding_two_tables():
    """BD and Tarone on two tables, recomputed with brentq inside each feasible range.

    Table 1 has more events than the control arm has patients (m1 = 68 > n2 = 40), so its
    feasible range for cell a is [28, 40], and at the MH odds ratio (~0.24) the linear
    coefficient A of the quadratic is negative; none of the metafor datasets reaches that
    branch.
    """
    a, b = np.array([30.0, 5.0]), np.array([10.0, 15.0])
    c, d = np.array([38.0, 10.0]), np.array([2.0, 10.0])
    n1, n2, m1 = a + b, c + d, a + c
    N = n1 + n2
    psi = np.sum(a * d / N) / np.sum(b * c / N)     # MH odds ratio, computed here
    assert psi * (n1[0] + m1[0]) + n2[0] - m1[0] < 0  # the branch this example exists for
    ea = np.array([_expected_a(*x, psi) for x in zip(n1, n2, m1)])
    v = 1 / (1 / ea + 1 / (n1 - ea) + 1 / (m1 - ea) + 1 / (n2 - m1 + ea))
    bd = float(np.sum((a - ea) ** 2 / v))
    ta = bd - (a - ea).sum() ** 2 / v.sum()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = cl.rma_mh(a, b, c, d, measure="OR")
    np.testing.assert_allclose(res.extra["breslow_day"], bd, rtol=1e-10)
    np.testing.assert_allclose(res.extra["tarone"], ta, rtol=1e-10)
    np.testing.assert_allclose(res.extra["tarone_p"], stats.chi2.sf(ta, 1), rtol=1e-10)
    assert res.extra["tarone_df"] == 1


def test_table_with_an_empty_arm_is_left_out():
    """A table with no patients in one arm has a fixed cell a (no information): left out.

    Deliberate difference from metafor 3.8.1, which keeps it and returns TA = BD = Inf.
    Reference: the same fit without that table.
    """
    t = REF["tables"]["handmade"]
    cols = [list(t[x]) for x in ("ai", "bi", "ci", "di")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = cl.rma_mh(*cols, measure="OR")
        plus = cl.rma_mh(*[c_ + [v] for c_, v in zip(cols, (5, 5, 0, 0))], measure="OR")
    assert plus.extra["tarone_df"] == base.extra["tarone_df"]
    np.testing.assert_allclose(plus.extra["tarone"], base.extra["tarone"], rtol=1e-12)


def test_summary_prints_tarone_line():
    """Reference: metafor 3.8.1's print(rma.mh(measure="OR")) for dat.bcg ('CMH = 135.6889,
    df = 1, p-val < 0.0001'; 'X^2 = 171.7567, df = 12, p-val < 0.0001') and dat.hahn2001
    ('CMH = 11.9989, df = 1, p-val = 0.0005'; 'X^2 =  7.5803, df = 8, p-val = 0.4755');
    ours has the same wording without metafor's column padding."""
    text = str(_fit("bcg"))
    assert "Tarone's Test for Heterogeneity: X^2 = 171.7567, df = 12, p-val < 0.0001" in text
    assert "Cochran-Mantel-Haenszel Test:    CMH = 135.6889, df = 1, p-val < 0.0001" in text
    text = str(_fit("hahn2001"))
    assert "Tarone's Test for Heterogeneity: X^2 = 7.5803, df = 8, p-val = 0.4755" in text
    assert "Cochran-Mantel-Haenszel Test:    CMH = 11.9989, df = 1, p-val = 0.0005" in text
