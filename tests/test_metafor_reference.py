"""bayesmeta's classical engine vs metafor.

Reference: tests/reference/metafor_reference.json, written by
tests/reference/metafor_reference.R (R and metafor versions recorded in its ``meta``).
Tolerances: ``METAFOR`` for closed forms; ``OPTIMIZER`` for iterative tau² (REML, ML, PM, EB)
and everything that depends on them, and for Q-profile roots.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayesmeta import classical as cl
from bayesmeta.effect_sizes import escalc
from tests.tolerances import METAFOR, OPTIMIZER

pytestmark = pytest.mark.reference

REF = json.loads((Path(__file__).parent / "reference" / "metafor_reference.json").read_text())
GRID = REF["grid"]
TEST_ARGS = {"z": dict(test="z"), "knha": dict(test="knha"),
             "adhoc": dict(test="knha", knha_adhoc=True)}
SCALARS = ("estimate", "se", "statistic", "p", "ci_low", "ci_high", "tau2", "i2", "h2", "q",
           "q_p", "pi_low", "pi_high")


def _tol(method):
    return OPTIMIZER if method in cl.ITERATIVE else METAFOR


def _close(actual, expected, tol, what):
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float),
                               err_msg=what, **tol)


def _fit(dn, method, test):
    d = REF["datasets"][dn]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cl.rma(d["yi"], d["vi"], studies=d["study"], method=method,
                      **TEST_ARGS[test])


CASES = [(dn, m, t) for dn in GRID["datasets"] for m in GRID["methods"] for t in GRID["tests"]]


def test_reference_grid_is_complete():
    """Every dataset x estimator x test is in the JSON and is compared below."""
    assert set(GRID["methods"]) == set(cl.METHODS)
    assert set(GRID["tests"]) == {"z", "knha", "adhoc"}
    assert {"bcg", "homog", "meld2", "sparse", "extreme"} <= set(GRID["datasets"])
    expected = {f"{dn}|{m}|{t}" for dn, m, t in CASES}
    assert set(REF["rma"]) == expected
    assert all("error" not in REF["rma"][key] for key in expected)
    assert len(CASES) == len(expected) == 5 * 9 * 3
    assert set(REF["escalc"]) >= {"MD", "SMD", "OR", "RR", "RD", "PETO", "MC"}
    assert set(REF["mh"]) == {f"{t}|{m}" for t in ("sparse", "bcg") for m in ("OR", "RR", "RD")}
    assert set(REF["peto"]) == {"sparse", "bcg"}
    assert set(REF["multilevel"]) == {"REML", "ML"}
    assert REF["meta"]["metafor"] and REF["meta"]["R"].startswith("R version")


def test_homog_dataset_has_q_below_df():
    """The 'homog' dataset exists to exercise Q < df (DL tau² = 0, not negative)."""
    r = REF["rma"]["homog|DL|z"]
    assert r["q"] < r["k"] - 1
    assert r["tau2"] == 0


@pytest.mark.parametrize("dn,method,test", CASES, ids=["|".join(c) for c in CASES])
def test_rma_matches_metafor(dn, method, test):
    ref = REF["rma"][f"{dn}|{method}|{test}"]
    res = _fit(dn, method, test)
    tol = _tol(method)
    for key in SCALARS:
        if key.startswith("pi_") and method == "FE":
            continue  # metafor's predict() for FE models has no PI
        _close(getattr(res, key), ref[key], tol, f"{dn}|{method}|{test}: {key}")
    assert res.k == ref["k"]
    if test == "z":
        assert res.df is None and ref["df"] is None
    else:
        assert res.df == ref["df"]
    _close(res.weights.to_numpy(), ref["weights"], tol, "weights")
    if not math.isnan(res.tau2_se) and ref.get("se_tau2") is not None:
        _close(res.tau2_se, ref["se_tau2"], tol, "se_tau2")
    for key in ("tau2_ci", "tau_ci", "i2_ci", "h2_ci"):
        if key in ref:
            _close(getattr(res, key), ref[key], OPTIMIZER, f"{key}")
    assert res.converged


def test_tau2_se_compared_for_likelihood_estimators():
    """SE of tau² (inverse Fisher information) is reported and compared for ML/REML."""
    for dn in GRID["datasets"]:
        for m in ("REML", "ML"):
            ref = REF["rma"][f"{dn}|{m}|z"]
            res = _fit(dn, m, "z")
            if ref["tau2"] > 1e-8:
                _close(res.tau2_se, ref["se_tau2"], OPTIMIZER, f"{dn}|{m} se_tau2")


def test_qprofile_present_for_every_random_effects_case():
    n = 0
    for dn in GRID["datasets"]:
        for m in GRID["methods"]:
            if m != "FE":
                assert "tau2_ci" in REF["rma"][f"{dn}|{m}|z"], (dn, m)
                n += 1
    assert n == 5 * 8


# ---- escalc -------------------------------------------------------------------------------

MELD = REF["multilevel_data"]


def _meld_arms():
    return pd.read_csv(Path(__file__).parents[1] / "data" / "meld_2014_fig3.csv")


def _nw():
    t = REF["tables"]["sparse"]
    return dict(ai=t["ai"], bi=t["bi"], ci=t["ci"], di=t["di"])


@pytest.mark.parametrize("key", ["MD", "SMD", "MC", "OR", "RR", "RD", "PETO", "OR_drop00",
                                 "OR_all", "OR_none", "RR_bcg"])
def test_escalc_matches_metafor(key):
    ref = REF["escalc"][key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if key in ("MD", "SMD"):
            out = escalc(key, _meld_arms())
        elif key == "MC":
            a = _meld_arms()
            out = escalc("MC", mi=a.m1i, sdi=a.sd1i, ni=a.n1i)
        elif key == "RR_bcg":
            t = REF["tables"]["bcg"]
            out = escalc("RR", ai=t["ai"], bi=t["bi"], ci=t["ci"], di=t["di"])
        else:
            meas, _, pol = key.partition("_")
            kw = {"drop00": dict(drop00=True), "all": dict(cc_policy="all"),
                  "none": dict(cc_policy="none"), "": {}}[pol]
            out = escalc(meas, **_nw(), **kw)
    exp_y = np.array([np.nan if x is None else x for x in ref["yi"]], float)
    exp_v = np.array([np.nan if x is None else x for x in ref["vi"]], float)
    np.testing.assert_array_equal(np.isnan(out["yi"].to_numpy()), np.isnan(exp_y))
    _close(out["yi"], exp_y, METAFOR, f"{key} yi")
    _close(out["vi"], exp_v, METAFOR, f"{key} vi")


# ---- MH, Peto -------------------------------------------------------------------------------

@pytest.mark.parametrize("key", sorted(REF["mh"]))
def test_rma_mh_matches_metafor(key):
    tn, meas = key.split("|")
    ref = REF["mh"][key]
    t = REF["tables"][tn]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = cl.rma_mh(t["ai"], t["bi"], t["ci"], t["di"], measure=meas, studies=t["study"])
    for k_ in ("estimate", "se", "statistic", "p", "ci_low", "ci_high", "q", "q_p", "i2", "h2"):
        _close(getattr(res, k_), ref[k_], METAFOR, f"{key}: {k_}")
    assert res.k == ref["k"] and res.extra["k_yi"] == ref["k_yi"]
    if meas == "OR":
        _close(res.extra["cmh"], ref["cmh"], METAFOR, "CMH")
        _close(res.extra["cmh_p"], ref["cmh_p"], METAFOR, "CMH p")


@pytest.mark.parametrize("tn", sorted(REF["peto"]))
def test_rma_peto_matches_metafor(tn):
    ref = REF["peto"][tn]
    t = REF["tables"][tn]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = cl.rma_peto(t["ai"], t["bi"], t["ci"], t["di"], studies=t["study"])
    for k_ in ("estimate", "se", "statistic", "p", "ci_low", "ci_high", "q", "q_p", "i2", "h2"):
        _close(getattr(res, k_), ref[k_], METAFOR, f"peto {tn}: {k_}")


# ---- subgroups and meta-regression QM -----------------------------------------------------

@pytest.mark.parametrize("key", sorted(REF["subgroups"]))
def test_subgroups_match_metafor(key):
    sn, method, test = key.split("|")
    ref = REF["subgroups"][key]
    d = REF["subgroup_data"][sn]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = cl.subgroup_analysis(d["yi"], d["vi"], d["g"], method=method, test=test)
    tol = _tol(method)
    assert [str(x) for x in res.subgroups] == [str(x) for x in ref["levels"]]
    for lev, per in zip(res.subgroups.values(), ref["per_level"]):
        _close(lev.estimate, per["estimate"], tol, f"{key} {per['level']} estimate")
        _close(lev.se, per["se"], tol, f"{key} {per['level']} se")
        _close(lev.tau2, per["tau2"], tol, f"{key} {per['level']} tau2")
    _close(res.subgroup_test["q"], ref["q_between"], tol, "Q between")
    assert res.subgroup_test["df"] == ref["q_between_df"]
    _close(res.moderators.qm, ref["qm"], tol, "QM")
    _close(res.moderators.p, ref["qm_p"], tol, "QM p")
    assert res.moderators.df == ref["qm_df"]
    _close(res.moderators.tau2, ref["mods_tau2"], tol, "tau2 (mods)")
    if method == "FE" and test == "z":
        # RevMan's fixed-effect decomposition equals Q on the subgroup estimates
        _close(res.q_between_fe, ref["q_between"], METAFOR, "Q_total - sum Q_within")


# ---- two-level model ----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["REML", "ML"])
def test_multilevel_matches_rma_mv(method):
    ref = REF["multilevel"][method]
    res = cl.fit_multilevel(MELD["yi"], MELD["vi"], MELD["study"], MELD["time"], method=method)
    for k_ in ("estimate", "se", "statistic", "p", "ci_low", "ci_high", "q", "q_p", "loglik"):
        _close(getattr(res, k_), ref[k_], OPTIMIZER, f"rma.mv {method}: {k_}")
    # sigma² for study/time sits on the boundary (metafor: ~1e-10, ours 0): absolute check
    np.testing.assert_allclose(res.sigma2, ref["sigma2"], rtol=1e-5, atol=1e-7)
    assert res.converged
