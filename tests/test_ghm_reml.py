"""Classical twin of the GHM (bayesmeta.ghm_reml) against metafor 3.8.1 rma.mv / rma.

Reference: tests/reference/metafor_rmamv_struct.json, written by
tests/reference/metafor_rmamv_struct.R (R and package versions in its "meta" block): rma.mv
with mods = ~ 0 + cell, a study intercept and study x time CS / AR / CAR, V from vcalc; and the
univariate special case with rma(test = "knha").

Two comparisons per case:
* at metafor's own variance components, our log-likelihood, fixed effects and SEs must equal
  metafor's (same arithmetic: rtol 1e-9);
* at the optimum, our REML/ML estimates agree within the optimiser tier (both stop at a
  convergence tolerance; metafor's nlminb/optim stop on flat likelihoods ~1e-11 below ours),
  and our maximised log-likelihood is never below metafor's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayesmeta import ghm, ghm_reml
from bayesmeta.exceptions import SpecError
from bayesmeta.fits import Param
from tests.tolerances import OPTIMIZER

OPT = dict(rel=OPTIMIZER["rtol"], abs=OPTIMIZER["atol"])

pytestmark = pytest.mark.reference

REF = json.loads((Path(__file__).parent / "reference" / "metafor_rmamv_struct.json").read_text())
CASES = REF["cases"]
#: where metafor's best optimiser stops measurably below our maximum (a component at its
#: boundary 0: sim_CAR_ML, metafor's sigma2 4e-6 with logLik 1.3e-7 below ours), estimates are
#: compared at this looser tier (our logLik is the higher one)
STOPPED_EARLY = dict(rel=1e-4, abs=1e-5)


def _param(cell: str) -> Param:
    g, t = cell.split("_")
    return Param("mu", time=t) if g == "all" else Param("mu", subgroup=g, time=t)


def _components(c) -> tuple[list[float], list[str]]:
    """metafor's variance components as (sigma2_study, tau2[, rho]) in our parameterisation."""
    f = c["fit"]
    sig = f["sigma2"] if isinstance(f["sigma2"], list) else [f["sigma2"]]
    if c["struct"] == "CS" and c["param"] == "sigma":
        return [sig[0], sig[1]], ["sigma2_study", "tau2"]
    if c["struct"] == "CS":  # (tau2, rho) form: sigma2_study = rho tau2, tau2 = (1 - rho) tau2
        return [f["tau2"] * f["rho"], f["tau2"] * (1 - f["rho"])], ["sigma2_study", "tau2"]
    return [sig[0], f["tau2"], f["rho"]], ["sigma2_study", "tau2", "rho"]


def _design(c):
    return ghm.build_design(pd.DataFrame(c["data"]), correlation=c["correlation"], r=c["r"],
                            time_structure="car" if c["struct"] == "CAR" else "exchangeable")


@pytest.mark.parametrize("name", sorted(CASES))
def test_likelihood_and_gls_at_metafor_components(name):
    """Same V (vcalc), same random structure, same (restricted) likelihood: at metafor's
    components our logLik, cell means and SEs equal metafor's."""
    c = CASES[name]
    mod = ghm_reml._Model(_design(c), c["struct"], c["method"] == "REML")
    psi, names = _components(c)
    assert mod.names == names
    q = mod.parts(np.array(psi))
    assert mod.loglik(np.array(psi)) == pytest.approx(c["fit"]["logLik"], rel=1e-9)
    cid = {cell: i for i, cell in enumerate(mod.cells)}
    for cell, b, se in zip(c["fit"]["cells"], c["fit"]["beta"], c["fit"]["se"]):
        i = cid[tuple(cell.split("_"))]
        assert q["beta"][i] == pytest.approx(b, rel=1e-9)
        assert math.sqrt(q["Ai"][i, i]) == pytest.approx(se, rel=1e-9)


@pytest.mark.parametrize("name", sorted(CASES))
def test_optimum_matches_metafor(name):
    c = CASES[name]
    f = ghm_reml.fit_ghm_reml(pd.DataFrame(c["data"]), struct=c["struct"], method=c["method"],
                              test=c["test"], correlation=c["correlation"], r=c["r"])
    res = f.result
    assert res.converged
    ahead = res.loglik - c["fit"]["logLik"]
    assert -1e-9 <= ahead < 1e-6
    tol = STOPPED_EARLY if ahead > 1e-9 else OPT
    want, names = _components(c)
    for n, w in zip(names, want):
        assert res.components[n] == pytest.approx(w, **tol), n
    s = f.summary(0.95)
    for cell, b, se, lo, hi, pv in zip(*(c["fit"][k] for k in ("cells", "beta", "se", "ci_lb",
                                                               "ci_ub", "pval"))):
        row = s.loc[_param(cell)]
        for got, w in ((row.estimate, b), (row.se, se), (row.ci_low, lo), (row.ci_high, hi),
                       (row.p_value, pv)):
            assert got == pytest.approx(w, **tol)
    if c["test"] == "t":
        assert (s.loc[[_param(x) for x in c["fit"]["cells"]], "df"] == c["fit"]["ddf"]).all()


@pytest.mark.parametrize("test", ["knha", "z"])
def test_univariate_special_case_equals_rma(test):
    """One cell, one row per study: the twin is rma.uni REML; KNHA and z intervals as metafor's
    rma(test = "knha" / "z") on dat.bcg (metafor stops tau² at its 1e-5 step threshold)."""
    u = REF["univariate"]
    f = ghm_reml.fit_ghm_reml(pd.DataFrame(u["data"]), test=test, measure="OR")
    s = f.summary(0.95).loc[Param("mu")]
    r = u[test]
    for got, w in ((s.estimate, r["beta"]), (s.se, r["se"]), (s.ci_low, r["ci_lb"]),
                   (s.ci_high, r["ci_ub"]), (s.p_value, r["pval"]),
                   (f.result.components["tau2"], r["tau2"])):
        assert got == pytest.approx(w, **OPT)


def test_read_level_intervals_closed_form():
    """Intervals at a read level: estimate +- quantile * se (z or t with k - p df); the
    contrast's SE from the covariance of the two cells (w' V w)."""
    c = CASES["sim_AR_REML_t"]
    f = ghm_reml.fit_ghm_reml(pd.DataFrame(c["data"]), struct="AR", test="t")
    s = f.summary(0.8)
    df = f.result.df
    crit = stats.t(df).ppf(0.9)
    for p, r in s.iterrows():
        if p.name in ("mu", "contrast"):
            assert r.ci_high - r.estimate == pytest.approx(crit * r.se, rel=1e-12)
    cells = list(f.result.cells)
    i, j = cells.index(("B", "2")), cells.index(("A", "2"))
    V = f.result.vcov
    se = math.sqrt(V[i, i] + V[j, j] - 2 * V[i, j])
    assert s.loc[Param("contrast", subgroup="B - A", time="2"), "se"] == pytest.approx(se)
    fr = f.to_frame(0.8)
    assert (fr["level"] == 0.8).all() and (fr["source"] == "classical").all()


@pytest.mark.parametrize("struct, study_time", [("CS", "independent"), ("AR", "ar1"),
                                                ("CAR", "car")])
def test_twin_covariance_is_the_bayesian_models(struct, study_time):
    """The same model: the twin's Cov(y) = V + sigma2_study Z Z' + tau² E(rho) (checked
    against metafor above) equals the Bayesian model's Sigma (bayesmeta.ghm) with the cell
    deviations fixed (sigma_time = 0) and study_time matching struct."""
    d = pd.DataFrame(CASES["sim_AR_REML"]["data"])
    mod = ghm_reml._Model(ghm.build_design(d, time_structure="car"), struct, True)
    D = ghm.build_design(d, study_time=study_time, sigma_time=0.0, time_structure="car")
    psi = {"sigma2_study": 0.3, "tau2": 0.2, "rho": 0.6}
    S = mod.parts(np.array([psi[n] for n in mod.names]))["S"]
    th = {"sigma_study": np.array([math.sqrt(0.3)]), "tau": np.array([math.sqrt(0.2)]),
          "rho_within": np.array([0.6]), "sigma_time": np.array([0.0]),
          "rho": np.array([0.5]), "r": np.array([0.5])}
    np.testing.assert_allclose(D.Sigma(th)[0], S, atol=1e-13)


def test_rejects_r_prior_and_unknown_options():
    d = pd.DataFrame(CASES["sim_CS_REML"]["data"])
    with pytest.raises(SpecError, match="known r"):
        ghm_reml.fit_ghm_reml(d, r=ghm.BetaPrior(2, 2))
    with pytest.raises(SpecError, match="struct"):
        ghm_reml.fit_ghm_reml(d, struct="UN")
    with pytest.raises(SpecError, match="test"):
        ghm_reml.fit_ghm_reml(d, test="hksj")
