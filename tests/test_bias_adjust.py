"""bayesmeta.bias_adjust and the pooled-bias option of the exact survival engine.

References: Wood et al. (2008) BMJ 336:601 abstract (ratios of odds ratios with 95% CIs:
lack of blinding, objective outcomes 1.01 (0.92-1.10), subjective 0.75 (0.61-0.93)), closed-form
additive adjustment (Turner et al. 2009: y - mean, v + sd²) and the closed-form Gaussian
posterior of the published-OR model with sigma_time fixed (Kalman update written here).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayesmeta.bias_adjust import (DESIGN_BIAS, BiasPrior, PooledBias, adjust_studies,
                                   design_bias, design_columns, parse_design,
                                   sensitivity_settings)
from bayesmeta.direction import Direction
from bayesmeta.exceptions import DataError, SpecError

Z = stats.norm.ppf(0.975)


def test_wood_2008_numbers():
    """mean = -log ROR, SD = (log hi - log lo) / (2 x 1.96) from the printed CIs."""
    ob = DESIGN_BIAS["not_blinded"]["objective"]
    assert ob.mean == pytest.approx(-math.log(1.01), rel=1e-12)
    assert ob.sd == pytest.approx((math.log(1.10) - math.log(0.92)) / (2 * Z), rel=1e-9)
    sb = DESIGN_BIAS["not_blinded"]["subjective"]
    assert sb.mean == pytest.approx(0.2876820724517809, rel=1e-12)    # -log 0.75
    assert sb.sd == pytest.approx((math.log(0.93) - math.log(0.61)) / (2 * Z), rel=1e-9)
    assert "Wood" in ob.source and "Odgaard-Jensen" in DESIGN_BIAS["non_randomised"].source


def test_design_bias_adds_parts():
    nr = DESIGN_BIAS["non_randomised"]
    ob = DESIGN_BIAS["not_blinded"]["objective"]
    both = design_bias(False, False)
    assert both.mean == pytest.approx(nr.mean + ob.mean)
    assert both.sd == pytest.approx(math.hypot(nr.sd, ob.sd))
    assert design_bias(True, True).sd == 0 and design_bias(True, True).mean == 0
    assert design_bias(False, True, nrs_sd=0.3).sd == 0.3
    with pytest.raises(SpecError, match="outcome_type"):
        design_bias(True, False, "surrogate")


def test_adjust_studies_closed_form():
    """Benefit = lower log OR (deaths): y_adj = y + mean (the exaggeration is removed toward
    harm), v_adj = v + sd²; randomised blinded studies unchanged."""
    y = np.array([-0.5, -0.3, -0.8])
    v = np.array([0.04, 0.09, 0.16])
    out = adjust_studies(y, v, ["RCT", "cohort", "randomised"], ["blinded", "open", None],
                         Direction(events="deaths"))
    nr, ob = DESIGN_BIAS["non_randomised"], DESIGN_BIAS["not_blinded"]["objective"]
    b1 = nr + ob
    np.testing.assert_allclose(out.yi, [-0.5, -0.3 + b1.mean, -0.8 + ob.mean], rtol=1e-12)
    np.testing.assert_allclose(out.vi, [0.04, 0.09 + b1.sd ** 2, 0.16 + ob.sd ** 2],
                               rtol=1e-12)
    assert out.n_adjusted == 2 and len(out.notes) == 3
    up = adjust_studies(-y, v, ["RCT", "cohort", "randomised"], ["blinded", "open", None],
                        Direction("higher_is_better"))
    np.testing.assert_allclose(up.yi, -out.yi, rtol=1e-12)


def test_parse_design_errors_name_the_row():
    assert parse_design("Non-randomised", "double-blind") == (False, True)
    with pytest.raises(DataError, match="row 3.*randomised"):
        parse_design("quasi", None, row=3)
    with pytest.raises(DataError, match="blinded"):
        parse_design("RCT", "maybe")
    with pytest.raises(DataError, match="'randomised' column"):
        design_columns(pd.DataFrame({"study": ["a"]}))


def test_pooled_bias_apply_and_settings():
    y = np.array([0.9, 0.7])
    C = np.array([[0.04, 0.01], [0.01, 0.05]])
    b = PooledBias.exaggeration(1.2, 0.3)
    ya, Ca = b.apply(y, C, Direction("higher_is_better"))
    np.testing.assert_allclose(ya, y - math.log(1.2), rtol=1e-12)
    np.testing.assert_allclose(Ca, C + 0.09, rtol=1e-12)
    s = sensitivity_settings()
    assert list(s) == ["none", "bias sd 0.3", "bias sd 0.5", "exaggeration x1.2"]
    assert not s["none"].active and s["bias sd 0.5"].sd == 0.5
    with pytest.raises(SpecError):
        BiasPrior(0.0, -1.0)


def _gls_posterior(y, C, sig, s0=1.5):
    """theta = mu 1 + sig z (exchangeable), mu ~ N(0, s0²), y ~ N(theta, C): Kalman update of
    x = (mu, theta) -> posterior means and SDs of theta."""
    T = y.size
    Cx = np.full((T + 1, T + 1), s0 ** 2)
    Cx[1:, 1:] += sig ** 2 * np.eye(T)
    H = np.hstack([np.zeros((T, 1)), np.eye(T)])
    S = H @ Cx @ H.T + C
    K = Cx @ H.T @ np.linalg.inv(S)
    m = K @ y
    V = Cx - K @ H @ Cx
    return m[1:], np.sqrt(np.diag(V)[1:])


def test_engine_bias_matches_closed_form():
    """Exact survival engine with sigma_time fixed (a point mass) and a pooled bias: the
    posterior of log OR_t is the closed-form Gaussian with y - mean and C + sd² 11'; P(OR_t >
    1) = Phi(mean/sd)."""
    from bayesmeta.exact import FixedTau
    from bayesmeta.survival_exact import fit_survival_published_exact

    times, orr = [4, 8, 12, 24], [4.12, 2.47, 2.21, 1.71]
    lo, hi = [0.52, 1.38, 1.31, 0.92], [32.53, 4.43, 3.74, 3.19]
    b = PooledBias.exaggeration(1.2, 0.4)
    fit = fit_survival_published_exact(times, orr, lo, hi, rho=0.5, bias=b,
                                       sigma_prior=FixedTau(0.2), n_draws=10)
    y = np.log(orr)
    se = (np.log(hi) - np.log(lo)) / (2 * Z)
    R = np.full((4, 4), 0.5)
    np.fill_diagonal(R, 1.0)
    m, s = _gls_posterior(y - math.log(1.2), R * np.outer(se, se) + 0.16, 0.2)
    labs = [f"logOR[{t}]" for t in times]
    np.testing.assert_allclose(fit.summary.loc[labs, "mean"], m, atol=1e-10)
    np.testing.assert_allclose(fit.summary.loc[labs, "sd"], s, atol=1e-10)
    pooled = fit.extra["survival_table"].query("kind == 'pooled'")
    np.testing.assert_allclose(pooled["p_or_gt_1"], stats.norm.cdf(m / s), atol=1e-10)
    assert any("Bias-adjusted" in n for n in fit.notes)
