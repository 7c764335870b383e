"""Named tolerance tiers: each is named by *why* two numbers may differ.

EXACT      closed-form arithmetic vs reference software (both IEEE double): rtol 1e-10.
METAFOR    closed-form estimators vs metafor JSON written with %.17g: rtol 1e-6 is the agreed
           contract; our closed forms typically agree to ~1e-12.
OPTIMIZER  iterative tau² (REML/ML/PM/EB/SJ iterated) vs metafor: both stop at a convergence
           tolerance (metafor threshold 1e-5 on the tau² step); rtol 1e-5 on tau², and its
           propagated effect on estimates/SEs.
QUADRATURE exact-engine summaries vs an independent integration: abs 1e-6 (the exact engine's contract).
CROSSED    an effect mixture crossed with a tau grid read from the interpolated H table
           (bayesmeta.crossed) vs the direct K x J sum: CDF abs 1e-8 (3e-9 measured), quantiles
           rtol 1e-6 (2e-7 measured); the contract is 1e-4 on probabilities, 1e-5 on quantiles.
TILT       the theta quadrature of the update after a new trial vs the direct K x J conjugate
           sum: abs 1e-9 (1e-10 measured with the interpolated kernel, 1e-15 exact kernel).
published(d) a number printed with d decimals: atol = 0.5 * 10**-d (+ tiny float slack).
MCMC       never a constant: atol = Z_MCSE * mcse computed from the run itself.
"""

EXACT = dict(rtol=1e-10, atol=1e-12)
METAFOR = dict(rtol=1e-6, atol=1e-9)
OPTIMIZER = dict(rtol=1e-5, atol=1e-7)
QUADRATURE = dict(rtol=0.0, atol=1e-6)
CROSSED_CDF = dict(rtol=0.0, atol=1e-8)
CROSSED_Q = dict(rtol=1e-6, atol=1e-9)
TILT = dict(rtol=0.0, atol=1e-9)
Z_MCSE = 4.0


def published(decimals: int) -> dict:
    """Tolerance for a number printed with ``decimals`` decimals (rounding half-unit)."""
    return dict(rtol=0.0, atol=0.5 * 10.0 ** (-decimals) + 1e-12)

#: The same density evaluated by two implementations in IEEE double (hand-written kernel vs
#: PyTensor's graph): operation order and special functions (lgamma, log1p) differ; measured
#: largest relative difference ~1e-9 (HalfStudentT).
REASSOCIATED = dict(rtol=1e-8, atol=1e-10)
