"""Latency of one analysis per process: what a user waits for at the command line.

Every case runs in a fresh process (``python -m bayesmeta ...`` or a short script doing what one
CLI call does), once with empty compile caches (cold: an empty ``NUMBA_CACHE_DIR`` for the
kernels of ``bayesmeta.mcmc_backend`` and an empty PyTensor ``base_compiledir``) and then
``warm`` times with the caches the cold run filled. Each measurement records wall time, CPU time
(user + system of the process and its children, from ``os.wait4``) and peak memory (largest
resident set of one process; and the peak of the summed resident sets of the process tree,
polled every 50 ms). A fit prints its own compile (kernel load) and sampling seconds.

:func:`analyses` covers the NNHM, binomial-normal and nested models on 13-18 row tables plus the
exact and classical CLI calls. The nested rows are what ``bayesmeta bayes --model nested`` runs:
the Gaussian hierarchical model by its exact engine (default) or by MCMC (``--engine mcmc``,
the PyMC twin), each with the within-study correlation refits and the workflow checks of a run;
the brms-checked library model ``mcmc.fit_nested`` is kept as a separate row. :func:`routes`
the ways of sampling the PyMC models that were measured to choose the backend; :func:`run_all`
``bayesmeta run`` of every bundled spec.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable


def measure(argv, env=None, timeout=1800, cwd=ROOT) -> dict:
    """Run ``argv``; wall and CPU seconds, peak RSS (MB) of one process and of the tree."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the dev tools
        psutil = None
    peak = [0.0]
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    done = threading.Event()

    def poll():
        if psutil is None:
            return
        try:
            proc = psutil.Process(p.pid)
        except psutil.Error:
            return
        while not done.is_set():
            try:
                tree = [proc, *proc.children(recursive=True)]
                rss = 0
                for q in tree:
                    try:
                        rss += q.memory_info().rss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], rss / 2 ** 20)
            except psutil.Error:
                break
            done.wait(0.05)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out = {"stdout": "", "stderr": ""}

    def read(stream, key):
        out[key] = stream.read()

    readers = [threading.Thread(target=read, args=(p.stdout, "stdout"), daemon=True),
               threading.Thread(target=read, args=(p.stderr, "stderr"), daemon=True)]
    for r in readers:
        r.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    for r in readers:
        r.join(5)
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024,
            "tree_mb": peak[0], "rc": p.returncode, "stdout": out["stdout"],
            "stderr": out["stderr"]}


def cache_env(cache_dir: str, extra_flags: str = "") -> dict:
    """Environment with all compile caches in ``cache_dir``."""
    flags = f"base_compiledir={cache_dir}" + (f",{extra_flags}" if extra_flags else "")
    return dict(os.environ, MPLBACKEND="Agg", NUMBA_CACHE_DIR=cache_dir, PYTENSOR_FLAGS=flags,
                PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def cold_warm(argv, warm=3, extra_flags="", timeout=1800) -> dict:
    """One cold run (empty caches) and ``warm`` runs with the caches it filled."""
    with tempfile.TemporaryDirectory() as cache:
        env = cache_env(cache, extra_flags)
        runs = [measure(argv, env, timeout) for _ in range(1 + warm)]
    failed = [r for r in runs if r["rc"] != 0]
    return {"cold": runs[0], "warm": runs[1:], "failed": failed}


_TIMING = re.compile(r"Timing: compile ([0-9.]+) s, sampling ([0-9.]+) s")


def _fit_seconds(stdout: str) -> tuple[float, float]:
    """(compile, sampling) seconds a fit printed: its JSON line or the MCMCResult printout."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{") and "sampling_s" in line:
            d = json.loads(line)
            return float(d["compile_s"]), float(d["sampling_s"])
    m = _TIMING.search(stdout)
    return (float(m.group(1)), float(m.group(2))) if m else (float("nan"), float("nan"))


def summarise(res: dict) -> dict:
    """Cold and median-warm figures of a :func:`cold_warm` result."""
    if res["failed"]:
        err = (res["failed"][0]["stderr"].strip().splitlines() or ["?"])[-1]
        return {"error": err[:200]}
    w = res["warm"]
    c = res["cold"]
    cc, cs = _fit_seconds(c["stdout"])
    wc = [_fit_seconds(r["stdout"]) for r in w]
    return {"cold_wall": c["wall"], "cold_cpu": c["cpu"],
            "cold_compile": cc, "cold_sampling": cs,
            "warm_wall": statistics.median(r["wall"] for r in w),
            "warm_cpu": statistics.median(r["cpu"] for r in w),
            "warm_walls": [r["wall"] for r in w],
            "warm_compile": statistics.median(a for a, _ in wc),
            "warm_sampling": statistics.median(b for _, b in wc),
            "rss_mb": max(r["rss_mb"] for r in [c, *w]),
            "tree_mb": max(r["tree_mb"] for r in [c, *w])}


# ---------------------------------------------------------------------------------------------
# per-analysis latency
# ---------------------------------------------------------------------------------------------

def sim6x3_csv(path: Path) -> Path:
    """The 18-row nested table of tests/reference/brms_nested.json (6 studies x 3 weeks)."""
    import pandas as pd

    d = json.loads((ROOT / "tests" / "reference" / "brms_nested.json").read_text())
    pd.DataFrame(d["datasets"]["sim6x3"]["data"]).to_csv(path, index=False)
    return path


#: One analysis as a script (the binomial-normal model and the brms-checked nested library model
#: ``mcmc.fit_nested``): read the CSV, fit with the library defaults, print the result and its
#: timings.
_FIT_SCRIPT = r"""
import json, sys, warnings
import numpy as np, pandas as pd
from bayesmeta import mcmc
model, path = sys.argv[1], sys.argv[2]
d = pd.read_csv(path)
if model == "binomial":
    fit = mcmc.fit_binomial_normal(d["ai"], d["ai"] + d["bi"], d["ci"], d["ci"] + d["di"],
                                   study=d["study"])
else:
    fit = mcmc.fit_nested(d, measure="MD")
print(fit)
print(json.dumps({"compile_s": fit.compile_seconds, "sampling_s": fit.sampling_seconds,
                  "route": fit.datatree.attrs.get("nutpie_route", "")}))
"""


def analysis_cases(tmp: Path) -> list[tuple[str, str, list[str]]]:
    """(model, case label, argv) of every per-analysis case."""
    bcg = str(ROOT / "data" / "bcg.csv")
    nested = str(sim6x3_csv(tmp / "sim6x3.csv"))
    cli = [PY, "-m", "bayesmeta"]
    nested_cli = [*cli, "bayes", nested, "--measure", "MD", "--model", "nested",
                  "--study", "study", "--time", "time"]
    return [
        ("imports", "baseline: `python -c \"import pandas, scipy.stats, xarray, arviz, numba, "
         "nutpie\"` (what a warm MCMC call imports before any work; nutpie imports ArviZ, which "
         "imports matplotlib)",
         [PY, "-c", "import pandas, scipy.stats, xarray, arviz, numba, nutpie"]),
        ("classical", "`bayesmeta classical bcg.csv --measure RR` (13 rows)",
         [*cli, "classical", bcg, "--measure", "RR"]),
        ("NNHM exact", "`bayesmeta bayes bcg.csv --measure RR` (exact engine, 13 rows)",
         [*cli, "bayes", bcg, "--measure", "RR"]),
        ("NNHM MCMC", "`bayesmeta bayes bcg.csv --measure RR --engine mcmc` (13 rows)",
         [*cli, "bayes", bcg, "--measure", "RR", "--engine", "mcmc"]),
        ("binomial-normal MCMC", "`fit_binomial_normal` on bcg's 2x2 tables (13 rows; script)",
         [PY, "-c", _FIT_SCRIPT, "binomial", bcg]),
        ("nested exact", "`bayesmeta bayes sim6x3.csv --measure MD --model nested --study study "
         "--time time` (Gaussian hierarchical model, exact engine; + 4 r-sensitivity refits, "
         "REML twin, workflow checks; 6 studies x 3 times = 18 rows)", nested_cli),
        ("nested MCMC", "same with `--engine mcmc` (the PyMC twin of the same model; r refits "
         "and checks exact as in a run)", [*nested_cli, "--engine", "mcmc"]),
        ("nested fit_nested", "library `mcmc.fit_nested` on sim6x3 (the brms-checked "
         "study/time model, not what the pipeline runs; script)",
         [PY, "-c", _FIT_SCRIPT, "nested", nested]),
    ]


def analyses(warm=3) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, label, argv in analysis_cases(Path(tmp)):
            print(f"  latency: {model}", file=sys.stderr, flush=True)
            out.append({"model": model, "case": label, **summarise(cold_warm(argv, warm))})
    return out


# ---------------------------------------------------------------------------------------------
# routes: ways of sampling the same PyMC model (NNHM, BCG log RR, library defaults)
# ---------------------------------------------------------------------------------------------

_ROUTE_SCRIPT = r"""
import json, sys, time, warnings
T0 = time.perf_counter()
import numpy as np, pandas as pd
warnings.simplefilter("ignore")
route = sys.argv[1]
from bayesmeta import mcmc, priors
from bayesmeta.effect_sizes import escalc
es = escalc("RR", pd.read_csv(sys.argv[2]))
yi, sei = es["yi"].to_numpy(float), np.sqrt(es["vi"].to_numpy(float))
mu_p, tau_p = priors.Normal(0.0, 4.0), priors.HalfNormal(0.5)
s = mcmc.SamplerSettings()
kw = dict(draws=s.draws, tune=s.tune, chains=s.chains, cores=s.cores, seed=1)
if route in ("kernels", "pytensor"):
    mcmc.NUTPIE_ROUTE = route
    fit = mcmc.fit_nnhm(yi, sei, mu_prior=mu_p, tau_prior=tau_p, seed=1, warn=False)
    comp, samp, mu = fit.compile_seconds, fit.sampling_seconds, fit.draws("mu")
    div = fit.diagnostics.divergences
elif route == "pyfunc":
    import nutpie
    from nutpie.compiled_pyfunc import from_pyfunc
    from bayesmeta import mcmc_backend as B
    from bayesmeta.mcmc_kernels import callbacks
    t = time.perf_counter()
    callbacks("nnhm")
    comp = time.perf_counter() - t
    pr = B.nnhm_problem(yi, sei, mu_p, tau_p)
    names = [n for n, _, _ in pr.outputs]
    def make_logp():
        return lambda x, **kw: B.logp_and_grad(pr, x)[:2]
    def make_expand(a, b, c):
        return lambda x, **kw: {k: np.asarray(v, dtype=float) for k, v in B.expand(pr, x).items()}
    x0 = pr.x0
    m = from_pyfunc(pr.ndim, make_logp, make_expand, [np.dtype("float64")] * len(names),
                    [s_ for _, s_, _ in pr.outputs], names, coords=pr.coords, dims=pr.dims,
                    make_initial_point_fn=lambda seed: x0 + np.random.default_rng(seed).uniform(-1, 1, x0.size))
    t = time.perf_counter()
    dt = nutpie.sample(m, seed=1, progress_bar=False, target_accept=s.target_accept,
                       draws=s.draws, tune=s.tune, chains=s.chains, cores=s.cores)
    samp = time.perf_counter() - t
    mu, div = dt.posterior["mu"].values.ravel(), int(dt.sample_stats["diverging"].sum())
else:
    import pymc as pm
    if route == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_compilation_cache_dir", sys.argv[3])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    model, _ = mcmc._build_nnhm(len(yi), mu_p, tau_p, yi, sei)()
    t = time.perf_counter()
    with model:
        if route == "pymc-default":        # pm.sample as a PyMC user calls it (nutpie when installed)
            dt = pm.sample(progressbar=False, random_seed=1, target_accept=s.target_accept, **{k: v for k, v in kw.items() if k != "seed"})
        elif route == "jax":
            import nutpie
            cm = nutpie.compile_pymc_model(model, backend="jax", gradient_backend="jax")
            t1 = time.perf_counter()
            dt = nutpie.sample(cm, seed=1, progress_bar=False, target_accept=s.target_accept,
                               draws=s.draws, tune=s.tune, chains=s.chains, cores=s.cores)
        else:                              # "pymc-nuts", "pymc-nuts-c": PyMC's own NUTS
            dt = pm.sample(nuts_sampler="pymc", progressbar=False, random_seed=1,
                           target_accept=s.target_accept, compute_convergence_checks=False,
                           **{k: v for k, v in kw.items() if k != "seed"})
    total = time.perf_counter() - t
    if route == "jax":
        samp = time.perf_counter() - t1
        comp = total - samp
    elif route == "pymc-default":  # PyMC's sampling_time covers nutpie's compile too
        samp, comp = total, float("nan")
    else:
        samp = float(dt["sample_stats"].attrs.get("sampling_time", total))
        comp = total - samp
    mu, div = dt.posterior["mu"].values.ravel(), int(dt.sample_stats["diverging"].sum())
print(json.dumps({"compile_s": comp, "sampling_s": samp, "mu_mean": float(np.mean(mu)),
                  "divergences": div, "process_s": time.perf_counter() - T0}))
"""

#: route -> (label, extra PYTENSOR_FLAGS, needs)
ROUTES = {
    "kernels": ("nutpie + cached hand-written numba kernels (C callbacks; chosen)", "", None),
    "pytensor": ("nutpie + PyTensor->numba compile per process (previous default)", "", None),
    "pyfunc": ("nutpie Python-callback interface + the same cached kernels (one ctypes call "
               "per gradient)", "", None),
    "pymc-default": ("`pm.sample()` defaults on the PyMC model (nutpie, compiles per process)",
                     "", None),
    "pymc-nuts": ("PyMC's own NUTS, PyTensor numba backend", "", None),
    "pymc-nuts-c": ("PyMC's own NUTS, PyTensor C backend (cvm linker, g++)",
                    "linker=cvm,cxx=/usr/bin/g++", None),
    "jax": ("nutpie JAX backend + JAX persistent compilation cache", "", "jax"),
}


def routes(warm=2, only=None) -> list[dict]:
    bcg = str(ROOT / "data" / "bcg.csv")
    out = []
    for name, (label, flags, needs) in ROUTES.items():
        if only and name not in only:
            continue
        if needs and importlib.util.find_spec(needs) is None:
            out.append({"route": name, "case": label, "error": f"skipped: {needs} not installed"})
            continue
        print(f"  route: {name}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as jaxdir:
            res = cold_warm([PY, "-c", _ROUTE_SCRIPT, name, bcg, jaxdir], warm, flags)
        row = {"route": name, "case": label, **summarise(res)}
        if not res["failed"]:
            last = json.loads(res["warm"][-1]["stdout"].strip().splitlines()[-1])
            row.update(mu_mean=last["mu_mean"], divergences=last["divergences"])
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# bayesmeta run of every bundled spec
# ---------------------------------------------------------------------------------------------

def run_all(warm=3) -> dict:
    with tempfile.TemporaryDirectory() as d:
        argv = [PY, "-m", "bayesmeta", "run", "--out", f"{d}/r", "-q"]
        res = cold_warm(argv, warm, timeout=1800)
    s = summarise(res)
    s.pop("cold_compile", None), s.pop("cold_sampling", None)
    s.pop("warm_compile", None), s.pop("warm_sampling", None)
    return s
