"""Operating characteristics of meta-analysis intervals by simulation (``bayesmeta simulate``).

For each scenario (scale x k x true tau) many meta-analyses are simulated from the normal-normal
model, with unequal study sizes, and analysed by DL, REML and PM (Wald z and HKSJ intervals)
and by the exact Bayesian NNHM under each bundled prior set (:func:`bayesmeta.priors.prior_sets`).
Reported per scenario and method: coverage of the true mu by the 95% interval, mean width and
bias of the point estimate (posterior mean for Bayes), each with its Monte Carlo SE.

Data-generating model
---------------------
``theta_i ~ N(mu, tau²)``, ``y_i ~ N(theta_i, v_i)`` with ``v_i`` from the study's size:

* ``logOR``: arms of ``n_i`` patients, ``n_i`` log-uniform on [15, 150] (the trials of the bundled papers are small,
  of unequal size); control risk ``p_i ~ U(0.15, 0.45)``; ``v_i = 2 / (n_i p_i (1 - p_i))``
  (the large-sample variance of a log OR with equal risks). mu = -0.3; tau in
  {0, 0.2, 0.4, 0.8} (Turner et al. 2015: median tau about 0.3 on the log-OR scale).
* ``MD``: clinical-score-like change scores with SD 4, arms of ``n_i`` log-uniform on [10, 100];
  ``v_i = 16 (2 / n_i)``. mu = -2; tau in {0, 1, 2, 4} (points; the bundled 2014 arm data show tau of
  about 1-4).

Execution
---------
Work is cut into chunks of ``chunk_size`` meta-analyses of one scenario. Chunk ``j`` of the
ordered chunk list draws from ``numpy.random.SeedSequence(seed).spawn(n_chunks)[j]``, so results
do not depend on scheduling or the number of workers. Each finished chunk is written to
``<out>/chunks/<id>.json`` (sufficient statistics); a re-run with the same settings skips the
chunks already there (resumable). Chunks run in-process for tiny jobs, on a
``dask.distributed.LocalCluster`` of worker processes by default, or on an existing Dask cluster
given its scheduler address.

The nested (Gaussian hierarchical) model's simulation, :mod:`bayesmeta.ghm_sim`, runs through
the same machinery: :func:`simulate` given a :class:`bayesmeta.ghm_sim.NestedSimConfig`
schedules its chunks and tabulates them by k x tau x r_true x method x estimand kind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmeta import batch, priors
from bayesmeta.exceptions import SpecError
from bayesmeta.outdir import claim_dir, write_atomic

__all__ = ["SimulationConfig", "SCALES", "simulate", "summarise", "plot_coverage",
           "coverage_figure", "make_chunks", "run_chunk", "config_from_spec"]

SCALES = {
    "logOR": dict(measure="OR", mu=-0.3, taus=(0.0, 0.2, 0.4, 0.8), n_range=(15, 150)),
    "MD": dict(measure="MD", mu=-2.0, taus=(0.0, 1.0, 2.0, 4.0), n_range=(10, 100), sd=4.0),
}
CLASSICAL = ("DL", "REML", "PM")


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. ``n`` meta-analyses per scenario (scale x k x tau)."""

    n: int = 1000
    ks: tuple = (2, 3, 5, 10, 20)
    scales: tuple = ("logOR", "MD")
    taus: tuple | None = None          # None: the scale's default grid
    prior_sets: tuple | None = None    # None: every bundled set for the scale
    seed: int = 20240601
    chunk_size: int = 500
    level: float = 0.95
    G: int = 96                        # exact-Bayes quadrature nodes (see batch.exact_batch)

    def __post_init__(self):
        if self.n < 1:
            raise SpecError(f"Invalid n {self.n!r}: must be >= 1.")
        for k in self.ks:
            if not (isinstance(k, (int, np.integer)) and 2 <= k <= 50):
                raise SpecError(f"Invalid k {k!r}: must be an integer in [2, 50].")
        for s in self.scales:
            if s not in SCALES:
                raise SpecError(f"Invalid scale {s!r}: must be one of {list(SCALES)}.")
        if self.taus is not None and any(t < 0 for t in self.taus):
            raise SpecError(f"Invalid tau {self.taus!r}: must be >= 0.")
        if self.chunk_size < 1:
            raise SpecError(f"Invalid chunk_size {self.chunk_size!r}: must be >= 1.")
        if self.taus is not None and not all(math.isfinite(t) for t in self.taus):
            raise SpecError(f"Invalid tau {self.taus!r}: must be finite.")
        if not (isinstance(self.seed, (int, np.integer)) and 0 <= self.seed < 2**128):
            raise SpecError(f"Invalid seed {self.seed!r}: must be a whole number in "
                            "[0, 2**128).", fix="Use e.g. --seed 1.")

    def scenarios(self) -> list[dict]:
        out = []
        for s in self.scales:
            for k in self.ks:
                for t in (self.taus if self.taus is not None else SCALES[s]["taus"]):
                    out.append(dict(scale=s, k=int(k), tau=float(t)))
        return out

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True,
                                         default=list).encode()).hexdigest()[:16]


def _prior_sets(scale, names=None):
    p = SCALES[scale]
    data = None
    if p["measure"] == "MD":
        n = math.sqrt(p["n_range"][0] * p["n_range"][1])  # typical arm size
        data = pd.DataFrame({"vi": [p["sd"] ** 2 * 2 / n] * 4, "n1i": [n] * 4, "n2i": [n] * 4})
    sets = priors.prior_sets(p["measure"], data)
    if names is not None:
        bad = [nm for nm in names if nm not in sets]
        if bad:
            raise SpecError(f"Invalid prior set(s) {bad}: must be among {list(sets)}.")
        sets = {nm: sets[nm] for nm in names}
    return sets


def _simulate_data(rng, scale, k, tau, n):
    p = SCALES[scale]
    lo, hi = p["n_range"]
    ni = np.exp(rng.uniform(math.log(lo), math.log(hi), size=(n, k)))
    if scale == "logOR":
        pi = rng.uniform(0.15, 0.45, size=(n, k))
        V = 2.0 / (ni * pi * (1 - pi))
    else:
        V = p["sd"] ** 2 * 2.0 / ni
    theta = p["mu"] + tau * rng.standard_normal((n, k))
    Y = theta + np.sqrt(V) * rng.standard_normal((n, k))
    return Y, V


def _stats(lo, hi, est, mu):
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(est)
    lo, hi, est = lo[ok], hi[ok], est[ok]
    cov = (lo <= mu) & (mu <= hi)
    w = hi - lo
    e = est - mu
    return dict(n=int(ok.sum()), n_failed=int((~ok).sum()), cover=int(cov.sum()),
                sw=float(w.sum()), sw2=float((w * w).sum()), se=float(e.sum()),
                se2=float((e * e).sum()))


def make_chunks(cfg: SimulationConfig) -> list[dict]:
    """The ordered chunk list; chunk j gets the j-th spawned seed."""
    chunks = []
    for si, sc in enumerate(cfg.scenarios()):
        for start in range(0, cfg.n, cfg.chunk_size):
            m = min(cfg.chunk_size, cfg.n - start)
            chunks.append(dict(scenario=si, **sc, size=m,
                               id=f"{sc['scale']}-k{sc['k']}-tau{sc['tau']:g}-{start}"))
    seeds = np.random.SeedSequence(cfg.seed).spawn(len(chunks))
    for c, s in zip(chunks, seeds):
        c["seed_state"] = [int(x) for x in s.generate_state(4)]
        c["level"], c["G"] = cfg.level, cfg.G
        c["prior_sets"] = None if cfg.prior_sets is None else list(cfg.prior_sets)
    return chunks


def _warm():
    """Import and exercise the engines once in a worker (not timed)."""
    c = make_chunks(SimulationConfig(n=4, ks=(3,), scales=("logOR",), taus=(0.1,)))[0]
    run_chunk(c)
    return True


def run_chunk(chunk: dict) -> dict:
    """Simulate and analyse one chunk; returns its sufficient statistics per method."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(np.array(chunk["seed_state"], dtype=np.uint32))
    scale, k, tau, n = chunk["scale"], chunk["k"], chunk["tau"], chunk["size"]
    mu = SCALES[scale]["mu"]
    Y, V = _simulate_data(rng, scale, k, tau, n)
    res = {}
    fits = batch.classical_batch(Y, V, methods=CLASSICAL, level=chunk["level"])
    for m in CLASSICAL:
        d = fits[m]
        res[f"{m}-z"] = _stats(d["ci_low"], d["ci_high"], d["estimate"], mu)
        res[f"{m}-HKSJ"] = _stats(d["ci_low_knha"], d["ci_high_knha"], d["estimate"], mu)
    for name, (mp, tp) in _prior_sets(scale, chunk["prior_sets"]).items():
        eb = batch.exact_batch(Y, V, tau_prior=tp, mu_prior=mp, level=chunk["level"],
                               G=chunk["G"], median=False)
        res[f"Bayes-{name}"] = _stats(eb["mu_lower"].to_numpy(), eb["mu_upper"].to_numpy(),
                                      eb["mu_mean"].to_numpy(), mu)
    return dict(id=chunk["id"], scenario=chunk["scenario"], scale=scale, k=k, tau=tau,
                size=n, seconds=time.perf_counter() - t0, methods=res)


def summarise(chunk_results: list[dict], level: float = 0.95) -> pd.DataFrame:
    """Combine chunk statistics into the table: one row per scenario x method.

    Columns: ``scale, k, tau, method, n, coverage, coverage_mcse, width, width_mcse, bias,
    bias_mcse, rmse, n_failed`` (MCSE of a proportion sqrt(c(1-c)/n); of a mean sd/sqrt(n)).
    """
    acc = {}
    for r in chunk_results:
        for m, s in r["methods"].items():
            key = (r["scale"], r["k"], r["tau"], m)
            a = acc.setdefault(key, dict(n=0, n_failed=0, cover=0, sw=0.0, sw2=0.0, se=0.0,
                                         se2=0.0))
            for f in a:
                a[f] += s[f]
    rows = []
    for (scale, k, tau, m), a in acc.items():
        n = a["n"]
        c = a["cover"] / n if n else math.nan
        w = a["sw"] / n if n else math.nan
        b = a["se"] / n if n else math.nan
        var_w = max(a["sw2"] / n - w * w, 0.0) if n else math.nan
        var_e = max(a["se2"] / n - b * b, 0.0) if n else math.nan
        rows.append(dict(scale=scale, k=k, tau=tau, method=m, n=n,
                         coverage=c, coverage_mcse=math.sqrt(c * (1 - c) / n) if n else math.nan,
                         width=w, width_mcse=math.sqrt(var_w / n) if n else math.nan,
                         bias=b, bias_mcse=math.sqrt(var_e / n) if n else math.nan,
                         rmse=math.sqrt(a["se2"] / n) if n else math.nan,
                         n_failed=a["n_failed"]))
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["scale", "k", "tau", "method"], kind="stable").reset_index(drop=True)
    df.attrs.update(level=level)
    return df


def coverage_figure(table: pd.DataFrame, level: float = 0.95, *, x: str = "tau",
                    methods=None):
    """Coverage figure (a matplotlib Figure): one panel per (scale, k) with coverage against
    tau (``x="tau"``), or one panel per (scale, tau) with coverage against k (``x="k"``); a
    line per method (``methods``: which, in order; default all), bars ±2 MCSE."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in ("tau", "k"):
        raise ValueError(f"x must be 'tau' or 'k', got {x!r}")
    panel = "k" if x == "tau" else "tau"
    scales = list(dict.fromkeys(table["scale"]))
    cols = sorted(set(table[panel]))
    if methods is None:
        methods = sorted(set(table["method"]))
    width = 3.0 * len(cols) + 1.9  # + the legend column on the right
    fig, axes = plt.subplots(len(scales), len(cols), figsize=(width, 2.8 * len(scales)),
                             squeeze=False, sharey=True)
    for i, s in enumerate(scales):
        for j, c in enumerate(cols):
            ax = axes[i][j]
            sub = table[(table["scale"] == s) & (table[panel] == c)]
            for m in methods:
                g = sub[sub["method"] == m].sort_values(x)
                if len(g):
                    ax.errorbar(g[x], g["coverage"], yerr=2 * g["coverage_mcse"], marker="o",
                                ms=3, lw=1, capsize=2, label=m)
            ax.axhline(level, color="k", lw=0.8, ls="--")
            ax.set_title(f"{s}, {panel} = {c:g}", fontsize=9)
            ax.set_xlabel("true tau" if x == "tau" else "k (studies)")
            if x == "k":
                ax.set_xscale("log")
                ax.set_xticks(sorted(set(sub["k"])), [str(k) for k in sorted(set(sub["k"]))])
                ax.minorticks_off()
            if j == 0:
                ax.set_ylabel("coverage of mu")
    fig.suptitle(f"Coverage of {level:.0%} intervals (bars: ±2 MCSE)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / width, 1))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right", frameon=False)
    return fig


def plot_coverage(table: pd.DataFrame, path, level: float = 0.95, *, x: str = "tau"):
    """Coverage against tau (or k, ``x="k"``), a line per method, MCSE bars; saved to path."""
    import matplotlib.pyplot as plt

    fig = coverage_figure(table, level, x=x)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _engine(cfg):
    """(make_chunks, run_chunk, warm, summarise, figure) of a configuration's model."""
    if isinstance(cfg, SimulationConfig):
        def figure(table, level):
            return coverage_figure(table, level)
        return make_chunks, run_chunk, _warm, summarise, figure
    from bayesmeta import ghm_sim

    if isinstance(cfg, ghm_sim.NestedSimConfig):
        return (ghm_sim.make_nested_chunks, ghm_sim.run_nested_chunk, ghm_sim._warm,
                ghm_sim.summarise_nested, ghm_sim.nested_coverage_figure)
    raise TypeError(f"not a simulation configuration: {type(cfg).__name__}")


def config_from_spec(S, given=(), *, level: float = 0.95, n: int | None = None,
                     seed: int | None = None, chunk_size: int | None = None):
    """The configuration of a validated ``[simulation]`` section ``S`` (``given``: the keys
    the spec sets; an unset key takes its model's default). ``n`` (default ``S.n_per_cell``),
    ``seed`` (default ``S.seed``) and ``chunk_size`` (default: the model's) override."""
    n = int(S.n_per_cell if n is None else n)
    seed = int(S.seed if seed is None else seed)
    if getattr(S, "model", "nnhm") == "nested":
        from bayesmeta.ghm_sim import NestedSimConfig

        d = NestedSimConfig()
        return NestedSimConfig(
            n=n, ks=tuple(int(k) for k in S.k) if "k" in given else d.ks,
            taus=tuple(float(t) for t in S.tau) or d.taus,
            r_trues=tuple(float(r) for r in S.r_true) or d.r_trues,
            seed=seed, chunk_size=int(chunk_size or d.chunk_size), level=float(level))
    return SimulationConfig(n=n, ks=tuple(int(k) for k in S.k), scales=tuple(S.scales),
                            taus=tuple(float(t) for t in S.tau) or None,
                            prior_sets=tuple(S.priors), seed=seed,
                            chunk_size=int(chunk_size or SimulationConfig.chunk_size),
                            level=float(level))


def _progress(done, total, t0, quiet):
    if quiet:
        return
    el = time.perf_counter() - t0
    print(f"\rsimulate: {done}/{total} chunks ({el:.1f} s)", end="", file=sys.stderr,
          flush=True)


@dataclass
class SimulationResult:
    """Table, output paths and timing of a :func:`simulate` run."""

    table: pd.DataFrame
    out: Path | None
    n_meta: int
    n_run: int                  # meta-analyses computed in this run (not resumed)
    seconds: float
    workers: int
    mode: str                   # "in-process" | "local-cluster" | "scheduler"
    complete: bool
    files: dict = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Meta-analyses per second in this run (each analysed by every method)."""
        return self.n_run / self.seconds if self.seconds > 0 else math.nan


def simulate(cfg, *, out=None, scheduler: str | None = None,
             workers: int | None = None, max_chunks: int | None = None, quiet: bool = False,
             figure: bool = True) -> SimulationResult:
    """Run (or resume) a simulation.

    Parameters
    ----------
    cfg : SimulationConfig or bayesmeta.ghm_sim.NestedSimConfig
        What to simulate: the normal-normal model's battery, or the nested model's.
    out : path, optional
        Output folder: ``config.json``, ``chunks/*.json`` (resumable), ``coverage.csv``,
        ``coverage.json``, ``coverage.png``, ``timing.json``. Without it nothing is written
        (and nothing can be resumed).
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:port``).
    workers : int, optional
        Local worker processes (default: number of CPUs). ``0``: run in-process. Tiny jobs
        (<= 2 chunks) always run in-process unless a scheduler is given.
    max_chunks : int, optional
        Stop after this many new chunks (a partial run; re-run to finish).
    quiet : bool
        No progress on stderr.
    """
    make, run_one, warm, tabulate, figure_of = _engine(cfg)
    model = "nnhm" if isinstance(cfg, SimulationConfig) else "nested"
    chunks = make(cfg)
    done = {}
    chunk_dir = None
    if out is not None:
        out = _claim_out(out)
        chunk_dir = out / "chunks"
        cfile = out / "config.json"
        meta = dict(model=model, config=asdict(cfg), digest=cfg.digest())
        if cfile.exists():
            old_digest = _read_config(cfile).get("digest")
            if old_digest != cfg.digest():
                raise SpecError(f"{out} holds chunks of a different simulation (config digest "
                                f"{old_digest} != {cfg.digest()})",
                                fix="use another --out folder or delete that one")
        chunk_dir.mkdir(parents=True, exist_ok=True)
        if not (out / MARKER).exists():
            (out / MARKER).write_text("written by `bayesmeta simulate`; resumed by the next run "
                                      "with the same settings\n", encoding="utf-8")
        if not cfile.exists():
            write_atomic(cfile, json.dumps(meta, indent=2, default=list))
        ids = {c["id"] for c in chunks}
        for f in chunk_dir.glob("*.json"):
            try:
                r = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # a torn write: recompute
            if r.get("id") in ids:
                done[r["id"]] = r
    todo = [c for c in chunks if c["id"] not in done]
    if max_chunks is not None:
        todo = todo[:max_chunks]
    t0 = time.perf_counter()
    new = []

    def _store(r):
        new.append(r)
        if chunk_dir is not None:
            tmp = chunk_dir / f".{r['id']}.tmp"
            tmp.write_text(json.dumps(r))
            os.replace(tmp, chunk_dir / f"{r['id']}.json")
        _progress(len(new), len(todo), t0, quiet)

    mode, nw = "in-process", 1
    if todo:
        if scheduler is None and (workers == 0 or len(todo) <= 2):
            for c in todo:
                _store(run_one(c))
        else:
            from dask.distributed import Client, LocalCluster, as_completed
            cluster = None
            if scheduler is not None:
                client = Client(scheduler, timeout="30s")
                mode = "scheduler"
            else:
                nw = workers or os.cpu_count() or 1
                cluster = LocalCluster(n_workers=nw, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
                client = Client(cluster)
                mode = "local-cluster"
            try:
                nw = len(client.scheduler_info()["workers"]) or nw
                client.run(warm)  # imports + first-call costs, outside the timed section
                # start the clock once the workers exist: throughput of the computation
                t0 = time.perf_counter()
                futs = client.map(run_one, todo, pure=False)
                for fut in as_completed(futs):
                    _store(fut.result())
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
        if not quiet:
            print(file=sys.stderr)
    seconds = time.perf_counter() - t0
    allres = list(done.values()) + new
    table = tabulate(allres, cfg.level)
    complete = len(allres) == len(chunks)
    n_run = sum(r["size"] for r in new)
    res = SimulationResult(table=table, out=out, n_meta=sum(r["size"] for r in allres),
                           n_run=n_run, seconds=seconds, workers=nw, mode=mode,
                           complete=complete)
    if out is not None:
        write_atomic(out / "coverage.csv", table.to_csv(index=False))
        write_atomic(out / "coverage.json", table.to_json(orient="records", indent=1))
        res.files = {"csv": out / "coverage.csv", "json": out / "coverage.json"}
        if figure and len(table):
            tmp = out / f".coverage-{os.getpid()}.tmp.png"
            import matplotlib.pyplot as plt

            fig = figure_of(table, cfg.level)
            fig.savefig(tmp, dpi=110)
            plt.close(fig)
            os.replace(tmp, out / "coverage.png")
            res.files["figure"] = out / "coverage.png"
        write_atomic(out / "timing.json", json.dumps(dict(
            model=model, n_meta_total=res.n_meta, n_meta_this_run=n_run, seconds=seconds,
            workers=nw,
            mode=mode, meta_per_second=res.throughput, complete=complete), indent=1))
    return res


#: marker file of a simulation output folder (:func:`bayesmeta.outdir.claim_dir`)
MARKER = ".bayesmeta-simulation"


def _legacy_out(folder: Path) -> bool:
    """A folder written before the marker existed: ``config.json`` beside ``chunks/``."""
    return (folder / "config.json").is_file() and (folder / "chunks").is_dir()


def _claim_out(out) -> Path:
    """The real output folder (symlinks resolved); refuses a folder that is not ours."""
    return claim_dir(out, marker=MARKER, option="--out", what="simulation folder",
                     legacy=_legacy_out)


def _read_config(cfile: Path) -> dict:
    """``config.json`` of a previous run; a damaged file is one clear error, never a crash."""
    try:
        meta = json.loads(cfile.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SpecError(f"{cfile} is damaged ({err.__class__.__name__}: {err}); it records "
                        "which simulation the chunks in that folder belong to",
                        fix="delete the folder (or the file, to start the simulation afresh) "
                            "or choose another --out") from None
    if not isinstance(meta, dict):
        raise SpecError(f"{cfile} is damaged: expected a JSON object, got "
                        f"{type(meta).__name__}", fix="delete the folder or choose another --out")
    return meta
