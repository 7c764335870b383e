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
``N(0, (tau/2)²)``; within-cell heterogeneity ``N(0, tau²)`` with ``tau`` by default in
{0, 0.25, 0.5, 0.8, 1} (0.8 and 1 are very large heterogeneity on this standardised scale);
sampling errors of a study correlated ``r_true`` (default {0, 0.7}) across its times
(exchangeable).

Methods: the exact GHM with the default priors and ``r`` assumed 0.5 (``GHM-r0.5``) or 0
(``GHM-r0``, independent errors), and the REML twin with ``r`` 0.5, Wald z (``REML-z``) and t
(``REML-t``) intervals. Results per method and estimand kind (``contrast``, ``cell``), pooled
over times and cells: :func:`summarise_nested` gives one row per k x tau x r_true x method x
estimand. The coverage MC SE there treats the 3 contrasts (6 cells) of one meta-analysis as
independent; they share the study effects, so it understates the true MC SE somewhat.

``bayesmeta simulate`` runs these chunks through the Dask machinery of
:func:`bayesmeta.simulate.simulate` (``[simulation] model = "nested"`` in a spec, or
``--model nested``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from bayesmeta.exceptions import SpecError

__all__ = ["NestedSimConfig", "make_nested_chunks", "run_nested_chunk", "simulate_nested",
           "summarise_nested", "nested_coverage_figure", "NESTED_COLUMNS"]

TIMES = (4, 12, 24)
LEVELS = {"A": -0.5, "B": -0.2}
SIGMA_TIME = 0.2
METHODS = ("GHM-r0.5", "GHM-r0", "REML-z", "REML-t")
ESTIMANDS = ("contrast", "cell")
#: columns of :func:`summarise_nested`
NESTED_COLUMNS = ("scale", "k", "tau", "r_true", "method", "estimand", "n", "coverage",
                  "coverage_mcse", "width", "width_mcse", "bias", "bias_mcse", "rmse",
                  "n_failed")


@dataclass(frozen=True)
class NestedSimConfig:
    """``n`` meta-analyses per scenario (k x tau x r_true)."""

    n: int = 250
    ks: tuple = (3,)
    taus: tuple = (0.0, 0.25, 0.5, 0.8, 1.0)
    r_trues: tuple = (0.0, 0.7)
    seed: int = 20240611
    chunk_size: int = 50
    level: float = 0.95
    qmc_log2: int = 11

    def __post_init__(self):
        if not (isinstance(self.n, (int, np.integer)) and self.n >= 1):
            raise SpecError(f"Invalid n {self.n!r}: must be an integer >= 1.")
        if not (isinstance(self.chunk_size, (int, np.integer)) and self.chunk_size >= 1):
            raise SpecError(f"Invalid chunk_size {self.chunk_size!r}: must be an integer >= 1.")
        if not self.ks:
            raise SpecError("Invalid k (): give at least one number of studies.")
        for k in self.ks:
            if not (isinstance(k, (int, np.integer)) and 2 <= k <= 20):
                raise SpecError(f"Invalid k {k!r}: must be an integer in [2, 20].")
        if not self.taus:
            raise SpecError("Invalid tau (): give at least one value.")
        for t in self.taus:
            if not (math.isfinite(t) and t >= 0):
                raise SpecError(f"Invalid tau {t!r}: must be a finite number >= 0.")
        if not self.r_trues:
            raise SpecError("Invalid r_true (): give at least one value.")
        for r in self.r_trues:
            if not (math.isfinite(r) and 0 <= r < 1):
                raise SpecError(f"Invalid r_true {r!r}: must be in [0, 1).")
        if not 0.5 <= self.level < 1:
            raise SpecError(f"Invalid level {self.level!r}: must be in [0.5, 1).")
        if not (isinstance(self.seed, (int, np.integer)) and 0 <= self.seed < 2**128):
            raise SpecError(f"Invalid seed {self.seed!r}: must be a whole number in "
                            "[0, 2**128).", fix="Use e.g. --seed 1.")

    def scenarios(self) -> list[dict]:
        return [dict(scale="nested", k=int(k), tau=float(t), r_true=float(r))
                for k in self.ks for t in self.taus for r in self.r_trues]

    def digest(self) -> str:
        """Identity of the simulation (resume refuses chunks of another one)."""
        return hashlib.sha256(json.dumps(dict(model="nested", **asdict(self)), sort_keys=True,
                                         default=list).encode()).hexdigest()[:16]


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
    (method key ``"<method> <kind>"``), its wall ``seconds`` and the worker process's
    ``cpu_seconds`` (they differ when the worker waits for a core)."""
    import warnings

    from bayesmeta import ghm_exact, ghm_reml

    t0, c0 = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(np.array(chunk["seed_state"], dtype=np.uint32))
    lvl = chunk["level"]
    res = {f"{m} {kind}": _acc() for m in METHODS for kind in ("contrast", "cell")}
    for _ in range(chunk["size"]):
        data, truth = _dataset(rng, chunk["k"], chunk["tau"], chunk["r_true"])
        targets = _targets(truth)
        fits = {}
        with warnings.catch_warnings():
            # simulated data: numerical notices of individual fits are not the user's concern;
            # a fit that fails is counted (n_failed)
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            warnings.filterwarnings("ignore", module=r"bayesmeta\.ghm")
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
                seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
                methods=res)


def _warm():
    """Import and exercise the engines once in a worker (not timed)."""
    c = make_nested_chunks(NestedSimConfig(n=1, chunk_size=1, taus=(0.5,), r_trues=(0.5,)))[0]
    run_nested_chunk(c)
    return True


def summarise_nested(chunk_results: list[dict], level: float = 0.95) -> pd.DataFrame:
    """One row per k x tau x r_true x method x estimand kind (columns :data:`NESTED_COLUMNS`),
    from chunk statistics; the statistics of :func:`bayesmeta.simulate.summarise`."""
    from bayesmeta.simulate import summarise

    # summarise groups by (scale, k, tau, method): r_true and the estimand kind ride in the
    # scale and method labels and are split off again below
    relabelled = [dict(r, scale=f"nested|{float(r['r_true'])!r}") for r in chunk_results]
    tab = summarise(relabelled, level)
    if not len(tab):
        return pd.DataFrame(columns=list(NESTED_COLUMNS))
    tab["r_true"] = [float(x.split("|", 1)[1]) for x in tab["scale"]]
    tab["scale"] = "nested"
    parts = tab["method"].str.rsplit(" ", n=1, expand=True)
    tab["method"], tab["estimand"] = parts[0], parts[1]
    order = {m: i for i, m in enumerate(METHODS)}
    tab = tab.assign(_m=[order.get(m, len(order)) for m in tab["method"]],
                     _e=[ESTIMANDS.index(e) if e in ESTIMANDS else 9 for e in tab["estimand"]])
    tab = tab.sort_values(["k", "_e", "r_true", "tau", "_m"], kind="stable")
    tab = tab.loc[:, list(NESTED_COLUMNS)].reset_index(drop=True)
    tab.attrs.update(level=level)
    return tab


def nested_coverage_figure(table: pd.DataFrame, level: float = 0.95):
    """Coverage against true tau: one panel per estimand kind (rows) x r_true (columns) for
    each k, a line per method, bars ±2 MC SE."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ests = [e for e in ESTIMANDS if e in set(table["estimand"])]
    cols = [(k, r) for k in sorted(set(table["k"])) for r in sorted(set(table["r_true"]))]
    methods = [m for m in METHODS if m in set(table["method"])]
    width = 3.0 * len(cols) + 1.9
    fig, axes = plt.subplots(len(ests), len(cols), figsize=(width, 2.8 * len(ests)),
                             squeeze=False, sharey=True)
    for i, e in enumerate(ests):
        for j, (k, r) in enumerate(cols):
            ax = axes[i][j]
            sub = table[(table["estimand"] == e) & (table["k"] == k) & (table["r_true"] == r)]
            for m in methods:
                g = sub[sub["method"] == m].sort_values("tau")
                if len(g):
                    ax.errorbar(g["tau"], g["coverage"], yerr=2 * g["coverage_mcse"],
                                marker="o", ms=3, lw=1, capsize=2, label=m)
            ax.axhline(level, color="k", lw=0.8, ls="--")
            ax.set_title(f"{e}, k = {k}, r_true = {r:g}", fontsize=9)
            ax.set_xlabel("true tau")
            if j == 0:
                ax.set_ylabel(f"coverage of the {e}")
    fig.suptitle(f"Nested model: coverage of {level:.0%} intervals\n(bars: ±2 MC SE; analyses "
                 "assume r = 0.5, GHM-r0 r = 0)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / width, 1))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right", frameon=False)
    return fig


def simulate_nested(cfg: NestedSimConfig, *, workers: int = 1) -> pd.DataFrame:
    """Run every chunk (in-process, or on ``workers`` local processes) and tabulate with
    :func:`summarise_nested`. ``bayesmeta simulate`` runs the same chunks on Dask
    (:func:`bayesmeta.simulate.simulate`)."""
    chunks = make_nested_chunks(cfg)
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(workers) as ex:
            results = list(ex.map(run_nested_chunk, chunks))
    else:
        results = [run_nested_chunk(c) for c in chunks]
    tab = summarise_nested(results, cfg.level)
    tab.attrs["seconds"] = float(sum(r["seconds"] for r in results))
    return tab
