"""Hand-written log-density + gradient kernels of the MCMC models, compiled by numba once per
machine and loaded from numba's disk cache in every later process.

Each model has two C callbacks with nutpie's signatures (``logp(dim, x, grad, logp,
user_data) -> status`` and ``expand(dim, n_out, x, out, user_data) -> status``). Everything
that varies between fits -- sizes, data, prior families and their parameters, level flags --
is read from one float64 array behind ``user_data``, so one compiled kernel serves every
dataset and prior of its model family. The callbacks are module-level functions compiled with
``cache=True``: unlike a kernel generated from a PyTensor graph (a closure numba cannot cache),
they are compiled on first use on a machine and loaded from the cache afterwards.
``fastmath`` is off: a freshly compiled kernel and a cache-loaded one then evaluate the same
IEEE operations, so the same seed gives the same draws whether the cache is cold or warm.

The densities are exactly those of the PyMC models in :mod:`bayesmeta.mcmc` (same free
variables, same transforms, normalising constants included), parameterised in the order of
PyMC's value variables. A test compares log density and gradient with PyMC's own at random
points for every model and prior family.

Layouts of ``user_data`` (``d``): ``d[0]`` = length of the array, ``d[1]`` = model code. A prior
block is 4 numbers ``(family, a, b, c)``, family codes in :data:`PRIOR_CODES`.

NNHM (model 1): ``k, mu block, tau block, yi[k], sei[k]``. Free variables
``mu, tau_u, z[k], z_new``.

Binomial-normal (model 2): ``k, mu block, tau block, baseline_sd, log-binomial constant,
ai[k], n1i[k], ci[k], n2i[k]``. Free variables ``mu, tau_u, alpha[k], z[k], z_new``.

Nested (model 3): ``n_obs, n_s, n_t, n_j, use_subgroup, use_time, use_study,
sigma_logtau_sd, contrast_a, contrast_b``, blocks of mu, sigma_subgroup, sigma_time,
sigma_study, tau0, then per row ``y, se, obs_mask, het_mask, s_idx, t_idx, j_idx`` and
``cell_centred[n_s * n_t]`` (row-major). Free variables ``mu, sigma_subgroup_u,
z_subgroup[n_s], sigma_time_u, z_cell[n_s, n_t], sigma_study_u, z_study[n_j], tau0_u,
sigma_logtau_u, z_logtau[n_s, n_t]``.
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np
from numba import types

#: Prior family -> code of the kernels' prior block. Transforms as PyMC's: identity (Normal),
#: log (half-* and Exponential), interval/logit (Uniform); the log-tau² families sample
#: x = log tau² untransformed and set tau = exp(x / 2).
PRIOR_CODES = {"Normal": 0, "HalfNormal": 1, "HalfCauchy": 2, "HalfStudentT": 3, "Uniform": 4,
               "Exponential": 5, "LogNormalTau2": 6, "LogStudentTTau2": 7}
MODEL_CODES = {"nnhm": 1, "binomial": 2, "nested": 3}

NNHM_HEAD = 11          # d[0], d[1], k, mu block, tau block
BINOMIAL_HEAD = 13      # d[0], d[1], k, mu block, tau block, baseline_sd, constant
NESTED_HEAD = 32        # d[0], d[1], 10 sizes/flags, 5 prior blocks

_LOG2PI = math.log(2.0 * math.pi)
_HALF_LOG_2_OVER_PI = 0.5 * math.log(2.0 / math.pi)
_LOG2 = math.log(2.0)

_JIT = dict(cache=True, fastmath=False, nogil=True)


@numba.njit(**_JIT)
def _softplus(x):
    if x > 0.0:
        return x + math.log1p(math.exp(-x))
    return math.log1p(math.exp(x))


@numba.njit(**_JIT)
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@numba.njit(**_JIT)
def _t_logpdf(x, nu, loc, scale):
    """Student-t log density and its derivative in x."""
    r = (x - loc) / scale
    lp = (math.lgamma(0.5 * (nu + 1.0)) - math.lgamma(0.5 * nu) - 0.5 * math.log(nu * math.pi)
          - math.log(scale) - 0.5 * (nu + 1.0) * math.log1p(r * r / nu))
    return lp, -(nu + 1.0) * r / (scale * (nu + r * r))


@numba.njit(**_JIT)
def prior_block(code, a, b, c, u):
    """One prior at unconstrained value ``u``.

    Returns (value, log density incl. the log-Jacobian of the transform, d value / d u,
    d log density / d u)."""
    if code == 0:  # Normal(a, b), identity
        r = (u - a) / b
        return u, -0.5 * _LOG2PI - math.log(b) - 0.5 * r * r, 1.0, -r / b
    if code == 6 or code == 7:  # x = log tau² ~ Normal(a, b) | StudentT(a, b, c); tau = exp(x/2)
        v = math.exp(0.5 * u)
        if code == 6:
            r = (u - a) / b
            return v, -0.5 * _LOG2PI - math.log(b) - 0.5 * r * r, 0.5 * v, -r / b
        lp, dlp = _t_logpdf(u, a, b, c)
        return v, lp, 0.5 * v, dlp
    if code == 4:  # Uniform(a, b), interval transform v = a + (b - a) sigmoid(u)
        s = _sigmoid(u)
        # -log(b - a) + log(b - a) + log s + log(1 - s)
        lp = -2.0 * _softplus(-u) - u
        return a + (b - a) * s, lp, (b - a) * s * (1.0 - s), 1.0 - 2.0 * s
    # log transform: v = exp(u), log Jacobian u
    v = math.exp(u)
    if code == 1:  # HalfNormal(a)
        r = v / a
        return v, _HALF_LOG_2_OVER_PI - math.log(a) - 0.5 * r * r + u, v, 1.0 - r * r
    if code == 2:  # HalfCauchy(a)
        r = v / a
        lp = _LOG2 - math.log(math.pi * a) - math.log1p(r * r) + u
        return v, lp, v, 1.0 - 2.0 * r * r / (1.0 + r * r)
    if code == 3:  # HalfStudentT(nu = a, sigma = b)
        lp, dlp = _t_logpdf(v, a, 0.0, b)
        return v, _LOG2 + lp + u, v, 1.0 + v * dlp
    if code == 5:  # Exponential(rate a)
        return v, math.log(a) - a * v + u, v, 1.0 - a * v
    return math.nan, -math.inf, 0.0, 0.0


@numba.njit(**_JIT)
def _std_normal(z):
    return -0.5 * _LOG2PI - 0.5 * z * z


@numba.njit(**_JIT)
def _finite(lp, g):
    for i in range(g.size):
        if not math.isfinite(g[i]):
            return 3
    if not math.isfinite(lp):
        return 4
    return 0



@numba.njit(**_JIT)
def _block(d, i, u):
    """The prior block stored at ``d[i:i + 4]`` at unconstrained value ``u``."""
    return prior_block(int(d[i]), d[i + 1], d[i + 2], d[i + 3], u)


# ---------------------------------------------------------------------------------------------
# NNHM: y_i ~ N(mu + tau z_i, se_i²), z_i ~ N(0, 1), z_new ~ N(0, 1)
# ---------------------------------------------------------------------------------------------

@numba.njit(**_JIT)
def nnhm_logp(x, g, d):
    """Log density at ``x``; its gradient is written to ``g``."""
    k = int(d[2])
    y0, s0 = NNHM_HEAD, NNHM_HEAD + k
    mu, lp_mu, dv_mu, gu_mu = _block(d, 3, x[0])
    tau, lp_tau, dv_tau, gu_tau = _block(d, 7, x[1])
    lp = lp_mu + lp_tau
    g_mu = 0.0
    g_tau = 0.0
    for i in range(k):
        z = x[2 + i]
        se = d[s0 + i]
        r = (d[y0 + i] - mu - tau * z) / se
        lp += _std_normal(z) - 0.5 * _LOG2PI - math.log(se) - 0.5 * r * r
        r /= se
        g_mu += r
        g_tau += r * z
        g[2 + i] = tau * r - z
    zn = x[k + 2]
    lp += _std_normal(zn)
    g[k + 2] = -zn
    g[0] = g_mu * dv_mu + gu_mu
    g[1] = g_tau * dv_tau + gu_tau
    return lp


@numba.njit(**_JIT)
def nnhm_expand(x, o, d):
    """Outputs: mu, z[k], z_new, tau_u, tau, theta[k], theta_new, tau2."""
    k = int(d[2])
    mu = _block(d, 3, x[0])[0]
    tau = _block(d, 7, x[1])[0]
    o[0] = mu
    for i in range(k):
        o[1 + i] = x[2 + i]
        o[k + 4 + i] = mu + tau * x[2 + i]
    o[k + 1] = x[k + 2]
    o[k + 2] = x[1]
    o[k + 3] = tau
    o[2 * k + 4] = mu + tau * x[k + 2]
    o[2 * k + 5] = tau * tau


# ---------------------------------------------------------------------------------------------
# binomial-normal: a_i ~ Bin(n1_i, expit(alpha_i + theta_i / 2)),
#                  c_i ~ Bin(n2_i, expit(alpha_i - theta_i / 2)), theta_i = mu + tau z_i
# ---------------------------------------------------------------------------------------------

@numba.njit(**_JIT)
def binomial_logp(x, g, d):
    """Log density at ``x`` (binomial coefficients: the constant ``d[12]``); gradient to ``g``."""
    k = int(d[2])
    bsd = d[11]
    a0, n10, c0, n20 = BINOMIAL_HEAD, BINOMIAL_HEAD + k, BINOMIAL_HEAD + 2 * k, \
        BINOMIAL_HEAD + 3 * k
    mu, lp_mu, dv_mu, gu_mu = _block(d, 3, x[0])
    tau, lp_tau, dv_tau, gu_tau = _block(d, 7, x[1])
    lp = lp_mu + lp_tau + d[12]
    g_mu = 0.0
    g_tau = 0.0
    for i in range(k):
        alpha = x[2 + i]
        z = x[2 + k + i]
        delta = mu + tau * z
        e1 = alpha + 0.5 * delta
        e2 = alpha - 0.5 * delta
        a, n1, c, n2 = d[a0 + i], d[n10 + i], d[c0 + i], d[n20 + i]
        # a log p + (n - a) log(1 - p) with p = expit(e): -a softplus(-e) - (n - a) softplus(e)
        lp += (-a * _softplus(-e1) - (n1 - a) * _softplus(e1)
               - c * _softplus(-e2) - (n2 - c) * _softplus(e2))
        r = alpha / bsd
        lp += -0.5 * _LOG2PI - math.log(bsd) - 0.5 * r * r + _std_normal(z)
        g1 = a - n1 * _sigmoid(e1)
        g2 = c - n2 * _sigmoid(e2)
        g_delta = 0.5 * (g1 - g2)
        g_mu += g_delta
        g_tau += g_delta * z
        g[2 + i] = g1 + g2 - r / bsd
        g[2 + k + i] = g_delta * tau - z
    zn = x[2 * k + 2]
    lp += _std_normal(zn)
    g[2 * k + 2] = -zn
    g[0] = g_mu * dv_mu + gu_mu
    g[1] = g_tau * dv_tau + gu_tau
    return lp


@numba.njit(**_JIT)
def binomial_expand(x, o, d):
    """Outputs: mu, alpha[k], z[k], z_new, tau_u, tau, theta[k], theta_new, tau2."""
    k = int(d[2])
    mu = _block(d, 3, x[0])[0]
    tau = _block(d, 7, x[1])[0]
    o[0] = mu
    for i in range(2 * k):
        o[1 + i] = x[2 + i]
    o[2 * k + 1] = x[2 * k + 2]
    o[2 * k + 2] = x[1]
    o[2 * k + 3] = tau
    for i in range(k):
        o[2 * k + 4 + i] = mu + tau * x[2 + k + i]
    o[3 * k + 4] = mu + tau * x[2 * k + 2]
    o[3 * k + 5] = tau * tau


# ---------------------------------------------------------------------------------------------
# nested: y_r ~ N(mu_cell[s, t] + u[j], se_r² + h_r tau[s, t]²) (see bayesmeta.mcmc.fit_nested)
# ---------------------------------------------------------------------------------------------

@numba.njit(**_JIT)
def _nested_sizes(d):
    return int(d[2]), int(d[3]), int(d[4]), int(d[5])


@numba.njit(**_JIT)
def nested_positions(n_s, n_t, n_j):
    """Offsets of mu, sigma_subgroup, z_subgroup, sigma_time, z_cell, sigma_study, z_study,
    tau0, sigma_logtau, z_logtau in ``x`` and the dimension."""
    n_c = n_s * n_t
    p_ss = 1
    p_zs = 2
    p_st = p_zs + n_s
    p_zc = p_st + 1
    p_sj = p_zc + n_c
    p_zj = p_sj + 1
    p_t0 = p_zj + n_j
    p_sl = p_t0 + 1
    p_zl = p_sl + 1
    return p_ss, p_zs, p_st, p_zc, p_sj, p_zj, p_t0, p_sl, p_zl, p_zl + n_c


@numba.njit(**_JIT)
def _nested_forward(x, d):
    """Parameter values and the level means: (scalars, mu_subgroup, mu_cell, u_study, tau)."""
    n_obs, n_s, n_t, n_j = _nested_sizes(d)
    use_s, use_t, use_j = d[6], d[7], d[8]
    p_ss, p_zs, p_st, p_zc, p_sj, p_zj, p_t0, p_sl, p_zl, _ = nested_positions(n_s, n_t, n_j)
    cc0 = NESTED_HEAD + 7 * n_obs
    mu = _block(d, 12, x[0])[0]
    ss = _block(d, 16, x[p_ss])[0]
    st = _block(d, 20, x[p_st])[0]
    sj = _block(d, 24, x[p_sj])[0]
    t0 = _block(d, 28, x[p_t0])[0]
    sl = math.exp(x[p_sl])
    mu_s = np.empty(n_s)
    mu_c = np.empty(n_s * n_t)
    u = np.empty(n_j)
    tau = np.empty(n_s * n_t)
    for s in range(n_s):
        mu_s[s] = mu + use_s * (ss * x[p_zs + s])
    for s in range(n_s):
        for t in range(n_t):
            c = s * n_t + t
            z = x[p_zc + c]
            if d[cc0 + c] == 0.0:
                mu_c[c] = mu_s[s] + use_t * (st * z)
            else:
                mu_c[c] = mu_s[s] + use_t * (z - mu_s[s])
    for j in range(n_j):
        u[j] = use_j * (sj * x[p_zj + j])
    lt0 = math.log(t0)
    for c in range(n_s * n_t):
        tau[c] = math.exp(lt0 + sl * x[p_zl + c])
    return (mu, ss, st, sj, t0, sl), mu_s, mu_c, u, tau


@numba.njit(**_JIT)
def nested_logp(x, g, d):
    """Log density at ``x``; its gradient is written to ``g``."""
    n_obs, n_s, n_t, n_j = _nested_sizes(d)
    n_c = n_s * n_t
    use_s, use_t, use_j = d[6], d[7], d[8]
    p_ss, p_zs, p_st, p_zc, p_sj, p_zj, p_t0, p_sl, p_zl, _ = nested_positions(n_s, n_t, n_j)
    y0 = NESTED_HEAD
    se0, m0, h0 = y0 + n_obs, y0 + 2 * n_obs, y0 + 3 * n_obs
    si0, ti0, ji0, cc0 = y0 + 4 * n_obs, y0 + 5 * n_obs, y0 + 6 * n_obs, y0 + 7 * n_obs
    mu, lp_mu, dv_mu, gu_mu = _block(d, 12, x[0])
    ss, lp_ss, dv_ss, gu_ss = _block(d, 16, x[p_ss])
    st, lp_st, dv_st, gu_st = _block(d, 20, x[p_st])
    sj, lp_sj, dv_sj, gu_sj = _block(d, 24, x[p_sj])
    t0, lp_t0, dv_t0, gu_t0 = _block(d, 28, x[p_t0])
    sl, lp_sl, dv_sl, gu_sl = prior_block(1, d[9], 0.0, 0.0, x[p_sl])  # HalfNormal(sd)
    lp = lp_mu + lp_ss + lp_st + lp_sj + lp_t0 + lp_sl
    _, mu_s, mu_c, u, tau = _nested_forward(x, d)
    g_mu_s = np.zeros(n_s)
    g_mu_c = np.zeros(n_c)
    g_u = np.zeros(n_j)
    g_tau = np.zeros(n_c)
    # likelihood; padded rows (mask 0) are N(y | 0, 1), a constant
    for r in range(n_obs):
        y = d[y0 + r]
        if d[m0 + r] == 0.0:
            lp += _std_normal(y)
            continue
        c = int(d[si0 + r]) * n_t + int(d[ti0 + r])
        j = int(d[ji0 + r])
        m = mu_c[c]
        if j < n_j:
            m += u[j]
        se = d[se0 + r]
        het = d[h0 + r]
        v = se * se + het * tau[c] * tau[c]
        e = y - m
        lp += -0.5 * _LOG2PI - 0.5 * math.log(v) - 0.5 * e * e / v
        g_m = e / v
        g_mu_c[c] += g_m
        if j < n_j:
            g_u[j] += g_m
        if het != 0.0:
            g_tau[c] += 0.5 * (e * e / v - 1.0) / v * 2.0 * het * tau[c]
    # tau[c] = exp(log tau0 + sigma_logtau z_logtau[c])
    g_t0 = 0.0
    g_sl = 0.0
    for c in range(n_c):
        z = x[p_zl + c]
        lp += _std_normal(z)
        a = g_tau[c] * tau[c]
        g_t0 += a / t0
        g_sl += a * z
        g[p_zl + c] = a * sl - z
    # u[j] = use_study sigma_study z_study[j]
    g_sj = 0.0
    for j in range(n_j):
        z = x[p_zj + j]
        lp += _std_normal(z)
        g_sj += g_u[j] * use_j * z
        g[p_zj + j] = g_u[j] * use_j * sj - z
    # cells: non-centred z ~ N(0, 1); centred z ~ N(mu_s, sigma_time)
    g_st = 0.0
    for s in range(n_s):
        for t in range(n_t):
            c = s * n_t + t
            z = x[p_zc + c]
            if d[cc0 + c] == 0.0:
                lp += _std_normal(z)
                g_mu_s[s] += g_mu_c[c]
                g_st += g_mu_c[c] * use_t * z
                g[p_zc + c] = g_mu_c[c] * use_t * st - z
            else:
                q = (z - mu_s[s]) / st
                lp += -0.5 * _LOG2PI - math.log(st) - 0.5 * q * q
                g_mu_s[s] += g_mu_c[c] * (1.0 - use_t) + q / st
                g_st += (q * q - 1.0) / st
                g[p_zc + c] = g_mu_c[c] * use_t - q / st
    # mu_s[s] = mu + use_subgroup sigma_subgroup z_subgroup[s]
    g_mu = 0.0
    g_ss = 0.0
    for s in range(n_s):
        z = x[p_zs + s]
        lp += _std_normal(z)
        g_mu += g_mu_s[s]
        g_ss += g_mu_s[s] * use_s * z
        g[p_zs + s] = g_mu_s[s] * use_s * ss - z
    g[0] = g_mu * dv_mu + gu_mu
    g[p_ss] = g_ss * dv_ss + gu_ss
    g[p_st] = g_st * dv_st + gu_st
    g[p_sj] = g_sj * dv_sj + gu_sj
    g[p_t0] = g_t0 * dv_t0 + gu_t0
    g[p_sl] = g_sl * dv_sl + gu_sl
    return lp


@numba.njit(**_JIT)
def nested_expand(x, o, d):
    """Outputs: mu, z_subgroup[n_s], z_cell[n_c], z_study[n_j], z_logtau[n_c], then (u, value)
    of sigma_subgroup, sigma_time, sigma_study, tau0, sigma_logtau, then mu_subgroup[n_s],
    mu_cell[n_c], u_study[n_j], tau[n_c], contrast[n_t], contrast_subgroup."""
    n_obs, n_s, n_t, n_j = _nested_sizes(d)
    n_c = n_s * n_t
    p_ss, p_zs, p_st, p_zc, p_sj, p_zj, p_t0, p_sl, p_zl, _ = nested_positions(n_s, n_t, n_j)
    sc, mu_s, mu_c, u, tau = _nested_forward(x, d)
    ca, cb = int(d[10]), int(d[11])
    o[0] = sc[0]
    i = 1
    for a in range(n_s):
        o[i] = x[p_zs + a]
        i += 1
    for a in range(n_c):
        o[i] = x[p_zc + a]
        i += 1
    for a in range(n_j):
        o[i] = x[p_zj + a]
        i += 1
    for a in range(n_c):
        o[i] = x[p_zl + a]
        i += 1
    pos = (p_ss, p_st, p_sj, p_t0, p_sl)
    for b in range(5):
        o[i] = x[pos[b]]
        o[i + 1] = sc[b + 1]
        i += 2
    for a in range(n_s):
        o[i] = mu_s[a]
        i += 1
    for a in range(n_c):
        o[i] = mu_c[a]
        i += 1
    for a in range(n_j):
        o[i] = u[a]
        i += 1
    for a in range(n_c):
        o[i] = tau[a]
        i += 1
    for t in range(n_t):
        o[i] = mu_c[ca * n_t + t] - mu_c[cb * n_t + t]
        i += 1
    o[i] = mu_s[ca] - mu_s[cb]


# ---------------------------------------------------------------------------------------------
# C callbacks (nutpie's signatures) and their compiled, disk-cached instances
# ---------------------------------------------------------------------------------------------

LOGP_SIG = types.int64(types.uint64, types.CPointer(types.double), types.CPointer(types.double),
                       types.CPointer(types.double), types.voidptr)
EXPAND_SIG = types.int64(types.uint64, types.uint64, types.CPointer(types.double),
                         types.CPointer(types.double), types.voidptr)


@numba.njit(**_JIT)
def _user_data(ud):
    n = int(numba.carray(ud, (1,), dtype=np.float64)[0])
    return numba.carray(ud, (n,), dtype=np.float64)


@numba.njit(**_JIT)
def _ndim(d):
    code = int(d[1])
    if code == 1:
        return int(d[2]) + 3
    if code == 2:
        return 2 * int(d[2]) + 3
    n_obs, n_s, n_t, n_j = _nested_sizes(d)
    return nested_positions(n_s, n_t, n_j)[9]


@numba.njit(**_JIT)
def _n_out(d):
    code = int(d[1])
    k = int(d[2])
    if code == 1:
        return 2 * k + 6
    if code == 2:
        return 3 * k + 6
    n_obs, n_s, n_t, n_j = _nested_sizes(d)
    n_c = n_s * n_t
    return 1 + 2 * n_s + 4 * n_c + 2 * n_j + 10 + n_t + 1


def _nnhm_logp_c(dim, x_, g_, lp_, ud):
    d = _user_data(ud)
    if int(d[1]) != 1 or dim != _ndim(d):
        return -1
    x = numba.carray(x_, (dim,))
    g = numba.carray(g_, (dim,))
    lp = nnhm_logp(x, g, d)
    numba.carray(lp_, (1,))[0] = lp
    return _finite(lp, g)


def _binomial_logp_c(dim, x_, g_, lp_, ud):
    d = _user_data(ud)
    if int(d[1]) != 2 or dim != _ndim(d):
        return -1
    x = numba.carray(x_, (dim,))
    g = numba.carray(g_, (dim,))
    lp = binomial_logp(x, g, d)
    numba.carray(lp_, (1,))[0] = lp
    return _finite(lp, g)


def _nested_logp_c(dim, x_, g_, lp_, ud):
    d = _user_data(ud)
    if int(d[1]) != 3 or dim != _ndim(d):
        return -1
    x = numba.carray(x_, (dim,))
    g = numba.carray(g_, (dim,))
    lp = nested_logp(x, g, d)
    numba.carray(lp_, (1,))[0] = lp
    return _finite(lp, g)


def _nnhm_expand_c(dim, n_out, x_, o_, ud):
    d = _user_data(ud)
    if int(d[1]) != 1 or dim != _ndim(d) or n_out != _n_out(d):
        return -1
    nnhm_expand(numba.carray(x_, (dim,)), numba.carray(o_, (n_out,)), d)
    return 0


def _binomial_expand_c(dim, n_out, x_, o_, ud):
    d = _user_data(ud)
    if int(d[1]) != 2 or dim != _ndim(d) or n_out != _n_out(d):
        return -1
    binomial_expand(numba.carray(x_, (dim,)), numba.carray(o_, (n_out,)), d)
    return 0


def _nested_expand_c(dim, n_out, x_, o_, ud):
    d = _user_data(ud)
    if int(d[1]) != 3 or dim != _ndim(d) or n_out != _n_out(d):
        return -1
    nested_expand(numba.carray(x_, (dim,)), numba.carray(o_, (n_out,)), d)
    return 0


_PY = {"nnhm": (_nnhm_logp_c, _nnhm_expand_c),
       "binomial": (_binomial_logp_c, _binomial_expand_c),
       "nested": (_nested_logp_c, _nested_expand_c)}
_LOADED: dict[str, tuple] = {}


def callbacks(model: str):
    """``(logp cfunc, expand cfunc, seconds)`` of ``model`` ("nnhm", "binomial", "nested").

    Compiled on the first call on a machine (about 1-5 s) and loaded from numba's disk cache
    in later processes; ``seconds`` is the time this call spent compiling or loading (0 when
    this process already has them)."""
    if model in _LOADED:
        return (*_LOADED[model], 0.0)
    t0 = time.perf_counter()
    logp_py, expand_py = _PY[model]
    logp = numba.cfunc(LOGP_SIG, cache=True, fastmath=False)(logp_py)
    expand = numba.cfunc(EXPAND_SIG, cache=True, fastmath=False)(expand_py)
    _LOADED[model] = (logp, expand)
    return logp, expand, time.perf_counter() - t0
