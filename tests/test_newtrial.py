"""bayesmeta.newtrial: predictive, assurance and tipping point from one predictive distribution.

References: a Monte Carlo simulation of the model written here (theta from its posterior
mixture, tau_new ~ HalfNormal from scipy - not the library's quadrature grid -, theta_new =
theta + tau z, y_new = theta_new + se e; the updated posterior by importance weights
N(y; theta, tau² + se²)), the closed-form normal update for a single normal component with
fixed tau, and the Woolf variance of a log odds ratio.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from bayesmeta import priors as P
from bayesmeta.direction import Direction
from bayesmeta.exact import FixedTau
from bayesmeta.mixture import EffectDistribution
from bayesmeta.newtrial import (Predictive, assurance, new_trial, tipping_point, trial_se,
                                updated_prob_benefit)
from tests.tolerances import Z_MCSE

EFF = EffectDistribution.from_mixture([0.7, 0.5], [0.25, 0.3], [0.6, 0.4])
SE = 0.2
UP = Direction("higher_is_better")
N_MC = 2_000_000


@pytest.fixture(scope="module")
def sim():
    """Joint draws of the model with tau_new ~ HalfNormal(0.5) (scipy)."""
    rng = np.random.default_rng(2024)
    k = rng.choice(2, size=N_MC, p=EFF.W)
    th = EFF.M[k] + EFF.S[k] * rng.standard_normal(N_MC)
    tau = stats.halfnorm.rvs(scale=0.5, size=N_MC, random_state=rng)
    tn = th + tau * rng.standard_normal(N_MC)
    return {"theta": th, "tau": tau, "theta_new": tn, "y": tn + SE * rng.standard_normal(N_MC)}


@pytest.fixture(scope="module")
def pred():
    return Predictive.from_effect(EFF, P.HalfNormal(0.5))


def _is_updated(sim, y, se=SE):
    """P(theta > 0 | y_new = y) by importance weights, and its delta-method SE."""
    v = sim["tau"] ** 2 + se ** 2
    w = np.exp(-0.5 * (y - sim["theta"]) ** 2 / v) / np.sqrt(v)
    ind = sim["theta"] > 0
    p = float((w * ind).sum() / w.sum())
    return p, float(np.sqrt((w ** 2 * (ind - p) ** 2).sum()) / w.sum())


def test_trial_se_is_woolf():
    """n = 200 per arm, p0 = 0.35, log OR 0.7: expected cells give the Woolf variance."""
    p1 = special.expit(special.logit(0.35) + 0.7)
    want = math.sqrt(1 / (200 * p1) + 1 / (200 * (1 - p1)) + 1 / (200 * 0.35)
                     + 1 / (200 * 0.65))
    assert trial_se(200, 0.35, 0.7) == pytest.approx(want, rel=1e-12)


def test_predictive_quantiles_vs_monte_carlo(sim, pred):
    """Quantiles of theta_new and y_new: the simulated CDF at each is its level within
    Z_MCSE binomial SEs."""
    for se, key in ((0.0, "theta_new"), (SE, "y")):
        for q, v in zip((0.025, 0.5, 0.975), pred.quantile([0.025, 0.5, 0.975], se)):
            assert abs(np.mean(sim[key] <= v) - q) <= Z_MCSE * math.sqrt(q * (1 - q) / N_MC)


def test_assurance_vs_monte_carlo(sim, pred):
    """P(y_new > 1.96 se) from the mixture vs the share of simulated trials."""
    a = assurance(pred, SE, UP)
    mc = np.mean(sim["y"] > stats.norm.ppf(0.975) * SE)
    assert abs(a - mc) <= Z_MCSE * math.sqrt(mc * (1 - mc) / N_MC)
    # lower is better with the effect negated: the same assurance
    neg = Predictive(-pred.M, pred.S, pred.T, pred.W)
    assert assurance(neg, SE, Direction("lower_is_better")) == pytest.approx(a, abs=1e-12)


@pytest.mark.parametrize("y", [math.log(0.59), -1.0, -2.0, 0.3])
def test_updated_probability_vs_importance_weights(sim, pred, y):
    """Updated P(theta > 0 | data, y_new) (conjugate update per component over the tau grid)
    vs importance-weighted simulation, within Z_MCSE delta-method SEs."""
    got = updated_prob_benefit(pred, y, SE, UP)
    p, se = _is_updated(sim, y)
    assert abs(got - p) <= Z_MCSE * se


def test_tipping_point_closed_form_fixed_tau():
    """One normal component N(m, s²), tau fixed: the update is normal with mean
    m + s²/(s² + tau² + se²) (y - m), so P(theta > 0 | y) = 1/2 at y* = -m (tau² + se²)/s²."""
    m, s, tau = 0.7, 0.25, 0.3
    pr = Predictive.from_effect(EffectDistribution.from_mixture([m], [s], [1.0]),
                                FixedTau(tau))
    tp = tipping_point(pr, SE, UP)
    assert tp["found"]
    assert tp["y"] == pytest.approx(-m * (tau ** 2 + SE ** 2) / s ** 2, abs=1e-9)
    # beyond = P(y_new < y*) under y_new ~ N(m, s² + tau² + se²)
    assert tp["p_beyond"] == pytest.approx(
        stats.norm.cdf(tp["y"], m, math.sqrt(s ** 2 + tau ** 2 + SE ** 2)), rel=1e-9)
    assert tp["p_current"] == pytest.approx(stats.norm.sf(0, m, s), abs=1e-12)
    # another target: P = 0.8 at m_post = 0.8416 sd_post (closed form)
    v = s ** 2 + tau ** 2 + SE ** 2
    sd_post = math.sqrt(s ** 2 - s ** 4 / v)
    y8 = m + (stats.norm.ppf(0.8) * sd_post - m) * v / s ** 2
    assert tipping_point(pr, SE, UP, target=0.8)["y"] == pytest.approx(y8, abs=1e-9)


def test_tipping_point_not_reached_under_uncertain_tau(sim, pred):
    """With tau_new ~ HalfNormal(0.5) an extreme trial is explained as heterogeneity: the
    updated P(theta > 0) never reaches 1/2 here (found False), and the simulation agrees that
    it stays above 1/2 at the extreme scanned estimates."""
    tp = tipping_point(pred, SE, UP)
    assert not tp["found"] and math.isnan(tp["y"])
    assert tp["p_extreme"] > 0.5
    for y in (tp["y_extreme"], -3.0):
        p, se = _is_updated(sim, y)
        assert p - Z_MCSE * se > 0.5


def test_new_trial_row_uses_one_distribution(pred):
    """new_trial: its SE is trial_se at the given control risk and effect, its assurance and
    tipping point are those of the same Predictive, and its P(beyond) is that predictive's
    CDF at the tipping point (fixed tau so that a tipping point exists)."""
    pr = Predictive.from_effect(EFF, FixedTau(0.2))
    nt = new_trial(pr, UP, n_per_arm=150, control_risk=0.4, effect_for_se=0.6)
    se = trial_se(150, 0.4, 0.6)
    assert nt.se == pytest.approx(se, rel=1e-12)
    assert nt.assurance == pytest.approx(assurance(pr, se, UP), abs=1e-15)
    tp = tipping_point(pr, se, UP)
    assert nt.tipping_found and nt.tipping_y == pytest.approx(tp["y"], abs=1e-12)
    assert nt.p_beyond_tipping == pytest.approx(float(pr.cdf(tp["y"], se)[0]), abs=1e-12)
    assert updated_prob_benefit(pr, nt.tipping_y, se, UP) == pytest.approx(0.5, abs=1e-9)
    # the other reading (events complemented: log OR negated, control risk 1 - 0.4, lower is
    # better): the mirrored tipping point
    neg = Predictive(-pr.M, pr.S, pr.T, pr.W)
    nn = new_trial(neg, Direction("lower_is_better"), n_per_arm=150, control_risk=0.6,
                   effect_for_se=-0.6)
    assert nn.tipping_y == pytest.approx(-nt.tipping_y, abs=1e-9)
    assert nn.p_beyond_tipping == pytest.approx(nt.p_beyond_tipping, abs=1e-9)
    assert nn.p_benefit_current == pytest.approx(nt.p_benefit_current, abs=1e-12)


def test_joint_draws_predictive():
    """Draws with their own tau (counts model): S = 0 components; updated probability is the
    importance-weighted share, computed here directly."""
    rng = np.random.default_rng(5)
    th, tau = rng.normal(0.6, 0.3, 4000), np.abs(rng.normal(0, 0.4, 4000))
    pr = Predictive.from_effect(EffectDistribution.from_draws(th), tau_draws=tau)
    v = tau ** 2 + SE ** 2
    w = np.exp(-0.5 * (-0.8 - th) ** 2 / v) / np.sqrt(v)
    assert updated_prob_benefit(pr, -0.8, SE, UP) == pytest.approx(
        (w * (th > 0)).sum() / w.sum(), rel=1e-10)
    with pytest.raises(Exception, match="pair one-to-one"):
        Predictive.from_effect(EffectDistribution.from_draws(th), tau_draws=tau[:10])
