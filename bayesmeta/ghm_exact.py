"""Exact (deterministic) Bayesian engine of the Gaussian hierarchical model.

Given the hyperparameters the model is Gaussian (:mod:`bayesmeta.ghm_kernel`): the means and
random effects integrate out in closed form, and every estimand is normal given theta. The
hyperparameters are integrated numerically (:mod:`bayesmeta.ghm_quad`: tensor double-exponential
trapezoid for one or two, quasi-Monte Carlo importance sampling beyond), so every reported
quantity is a **Gaussian mixture over the nodes**: exact CDF and quantiles at any level, exact
P(below / above), and joint i.i.d. draws (node by weight, then the node's joint normal).

:func:`fit_ghm` returns a :class:`GHMExactFit` (the :class:`bayesmeta.fits.Fit` interface);
:func:`r_sensitivity` refits over within-study correlations; :func:`exact_loo` is leave-one-out
by refitting without each row.
"""

from __future__ import annotations

import copy
import hashlib
import math
import pickle
import time as _time
import warnings
import weakref
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import optimize, special

from bayesmeta.exceptions import ConvergenceWarning, SpecError
from bayesmeta.fits import Fit, Param, _summary_frame, as_param
from bayesmeta.ghm import Estimand, GHMDesign, build_design
from bayesmeta.blas import single_threaded
from bayesmeta.ghm_kernel import Kernel
from bayesmeta.ghm_quad import IS_TOL, TOL, Nodes, integrate

__all__ = ["GHMExactFit", "fit_ghm", "fit_design", "r_sensitivity", "exact_loo",
           "mixture_quantiles", "row_estimands", "mark_extrapolation"]

_SCALES = {"OR": "logOR", "PETO": "logOR", "RR": "logRR", "HR": "logHR"}


# --------------------------------------------------------------------------------------------
# normal mixtures
# --------------------------------------------------------------------------------------------
def _mix_cdf(x, M, S, W):
    """P(X <= x): x (P, Q), M/S (N, P), W (N,) -> (P, Q). A component with SD 0 (a quantity
    fixed given the node, e.g. a deviation whose variance is fixed at 0) is a point mass."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        F = special.ndtr((x[None, :, :] - M[:, :, None]) / S[:, :, None])
    return np.einsum("npq,n->pq", np.where(np.isnan(F), 1.0, F), W)


@single_threaded
def mixture_quantiles(M, S, W, qs, xtol=1e-12):
    """Quantiles of P normal mixtures (components ``M``, ``S`` of shape (N, P), weights ``W``)
    at probabilities ``qs`` (Q,) -> (P, Q).

    Safeguarded Newton inside the bracket given by the smallest and largest component quantiles
    (the mixture quantile lies between them), started at the weighted median of the component
    quantiles; only unconverged targets are iterated."""
    qs = np.atleast_1d(np.asarray(qs, dtype=float))
    P, Q = M.shape[1], qs.size
    use = W > 0
    M, S, W = M[use], S[use], W[use]
    zq = special.ndtri(qs)
    comp = M[:, :, None] + S[:, :, None] * zq[None, None, :]          # (N, P, Q)
    lo, hi = comp.min(0).ravel(), comp.max(0).ravel()
    order = np.argsort(comp, axis=0)
    cw = np.cumsum(W[order], axis=0)
    pos = np.minimum((cw < qs[None, None, :]).sum(0), W.size - 1)      # (P, Q)
    x = np.take_along_axis(comp, np.take_along_axis(order, pos[None], 0), 0)[0].ravel()
    pi = np.repeat(np.arange(P), Q)
    qq = np.tile(qs, P)
    scale = np.maximum(hi - lo, 1e-300)
    act = np.arange(P * Q)
    S = np.maximum(S, 1e-300)
    for _ in range(12):
        if act.size == 0:
            break
        with np.errstate(over="ignore", under="ignore"):
            z = (x[act][None, :] - M[:, pi[act]]) / S[:, pi[act]]
            F = W @ special.ndtr(z) - qq[act]
            f = W @ (np.exp(-0.5 * z * z) / S[:, pi[act]]) / math.sqrt(2 * math.pi)
        lo[act] = np.where(F < 0, x[act], lo[act])
        hi[act] = np.where(F > 0, x[act], hi[act])
        with np.errstate(divide="ignore", invalid="ignore"):
            step = F / f
        xn = x[act] - np.where(np.isfinite(step), step, 0.0)
        bad = ~np.isfinite(step) | (xn <= lo[act]) | (xn >= hi[act])
        xn = np.where(bad, 0.5 * (lo[act] + hi[act]), xn)
        done = (np.abs(xn - x[act]) <= xtol * (np.abs(x[act]) + 1e-3 * scale[act])) | (F == 0)
        x[act] = xn
        act = act[~done]
    # the few targets Newton has not settled (steps leaving the bracket where the mixture
    # density is tiny): Brent's method inside their current bracket
    for i in act:
        mi, si = M[:, pi[i]], S[:, pi[i]]

        def g(v, mi=mi, si=si, q=qq[i]):
            with np.errstate(over="ignore"):
                return float(W @ special.ndtr((v - mi) / si)) - q
        a, b = lo[i], hi[i]
        if g(a) > 0 or g(b) < 0:
            a, b = comp[:, pi[i] // 1, :].min(), comp[:, pi[i], :].max()
        x[i] = optimize.brentq(g, a, b, xtol=1e-14, rtol=4 * np.finfo(float).eps,
                               maxiter=500)
    return x.reshape(P, Q)


def mark_extrapolation(df: pd.DataFrame, fit) -> pd.DataFrame:
    """Set ``flag`` to EXTRAPOLATION on the rows (in ``fit.params()`` order) whose estimand is
    an extrapolation (a subgroup at a time it was not observed at)."""
    notes = {e.param: e.note for e in fit.design.estimands}
    ext = np.array([notes.get(p, "").startswith("extrapolation") for p in fit.params()])
    if ext.any():
        df = df.copy()
        df.loc[ext, "flag"] = [f"{f}; EXTRAPOLATION" if f else "EXTRAPOLATION"
                               for f in df.loc[ext, "flag"]]
    return df


def _weighted_quantile(x, w, qs):
    o = np.argsort(x)
    xs, ws = x[o], w[o]
    cw = np.cumsum(ws) - 0.5 * ws
    return np.interp(qs, cw, xs)


# --------------------------------------------------------------------------------------------
# the fit
# --------------------------------------------------------------------------------------------
def row_estimands(design: GHMDesign) -> list[Estimand]:
    """Replicate of each row, ``y_rep[r] = x_r beta + z_r gamma + h_r e + eps_r`` (marginal per
    row): for posterior predictive checks."""
    X, Z = design.X(), design.Z()
    out = []
    for i in range(design.n):
        extra = (("const", float(design.se[i] ** 2)),)
        if design.use_tau and design.h[i] > 0:
            extra += (("tau", float(design.h[i])),)
        out.append(Estimand(Param("y_rep", row=str(i)), np.concatenate([X[i], Z[i]]), extra))
    return out


@dataclass
class GHMExactFit(Fit):
    """Exact GHM posterior: Gaussian mixtures over the hyperparameter nodes.

    Attributes beyond :class:`~bayesmeta.fits.Fit`: ``design`` (:class:`~bayesmeta.ghm.
    GHMDesign`), ``nodes`` (:class:`~bayesmeta.ghm_quad.Nodes`), ``seconds``, ``n_draws`` and
    ``seed`` of :meth:`draws`.
    """

    design: GHMDesign = None
    nodes: Nodes = None
    seconds: float = 0.0
    n_draws: int = 40_000
    seed: int = 20240611
    _kernel: Kernel = field(default=None, repr=False)

    # ---- components ----------------------------------------------------------------------
    @cached_property
    def _theta(self) -> dict:
        return self.design.theta(self.nodes.x)

    @cached_property
    def _moments(self):
        M, V, _ = self._kernel.full_diag(self._theta)
        return M, np.sqrt(np.maximum(V, 0.0))

    @cached_property
    def _index(self) -> dict:
        return {e.param: i for i, e in enumerate(self.design.estimands)}

    @cached_property
    def _rows(self):
        """(M, S) of the row replicates (posterior predictive), computed once."""
        k = Kernel(self.design, row_estimands(self.design))
        M, V, _ = k.full_diag(self._theta)
        return M, np.sqrt(np.maximum(V, 0.0))

    def _components(self, param: Param):
        if param in self._index:
            i = self._index[param]
            M, S = self._moments
            return M[:, i:i + 1], S[:, i:i + 1]
        if param.name == "y_rep":
            i = int(param.get("row"))
            M, S = self._rows
            return M[:, i:i + 1], S[:, i:i + 1]
        raise KeyError(f"no parameter {param}; have {[str(p) for p in self.params()]}")

    def _hyper(self, name: str) -> int | None:
        for k, h in enumerate(self.design.hypers):
            if h.name == name:
                return k
        return None

    # ---- Fit interface -------------------------------------------------------------------
    @property
    def clean(self) -> bool:
        return bool(self.nodes.diagnostics.get("accurate", True))

    @property
    def flag(self) -> str:
        return "" if self.clean else "NOT ACCURATE"

    def params(self) -> list[Param]:
        return [e.param for e in self.design.estimands] + [Param(h.name)
                                                           for h in self.design.hypers]

    def to_frame(self, ci_prob: float = 0.95, *, analysis: str = "",
                 outcome: str | None = None) -> pd.DataFrame:
        """The shared results table; rows that involve a subgroup at a time it was not
        observed at carry ``flag = "EXTRAPOLATION"`` (kept out of ``df[df.flag == ""]``)."""
        return mark_extrapolation(super().to_frame(ci_prob, analysis=analysis, outcome=outcome),
                                  self)

    def notes_of(self, param: Param) -> str:
        for e in self.design.estimands:
            if e.param == param:
                return e.note
        return ""

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        # computed once per level (a fit does not change after fitting); callers get a copy
        cache = self.__dict__.setdefault("_summaries", {})
        key = float(ci_prob)
        if key not in cache:
            cache[key] = self._summary(key)
        return cache[key].copy()

    def _summary(self, ci_prob: float) -> pd.DataFrame:
        a = (1.0 - float(ci_prob)) / 2.0
        qs = np.array([0.5, a, 1.0 - a])
        W = self.nodes.weight
        M, S = self._moments
        mean = W @ M
        sd = np.sqrt(np.maximum(W @ (S ** 2 + M ** 2) - mean ** 2, 0.0))
        Q = mixture_quantiles(M, S, W, qs)
        mc = self._mc_error(M)
        rows = []
        ess = self.nodes.diagnostics.get("ess", math.nan)
        for i, e in enumerate(self.design.estimands):
            rows.append((e.param, dict(estimate=mean[i], se=sd[i], median=Q[i, 0],
                                       ci_low=Q[i, 1], ci_high=Q[i, 2], interval="eti",
                                       mcse=mc[i], ess_bulk=ess, note=e.note)))
        for k, h in enumerate(self.design.hypers):
            x = self.nodes.x[:, k]
            m = float(W @ x)
            s = math.sqrt(max(float(W @ x ** 2) - m * m, 0.0))
            med, lo, hi = self.hyper_quantiles(h.name, qs)
            mce = (math.sqrt(float(np.sum(W ** 2 * (x - m) ** 2))) if self.nodes.kind == "qmc-is"
                   else 0.0)
            rows.append((Param(h.name), dict(estimate=m, se=s, median=med, ci_low=lo,
                                             ci_high=hi, interval="eti", mcse=mce,
                                             ess_bulk=ess, note="")))
        df = _summary_frame(rows)
        df["note"] = [r.get("note", "") for _, r in rows]
        return df

    def _mc_error(self, M) -> np.ndarray:
        """Monte Carlo SE of each mixture mean (importance sampling only; 0 for quadrature)."""
        if self.nodes.kind != "qmc-is":
            return np.zeros(M.shape[1])
        W = self.nodes.weight
        return np.sqrt(np.sum(W[:, None] ** 2 * (M - W @ M) ** 2, axis=0))

    def hyper_quantiles(self, name: str, qs) -> np.ndarray:
        """Posterior quantiles of a free hyperparameter (sinc marginal on tensor grids,
        weighted ECDF for importance sampling)."""
        k = self._hyper(name)
        qs = np.atleast_1d(np.asarray(qs, dtype=float))
        h = self.design.hypers[k]
        nd = self.nodes
        if nd.kind != "tensor":
            return _weighted_quantile(nd.x[:, k], nd.weight, qs)
        tk, mw = self._marginal(k)
        lo = np.full(qs.shape, tk[0] - 10 * nd.h)
        hi = np.full(qs.shape, tk[-1] + 10 * nd.h)
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            F = self._sinc_cdf(mid, tk, mw)
            lo, hi = np.where(F < qs, mid, lo), np.where(F < qs, hi, mid)
            if np.all(hi - lo < 1e-13 * (1 + np.abs(mid))):
                break
        t = 0.5 * (lo + hi)
        return h.x_of_z(nd.centre[k] + nd.width[k] * np.sinh(t))

    def _marginal(self, k):
        nd = self.nodes
        tk = np.round(nd.t[:, k] / nd.h).astype(np.int64)
        u, inv = np.unique(tk, return_inverse=True)
        mw = np.bincount(inv, weights=nd.weight)
        return u * nd.h, mw

    def _sinc_cdf(self, t, tk, mw):
        s, _ = special.sici(math.pi * (np.asarray(t)[..., None] - tk) / self.nodes.h)
        return np.clip(((0.5 + s / math.pi) * mw).sum(-1), 0.0, 1.0)

    def hyper_cdf(self, name: str, x) -> np.ndarray:
        k = self._hyper(name)
        h = self.design.hypers[k]
        nd = self.nodes
        x = np.atleast_1d(np.asarray(x, dtype=float))
        lo, hi = h.bounds
        inside = (x > lo) & (x < hi)
        if nd.kind != "tensor":
            o = np.argsort(nd.x[:, k])
            cw = np.cumsum(nd.weight[o]) - 0.5 * nd.weight[o]
            F = np.interp(x, nd.x[o, k], cw, left=0.0, right=1.0)
        else:
            z = h.z_of_x(np.where(inside, x, lo + 1.0 if not math.isfinite(hi) else
                                  0.5 * (lo + hi)))
            t = np.arcsinh((z - nd.centre[k]) / nd.width[k])
            tk, mw = self._marginal(k)
            F = self._sinc_cdf(t, tk, mw)
        return np.where(inside, F, np.where(x >= hi, 1.0, 0.0))

    def prob(self, param, *, below=None, above=None) -> float:
        if (below is None) == (above is None):
            raise ValueError("give exactly one of below= or above=")
        param = as_param(param)
        x = float(below if below is not None else above)
        if param.name in self.design.hyper_names and not param.coords:
            c = float(self.hyper_cdf(param.name, x)[0])
        else:
            M, S = self._components(param)
            c = float(_mix_cdf(np.array([[x]]), M, S, self.nodes.weight)[0, 0])
        return c if below is not None else 1.0 - c

    def cdf(self, param, x) -> np.ndarray:
        """Posterior CDF of ``param`` at ``x`` (vectorised)."""
        param = as_param(param)
        x = np.atleast_1d(np.asarray(x, dtype=float))
        if param.name in self.design.hyper_names and not param.coords:
            return self.hyper_cdf(param.name, x)
        M, S = self._components(param)
        return _mix_cdf(x[None, :], M, S, self.nodes.weight)[0]

    def quantile(self, param, q) -> np.ndarray:
        param = as_param(param)
        if param.name in self.design.hyper_names and not param.coords:
            return self.hyper_quantiles(param.name, q)
        M, S = self._components(param)
        return mixture_quantiles(M, S, self.nodes.weight, q)[0]

    @cached_property
    def _joint(self):
        """Joint i.i.d. draws: node index by weight, then the latent vector z = (beta, gamma)
        from its normal given the node, then every estimand as L z (plus, for predictive
        ones, an independent normal with the extra variance): exact linear relations between
        estimands (a contrast is the difference of its two cells) hold in every draw."""
        rng = np.random.default_rng(self.seed)
        n = int(self.n_draws)
        d = self.design
        ests = d.estimands
        idx = rng.choice(self.nodes.weight.size, size=n, p=self.nodes.weight)
        pg = d.p + d.offsets["g"]
        eps = rng.standard_normal((n, pg))
        eps2 = rng.standard_normal((n, len(ests)))
        L = np.array([e.L for e in ests]).reshape(len(ests), pg)
        latent = Kernel(d, [Estimand(Param("z", k=str(i)), np.eye(pg)[i]) for i in range(pg)])
        z = np.empty((n, pg))
        uniq, inv = np.unique(idx, return_inverse=True)
        th = {k: v[uniq] for k, v in self._theta.items()}
        for a in range(0, uniq.size, 256):
            sub = {k: v[a:a + 256] for k, v in th.items()}
            M, C, _ = latent.full(sub)
            ev, U = np.linalg.eigh(C)
            R = U * np.sqrt(np.maximum(ev, 0.0))[:, None, :]
            sel = np.flatnonzero((inv >= a) & (inv < a + 256))
            j = inv[sel] - a
            z[sel] = M[j] + np.einsum("nij,nj->ni", R[j], eps[sel])
        extra = self._kernel._extra({k: v[idx] for k, v in self._theta.items()}, n)
        return idx, z @ L.T + np.sqrt(extra) * eps2

    def draws(self, param, n: int | None = None) -> np.ndarray:
        """Joint posterior draws (the i-th draw of every parameter comes from the same joint
        draw); a free hyperparameter's draw is its quadrature node."""
        param = as_param(param)
        idx, out = self._joint
        if param.name in self.design.hyper_names and not param.coords:
            d = self.nodes.x[idx, self._hyper(param.name)]
        elif param in self._index:
            d = out[:, self._index[param]]
        elif param.name == "y_rep":
            M, S = self._rows
            i = int(param.get("row"))
            z = np.random.default_rng(self.seed + 1 + i).standard_normal(idx.size)
            d = M[idx, i] + S[idx, i] * z
        else:
            raise KeyError(f"no parameter {param}")
        return d if n is None else d[:n]

    # ---- extras --------------------------------------------------------------------------
    @property
    def log_evidence(self) -> float | None:
        """log p(y) (None with a flat mean prior: undefined)."""
        return None if self.design.mean_prior.is_flat else self.nodes.log_evidence

    def prior_table(self) -> pd.DataFrame:
        return self.design.prior_table()

    def diagnostics(self) -> dict:
        return {"rule": self.nodes.kind, "dims": len(self.design.hypers), **self.nodes.diagnostics,
                "seconds": self.seconds}


def _node_moments(kern: Kernel, design: GHMDesign, x):
    M, V, _ = kern.full_diag(design.theta(x))
    return M, np.sqrt(np.maximum(V, 0.0))


@single_threaded
def fit_design(design: GHMDesign, *, tol: float = TOL, tensor_max_dim: int = 2,
               qmc_log2: int = 12, qmc_max_log2: int = 15, seed: int = 20240611,
               n_draws: int = 40_000, outcome: str = "", warn: bool = True) -> GHMExactFit:
    """Fit a built design (:func:`bayesmeta.ghm.build_design`) with the exact engine.

    Importance sampling (more than ``tensor_max_dim`` hyperparameters) starts with
    ``2**qmc_log2`` Sobol points and doubles them (fresh points) while the estimated Monte
    Carlo error of any posterior mean exceeds half of :data:`~bayesmeta.ghm_quad.IS_TOL`
    posterior SDs, up to ``2**qmc_max_log2``; the fit is flagged inaccurate beyond ``IS_TOL``
    or when k-hat > 0.7."""
    t0 = _time.perf_counter()
    kern = Kernel(design)
    key = _model_key(design, tol=tol, tensor_max_dim=tensor_max_dim, qmc_log2=qmc_log2,
                     qmc_max_log2=qmc_max_log2, seed=seed, n_draws=n_draws)
    same = _FITTED.get(key) if key is not None else None
    if same is not None:
        return _refit_same(same, design, kern, outcome, t0, warn)
    nodes = integrate(design, kern, tol=tol, tensor_max_dim=tensor_max_dim, qmc_log2=qmc_log2,
                      seed=seed)
    moments = None
    m = int(qmc_log2)
    while nodes.kind == "qmc-is":
        # conditional moments of the estimands at the points not yet evaluated
        M, S = _node_moments(kern, design, nodes.x[0 if moments is None else
                                                    moments[0].shape[0]:])
        moments = (M, S) if moments is None else (np.concatenate([moments[0], M]),
                                                  np.concatenate([moments[1], S]))
        M, S = moments
        W = nodes.weight
        sd = np.sqrt(np.maximum(W @ (S ** 2 + M ** 2) - (W @ M) ** 2, 1e-300))
        mc = np.sqrt(np.sum(W[:, None] ** 2 * (M - W @ M) ** 2, axis=0))
        rel = float(np.max(mc / sd)) if M.size else 0.0
        nodes.diagnostics["max_mc_error_sd"] = rel
        nodes.diagnostics["accurate"] = bool(nodes.diagnostics["khat"] <= 0.7 and rel <= IS_TOL)
        if rel <= IS_TOL / 2 or m >= qmc_max_log2:
            break
        nodes.sampler.extend()
        nodes = nodes.sampler.nodes()
        m += 1
    fit = fit_from_nodes(design, nodes, kern, seed=seed, n_draws=n_draws, tol=tol,
                         outcome=outcome, warn=warn)
    if moments is not None:
        fit.__dict__["_moments"] = moments
    fit.seconds = _time.perf_counter() - t0
    fit.provenance["seconds"] = fit.seconds
    if key is not None:
        _FITTED[key] = fit
    return fit


def fit_from_nodes(design: GHMDesign, nodes: Nodes, kern: Kernel, *, seed: int, n_draws: int,
                   tol: float, outcome: str = "", warn: bool = True) -> "GHMExactFit":
    """The fit of ``design`` with posterior nodes ``nodes`` (warns when they are flagged
    inaccurate)."""
    if warn and not nodes.diagnostics.get("accurate", True):
        warnings.warn(f"GHM exact engine: integration over {len(design.hypers)} hyperparameters "
                      f"is not accurate ({nodes.kind}: {nodes.diagnostics}); results are "
                      "flagged NOT ACCURATE", ConvergenceWarning, stacklevel=3)
    meas = design.measure
    prov = {"engine": "exact-GHM", "rule": nodes.kind, "nodes": int(nodes.weight.size),
            "seed": int(seed), "tol": tol,
            "priors": {row.parameter: row.prior for row in design.prior_table().itertuples()},
            "time_structure": design.time_structure, "subgroup": design.subgroup_mode,
            "correlation": design.correlation}
    return GHMExactFit(model="ghm", source="bayesian", method="exact-GHM", measure=meas,
                       scale=_SCALES.get(meas, meas), coords={"outcome": outcome} if outcome
                       else {}, notes=tuple(design.notes), provenance=prov, design=design,
                       nodes=nodes, n_draws=int(n_draws), seed=int(seed), _kernel=kern)


#: fits of this process by model key (:func:`_model_key`), held while the fit is alive: a
#: second fit of the same model with the same engine settings (a sensitivity value equal to
#: the main fit's, a simpler model of the checks equal to a sensitivity fit) takes its
#: nodes and node moments instead of integrating again
_FITTED: "weakref.WeakValueDictionary[bytes, GHMExactFit]" = weakref.WeakValueDictionary()
#: what a fit's numbers do not depend on (descriptions)
_KEY_SKIP = ("notes", "defaults")


def _model_key(design: GHMDesign, **engine) -> bytes | None:
    """Digest of everything the nodes and estimand moments depend on: every field of the
    design but its descriptions, and the engine settings (None when a field cannot be
    serialised: no reuse)."""
    fields = [(f, getattr(design, f)) for f in design.__dataclass_fields__
              if f not in _KEY_SKIP]
    try:
        blob = pickle.dumps((fields, sorted(engine.items())), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - an unpicklable prior or option: fit afresh
        return None
    return hashlib.sha256(blob).digest()


def _refit_same(same: "GHMExactFit", design: GHMDesign, kern: Kernel, outcome: str, t0: float,
                warn: bool):
    """A fit of ``design`` from the nodes of ``same`` (the same model and engine settings)."""
    nodes = copy.copy(same.nodes)
    nodes.diagnostics = dict(same.nodes.diagnostics)
    fit = fit_from_nodes(design, nodes, kern, seed=same.seed, n_draws=same.n_draws,
                         tol=same.provenance.get("tol", TOL), outcome=outcome, warn=warn)
    for name in ("_theta", "_moments", "_rows", "_joint"):
        if name in same.__dict__:
            fit.__dict__[name] = same.__dict__[name]
    fit.seconds = _time.perf_counter() - t0
    fit.provenance["seconds"] = fit.seconds
    fit.provenance["nodes_of_identical_fit"] = True
    return fit


def fit_ghm(data, *, time_structure: str = "exchangeable", subgroup: str = "fixed",
            correlation: str = "exchangeable", r=None, mean_prior=None, sigma_time=None,
            sigma_study=None, tau=None, sigma_subgroup=None, rho=None, windows=None,
            contrasts=None, measure: str = "MD", extrapolate: bool = False, outcome: str = "",
            study_time: str = "independent", rho_within=None, **engine) -> GHMExactFit:
    """Exact Bayesian fit of the Gaussian hierarchical model.

    Model options are those of :func:`bayesmeta.ghm_build.build_design` (time structure, fixed
    or random subgroups, within-study correlation form and ``r``, study x time structure,
    priors, windows, contrasts);
    ``engine`` options are those of :func:`fit_design` (``tol``, ``tensor_max_dim``,
    ``qmc_log2``, ``seed``, ``n_draws``, ``warn``).

    Returns
    -------
    GHMExactFit
        Parameters: ``mu`` (per subgroup; per subgroup and time for observed cells; per
        window), ``contrast`` (``subgroup="A - B"``; per time where both are observed, per
        window, and of the subgroup levels), ``theta_new`` (new study in a cell), and the free
        hyperparameters (``sigma_time``, ``rho``, ``sigma_study``, ``tau``, ``r``,
        ``sigma_subgroup``). ``notes`` state every prior and default.
    """
    design = build_design(data, time_structure=time_structure, subgroup=subgroup,
                          correlation=correlation, r=r, mean_prior=mean_prior,
                          sigma_time=sigma_time, sigma_study=sigma_study, tau=tau,
                          sigma_subgroup=sigma_subgroup, rho=rho, windows=windows,
                          contrasts=contrasts, measure=measure, extrapolate=extrapolate,
                          study_time=study_time, rho_within=rho_within)
    return fit_design(design, outcome=outcome, **engine)


def r_sensitivity(data, r_values=(0.0, 0.5, 0.8, 0.9), *, params=None, ci_prob: float = 0.95,
                  **kw) -> pd.DataFrame:
    """Refit over known within-study correlations ``r``; tidy rows (r, parameter, time,
    subgroup, estimate, sd, ci_low, ci_high). ``params`` limits the parameters (default
    every ``mu`` and ``contrast``)."""
    if "r" in kw:
        raise SpecError("r_sensitivity sets r itself", key="r")
    rows = []
    for r in r_values:
        fit = fit_ghm(data, r=float(r), **kw)
        s = fit.summary(ci_prob)
        for p, v in s.iterrows():
            if params is not None and p not in params:
                continue
            if params is None and p.name not in ("mu", "contrast"):
                continue
            rows.append(dict(r=float(r), parameter=p.name, subgroup=p.get("subgroup"),
                             time=p.get("time"), estimate=v["estimate"], sd=v["se"],
                             ci_low=v["ci_low"], ci_high=v["ci_high"], level=ci_prob))
    return pd.DataFrame(rows)


@single_threaded
def exact_loo(fit: GHMExactFit, rows=None) -> pd.DataFrame:
    """Leave-one-out by refitting without each row (same model: levels, priors, estimands).

    For each row i the posterior nodes of theta given y_-i are computed afresh, and
    ``p(y_i | y_-i) = sum_k w_k N(y_i; m_k, v_k)`` with ``(m_k, v_k)`` the Gaussian conditional
    of y_i given y_-i and theta_k (beta integrated over its prior, or the GLS limit for a
    flat prior). ``rows`` limits the rows left out (default all). Returns rows (row,
    elpd_loo, loo_pit, loo_mean, loo_sd).
    """
    d = fit.design
    out = []
    for i in (range(d.n) if rows is None else rows):
        keep = np.ones(d.n, dtype=bool)
        keep[i] = False
        sub = d.subset(keep)
        if sub.n == 0:
            continue
        kern = Kernel(sub)
        nodes = integrate(sub, kern, tol=1e-8, seed=fit.seed)
        live = nodes.weight > 0  # zero-weight nodes include placeholders of broken solves
        th = sub.theta(nodes.x[live])
        m, v = _loo_conditional(d, th, i)
        s = np.sqrt(v)
        W = nodes.weight[live]
        dens = np.exp(-0.5 * ((d.y[i] - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
        mean = float(W @ m)
        out.append(dict(row=i, elpd_loo=float(np.log(W @ dens)),
                        loo_pit=float(W @ special.ndtr((d.y[i] - m) / s)),
                        loo_mean=mean, loo_sd=math.sqrt(max(float(W @ (v + m ** 2)) - mean ** 2,
                                                            0.0))))
    return pd.DataFrame(out)


@single_threaded
def node_loo(fit: GHMExactFit) -> pd.DataFrame:
    """Leave-one-out from the fit's own posterior nodes, without refitting.

    ``p(theta | y) ∝ p(theta | y_-i) p(y_i | y_-i, theta)``, so with the posterior node
    weights ``w_k``: ``1 / p(y_i | y_-i) = sum_k w_k / p(y_i | y_-i, theta_k)`` and the
    leave-one-out weights of the nodes are ``w_k / p(y_i | y_-i, theta_k)`` normalised. On a
    quadrature grid this is the same quadrature applied to the leave-one-out posterior; it is
    accurate when that posterior lies where the full posterior's nodes are (compare
    :func:`exact_loo`, which refits). Returns the columns of :func:`exact_loo`.
    """
    d = fit.design
    live = fit.nodes.weight > 0
    th = d.theta(fit.nodes.x[live])
    W = fit.nodes.weight[live]
    out = []
    allrows = _loo_all_rows(d, th)
    for i in range(d.n):
        m, v = allrows(i)
        s = np.sqrt(v)
        logp = -0.5 * ((d.y[i] - m) / s) ** 2 - np.log(s * math.sqrt(2 * math.pi))
        lw = np.log(W) - logp
        top = lw.max()
        wl = np.exp(lw - top)
        elpd = -(top + math.log(wl.sum()))
        wl /= wl.sum()
        mean = float(wl @ m)
        out.append(dict(row=i, elpd_loo=float(elpd),
                        loo_pit=float(wl @ special.ndtr((d.y[i] - m) / s)), loo_mean=mean,
                        loo_sd=math.sqrt(max(float(wl @ (v + m ** 2)) - mean ** 2, 0.0)),
                        loo_ess=float(1.0 / np.sum(wl ** 2))))
    return pd.DataFrame(out)


def _loo_all_rows(d: GHMDesign, th: dict):
    """A function i -> (mean, variance) of y_i given y_-i at every node. With a normal mean
    prior, beta integrates out: y ~ N(X b0, Sigma + X P0^-1 X'), and with Q its inverse the
    conditional of y_i is N(y_i - (Q (y - X b0))_i / Q_ii, 1 / Q_ii) for all rows from one
    inverse per node; a flat prior uses :func:`_loo_conditional` row by row."""
    if d.mean_prior.is_flat:
        return lambda i: _loo_conditional(d, th, i)
    X = d.X()
    b0, p0 = d.prior_mean()
    S = d.Sigma(th) + (X / p0) @ X.T
    Q = np.linalg.inv(S)
    r = d.y - X @ b0
    qd = np.diagonal(Q, axis1=1, axis2=2)
    Qr = Q @ r
    return lambda i: (d.y[i] - Qr[:, i] / qd[:, i], 1.0 / qd[:, i])


def _loo_conditional(d: GHMDesign, th: dict, i: int):
    """Mean and variance of y_i given y_-i and theta (universal kriging with beta's prior)."""
    X = d.X()
    S = d.Sigma(th)
    b0, p0 = d.prior_mean()
    o = np.flatnonzero(np.arange(d.n) != i)
    Soo = S[:, o][:, :, o]
    Sio = S[:, i, o]
    rhs = np.concatenate([d.y[o][:, None], X[o]], axis=1)
    rhs = np.concatenate([np.broadcast_to(rhs, (S.shape[0],) + rhs.shape), Sio[:, :, None]], 2)
    W = np.linalg.solve(Soo, rhs)
    p = d.p
    Siy, SiX, Sis = W[:, :, 0], W[:, :, 1:1 + p], W[:, :, 1 + p]
    A = X[o].T @ SiX + np.diag(p0)[None]
    bhat = np.linalg.solve(A, (Siy @ X[o] + p0 * b0)[..., None])[..., 0]
    r = d.y[o][None] - bhat @ X[o].T
    m = bhat @ X[i] + np.sum(Sis * r, axis=1)
    e = X[i][None] - Sis @ X[o]
    v = S[:, i, i] - np.sum(Sis * Sio, axis=1) + np.einsum("kp,kpq,kq->k", e,
                                                            np.linalg.inv(A), e)
    return m, v
