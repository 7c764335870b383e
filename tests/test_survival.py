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
    return survival.fit_survival_published(TIMES, OR, LO, HI, rho=0.5, control_survival=0.35)


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
    """Table rows per time x {pooled, new_trial}; probabilities equal draw fractions; the
    control survival given to the fit (0.35) fills its column."""
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
                                   warn=False, engine="mcmc")
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
    (dict(rho=1.0), SpecError, r"Invalid rho 1.0: must be in \(-1, 1\)"),
    (dict(rho=-0.5), SpecError, "not positive definite"),   # exchangeable, T = 4: rho > -1/3
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


def _constant_hr_counts(cut, seed=7, k=10, n=150, hr=0.6, lam=0.04):
    """Cumulative deaths per arm at the times ``cut`` for k studies of n per arm with
    exponential survival (hazard lam x exp(b_i) per week, b_i ~ N(0, 0.3²)) and a constant
    hazard ratio ``hr``: the same simulated patients whatever the cut."""
    rng = np.random.default_rng(seed)
    rows = []
    for j in range(k):
        lam_j = lam * np.exp(0.3 * rng.standard_normal())
        t0 = rng.exponential(1 / lam_j, n)
        t1 = rng.exponential(1 / (lam_j * hr), n)
        for t in cut:
            rows.append(dict(study=f"S{j}", time=t, ai=int((t1 <= t).sum()), n1i=n,
                             ci=int((t0 <= t).sum()), n2i=n))
    return pd.DataFrame(rows)


@pytest.mark.sampling
def test_cloglog_hazard_ratio_does_not_depend_on_the_cut():
    """Reference: simulation truth (constant HR 0.6 from exponential survival). The same
    patients cut at weeks 4, 8, 12, 24 and at 6, 18, 24: the grouped-time PH model's posterior
    log HR covers log 0.6 in both, and the two posterior means differ by far less than a
    posterior SD (the interval cut only coarsens the data)."""
    fits = [survival.fit_survival_counts(_constant_hr_counts(cut), link="cloglog", draws=600,
                                         tune=600, chains=2, warn=False)
            for cut in ([4, 8, 12, 24], [6, 18, 24])]
    s = [f.summary.loc["log_hr"] for f in fits]
    for si, f in zip(s, fits):
        assert si["eti95_lb"] <= np.log(0.6) <= si["eti95_ub"]
        assert f.diagnostics.divergences == 0
    print(f"\nlog HR (truth {np.log(0.6):.4f}): cut A {s[0]['mean']:.4f} (sd {s[0]['sd']:.4f}), "
          f"cut B {s[1]['mean']:.4f} (sd {s[1]['sd']:.4f})")
    assert abs(s[0]["mean"] - s[1]["mean"]) < 0.5 * min(s[0]["sd"], s[1]["sd"])
    assert "proportional hazards" in fits[0].notes[0]
    # the same machinery on counts: control risk of death per time from the control arms,
    # the log HR's draws -> absolute effect on the hazard-ratio scale (P(benefit) is the share
    # of draws below 0, closed form), and a predictive with the model's own joint tau draws
    from bayesmeta.absolute import absolute_effect, baseline_from_counts
    from bayesmeta.direction import Direction
    from bayesmeta.fits import Param
    from bayesmeta.mixture import EffectDistribution
    from bayesmeta.newtrial import Predictive, assurance
    from bayesmeta.survival_fit import as_fit

    f = as_fit(fits[0])
    d = f.draws(Param("log_hr"))
    base = baseline_from_counts(_constant_hr_counts([4, 8, 12, 24]), events="deaths")["24"]
    a = absolute_effect(EffectDistribution.from_draws(d), base, Direction(events="deaths"),
                        scale="logHR")
    assert a.p_benefit == pytest.approx(np.mean(d < 0), abs=1e-12)
    p0 = 1 - np.exp(-0.04 * np.exp(0.045) * 24)     # E[exp(0.3 z)] = exp(0.045)
    assert a.gain_low < (1 - p0) ** 0.6 - (1 - p0) < a.gain_high
    pred = Predictive.from_effect(EffectDistribution.from_draws(d),
                                  tau_draws=f.draws(Param("tau")))
    assert 0 < assurance(pred, 0.2, Direction(events="deaths")) < 1


# ---------------------------------------------------------------------------------------------
# exact engine (fit_survival_published_exact)
# ---------------------------------------------------------------------------------------------

def _independent_reference(rho, structure, s0=1.5, m0=0.0, sigma_prior=None, tau_scale=0.5,
                           thr=1.5, p0=0.35):
    """Independent integration written only for this test (no code shared with the library).

    Given sigma, x = (mu, theta_1..T) has the Gaussian prior N(m0 1, Cx) with Cx built from
    the generative definition (theta = mu 1 + sigma B z, B = I or the cumulative-sum matrix of
    z_2..z_T), y = H x + e, e ~ N(0, C): Kalman update for E[x | sigma, y], Var[x | sigma, y];
    p(y | sigma) from scipy.stats.multivariate_normal. sigma is integrated with adaptive
    scipy.integrate.quad_vec (epsabs 1e-13; 1e-10 for the nested ones) over (0, inf); the survival difference
    E[expit(logit p0 + theta_t)] and the new-trial probabilities (tau_new ~ HalfNormal) by
    nested scipy.integrate.quad."""
    from scipy import integrate, special

    y = np.log(OR)
    se = (np.log(HI) - np.log(LO)) / (2 * stats.norm.ppf(0.975))
    T = len(y)
    R = np.full((T, T), rho)
    np.fill_diagonal(R, 1.0)
    C = R * np.outer(se, se)
    B = np.eye(T) if structure == "exchangeable" else np.tril(np.ones((T, T)), 0)
    if structure == "rw1":
        B[:, 0] = 0.0          # theta_1 = mu; theta_t = theta_{t-1} + sigma z_t (t >= 2)
    H = np.hstack([np.zeros((T, 1)), np.eye(T)])
    J = np.vstack([np.ones((1, 1)), np.ones((T, 1))])
    logprior = (sigma_prior or (lambda s: stats.halfnorm.logpdf(s, scale=0.5)))
    a = np.log(p0 / (1 - p0))

    def cond(sg):
        L = np.zeros((T + 1, T + 1))
        L[1:, 1:] = sg * B
        Cx = s0 ** 2 * J @ J.T + L @ L.T
        S = H @ Cx @ H.T + C
        K = np.linalg.solve(S, H @ Cx).T
        m = m0 + K @ (y - m0)
        V = Cx - K @ H @ Cx
        lw = logprior(sg) + stats.multivariate_normal.logpdf(y, np.full(T, m0), S)
        return m, np.sqrt(np.diag(V)), lw

    _, _, lw_mode = cond(0.3)

    def f(sg, what):
        m, s, lw = cond(sg)
        w = np.exp(lw - lw_mode)
        if what == "basic":
            return w * np.concatenate([[1.0], m, s ** 2 + m ** 2, [sg, sg ** 2],
                                       stats.norm.sf(0, m[1:], s[1:]),
                                       stats.norm.sf(np.log(thr), m[1:], s[1:])])
        if what == "diff":
            return w * np.array([integrate.quad(
                lambda x, i=i: special.expit(a + x) * stats.norm.pdf(x, m[i], s[i]),
                m[i] - 12 * s[i], m[i] + 12 * s[i], epsabs=1e-11, epsrel=1e-10)[0]
                for i in range(1, T + 1)])
        # new trial: P(theta_t + tau z > 0), tau ~ HalfNormal(tau_scale)
        return w * np.array([integrate.quad(
            lambda u, i=i: stats.halfnorm.pdf(u, scale=tau_scale)
            * stats.norm.sf(0, m[i], np.sqrt(s[i] ** 2 + u ** 2)), 0, np.inf,
            epsabs=1e-11, epsrel=1e-10)[0] for i in range(1, T + 1)])

    kw = dict(epsabs=1e-13, epsrel=1e-11, limit=400)
    basic, _ = integrate.quad_vec(lambda s: f(s, "basic"), 0, np.inf, **kw)
    kw = dict(epsabs=1e-10, epsrel=1e-9, limit=400)   # nested: looser, still << 1e-6
    Z = basic[0]
    basic = basic / Z
    mean = basic[1:T + 2]
    sd = np.sqrt(basic[T + 2:2 * T + 3] - mean ** 2)
    sig_mean = basic[2 * T + 3]
    sig_sd = np.sqrt(basic[2 * T + 4] - sig_mean ** 2)
    p1 = basic[2 * T + 5:3 * T + 5]
    pthr = basic[3 * T + 5:4 * T + 5]
    diff = integrate.quad_vec(lambda s: f(s, "diff"), 0, np.inf, **kw)[0] / Z - p0
    pnew = integrate.quad_vec(lambda s: f(s, "new"), 0, np.inf, **kw)[0] / Z
    return dict(mean=mean, sd=sd, sig_mean=sig_mean, sig_sd=sig_sd, p1=p1, pthr=pthr,
                diff=diff, pnew=pnew)


_SLOW = pytest.mark.slow   # ~12 s each (nested scipy quad); two cases stay in the default run


@pytest.mark.parametrize("rho, structure, prior", [
    (0.5, "exchangeable", "default"), (0.3, "rw1", "enthusiastic"),
    pytest.param(0.0, "exchangeable", "default", marks=_SLOW),
    pytest.param(0.9, "exchangeable", "default", marks=_SLOW),
    pytest.param(0.5, "rw1", "default", marks=_SLOW),
    pytest.param(0.6, "exchangeable", "empirical", marks=_SLOW),
])
def test_exact_matches_independent_integration(rho, structure, prior):
    """Exact engine vs the independent nested-quad integration above, abs 1e-6 (QUADRATURE
    tier): posterior mean and SD of mu, sigma_time and every log OR_t, P(OR_t > 1),
    P(OR_t > 1.5), the mean survival difference (control 0.35) and the new-trial P(OR > 1).
    Priors: default N(0, 1.5), HN(0.5); enthusiastic mu ~ N(0.693, 0.421); empirical sigma
    ~ log tau² ~ N(-2.56, 1.74²) (Turner 2015)."""
    from bayesmeta import priors as P
    from tests.tolerances import QUADRATURE

    kw, ref_kw = {}, {}
    if prior == "enthusiastic":
        kw["mu_prior"] = P.Normal(0.6931471805599453, 0.42140356394179934)
        ref_kw.update(m0=0.6931471805599453, s0=0.42140356394179934)
    elif prior == "empirical":
        kw["sigma_prior"] = P.LogNormalTau2(-2.56, 1.74)
        # tau² ~ logN(-2.56, 1.74²): density of tau = 2 tau f_lognormal(tau²)
        ref_kw["sigma_prior"] = lambda s: (np.log(2 * s) + stats.lognorm.logpdf(
            s ** 2, 1.74, scale=np.exp(-2.56)))
    fit = survival.fit_survival_published_exact(TIMES, OR, LO, HI, rho=rho,
                                                structure=structure, n_draws=10,
                                                control_survival=0.35, **kw)
    ref = _independent_reference(rho, structure, **ref_kw)
    s = fit.summary
    labs = ["mu"] + [f"logOR[{t}]" for t in TIMES]
    tab = fit.extra["survival_table"]
    pooled = tab[tab["kind"] == "pooled"]
    new = tab[tab["kind"] == "new_trial"]
    got = np.concatenate([s.loc[labs, "mean"], s.loc[labs, "sd"],
                          [s.loc["sigma_time", "mean"], s.loc["sigma_time", "sd"]],
                          pooled["p_or_gt_1"], pooled["p_or_gt_threshold"],
                          pooled["survival_diff_mean"], new["p_or_gt_1"]])
    want = np.concatenate([ref["mean"], ref["sd"], [ref["sig_mean"], ref["sig_sd"]],
                           ref["p1"], ref["pthr"], ref["diff"], ref["pnew"]])
    err = np.abs(got - want)
    print(f"\nexact vs independent integration ({rho}, {structure}, {prior}): "
          f"max abs error {err.max():.2e}")
    np.testing.assert_allclose(got, want, **QUADRATURE)


def test_exact_quantiles_are_mixture_quantiles():
    """The reported median/ETI of log OR_t and of the survival difference: the exact CDF
    (mixture over the sigma grid, evaluated by the library's own .prob) equals 0.5/0.025/0.975
    there, and the survival difference quantiles are the log-OR quantiles mapped through the
    increasing map expit(logit p0 + L) - p0 (closed form)."""
    from scipy import special

    fit = survival.fit_survival_published_exact(TIMES, OR, LO, HI, rho=0.5, n_draws=10,
                                                control_survival=0.35)
    a = np.log(0.35 / 0.65)
    for t in TIMES:
        s = fit.summary.loc[f"logOR[{t}]"]
        for q, col in ((0.5, "median"), (0.025, "eti95_lb"), (0.975, "eti95_ub")):
            assert fit.prob(f"logOR[{t}]", below=s[col]) == pytest.approx(q, abs=1e-10)
        r = fit.extra["survival_table"].query(f"time == '{t}' and kind == 'pooled'").iloc[0]
        assert r["or_median"] == pytest.approx(np.exp(s["median"]), rel=1e-12)
        assert r["survival_diff_ci_low"] == pytest.approx(
            special.expit(a + s["eti95_lb"]) - 0.35, abs=1e-12)
        assert r["nnt"] == pytest.approx(1 / r["survival_diff_median"], rel=1e-12)


def test_exact_fixed_sigma_rho0_is_fixed_effect():
    """Closed form: rho = 0 and sigma_time fixed at 0 make every log OR_t equal mu, whose
    posterior is the conjugate normal: precision sum 1/se² + 1/1.5², mean (sum y/se²)/precision;
    P(OR > 1) = Phi(mean/sd); quantiles mean + z sd."""
    from bayesmeta.exact import FixedTau

    y = np.log(OR)
    se = (np.log(HI) - np.log(LO)) / (2 * stats.norm.ppf(0.975))
    prec = np.sum(1 / se ** 2) + 1 / 1.5 ** 2
    m, sd = np.sum(y / se ** 2) / prec, prec ** -0.5
    for structure in ("exchangeable", "rw1"):
        fit = survival.fit_survival_published_exact(
            TIMES, OR, LO, HI, rho=0.0, structure=structure, sigma_prior=FixedTau(0.0),
            n_draws=1000, seed=3)
        for lab in ["mu"] + [f"logOR[{t}]" for t in TIMES]:
            s = fit.summary.loc[lab]
            assert s["mean"] == pytest.approx(m, abs=1e-12)
            assert s["sd"] == pytest.approx(sd, abs=1e-12)
            assert s["median"] == pytest.approx(m, abs=1e-10)
            assert s["eti95_ub"] == pytest.approx(m + stats.norm.ppf(0.975) * sd, abs=1e-10)
        p = fit.extra["survival_table"].query("kind == 'pooled'")
        np.testing.assert_allclose(p["p_or_gt_1"], stats.norm.cdf(m / sd), atol=1e-12)
        np.testing.assert_allclose(p["p_or_gt_threshold"],
                                   stats.norm.sf(np.log(1.5), m, sd), atol=1e-12)
        d = fit.datatree["posterior"]["log_or"].values[0]
        np.testing.assert_allclose(d, d[:, :1].repeat(4, 1), atol=1e-12)   # theta_t = mu


def test_exact_vs_mcmc_within_mcse(surv_fit):
    """Exact engine vs the MCMC fit of the same model (rho = 0.5, default priors): mean and SD
    of mu, sigma_time, every log OR_t and log OR_new_t, and P(OR_t > 1), within Z_MCSE x the
    MCMC run's own MCSE."""
    import arviz as az

    ex = survival.fit_survival_published_exact(TIMES, OR, LO, HI, rho=0.5, n_draws=10)
    post = surv_fit.datatree["posterior"]
    items = [("mu", post["mu"]), ("sigma_time", post["sigma_time"])]
    items += [(f"logOR[{t}]", post["log_or"].sel(time=str(t))) for t in TIMES]
    items += [(f"logOR_new[{t}]", post["log_or_new"].sel(time=str(t))) for t in TIMES]

    def mcse(da, method):
        r = az.mcse(da.reset_coords(drop=True).to_dataset(name="x"), method=method)
        return float((r.ds if hasattr(r, "ds") else r)["x"])

    z = []
    for lab, da in items:
        x = da.values.ravel()
        z += [(lab, "mean", (x.mean() - ex.summary.loc[lab, "mean"]) / mcse(da, "mean")),
              (lab, "sd", (x.std(ddof=1) - ex.summary.loc[lab, "sd"]) / mcse(da, "sd"))]
    tab = ex.extra["survival_table"].query("kind == 'pooled'")
    for t, p in zip(TIMES, tab["p_or_gt_1"]):
        ind = (post["log_or"].sel(time=str(t)) > 0).astype(float)
        z.append((f"P(OR[{t}] > 1)", "mean", (float(ind.mean()) - p) / mcse(ind, "mean")))
    worst = max(z, key=lambda v: abs(v[2]))
    print(f"\nexact vs MCMC: max |z| = {abs(worst[2]):.2f} MCSE {worst[:2]}")
    assert abs(worst[2]) <= Z_MCSE, z


def test_exact_draws_interface_and_seed(tmp_path):
    """The DataTree holds exact i.i.d. draws (chain = 1): same seed -> identical draws; their
    means agree with the exact means within 5 Monte Carlo SEs (sd/sqrt(n)); ArviZ summarises
    them; NetCDF round-trip; to_frame follows the shared schema with method exact-survival,
    interval eti and mcse 0; survival_table() recomputes exactly for another control
    survival."""
    import arviz as az

    from bayesmeta import results

    a = survival.fit_survival_published_exact(TIMES, OR, LO, HI, rho=0.3, n_draws=20000, seed=7)
    b = survival.fit_survival_published_exact(TIMES, OR, LO, HI, rho=0.3, n_draws=20000, seed=7)
    post = a.datatree["posterior"]
    assert post["log_or"].shape == (1, 20000, 4)
    np.testing.assert_array_equal(post["log_or_new"].values,
                                  b.datatree["posterior"]["log_or_new"].values)
    for lab in ["mu", "sigma_time", "logOR[4]", "logOR[24]", "logOR_new[8]"]:
        d = a.draws(lab)
        m, s = a.summary.loc[lab, "mean"], a.summary.loc[lab, "sd"]
        assert abs(d.mean() - m) < 5 * s / np.sqrt(d.size), lab
        assert abs(d.std() - s) < 5 * s / np.sqrt(d.size / 2), lab
    summ = az.summary(post.to_dataset()[["mu"]], ci_prob=0.95, ci_kind="eti")
    assert summ.loc["mu", "mean"] == pytest.approx(a.summary.loc["mu", "mean"], abs=0.02)
    a.save(tmp_path / "s.nc")
    assert (tmp_path / "s.nc").stat().st_size > 0
    df = a.to_frame()
    assert tuple(df.columns) == results.SCHEMA
    assert set(df["method"]) == {"exact-survival"} and set(df["interval"]) == {"eti"}
    assert (df["mcse"] == 0).all() and a.clean and a.diagnostics.divergences == 0
    t2 = survival.survival_table(a, control_survival=0.5)
    assert (t2["control_survival"] == 0.5).all()
    r = t2.query("time == '8' and kind == 'pooled'").iloc[0]
    assert r["survival_diff_median"] == pytest.approx(
        r["or_median"] / (1 + r["or_median"]) - 0.5, abs=1e-12)   # odds0 = 1
    assert "exact posterior by quadrature" in str(a)


def test_rho_sensitivity_exact_default():
    """rho_sensitivity uses the exact engine by default (clean, no sampling); the exact P(OR >
    1) at 24 weeks decreases as rho grows here only if the data say so, so just check shape and
    that rho = 0 differs from rho = 0.8 (the correlation matters)."""
    tab = survival.rho_sensitivity(TIMES, OR, LO, HI, rhos=(0.0, 0.8), n_draws=10)
    assert list(tab["rho"].unique()) == [0.0, 0.8] and tab["clean"].all()
    assert len(tab) == 2 * len(TIMES) * 2
    p = tab.query("kind == 'pooled' and time == '24'")["p_or_gt_1"].to_numpy()
    assert abs(p[0] - p[1]) > 1e-4
    with pytest.raises(SpecError, match="Invalid engine"):
        survival.rho_sensitivity(TIMES, OR, LO, HI, rhos=(0.0,), engine="gibbs")
