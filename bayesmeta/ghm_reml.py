"""Classical twin of the Gaussian hierarchical model: REML / ML with fixed cell means.

The model of :mod:`bayesmeta.ghm` with the cell means ``mu_{s,t} = m_s + d_{s,t}`` *fixed* (one
parameter per observed subgroup x time cell) and the same random structure and sampling
covariance ``V``:

.. math::

    y = X_{cell} \\beta + u_{j(r)} + h_r e_r + \\varepsilon, \\qquad
    \\operatorname{Cov}(y) = \\sigma^2_{study} Z_u Z_u' + \\tau^2 E(\\rho) + V

* ``struct="CS"``: ``E = diag(h)`` (independent within-cell heterogeneity): the study effect plus
  iid study x time deviations, i.e. compound symmetry within a study, exactly the Bayesian
  model's ``u_j + e_r``. metafor: ``rma.mv(yi, V, mods = ~ 0 + cell, random = list(~ 1 | study,
  ~ 1 | row))``, or ``random = ~ time | study, struct = "CS"`` with ``tau² = sigma²_study +
  tau²``, ``rho = sigma²_study / (sigma²_study + tau²)``.
* ``struct="AR"`` / ``"CAR"``: the study x time deviations of one study (and subgroup) are
  correlated ``rho^|i - k|`` over the positions of the ordered times (AR) or ``rho^|t - t'|``
  over the numeric times (CAR): metafor ``random = list(~ 1 | study, ~ time | study),
  struct = "AR"`` / ``"CAR"``.

``V`` is built as metafor's ``vcalc`` does (``obs = time, rho = r`` for the exchangeable form;
``time1 = time, phi = r`` for the decay form), from the same design as the Bayesian fit.

Estimation maximises the (restricted) log-likelihood with L-BFGS-B on analytic gradients from
several starts, then Fisher scoring on the free components; fixed effects are GLS with
``Var(beta_hat) = (X' Sigma^-1 X)^-1``. Tests: ``"z"`` (Wald), ``"t"`` (t with k - p df, metafor's
``test = "t"``) and ``"knha"`` (t with k - p df and the covariance scaled by
``r' Sigma^-1 r / (k - p)``, the Knapp-Hartung factor; with one cell and no study effect this is
metafor's univariate ``test = "knha"``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, stats

from bayesmeta.exceptions import ConvergenceWarning, EstimationError, SpecError
from bayesmeta.fits import Fit, Param, _summary_frame
from bayesmeta.ghm import BetaPrior, GHMDesign, build_design
from bayesmeta.blas import single_threaded

__all__ = ["STRUCTS", "TESTS", "GHMClassicalResult", "GHMClassicalFit", "fit_ghm_reml"]

STRUCTS = ("CS", "AR", "CAR")
TESTS = ("z", "t", "knha")
_LOG2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class GHMClassicalResult:
    """REML/ML fit of the fixed-cell GHM. ``beta``/``vcov`` over ``cells`` ((subgroup, time)
    labels); ``components`` {name: estimate}; ``rows`` the estimands at ``level``."""

    cells: tuple
    beta: np.ndarray
    vcov: np.ndarray
    components: dict
    components_se: dict
    loglik: float
    method: str
    struct: str
    test: str
    df: int
    knha_scale: float
    converged: bool
    iterations: int
    k: int
    design: GHMDesign = field(repr=False)

    def estimands(self, level: float = 0.95) -> list[tuple[Param, dict]]:
        """(Param, summary dict) for cell means, windows, contrasts and theta_new."""
        d = self.design
        cov = self.vcov * (self.knha_scale if self.test == "knha" else 1.0)
        if self.test == "z":
            crit, dfv, dist = stats.norm.ppf(0.5 + level / 2), math.nan, stats.norm
        else:
            if self.df < 1:
                raise EstimationError(f"test={self.test!r} needs k - p >= 1 residual df; "
                                      f"k = {self.k}, p = {len(self.cells)}")
            dist = stats.t(self.df)
            crit, dfv = dist.ppf(0.5 + level / 2), float(self.df)
        idx = {c: i for i, c in enumerate(self.cells)}
        one = d.n_s == 1
        out = []

        def add(param, w, extra_var=0.0, interval=None, stat=True):
            est = float(w @ self.beta)
            se = math.sqrt(max(float(w @ cov @ w) + extra_var, 0.0))
            row = dict(estimate=est, se=se, ci_low=est - crit * se, ci_high=est + crit * se,
                       interval=interval or ("wald-z" if self.test == "z" else "t"), df=dfv)
            if stat and se > 0:
                z = est / se
                row.update(statistic=z, p_value=float(2 * dist.sf(abs(z))))
            out.append((param, row))

        def cellvec(s, t):
            w = np.zeros(len(self.cells))
            w[idx[(s, t)]] = 1.0
            return w

        def winvec(s, win):
            if not all((s, lab) in idx for lab, wt in win.weights if wt > 0):
                return None
            w = np.zeros(len(self.cells))
            for lab, wt in win.weights:
                if wt > 0:
                    w[idx[(s, lab)]] += wt
            return w

        new_var = self.components.get("sigma2_study", 0.0) + self.components.get("tau2", 0.0)
        for s in d.subgroups:
            sub = {} if one else {"subgroup": s}
            for t in d.times:
                if (s, t) in idx:
                    tc = {"time": t} if d.use_time else {}
                    add(Param("mu", {**sub, **tc}), cellvec(s, t))
            for win in d.windows:
                w = winvec(s, win)
                if w is not None:
                    add(Param("mu", {**sub, "time": win.name}), w)
            if d.use_tau:
                for t in d.times:
                    if (s, t) in idx:
                        tc = {"time": t} if d.use_time else {}
                        add(Param("theta_new", {**sub, **tc}), cellvec(s, t), new_var,
                            stat=False)
        for a, b in d.contrasts:
            sa, sb = d.subgroups[a], d.subgroups[b]
            lab = f"{sa} - {sb}"
            for t in d.times:
                if (sa, t) in idx and (sb, t) in idx:
                    tc = {"time": t} if d.use_time else {}
                    add(Param("contrast", subgroup=lab, **tc), cellvec(sa, t) - cellvec(sb, t))
            for win in d.windows:
                wa, wb = winvec(sa, win), winvec(sb, win)
                if wa is not None and wb is not None:
                    add(Param("contrast", subgroup=lab, time=win.name), wa - wb)
        for name, v in self.components.items():
            se = self.components_se.get(name, math.nan)
            out.append((Param(name), dict(estimate=v, se=se, interval="")))
        return out


# --------------------------------------------------------------------------------------------
# likelihood
# --------------------------------------------------------------------------------------------
class _Model:
    def __init__(self, d: GHMDesign, struct: str, reml: bool):
        self.d, self.struct, self.reml = d, struct, reml
        self.cells = tuple(dict.fromkeys((d.subgroups[s], d.times[t])
                                         for s, t in sorted(zip(d.s_idx, d.t_idx))))
        cid = {c: i for i, c in enumerate(self.cells)}
        self.X = np.zeros((d.n, len(self.cells)))
        for i, (s, t) in enumerate(zip(d.s_idx, d.t_idx)):
            self.X[i, cid[(d.subgroups[s], d.times[t])]] = 1.0
        self.V = d.V({"r": np.array([float(d.fixed.get("r", 0.0))])})[0]
        self.y = d.y
        self.names = []
        self.D0 = []
        if d.use_study:
            Zu = np.zeros((d.n, len(d.studies)))
            has = d.j_idx >= 0
            Zu[np.flatnonzero(has), d.j_idx[has]] = 1.0
            self.names.append("sigma2_study")
            self.D0.append(Zu @ Zu.T)
        self.use_rho = False
        if d.use_tau:
            self.names.append("tau2")
            h = d.h > 0
            st = np.where(h, d.rows["study"].to_numpy(), "")
            sg = d.s_idx
            same = (st[:, None] == st[None, :]) & h[:, None] & h[None, :] & \
                (sg[:, None] == sg[None, :])
            if struct == "CAR":
                tv = d.row_time_values()
                dist = np.abs(tv[:, None] - tv[None, :])
            else:
                dist = np.abs(d.t_idx[:, None] - d.t_idx[None, :]).astype(float)
            off = same & (dist > 0)
            self.same, self.dist = same, dist
            self.use_rho = struct != "CS" and bool(off.any())
            if self.use_rho:
                self.names.append("rho")
        self.k, self.p = d.n, len(self.cells)
        self.logdet_xtx = float(np.linalg.slogdet(self.X.T @ self.X)[1])

    def E(self, rho):
        d = self.d
        if not self.use_rho:
            return np.diag(d.h.astype(float))
        E = np.where(self.same, np.power(rho, self.dist), 0.0)
        return E

    def dE(self, rho):
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(self.same & (self.dist > 0),
                         self.dist * np.power(rho, self.dist - 1.0), 0.0)
        return g

    def parts(self, psi):
        vals = dict(zip(self.names, psi))
        S = self.V.copy()
        Ds = []
        if "sigma2_study" in vals:
            S += vals["sigma2_study"] * self.D0[0]
            Ds.append(self.D0[0])
        if "tau2" in vals:
            rho = vals.get("rho", 0.0)
            E = self.E(rho)
            S += vals["tau2"] * E
            Ds.append(E)
            if self.use_rho:
                Ds.append(vals["tau2"] * self.dE(rho))
        Si = np.linalg.inv(S)
        Si = 0.5 * (Si + Si.T)
        A = self.X.T @ Si @ self.X
        Ai = np.linalg.inv(A)
        beta = Ai @ (self.X.T @ Si @ self.y)
        r = self.y - self.X @ beta
        Sir = Si @ r
        P = Si - Si @ self.X @ Ai @ self.X.T @ Si
        return dict(S=S, Si=Si, A=A, Ai=Ai, beta=beta, r=r, Sir=Sir, P=P, Ds=Ds)

    def loglik(self, psi, grad=False):
        try:
            q = self.parts(psi)
        except np.linalg.LinAlgError:
            return (-np.inf, np.zeros(len(psi))) if grad else -np.inf
        sgn, ldS = np.linalg.slogdet(q["S"])
        if sgn <= 0:
            return (-np.inf, np.zeros(len(psi))) if grad else -np.inf
        quad = float(q["r"] @ q["Sir"])
        if self.reml:
            ll = (-0.5 * (self.k - self.p) * _LOG2PI + 0.5 * self.logdet_xtx - 0.5 * ldS
                  - 0.5 * np.linalg.slogdet(q["A"])[1] - 0.5 * quad)
        else:
            ll = -0.5 * self.k * _LOG2PI - 0.5 * ldS - 0.5 * quad
        if not grad:
            return ll
        M = q["P"] if self.reml else q["Si"]
        g = np.array([-0.5 * np.sum(M * D.T) + 0.5 * float(q["Sir"] @ D @ q["Sir"])
                      for D in q["Ds"]])
        return ll, g

    def fisher(self, psi):
        q = self.parts(psi)
        M = q["P"] if self.reml else q["Si"]
        MD = [M @ D for D in q["Ds"]]
        return np.array([[0.5 * np.sum(a * b.T) for b in MD] for a in MD])


@single_threaded
def fit_ghm_reml(data=None, *, design: GHMDesign | None = None, struct: str = "CS",
                 method: str = "REML", test: str = "z", correlation: str = "exchangeable",
                 r=None, windows=None, contrasts=None, measure: str = "MD",
                 outcome: str = "", control: dict | None = None) -> "GHMClassicalFit":
    """REML/ML fit of the classical twin (module docstring); returns a
    :class:`GHMClassicalFit` (the :class:`bayesmeta.fits.Fit` interface; the interval level is
    chosen when read). ``r`` must be known (a number, default as in the Bayesian model)."""
    if struct not in STRUCTS:
        raise SpecError(f"Invalid struct {struct!r}: must be one of {list(STRUCTS)}.",
                        key="struct")
    method = str(method).upper()
    if method not in ("REML", "ML"):
        raise SpecError(f"Invalid method {method!r}: must be 'REML' or 'ML'.", key="method")
    if test not in TESTS:
        raise SpecError(f"Invalid test {test!r}: must be one of {list(TESTS)}.", key="test")
    if isinstance(r, BetaPrior):
        raise SpecError("the classical twin needs a known r (a number)", key="r",
                        fix="give r as a number, or refit over a grid of values")
    if design is None:
        design = build_design(data, correlation=correlation, r=r, windows=windows,
                              contrasts=contrasts, measure=measure,
                              time_structure="car" if struct == "CAR" else "exchangeable")
    elif "r" in design.hyper_names:
        raise SpecError("the classical twin needs a known r (a number)", key="r")
    ctrl = {"starts": 4, "gtol": 1e-12, "maxiter": 2000, **(control or {})}
    mod = _Model(design, struct, method == "REML")
    psi, conv, iters = _optimise(mod, ctrl)
    q = mod.parts(psi)
    comps = dict(zip(mod.names, (float(v) for v in psi)))
    se = {}
    if mod.names:
        try:
            cov_psi = np.linalg.inv(mod.fisher(psi))
            se = {n: math.sqrt(max(cov_psi[i, i], 0.0)) for i, n in enumerate(mod.names)}
        except np.linalg.LinAlgError:
            se = {}
    dfres = mod.k - mod.p
    knha = float(q["r"] @ q["Sir"]) / dfres if dfres > 0 else math.nan
    res = GHMClassicalResult(cells=mod.cells, beta=q["beta"], vcov=q["Ai"], components=comps,
                             components_se=se, loglik=float(mod.loglik(psi)), method=method,
                             struct=struct, test=test, df=dfres, knha_scale=knha,
                             converged=conv, iterations=iters, k=mod.k, design=design)
    notes = [f"cell means fixed (one per observed subgroup x time cell); random: "
             + (", ".join(mod.names) or "none") + f" (struct {struct})"]
    notes += [n for n in design.notes if n.startswith(("within-study", "sampling", "car:"))
              or "no study or source label" in n]
    meas = design.measure
    return GHMClassicalFit(model="ghm", source="classical", method=f"{method}-GHM",
                           measure=meas, scale={"OR": "logOR", "RR": "logRR"}.get(meas, meas),
                           coords={"outcome": outcome} if outcome else {}, notes=tuple(notes),
                           provenance={"struct": struct, "method": method, "test": test,
                                       "iterations": iters},
                           result=res)


def _optimise(mod: _Model, ctrl):
    names = mod.names
    if not names:
        return np.zeros(0), True, 0
    d = mod.d
    scale = max(float(np.var(d.y)), float(np.mean(d.se ** 2)), 1e-8)
    bounds = []
    for n in names:
        if n == "rho":
            bounds.append((1e-6 if mod.struct == "CAR" else -0.999999, 0.999999))
        else:
            bounds.append((0.0, None))
    starts = []
    for a in (0.5, 0.1, 1.0, 0.01)[:ctrl["starts"]]:
        starts.append([a * scale if n != "rho" else 0.5 for n in names])
    best = None
    for s0 in starts:
        def f(x):
            ll, g = mod.loglik(x, grad=True)
            if not np.isfinite(ll):
                return 1e300, np.zeros_like(x)
            return -ll, -g
        r = optimize.minimize(f, np.array(s0, float), jac=True, method="L-BFGS-B",
                              bounds=bounds, options=dict(ftol=1e-16, gtol=ctrl["gtol"],
                                                          maxiter=ctrl["maxiter"]))
        if best is None or r.fun < best.fun:
            best = r
    psi = np.array(best.x, float)
    iters = int(best.nit)
    conv = bool(best.success)
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] if b[1] is not None else np.inf for b in bounds])
    # Fisher scoring on the components not held at a bound (KKT: zero gradient where free)
    for _ in range(100):
        ll, g = mod.loglik(psi, grad=True)
        free = np.flatnonzero(~(((psi <= lo + 1e-14) & (g < 0)) | ((psi >= hi) & (g > 0))))
        if free.size == 0:
            conv = True
            break
        F = mod.fisher(psi)[np.ix_(free, free)]
        try:
            step = np.linalg.solve(F, g[free])
        except np.linalg.LinAlgError:
            break
        new = psi.copy()
        t = 1.0
        while True:
            new[free] = np.clip(psi[free] + t * step, lo[free], hi[free])
            if mod.loglik(new) >= ll - 1e-12 or t < 1e-6:
                break
            t /= 2
        ch = float(np.max(np.abs(new - psi) / np.maximum(np.abs(psi), 1e-8 * scale)))
        psi = new
        iters += 1
        if ch < 1e-12:
            conv = True
            break
    if not conv:
        warnings.warn(f"GHM {('REML' if mod.reml else 'ML')} did not converge; results are the "
                      "last iterate", ConvergenceWarning, stacklevel=3)
    return psi, conv, iters


# --------------------------------------------------------------------------------------------
# the Fit adapter
# --------------------------------------------------------------------------------------------
@dataclass
class GHMClassicalFit(Fit):
    """:class:`GHMClassicalResult` behind the :class:`~bayesmeta.fits.Fit` interface."""

    result: GHMClassicalResult = None

    @property
    def design(self) -> GHMDesign:
        return self.result.design

    @property
    def clean(self) -> bool:
        return bool(self.result.converged)

    @property
    def flag(self) -> str:
        return "" if self.clean else "NOT CONVERGED"

    def params(self) -> list[Param]:
        return [p for p, _ in self._rows(0.95)]

    def __post_init__(self):
        self._cache = {}

    def _rows(self, level):
        key = round(float(level), 12)
        if key not in self._cache:
            self._cache[key] = self.result.estimands(key)
        return self._cache[key]

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        return _summary_frame(self._rows(ci_prob))
