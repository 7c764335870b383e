"""bayesmeta.survival.

References: a Gaussian-conditional + 1-D quadrature posterior written only for this test (the
published-OR model is linear-Gaussian given sigma_time), closed-form OR -> risk conversions, and
the 2023 paper's printed survival ORs (Results text) as input data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayesmeta import survival
from bayesmeta.exceptions import DataError, SpecError
from tests.tolerances import Z_MCSE

# 2023 paper, Results ("Survival rate"), printed with 2 decimals.
TIMES = [4, 8, 12, 24]
OR = [4.12, 2.47, 2.21, 1.71]
LO = [0.52, 1.38, 1.31, 0.92]
HI = [32.53, 4.43, 3.74, 3.19]


@pytest.fixture(scope="session")
def surv_fit():
    return survival.fit_survival_published(TIMES, OR, LO, HI, rho=0.5)


def _quadrature_reference(rho, s0=1.5, hn=0.5):
    """Exact posterior means/SDs of (mu, theta_t): given sigma everything is Gaussian
    (Kalman update of x = (mu, theta) with y = theta + e, e ~ N(0, C)); integrate sigma on a
    fine grid against HalfNormal(hn) x N(y; 0, S(sigma))."""
    y = np.log(OR)
    se = (np.log(HI) - np.log(LO)) / (2 * stats.norm.ppf(0.975))
    T = len(y)
    R = np.full((T, T), rho)
    np.fill_diagonal(R, 1.0)
    C = R * np.outer(se, se)
    H = np.hstack([np.zeros((T, 1)), np.eye(T)])
    grid = np.linspace(1e-6, 6 * hn, 6001)
    logw, means, seconds = [], [], []
    for sg in grid:
        Cx = np.full((T + 1, T + 1), s0 ** 2)
        Cx[1:, 1:] += sg ** 2 * np.eye(T)
        S = H @ Cx @ H.T + C
        K = Cx @ H.T @ np.linalg.inv(S)
        m = K @ y
        V = Cx - K @ H @ Cx
        logw.append(stats.halfnorm.logpdf(sg, scale=hn)
                    + stats.multivariate_normal.logpdf(y, np.zeros(T), S))
        means.append(m)
        seconds.append(np.diag(V) + m ** 2)
    w = np.exp(np.array(logw) - max(logw))
    w /= w.sum()
    mean = w @ np.array(means)
    sd = np.sqrt(w @ np.array(seconds) - mean ** 2)
    return mean, sd


def test_published_model_matches_quadrature(surv_fit):
    """MCMC posterior mean and SD of mu and every log OR_t within Z_MCSE x MCSE of the
    quadrature reference (rho = 0.5, exchangeable, default priors N(0, 1.5), HN(0.5))."""
    import arviz as az

    mean, sd = _quadrature_reference(0.5)
    post = surv_fit.datatree["posterior"]
    z = []
    items = [("mu", post["mu"])] + [(f"t{t}", post["log_or"].sel(time=str(t))) for t in TIMES]
    for i, (name, da) in enumerate(items):
        ds = da.reset_coords(drop=True).to_dataset(name="x")
        m_se = az.mcse(ds, method="mean")
        s_se = az.mcse(ds, method="sd")
        m_se = float((m_se.ds if hasattr(m_se, "ds") else m_se)["x"])
        s_se = float((s_se.ds if hasattr(s_se, "ds") else s_se)["x"])
        x = da.values.ravel()
        z += [(name, "mean", (x.mean() - mean[i]) / m_se),
              (name, "sd", (x.std(ddof=1) - sd[i]) / s_se)]
    worst = max(z, key=lambda t: abs(t[2]))
    print(f"\nsurvival-published vs quadrature: max |z| = {abs(worst[2]):.2f} MCSE {worst[:2]}")
    assert abs(worst[2]) <= Z_MCSE, z
    assert surv_fit.diagnostics.divergences == 0


def test_survival_table_outputs(surv_fit):
    """Table rows per time x {pooled, new_trial}; probabilities equal draw fractions; default
    control survival 0.35 (2023 Discussion: ACLF 3-month mortality up to 65%)."""
    tab = surv_fit.extra["survival_table"]
    assert list(tab["time"].unique()) == ["4", "8", "12", "24"]
    assert set(tab["kind"]) == {"pooled", "new_trial"}
    assert (tab["control_survival"] == 0.35).all()
    d = surv_fit.datatree["posterior"]["log_or"].sel(time="8").values.ravel()
    row = tab[(tab["time"] == "8") & (tab["kind"] == "pooled")].iloc[0]
    assert row["p_or_gt_1"] == pytest.approx(np.mean(d > 0), abs=0)
    assert row["p_or_gt_threshold"] == pytest.approx(np.mean(np.exp(d) > 1.5), abs=0)
    assert row["nnt"] == pytest.approx(1 / row["survival_diff_median"], rel=1e-12)
    # predictive for a new trial is wider than the pooled posterior
    nt = tab[(tab["time"] == "8") & (tab["kind"] == "new_trial")].iloc[0]
    assert nt["or_ci_high"] / nt["or_ci_low"] > row["or_ci_high"] / row["or_ci_low"]


def test_table_rows_closed_form():
    """OR = 2, control survival 0.35: treated survival = 2*o0/(1+2*o0), o0 = 0.35/0.65,
    difference 0.518519 - 0.35 = 0.168519, NNT = 5.934 (closed form)."""
    r = survival._table_rows(np.full(100, np.log(2.0)), "4", "pooled", 0.35, 1.5)
    o0 = 0.35 / 0.65
    diff = 2 * o0 / (1 + 2 * o0) - 0.35
    assert r["survival_diff_median"] == pytest.approx(diff, rel=1e-12)
    assert r["nnt"] == pytest.approx(1 / diff, rel=1e-12)
    assert r["p_or_gt_1"] == 1.0 and r["p_or_gt_threshold"] == 1.0


def test_rho_sensitivity_reuses_compiled_model(surv_fit):
    """rho in (0, 0.5, 0.8): one table, one compiled model (Cholesky factor is data)."""
    tab = survival.rho_sensitivity(TIMES, OR, LO, HI, rhos=(0.0, 0.5, 0.8), draws=500,
                                   warn=False)
    assert list(tab["rho"].unique()) == [0.0, 0.5, 0.8]
    assert len(tab) == 3 * len(TIMES) * 2
    again = survival.fit_survival_published(TIMES, OR, LO, HI, rho=0.8, draws=200, warn=False)
    assert again.compile_seconds == 0.0


def test_or_of_death_is_inverted():
    """or_means='death': the analysed log survival OR is -log(OR) (same shapes as the main
    fixture, so the compiled model is reused)."""
    fit = survival.fit_survival_published(TIMES, OR, LO, HI, or_means="death", draws=100,
                                          tune=100, warn=False)
    np.testing.assert_allclose(fit.datatree["observed_data"]["yi"].values, -np.log(OR),
                               rtol=1e-12)


@pytest.mark.parametrize("kw, err, match", [
    (dict(ci_low=[0.52, 1.38, 1.31, 2.0]), DataError, "0 < ci_low < OR < ci_high"),
    (dict(rho=1.0), SpecError, "not positive definite"),
    (dict(structure="spline"), SpecError, "Invalid structure"),
    (dict(or_means="hazard"), SpecError, "Invalid or_means"),
])
def test_published_input_errors(kw, err, match):
    args = dict(times=TIMES, or_=OR, ci_low=LO, ci_high=HI)
    args.update({k: v for k, v in kw.items() if k in args})
    with pytest.raises(err, match=match):
        survival.fit_survival_published(**args, **{k: v for k, v in kw.items()
                                                   if k not in args})


def test_counts_input_errors():
    df = pd.DataFrame({"study": ["A", "A"], "time": [4, 12], "ai": [3, 2], "n1i": [20, 20],
                       "ci": [4, 6], "n2i": [20, 20]})
    with pytest.raises(DataError, match="non-decreasing"):
        survival.fit_survival_counts(df)
    with pytest.raises(DataError, match="missing"):
        survival.fit_survival_counts(df.drop(columns="n2i"))


@pytest.mark.sampling
def test_counts_model_recovers_simulated_effect():
    """Reference: simulation truth. 20 studies x 3 intervals, conditional log-OR of death -0.7
    in every interval (tau = 0): the 95% interval of beta0 covers -0.7 and the cumulative
    survival ORs are > 1."""
    rng = np.random.default_rng(11)
    rows = []
    h0 = np.array([0.15, 0.2, 0.1])
    for j in range(20):
        n = 60
        alive = {0: n, 1: n}
        cum = {0: 0, 1: 0}
        for k, t in enumerate([4, 12, 24]):
            for arm in (0, 1):
                lo = np.log(h0[k] / (1 - h0[k])) + arm * -0.7
                d = rng.binomial(alive[arm], 1 / (1 + np.exp(-lo)))
                alive[arm] -= d
                cum[arm] += d
            rows.append(dict(study=f"S{j}", time=t, ai=cum[1], n1i=n, ci=cum[0], n2i=n))
    fit = survival.fit_survival_counts(pd.DataFrame(rows))
    s = fit.summary.loc["beta0"]
    assert s["eti95_lb"] <= -0.7 <= s["eti95_ub"]
    assert fit.diagnostics.divergences == 0
    assert (fit.extra["survival_table"].query("kind == 'pooled'")["p_or_gt_1"] > 0.95).all()
