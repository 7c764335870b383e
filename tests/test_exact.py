"""Exact NNHM engine against an independent brute-force integration.

Independent reference (written only for these tests, sharing no code with ``bayesmeta.exact``):
a nested composite Gauss-Legendre rule over (u = log tau, mu) applied directly to the joint
density  p(mu) p(tau) prod_i N(y_i; mu, s_i² + tau²). Only the *bounds* of the inner mu range use
the textbook precision-weighted mean; the integrand is evaluated pointwise. Summaries of theta_i
and theta_new use the textbook conditionals given (mu, tau). Quantiles are checked through the
reference CDF: the quantile error is estimated as (F_ref(q_hat) - p) / f_ref(q_hat).

Tolerance: ``tolerances.QUADRATURE`` (abs 1e-6), the engine's contract.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from bayesmeta.exact import FixedTau, fit_batch, fit_exact
from bayesmeta.exceptions import DataError, SpecError
from bayesmeta.priors import (NAMED_PRIORS, Flat, HalfCauchy, HalfNormal, HalfStudentT,
                              LogNormalTau2, Normal, Uniform)
from tests.tolerances import QUADRATURE

ATOL = QUADRATURE["atol"]

# --- datasets -------------------------------------------------------------------------------
# Rubin (1981) eight schools, as in Gelman et al. BDA3 Table 5.2.
SCHOOLS = (np.array([28., 8., -3., 7., -1., 1., 18., 12.]),
           np.array([15., 10., 16., 11., 9., 11., 10., 18.]))
# BCG vaccine trials, log risk ratios: metafor 3.8.1 (R 4.2.2)
# escalc(measure="RR", ai=tpos, bi=tneg, ci=cpos, di=cneg, data=dat.bcg), printed with %.17g.
BCG = (np.array([-0.88931133392020545, -1.5853886572014306, -1.3480731482996933,
                 -1.4415511900213054, -0.21754732221129558, -0.78611558581886398,
                 -1.6208982235983918, 0.011952333523840508, -0.4694176487381494,
                 -1.3713448034727844, -0.33935882833839059, 0.44591340057137874,
                 -0.017313948216879815]),
       np.sqrt([0.32558476500396133, 0.19458112139814385, 0.41536796536796539,
                0.020010031902247573, 0.051210172169630863, 0.0069056184559087574,
                0.22301724757231517, 0.0039615792978177295, 0.056434210463248966,
                0.07302479361302891, 0.01241221397155972, 0.53250584520015276,
                0.071404659683986293]))
# MELD change at 2 weeks, MSC vs control (2014 paper, Figure 3 arm data, data/meld_2014_fig3.csv):
# Amer 2011: -0.45 (2.24, 20) vs 0.5 (2.57, 20); Peng 2011: -6.13 (0.93, 6) vs -4.34 (3.89, 15).
MELD = (np.array([-0.45 - 0.5, -6.13 - (-4.34)]),
        np.sqrt([2.24 ** 2 / 20 + 2.57 ** 2 / 20, 0.93 ** 2 / 6 + 3.89 ** 2 / 15]))


# --- independent reference ------------------------------------------------------------------
_GX, _GW = np.polynomial.legendre.leggauss(20)


def _gl(a, b, panels):
    """Composite Gauss-Legendre nodes/weights on [a, b] (arrays a, b broadcast)."""
    edges = np.linspace(0.0, 1.0, panels + 1)
    a = np.asarray(a, dtype=float)[..., None]
    b = np.asarray(b, dtype=float)[..., None]
    lo = a + (b - a) * edges[:-1]
    hi = a + (b - a) * edges[1:]
    x = (0.5 * (lo + hi))[..., None] + (0.5 * (hi - lo))[..., None] * _GX
    w = (0.5 * (hi - lo))[..., None] * _GW
    return x.reshape(*x.shape[:-2], -1), w.reshape(*w.shape[:-2], -1)


class BruteForce:
    """Nested Gauss-Legendre integration of the joint posterior over (log tau, mu)."""

    def __init__(self, y, s, tau_prior, mu_prior=None, u_panels=80, mu_panels=6):
        self.y, self.s = np.asarray(y, float), np.asarray(s, float)
        self.tp, self.mp = tau_prior, mu_prior
        self.u_panels, self.mu_panels = u_panels, mu_panels
        sref = float(np.median(self.s))
        L = math.log(sref)
        lo_u = math.log(tau_prior.lower) if tau_prior.lower > 0 else -math.inf
        hi_u = math.log(tau_prior.upper) if math.isfinite(tau_prior.upper) else math.inf
        # core [L-30, L+30] finely, plus far tails (heavy log-t tails reach tau ~ e^-270)
        edges = np.clip([L - 270, L - 30, L + 30, L + 150], lo_u, hi_u)
        self.segments = [(a, b, n) for a, b, n in zip(edges[:-1], edges[1:],
                                                       (16, u_panels, 16)) if b > a]
        self.ua, self.ub = float(edges[0]), float(edges[-1])
        self.Z = self.expect(lambda mu, tau: 1.0)

    def _logjoint(self, mu, tau):
        v = self.s[:, None, None] ** 2 + tau[None] ** 2
        lk = (-0.5 * np.log(2 * np.pi * v) - 0.5 * (self.y[:, None, None] - mu[None]) ** 2 / v)
        out = lk.sum(0) + self.tp.logpdf_tau(tau)
        if self.mp is not None:
            out = out + stats.norm.logpdf(mu, self.mp[0], self.mp[1])
        return out

    def _nodes(self, u_split=None, mu_max=None, mu_breaks=None):
        segs = []
        for a, b, n in self.segments:
            if u_split is not None and a < u_split < b:
                segs += [(a, u_split, max(n // 2, 8)), (u_split, b, max(n // 2, 8))]
            else:
                segs.append((a, b, n))
        parts = [_gl(a, b, n) for a, b, n in segs]
        u = np.concatenate([p[0] for p in parts])
        wu = np.concatenate([p[1] for p in parts])
        tau = np.exp(u)
        v = self.s[:, None] ** 2 + tau[None] ** 2
        prec = (1 / v).sum(0) + (0 if self.mp is None else 1 / self.mp[1] ** 2)
        c = ((self.y[:, None] / v).sum(0) + (0 if self.mp is None else self.mp[0] / self.mp[1] ** 2)) / prec
        sd = 1 / np.sqrt(prec)
        a, b = c - 14 * sd, c + 14 * sd
        if mu_max is not None:
            b = np.minimum(b, mu_max)
            a = np.minimum(a, b)
        if mu_breaks is None:
            mu, wm = _gl(a, b, self.mu_panels)            # (Nu, Nmu)
        else:
            # extra panel edges where the integrand is steep (per tau row)
            base = a[:, None] + (b - a)[:, None] * np.linspace(0, 1, self.mu_panels + 1)
            extra = np.clip(mu_breaks(tau), a[:, None], b[:, None])
            edges = np.sort(np.concatenate([base, extra], axis=1), axis=1)
            lo, hi = edges[:, :-1], edges[:, 1:]
            x = (0.5 * (lo + hi))[..., None] + (0.5 * (hi - lo))[..., None] * _GX
            mu = x.reshape(x.shape[0], -1)
            wm = ((0.5 * (hi - lo))[..., None] * _GW).reshape(x.shape[0], -1)
        tau2d = np.broadcast_to(tau[:, None], mu.shape)
        with np.errstate(divide="ignore"):            # empty (clipped) panels: weight 0
            logw = np.log(wm) + (np.log(wu) + u)[:, None]   # dtau = tau du
        return mu, tau2d, logw

    def expect(self, f, **kw):
        mu, tau, logw = self._nodes(**kw)
        lj = self._logjoint(mu, tau)
        if not hasattr(self, "off"):
            self.off = float(lj.max())
        val = np.broadcast_to(f(mu, tau), mu.shape)
        out = np.sum(val * np.exp(logw + lj - self.off))
        return out / self.Z if hasattr(self, "Z") else out

    def mean_sd(self, f):
        m = self.expect(f)
        return m, math.sqrt(self.expect(lambda mu, t: f(mu, t) ** 2) - m ** 2)

    def cdf_mu(self, x):
        return self.expect(lambda mu, t: 1.0, mu_max=x)

    def cdf_tau(self, x):
        if x <= 0:
            return 0.0
        return self.expect(lambda mu, t: (t <= x).astype(float), u_split=math.log(x))

    def pdf_tau(self, x):
        return self.expect(lambda mu, t: 1.0, u_split=None) * 0 + self._pdf_tau(x)

    def _pdf_tau(self, x):
        mu, wm = _gl(self.y.min() - 40 * (self.s.max() + x), self.y.max() + 40 * (self.s.max() + x), 200)
        lj = self._logjoint(mu[None, :], np.full((1, mu.size), x))
        return float(np.sum(wm * np.exp(lj - self.off)) / self.Z)

    _DELTAS = np.array([-12., -6., -3., -1.5, -0.5, 0., 0.5, 1.5, 3., 6., 12.])

    def _breaks(self, x, sd_f, inv_f):
        """mu values where the conditional mean is x + delta * conditional sd."""
        def br(tau):
            t = tau[:, None]
            return inv_f(x + self._DELTAS[None, :] * sd_f(0.0, t), t)
        return br

    def cdf_normal_given(self, x, mean_f, sd_f, inv_f):
        """E[Phi((x - m(mu,tau)) / s(tau))] for a conditional normal with mean linear in mu."""
        return self.expect(lambda mu, t: special.ndtr((x - mean_f(mu, t)) / sd_f(mu, t)),
                           mu_breaks=self._breaks(x, sd_f, inv_f))

    def pdf_normal_given(self, x, mean_f, sd_f, inv_f):
        return self.expect(lambda mu, t: stats.norm.pdf(x, mean_f(mu, t), sd_f(mu, t)),
                           mu_breaks=self._breaks(x, sd_f, inv_f))

    def pdf_mu(self, x):
        parts = [_gl(a, b, n) for a, b, n in self.segments]
        tau_u = np.concatenate([p[0] for p in parts])
        wu = np.concatenate([p[1] for p in parts])
        tau = np.exp(tau_u)
        lj = self._logjoint(np.full((1, tau.size), x), tau[None, :])
        return float(np.sum(wu * tau * np.exp(lj[0] - self.off)) / self.Z)


def _theta_cond(y_i, s_i):
    """theta_i | mu, tau, y_i: precision-weighted normal (textbook conjugacy)."""
    def mean(mu, t):
        t2 = np.maximum(t, 1e-300) ** 2
        return (y_i / s_i ** 2 + mu / t2) / (1 / s_i ** 2 + 1 / t2)

    def sd(mu, t):
        t2 = np.maximum(t, 1e-300) ** 2
        return np.sqrt(1 / (1 / s_i ** 2 + 1 / t2)) + 0 * mu

    def inv(z, t):  # mu such that mean(mu, t) = z
        t2 = np.maximum(t, 1e-300) ** 2
        c2 = 1 / (1 / s_i ** 2 + 1 / t2)
        return (z - c2 * y_i / s_i ** 2) / (c2 / t2)
    return mean, sd, inv


CASES = [
    ("schools", SCHOOLS, HalfNormal(10.0), None),
    ("schools", SCHOOLS, HalfCauchy(5.0), (0.0, 50.0)),
    ("schools", SCHOOLS, Uniform(0.0, 40.0), None),
    ("bcg", BCG, HalfNormal(0.5), None),
    ("bcg", BCG, NAMED_PRIORS["turner2015-all"], (0.0, 4.0)),
    ("bcg", BCG, HalfCauchy(0.5), None),
    ("meld_k2", MELD, HalfNormal(1.5), None),
    ("meld_k2", MELD, HalfCauchy(1.0), (0.0, 10.0)),
    ("meld_k2", MELD, LogNormalTau2(0.0, 1.5), None),
    ("meld_k2", MELD, Uniform(0.0, 5.0), (0.0, 10.0)),
    ("bcg", BCG, NAMED_PRIORS["rhodes2015-smd"], None),
    # heavy tails: k = 2, flat mu, log-t prior -> E[tau] barely finite, Var(mu) infinite
    ("meld_k2", MELD, NAMED_PRIORS["rhodes2015-smd"], None),
    ("schools", SCHOOLS, HalfStudentT(3.0, 5.0), (0.0, 100.0)),
]
IDS = [f"{c[0]}-{c[2]}-{'flat' if c[3] is None else 'normal'}" for c in CASES]


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def pair(request):
    name, (y, s), tp, mp = request.param
    fit = fit_exact(y, s, tau_prior=tp, mu_prior=None if mp is None else Normal(*mp))
    ref = BruteForce(y, s, tp, mp)
    return fit, ref


def _close(actual, desired):
    """assert_allclose, except that an infinite moment reported by the engine must meet a huge
    value of the reference (which truncates log tau at L + 150, so it cannot return inf)."""
    actual, desired = np.atleast_1d(actual), np.atleast_1d(desired)
    inf = ~np.isfinite(actual)
    assert np.all(desired[inf] > 1e6), (actual, desired)
    np.testing.assert_allclose(actual[~inf], desired[~inf], **QUADRATURE)


def _check_quantile(qhat, p, F, f):
    err = (F(qhat) - p) / f(qhat)
    assert abs(err) <= ATOL, f"quantile {p}: estimated error {err:.3g}"


def test_mu(pair):
    fit, ref = pair
    m, sd = ref.mean_sd(lambda mu, t: mu)
    _close([fit.mu["mean"], fit.mu["sd"]], [m, sd])
    for key, p in (("median", 0.5), ("lower", 0.025), ("upper", 0.975)):
        _check_quantile(fit.mu[key], p, ref.cdf_mu, ref.pdf_mu)
    for c in (0.0, fit.mu["mean"] + fit.mu["sd"]):
        np.testing.assert_allclose(fit.prob_mu_below(c), ref.cdf_mu(c), **QUADRATURE)
    x = fit.mu["mean"] + 0.3 * fit.mu["sd"]
    np.testing.assert_allclose(fit.density("mu", [x])[0], ref.pdf_mu(x), **QUADRATURE)


def test_tau(pair):
    fit, ref = pair
    m, sd = ref.mean_sd(lambda mu, t: t)
    _close([fit.tau["mean"], fit.tau["sd"]], [m, sd])
    for key, p in (("median", 0.5), ("lower", 0.025), ("upper", 0.975)):
        _check_quantile(fit.tau[key], p, ref.cdf_tau, ref._pdf_tau)
    x = fit.tau["median"]
    np.testing.assert_allclose(fit.density("tau", [x])[0], ref._pdf_tau(x), **QUADRATURE)
    np.testing.assert_allclose(fit.cdf("tau", 0.5 * x), ref.cdf_tau(0.5 * x), **QUADRATURE)


def test_tau_many_quantiles(pair):
    """Many probabilities at once (the search starts from the CDF tabulated at the grid
    nodes): each quantile checked through the brute-force CDF, like the three above."""
    fit, ref = pair
    p = np.array([0.001, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999])
    u = np.sort(np.concatenate([p, (np.arange(40) + 0.5) / 40]))
    q = fit.quantile("tau", u)
    assert np.all(np.diff(q) >= 0)
    for qi, pi in zip(q, u):
        if pi in p:
            _check_quantile(qi, pi, ref.cdf_tau, ref._pdf_tau)
    np.testing.assert_allclose(fit.cdf("tau", q), u, **QUADRATURE)


def test_tau_cdf_series_matches_sine_integral(pair):
    """The many-point CDF of tau (asymptotic series of Si beyond 100 steps from a node)
    against the direct sum with scipy's sine integral at every node, off and on the nodes."""
    fit, _ = pair
    g = fit._grid
    if g.t.size < 2:
        pytest.skip("tau fixed")
    rng = np.random.default_rng(1)
    t = np.concatenate([rng.uniform(g.t[0] - 150 * g.h, g.t[-1] + 150 * g.h, 700),
                        g.t[:: max(g.t.size // 50, 1)]])
    np.testing.assert_allclose(fit._tau_cdf_many(t), fit._tau_cdf_t(t), rtol=0, atol=1e-13)


def test_theta_new(pair):
    fit, ref = pair
    m, sd = ref.mean_sd(lambda mu, t: mu)
    m2 = ref.expect(lambda mu, t: mu ** 2 + t ** 2)
    _close([fit.theta_new["mean"], fit.theta_new["sd"]], [m, math.sqrt(m2 - m ** 2)])
    mean_f, sd_f = (lambda mu, t: mu), (lambda mu, t: np.maximum(t, 1e-300) + 0 * mu)
    inv_f = lambda z, t: z + 0 * t  # noqa: E731
    F = lambda x: ref.cdf_normal_given(x, mean_f, sd_f, inv_f)  # noqa: E731
    f = lambda x: ref.pdf_normal_given(x, mean_f, sd_f, inv_f)  # noqa: E731
    for key, p in (("median", 0.5), ("lower", 0.025), ("upper", 0.975)):
        _check_quantile(fit.theta_new[key], p, F, f)
    np.testing.assert_allclose(fit.prob_theta_new_below(0.0), F(0.0), **QUADRATURE)


def test_theta_shrinkage(pair):
    fit, ref = pair
    th = fit.theta
    for i in (0, fit.k - 1):
        mean_f, sd_f, inv_f = _theta_cond(fit.y[i], fit.sei[i])
        m = ref.expect(mean_f)
        m2 = ref.expect(lambda mu, t: sd_f(mu, t) ** 2 + mean_f(mu, t) ** 2)
        np.testing.assert_allclose([th["mean"].iloc[i], th["sd"].iloc[i]],
                                   [m, math.sqrt(m2 - m * m)], **QUADRATURE)
        F = lambda x: ref.cdf_normal_given(x, mean_f, sd_f, inv_f)  # noqa: E731
        f = lambda x: ref.pdf_normal_given(x, mean_f, sd_f, inv_f)  # noqa: E731
        for key, p in (("median", 0.5), ("lower", 0.025), ("upper", 0.975)):
            _check_quantile(th[key].iloc[i], p, F, f)


def test_evidence_and_bayes_factors(pair):
    """log p(y) = log Z (normalised joint); BF01(tau=0) = p(y|tau=0)/p(y);
    BF01(mu=0) = p(y|mu=0)/p(y), each by direct 1-D Gauss-Legendre integration."""
    fit, ref = pair
    y, s = ref.y, ref.s
    if ref.mp is None:
        assert fit.log_marginal_likelihood is None and fit.bayes_factor_mu0 is None
        # with a flat mu prior only the BF for tau compares like with like: use the restricted
        # constant of the same improper prior on both sides
        mu, wm = _gl(y.min() - 40 * s.max(), y.max() + 40 * s.max(), 400)
        l0 = np.sum(wm * np.exp(stats.norm.logpdf(y[:, None], mu[None], s[:, None]).sum(0)
                                - ref.off))
        np.testing.assert_allclose(fit.bayes_factor_tau0, l0 / ref.Z, rtol=1e-6)
        return
    np.testing.assert_allclose(fit.log_marginal_likelihood, math.log(ref.Z) + ref.off,
                               **QUADRATURE)
    mu, wm = _gl(y.min() - 40 * s.max(), y.max() + 40 * s.max(), 400)
    l0 = np.sum(wm * np.exp(stats.norm.logpdf(y[:, None], mu[None], s[:, None]).sum(0)
                            + stats.norm.logpdf(mu, *ref.mp) - ref.off))
    np.testing.assert_allclose(fit.bayes_factor_tau0, l0 / ref.Z, rtol=1e-6)
    parts = [_gl(a, b, 4 * n) for a, b, n in ref.segments]
    u = np.concatenate([p[0] for p in parts])
    wu = np.concatenate([p[1] for p in parts])
    tau = np.exp(u)
    lm0 = (stats.norm.logpdf(y[:, None], 0.0, np.sqrt(s[:, None] ** 2 + tau[None] ** 2)).sum(0)
           + ref.tp.logpdf_tau(tau))
    m0 = np.sum(wu * tau * np.exp(lm0 - ref.off))
    np.testing.assert_allclose(fit.bayes_factor_mu0, m0 / ref.Z, rtol=1e-6)


# --- closed forms and limits ----------------------------------------------------------------

@pytest.mark.parametrize("data", [SCHOOLS, BCG, MELD], ids=["schools", "bcg", "meld"])
def test_tau_zero_flat_mu_is_inverse_variance_fixed_effect(data):
    """Closed form: tau = 0, flat mu prior -> mu | y ~ N(sum(w y)/sum(w), 1/sum(w)), w = 1/s²."""
    y, s = data
    fit = fit_exact(y, s, tau_prior=0.0)
    w = 1 / s ** 2
    est, se = np.sum(w * y) / np.sum(w), 1 / math.sqrt(np.sum(w))
    np.testing.assert_allclose([fit.mu["mean"], fit.mu["sd"]], [est, se], rtol=1e-12)
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose([fit.mu["lower"], fit.mu["upper"], fit.mu["median"]],
                               [est - z * se, est + z * se, est], rtol=1e-10, atol=1e-12)
    assert fit.tau["mean"] == 0.0 and fit.tau["upper"] == 0.0
    np.testing.assert_allclose(fit.theta["mean"], est, rtol=1e-12)


def test_fixed_tau_normal_prior_closed_form():
    """Closed form: known tau, mu ~ N(m0, s0²): conjugate normal update, and
    log p(y) = log N_k(y; m0 1, diag(s² + tau²) + s0² 11')."""
    y, s = SCHOOLS
    tau, m0, s0 = 5.0, 2.0, 20.0
    fit = fit_exact(y, s, tau_prior=tau, mu_prior=Normal(m0, s0))
    w = 1 / (s ** 2 + tau ** 2)
    prec = w.sum() + 1 / s0 ** 2
    est = (np.sum(w * y) + m0 / s0 ** 2) / prec
    np.testing.assert_allclose([fit.mu["mean"], fit.mu["sd"]], [est, prec ** -0.5], rtol=1e-12)
    np.testing.assert_allclose(fit.theta_new["sd"], math.sqrt(1 / prec + tau ** 2), rtol=1e-12)
    cov = np.diag(s ** 2 + tau ** 2) + s0 ** 2
    np.testing.assert_allclose(fit.log_marginal_likelihood,
                               stats.multivariate_normal.logpdf(y, np.full(y.size, m0), cov),
                               rtol=1e-12)


def test_narrow_tau_prior_approaches_fixed_effect():
    """Limit: a half-normal tau prior with tiny scale gives (nearly) the IV fixed-effect result,
    and the posterior mean of mu lies between the FE estimate and the prior mean."""
    y, s = BCG
    w = 1 / s ** 2
    fe, fe_se = np.sum(w * y) / np.sum(w), 1 / math.sqrt(np.sum(w))
    fit = fit_exact(y, s, tau_prior=HalfNormal(1e-6))
    np.testing.assert_allclose([fit.mu["mean"], fit.mu["sd"]], [fe, fe_se], rtol=1e-5)
    m0 = 1.0
    fit_p = fit_exact(y, s, tau_prior=HalfNormal(1e-6), mu_prior=Normal(m0, 0.2))
    assert min(fe, m0) < fit_p.mu["mean"] < max(fe, m0)


def test_k1_flat_mu_posterior_tau_equals_prior():
    """k = 1 with a flat mu prior: the likelihood does not depend on tau, so p(tau|y) = p(tau)
    (closed form: half-normal quantiles) and mu | y mixes N(y, s² + tau²)."""
    prior = HalfNormal(2.0)
    fit = fit_exact([1.3], [0.7], tau_prior=prior)
    np.testing.assert_allclose([fit.tau["median"], fit.tau["upper"]],
                               prior.ppf_tau([0.5, 0.975]), atol=1e-9)
    np.testing.assert_allclose(fit.tau["mean"], 2.0 * math.sqrt(2 / math.pi), atol=1e-9)
    # E[mu] = y, Var(mu) = s² + E[tau²] = s² + scale²
    np.testing.assert_allclose([fit.mu["mean"], fit.mu["sd"]],
                               [1.3, math.sqrt(0.49 + 4.0)], atol=1e-9)


def test_heavy_tail_moments_reported_infinite():
    """k = 2, flat mu, half-Cauchy: posterior tail of tau ~ tau**-3, so E[tau] is finite but
    Var(tau), Var(mu) and Var(theta_new) are infinite; quantiles stay finite."""
    y, s = MELD
    fit = fit_exact(y, s, tau_prior=HalfCauchy(1.0))
    assert math.isfinite(fit.tau["mean"]) and fit.tau["sd"] == math.inf
    assert fit.mu["sd"] == math.inf and fit.theta_new["sd"] == math.inf
    assert all(math.isfinite(fit.mu[k]) for k in ("median", "lower", "upper"))


def test_any_level_interval_matches_quantiles():
    y, s = SCHOOLS
    fit = fit_exact(y, s, tau_prior=HalfNormal(10.0), level=0.9)
    lo, hi = fit.interval("mu", 0.9)
    assert (fit.mu["lower"], fit.mu["upper"]) == pytest.approx((lo, hi), abs=1e-10)
    np.testing.assert_allclose(fit.cdf("mu", [lo, hi]), [0.05, 0.95], atol=1e-10)


def test_fit_batch_matches_single_fits():
    rng = np.random.default_rng(1)
    Y = rng.normal(0, 1, (3, 5))
    S = rng.uniform(0.3, 1.0, (3, 5))
    df = fit_batch(Y, S, tau_prior=HalfNormal(0.5))
    for i in range(3):
        r = fit_exact(Y[i], S[i], tau_prior=HalfNormal(0.5))
        assert df.loc[i, "mu_mean"] == r.mu["mean"] and df.loc[i, "tau_upper"] == r.tau["upper"]


def test_to_frame_schema_and_str():
    from bayesmeta import results
    y, s = BCG
    fit = fit_exact(y, s, tau_prior=HalfNormal(0.5), mu_prior=Normal(0, 4), measure="RR")
    df = fit.to_frame(analysis="bcg")
    assert tuple(df.columns) == results.SCHEMA
    assert set(df["method"]) == {"exact-NNHM"} and set(df["interval"]) == {"eti"}
    assert set(df["scale"]) == {"logRR"} and (df["mcse"] == 0).all()
    assert len(df) == 4 + fit.k
    text = str(fit)
    assert "k = 13" in text and "HalfNormal(scale=0.5)" in text and "BF01" in text


def test_bad_input():
    with pytest.raises(DataError):
        fit_exact([1.0, np.nan], [1.0, 1.0], tau_prior=HalfNormal(1))
    with pytest.raises(DataError):
        fit_exact([1.0, 2.0], [1.0, 0.0], tau_prior=HalfNormal(1))
    with pytest.raises(DataError):
        fit_exact([], [], tau_prior=HalfNormal(1))
    with pytest.raises(SpecError):
        fit_exact([1.0], [1.0], tau_prior=None)
    with pytest.raises(SpecError):
        fit_exact([1.0], [1.0], tau_prior=HalfNormal(1), level=1.5)
    with pytest.raises(SpecError):
        fit_exact([1.0], [1.0], tau_prior=HalfNormal(1), mu_prior=HalfNormal(1))
