"""Operating characteristics of the Gaussian hierarchical model by simulation.

Chunks in the format of :mod:`bayesmeta.simulate` (``make_nested_chunks`` /
``run_nested_chunk`` return the same keys as ``make_chunks`` / ``run_chunk``, so
:func:`bayesmeta.simulate.summarise` tabulates them and the Dask runner can schedule them):
coverage, width and bias of 95% intervals for the subgroup contrast at each time and for the
cell means, per method.

Data-generating model (the GHM itself)
--------------------------------------
Two subgroups (true levels -0.5 and -0.2), ``k`` studies per subgroup, times 4, 12, 24 (each
study reports every time), arms of ``n`` patients log-uniform on [15, 150] with outcome SD 1
(``se = sqrt(2 / n)``, the same at every time); cell deviations ``N(0, 0.2²)``; study effect
``N(0, (tau/2)²)``; within-cell heterogeneity ``N(0, tau²)`` with ``tau`` in {0, 0.25, 0.5, 1}
(1 is very large heterogeneity on this standardised scale); sampling errors of a study
correlated ``r_true`` in {0, 0.7} across its times (exchangeable).

Methods: the exact GHM with the default priors and ``r`` assumed 0.5 (``GHM-r0.5``) or 0
(``GHM-r0``, independent errors), and the REML twin with ``r`` 0.5, Wald z (``REML-z``) and t
(``REML-t``) intervals. Results per method and estimand kind (``contrast``, ``cell``), pooled
over times and cells.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmeta.exceptions import SpecError

__all__ = ["NestedSimConfig", "make_nested_chunks", "run_nested_chunk", "simulate_nested"]

TIMES = (4, 12, 24)
LEVELS = {"A": -0.5, "B": -0.2}
SIGMA_TIME = 0.2
METHODS = ("GHM-r0.5", "GHM-r0", "REML-z", "REML-t")


@dataclass(frozen=True)
class NestedSimConfig:
    """``n`` meta-analyses per scenario (k x tau x r_true)."""

    n: int = 250
    ks: tuple = (3,)
    taus: tuple = (0.0, 0.25, 0.5, 1.0)
    r_trues: tuple = (0.0, 0.7)
    seed: int = 20240611
    chunk_size: int = 50
    level: float = 0.95
    qmc_log2: int = 11

    def __post_init__(self):
        if self.n < 1 or self.chunk_size < 1:
            raise SpecError("n and chunk_size must be >= 1")
        for k in self.ks:
            if not (isinstance(k, (int, np.integer)) and 2 <= k <= 20):
                raise SpecError(f"Invalid k {k!r}: must be an integer in [2, 20].")
        for r in self.r_trues:
            if not 0 <= r < 1:
                raise SpecError(f"Invalid r_true {r!r}: must be in [0, 1).")

    def scenarios(self) -> list[dict]:
        return [dict(scale="nested", k=int(k), tau=float(t), r_true=float(r))
                for k in self.ks for t in self.taus for r in self.r_trues]


def make_nested_chunks(cfg: NestedSimConfig) -> list[dict]:
    """Ordered chunks; chunk j draws from ``SeedSequence(seed).spawn(n_chunks)[j]``."""
    chunks = []
    for si, sc in enumerate(cfg.scenarios()):
        for start in range(0, cfg.n, cfg.chunk_size):
            m = min(cfg.chunk_size, cfg.n - start)
            chunks.append(dict(scenario=si, **sc, size=m,
                               id=f"nested-k{sc['k']}-tau{sc['tau']:g}-r{sc['r_true']:g}-"
                                  f"{start}"))
    seeds = np.random.SeedSequence(cfg.seed).spawn(len(chunks))
    for c, s in zip(chunks, seeds):
        c["seed_state"] = [int(x) for x in s.generate_state(4)]
        c["level"], c["qmc_log2"] = cfg.level, cfg.qmc_log2
    return chunks


def _draw(rng, k, tau, r_true):
    """(true cell means {(subgroup, time): value}, rows as tuples (study, subgroup, time, se,
    y))."""
    truth = {(g, t): m + SIGMA_TIME * rng.standard_normal() for g, m in LEVELS.items()
             for t in TIMES}
    T = len(TIMES)
    Lc = np.linalg.cholesky(r_true * np.ones((T, T)) + (1 - r_true) * np.eye(T))
    rows = []
    for g in LEVELS:
        for j in range(k):
            n = math.exp(rng.uniform(math.log(15), math.log(150)))
            se = math.sqrt(2.0 / n)
            u = 0.5 * tau * rng.standard_normal()
            eps = se * (Lc @ rng.standard_normal(T))
            for i, t in enumerate(TIMES):
                rows.append((f"{g}{j}", g, t, se,
                             truth[(g, t)] + u + tau * rng.standard_normal() + eps[i]))
    return truth, rows


def _dataset(rng, k, tau, r_true):
    truth, rows = _draw(rng, k, tau, r_true)
    return pd.DataFrame(rows, columns=["study", "subgroup", "time", "sei", "yi"]), truth


def _targets(truth):
    out = {}
    for t in TIMES:
        out[("contrast", str(t))] = truth[("B", t)] - truth[("A", t)]
        for g in LEVELS:
            out[("cell", f"{g}:{t}")] = truth[(g, t)]
    return out


def _param(kind, key):
    from bayesmeta.fits import Param
    if kind == "contrast":
        return Param("contrast", subgroup="B - A", time=key)
    g, t = key.split(":")
    return Param("mu", subgroup=g, time=t)


def _acc():
    return dict(n=0, n_failed=0, cover=0, sw=0.0, sw2=0.0, se=0.0, se2=0.0)


def _add(a, lo, hi, est, truth):
    if not all(map(math.isfinite, (lo, hi, est))):
        a["n_failed"] += 1
        return
    a["n"] += 1
    a["cover"] += int(lo <= truth <= hi)
    w, e = hi - lo, est - truth
    a["sw"] += w
    a["sw2"] += w * w
    a["se"] += e
    a["se2"] += e * e


def run_nested_chunk(chunk: dict) -> dict:
    """Simulate and analyse one chunk; sufficient statistics per method and estimand kind
    (method key ``"<method> <kind>"``)."""
    import warnings

    from bayesmeta import ghm_exact, ghm_reml

    t0 = time.perf_counter()
    rng = np.random.default_rng(np.array(chunk["seed_state"], dtype=np.uint32))
    lvl = chunk["level"]
    res = {f"{m} {kind}": _acc() for m in METHODS for kind in ("contrast", "cell")}
    for _ in range(chunk["size"]):
        data, truth = _dataset(rng, chunk["k"], chunk["tau"], chunk["r_true"])
        targets = _targets(truth)
        fits = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for m, r in (("GHM-r0.5", 0.5), ("GHM-r0", 0.0)):
                try:
                    fits[m] = ghm_exact.fit_ghm(data, r=r, qmc_log2=chunk["qmc_log2"],
                                                warn=False).summary(lvl)
                except Exception:  # a failed fit counts as n_failed, never silently dropped
                    fits[m] = None
            for m, test in (("REML-z", "z"), ("REML-t", "t")):
                try:
                    fits[m] = ghm_reml.fit_ghm_reml(data, r=0.5, test=test).summary(lvl)
                except Exception:
                    fits[m] = None
        for m, s in fits.items():
            for (kind, key), tv in targets.items():
                a = res[f"{m} {kind}"]
                p = _param(kind, key)
                if s is None or p not in s.index:
                    a["n_failed"] += 1
                    continue
                r_ = s.loc[p]
                _add(a, float(r_["ci_low"]), float(r_["ci_high"]), float(r_["estimate"]), tv)
    return dict(id=chunk["id"], scenario=chunk["scenario"], scale="nested", k=chunk["k"],
                tau=chunk["tau"], r_true=chunk["r_true"], size=chunk["size"],
                seconds=time.perf_counter() - t0, methods=res)


def simulate_nested(cfg: NestedSimConfig, *, workers: int = 1) -> pd.DataFrame:
    """Run every chunk (in-process, or on ``workers`` local processes) and tabulate with
    :func:`bayesmeta.simulate.summarise`; adds ``r_true`` and splits ``method`` into method and
    estimand kind."""
    from bayesmeta.simulate import summarise

    chunks = make_nested_chunks(cfg)
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(workers) as ex:
            results = list(ex.map(run_nested_chunk, chunks))
    else:
        results = [run_nested_chunk(c) for c in chunks]
    rt = {}
    for r in results:
        rt[(r["k"], r["tau"], r["scenario"])] = r["r_true"]
    # summarise groups by (scale, k, tau, method): keep r_true apart through the scale label
    for r in results:
        r["scale"] = f"nested r_true={r['r_true']:g}"
    tab = summarise(results, cfg.level)
    tab["r_true"] = tab["scale"].str.extract(r"r_true=([0-9.]+)")[0].astype(float)
    parts = tab["method"].str.rsplit(" ", n=1, expand=True)
    tab["method"], tab["estimand"] = parts[0], parts[1]
    tab.attrs["seconds"] = float(sum(r["seconds"] for r in results))
    return tab
