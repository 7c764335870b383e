"""Workflow checks (bayesmeta.workflow) on exact GHM fits.

References: a Monte Carlo simulation of the model written out here (prior predictive), the
half-normal's closed-form variance and CDF (contraction, prior-data conflict), and exact
marginal likelihoods from bayesmeta.exact (leave-one-out: log p(y) - log p(y_-i)).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from bayesmeta import exact, ghm_exact, workflow
from bayesmeta import priors as P


@pytest.fixture(scope="module")
def meld_fit(meld2014):
    data = meld2014[["study", "time", "yi", "vi"]]
    return data, ghm_exact.fit_ghm(data, mean_prior=P.Normal(0, 5), sigma_time=P.HalfNormal(1),
                                   sigma_study=P.HalfNormal(1), tau=P.HalfNormal(1), r=0.5)


def test_prior_predictive_against_simulation(meld_fit):
    """P(y_rep < y) under the prior, per row, against 200,000 simulations of the model written
    out directly (mean, exchangeable week deviations, study effect, tau, sampling errors with
    correlation 0.5 within a study): within 4 Monte Carlo SEs."""
    data, fit = meld_fit
    pp = workflow.prior_predictive(fit.design, n=4096)
    rng = np.random.default_rng(5)
    n = 200_000
    weeks = sorted(set(data["time"]))
    studies = sorted(set(data["study"]))
    m = rng.normal(0, 5, n)
    st, ss, ta = (np.abs(rng.normal(0, 1, n)) for _ in range(3))
    d = {w: st * rng.normal(size=n) for w in weeks}
    u = {s: ss * rng.normal(size=n) for s in studies}
    sims = np.empty((n, len(data)))
    for s in studies:
        rows = np.flatnonzero(data["study"].to_numpy() == s)
        se = np.sqrt(data["vi"].to_numpy()[rows])
        R = 0.5 * np.ones((rows.size, rows.size)) + 0.5 * np.eye(rows.size)
        eps = rng.multivariate_normal(np.zeros(rows.size), R * np.outer(se, se), size=n)
        for k, i in enumerate(rows):
            sims[:, i] = (m + d[data["time"].iloc[i]] + u[s] + ta * rng.normal(size=n)
                          + eps[:, k])
    for i, y in enumerate(data["yi"]):
        p = float(np.mean(sims[:, i] < y))
        assert pp.loc[i, "p_below"] == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / n)
                                                     + 2e-3)
    assert (pp["flag"] == "").all()


def test_contraction_and_conflict_closed_form(bcg):
    """One-cell NNHM: contraction of tau is 1 - Var(tau | y) / Var(tau), Var of HalfNormal(s)
    = s²(1 - 2/pi), with Var(tau | y) from bayesmeta.exact; conflict flag when the prior CDF
    at the posterior median (closed form erf) is beyond 0.99."""
    rows = pd.DataFrame(dict(yi=bcg["yi"], vi=bcg["vi"], time=1,
                             study=[f"s{i}" for i in range(len(bcg))]))
    for scale, conflict in ((0.5, False), (0.05, True)):
        f = ghm_exact.fit_ghm(rows, measure="OR", mean_prior=P.Normal(0, 4),
                              tau=P.HalfNormal(scale))
        e = exact.fit_exact(bcg["yi"], vi=bcg["vi"], mu_prior=P.Normal(0, 4),
                            tau_prior=P.HalfNormal(scale))
        t = workflow.prior_posterior(f).set_index("parameter").loc["tau"]
        want = 1 - e.tau["sd"] ** 2 / (scale ** 2 * (1 - 2 / math.pi))
        assert t["contraction"] == pytest.approx(want, abs=1e-3)
        cdf = special.erf(e.tau["median"] / (scale * math.sqrt(2)))
        assert t["prior_cdf_at_median"] == pytest.approx(cdf, abs=1e-6)
        assert t["prior_data_conflict"] == conflict
        assert t["decided_by_prior"] == (want < workflow.CONTRACTION_MIN)


def test_exact_loo_equals_marginal_likelihood_ratio(bcg):
    """elpd_i = log p(y) - log p(y_-i) with both marginal likelihoods from bayesmeta.exact
    (proper mu prior; one cell)."""
    y, v = bcg["yi"].to_numpy()[:8], bcg["vi"].to_numpy()[:8]
    rows = pd.DataFrame(dict(yi=y, vi=v, time=1, study=[f"s{i}" for i in range(8)]))
    f = ghm_exact.fit_ghm(rows, measure="OR", mean_prior=P.Normal(0, 4),
                          tau=P.HalfNormal(0.5))
    loo = ghm_exact.exact_loo(f)
    full = exact.fit_exact(y, vi=v, mu_prior=P.Normal(0, 4),
                           tau_prior=P.HalfNormal(0.5)).log_marginal_likelihood
    for i in range(8):
        keep = np.arange(8) != i
        part = exact.fit_exact(y[keep], vi=v[keep], mu_prior=P.Normal(0, 4),
                               tau_prior=P.HalfNormal(0.5)).log_marginal_likelihood
        assert loo.loc[i, "elpd_loo"] == pytest.approx(full - part, abs=1e-6)
    assert loo["loo_pit"].between(0, 1).all()


def test_node_loo_agrees_with_refitting_on_importance_sampled_fits():
    """Three hyperparameters (QMC importance sampling): reweighting the nodes and refitting
    without each row agree within the engines' Monte Carlo error (2014 arm data; measured
    differences <= 1e-3)."""
    m = pd.read_csv(Path(__file__).resolve().parent.parent / "data" / "meld_2014_fig3.csv")
    rows = pd.DataFrame(dict(study=m["study"], time=m["time"], yi=m["m1i"] - m["m2i"],
                             vi=m["sd1i"] ** 2 / m["n1i"] + m["sd2i"] ** 2 / m["n2i"]))
    f = ghm_exact.fit_ghm(rows)
    assert f.nodes.kind == "qmc-is"
    a, b = ghm_exact.exact_loo(f), ghm_exact.node_loo(f)
    np.testing.assert_allclose(b["elpd_loo"], a["elpd_loo"], atol=5e-3)
    full = 1.0 / float(np.sum(f.nodes.weight ** 2))
    assert (b["loo_ess"] > workflow.LOO_ESS_RATIO * full).all()


def test_loo_compare_and_simpler_models(msc2023_meld_rows):
    """The comparison lists the fitted model and each simpler model it generalises; the best
    model has elpd_diff 0 and every other a negative difference."""
    d = msc2023_meld_rows
    data = d[d["subgroup"] != "all"].assign(source="2023", row_kind="pooled")
    opts = dict(subgroup="random")
    f = ghm_exact.fit_ghm(data, **opts)
    names = workflow.simpler_models(f.design)
    assert set(names) == {"no time deviations (sigma_time = 0)",
                          "independent sampling errors (r = 0)",
                          "one mean for all subgroups (sigma_subgroup = 0)"}
    out = workflow.workflow_checks(f, data, model_options=opts)
    loo = out["loo"]
    assert len(loo) == 4 and loo["elpd_diff"].iloc[0] == 0.0
    assert (loo["elpd_diff"].iloc[1:] <= 0).all()
    assert set(out) == {"prior_predictive", "posterior_predictive", "prior_posterior", "loo"}
    pp = out["posterior_predictive"]
    assert pp["p_below"].between(0, 1).all() and (pp["lower"] < pp["upper"]).all()


def test_all_rows_conditional_equals_row_by_row_kriging():
    """The one-inverse-per-node leave-one-out conditionals (normal mean prior integrated into
    the covariance) equal the row-by-row universal-kriging conditionals (1e-10 relative)."""
    m = pd.read_csv(Path(__file__).resolve().parent.parent / "data" / "meld_2014_fig3.csv")
    rows = pd.DataFrame(dict(study=m["study"], time=m["time"], yi=m["m1i"] - m["m2i"],
                             vi=m["sd1i"] ** 2 / m["n1i"] + m["sd2i"] ** 2 / m["n2i"]))
    f = ghm_exact.fit_ghm(rows, time_structure="ar1")
    d = f.design
    th = d.theta(f.nodes.x[:64])
    fast = ghm_exact._loo_all_rows(d, th)
    for i in range(d.n):
        m1, v1 = ghm_exact._loo_conditional(d, th, i)
        m2, v2 = fast(i)
        np.testing.assert_allclose(m2, m1, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(v2, v1, rtol=1e-10)
