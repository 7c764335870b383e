"""Workflow checks for a Bayesian fit of the Gaussian hierarchical model (exact or MCMC).

Each check returns a tidy DataFrame the report can render (computation only, no formatting):

* :func:`prior_predictive`: where each observed row falls in its prior predictive
  distribution (the model's prior, not the engine's); a row in the far tail (outside
  ``[alpha/2, 1 - alpha/2]``, default alpha 0.01) is a prior-data conflict.
* :func:`posterior_predictive`: the same for the posterior predictive of each row
  (``P(y_rep < y | data)``); rows outside ``[alpha/2, 1 - alpha/2]`` are flagged (posterior
  predictive p-values are conservative: a flag is a strong signal).
* :func:`prior_posterior`: per parameter with a proper prior (variance components, correlations,
  the means): prior and posterior mean and SD, the contraction ``1 - Var_post / Var_prior``
  (Schad, Betancourt & Vasishth 2021), ``decided_by_prior`` when it is below 0.2, and the prior
  CDF at the posterior median with ``prior_data_conflict`` when it is below 0.01 or above 0.99
  (the posterior sits in the far tail of its prior). For a prior with infinite variance
  (half-Cauchy) contraction is computed on the log scale (``scale="log"``).
* :func:`loo_compare`: expected log predictive density by leave-one-out for the model and the
  simpler models it generalises (:func:`simpler_models`: a hyperparameter fixed at 0), with the
  difference to the best and its standard error (``sqrt(n) * sd(pointwise differences)``).
  Exact fits reweight their posterior nodes (:func:`bayesmeta.ghm_exact.node_loo`) and
  refit without a row (:func:`bayesmeta.ghm_exact.exact_loo`) when it leaves less than
  :data:`LOO_ESS_RATIO` of the posterior's effective number of nodes; MCMC fits use PSIS-LOO (ArviZ) on the pointwise
  conditionals stored in the fit.

References: Gabry J, Simpson D, Vehtari A, Betancourt M, Gelman A (2019). Visualization in
Bayesian workflow. JRSS A 182:389-402. Schad DJ, Betancourt M, Vasishth S (2021). Toward a
principled Bayesian workflow in cognitive science. Psychological Methods 26:103-126. Vehtari A,
Gelman A, Gabry J (2017). Practical Bayesian model evaluation using leave-one-out
cross-validation and WAIC. Statistics and Computing 27:1413-1432.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special, stats

from bayesmeta.fits import Param
from bayesmeta.ghm import GHMDesign
from bayesmeta.blas import single_threaded

__all__ = ["prior_predictive", "posterior_predictive", "prior_posterior",
           "prior_posterior_nnhm", "loo_compare",
           "simpler_models", "workflow_checks", "CONTRACTION_MIN", "CONFLICT_TAIL"]

#: contraction below which a parameter is "decided by the prior"
CONTRACTION_MIN = 0.2
#: prior CDF at the posterior median below this (or above 1 - this) = prior-data conflict
CONFLICT_TAIL = 0.01
_Q = (np.arange(20000) + 0.5) / 20000
#: leave-one-out from the posterior nodes needs at least this fraction of the full posterior's
#: effective number of nodes, else the model is refitted without the row
#: (:func:`bayesmeta.ghm_exact.exact_loo`)
LOO_ESS_RATIO = 0.5


def _rows_frame(d: GHMDesign) -> pd.DataFrame:
    r = d.rows
    return pd.DataFrame({"row": np.arange(d.n), "study": r["study"].to_numpy(),
                         "subgroup": r["subgroup"].to_numpy(), "time": r["time_label"].to_numpy(),
                         "y": d.y})


def prior_predictive(design: GHMDesign, *, n: int = 4000, seed: int = 1, level: float = 0.95,
                     alpha: float = 0.01) -> pd.DataFrame:
    """Per row: prior predictive mean, central ``level`` interval, ``p_below`` = P(y_rep < y)
    under the prior, and ``flag`` ("prior-data conflict" in the far tail). Hyperparameters are
    drawn from their priors by inverse CDF at scrambled Sobol points (``seed``; ``n`` rounded up
    to a power of 2); given them the
    prior predictive of a row is normal (means integrated over their normal prior), so each row's
    distribution is an exact normal mixture over the ``n`` draws. With a flat mean prior the
    prior predictive is improper: the frame is empty with ``attrs["note"]``."""
    from bayesmeta.ghm_exact import mixture_quantiles

    d = design
    out = _rows_frame(d)
    if d.mean_prior.is_flat:
        out = out.iloc[:0]
        out.attrs["note"] = "flat mean prior: the prior predictive is improper"
        return out
    k = len(d.hypers)
    if k:
        u = stats.qmc.Sobol(k, scramble=True, seed=seed).random_base2(
            max(int(math.ceil(math.log2(max(n, 2)))), 1))
        X = np.column_stack([d.hypers[i].prior_ppf(np.clip(u[:, i], 1e-12, 1 - 1e-12))
                             for i in range(k)])
    else:
        X = np.zeros((1, 0))
    th = d.theta(X)
    b0, p0 = d.prior_mean()
    Xd = d.X()
    var = np.diagonal(d.Sigma(th), axis1=1, axis2=2)
    var = var + (Xd ** 2) @ (1.0 / p0)
    M = np.broadcast_to(Xd @ b0, var.shape)
    S = np.sqrt(var)
    W = np.full(var.shape[0], 1.0 / var.shape[0])
    a = (1 - level) / 2
    Q = mixture_quantiles(M, S, W, [a, 1 - a])
    p = W @ special.ndtr((d.y[None] - M) / S)
    out["mean"] = Xd @ b0
    out["lower"], out["upper"], out["p_below"] = Q[:, 0], Q[:, 1], p
    out["level"] = level
    out["flag"] = np.where((p < alpha / 2) | (p > 1 - alpha / 2), "prior-data conflict", "")
    return out


def posterior_predictive(fit, *, level: float = 0.95, alpha: float = 0.01) -> pd.DataFrame:
    """Per row: posterior predictive mean, central ``level`` interval and ``p_below`` =
    P(y_rep < y | data), from any GHM fit offering ``Param("y_rep", row=i)`` (exact fits: the
    mixture's exact mean; MCMC fits: the mean of the draws)."""
    d = fit.design
    out = _rows_frame(d)
    a = (1 - level) / 2
    if hasattr(fit, "nodes") and hasattr(fit, "_rows"):
        # exact fit: each row's posterior predictive is a normal mixture over the nodes, so
        # every row's quantiles, P(y_rep < y) and (exact) mean come from one vectorised pass
        from bayesmeta.ghm_exact import _mix_cdf, mixture_quantiles

        M, S = fit._rows
        W = fit.nodes.weight
        Q = mixture_quantiles(M, S, W, [a, 1 - a])
        pp = _mix_cdf(d.y[:, None], M, S, W)[:, 0]
        out["mean"], out["lower"], out["upper"], out["p_below"] = W @ M, Q[:, 0], Q[:, 1], pp
        out["level"] = level
        out["flag"] = np.where((pp < alpha / 2) | (pp > 1 - alpha / 2), "outlying", "")
        return out
    means, lo, hi, p = [], [], [], []
    for i in range(d.n):
        par = Param("y_rep", row=str(i))
        if hasattr(fit, "quantile"):
            ql, qh = fit.quantile(par, [a, 1 - a])
            dr = None
        else:
            dr = fit.draws(par)
            ql, qh = np.quantile(dr, [a, 1 - a])
        lo.append(float(ql))
        hi.append(float(qh))
        p.append(float(fit.prob(par, below=float(d.y[i]))))
        means.append(float(np.mean(fit.draws(par))) if dr is None else float(np.mean(dr)))
    out["mean"], out["lower"], out["upper"], out["p_below"] = means, lo, hi, p
    out["level"] = level
    pp = np.asarray(p)
    out["flag"] = np.where((pp < alpha / 2) | (pp > 1 - alpha / 2), "outlying", "")
    return out


def _prior_moments(h):
    """(mean, sd, scale) of a hyperparameter prior: natural scale when the variance is finite,
    else the log scale."""
    x = np.asarray(h.prior_ppf(_Q), dtype=float)
    heavy = h.kind == "scale" and getattr(h.prior, "tail", (math.inf, 0))[0] <= 3
    if heavy:
        lx = np.log(np.maximum(x, 1e-300))
        return float(lx.mean()), float(lx.std()), "log"
    return float(x.mean()), float(x.std()), "natural"


def prior_posterior(fit) -> pd.DataFrame:
    """Prior vs posterior per parameter with a proper prior: contraction and prior-data
    conflict (module docstring)."""
    d = fit.design
    rows = []
    s = fit.summary(0.95)
    for h in d.hypers:
        pm_, psd, scale = _prior_moments(h)
        par = Param(h.name)
        if scale == "log":
            dr = np.log(np.maximum(fit.draws(par), 1e-300))
            post_m, post_sd = float(dr.mean()), float(dr.std())
        else:
            post_m, post_sd = float(s.loc[par, "estimate"]), float(s.loc[par, "se"])
        med = float(s.loc[par, "median"])
        tail = float(h.prior_cdf(med))
        rows.append(_pp_row(h.name, str(h.prior), scale, pm_, psd, post_m, post_sd, med, tail))
    mp = d.mean_prior
    if not mp.is_flat:
        if d.subgroup_mode == "random" and d.n_s > 1:
            pars = [Param("mu")]
        else:
            pars = [Param("mu", {} if d.n_s == 1 else {"subgroup": g}) for g in d.subgroups]
        for par in pars:
            if par not in s.index:
                continue
            med = float(s.loc[par, "median"])
            rows.append(_pp_row(str(par), str(mp), "natural", float(mp.mean), float(mp.sd),
                                float(s.loc[par, "estimate"]), float(s.loc[par, "se"]), med,
                                float(stats.norm.cdf(med, mp.mean, mp.sd))))
    return pd.DataFrame(rows)


def prior_posterior_nnhm(fit, mu_prior, tau_prior) -> pd.DataFrame:
    """The same table for a normal-normal hierarchical model fit (``mu``, ``tau``) of any
    engine: the fit's posterior summaries beside the priors it was given."""
    from bayesmeta import priors as P
    from bayesmeta.ghm import Hyper

    s = fit.summary(0.95)
    rows = []
    if isinstance(tau_prior, P.TauPrior) and Param("tau") in s.index:
        h = Hyper("tau", tau_prior, "scale")
        pm_, psd, scale = _prior_moments(h)
        med = float(s.loc[Param("tau"), "median"])
        if scale == "log":  # moments of log tau from 400 posterior quantiles (midpoints)
            u = (np.arange(400) + 0.5) / 400
            q = np.asarray(fit.quantile(Param("tau"), u) if hasattr(fit, "quantile")
                           else fit.result.quantile("tau", u), float)
            lq = np.log(np.maximum(q, 1e-300))
            post_m, post_sd = float(lq.mean()), float(lq.std())
        else:
            post_m, post_sd = (float(s.loc[Param("tau"), "estimate"]),
                               float(s.loc[Param("tau"), "se"]))
        rows.append(_pp_row("tau", str(tau_prior), scale, pm_, psd, post_m, post_sd, med,
                            float(h.prior_cdf(med))))
    if isinstance(mu_prior, P.Normal) and Param("mu") in s.index:
        med = float(s.loc[Param("mu"), "median"])
        if not math.isfinite(med):
            med = float(s.loc[Param("mu"), "estimate"])
        rows.append(_pp_row("mu", str(mu_prior), "natural", float(mu_prior.mean),
                            float(mu_prior.sd), float(s.loc[Param("mu"), "estimate"]),
                            float(s.loc[Param("mu"), "se"]), med,
                            float(stats.norm.cdf(med, mu_prior.mean, mu_prior.sd))))
    return pd.DataFrame(rows)


def _pp_row(name, prior, scale, pm_, psd, post_m, post_sd, med, tail):
    contraction = 1.0 - (post_sd / psd) ** 2 if psd > 0 else math.nan
    return dict(parameter=name, prior=prior, scale=scale, prior_mean=pm_, prior_sd=psd,
                post_mean=post_m, post_sd=post_sd, post_median=med,
                contraction=contraction,
                decided_by_prior=bool(contraction < CONTRACTION_MIN),
                prior_cdf_at_median=tail,
                prior_data_conflict=bool(tail < CONFLICT_TAIL or tail > 1 - CONFLICT_TAIL))


def simpler_models(design: GHMDesign) -> dict[str, dict]:
    """Options (keyword overrides of the design's model) of the simpler models the fitted one
    generalises, by name: each fixes one component at 0 (or the time structure at
    exchangeable)."""
    out = {}
    if design.use_time:
        out["no time deviations (sigma_time = 0)"] = {"sigma_time": 0.0, "rho": None,
                                                      "time_structure": "exchangeable"}
        if design.use_rho:
            out["exchangeable times"] = {"time_structure": "exchangeable", "rho": None}
    if design.use_study:
        out["no study effect (sigma_study = 0)"] = {"sigma_study": 0.0}
    if design.use_r:
        out["independent sampling errors (r = 0)"] = {"r": 0.0}
    if design.use_subgroup:
        out["one mean for all subgroups (sigma_subgroup = 0)"] = {"sigma_subgroup": 0.0}
    return out


def _elpd_pointwise(fit) -> np.ndarray:
    if hasattr(fit, "nodes"):
        from bayesmeta.ghm_exact import exact_loo, node_loo
        t = node_loo(fit)
        w = fit.nodes.weight
        full = 1.0 / float(np.sum(w ** 2))
        bad = np.flatnonzero(t["loo_ess"].to_numpy() < LOO_ESS_RATIO * full)
        elpd = t["elpd_loo"].to_numpy().copy()
        if len(bad):  # these rows move the posterior off the nodes: refit without them
            elpd[bad] = exact_loo(fit, rows=bad)["elpd_loo"].to_numpy()
        return elpd
    import arviz as az
    res = az.loo(fit.datatree, pointwise=True, var_name="y")
    return np.asarray(res.elpd_i, dtype=float).ravel()


def loo_compare(fits: dict) -> pd.DataFrame:
    """``fits``: {name: fit} on the same rows. Rows: model, elpd_loo, se, elpd_diff (to the
    best), se_diff, sorted best first."""
    pw = {k: _elpd_pointwise(f) for k, f in fits.items()}
    n = {k: v.size for k, v in pw.items()}
    if len(set(n.values())) > 1:
        raise ValueError(f"fits have different numbers of rows: {n}")
    best = max(pw, key=lambda k: pw[k].sum())
    rows = []
    for k, v in pw.items():
        diff = v - pw[best]
        rows.append(dict(model=k, elpd_loo=float(v.sum()),
                         se=float(math.sqrt(v.size) * v.std(ddof=1)) if v.size > 1 else math.nan,
                         elpd_diff=float(diff.sum()),
                         se_diff=(float(math.sqrt(v.size) * diff.std(ddof=1)) if v.size > 1
                                  else math.nan)))
    return pd.DataFrame(rows).sort_values("elpd_loo", ascending=False).reset_index(drop=True)


@single_threaded
def workflow_checks(fit, data=None, *, model_options: dict | None = None, loo: bool = True,
                    level: float = 0.95) -> dict[str, pd.DataFrame]:
    """All checks for one fit: ``prior_predictive``, ``posterior_predictive``,
    ``prior_posterior`` and (``loo=True``, exact fits need ``data`` and ``model_options`` to
    refit the simpler models, with the fit's engine seed unless ``model_options`` gives one)
    ``loo``."""
    out = {"prior_predictive": prior_predictive(fit.design, level=level),
           "posterior_predictive": posterior_predictive(fit, level=level),
           "prior_posterior": prior_posterior(fit)}
    if loo and data is not None and hasattr(fit, "nodes"):
        from bayesmeta.ghm_exact import fit_ghm
        # the simpler models are integrated with the fit's own engine seed (the run's seed)
        opts = {"seed": fit.seed, **(model_options or {})} if hasattr(fit, "seed") else \
            dict(model_options or {})
        fits = {"fitted model": fit}
        for name, over in simpler_models(fit.design).items():
            o = {**opts, **over}
            o = {k: v for k, v in o.items() if v is not None}
            fits[name] = fit_ghm(data, **o)
        out["loo"] = loo_compare(fits)
    return out
