"""Meta-regression (moderators) vs metafor: every tau² estimator, z and Knapp-Hartung tests.

Reference: tests/reference/metafor_mods.json, written by tests/reference/metafor_mods.R
(metafor 3.8.1 on R 4.2.2; versions recorded in its ``meta``) for Viechtbauer's (2007)
meta-regression example (metadat's dat.linde2005, k = 17, 3 moderators). The same fits are
checked in metafor's own test suite (tests/testthat/test_analysis_example_viechtbauer2007b.r),
which expects tau² = 0.0253 (HS), 0.0388 (HE), 0.0475 (DL), 0.0912 (SJ), 0.0633 (PM, EB), 0.024
(ML), 0.0558 (REML) at 4 decimals: :func:`test_tau2_matches_metafor_printed_values` checks
those printed numbers too.

Tolerance: ``METAFOR`` (rtol 1e-6) for every estimator, the iterative ones included: both sides
iterate to a tight threshold (metafor 1e-12 in the script, ours 1e-10 relative to the scale),
so they agree far below 1e-6.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from bayesmeta import classical as cl
from tests.tolerances import METAFOR, published

pytestmark = pytest.mark.reference

REF = json.loads((Path(__file__).parent / "reference" / "metafor_mods.json").read_text())
D = REF["data"]
X = np.asarray(D["X"], float)
CASES = [(m, t) for m in REF["methods"] for t in REF["tests"]]


def _fit(method, test):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cl.rma_mods(D["yi"], D["vi"], X, names=D["columns"], method=method, test=test)


def test_reference_is_the_moderator_case():
    assert X.shape == (17, 4) and np.all(X[:, 0] == 1.0)
    assert set(REF["methods"]) == set(cl.METHODS)
    assert REF["meta"]["metafor"] and REF["meta"]["R"].startswith("R version")


@pytest.mark.parametrize("method,test", CASES, ids=["|".join(c) for c in CASES])
def test_meta_regression_matches_metafor(method, test):
    ref = REF["fits"][f"{method}|{test}"]
    res = _fit(method, test)
    np.testing.assert_allclose(res.tau2, ref["tau2"], **METAFOR, err_msg="tau2")
    np.testing.assert_allclose(res.coefficients["estimate"], ref["beta"], **METAFOR,
                               err_msg="coefficients")
    np.testing.assert_allclose(res.coefficients["se"], ref["se"], **METAFOR, err_msg="se")
    np.testing.assert_allclose(res.qm, ref["qm"], **METAFOR, err_msg="QM")
    np.testing.assert_allclose(res.p, ref["qm_p"], **METAFOR, err_msg="QM p")
    assert res.df == ref["qm_df"][0]


def test_sj_with_moderators_initial_value_and_step():
    """SJ's start is the variance of yi about its plain mean (not the regression residuals),
    then one weighted step with the model matrix: metafor's values for both stages."""
    y = np.asarray(D["yi"])
    np.testing.assert_allclose(np.mean((y - y.mean()) ** 2), REF["sj_initial"], **METAFOR)
    np.testing.assert_allclose(_fit("SJ", "z").tau2, REF["sj_tau2"], **METAFOR)


@pytest.mark.parametrize("method,printed", [("HS", 0.0253), ("HE", 0.0388), ("DL", 0.0475),
                                            ("SJ", 0.0912), ("PM", 0.0633), ("ML", 0.024),
                                            ("REML", 0.0558), ("EB", 0.0633)])
def test_tau2_matches_metafor_printed_values(method, printed):
    """metafor's own test of this example, numbers printed with 4 (ML: 3) decimals."""
    d = 3 if method == "ML" else 4
    np.testing.assert_allclose(_fit(method, "z").tau2, printed, **published(d))
