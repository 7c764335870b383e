"""Invariants of the estimators, checked with hypothesis.

Every property here is a mathematical identity of the estimator, so the reference is the
identity itself (closed form / algebra, style §10.6 source 1): permuting studies changes
nothing; MD is invariant to shifting and equivariant to scaling both arms; swapping the arms
negates log OR / log RR / RD and mirrors intervals; FE equals RE when tau² = 0; DL tau² >= 0,
I² in [0, 100]; weights sum to 100 %; the CI contains the estimate; the exact NNHM posterior
mean of mu with tau -> 0 is the conjugate normal mean, between the FE estimate and the prior
mean; a duplicated dataset doubles FE precision. Numerical robustness: variance ratio 1e8,
k = 10 000 (vectorised fast path), effect scales 1e-8 and 1e8.

Tolerances: closed-form estimators (FE, DL, HE, SJ, HS, MH) are compared at ``EXACT`` after
reordering (sums in another order differ by a few ulp); iterative ones (REML, ML, PM, EB) at
``OPTIMIZER`` (they stop at a convergence threshold).
"""

from __future__ import annotations

import math
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bayesmeta.classical import rma, rma_mh, rma_peto
from bayesmeta.effect_sizes import escalc
from bayesmeta.exceptions import DataError
from tests.tolerances import EXACT, OPTIMIZER, QUADRATURE

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
CLOSED = ("FE", "DL", "HE", "SJ", "HS")
ITERATIVE = ("REML", "ML", "PM", "EB")
METHODS = CLOSED + ITERATIVE


def tol(method):
    return dict(rtol=1e-9, atol=1e-11) if method in CLOSED else OPTIMIZER


def quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------
@st.composite
def meta(draw, kmin=2, kmax=12):
    """k studies: yi in [-5, 5], vi log-uniform in [e^-4, e^2]."""
    k = draw(st.integers(kmin, kmax))
    y = draw(arrays(np.float64, k, elements=st.floats(-5, 5, allow_nan=False)))
    lv = draw(arrays(np.float64, k, elements=st.floats(-4, 2, allow_nan=False)))
    return y, np.exp(lv)


@st.composite
def tables(draw, kmin=2, kmax=10, zeros=True):
    """2x2 tables (ai, bi, ci, di) with group sizes 2..200."""
    k = draw(st.integers(kmin, kmax))
    lo = 0 if zeros else 1
    rows = []
    for _ in range(k):
        n1, n2 = draw(st.integers(2, 200)), draw(st.integers(2, 200))
        a = draw(st.integers(lo, n1 - lo))
        c = draw(st.integers(lo, n2 - lo))
        rows.append((a, n1 - a, c, n2 - c))
    return np.array(rows, dtype=float).T


@st.composite
def arms(draw, kmin=2, kmax=10):
    """Arm-level continuous data: means in [-50, 50], SDs in [0.1, 30], n in [2, 300]."""
    k = draw(st.integers(kmin, kmax))
    f = lambda a, b: arrays(np.float64, k, elements=st.floats(a, b, allow_nan=False))  # noqa
    n = lambda: arrays(np.int64, k, elements=st.integers(2, 300))  # noqa: E731
    return dict(m1i=draw(f(-50, 50)), sd1i=draw(f(0.1, 30)), n1i=draw(n()),
                m2i=draw(f(-50, 50)), sd2i=draw(f(0.1, 30)), n2i=draw(n()))


# ---------------------------------------------------------------------------------------------
# permutation invariance
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@SETTINGS
@given(data=meta(), perm_seed=st.integers(0, 2**32 - 1))
def test_permuting_studies_changes_nothing(method, data, perm_seed):
    y, v = data
    labels = [f"s{i}" for i in range(y.size)]
    perm = np.random.default_rng(perm_seed).permutation(y.size)
    a = quiet(rma, y, v, studies=labels, method=method)
    b = quiet(rma, y[perm], v[perm], studies=[labels[i] for i in perm], method=method)
    for f in ("estimate", "se", "tau2", "q", "ci_low", "ci_high", "pi_low", "pi_high"):
        np.testing.assert_allclose(getattr(b, f), getattr(a, f), err_msg=f, **tol(method))
    np.testing.assert_allclose(b.weights[labels].to_numpy(), a.weights[labels].to_numpy(),
                               **tol(method))


@SETTINGS
@given(t=tables(), perm_seed=st.integers(0, 2**32 - 1), measure=st.sampled_from(["OR", "RR",
                                                                                "RD"]))
def test_permuting_tables_changes_nothing_mh(t, perm_seed, measure):
    from bayesmeta.exceptions import BayesMetaError

    a_, b_, c_, d_ = t
    uninformative = ((a_ == 0) & (c_ == 0)) | ((b_ == 0) & (d_ == 0))
    # every table double-zero/double-full: a ZeroDivisionError for RR/RD (defect, see
    # tests/test_bad_input.py::test_mh_all_tables_uninformative)
    assume(not uninformative.all())
    perm = np.random.default_rng(perm_seed).permutation(t.shape[1])
    try:
        a = quiet(rma_mh, *t, measure=measure)
    except BayesMetaError as err:  # a refusal must not depend on the order either
        with pytest.raises(type(err)):
            quiet(rma_mh, *t[:, perm], measure=measure)
        return
    b = quiet(rma_mh, *t[:, perm], measure=measure)
    for f in ("estimate", "se", "q"):
        np.testing.assert_allclose(getattr(b, f), getattr(a, f), err_msg=f, rtol=1e-9,
                                   atol=1e-12)


# ---------------------------------------------------------------------------------------------
# MD: shift invariance, scale equivariance
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(d=arms(), shift=st.floats(-1e3, 1e3, allow_nan=False),
       scale=st.floats(1e-3, 1e3, allow_nan=False))
def test_md_shift_invariant_scale_equivariant(d, shift, scale):
    """MD = m1 - m2 (closed form): shifting both means by c leaves yi and vi unchanged;
    scaling means and SDs by a > 0 scales yi by a and vi by a²; SMD is invariant to both."""
    base = escalc("MD", d)
    shifted = escalc("MD", {**d, "m1i": d["m1i"] + shift, "m2i": d["m2i"] + shift})
    scaled = escalc("MD", {**d, "m1i": d["m1i"] * scale, "m2i": d["m2i"] * scale,
                           "sd1i": d["sd1i"] * scale, "sd2i": d["sd2i"] * scale})
    # shifting by c adds rounding of order eps*|c| to each mean
    np.testing.assert_allclose(shifted["yi"], base["yi"], rtol=0, atol=1e-12 * (abs(shift) + 100))
    np.testing.assert_array_equal(shifted["vi"], base["vi"])
    np.testing.assert_allclose(scaled["yi"], base["yi"] * scale, **EXACT)
    np.testing.assert_allclose(scaled["vi"], base["vi"] * scale ** 2, rtol=1e-12)
    s0 = escalc("SMD", d)
    s1 = escalc("SMD", {**d, "m1i": (d["m1i"] + shift) * scale, "m2i": (d["m2i"] + shift) * scale,
                        "sd1i": d["sd1i"] * scale, "sd2i": d["sd2i"] * scale})
    np.testing.assert_allclose(s1["yi"], s0["yi"], rtol=1e-9, atol=1e-9)
    # pooled analysis follows: estimate scales by a, tau² by a², I² unchanged
    r0 = quiet(rma, base["yi"], base["vi"], method="DL")
    r1 = quiet(rma, scaled["yi"], scaled["vi"], method="DL")
    np.testing.assert_allclose(r1.estimate, r0.estimate * scale, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(r1.tau2, r0.tau2 * scale ** 2, rtol=1e-9,
                               atol=1e-12 * scale ** 2)
    np.testing.assert_allclose(r1.i2, r0.i2, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# swapping arms
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(t=tables(), measure=st.sampled_from(["OR", "RR", "RD", "PETO"]))
def test_swapping_arms_negates_and_mirrors(t, measure):
    """Swapping arms (a,b) <-> (c,d): log OR, log RR, RD and Peto log OR change sign, vi is
    unchanged (the continuity-correction rule is symmetric in the arms); pooled estimates
    negate and intervals mirror; tau² and Q are unchanged. When every table has zero (or
    all) events in both arms, OR/RR are refused (no information): in both orientations."""
    a, b, c, d = t
    try:
        e0 = quiet(escalc, measure, ai=a, bi=b, ci=c, di=d)
    except DataError:
        assert measure in ("OR", "RR")
        assert (((a == 0) & (c == 0)) | ((b == 0) & (d == 0))).all()
        with pytest.raises(DataError):
            quiet(escalc, measure, ai=c, bi=d, ci=a, di=b)
        return
    e1 = quiet(escalc, measure, ai=c, bi=d, ci=a, di=b)
    ok = np.isfinite(e0["yi"]).to_numpy()
    np.testing.assert_array_equal(np.isfinite(e1["yi"]).to_numpy(), ok)
    np.testing.assert_allclose(e1["yi"][ok], -e0["yi"][ok], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(e1["vi"][ok], e0["vi"][ok], rtol=1e-12)
    assume(ok.sum() >= 2)
    for method in ("FE", "DL", "REML"):
        r0 = quiet(rma, e0["yi"][ok], e0["vi"][ok], method=method)
        r1 = quiet(rma, e1["yi"][ok], e1["vi"][ok], method=method)
        tl = tol(method)
        np.testing.assert_allclose(r1.estimate, -r0.estimate, rtol=tl["rtol"], atol=1e-9)
        np.testing.assert_allclose(r1.ci_low, -r0.ci_high, rtol=tl["rtol"], atol=1e-9)
        np.testing.assert_allclose(r1.ci_high, -r0.ci_low, rtol=tl["rtol"], atol=1e-9)
        np.testing.assert_allclose(r1.tau2, r0.tau2, rtol=tl["rtol"], atol=1e-9)


@SETTINGS
@given(t=tables(zeros=False), measure=st.sampled_from(["OR", "RR", "RD"]))
def test_swapping_arms_mirrors_mh_and_peto(t, measure):
    a, b, c, d = t
    r0 = quiet(rma_mh, a, b, c, d, measure=measure)
    r1 = quiet(rma_mh, c, d, a, b, measure=measure)
    np.testing.assert_allclose(r1.estimate, -r0.estimate, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r1.se, r0.se, rtol=1e-9)
    np.testing.assert_allclose([r1.ci_low, r1.ci_high], [-r0.ci_high, -r0.ci_low], rtol=1e-9,
                               atol=1e-12)
    if measure == "OR":
        p0, p1 = quiet(rma_peto, a, b, c, d), quiet(rma_peto, c, d, a, b)
        np.testing.assert_allclose(p1.estimate, -p0.estimate, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(p1.se, p0.se, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# FE = RE when tau² = 0; heterogeneity bounds; weights; CI contains the estimate
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(data=meta(kmin=3), frac=st.floats(0.0, 0.95))
def test_fe_equals_re_when_q_below_df(data, frac):
    """Data shrunk towards their FE mean so that Q = frac * df < df: DL and PM give tau² = 0
    (DL: max(0, (Q - df)/c); PM: Q(0) <= df) and then RE is FE exactly."""
    y, v = data
    w = 1 / v
    m = w @ y / w.sum()
    q = w @ (y - m) ** 2
    assume(q > 1e-12)
    y = m + (y - m) * math.sqrt(frac * (y.size - 1) / q)
    fe = rma(y, v, method="FE")
    assert fe.q < fe.q_df + 1e-9
    for method in ("DL", "PM"):
        re = quiet(rma, y, v, method=method)
        assert re.tau2 == 0.0, (method, re.tau2)
        for f in ("estimate", "se", "ci_low", "ci_high", "q"):
            np.testing.assert_allclose(getattr(re, f), getattr(fe, f), err_msg=f, **EXACT)
        np.testing.assert_allclose(re.weights.to_numpy(), fe.weights.to_numpy(), **EXACT)


@pytest.mark.parametrize("method", METHODS)
@SETTINGS
@given(data=meta(kmin=2))
def test_heterogeneity_bounds_weights_and_ci(method, data):
    y, v = data
    r = quiet(rma, y, v, method=method)
    assert r.tau2 >= 0 and r.tau == pytest.approx(math.sqrt(r.tau2))
    assert 0 <= r.i2 <= 100 and 0 <= r.i2_q <= 100, (r.i2, r.i2_q)
    if method != "FE":  # RE: H² = (v~ + tau²)/v~ >= 1; FE: H² = Q/df (metafor), may be < 1
        assert r.h2 >= 1 - 1e-12
    assert r.q >= -1e-12 * (1 + np.abs(y).max()) ** 2  # sign: test_q_is_never_negative
    np.testing.assert_allclose(r.weights.sum(), 100.0, rtol=1e-12)
    assert (r.weights > 0).all()
    assert r.ci_low <= r.estimate <= r.ci_high
    assert r.pi_low <= r.ci_low + 1e-12 and r.ci_high <= r.pi_high + 1e-12
    assert y.min() - 1e-9 <= r.estimate <= y.max() + 1e-9  # a weighted mean
    if y.size >= 3:
        k = quiet(rma, y, v, method=method, test="knha")
        assert k.ci_low <= k.estimate <= k.ci_high
        np.testing.assert_allclose(k.estimate, r.estimate, **EXACT)


@pytest.mark.parametrize("method", ["FE", "DL", "REML"])
def test_q_is_never_negative(method):
    """Q = sum w_i (y_i - FE)² is a sum of squares (closed form): never negative."""
    y = np.ones(3)
    v = np.full(3, 4.48168907)
    assert quiet(rma, y, v, method=method).q >= 0
    y9 = np.ones(9)
    assert quiet(rma, y9, np.ones(9), method=method).q >= 0


# ---------------------------------------------------------------------------------------------
# duplicated dataset
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(data=meta())
def test_duplicated_dataset_doubles_fe_precision(data):
    """FE: se² = 1/sum(w) (closed form), so two copies halve it; the estimate is unchanged
    and Q doubles."""
    y, v = data
    a = rma(y, v, method="FE")
    b = rma(np.r_[y, y], np.r_[v, v], method="FE")
    np.testing.assert_allclose(b.se ** 2, a.se ** 2 / 2, **EXACT)
    np.testing.assert_allclose(b.estimate, a.estimate, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.q, 2 * a.q, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# exact NNHM: tau -> 0 gives the conjugate normal posterior
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(data=meta(kmin=1, kmax=8), m0=st.floats(-5, 5), s0=st.floats(0.05, 10))
def test_exact_mu_between_fe_and_prior_mean_as_tau_to_0(data, m0, s0):
    """With tau ~ HalfNormal(1e-6 * min se) the posterior of mu is (to O(tau²/v)) the conjugate
    normal: mean (sum w y + m0/s0²)/(sum w + 1/s0²), a precision-weighted average of the FE
    estimate and the prior mean, so it lies between them."""
    from bayesmeta.exact import fit_exact
    from bayesmeta.priors import HalfNormal, Normal

    y, v = data
    s = np.sqrt(v)
    r = fit_exact(y, s, tau_prior=HalfNormal(1e-6 * s.min()), mu_prior=Normal(m0, s0))
    w, p0 = 1 / v, 1 / s0 ** 2
    fe = w @ y / w.sum()
    conj = (w @ y + p0 * m0) / (w.sum() + p0)
    mean = r.mu["mean"]
    span = abs(fe - m0)
    assert min(fe, m0) - 1e-6 * (1 + span) <= mean <= max(fe, m0) + 1e-6 * (1 + span)
    np.testing.assert_allclose(mean, conj, rtol=1e-5, atol=QUADRATURE["atol"])
    np.testing.assert_allclose(r.mu["sd"], 1 / math.sqrt(w.sum() + p0), rtol=1e-4)


@SETTINGS
@given(data=meta(kmin=2, kmax=8), perm_seed=st.integers(0, 2**32 - 1))
def test_exact_permutation_invariant(data, perm_seed):
    from bayesmeta.exact import fit_exact
    from bayesmeta.priors import HalfNormal

    y, v = data
    perm = np.random.default_rng(perm_seed).permutation(y.size)
    a = fit_exact(y, vi=v, tau_prior=HalfNormal(0.5))
    b = fit_exact(y[perm], vi=v[perm], tau_prior=HalfNormal(0.5))
    for p in ("mu", "tau"):
        for key in ("mean", "sd", "lower", "upper"):
            np.testing.assert_allclose(getattr(b, p)[key], getattr(a, p)[key], rtol=1e-8,
                                       atol=1e-10, err_msg=f"{p}.{key}")


# ---------------------------------------------------------------------------------------------
# numerical robustness
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ("FE", "DL", "REML", "PM"))
def test_variance_ratio_1e8(method):
    """vi spanning 1e-4 .. 1e4: finite results, weights sum to 100 %, and with tau² = 0 (FE)
    the estimate is (to 1e-8 relative weight) the precise study's yi (closed form)."""
    y = np.array([0.3, -1.0, 2.0, 0.7, 5.0])
    v = np.array([1e-4, 1e4, 1e4, 1.0, 1e4])
    r = quiet(rma, y, v, method=method)
    vals = [r.estimate, r.se, r.tau2, r.ci_low, r.ci_high, r.q, r.i2]
    assert np.all(np.isfinite(vals)), vals
    np.testing.assert_allclose(r.weights.sum(), 100, rtol=1e-12)
    if method == "FE":
        w = 1 / v
        np.testing.assert_allclose(r.estimate, w @ y / w.sum(), **EXACT)
        assert abs(r.estimate - 0.3) < 1e-3


def test_k_10000_fast_path():
    """k = 10 000 through the vectorised engine (bayesmeta.batch): FE and DL equal their
    closed forms (FE: sum(w y)/sum(w); DL: max(0, (Q - (k-1)) / (sum w - sum w²/sum w)))."""
    from bayesmeta.batch import classical_batch

    rng = np.random.default_rng(20240101)
    k = 10_000
    v = rng.uniform(0.01, 1.0, k)
    y = rng.normal(0.2, np.sqrt(v + 0.05))
    res = classical_batch(y[None], v[None], methods=("FE", "DL"))
    w = 1 / v
    fe = w @ y / w.sum()
    q = w @ (y - fe) ** 2
    t2 = max(0.0, (q - (k - 1)) / (w.sum() - (w ** 2).sum() / w.sum()))
    ws = 1 / (v + t2)
    np.testing.assert_allclose(res.values["FE"]["estimate"][0], fe, **EXACT)
    np.testing.assert_allclose(res.values["FE"]["se"][0], 1 / math.sqrt(w.sum()), **EXACT)
    np.testing.assert_allclose(res.values["DL"]["tau2"][0], t2, rtol=1e-9)
    np.testing.assert_allclose(res.values["DL"]["estimate"][0], ws @ y / ws.sum(), rtol=1e-9)
    assert t2 > 0  # the simulated heterogeneity (0.05) is detected


def test_rma_memory_is_linear_in_k():
    """At k = 4000 one dense k x k float matrix is 128 MB; an O(k) implementation of FE/DL
    needs well under 32 MB."""
    rng = np.random.default_rng(1)
    k = 4000
    v = rng.uniform(0.1, 1.0, k)
    y = rng.normal(0, 1, k)
    tracemalloc.start()
    try:
        rma(y, v, method="FE")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"peak {peak / 2**20:.0f} MB"


SCALES = (1e-8, 1e8)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("method", ("FE", "DL", "HE", "SJ"))
@SETTINGS
@given(data=meta(kmin=3))
def test_effect_scale_equivariance_closed_form(method, scale, data):
    """yi -> c yi, vi -> c² vi: estimate, SE and CI scale by c, tau² by c², I² and p unchanged."""
    y, v = data
    a = quiet(rma, y, v, method=method)
    b = quiet(rma, y * scale, v * scale ** 2, method=method)
    for f in ("estimate", "se", "ci_low", "ci_high"):
        np.testing.assert_allclose(getattr(b, f), getattr(a, f) * scale, rtol=1e-9,
                                   atol=1e-12 * scale, err_msg=f)
    np.testing.assert_allclose(b.tau2, a.tau2 * scale ** 2, rtol=1e-9,
                               atol=1e-12 * scale ** 2)
    np.testing.assert_allclose([b.i2, b.q, b.p], [a.i2, a.q, a.p], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("method", ("REML",))
@settings(max_examples=40, deadline=None)
@given(data=meta(kmin=4))
def test_effect_scale_equivariance_reml(method, scale, data):
    y, v = data
    a = quiet(rma, y, v, method=method)
    assume(a.tau2 > 1e-3)  # an interior optimum, where the step criterion matters
    b = quiet(rma, y * scale, v * scale ** 2, method=method)
    np.testing.assert_allclose(b.tau2, a.tau2 * scale ** 2, rtol=1e-5)
    np.testing.assert_allclose(b.estimate, a.estimate * scale, rtol=1e-5, atol=1e-9 * scale)
    assert np.isfinite([b.estimate, b.se, b.tau2]).all()


@pytest.mark.parametrize("scale", [1e-8, 1e-4, 1e8])
def test_exact_scale_equivariance(scale):
    """Exact NNHM with tau ~ HalfNormal(c * 0.5) and flat mu on (c y, c s): mu and tau
    summaries scale by c (the model is scale-invariant when the prior scales with it)."""
    from bayesmeta.exact import fit_exact
    from bayesmeta.priors import HalfNormal

    y = np.array([0.1, 0.5, -0.2, 0.9, 0.3])
    s = np.array([0.2, 0.3, 0.25, 0.5, 0.15])
    a = fit_exact(y, s, tau_prior=HalfNormal(0.5))
    b = fit_exact(y * scale, s * scale, tau_prior=HalfNormal(0.5 * scale))
    for p in ("mu", "tau"):
        for key in ("mean", "sd", "median", "lower", "upper"):
            np.testing.assert_allclose(getattr(b, p)[key], getattr(a, p)[key] * scale,
                                       rtol=1e-6, err_msg=f"{p}.{key}")
