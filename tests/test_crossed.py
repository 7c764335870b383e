"""bayesmeta.crossed: an effect mixture crossed with a tau grid, without the K x J components,
and the fast paths that use it (new trial, absolute effects, survival summaries).

References (all written here, none calls the code under test): the direct sums that define
the quantities - the crossed mixture ``sum_kj W_k w_j N(M_k, S_k² + T_j² + se²)`` summed over
every (k, j), its quantiles by bisection on that sum, the conjugate update after a new trial
summed over every (k, j) with no pruning -, closed-form mixture moments, bisection on the same
CDFs for the Newton root finders, and per-component Gauss-Hermite for the mean risk
difference. The posterior mixtures are those of the bundled survival model's engine
(2023 paper's ORs) with few rho nodes, so that the direct sums stay quick.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from bayesmeta import absolute as A
from bayesmeta import priors as P
from bayesmeta.crossed import CrossedMixture, DensityQuadrature, TiltQuadrature
from bayesmeta.direction import Direction
from bayesmeta.fits import Param
from bayesmeta.mixture import EffectDistribution
from bayesmeta.newtrial import Predictive, new_trial, tipping_point, tau_nodes
from bayesmeta.survival_exact import fit_survival_published_exact
from bayesmeta.survival_fit import as_fit
from tests.tolerances import CROSSED_CDF, CROSSED_Q, TILT

TIMES = [4, 8, 12, 24]
OR = [4.12, 2.47, 2.21, 1.71]
LO = [0.52, 1.38, 1.31, 0.92]
HI = [32.53, 4.43, 3.74, 3.19]
UP = Direction("higher_is_better")


@pytest.fixture(scope="module")
def fit():
    """AR(1), rho ~ uniform on 4 Gauss-Jacobi nodes: ~500 effect components per time."""
    return as_fit(fit_survival_published_exact(TIMES, OR, LO, HI, rho="uniform",
                                               correlation="ar1", n_rho=4, n_draws=10))


@pytest.fixture(scope="module")
def parts(fit):
    eff = fit.effect(Param("log_or", time="4"))
    T, w = tau_nodes(P.HalfNormal(0.5))
    return eff, T, w


def direct_cdf_pdf(x, M, S, W, T, w, se):
    """The crossed mixture's CDF and density by the K x J sum."""
    sd = np.sqrt(S[:, None] ** 2 + T[None, :] ** 2 + se ** 2)
    wkj = W[:, None] * w[None, :]
    F = np.array([(special.ndtr((v - M[:, None]) / sd) * wkj).sum() for v in x])
    f = np.array([(np.exp(-0.5 * ((v - M[:, None]) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
                   * wkj).sum() for v in x])
    return F, f


def direct_quantile(q, M, S, W, T, w, se):
    lo, hi = -50.0, 50.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if direct_cdf_pdf([mid], M, S, W, T, w, se)[0][0] < q else (lo, mid)
    return 0.5 * (lo + hi)


def direct_update(ys, x, M, S, W, T, w, se):
    """P(theta <= x | y) by the conjugate update of every (k, j) component, no pruning."""
    Mc, Sc = np.repeat(M, T.size), np.repeat(S, T.size)
    Tc, Wc = np.tile(T, M.size), (W[:, None] * w[None, :]).ravel()
    v = Sc ** 2 + Tc ** 2 + se ** 2
    k = Sc ** 2 / v
    s = np.sqrt(Sc ** 2 * (1 - k))
    out = []
    for y in ys:
        lw = np.log(Wc) - 0.5 * np.log(v) - 0.5 * (y - Mc) ** 2 / v
        ww = np.exp(lw - lw.max())
        out.append((special.ndtr((x - (Mc + k * (y - Mc))) / s) * ww).sum() / ww.sum())
    return np.array(out)


@pytest.mark.parametrize("se", [0.0, 0.3])
def test_table_cdf_density_and_quantiles_match_the_direct_sum(parts, se):
    """H table vs the K x J sum: CDF within 1e-8 everywhere it is not 0 or 1, density within
    1e-6 relative to its peak, quantiles (2.5%, 50%, 97.5%) within 1e-7 relative."""
    eff, T, w = parts
    mix = CrossedMixture(eff.M, eff.S, eff.W, T, w, se)
    assert not mix.exact and mix.M.size * mix.T.size > 40_000
    xs = np.linspace(-3.0, 4.5, 41)
    F, f = mix.cdf_pdf(xs)
    Fd, fd = direct_cdf_pdf(xs, eff.M, eff.S, eff.W, T, w, se)
    np.testing.assert_allclose(F, Fd, **CROSSED_CDF)
    np.testing.assert_allclose(f, fd, rtol=0, atol=1e-6 * fd.max())
    qs = [0.025, 0.5, 0.975]
    want = [direct_quantile(q, eff.M, eff.S, eff.W, T, w, se) for q in qs]
    np.testing.assert_allclose(mix.quantile(qs), want, **CROSSED_Q)
    # the moments are those of the components
    var = eff.W @ (eff.S ** 2 + eff.M ** 2) - (eff.W @ eff.M) ** 2 + w @ T ** 2 + se ** 2
    assert mix.mean() == pytest.approx(float(eff.W @ eff.M), rel=1e-12)
    assert mix.var() == pytest.approx(float(var), rel=1e-12)


def test_table_stays_right_after_another_mixture_widens_it(parts):
    """Mixtures share one table per tau grid; a later mixture with much smaller and larger
    SDs makes it grow, and an earlier mixture reads the same numbers as before (every table
    entry depends on its grid point only), which are the direct sum's."""
    eff, T, w = parts
    a = CrossedMixture(eff.M, eff.S, eff.W, T, w, 0.0)
    before = a.cdf(np.array([0.0, 0.7, 1.5]))
    CrossedMixture(eff.M, eff.S * 1e-2, eff.W, T, w, 0.0).cdf(np.array([0.5]))
    CrossedMixture(eff.M, eff.S * 30.0, eff.W, T, w, 0.0).cdf(np.array([0.5]))
    after = a.cdf(np.array([0.0, 0.7, 1.5]))
    np.testing.assert_array_equal(after, before)
    Fd, _ = direct_cdf_pdf([0.0, 0.7, 1.5], eff.M, eff.S, eff.W, T, w, 0.0)
    np.testing.assert_allclose(after, Fd, **CROSSED_CDF)


def test_tilt_quadrature_matches_the_direct_conjugate_update(parts):
    """The theta quadrature of P(theta <= 0 | y) equals the K x J conjugate-update sum from
    the predictive median to 40 predictive SDs toward harm, with the interpolated kernel
    (1e-9) and with the kernel summed exactly (1e-12); cells built for a smaller se serve a
    larger one."""
    eff, T, w = parts
    se = 0.4
    ys = 0.7 - 0.9 * np.r_[0.0:40.0:0.5]
    tq = TiltQuadrature(eff.M, eff.S, eff.W, T, w, se / 2.5, 0.0, ys.min(), ys.max())
    want = direct_update(ys, 0.0, eff.M, eff.S, eff.W, T, w, se)
    np.testing.assert_allclose(tq.cdf(ys, se), want, **TILT)
    np.testing.assert_allclose(tq.cdf(ys[::8], se, exact_kernel=True), want[::8], rtol=0,
                               atol=1e-12)
    with pytest.raises(ValueError):
        tq.cdf(ys, se / 3.0)                      # finer than the cells were built for


def test_density_quadrature_moments_and_logistic_mean(parts):
    """E[theta], E[theta²] of the mixture in closed form (1e-13), E[expit(a + theta)] by
    48-point Gauss-Hermite per component (1e-12)."""
    eff, _, _ = parts
    dq = DensityQuadrature(eff.M, eff.S, eff.W)
    assert dq.expect(lambda x: x) == pytest.approx(float(eff.W @ eff.M), abs=1e-13)
    m2 = float(eff.W @ (eff.S ** 2 + eff.M ** 2))
    assert dq.expect(lambda x: x * x) == pytest.approx(m2, abs=1e-13)
    z, gw = np.polynomial.hermite_e.hermegauss(48)
    gw = gw / gw.sum()
    want = float(eff.W @ (special.expit(0.4 + eff.M[:, None] + eff.S[:, None] * z) @ gw))
    assert dq.expect(lambda x: special.expit(0.4 + x)) == pytest.approx(want, abs=1e-12)


def _flat(pred):
    """The same predictive as its K x J components (no factors: the direct paths)."""
    return Predictive(pred.M, pred.S, pred.T, pred.W, pred.source)


@pytest.fixture(scope="module")
def small_effect():
    """rho fixed: ~125 components (the fast paths are forced below, so that the direct
    K x J sums they are compared with stay quick)."""
    f = as_fit(fit_survival_published_exact(TIMES, OR, LO, HI, rho=0.6, correlation="ar1",
                                            n_draws=10))
    return f.effect(Param("log_or", time="4"))


@pytest.mark.parametrize("tau", [P.HalfNormal(0.5), P.HalfNormal(0.05)])
def test_new_trial_fast_paths_match_the_direct_components(small_effect, tau, monkeypatch):
    """new_trial through the crossed factors vs the same predictive as K x J components
    (direct sums): intervals within 1e-6 relative, probabilities within 1e-8, the tipping
    point's found/not decision identical and its extreme P within 1e-9 (HalfNormal(0.5): no
    tipping point; HalfNormal(0.05): found, y* within 1e-8)."""
    import bayesmeta.crossed as C
    import bayesmeta.newtrial as NT

    monkeypatch.setattr(NT, "EXACT_MAX", 100)
    monkeypatch.setattr(C, "EXACT_MAX", 100)
    pred = Predictive.from_effect(small_effect, tau)
    assert pred.factors is not None and pred._fast()
    flat = _flat(pred)
    kw = dict(n_per_arm=100, control_risk=0.6, effect_for_se=0.7)
    a, b = new_trial(pred, UP, **kw), new_trial(flat, UP, **kw)
    for k in ("theta_new_low", "theta_new_median", "theta_new_high", "y_new_low",
              "y_new_median", "y_new_high"):
        assert getattr(a, k) == pytest.approx(getattr(b, k), rel=CROSSED_Q["rtol"],
                                              abs=CROSSED_Q["atol"]), k
    for k in ("p_benefit_new", "assurance", "p_benefit_current"):
        assert getattr(a, k) == pytest.approx(getattr(b, k), abs=1e-8), k
    assert a.tipping_found == b.tipping_found == (tau.scale < 0.1)
    assert a.p_benefit_extreme == pytest.approx(b.p_benefit_extreme, abs=1e-9)
    if a.tipping_found:
        assert a.tipping_y == pytest.approx(b.tipping_y, abs=1e-8)
        assert a.p_beyond_tipping == pytest.approx(b.p_beyond_tipping, abs=1e-8)


def test_tipping_point_cells_are_reused_across_trial_sizes(parts):
    """Trials of 50, 100, 200 per arm (se falling by up to 2): one set of theta cells."""
    eff, _, _ = parts
    pred = Predictive.from_effect(eff, P.HalfNormal(0.5))
    tps = [tipping_point(pred, se, UP) for se in (0.56, 0.40, 0.28)]
    built = [v for k, v in pred._cache.items() if k[0] == "tilt"]
    assert len(built) == 1 and built[0].se_cells <= 0.28
    assert all(not tp["found"] for tp in tps)


def test_absolute_newton_and_cells_match_bisection_and_gauss_hermite(fit):
    """Risk-difference quantiles by Newton equal bisection on the same CDF (1e-13); the mean
    by Gauss-Legendre cells equals per-component 40-point Gauss-Hermite (1e-12)."""
    eff = fit.effect(Param("log_or", time="12"))
    base = A.baseline_from_statement("0.63 (0.48-0.76)", events="survivors", source="test")
    ae = A.absolute_effect(eff, base, Direction("higher_is_better", events="survivors"),
                           mcid=0.1, level=0.9)
    p, w = base.nodes()
    keep = w > 1e-16 * w.max()
    p, w = p[keep], w[keep] / w[keep].sum()
    for q, got in ((0.05, ae.rd_low), (0.5, ae.rd_median), (0.95, ae.rd_high)):
        lo, hi = -1.0, 1.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            p1 = p + mid                   # P(p1 - p0 <= r): 1 when p1 >= 1, 0 when <= 0
            inside = (p1 > 0) & (p1 < 1)
            x = special.logit(np.clip(p1, 1e-300, 1 - 1e-16)) - special.logit(p)
            c = float(w @ np.where(inside, eff.cdf(x), (p1 >= 1) * 1.0))
            lo, hi = (mid, hi) if c < q else (lo, mid)
        assert got == pytest.approx(0.5 * (lo + hi), abs=1e-13)
    z, gw = np.polynomial.hermite_e.hermegauss(40)
    gw = gw / gw.sum()
    xs = eff.M[:, None] + eff.S[:, None] * z
    ep1 = np.array([eff.W @ (special.expit(special.logit(pj) + xs) @ gw) for pj in p])
    assert ae.rd_mean == pytest.approx(float(w @ (ep1 - p)), abs=1e-12)


def test_survival_summaries_and_caches(fit):
    """logOR_new quantiles of the fit equal bisection on its direct K x J CDF (1e-7
    relative); summaries are cached per level and handed out as copies; sigma_time and rho
    quantiles by Newton equal bisection on the same CDFs (1e-12)."""
    q = fit._q
    M, S, W = q.th_M[1], q.th_S[1], q.W
    T, w = q.tg.sigma, q.tg.weight
    got = fit.summary(0.9).loc[Param("log_or_new", time="8"), ["ci_low", "median", "ci_high"]]
    want = [direct_quantile(v, M, S, W, T, w, 0.0) for v in (0.05, 0.5, 0.95)]
    np.testing.assert_allclose(got.to_numpy(float), want, **CROSSED_Q)
    s1 = fit.summary(0.9)
    s1.loc[:, "median"] = 0.0
    assert fit.summary(0.9).loc[Param("log_or", time="8"), "median"] != 0.0
    qs = np.array([0.025, 0.5, 0.975])
    lo = np.full(3, min(float(b.grid.sigma.min()) for b in q.blocks))
    hi = np.full(3, max(float(b.grid.sigma.max()) for b in q.blocks))
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        F = sum(b.weight * b.grid.cdf(mid) for b in q.blocks)
        lo, hi = np.where(F < qs, mid, lo), np.where(F < qs, hi, mid)
    np.testing.assert_allclose(q.sigma_quantiles(qs), 0.5 * (lo + hi), rtol=1e-12)
    rp = q.rho_post
    for v, got in zip(qs, rp.quantiles(qs)):
        a, b = rp.prior.lower, rp.prior.upper
        for _ in range(60):
            m = 0.5 * (a + b)
            a, b = (m, b) if rp.cdf(m) < v else (a, m)
        assert got == pytest.approx(0.5 * (a + b), abs=1e-12)


def test_draws_cdf_table_is_bit_identical(fit):
    """The inverse-CDF table of the draws reads Si once per lattice value: the same numbers
    as the sinc sum at every point."""
    for b in fit._q.blocks:
        g = b.grid
        tt = np.arange(g.t[0] - 6 * g.h, g.t[-1] + 6 * g.h, g.h / 16)
        assert np.array_equal(g._cdf_t_lattice(tt), g._cdf_t(tt))


@pytest.mark.slow
def test_bundled_model_fast_paths_match_the_direct_components():
    """The bundled survival model (AR(1), rho ~ uniform on 32 nodes: 4 000 x 125 crossed
    components per time): at 4 and 24 weeks, a trial of 50 per arm through the fast paths vs
    the same predictive as K x J components (direct sums over every crossed component):
    intervals within 1e-6 relative, probabilities within 1e-8, the same
    tipping-point decision and extreme P within 1e-9; the fit's logOR_new interval ends equal
    the direct K x J CDF's quantiles."""
    f = as_fit(fit_survival_published_exact(TIMES, OR, LO, HI, rho="uniform",
                                            correlation="ar1", n_rho=32, n_draws=10))
    for t in ("4", "24"):
        pred = f.predictive(t)
        assert pred._fast()
        kw = dict(n_per_arm=50, control_risk=0.7, effect_for_se=0.7)
        a, b = new_trial(pred, UP, **kw), new_trial(_flat(pred), UP, **kw)
        for k in ("theta_new_low", "theta_new_median", "theta_new_high", "y_new_low",
                  "y_new_median", "y_new_high"):
            assert getattr(a, k) == pytest.approx(getattr(b, k), rel=CROSSED_Q["rtol"],
                                                  abs=CROSSED_Q["atol"]), (t, k)
        for k in ("p_benefit_new", "assurance", "p_benefit_current"):
            assert getattr(a, k) == pytest.approx(getattr(b, k), abs=1e-8), (t, k)
        assert a.tipping_found == b.tipping_found
        assert a.p_benefit_extreme == pytest.approx(b.p_benefit_extreme, abs=1e-9)
        q = f._q
        i = q.times.index(t)
        got = f.summary(0.95).loc[Param("log_or_new", time=t), ["ci_low", "ci_high"]]
        want = [direct_quantile(v, q.th_M[i], q.th_S[i], q.W, q.tg.sigma, q.tg.weight, 0.0)
                for v in (0.025, 0.975)]
        np.testing.assert_allclose(got.to_numpy(float), want, **CROSSED_Q)
