"""The cached numba kernels of bayesmeta.mcmc_kernels / mcmc_backend.

Reference for every check here: PyMC's own model of the same fit (``bayesmeta.mcmc._build_*``,
the graphs nutpie sampled before the kernels existed). PyMC derives the log density of each
distribution and its transform Jacobian itself and differentiates the graph automatically, so
log density, gradient, initial point and deterministics are compared with an independent
implementation at random points. Sampling accuracy of the kernel route against the exact NNHM
engine and the nested model's closed-form reduction is checked in tests/test_mcmc.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayesmeta import mcmc, mcmc_backend, priors
from tests.tolerances import REASSOCIATED

ROOT = Path(__file__).resolve().parents[1]


def _pymc_functions(model):
    """(logp, dlogp, deterministics fn, initial point, value-var shapes) of a PyMC model,
    compiled with PyTensor's quick FAST_COMPILE mode (evaluation speed does not matter here)."""
    from pymc.initial_point import make_initial_point_fn

    vv = model.value_vars
    ip = make_initial_point_fn(model=model, return_transformed=True, jitter_rvs=set())(0)
    shapes = [np.shape(ip[v.name]) for v in vv]
    dets = [d.name for d in model.deterministics]
    det_fn = model.compile_fn(model.replace_rvs_by_values([model[n] for n in dets]), inputs=vv,
                              mode="FAST_COMPILE", on_unused_input="ignore")
    return (model.compile_logp(mode="FAST_COMPILE"), model.compile_dlogp(mode="FAST_COMPILE"),
            (dets, det_fn), np.concatenate([np.ravel(ip[v.name]) for v in vv]),
            [(v.name, s) for v, s in zip(vv, shapes)])


def _unflat(x, shapes):
    out, i = {}, 0
    for name, s in shapes:
        n = int(np.prod(s))
        out[name] = x[i:i + n].reshape(s)
        i += n
    return out


def _compare(model, problem, n_points=12, seed=0, scale=0.8):
    """Kernel vs PyMC: log density and gradient at random points, the initial point without
    jitter, and every deterministic (and free variable) the kernel outputs."""
    logp, dlogp, (dets, det_fn), x0, shapes = _pymc_functions(model)
    assert [n for n, _ in shapes][:1] == ["mu"]
    assert sum(int(np.prod(s)) for _, s in shapes) == problem.ndim
    np.testing.assert_allclose(problem.x0, x0, **REASSOCIATED)
    rng = np.random.default_rng(seed)
    for _ in range(n_points):
        x = rng.normal(size=problem.ndim) * scale
        pt = _unflat(x, shapes)
        lp, g, status = mcmc_backend.logp_and_grad(problem, x)
        assert status == 0
        np.testing.assert_allclose(lp, logp(pt), **REASSOCIATED)
        np.testing.assert_allclose(g, dlogp(pt), **REASSOCIATED)
        out = mcmc_backend.expand(problem, x)
        for name, val in zip(dets, det_fn(pt)):
            np.testing.assert_allclose(out[name], val, **REASSOCIATED, err_msg=name)
        for name, val in pt.items():  # free variables are output as themselves
            if not name.endswith("__"):
                np.testing.assert_allclose(out[name], val, **REASSOCIATED, err_msg=name)
    assert set(problem.drop) <= {n for n, _ in shapes}


# ---------------------------------------------------------------------------------------------
# NNHM and binomial-normal
# ---------------------------------------------------------------------------------------------

TAU_PRIORS = {
    "halfnormal": priors.HalfNormal(0.5), "halfcauchy": priors.HalfCauchy(0.3),
    "halfstudentt": priors.HalfStudentT(3.0, 0.4), "uniform": priors.Uniform(0.1, 2.0),
    "exponential": priors.Exponential(2.0), "lognormal-tau2": priors.LogNormalTau2(-2.5, 1.7),
    "logt-tau2": priors.LogStudentTTau2(5.0, -3.4, 2.6)}
QUICK = ("halfnormal", "uniform", "lognormal-tau2")


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n in QUICK else pytest.mark.slow) for n in TAU_PRIORS])
def test_nnhm_kernel_equals_pymc_model(name):
    """Reference: PyMC's NNHM (mcmc._build_nnhm), every tau prior family (3 in the default
    run, all 7 with -m slow)."""
    rng = np.random.default_rng(1)
    k = 5
    yi, sei = rng.normal(size=k), rng.uniform(0.2, 1.0, k)
    mp, tp = priors.Normal(0.3, 2.0), TAU_PRIORS[name]
    model, _ = mcmc._build_nnhm(k, mp, tp, yi, sei)()
    _compare(model, mcmc_backend.nnhm_problem(yi, sei, mp, tp))


@pytest.mark.parametrize("tp", [priors.HalfNormal(0.5),
                                pytest.param(priors.LogStudentTTau2(5.0, -3.4, 2.6),
                                             marks=pytest.mark.slow)])
def test_binomial_kernel_equals_pymc_model(tp):
    """Reference: PyMC's binomial-normal model (mcmc._build_binomial), including a zero cell
    and an all-events arm (the binomial coefficients enter as one constant)."""
    data = {"ai": np.array([0.0, 3, 12, 20]), "n1i": np.array([15.0, 30, 40, 20]),
            "ci": np.array([2.0, 0, 9, 14]), "n2i": np.array([14.0, 28, 41, 22])}
    mp = priors.Normal(0.0, 4.0)
    model, _ = mcmc._build_binomial(4, mp, tp, 5.0, data)()
    _compare(model, mcmc_backend.binomial_problem(data["ai"], data["n1i"], data["ci"],
                                                  data["n2i"], mp, tp, 5.0), scale=1.5)


# ---------------------------------------------------------------------------------------------
# nested model
# ---------------------------------------------------------------------------------------------

def _meld2014():
    d = pd.read_csv(ROOT / "data" / "meld_2014_fig3.csv")
    d["yi"] = d["m1i"] - d["m2i"]
    d["sei"] = np.sqrt(d["sd1i"] ** 2 / d["n1i"] + d["sd2i"] ** 2 / d["n2i"])
    return d[["study", "time", "yi", "sei"]]


#: two subgroups, a study with rows in both, a subgroup-pooled row, three weeks
TWO = pd.DataFrame({"time": [12, 12, 24, 24, 36, 36], "subgroup": ["A", "B", "A", "B", "B", "A"],
                    "study": ["s1", "s1", "s1", "s2", "s2", ""],
                    "row_kind": ["study"] * 5 + ["subgroup_pooled"],
                    "yi": [-1.0, -2.0, -1.5, -0.5, -0.7, -3.0],
                    "sei": [0.5, 0.6, 0.7, 0.4, 0.5, 0.9]})
#: one subgroup, four precise pooled cells that clearly differ: cells fitted centred
CENTRED = pd.DataFrame({"time": [4, 8, 12, 24], "row_kind": ["pooled"] * 4,
                        "yi": [-0.5, -2.5, -4.0, -1.0], "sei": [0.1, 0.12, 0.1, 0.15]})

NESTED_CASES = {
    "meld2014-padded": (_meld2014, {}, None),
    "meld2014-halfcauchy": (_meld2014, {"het_prior": priors.HalfCauchy(0.5)}, {}),
    "two-subgroups-lognormal": (lambda: TWO, {"het_prior": priors.LogNormalTau2(-2.0, 1.5),
                                              "tau_prior": priors.HalfStudentT(3.0, 1.0)}, {}),
    "two-subgroups-uniform-padded": (lambda: TWO, {"het_prior": priors.Uniform(0.0, 3.0)}, None),
    "centred-cells": (lambda: CENTRED, {}, {}),
}
QUICK_NESTED = ("meld2014-padded", "two-subgroups-lognormal", "centred-cells")


@pytest.mark.parametrize("case", [
    pytest.param(n, marks=() if n in QUICK_NESTED else pytest.mark.slow) for n in NESTED_CASES])
def test_nested_kernel_equals_pymc_model(case):
    """Reference: PyMC's nested model (mcmc._build_nested with the same packed data), at real
    and padded sizes, with every level switched on or off by the data, centred and
    non-centred cells, and log-transformed, interval-transformed and log-tau² prior families
    (3 cases in the default run, 5 with -m slow)."""
    import pymc as pm

    make, kw, pad = NESTED_CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = mcmc._nested_prepare(make(), measure="MD", mu_prior=priors.Normal(0.5, 3.0), **kw)
    sizes = prep.padded(pad)
    data = mcmc._nested_data(prep, sizes)
    if case == "centred-cells":
        assert data["nested_par"][-prep.sizes[2]:].sum() >= 3  # the centred branch is tested
    model, names = mcmc._build_nested(tuple(sizes), prep.mu_p, prep.het_p, prep.tau_p)()
    with model:
        pm.set_data({k: data[k] for k in names})
    _compare(model, mcmc._nested_problem(prep, sizes, data), scale=0.7)


# ---------------------------------------------------------------------------------------------
# the trace: nutpie's raw Arrow output read directly
# ---------------------------------------------------------------------------------------------

def _problems():
    mp = priors.Normal(0.0, 4.0)
    yield mcmc_backend.nnhm_problem(np.array([0.1, -0.3, 0.4, 0.2]),
                                    np.array([0.2, 0.3, 0.25, 0.4]), mp, priors.HalfNormal(0.5))
    yield mcmc_backend.binomial_problem(np.array([0.0, 3, 12]), np.array([15.0, 30, 40]),
                                        np.array([2.0, 0, 9]), np.array([14.0, 28, 41]), mp,
                                        priors.HalfNormal(0.5), 5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = mcmc._nested_prepare(TWO, measure="MD", mu_prior=priors.Normal(0.5, 3.0))
    sizes = prep.padded(None)
    yield mcmc._nested_problem(prep, sizes, mcmc._nested_data(prep, sizes))


@pytest.mark.parametrize("problem", list(_problems()), ids=["nnhm", "binomial", "nested"])
def test_raw_trace_equals_nutpie_conversion(problem):
    """Reference: nutpie's own Arrow -> ArviZ conversion (``nutpie.sample`` without
    ``return_raw_trace``) of the same run (same seed, so the same draws): every posterior
    variable and every numeric per-draw statistic identical in values, dtype and dims, with
    NaN padding and null fills as nutpie's; only nutpie's text column (divergence messages)
    is not kept."""
    import nutpie

    from bayesmeta.mcmc_kernels import callbacks

    logp, expand, _ = callbacks(problem.model)
    model = mcmc_backend._model_class()(dims=problem.dims,
                                        reparameterized_names=list(problem.drop),
                                        problem=problem, logp_address=logp.address,
                                        expand_address=expand.address)
    kw = dict(draws=60, tune=40, chains=3, cores=1, seed=4, progress_bar=False,
              save_warmup=False)
    ref = nutpie.sample(model, **kw)
    mine = mcmc_backend._trace_tree(nutpie.sample(model, return_raw_trace=True, **kw), problem)
    for group in ("posterior", "sample_stats"):
        a, b = ref[group].to_dataset(), mine[group].to_dataset()
        assert set(a.data_vars) - set(b.data_vars) <= {"divergence_message"}, group
        assert set(b.data_vars) <= set(a.data_vars), group
        for v in b.data_vars:
            assert (a[v].dims, a[v].dtype) == (b[v].dims, b[v].dtype), v
            np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
        for c in b.coords:
            assert list(map(str, a[c].values)) == list(map(str, b[c].values)), c


# ---------------------------------------------------------------------------------------------
# the latency contract: no PyMC, no compile on the kernel route
# ---------------------------------------------------------------------------------------------

_NO_PYMC = r"""
import sys, numpy as np
from bayesmeta import mcmc
fit = mcmc.fit_nnhm([0.1, -0.3, 0.4], [0.2, 0.3, 0.25], mu_prior="normal:0:1",
                    tau_prior="halfnormal:0.5", draws=50, tune=50, chains=2, cores=1, seed=3,
                    warn=False)
assert fit.datatree.attrs["nutpie_route"] == "kernels", fit.datatree.attrs
print(sorted(m for m in ("pymc", "pytensor") if m in sys.modules))
"""


def test_kernel_route_needs_no_pymc():
    """Reference: the rule that the kernel route is PyMC-free (its whole point is to skip
    PyMC's import and the per-process compile): a fresh process fitting the NNHM imports
    neither pymc nor pytensor."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", _NO_PYMC], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_unsupported_priors_take_the_pymc_route():
    """Reference: the dispatch rule (mcmc._kernel_route): only a Normal mu prior and named tau
    families go to the kernels; the pymc sampler never does; an unknown route is refused."""
    assert mcmc_backend.supported(priors.Normal(0, 1), priors.HalfNormal(1.0))
    assert not mcmc_backend.supported(priors.Flat(), priors.HalfNormal(1.0))
    assert not mcmc_backend.supported(priors.Normal(0, 1), priors.Normal(0, 1))
    s = mcmc.SamplerSettings()
    assert mcmc._kernel_route(s, priors.Normal(0, 1), priors.HalfNormal(1.0))
    assert not mcmc._kernel_route(mcmc.SamplerSettings(sampler="pymc"), priors.Normal(0, 1),
                                  priors.HalfNormal(1.0))
    old = mcmc.NUTPIE_ROUTE
    try:
        mcmc.NUTPIE_ROUTE = "pytensor"
        assert not mcmc._kernel_route(s, priors.Normal(0, 1), priors.HalfNormal(1.0))
        mcmc.NUTPIE_ROUTE = "jax"
        with pytest.raises(Exception, match="NUTPIE_ROUTE"):
            mcmc._kernel_route(s, priors.Normal(0, 1), priors.HalfNormal(1.0))
    finally:
        mcmc.NUTPIE_ROUTE = old


def test_stacked_summary_equals_arviz_per_scalar():
    """mcmc._summary stacks the reported scalars into one variable before az.summary.
    Reference: az.summary of each scalar as its own variable (95% ETI) and numpy's median:
    identical numbers, same rows and columns."""
    import arviz as az
    import xarray as xr

    fit = mcmc.fit_nnhm([0.1, -0.3, 0.4, 0.2], [0.2, 0.3, 0.25, 0.4], mu_prior="normal:0:1",
                        tau_prior="halfnormal:0.5", draws=200, tune=200, chains=2, cores=1,
                        seed=5, warn=False)
    ds = xr.Dataset({r.label: mcmc._draws(fit.datatree, r).reset_coords(drop=True)
                     for r in fit.reports})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pd.DataFrame(az.summary(ds, ci_prob=0.95, ci_kind="eti"))
    ref["median"] = [float(np.median(ds[c].values)) for c in ref.index]
    got = mcmc._summary(fit.datatree, fit.reports)
    assert list(got.index) == list(ref.index) and list(got.columns) == list(ref.columns)
    np.testing.assert_array_equal(got.to_numpy(float), ref.to_numpy(float))
