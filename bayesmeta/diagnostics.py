"""Convergence diagnostics for every MCMC fit: R-hat, bulk/tail ESS, divergences, E-BFMI.

All thresholds live in :data:`THRESHOLDS` (one place).  :func:`check_convergence` returns a
frozen :class:`Convergence` whose ``clean`` flag is ``True`` only when *every* criterion is met;
result objects carry that flag into ``.to_frame()`` and their printout, so a fit is never
reported as clean when it is not.  When a criterion fails a
:class:`~bayesmeta.exceptions.ConvergenceWarning` gives the numbers, the thresholds and a remedy.

References
----------
Vehtari, Gelman, Simpson, Carpenter, Bürkner (2021). Rank-normalization, folding, and
localization: an improved R-hat. Bayesian Analysis 16(2). doi:10.1214/20-BA1221
Betancourt (2016). Diagnosing suboptimal cotangent disintegrations in Hamiltonian Monte Carlo.
arXiv:1604.00695 (E-BFMI).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from bayesmeta.exceptions import ConvergenceWarning

#: Thresholds of a clean fit (Vehtari et al. 2021; Betancourt 2016).
THRESHOLDS: dict[str, float] = {
    "r_hat_max": 1.01,       # max R-hat over all monitored scalars must be <= this
    "ess_bulk_min": 400.0,   # min bulk ESS must be >= this
    "ess_tail_min": 400.0,   # min tail ESS must be >= this
    "divergences": 0,        # number of divergent transitions must be <= this
    "ebfmi_min": 0.3,        # E-BFMI of every chain must be >= this
}

REMEDY = ("increase tune/draws, raise target_accept (e.g. 0.99), or use a more informative "
          "heterogeneity prior; see bayesmeta.diagnostics.check_convergence")


def _node_ds(obj):
    """ArviZ 1.x returns DataTree nodes; older returns Dataset. Give a Dataset."""
    return obj.ds if hasattr(obj, "ds") else obj


@dataclass(frozen=True)
class Convergence:
    """Result of :func:`check_convergence`.

    Attributes
    ----------
    r_hat_max, ess_bulk_min, ess_tail_min : float
        Worst values over all monitored scalars (NaN-safe; NaN counts as failing).
    worst : dict
        Name of the scalar attaining each worst value (e.g. ``{"r_hat_max": "tau"}``).
    divergences : int
        Divergent transitions after warm-up, all chains.
    ebfmi : tuple of float
        E-BFMI per chain.
    n_draws, n_chains : int
    clean : bool
        ``True`` only when every threshold in :data:`THRESHOLDS` is met.
    problems : tuple of str
        One human-readable line per failed criterion (empty when clean).
    """

    r_hat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    divergences: int
    ebfmi: tuple[float, ...]
    n_draws: int
    n_chains: int
    worst: dict = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    clean: bool = False

    @property
    def ebfmi_min(self) -> float:
        return float(min(self.ebfmi)) if self.ebfmi else math.nan

    def line(self) -> str:
        """One diagnostics line for printouts."""
        status = "clean" if self.clean else "NOT CLEAN"
        return (f"Diagnostics ({status}): max R-hat = {self.r_hat_max:.3f}, "
                f"min bulk ESS = {self.ess_bulk_min:.0f}, min tail ESS = {self.ess_tail_min:.0f}, "
                f"divergences = {self.divergences}, min E-BFMI = {self.ebfmi_min:.2f} "
                f"({self.n_chains} chains x {self.n_draws} draws)")

    def to_dict(self) -> dict:
        return {"r_hat_max": self.r_hat_max, "ess_bulk_min": self.ess_bulk_min,
                "ess_tail_min": self.ess_tail_min, "divergences": self.divergences,
                "ebfmi": list(self.ebfmi), "clean": self.clean, "problems": list(self.problems)}

    def __str__(self) -> str:
        return self.line() + "".join("\n  - " + p for p in self.problems)


def _ebfmi(energy: np.ndarray) -> tuple[float, ...]:
    """E-BFMI per chain: mean squared energy change over energy variance (Betancourt 2016)."""
    out = []
    for e in np.atleast_2d(energy):
        e = np.asarray(e, dtype=float)
        var = np.var(e)
        out.append(float(np.mean(np.diff(e) ** 2) / var) if var > 0 and e.size > 1 else math.nan)
    return tuple(out)


def _stack(ds):
    """Every scalar of ``ds`` as one (chain, draw, _k) DataArray (ArviZ then computes each
    diagnostic once over all of them, with the numbers it gives per variable) and the
    variable name of each column."""
    import xarray as xr

    cols, names = [], []
    for name, da in ds.data_vars.items():
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        a = np.asarray(da.transpose("chain", "draw", *extra).values, dtype=float)
        a = a.reshape(a.shape[0], a.shape[1], -1)
        cols.append(a)
        names += [str(name)] * a.shape[2]
    arr = np.concatenate(cols, axis=2) if cols else np.zeros((1, 0, 0))
    return xr.DataArray(arr, dims=("chain", "draw", "_k")), names


def _worst_of(vals: np.ndarray, names: list[str], fn) -> tuple[float, str]:
    """Worst value of a per-scalar diagnostic and its variable; fn='max' or 'min'; NaN wins
    (the first, in variable order)."""
    if vals.size == 0:
        return (-math.inf if fn == "max" else math.inf), ""
    nan = np.flatnonzero(np.isnan(vals))
    if nan.size:
        return math.nan, names[int(nan[0])]
    i = int(np.argmax(vals) if fn == "max" else np.argmin(vals))
    return float(vals[i]), names[i]


def check_convergence(datatree, var_names=None, *, warn: bool = True,
                      thresholds: dict | None = None) -> Convergence:
    """Check an MCMC DataTree against :data:`THRESHOLDS`.

    Parameters
    ----------
    datatree : xarray.DataTree
        Output of ``pm.sample`` / ``nutpie.sample`` (needs ``posterior`` and ``sample_stats``).
    var_names : list of str, optional
        Variables to monitor (default: all posterior variables). Deterministic transforms of
        monitored variables add nothing but are harmless.
    warn : bool
        Emit a :class:`ConvergenceWarning` when a criterion fails.
    thresholds : dict, optional
        Override entries of :data:`THRESHOLDS` (tests only; reports use the defaults).

    Returns
    -------
    Convergence

    Warns
    -----
    ConvergenceWarning
        With the failing numbers, thresholds and a remedy.
    """
    th = dict(THRESHOLDS, **(thresholds or {}))
    post = datatree["posterior"]
    post_ds = _node_ds(post)
    if var_names is not None:
        post_ds = post_ds[list(var_names)]
    n_chains = int(post_ds.sizes.get("chain", 1))
    n_draws = int(post_ds.sizes.get("draw", 0))
    import arviz as az  # here, not at import: the exact engines' results never need it

    with warnings.catch_warnings():
        # ArviZ warns about tiny per-chain ESS itself; our message below is the one that counts.
        # (ArviZ's own notes on short chains and the arithmetic warnings of constant draws)
        warnings.filterwarnings("ignore", module=r"arviz")
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        stacked, names = _stack(post_ds)
        rhat = np.asarray(az.rhat(stacked), dtype=float)
        ess_b = np.asarray(az.ess(stacked, method="bulk"), dtype=float)
        ess_t = np.asarray(az.ess(stacked, method="tail"), dtype=float)
    r_max, r_name = _worst_of(rhat, names, "max")
    eb_min, eb_name = _worst_of(ess_b, names, "min")
    et_min, et_name = _worst_of(ess_t, names, "min")
    stats = _node_ds(datatree["sample_stats"])
    div = int(np.asarray(stats["diverging"].values).sum()) if "diverging" in stats else 0
    ebfmi = _ebfmi(stats["energy"].values) if "energy" in stats else ()

    problems = []
    if not (r_max <= th["r_hat_max"]):
        problems.append(f"r_hat('{r_name}') = {r_max:.3f} > {th['r_hat_max']}")
    if not (eb_min >= th["ess_bulk_min"]):
        problems.append(f"ess_bulk('{eb_name}') = {eb_min:.0f} < {th['ess_bulk_min']:.0f}")
    if not (et_min >= th["ess_tail_min"]):
        problems.append(f"ess_tail('{et_name}') = {et_min:.0f} < {th['ess_tail_min']:.0f}")
    if div > th["divergences"]:
        problems.append(f"{div} divergent transitions > {th['divergences']}")
    low = [f"{v:.2f}" for v in ebfmi if not (v >= th["ebfmi_min"])]
    if low:
        problems.append(f"E-BFMI {', '.join(low)} < {th['ebfmi_min']} in {len(low)} of "
                        f"{len(ebfmi)} chains")
    conv = Convergence(r_hat_max=r_max, ess_bulk_min=eb_min, ess_tail_min=et_min,
                       divergences=div, ebfmi=ebfmi, n_draws=n_draws, n_chains=n_chains,
                       worst={"r_hat_max": r_name, "ess_bulk_min": eb_name,
                              "ess_tail_min": et_name},
                       problems=tuple(problems), clean=not problems)
    if problems and warn:
        warnings.warn("; ".join(problems) + f"; {REMEDY}.", ConvergenceWarning, stacklevel=2)
    return conv
