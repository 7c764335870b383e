"""The GHM kernel's fast paths against definitions computed independently here.

* ``GHMDesign.Sigma`` (linear terms in one product over the nodes, then the correlations raised
  to lags) against ``Z G Z' + R`` from the design's separate ``G`` and ``R`` builders, for every
  covariance form, at many nodes spanning six orders of magnitude of the scales;
* ``Kernel.loglik`` (LU solve where the condition-number bound allows it, inverse + residual
  check elsewhere) against the multivariate normal log density of y with beta integrated
  (scipy), at nodes on both paths;
* a second fit of an identical model in the same process (nodes reused) against a fresh
  integration, and no reuse when the data differ;
* the one-BLAS-thread scope restores the thread count it found.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayesmeta import blas, ghm, ghm_exact, ghm_kernel
from tests.tolerances import EXACT, REASSOCIATED


def _rows(seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    for g in ("A", "B"):
        for j in range(3):
            for t in (2, 4, 12):
                rows.append(dict(study=f"{g}{j}", subgroup=g, time=t, yi=rng.normal(),
                                 sei=rng.uniform(0.3, 0.8)))
    return pd.DataFrame(rows)


def _nodes(D, n=60, seed=0, lo=-3.0, hi=3.0):
    """Hyperparameter nodes: scales se x 10^U(lo, hi), correlations U(-0.9, 0.9) (> 0 for
    car / decay)."""
    rng = np.random.default_rng(seed)
    cols = []
    for h in D.hypers:
        if h.kind == "scale":
            cols.append(float(np.median(D.se)) * 10.0 ** rng.uniform(lo, hi, n))
        else:
            cols.append(rng.uniform(0.05 if h.bounds[0] >= 0 else -0.9, 0.9, n))
    return D.theta(np.column_stack(cols))


@pytest.mark.parametrize("kw", [
    dict(),
    dict(time_structure="ar1", correlation="decay"),
    dict(time_structure="car", correlation="ratio"),
    dict(subgroup="random", time_structure="ar1"),
    dict(time_structure="ar1", study_time="ar1"),
    dict(time_structure="car", study_time="car", r=0.0),
])
def test_sigma_equals_z_g_z_plus_r(kw):
    """Sigma at 60 nodes equals Z G Z' + R (closed-form arithmetic in another order: EXACT)."""
    D = ghm.build_design(_rows(), extrapolate=True, **kw)
    th = _nodes(D)
    Z = D.Z()
    ref = Z[None] @ D.G(th) @ Z.T[None] + D.R(th)
    S = D.Sigma(th)
    scale = np.max(np.abs(ref), axis=(1, 2))[:, None, None]
    np.testing.assert_allclose(S / scale, ref / scale, rtol=EXACT["rtol"], atol=1e-14)


def test_loglik_both_solve_paths_equal_the_normal_density():
    """log p(y | theta) = log N(y; X b0, Sigma + X P0^-1 X') (scipy, explicit covariance) at
    nodes solved by LU (condition bound <= COND_DIRECT) and through the inverse (above it);
    nodes with cond(Sigma) <= 1e6, where both are accurate to ~1e-10 relative (REASSOCIATED)."""
    D = ghm.build_design(_rows(), r=0.9)
    k = ghm_kernel.Kernel(D)
    th = _nodes(D, n=200, lo=-2.0, hi=2.5)
    S = D.Sigma(th)
    bound = np.trace(S, axis1=1, axis2=2) / k._lmin_v(th, S.shape[0])
    cond = np.linalg.cond(S)
    use = cond <= 1e6
    easy = bound <= ghm_kernel.COND_DIRECT
    assert (use & easy).sum() >= 20 and (use & ~easy).sum() >= 20
    ll, _, _ = k.loglik(th)
    X = D.X()
    b0, p0 = D.prior_mean()
    for i in np.flatnonzero(use):
        Z, G, R = D.Z(), D.G({a: v[i:i + 1] for a, v in th.items()})[0], \
            D.R({a: v[i:i + 1] for a, v in th.items()})[0]
        cov = Z @ G @ Z.T + R + (X / p0) @ X.T
        ref = stats.multivariate_normal(X @ b0, cov).logpdf(D.y)
        np.testing.assert_allclose(ll[i], ref, **REASSOCIATED)


def test_identical_model_reuses_nodes_and_equals_a_fresh_fit():
    """A second fit of the same model (design rebuilt from the same table) reuses the first
    fit's nodes while it is alive; its summary equals a fresh integration's (the reuse is
    exact), and a model with other data is integrated afresh."""
    df = _rows()
    f1 = ghm_exact.fit_ghm(df, seed=5)
    f2 = ghm_exact.fit_ghm(df, seed=5)
    assert f2.provenance.get("nodes_of_identical_fit") and f2 is not f1
    ghm_exact._FITTED.clear()
    fresh = ghm_exact.fit_ghm(df, seed=5)
    assert not fresh.provenance.get("nodes_of_identical_fit")
    pd.testing.assert_frame_equal(f2.summary(0.95), fresh.summary(0.95))
    other = ghm_exact.fit_ghm(df.assign(yi=df["yi"] + 0.1), seed=5)
    assert not other.provenance.get("nodes_of_identical_fit")
    shifted = ghm_exact.fit_ghm(df, seed=6)
    assert not shifted.provenance.get("nodes_of_identical_fit")


def test_one_blas_thread_scope_restores_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info()
              if i["user_api"] == "blas"]
    with blas.one_blas_thread():
        with blas.one_blas_thread():
            inside = [i["num_threads"] for i in threadpoolctl.threadpool_info()
                      if i["user_api"] == "blas"]
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info()
             if i["user_api"] == "blas"]
    assert all(n == 1 for n in inside[:len(before)]) and after == before


def test_loglik_with_r_integrated_equals_the_normal_density():
    """r with a prior (a different r at every node: every node takes the inverse + residual
    path) still gives the normal density of y (REASSOCIATED)."""
    D = ghm.build_design(_rows(), r=ghm.BetaPrior(2.0, 2.0))
    assert "r" in D.hyper_names
    k = ghm_kernel.Kernel(D)
    th = _nodes(D, n=30, lo=-1.0, hi=1.0)
    ll, _, _ = k.loglik(th)
    X, Z = D.X(), D.Z()
    b0, p0 = D.prior_mean()
    for i in range(30):
        t = {a: v[i:i + 1] for a, v in th.items()}
        cov = Z @ D.G(t)[0] @ Z.T + D.R(t)[0] + (X / p0) @ X.T
        np.testing.assert_allclose(ll[i], stats.multivariate_normal(X @ b0, cov).logpdf(D.y),
                                   **REASSOCIATED)
