"""MCMC twin of the Gaussian hierarchical model (PyMC + nutpie): a check of the exact engine.

The same model as :mod:`bayesmeta.ghm` written with its latent variables explicit (nothing
integrated analytically): subgroup means, non-centred cell deviations ``d_s = sigma_time
chol(K(rho)) z_s``, study effects ``u = sigma_study z``, and ``y ~ MvNormal(mean, V(r) +
tau² diag(h))`` (independent normals when ``V`` is diagonal). Estimands are computed from
the named latent variables (cell means ``m_s + d_{s,t}``, their differences and window
averages), not from the exact engine's linear-combination matrices, so the comparison checks
the estimand definitions and the closed-form integration together.

Posterior predictive replicates and pointwise leave-one-out log densities are computed from the
draws afterwards: with correlated sampling errors the likelihood does not factorise over rows,
and ``log p(y_i | y_-i, latent)`` is the Gaussian conditional
``-1/2 log(2 pi) + 1/2 log c_ii - 1/2 g_i² / c_ii`` with ``g = R^-1 (y - mean)``,
``c_ii = (R^-1)_ii`` (Bürkner, Gabry & Vehtari 2021, Computational Statistics 36:1243-1261),
which PSIS-LOO (ArviZ) then uses.
"""

from __future__ import annotations

import logging
import math
import time as _time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesmeta.exceptions import EstimationError
from bayesmeta.fits import Fit, Param, _summary_frame, as_param
from bayesmeta.ghm import BetaPrior, GHMDesign, build_design

__all__ = ["GHMDrawsFit", "fit_ghm_mcmc", "build_model"]


def _prior_rv(prior, name):
    import pymc as pm
    if isinstance(prior, BetaPrior):
        raw = pm.Beta(f"{name}_unit", alpha=prior.a, beta=prior.b)
        return pm.Deterministic(name, prior.lower + (prior.upper - prior.lower) * raw)
    return prior.to_pymc(name)


def build_model(d: GHMDesign):
    """The PyMC model of a design (latent-variable form)."""
    import pymc as pm
    import pytensor.tensor as pt

    S, T = d.n_s, d.n_t
    hyp = {h.name: h for h in d.hypers}

    def hyper(name):
        if name in hyp:
            return _prior_rv(hyp[name].prior, name)
        return pt.as_tensor_variable(float(d.fixed.get(name, 0.0)))

    coords = {"subgroup": list(d.subgroups), "time": list(d.times), "row": list(range(d.n))}
    if d.studies:
        coords["study"] = list(d.studies)
    with pm.Model(coords=coords) as model:
        mp = d.mean_prior
        if d.subgroup_mode == "random" and S > 1:
            mu = mp.to_pymc("mu")
            sig_s = hyper("sigma_subgroup")
            z_a = pm.Normal("z_subgroup", 0.0, 1.0, dims="subgroup")
            m = pm.Deterministic("m", mu + sig_s * z_a, dims="subgroup")
        elif S > 1:
            m = mp.to_pymc("m", dims="subgroup")
        else:
            mu = mp.to_pymc("mu")
            m = pm.Deterministic("m", pt.stack([mu]), dims="subgroup")
        if d.use_time:
            sig_t = hyper("sigma_time")
            z_d = pm.Normal("z_cell", 0.0, 1.0, dims=("subgroup", "time"))
            if d.use_rho:
                rho = hyper("rho")
                K = pt.pow(rho, pt.as_tensor_variable(d.time_distance()))
                Lk = pt.linalg.cholesky(K + 1e-12 * pt.eye(T))
                dev = sig_t * (z_d @ Lk.T)
            else:
                dev = sig_t * z_d
            cell = pm.Deterministic("mu_cell", m[:, None] + dev, dims=("subgroup", "time"))
        else:
            cell = pm.Deterministic("mu_cell", m[:, None] + pt.zeros((S, T)),
                                    dims=("subgroup", "time"))
        mean = cell[d.s_idx, d.t_idx]
        if d.use_study:
            sig_u = hyper("sigma_study")
            z_u = pm.Normal("z_study", 0.0, 1.0, dims="study")
            u = pt.concatenate([sig_u * z_u, pt.zeros(1)])
            mean = mean + u[np.where(d.j_idx >= 0, d.j_idx, len(d.studies))]
        pm.Deterministic("row_mean", mean, dims="row")
        var_h = 0.0
        if d.use_tau:
            tau = hyper("tau")
            var_h = tau ** 2 * d.h
        corr_pairs = bool(d._pairs().any()) or d.use_rho_within
        if not corr_pairs:
            pm.Normal("y", mu=mean, sigma=pt.sqrt(d.se ** 2 + var_h), observed=d.y, dims="row")
        else:
            r = hyper("r") if (d.correlation != "ratio" and d._pairs().any()) else None
            same = d._pairs().astype(float)
            if r is None and d.correlation != "ratio":
                C = pt.zeros((d.n, d.n))
            elif d.correlation == "exchangeable":
                C = r * same
            elif d.correlation == "decay":
                tv = d.row_time_values()
                C = same * pt.pow(r, pt.as_tensor_variable(np.abs(tv[:, None] - tv[None, :])))
            else:
                C = pt.as_tensor_variable(d.corr_matrix(np.zeros(1))[0] - np.eye(d.n))
            R = (C + pt.eye(d.n)) * np.outer(d.se, d.se) + pt.diag(var_h + 0.0 * d.se)
            if d.use_rho_within:
                rw = hyper("rho_within")
                W = pt.switch(pt.as_tensor_variable(d._same_study_time()),
                              pt.pow(rw, pt.as_tensor_variable(d._within_distance())), 0.0)
                R = R + tau ** 2 * W
            pm.MvNormal("y", mu=mean, chol=pt.linalg.cholesky(R), observed=d.y, dims="row")
    return model


@dataclass
class GHMDrawsFit(Fit):
    """MCMC draws of the GHM estimands behind the :class:`~bayesmeta.fits.Fit` interface
    (equal-tailed intervals from the draws at the read level; MCSE, bulk ESS and R-hat from
    ArviZ per parameter). ``datatree`` keeps the sampler output with ``log_likelihood``
    (pointwise leave-one-out conditionals) and ``posterior_predictive`` (``y_rep``)."""

    design: GHMDesign = None
    draws_by: dict = field(default_factory=dict)
    diag: pd.DataFrame = None
    datatree: object = None
    divergences: int = 0
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        d = self.diag
        return bool(self.divergences == 0 and (d["r_hat"] < 1.01).all()
                    and (d["ess_bulk"] > 400).all())

    @property
    def flag(self) -> str:
        return "" if self.clean else "NOT CLEAN"

    def params(self) -> list[Param]:
        return [p for p in self.draws_by if p.name != "y_rep"]

    def draws(self, param, n=None):
        d = self.draws_by[as_param(param)]
        return d if n is None else d[:n]

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        a = (1.0 - ci_prob) / 2
        rows = []
        for p in self.params():
            x = self.draws_by[p]
            lo, med, hi = np.quantile(x, [a, 0.5, 1 - a])
            dg = self.diag.loc[p] if p in self.diag.index else {}
            rows.append((p, dict(estimate=float(x.mean()), se=float(x.std(ddof=1)),
                                 median=float(med), ci_low=float(lo), ci_high=float(hi),
                                 interval="eti", mcse=dg.get("mcse_mean", math.nan),
                                 ess_bulk=dg.get("ess_bulk", math.nan),
                                 r_hat=dg.get("r_hat", math.nan))))
        return _summary_frame(rows)

    def to_frame(self, ci_prob: float = 0.95, *, analysis: str = "",
                 outcome: str | None = None) -> pd.DataFrame:
        """The shared results table, extrapolated estimands flagged (as the exact fit)."""
        from bayesmeta.ghm_exact import mark_extrapolation
        return mark_extrapolation(super().to_frame(ci_prob, analysis=analysis, outcome=outcome),
                                  self)

    def mcse(self, param, what: str = "mean", prob: float | None = None) -> float:
        """Monte Carlo SE of the posterior mean (``what="mean"``) or of a quantile."""
        import arviz as az
        x = self._chains[as_param(param)]
        if what == "mean":
            return float(az.mcse(x, method="mean"))
        return float(az.mcse(x, method="quantile", prob=prob))

    _chains: dict = field(default_factory=dict, repr=False)


def _estimand_draws(d: GHMDesign, post) -> dict:
    """{Param: (chain, draw)} for the estimands of the design, from named latent variables."""
    cell = post["mu_cell"].values              # (c, n, S, T)
    m = post["m"].values                        # (c, n, S)
    out = {}
    one = d.n_s == 1
    if d.subgroup_mode == "random" and d.n_s > 1:
        out[Param("mu")] = post["mu"].values
    rng = np.random.default_rng(7)
    extra = 0.0
    for nm in ("sigma_study", "tau"):
        if nm in post:
            extra = extra + post[nm].values ** 2
        elif nm in d.fixed and ((nm == "tau" and d.use_tau) or (nm == "sigma_study"
                                                                and d.use_study)):
            extra = extra + d.fixed[nm] ** 2

    def win(s, w):
        return sum(wt * cell[:, :, s, d.times.index(lab)] for lab, wt in w.weights)

    for e in d.estimands:
        p = e.param
        sg, tm = p.get("subgroup"), p.get("time")
        if p.name == "mu" and p == Param("mu") and d.subgroup_mode == "random" and d.n_s > 1:
            continue
        if p.name in ("mu", "theta_new"):
            s = 0 if one else d.subgroups.index(sg)
            if p.name == "mu" and tm == "":
                val = m[:, :, s]
            elif tm in d.times or (tm == "" and p.name == "theta_new"):
                t = d.times.index(tm) if tm else 0
                val = cell[:, :, s, t]
            else:
                val = win(s, next(w for w in d.windows if w.name == tm))
            if p.name == "theta_new":
                val = val + np.sqrt(extra) * rng.standard_normal(val.shape)
        elif p.name == "contrast":
            a, b = (d.subgroups.index(x) for x in sg.split(" - "))
            if tm == "":
                val = m[:, :, a] - m[:, :, b]
            elif tm in d.times:
                t = d.times.index(tm)
                val = cell[:, :, a, t] - cell[:, :, b, t]
            else:
                w = next(w for w in d.windows if w.name == tm)
                val = win(a, w) - win(b, w)
        else:
            continue
        out[p] = val
    for h in d.hypers:
        out[Param(h.name)] = post[h.name].values
    return out


def _loo_pointwise(d: GHMDesign, post) -> tuple[np.ndarray, np.ndarray]:
    """(log p(y_i | y_-i, latent) (c, n, rows), y_rep (c, n, rows)) per draw."""
    mean = post["row_mean"].values
    c, n = mean.shape[:2]
    flat = mean.reshape(c * n, d.n)
    th = {}
    for nm in ("tau", "r", "rho_within"):
        if nm in post:
            th[nm] = post[nm].values.reshape(-1)
        elif nm in d.fixed:
            th[nm] = np.full(c * n, d.fixed[nm])
    if "tau" not in th:
        th["tau"] = np.zeros(c * n)
    ll = np.empty_like(flat)
    rep = np.empty_like(flat)
    rng = np.random.default_rng(11)
    for a in range(0, c * n, 1000):
        sl = slice(a, a + 1000)
        R = d.R({k: v[sl] for k, v in th.items()})
        Ri = np.linalg.inv(R)
        g = np.einsum("kij,kj->ki", Ri, d.y[None] - flat[sl])
        cii = np.diagonal(Ri, axis1=1, axis2=2)
        ll[sl] = -0.5 * math.log(2 * math.pi) + 0.5 * np.log(cii) - 0.5 * g ** 2 / cii
        sd = np.sqrt(np.diagonal(R, axis1=1, axis2=2))
        rep[sl] = flat[sl] + sd * rng.standard_normal(sd.shape)
    return ll.reshape(c, n, d.n), rep.reshape(c, n, d.n)


def fit_ghm_mcmc(data=None, *, design: GHMDesign | None = None, draws: int = 2000,
                 tune: int = 1000, chains: int = 4, cores: int = 2, seed: int = 1,
                 target_accept: float = 0.95, sampler: str = "nutpie", **model) -> GHMDrawsFit:
    """MCMC fit of the GHM (same options as :func:`bayesmeta.ghm_exact.fit_ghm`)."""
    import arviz as az
    import pymc as pm
    import xarray as xr

    if design is None:
        model.pop("outcome", None)
        design = build_design(data, **model)
    t0 = _time.perf_counter()
    logging.getLogger("pymc").setLevel(logging.ERROR)
    from pytensor import config
    with build_model(design), config.change_flags(numba__fastmath=False), \
            warnings.catch_warnings():
        # sampler chatter (PyMC/PyTensor/ArviZ notices, numerical RuntimeWarnings inside the
        # sampler); convergence is judged from the draws' own diagnostics, kept with the fit
        for mod in (r"pymc", r"pytensor", r"arviz", r"nutpie"):
            warnings.filterwarnings("ignore", module=mod)
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        try:
            dt = pm.sample(draws=draws, tune=tune, chains=chains, cores=cores,
                           random_seed=int(seed), progressbar=False,
                           target_accept=target_accept, nuts_sampler=sampler,
                           compute_convergence_checks=False)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:
            raise EstimationError(f"GHM MCMC sampling failed: {err}") from err
    post = dt.posterior.to_dataset()
    by = _estimand_draws(design, post)
    ll, rep = _loo_pointwise(design, post)
    coords = {"chain": post.chain.values, "draw": post.draw.values, "row": np.arange(design.n)}
    dims = ("chain", "draw", "row")
    tree = xr.DataTree.from_dict({
        "/posterior": post,
        "/log_likelihood": xr.Dataset({"y": (dims, ll)}, coords=coords),
        "/posterior_predictive": xr.Dataset({"y": (dims, rep)}, coords=coords),
        "/observed_data": xr.Dataset({"y": ("row", design.y)}, coords={"row": coords["row"]}),
        "/sample_stats": dt.sample_stats.to_dataset()})
    for i in range(design.n):
        by[Param("y_rep", row=str(i))] = rep[:, :, i]
    diag = []
    for p, x in by.items():
        if p.name == "y_rep":
            continue
        diag.append(dict(param=p, ess_bulk=float(az.ess(x, method="bulk")),
                         r_hat=float(az.rhat(x)), mcse_mean=float(az.mcse(x, method="mean"))))
    diag = pd.DataFrame(diag).set_index("param")
    div = int(dt.sample_stats["diverging"].sum())
    meas = design.measure
    fit = GHMDrawsFit(model="ghm", source="bayesian", method="mcmc-GHM", measure=meas,
                      scale={"OR": "logOR", "RR": "logRR"}.get(meas, meas),
                      notes=tuple(design.notes),
                      provenance={"sampler": sampler, "draws": draws, "tune": tune,
                                  "chains": chains, "seed": int(seed),
                                  "target_accept": target_accept},
                      design=design, draws_by={p: x.reshape(-1) for p, x in by.items()},
                      diag=diag, datatree=tree, divergences=div)
    fit._chains = by
    fit.seconds = _time.perf_counter() - t0
    return fit
