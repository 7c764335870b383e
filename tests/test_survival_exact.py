"""bayesmeta.survival_exact (rho given a prior, AR(1) by time distance) and
bayesmeta.survival_fit (Fit adapter, prior sets, the other reading of the ORs).

References: an independent integration written here - for each rho a dense trapezoid over
sigma_time of the Kalman-updated Gaussian model (x = (mu, theta), y = theta + e), then
scipy.integrate.quad_vec over rho -, the closed-form AR(1) correlation, the exact CDF at the
reported interval ends, and the mirror identity of the two OR readings under a prior symmetric
about 0. Input data: the 2023 paper's survival ORs (Results text, 2 decimals).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from bayesmeta import priors as P
from bayesmeta.fits import Param
from bayesmeta.survival import corr_matrix
from bayesmeta.survival_exact import RhoPrior, fit_survival_published_exact, parse_rho_prior
from bayesmeta.survival_fit import as_fit, other_reading, prior_kwargs, published_prior_sets
from bayesmeta.exceptions import SpecError
from tests.tolerances import QUADRATURE

TIMES = [4, 8, 12, 24]
OR = [4.12, 2.47, 2.21, 1.71]
LO = [0.52, 1.38, 1.31, 0.92]
HI = [32.53, 4.43, 3.74, 3.19]


def test_ar1_decays_with_time_distance():
    """rho ** (|t_i - t_j| / unit), unit = smallest gap (4): (4, 24) -> rho ** 5; equally
    spaced times give the classical AR(1); positive definite for unequal times."""
    R = corr_matrix(4, 0.6, "ar1", TIMES)
    assert R[0, 3] == pytest.approx(0.6 ** 5) and R[2, 3] == pytest.approx(0.6 ** 3)
    assert R[0, 1] == pytest.approx(0.6)
    np.testing.assert_allclose(corr_matrix(3, 0.5, "ar1", [2, 4, 6]),
                               0.5 ** np.abs(np.subtract.outer(np.arange(3), np.arange(3))))
    assert corr_matrix(4, 0.6, "ar1", TIMES, unit=12)[0, 3] == pytest.approx(0.6 ** (20 / 12))
    assert np.linalg.eigvalsh(corr_matrix(4, 0.95, "ar1", TIMES)).min() > 0
    with pytest.raises(SpecError, match="ar1 structure needs"):
        corr_matrix(4, -0.2, "ar1", TIMES)


def test_parse_rho_prior():
    assert parse_rho_prior("uniform") == RhoPrior()
    assert parse_rho_prior("beta:2:3:0:0.9") == RhoPrior(2, 3, 0, 0.9)
    assert str(parse_rho_prior("beta:2:2")) == "Beta(2, 2)"
    for bad in ("beta:2", "normal:0:1", "uniform:0.5:0.2"):
        with pytest.raises(SpecError):
            parse_rho_prior(bad)


def _reference(correlation, a=1.0, b=1.0, s0=1.5, hn=0.5):
    """Posterior moments with rho ~ Beta(a, b) on (0, 1): quad_vec over rho of a dense
    trapezoid over sigma (HalfNormal(hn)) of the Kalman-updated Gaussian model."""
    y = np.log(OR)
    se = (np.log(HI) - np.log(LO)) / (2 * stats.norm.ppf(0.975))
    T = y.size
    H = np.hstack([np.zeros((T, 1)), np.eye(T)])
    sig = np.linspace(1e-7, 3.5, 4001)
    lp_sig = stats.halfnorm.logpdf(sig, scale=hn)
    tv = np.array(TIMES, float)
    d = np.abs(np.subtract.outer(tv, tv)) / 4.0

    def inner(r):
        R = r ** d if correlation == "ar1" else np.where(np.eye(T) > 0, 1.0, r)
        C = R * np.outer(se, se)
        Cx = np.full((sig.size, T + 1, T + 1), s0 ** 2)
        Cx[:, 1:, 1:] += sig[:, None, None] ** 2 * np.eye(T)
        S = H @ Cx @ H.T + C                                              # (N, T, T)
        Si = np.linalg.inv(S)
        K = Cx @ H.T @ Si
        m = K @ y                                                         # (N, T+1)
        V = Cx - K @ H @ Cx
        _, logdet = np.linalg.slogdet(S)
        ll = -0.5 * logdet - 0.5 * np.einsum("i,nij,j->n", y, Si, y) + lp_sig
        w = np.exp(ll - 30.0)                  # fixed offset: comparable across rho
        sd = np.sqrt(np.diagonal(V, axis1=1, axis2=2))
        p_pos = stats.norm.sf(0.0, m[:, 1:], sd[:, 1:])
        cols = np.column_stack([np.ones_like(sig), m, m ** 2 + sd ** 2, p_pos, sig, sig ** 2,
                                np.full_like(sig, r)])
        return stats.beta.pdf(r, a, b) * integrate.trapezoid(w[:, None] * cols, sig, axis=0)

    v, _ = integrate.quad_vec(inner, 0.0, 1.0, epsabs=0, epsrel=1e-10, limit=200)
    v = v / v[0]
    mean, second = v[1:T + 2], v[T + 2:2 * T + 3]
    return {"mean": mean, "sd": np.sqrt(second - mean ** 2), "p1": v[2 * T + 3:3 * T + 3],
            "sig_mean": v[3 * T + 3], "sig_sd": math.sqrt(v[3 * T + 4] - v[3 * T + 3] ** 2),
            "rho_mean": v[3 * T + 5]}


@pytest.mark.parametrize("correlation, prior", [
    ("exchangeable", "uniform"),
    pytest.param("ar1", "beta:2:2", marks=pytest.mark.slow),   # ~10 s each
])
def test_rho_prior_matches_independent_integration(correlation, prior):
    """Posterior mean and SD of mu and log OR_t, P(OR_t > 1), sigma_time's mean and SD and
    rho's mean: 2-D quadrature (Gauss-Jacobi over rho x sinh rule over sigma) vs the
    independent integration, QUADRATURE tier (abs 1e-6)."""
    rp = parse_rho_prior(prior)
    fit = fit_survival_published_exact(TIMES, OR, LO, HI, rho=rp, correlation=correlation,
                                       n_draws=10)
    ref = _reference(correlation, rp.a, rp.b)
    s = fit.summary
    labs = ["mu"] + [f"logOR[{t}]" for t in TIMES]
    pooled = fit.extra["survival_table"].query("kind == 'pooled'")
    got = np.concatenate([s.loc[labs, "mean"], s.loc[labs, "sd"], pooled["p_or_gt_1"],
                          [s.loc["sigma_time", "mean"], s.loc["sigma_time", "sd"],
                           s.loc["rho", "mean"]]])
    want = np.concatenate([ref["mean"], ref["sd"], ref["p1"],
                           [ref["sig_mean"], ref["sig_sd"], ref["rho_mean"]]])
    print(f"\nrho prior {prior} ({correlation}) vs independent: max abs error "
          f"{np.abs(got - want).max():.2e}")
    np.testing.assert_allclose(got, want, **QUADRATURE)
    assert "integrated out" in fit.notes[0] and "rho" in fit.priors


def test_fit_adapter_exact_at_any_level():
    """SurvivalExactFit: the exact CDF at the reported ends of a 80% interval is 0.1 and 0.9
    for every parameter (mu, sigma_time, rho, log_or[t], log_or_new[t]); to_frame has the
    schema with time filled from the coordinate."""
    from bayesmeta import results

    fit = as_fit(fit_survival_published_exact(TIMES, OR, LO, HI, rho="uniform", n_rho=8,
                                              n_draws=200))
    summ = fit.summary(0.8)
    assert Param("rho") in fit.params() and Param("log_or", time="8") in fit.params()
    for p, row in summ.iterrows():
        assert fit.prob(p, below=row["ci_low"]) == pytest.approx(0.1, abs=2e-6), str(p)
        assert fit.prob(p, below=row["ci_high"]) == pytest.approx(0.9, abs=2e-6), str(p)
        assert fit.prob(p, below=row["median"]) == pytest.approx(0.5, abs=2e-6), str(p)
    df = fit.to_frame(0.8)
    assert tuple(df.columns) == results.SCHEMA and set(df["level"]) == {0.8}
    assert set(df.loc[df["parameter"] == "log_or", "time"]) == {"4", "8", "12", "24"}
    eff = fit.effect(Param("log_or", time="8"))
    assert eff.prob(above=0.0) == pytest.approx(fit.prob(Param("log_or", time="8"), above=0.0),
                                                abs=1e-12)
    assert fit.draws(Param("log_or", time="8")).size == 200
    pred = fit.predictive("8")
    assert pred.cdf(0.0)[0] == pytest.approx(
        fit.prob(Param("log_or_new", time="8"), below=0.0), abs=1e-9)


def test_other_reading_is_the_mirror_under_a_symmetric_prior():
    """mu ~ N(0, 1.5) is symmetric about 0, so reading the ORs as odds of death (log OR
    negated) mirrors the posterior: P(benefit) -> 1 - P(benefit), OR median -> 1 / median."""
    main = fit_survival_published_exact(TIMES, OR, LO, HI, rho=0.6, n_draws=10)
    oth = other_reading(TIMES, OR, LO, HI, or_means="survival", rho=0.6)
    pooled = main.extra["survival_table"].query("kind == 'pooled'")
    np.testing.assert_allclose(oth["p_benefit"], 1 - pooled["p_or_gt_1"].to_numpy(),
                               atol=1e-10)
    np.testing.assert_allclose(oth["or_median"], 1 / pooled["or_median"].to_numpy(),
                               rtol=1e-9)
    assert set(oth["or_means"]) == {"death"}
    assert any("odds ratios of survival" in n for n in main.notes)


def test_empirical_set_puts_turner_mortality_on_tau_new():
    """The empirical set changes only tau_new (Turner 2015 Table IV, all-cause mortality):
    the pooled log ORs are identical to the weakly informative set (pooled ORs carry no
    information on tau_new), the new-trial predictive differs."""
    sets = published_prior_sets()
    emp = sets["empirical"]
    assert emp["tau_new"] == P.NAMED_PRIORS["turner2015-mortality-pharma"]
    assert emp["sigma_time"] == sets["weakly_informative"]["sigma_time"]
    a = fit_survival_published_exact(TIMES, OR, LO, HI, rho=0.6, n_draws=10,
                                     **prior_kwargs(emp))
    b = fit_survival_published_exact(TIMES, OR, LO, HI, rho=0.6, n_draws=10)
    labs = [f"logOR[{t}]" for t in TIMES]
    pd.testing.assert_frame_equal(a.summary.loc[labs], b.summary.loc[labs])
    assert not np.allclose(a.summary.loc["logOR_new[8]", "sd"], b.summary.loc["logOR_new[8]",
                                                                              "sd"])
    assert "Table IV" in a.priors["tau_new"]
    with pytest.raises(SpecError, match="unknown prior set"):
        published_prior_sets(["optimistic"])
