"""Sampling backend of :mod:`bayesmeta.mcmc`: nutpie's NUTS driven by the disk-cached kernels
of :mod:`bayesmeta.mcmc_kernels`.

Why: nutpie's own route compiles the PyTensor graph of each model into a numba C callback that
numba cannot cache, so every process paid a 5-15 s compile before sampling for well under a
second. Here the log density and gradient of each model family are hand-written kernels,
compiled once per machine and loaded in a fraction of a second afterwards; data, sizes and
priors are numbers behind the callback's ``user_data`` pointer, so no fit ever compiles again.
The models are those of :mod:`bayesmeta.mcmc` (a test checks log density and gradient against
PyMC's at random points); PyMC itself is not imported on this route.

A :class:`Problem` is what nutpie needs: the packed data, the dimension, the initial point
(PyMC's: the support point of every free variable with U(-1, 1) jitter in the unconstrained
space, drawn from the seed nutpie passes for each chain) and the names, shapes and dims of the
outputs. Priors the kernels do not know make :func:`supported` return False and the caller
uses the PyMC model instead.

nutpie's interface for compiled C callbacks (``nutpie._lib.LogpFunc``, ``ExpandFunc``,
``PyMcModel``, which ``nutpie.compile_pymc_model`` uses itself) is not documented API; it is
checked for nutpie 0.16 (:data:`NUTPIE_TESTED`), and any other version falls back to the PyMC
route with the reason recorded (:func:`available`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

#: nutpie versions whose private C-callback interface this module was checked against.
NUTPIE_TESTED = ("0.16.",)


# ---------------------------------------------------------------------------------------------
# prior blocks
# ---------------------------------------------------------------------------------------------

def _family(p) -> str:
    return type(p).__name__


def prior_block(p) -> list[float]:
    """``[code, a, b, c]`` of prior ``p`` for the kernels (see ``mcmc_kernels.prior_block``)."""
    from bayesmeta.mcmc_kernels import PRIOR_CODES

    fam = _family(p)
    params = {"Normal": ("mean", "sd"), "HalfNormal": ("scale",), "HalfCauchy": ("scale",),
              "HalfStudentT": ("nu", "scale"), "Uniform": ("lower", "upper"),
              "Exponential": ("rate",), "LogNormalTau2": ("mean", "sd"),
              "LogStudentTTau2": ("nu", "mean", "scale")}[fam]
    vals = [float(getattr(p, a)) for a in params]
    return [float(PRIOR_CODES[fam])] + vals + [0.0] * (3 - len(vals))


def _start(p) -> float:
    """Unconstrained value of PyMC's support point of prior ``p`` (mean of Normal/StudentT,
    the scale of half-* priors, the mean of the Exponential, the midpoint of the Uniform)."""
    fam = _family(p)
    if fam in ("Normal", "LogNormalTau2", "LogStudentTTau2"):
        return float(p.mean)
    if fam == "Uniform":
        return 0.0
    if fam == "Exponential":
        return math.log(1.0 / float(p.rate))
    return math.log(float(p.scale))


def _free_name(p, name: str) -> tuple[str, bool]:
    """(name of the unconstrained variable, whether it is a transform to drop) as PyMC names
    them: ``tau_log__`` / ``tau_interval__`` (dropped), ``log_tau2`` (a reported variable)."""
    fam = _family(p)
    if fam in ("LogNormalTau2", "LogStudentTTau2"):
        return f"log_{name}2", False
    return (f"{name}_interval__" if fam == "Uniform" else f"{name}_log__"), True


def supported(mu_prior, *tau_priors) -> bool:
    """True when the kernels implement these priors (mu: Normal; tau: every named family)."""
    from bayesmeta.mcmc_kernels import PRIOR_CODES

    return (_family(mu_prior) == "Normal"
            and all(_family(p) in PRIOR_CODES and _family(p) != "Normal" for p in tau_priors))


@lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    """(whether this backend can run, why not). Needs numba and a nutpie version whose
    C-callback interface was checked (:data:`NUTPIE_TESTED`)."""
    try:
        import numba  # noqa: F401
        import nutpie
        from nutpie import _lib
    except ImportError as err:
        return False, f"import failed: {err}"
    if not str(nutpie.__version__).startswith(NUTPIE_TESTED):
        return False, f"nutpie {nutpie.__version__} not checked (checked: {NUTPIE_TESTED})"
    if not all(hasattr(_lib, a) for a in ("LogpFunc", "ExpandFunc", "PyMcModel", "PyVariable")):
        return False, "nutpie._lib lacks the C-callback interface"
    return True, ""


# ---------------------------------------------------------------------------------------------
# problems: packed data + output description
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One fit for the kernels: ``model`` ("nnhm" | "binomial" | "nested"), packed ``data``,
    ``ndim``, the support point ``x0``, outputs ``(name, shape, dims)`` in the kernel's order,
    ``drop`` (transform outputs not stored) and ``coords``."""

    model: str
    data: np.ndarray
    ndim: int
    x0: np.ndarray
    outputs: list[tuple[str, tuple[int, ...], tuple[str, ...]]]
    coords: dict[str, list[str]]
    drop: tuple[str, ...] = ()
    dims: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "dims", {n: d for n, _, d in self.outputs if d})

    @property
    def n_out(self) -> int:
        return int(sum(int(np.prod(s)) for _, s, _ in self.outputs))


def _pack(model: str, head: list[float], *arrays) -> np.ndarray:
    from bayesmeta.mcmc_kernels import MODEL_CODES

    body = [np.asarray(a, dtype=float).ravel() for a in arrays]
    n = 2 + len(head) + sum(b.size for b in body)
    d = np.concatenate([[float(n), float(MODEL_CODES[model])], np.asarray(head, float), *body])
    d = np.ascontiguousarray(d, dtype=np.float64)
    d.flags.writeable = False
    return d


def _study_coords(k: int) -> dict[str, list[str]]:
    return {"study": [f"s{i}" for i in range(k)]}


def nnhm_problem(yi, sei, mu_prior, tau_prior) -> Problem:
    """NNHM of :func:`bayesmeta.mcmc.fit_nnhm` (outputs as its PyMC model: mu, z, z_new,
    tau, theta, theta_new, tau2; ``log_tau2`` for the log-tau² prior families)."""
    k = len(yi)
    data = _pack("nnhm", [k, *prior_block(mu_prior), *prior_block(tau_prior)], yi, sei)
    x0 = np.zeros(k + 3)
    x0[0], x0[1] = _start(mu_prior), _start(tau_prior)
    u_name, drop = _free_name(tau_prior, "tau")
    outputs = [("mu", (), ()), ("z", (k,), ("study",)), ("z_new", (), ()), (u_name, (), ()),
               ("tau", (), ()), ("theta", (k,), ("study",)), ("theta_new", (), ()),
               ("tau2", (), ())]
    return Problem("nnhm", data, k + 3, x0, outputs, _study_coords(k),
                   drop=(u_name,) if drop else ())


def binomial_problem(ai, n1i, ci, n2i, mu_prior, tau_prior, baseline_sd: float) -> Problem:
    """Binomial-normal model of :func:`bayesmeta.mcmc.fit_binomial_normal`."""
    from scipy.special import gammaln

    k = len(ai)
    ai, n1i, ci, n2i = (np.asarray(v, dtype=float) for v in (ai, n1i, ci, n2i))
    const = float(np.sum(gammaln(n1i + 1) - gammaln(ai + 1) - gammaln(n1i - ai + 1)
                         + gammaln(n2i + 1) - gammaln(ci + 1) - gammaln(n2i - ci + 1)))
    data = _pack("binomial", [k, *prior_block(mu_prior), *prior_block(tau_prior),
                              float(baseline_sd), const], ai, n1i, ci, n2i)
    x0 = np.zeros(2 * k + 3)
    x0[0], x0[1] = _start(mu_prior), _start(tau_prior)
    u_name, drop = _free_name(tau_prior, "tau")
    outputs = [("mu", (), ()), ("alpha", (k,), ("study",)), ("z", (k,), ("study",)),
               ("z_new", (), ()), (u_name, (), ()), ("tau", (), ()),
               ("theta", (k,), ("study",)), ("theta_new", (), ()), ("tau2", (), ())]
    return Problem("binomial", data, 2 * k + 3, x0, outputs, _study_coords(k),
                   drop=(u_name,) if drop else ())


#: The nested model's scale parameters in the kernels' order (tau-type prior blocks).
NESTED_SCALES = ("sigma_subgroup", "sigma_time", "sigma_study", "tau0")


def nested_problem(obs: np.ndarray, sizes, flags, sigma_logtau_sd: float, contrast_ab,
                   cell_centred: np.ndarray, mu_prior, het_prior, tau_prior) -> Problem:
    """Nested model of :func:`bayesmeta.mcmc.fit_nested` at ``sizes = (n_obs, n_s, n_t,
    n_j)``. ``obs``: one row per (padded) observation with columns ``yi, sei, obs_mask,
    het_mask, s_idx, t_idx, j_idx`` (``j_idx = n_j``: no shared study effect);
    ``flags = (use_subgroup, use_time, use_study)``."""
    n_obs, n_s, n_t, n_j = (int(v) for v in sizes)
    obs = np.asarray(obs, dtype=float)
    if obs.shape != (n_obs, 7):
        raise ValueError(f"obs has shape {obs.shape}, expected ({n_obs}, 7)")
    n_c = n_s * n_t
    cc = np.asarray(cell_centred, dtype=float).reshape(n_s, n_t)
    head = [n_obs, n_s, n_t, n_j, *(float(f) for f in flags), float(sigma_logtau_sd),
            float(contrast_ab[0]), float(contrast_ab[1]), *prior_block(mu_prior),
            *prior_block(het_prior), *prior_block(het_prior), *prior_block(het_prior),
            *prior_block(tau_prior)]
    data = _pack("nested", head, *(obs[:, i] for i in range(7)), cc)
    # free variables: mu, sigma_subgroup, z_subgroup, sigma_time, z_cell, sigma_study, z_study,
    # tau0, sigma_logtau, z_logtau; centred cells start at mu's start (mu_s = mu there)
    ndim = 2 + n_s + 1 + n_c + 1 + n_j + 2 + n_c
    x0 = np.zeros(ndim)
    mu0, het0 = _start(mu_prior), _start(het_prior)
    p = 0
    x0[p] = mu0
    p += 1
    x0[p] = het0
    p += 1 + n_s
    x0[p] = het0
    x0[p + 1:p + 1 + n_c] = cc.ravel() * mu0
    p += 1 + n_c
    x0[p] = het0
    p += 1 + n_j
    x0[p] = _start(tau_prior)
    x0[p + 1] = math.log(float(sigma_logtau_sd))
    cell, sub = ("subgroup", "time"), ("subgroup",)
    outputs = [("mu", (), ()), ("z_subgroup", (n_s,), sub), ("z_cell", (n_s, n_t), cell),
               ("z_study", (n_j,), ("study",)), ("z_logtau", (n_s, n_t), cell)]
    drop = []
    for name, pr in zip((*NESTED_SCALES, "sigma_logtau"), (het_prior, het_prior, het_prior,
                                                           tau_prior, None)):
        u_name, is_transform = (_free_name(pr, name) if pr is not None
                                else (f"{name}_log__", True))
        outputs += [(u_name, (), ()), (name, (), ())]
        if is_transform:
            drop.append(u_name)
    outputs += [("mu_subgroup", (n_s,), sub), ("mu_cell", (n_s, n_t), cell),
                ("u_study", (n_j,), ("study",)), ("tau", (n_s, n_t), cell),
                ("contrast", (n_t,), ("time",)), ("contrast_subgroup", (), ())]
    coords = {"subgroup": [f"g{i}" for i in range(n_s)], "time": [f"t{i}" for i in range(n_t)],
              "study": [f"s{i}" for i in range(n_j)]}
    return Problem("nested", data, ndim, x0, outputs, coords, drop=tuple(drop))


# ---------------------------------------------------------------------------------------------
# nutpie model object and sampling
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _model_class():
    """A ``nutpie.sample``-able model over the kernels' C callbacks (defined on first use so
    that importing this module does not import nutpie)."""
    from nutpie import _lib
    from nutpie.sample import CompiledModel

    @dataclass(frozen=True)
    class KernelModel(CompiledModel):
        problem: Any = None
        logp_address: int = 0
        expand_address: int = 0

        @property
        def n_dim(self):
            return self.problem.ndim

        @property
        def shapes(self):
            return {n: tuple(s) for n, s, _ in self.problem.outputs}

        @property
        def coords(self):
            return self.problem.coords

        def with_data(self, **updates):  # pragma: no cover - data live in the Problem
            raise NotImplementedError("build a new Problem instead")

        def _make_sampler(self, settings, init_mean, cores, progress_type, extra_callback,
                          extra_callback_rate, store):
            return _lib.PySampler.from_pymc(settings, cores, self._make_model(init_mean),
                                            progress_type, extra_callback,
                                            extra_callback_rate, store)

        def _make_model(self, init_mean):
            pr = self.problem
            ptr = pr.data.ctypes.data
            # the model object is passed as keep-alive owner of the data buffer
            logp = _lib.LogpFunc(self.logp_address, ptr, self)
            expand = _lib.ExpandFunc(pr.ndim, pr.n_out, self.expand_address, ptr, self)
            dim_sizes = {k: len(v) for k, v in pr.coords.items()}
            names = [n for n, _, _ in pr.outputs]
            shapes = [list(s) for _, s, _ in pr.outputs]
            variables = _lib.PyVariable.new_variables(names, ["float64"] * len(names), shapes,
                                                      dim_sizes, pr.dims)
            x0 = pr.x0

            def initial_point(seed):
                # PyMC's initial point: support point + U(-1, 1) jitter, unconstrained space
                rng = np.random.Generator(np.random.PCG64(int(seed)))
                return x0 + rng.uniform(-1.0, 1.0, size=x0.size)

            return _lib.PyMcModel(logp, expand, variables, pr.ndim, dim_sizes, pr.coords,
                                  initial_point, None)

    return KernelModel


def sample(problem: Problem, *, draws: int, tune: int, chains: int, cores: int, seed: int,
           target_accept: float):
    """Sample ``problem`` with nutpie. Returns (DataTree with posterior and sample_stats,
    load seconds of the kernels (0 when this process had them), sampling seconds)."""
    import nutpie
    import xarray as xr

    from bayesmeta.mcmc_kernels import callbacks

    logp, expand, load_s = callbacks(problem.model)
    model = _model_class()(dims=problem.dims, reparameterized_names=list(problem.drop),
                           problem=problem, logp_address=logp.address,
                           expand_address=expand.address)
    t0 = time.perf_counter()
    raw = nutpie.sample(model, draws=draws, tune=tune, chains=chains, cores=cores,
                        seed=int(seed), progress_bar=False, target_accept=target_accept,
                        save_warmup=False, return_raw_trace=True)
    sample_s = time.perf_counter() - t0
    return _trace_tree(raw, problem), load_s, sample_s


def _trace_tree(raw, problem: Problem):
    """posterior and sample_stats of nutpie's raw Arrow trace as a DataTree: the draws after
    tuning, each chain's rows in order (chains shorter than the longest padded with NaN, as
    nutpie's own conversion does); the per-draw scalar statistics (numbers and flags; nutpie's
    vector-valued diagnostics and text messages are not kept); outputs named in
    ``problem.drop`` left out. The same arrays as ``nutpie.sample`` returns without
    ``return_raw_trace`` (tests/test_mcmc_backend.py), without its conversion's overhead."""
    import pyarrow as pa
    import xarray as xr

    draw_batches, stat_batches = raw.get_arrow_trace()
    keeps = [~np.asarray(pa.array(sb.column("tuning")).to_numpy(zero_copy_only=False), bool)
             for sb in stat_batches]
    n_chain, n_draw = len(keeps), max(int(k.sum()) for k in keeps)

    def stack(batches, name, shape, dtype):
        out = np.full((n_chain, n_draw, *shape), np.nan) if dtype.kind == "f" else \
            np.zeros((n_chain, n_draw, *shape), dtype=dtype)
        for c, (b, keep) in enumerate(zip(batches, keeps)):
            a = pa.array(b.column(name))
            if shape:
                a = a.flatten()
            if a.null_count:  # absent entries (e.g. no divergence): NaN, or 0 for integers
                a = a.fill_null(np.nan if dtype.kind == "f" else 0)
            v = a.to_numpy(zero_copy_only=False).reshape((len(keep), *shape))[keep]
            out[c, :len(v)] = v
        return out

    coords = {"chain": np.arange(n_chain), "draw": np.arange(n_draw)}
    post = {}
    for name, shape, dims in problem.outputs:
        if name in problem.drop:
            continue
        post[name] = (("chain", "draw", *dims), stack(draw_batches, name, shape, np.dtype(float)))
        coords.update({d: problem.coords[d] for d in dims})
    stats = {}
    for field in stat_batches[0].schema:
        name = field.name
        if name in ("chain", "draw"):
            continue
        t = pa.field(field).type
        if not (pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)):
            continue  # vectors (lists) and messages
        dtype = np.dtype(t.to_pandas_dtype())
        stats[name] = (("chain", "draw"), stack(stat_batches, name, (), dtype))
    cc = {"chain": coords["chain"], "draw": coords["draw"]}
    return xr.DataTree.from_dict({"/posterior": xr.Dataset(post, coords=coords),
                                  "/sample_stats": xr.Dataset(stats, coords=cc)})


def logp_and_grad(problem: Problem, x) -> tuple[float, np.ndarray, int]:
    """Call the compiled log-density callback at ``x`` (tests and checks): (logp, gradient,
    status; 0 = finite)."""
    import ctypes

    from bayesmeta.mcmc_kernels import callbacks

    logp = callbacks(problem.model)[0]
    x = np.ascontiguousarray(x, dtype=np.float64)
    g = np.zeros(problem.ndim)
    out = np.zeros(1)
    dp = ctypes.POINTER(ctypes.c_double)
    status = logp.ctypes(problem.ndim, x.ctypes.data_as(dp), g.ctypes.data_as(dp),
                         out.ctypes.data_as(dp), ctypes.c_void_p(problem.data.ctypes.data))
    return float(out[0]), g, int(status)


def expand(problem: Problem, x) -> dict[str, np.ndarray]:
    """Call the compiled expand callback at ``x``: {output name: value} (tests and checks)."""
    import ctypes

    from bayesmeta.mcmc_kernels import callbacks

    fn = callbacks(problem.model)[1]
    x = np.ascontiguousarray(x, dtype=np.float64)
    o = np.full(problem.n_out, np.nan)
    dp = ctypes.POINTER(ctypes.c_double)
    status = fn.ctypes(problem.ndim, problem.n_out, x.ctypes.data_as(dp), o.ctypes.data_as(dp),
                       ctypes.c_void_p(problem.data.ctypes.data))
    if status != 0:
        raise RuntimeError(f"expand callback returned status {status}")
    out, i = {}, 0
    for name, shape, _ in problem.outputs:
        n = int(np.prod(shape))
        out[name] = o[i:i + n].reshape(shape)
        i += n
    return out
