"""bayesmeta.absolute and bayesmeta.direction.

References: closed forms (OR/HR -> risk conversions with a point baseline, Beta quantiles from
scipy), a Monte Carlo simulation of the model written here (effect draws x independent baseline
draws), scipy.integrate.quad for the per-study random-effects likelihood and a dense-grid
posterior of the logit random-effects model (trapezoid over the study effect, not the adaptive
Gauss-Hermite rule of the library), and Altman's worked NNT example (Altman 1998 BMJ 317:1309,
Figure 1: ARR 10% with 95% CI -5% to 25% -> NNTB 10, CI NNTB 4 to infinity to NNTH 20) and
Barrowman (2002) CMAJ 166:1676 (ARR 16.6%, 0.9% to 32.2% -> NNT 6, CI 3.1 to 111.1).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

from bayesmeta.absolute import (NNT, BetaRisk, LogitMixtureRisk, _study_loglik,
                                absolute_effect, baseline_from_counts,
                                baseline_from_statement, require_baseline)
from bayesmeta.direction import Direction
from bayesmeta.exceptions import DataWarning, SpecError
from bayesmeta.mixture import EffectDistribution
from tests.tolerances import Z_MCSE

MIX = EffectDistribution.from_mixture([0.5, 0.8, 0.2], [0.25, 0.2, 0.4], [0.5, 0.3, 0.2])


def point_risk(p, events=None):
    return LogitMixtureRisk(np.array([special.logit(p)]), np.zeros(1), np.ones(1), events)


# ---- Direction -------------------------------------------------------------------------------
def test_direction_from_events_and_contradiction():
    assert Direction(events="deaths").better == "lower_is_better"
    assert Direction(events="survivors").sign == 1
    with pytest.raises(SpecError, match="contradicts"):
        Direction("higher_is_better", events="deaths")
    with pytest.raises(SpecError, match="needs better"):
        Direction()
    d = Direction("lower_is_better")
    assert d.prob_benefit([-1.0, 0.5, -0.2, 0.0]) == 0.5
    assert d.prob_beyond([-1.0, 0.5, -0.2], -0.5) == pytest.approx(1 / 3)


# ---- baseline from a statement ---------------------------------------------------------------
def test_events_over_n_is_jeffreys_beta():
    """'12/40' -> Beta(12.5, 28.5) (Jeffreys posterior: closed form)."""
    b = baseline_from_statement("12/40", events="deaths", source="trial X")
    assert (b.a, b.b) == (12.5, 28.5)
    lo, hi = b.quantile([0.025, 0.975])
    assert lo == pytest.approx(stats.beta.ppf(0.025, 12.5, 28.5), rel=1e-12)
    assert b.events == "deaths" and "Jeffreys" in b.how


def test_range_is_matched_exactly():
    """'0.80 (0.70-0.88)': the Beta's 2.5% and 97.5% quantiles (scipy) are 0.70 and 0.88."""
    b = baseline_from_statement("0.80 (0.70-0.88)", events="survivors")
    np.testing.assert_allclose(stats.beta.ppf([0.025, 0.975], b.a, b.b), [0.70, 0.88],
                               rtol=0, atol=1e-9)
    b90 = baseline_from_statement({"central": 0.5, "low": 0.4, "high": 0.6}, level=0.9)
    np.testing.assert_allclose(stats.beta.ppf([0.05, 0.95], b90.a, b90.b), [0.4, 0.6],
                               atol=1e-9)
    assert b90.a == pytest.approx(b90.b, rel=1e-8)       # symmetric range -> symmetric Beta
    with pytest.warns(DataWarning, match="median"):
        baseline_from_statement("0.75 (0.40-0.80)")


@pytest.mark.parametrize("value", ["0.35", 0.35, "0.9 (0.95-0.99)", "5/3", "abc"])
def test_statement_without_uncertainty_is_refused(value):
    with pytest.raises(SpecError) as e:
        baseline_from_statement(value, where="control_risk.12")
    msg = str(e.value)
    assert "\n" not in msg and "events/n" in msg and "control_risk.12" in msg


def test_require_baseline_one_line():
    with pytest.raises(SpecError) as e:
        require_baseline({"4": object()}, ["4", "8", "24"])
    msg = str(e.value)
    assert "\n" not in msg and "missing for 8, 24" in msg and "events/n" in msg
    with pytest.raises(SpecError, match="missing for 4"):
        require_baseline(None, [4])


# ---- the absolute effect: closed forms ---------------------------------------------------------
def test_point_baseline_closed_form_or():
    """p0 fixed, log OR ~ N(m, s²): P(RD > d) = 1 - Phi((logit(p0 + d) - logit p0 - m) / s),
    RD quantiles = expit(logit p0 + q_L) - p0; mean by scipy quad."""
    m, s, p0 = 0.7, 0.3, 0.4
    eff = EffectDistribution.from_mixture([m], [s], [1.0])
    dr = Direction(events="survivors")
    a = absolute_effect(eff, point_risk(p0, "survivors"), dr, mcid=0.1)
    qs = stats.norm.ppf([0.025, 0.5, 0.975], m, s)
    want = special.expit(special.logit(p0) + qs) - p0
    np.testing.assert_allclose([a.rd_low, a.rd_median, a.rd_high], want, atol=1e-9)
    p_mcid = stats.norm.sf(special.logit(p0 + 0.1) - special.logit(p0), m, s)
    assert a.p_mcid == pytest.approx(p_mcid, abs=1e-10)
    assert a.p_benefit == pytest.approx(stats.norm.sf(0, m, s), abs=1e-10)
    mean = integrate.quad(lambda x: (special.expit(special.logit(p0) + x) - p0)
                          * stats.norm.pdf(x, m, s), -np.inf, np.inf, epsabs=1e-13)[0]
    assert a.rd_mean == pytest.approx(mean, abs=1e-9)
    assert a.gain_median == a.rd_median and a.nnt.kind == "NNTB"
    assert a.nnt.value == pytest.approx(1 / want[1], rel=1e-8)


def test_point_baseline_closed_form_hr():
    """log HR ~ N(m, s²), cumulative risk of death p0: p1 = 1 - (1 - p0)^HR (proportional
    hazards); lower is better, gain = -(p1 - p0)."""
    m, s, p0 = -0.4, 0.2, 0.5
    eff = EffectDistribution.from_mixture([m], [s], [1.0])
    a = absolute_effect(eff, point_risk(p0, "deaths"), Direction(events="deaths"),
                        scale="logHR", mcid=0.05)
    qs = stats.norm.ppf([0.025, 0.5, 0.975], m, s)
    rd = 1 - (1 - p0) ** np.exp(qs) - p0
    np.testing.assert_allclose([a.rd_low, a.rd_median, a.rd_high], rd, atol=1e-9)
    np.testing.assert_allclose([a.gain_low, a.gain_median, a.gain_high], -rd[::-1], atol=1e-9)
    # P(gain > 0.05) = P(p1 < p0 - 0.05) = P(log HR < log(log(1 - p0 + 0.05) / log(1 - p0)))
    x = math.log(math.log(1 - p0 + 0.05) / math.log(1 - p0))
    assert a.p_mcid == pytest.approx(stats.norm.cdf(x, m, s), abs=1e-10)
    with pytest.raises(SpecError, match="hazard ratio"):
        absolute_effect(eff, point_risk(p0), Direction(events="survivors"), scale="logHR")


# ---- the absolute effect: Monte Carlo of the model -------------------------------------------
@pytest.mark.parametrize("baseline", [BetaRisk(40.0, 20.0, "survivors"),
                                      BetaRisk(0.5, 30.5, "survivors")])
def test_quadrature_matches_monte_carlo(baseline):
    """Quadrature (mixture CDF x Gauss-Jacobi over the Beta) vs a simulation of the model:
    L ~ 3-component mixture, p0 ~ Beta independent, RD = expit(logit p0 + L) - p0. The MC CDF
    at each reported quantile is the quantile's level within Z_MCSE x its binomial SE; P(RD >
    0) and P(RD > mcid) within Z_MCSE x SE; the mean within Z_MCSE x SD/sqrt(n)."""
    n = 2_000_000
    rng = np.random.default_rng(11)
    comp = rng.choice(3, size=n, p=MIX.W)
    L = MIX.M[comp] + MIX.S[comp] * rng.standard_normal(n)
    p0 = rng.beta(baseline.a, baseline.b, size=n)
    rd = special.expit(special.logit(p0) + L) - p0
    a = absolute_effect(MIX, baseline, Direction(events="survivors"), mcid=0.05)
    assert a.method == "quadrature"
    for q, v in ((0.025, a.rd_low), (0.5, a.rd_median), (0.975, a.rd_high)):
        assert abs(np.mean(rd <= v) - q) <= Z_MCSE * math.sqrt(q * (1 - q) / n)
    for p, mc in ((a.p_benefit, np.mean(rd > 0)), (a.p_mcid, np.mean(rd > 0.05))):
        assert abs(p - mc) <= Z_MCSE * math.sqrt(max(mc * (1 - mc), 1e-12) / n) + 1e-12
    assert abs(a.rd_mean - rd.mean()) <= Z_MCSE * rd.std() / math.sqrt(n)
    # the library's own Monte Carlo path agrees with its quadrature within MC error
    b = absolute_effect(MIX, baseline, Direction(events="survivors"), mcid=0.05,
                        method="monte-carlo", n_draws=400_000, seed=3)
    assert abs(b.p_mcid - a.p_mcid) <= Z_MCSE * math.sqrt(a.p_mcid * (1 - a.p_mcid) / 4e5)


def test_draws_effect_uses_each_draw():
    """A draws-based effect pairs every draw with independent baseline draws (tiled copies):
    with a point baseline the RD quantiles are those of the mapped draws exactly."""
    d = np.random.default_rng(2).normal(0.5, 0.3, 5000)
    a = absolute_effect(EffectDistribution.from_draws(d), point_risk(0.3),
                        Direction("higher_is_better"), n_draws=20_000)
    rd = special.expit(special.logit(0.3) + d) - 0.3
    assert a.rd_median == pytest.approx(np.quantile(np.tile(rd, 4), 0.5), abs=1e-12)
    assert a.p_benefit == pytest.approx(np.mean(d > 0), abs=1e-12)


# ---- direction: flip and re-expression ----------------------------------------------------------
@pytest.mark.parametrize("method", ["quadrature", "monte-carlo"])
def test_flipping_direction_maps_benefit_to_complement(method):
    """Same effect and baseline, direction flipped: P(benefit) -> 1 - P(benefit), the gain
    -> -gain (interval ends swap), the risk difference itself unchanged."""
    base = BetaRisk(30.0, 20.0)
    kw = dict(mcid=0.0, method=method, n_draws=200_000, seed=5)
    hi = absolute_effect(MIX, base, Direction("higher_is_better"), **kw)
    lo = absolute_effect(MIX, base, Direction("higher_is_better").flipped(), **kw)
    assert lo.p_benefit == pytest.approx(1 - hi.p_benefit, abs=1e-12)
    assert (lo.gain_median, lo.gain_low, lo.gain_high) == pytest.approx(
        (-hi.gain_median, -hi.gain_high, -hi.gain_low), abs=1e-12)
    assert (lo.rd_median, lo.rd_low, lo.rd_high) == (hi.rd_median, hi.rd_low, hi.rd_high)
    assert lo.nnt.kind == "NNTH" and hi.nnt.kind == "NNTB"


def test_reexpressed_reading_gives_same_answer():
    """Deaths with log OR L and control death risk p0 == survivors with -L and survival 1 - p0:
    identical gains and P(benefit); the event-scale RD changes sign."""
    death = absolute_effect(MIX.negated(), BetaRisk(20.0, 30.0, "deaths"),
                            Direction(events="deaths"), mcid=0.05)
    surv = absolute_effect(MIX, BetaRisk(30.0, 20.0, "survivors"),
                           Direction(events="survivors"), mcid=0.05)
    assert death.p_benefit == pytest.approx(surv.p_benefit, abs=1e-10)
    assert death.p_mcid == pytest.approx(surv.p_mcid, abs=1e-10)
    np.testing.assert_allclose([death.gain_low, death.gain_median, death.gain_high],
                               [surv.gain_low, surv.gain_median, surv.gain_high], atol=1e-9)
    assert death.rd_median == pytest.approx(-surv.rd_median, abs=1e-9)
    # a baseline stated for the other events is complemented automatically
    auto = absolute_effect(MIX.negated(), BetaRisk(30.0, 20.0, "survivors"),
                           Direction(events="deaths"), mcid=0.05)
    assert auto.gain_median == pytest.approx(death.gain_median, abs=1e-12)
    assert auto.notes and "complemented" in auto.notes[0]


# ---- NNT in Altman's form -----------------------------------------------------------------------
def test_nnt_altman_worked_example():
    """Altman 1998, Fig. 1: ARR 10% (95% CI -5% to 25%) -> NNTB 10 (NNTB 4 to inf to NNTH 20)."""
    n = NNT(0.10, -0.05, 0.25, 0.95)
    assert (n.kind, n.value) == ("NNTB", pytest.approx(10.0))
    assert n.first == ("NNTB", pytest.approx(4.0)) and n.second == ("NNTH", pytest.approx(20.0))
    assert n.through_infinity


def test_nnt_significant_and_harm():
    """Barrowman 2002 CMAJ: ARR 16.6% (0.9% to 32.2%) -> NNT 6.0, CI 3.1 to 111.1 (printed to
    one decimal); and the mirror image is NNTH throughout."""
    n = NNT(0.166, 0.009, 0.322, 0.95)
    assert not n.through_infinity and n.kind == "NNTB"
    assert round(n.first[1], 1) == 3.1 and round(n.second[1], 1) == 111.1
    assert round(n.value, 1) == 6.0
    h = NNT(-0.166, -0.322, -0.009, 0.95)
    assert h.kind == "NNTH" and h.first == ("NNTH", pytest.approx(1 / 0.009))
    assert h.second == ("NNTH", pytest.approx(1 / 0.322)) and not h.through_infinity
    assert NNT(0.0, -0.1, 0.1, 0.95).value == math.inf


# ---- baseline from study-level counts -------------------------------------------------------
@pytest.mark.parametrize("x, n, alpha, sigma", [(3, 20, -1.0, 0.05), (3, 20, -1.0, 0.8),
                                                (45, 60, 0.5, 2.5), (0, 15, -2.0, 1.0),
                                                (150, 400, -0.3, 0.3)])
def test_study_marginal_likelihood_vs_quad(x, n, alpha, sigma):
    """log ∫ Bin(x; n, expit eta) N(eta; alpha, sigma²) d eta: adaptive Gauss-Hermite vs scipy
    quad (to 1e-9 absolute on the log scale)."""
    f = lambda e: stats.binom.pmf(x, n, special.expit(e)) * stats.norm.pdf(e, alpha, sigma)
    ref = math.log(integrate.quad(f, alpha - 12 * sigma, alpha + 12 * sigma,
                                  epsabs=0, epsrel=1e-12, limit=400,
                                  points=[special.logit((x + 0.5) / (n + 1))])[0])
    got = _study_loglik(np.array([float(x)]), np.array([float(n)]), np.array([alpha]), sigma)
    assert got[0, 0] == pytest.approx(ref, abs=1e-9)


def _dense_reference(x, n):
    """Posterior of (alpha, sigma) on a dense grid (alpha ~ N(0, 2), sigma ~ HN(1)); each
    study's effect eta = alpha + sigma z integrated by the trapezoid rule over 801 points of
    z in (-8, 8) (independent of the library's adaptive Gauss-Hermite rule); the outer
    integrals by the trapezoid rule too."""
    a = np.linspace(-4.0, 2.0, 161)
    s = np.linspace(0.0, 4.5, 121)
    z = np.linspace(-8.0, 8.0, 801)
    phi = stats.norm.pdf(z)
    ll = np.zeros((a.size, s.size))
    for j, sg in enumerate(s):
        eta = a[:, None] + sg * z[None, :]                                      # (A, Z)
        lb = (x[:, None, None] * special.log_expit(eta)[None]
              + (n - x)[:, None, None] * special.log_expit(-eta)[None])         # (k, A, Z)
        integ = integrate.trapezoid(np.exp(lb) * phi, z, axis=-1)               # (k, A)
        ll[:, j] = np.log(np.maximum(integ, 1e-300)).sum(0)
    lp = ll + stats.norm.logpdf(a, 0, 2)[:, None] + stats.halfnorm.logpdf(s, scale=1)[None]
    w = np.exp(lp - lp.max())
    w *= np.outer(np.r_[0.5, np.ones(a.size - 2), 0.5], np.r_[0.5, np.ones(s.size - 2), 0.5])
    w /= w.sum()
    return a, s, w


def test_baseline_from_counts_vs_dense_grid():
    """Posterior mean and SD of alpha and sigma, and the mean typical and predictive control
    risk, vs the dense-grid reference (abs 1e-3: the reference grid's resolution)."""
    x = np.array([8.0, 15.0, 5.0, 22.0])
    n = np.array([30.0, 40.0, 25.0, 50.0])
    df = pd.DataFrame({"study": list("ABCD"), "time": 12, "ci": x, "n2i": n})
    typ = baseline_from_counts(df, which="typical", events="deaths")["12"]
    pred = baseline_from_counts(df, events="deaths")["12"]
    a, s, w = _dense_reference(x, n)
    wa, ws = w.sum(1), w.sum(0)
    ref = {"alpha_mean": wa @ a, "alpha_sd": math.sqrt(wa @ a ** 2 - (wa @ a) ** 2),
           "sigma_mean": ws @ s, "sigma_sd": math.sqrt(ws @ s ** 2 - (ws @ s) ** 2),
           "typ": wa @ special.expit(a)}
    z, gw = np.polynomial.hermite_e.hermegauss(40)
    gw = gw / gw.sum()
    ref["pred"] = float(np.einsum("as,asz,z->", w,
                                  special.expit(a[:, None, None] + s[None, :, None] * z), gw))
    from bayesmeta import priors as P
    from bayesmeta.absolute import _logit_re_posterior
    ag, sg, W = _logit_re_posterior(x, n, P.Normal(0, 2), P.HalfNormal(1))
    am, sm = W.sum(1), W.sum(0)
    got = {"alpha_mean": am @ ag, "alpha_sd": math.sqrt(am @ ag ** 2 - (am @ ag) ** 2),
           "sigma_mean": sm @ sg, "sigma_sd": math.sqrt(sm @ sg ** 2 - (sm @ sg) ** 2),
           "typ": typ.summary()["mean"], "pred": pred.summary()["mean"]}
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-3), k
    # the predictive spread is wider than the typical study's
    assert pred.summary()["high"] - pred.summary()["low"] > \
        typ.summary()["high"] - typ.summary()["low"]
    assert typ.events == "deaths"


def test_counts_baseline_with_absolute_effect():
    """The counts baseline feeds absolute_effect (quadrature) and agrees with the Monte Carlo
    path within MC error."""
    df = pd.DataFrame({"study": list("ABC"), "time": 4, "ci": [5, 9, 4], "n2i": [30, 35, 20]})
    base = baseline_from_counts(df)["4"]
    eff = MIX.negated()
    a = absolute_effect(eff, base, Direction(events="deaths"), mcid=0.05)
    b = absolute_effect(eff, base, Direction(events="deaths"), mcid=0.05,
                        method="monte-carlo", n_draws=400_000, seed=9)
    assert abs(a.p_mcid - b.p_mcid) <= Z_MCSE * math.sqrt(a.p_mcid * (1 - a.p_mcid) / 4e5)
    assert a.p_benefit == pytest.approx(MIX.prob(above=0.0), abs=1e-9)
