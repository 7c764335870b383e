"""Tests for bayesmeta.batch (vectorised classical and exact-Bayes engines).

References: the scalar engines, each itself checked against independent references —
:func:`bayesmeta.classical.rma` (metafor JSON) and :func:`bayesmeta.exact.fit_exact` (nested
adaptive quadrature). Agreement is required to 1e-6 relative on a few hundred random datasets
with ragged k (NaN padding), variance scales from 1e-2 to 1e2 and tau from 0 to large.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bayesmeta import batch, classical, exact, priors
from bayesmeta.exceptions import DataError, SpecError

N = 300


def _random_batch(n, seed):
    rng = np.random.default_rng(seed)
    K = rng.integers(2, 16, size=n)
    Y = np.full((n, K.max()), np.nan)
    V = np.full((n, K.max()), np.nan)
    for i, k in enumerate(K):
        v = rng.uniform(0.01, 0.5, k) * rng.choice([0.01, 1.0, 100.0])
        tau = rng.choice([0.0, 0.1, 0.5, 2.0]) * 2 * np.sqrt(np.median(v))
        V[i, :k] = v
        Y[i, :k] = rng.normal(0.3, np.sqrt(v + tau ** 2))
    return Y, V, K


@pytest.fixture(scope="module")
def data():
    return _random_batch(N, 20240)


def test_classical_batch_matches_rma(data):
    """Reference: classical.rma per dataset (FE/DL closed form, PM/REML iterated to 1e-10)."""
    Y, V, K = data
    fits = batch.classical_batch(Y, V)
    skipped = 0
    for i in range(N):
        y, v = Y[i, :K[i]], V[i, :K[i]]
        for m in batch.BATCH_METHODS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rz = classical.rma(y, v, method=m, test="z")
                rk = classical.rma(y, v, method=m, test="knha")
            if not rz.converged:  # the scalar reference failed; see test_reml_hard_case
                skipped += 1
                continue
            d = fits[m]
            np.testing.assert_allclose(d["tau2"][i], rz.tau2, rtol=1e-6, atol=1e-10)
            np.testing.assert_allclose(
                [d["estimate"][i], d["se"][i], d["ci_low"][i], d["ci_high"][i]],
                [rz.estimate, rz.se, rz.ci_low, rz.ci_high], rtol=1e-6, atol=1e-12)
            np.testing.assert_allclose(
                [d["se_knha"][i], d["ci_low_knha"][i], d["ci_high_knha"][i]],
                [rk.se, rk.ci_low, rk.ci_high], rtol=1e-6, atol=1e-12)
    assert skipped <= 3
    assert all(fits[m]["converged"].all() for m in batch.BATCH_METHODS)
    f = fits.to_frame()
    assert len(f) == N and "REML.ci_low_knha" in f.columns


def test_reml_hard_case():
    """A dataset where plain Fisher scoring cycles (metafor without stepadj stops with "Fisher
    scoring algorithm did not converge"). Reference: metafor 3.8-1,
    rma(y, v, control=list(stepadj=0.5, maxiter=1000, threshold=1e-12)), printed with %.17g;
    metafor's optimize() of the REML log-likelihood gives 2.326303."""
    y = [0.75970689, 7.32961295, 0.34568303, -0.091821, 0.84494595, 4.70121927, 3.03044257,
         0.01576841, 6.25137991, 1.27434748, -0.99056711, 2.83413869, -1.95862665]
    v = [4.01254948, 36.04342429, 46.94079995, 39.39823584, 8.6159747, 1.41747963,
         19.51080815, 1.01811744, 28.49265488, 6.62549193, 19.71831982, 29.6056644, 23.89917938]
    f = batch.classical_batch([y], [v], methods=["REML"])["REML"]
    assert f["converged"][0]
    np.testing.assert_allclose(f["tau2"][0], 2.3263038530566038, rtol=1e-8)
    np.testing.assert_allclose(f["estimate"][0], 1.7696298077489534, rtol=1e-8)
    np.testing.assert_allclose(f["se"][0], 0.91656458932093299, rtol=1e-8)


PRIORS = [
    (priors.HalfNormal(0.5), None),
    (priors.HalfCauchy(0.3), priors.Normal(0.0, 1.0)),
    (priors.NAMED_PRIORS["turner2015-all"], None),
    (priors.NAMED_PRIORS["rhodes2015-smd"], None),
]


@pytest.mark.parametrize("tau_prior,mu_prior", PRIORS, ids=lambda p: str(p))
def test_exact_batch_matches_fit_exact(data, tau_prior, mu_prior):
    """Reference: exact.fit_exact (adaptive quadrature, itself checked against nested
    integration). Errors relative to max(|value|, posterior sd of mu)."""
    Y, V, K = data
    idx = np.arange(0, N, 3)  # 100 datasets per prior keeps the scalar reference cheap
    eb = batch.exact_batch(Y[idx], V[idx], tau_prior=tau_prior, mu_prior=mu_prior)
    for j, i in enumerate(idx):
        r = exact.fit_exact(Y[i, :K[i]], vi=V[i, :K[i]], tau_prior=tau_prior,
                            mu_prior=mu_prior)
        mu = r.mu
        scale = max(abs(mu["mean"]), mu["sd"])
        # the log-t prior on tau² decays only polynomially in log tau at both ends, so both
        # engines' truncations matter at ~1e-6: 1e-5 there, 1e-6 for every other prior
        rel = 1e-5 if "LogStudentT" in str(tau_prior) else 1e-6
        for ours, ref in [("mu_mean", "mean"), ("mu_sd", "sd"), ("mu_lower", "lower"),
                          ("mu_upper", "upper"), ("mu_median", "median")]:
            assert abs(eb[ours].iloc[j] - mu[ref]) <= rel * max(abs(mu[ref]), scale), \
                (i, ours, eb[ours].iloc[j], mu[ref])
        # E[tau] under the log-t prior on tau² has a polynomially decaying tail in log tau
        # beyond the grid's upper end (hi_rel = 1e12 times the data scale): looser there
        rt = 1e-3 if "LogStudentT" in str(tau_prior) else 1e-6
        np.testing.assert_allclose(eb["tau_mean"].iloc[j], r.tau["mean"], rtol=rt)


def test_exact_batch_blocks_and_fixed_k():
    """Block processing gives the same numbers as one block (fixed k, no padding)."""
    rng = np.random.default_rng(5)
    V = rng.uniform(0.05, 0.3, (50, 4))
    Y = rng.normal(0, np.sqrt(V + 0.1))
    a = batch.exact_batch(Y, V, tau_prior=priors.HalfNormal(0.5))
    b = batch.exact_batch(Y, V, tau_prior=priors.HalfNormal(0.5), block=7)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-12)


def test_batch_errors():
    with pytest.raises(DataError, match="shapes differ"):
        batch.classical_batch(np.zeros((2, 3)), np.ones((2, 2)))
    with pytest.raises(DataError, match="V must be > 0"):
        batch.classical_batch(np.zeros((1, 2)), np.array([[1.0, -1.0]]))
    with pytest.raises(SpecError, match="Invalid method 'SJ'"):
        batch.classical_batch(np.zeros((1, 2)), np.ones((1, 2)), methods=["SJ"])
    with pytest.raises(SpecError, match="tau_prior must be"):
        batch.exact_batch(np.zeros((1, 2)), np.ones((1, 2)), tau_prior=0.5)
