"""Gaussian hierarchical model (bayesmeta.ghm*): structure, Gaussian algebra, exact engine.

Independent references, per test: joint-Gaussian conditioning written out with scipy (the
kernel), the exact NNHM engine (bayesmeta.exact, one cell), the exact published-survival engine
(bayesmeta.survival, the survival-style time model), a plain trapezoid rule in the unconstrained
coordinates (2-D quadrature), closed forms (contrast priors, Pareto k-hat), Monte Carlo (draws).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayesmeta import exact, ghm, ghm_exact, ghm_kernel, ghm_quad, survival
from bayesmeta import priors as P
from bayesmeta.exceptions import DataError, SpecError
from bayesmeta.fits import Param
from tests.tolerances import QUADRATURE

Q_ABS = dict(abs=QUADRATURE["atol"])

Z975 = 1.959963984540054


def _design_rows(seed=1, pooled=True):
    rng = np.random.default_rng(seed)
    rows = []
    for g in ("A", "B"):
        for j in range(3):
            for t in (2, 4, 12):
                if rng.uniform() < 0.8:
                    rows.append(dict(study=f"{g}{j}", subgroup=g, time=t, yi=rng.normal(),
                                     sei=rng.uniform(0.3, 0.8)))
    if pooled:
        rows.append(dict(study="", source="P", subgroup="A", time=24, yi=0.3, sei=0.2,
                         row_kind="pooled"))
        rows.append(dict(study="", source="P", subgroup="A", time=12, yi=0.1, sei=0.25,
                         row_kind="pooled"))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def bcg_rows(bcg):
    return pd.DataFrame(dict(yi=bcg["yi"], vi=bcg["vi"], time=1,
                             study=[f"s{i}" for i in range(len(bcg))]))


@pytest.fixture(scope="module")
def msc2023_subgroups(msc2023_meld_rows):
    d = msc2023_meld_rows
    return d[d["subgroup"] != "all"].assign(source="2023", row_kind="pooled").reset_index(
        drop=True)


# --------------------------------------------------------------------------------------------
# Gaussian algebra
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("subgroup", ["fixed", "random"])
@pytest.mark.parametrize("time_structure", ["exchangeable", "ar1", "car"])
@pytest.mark.parametrize("correlation", ["exchangeable", "decay", "ratio"])
def test_kernel_equals_joint_gaussian_conditioning(subgroup, time_structure, correlation):
    """log p(y | theta) and every estimand's conditional mean/covariance equal the textbook
    formulas for the joint Gaussian of (beta, gamma, y) (scipy multivariate normal, explicit
    inverse): independent of the kernel's Henderson-form algebra."""
    df = _design_rows()
    D = ghm.build_design(df, time_structure=time_structure, subgroup=subgroup,
                         correlation=correlation, extrapolate=True)
    k = ghm_kernel.Kernel(D)
    x = np.array([[0.6 if h.kind == "corr" else 0.4 + 0.15 * i
                   for i, h in enumerate(D.hypers)]])
    th = D.theta(x)
    M, C, ll = k.full(th)
    X, Z = D.X(), D.Z()
    b0, p0 = D.prior_mean()
    G, R = D.G(th)[0], D.R(th)[0]
    p, g = D.p, G.shape[0]
    Pz = np.zeros((p + g, p + g))
    Pz[:p, :p] = np.diag(1 / p0)
    Pz[p:, p:] = G
    W = np.hstack([X, Z])
    z0 = np.concatenate([b0, np.zeros(g)])
    Sy = W @ Pz @ W.T + R
    assert ll[0] == pytest.approx(stats.multivariate_normal(W @ z0, Sy).logpdf(D.y),
                                  abs=1e-10)
    Kg = Pz @ W.T @ np.linalg.inv(Sy)
    zm, zc = z0 + Kg @ (D.y - W @ z0), Pz - Kg @ W @ Pz
    L = np.array([e.L for e in D.estimands])
    extra = np.array([sum(c if n == "const" else c * th[n][0] ** 2 for n, c in e.extra)
                      for e in D.estimands])
    np.testing.assert_allclose(M[0], L @ zm, atol=1e-11)
    np.testing.assert_allclose(C[0], L @ zc @ L.T + np.diag(extra), atol=1e-11)


@pytest.mark.parametrize("study_time", ["ar1", "car"])
def test_kernel_with_study_time_structure(study_time):
    """Correlated within-cell deviations (study x time AR/CAR): the kernel still equals joint
    Gaussian conditioning with R = tau² (diag(h) + rho_w^lag on same-study pairs) + V built
    here by hand."""
    df = _design_rows()
    D = ghm.build_design(df, time_structure="ar1", study_time=study_time, extrapolate=True)
    assert "rho_within" in D.hyper_names
    k = ghm_kernel.Kernel(D)
    x = np.array([[0.6 if h.kind == "corr" else 0.5 for h in D.hypers]])
    th = D.theta(x)
    M, C, ll = k.full(th)
    st, sg, tv = df["study"].to_numpy(), df["subgroup"].to_numpy(), df["time"].to_numpy(float)
    pos = {t: i for i, t in enumerate(sorted(set(tv)))}
    h = (df.get("row_kind", pd.Series(["study"] * len(df))).fillna("study") == "study").to_numpy()
    n = len(df)
    E = np.diag(h.astype(float))
    for i in range(n):
        for j in range(n):
            if i != j and h[i] and h[j] and st[i] == st[j] and sg[i] == sg[j]:
                lag = abs(tv[i] - tv[j]) if study_time == "car" else abs(pos[tv[i]] - pos[tv[j]])
                E[i, j] = th["rho_within"][0] ** lag
    R = th["tau"][0] ** 2 * E + D.V(th)[0]
    np.testing.assert_allclose(D.R(th)[0], R, atol=1e-14)
    X, Z = D.X(), D.Z()
    b0, p0 = D.prior_mean()
    G, p = D.G(th)[0], D.p
    g = G.shape[0]
    Pz = np.zeros((p + g, p + g))
    Pz[:p, :p] = np.diag(1 / p0)
    Pz[p:, p:] = G
    W = np.hstack([X, Z])
    Sy = W @ Pz @ W.T + R
    z0 = np.concatenate([b0, np.zeros(g)])
    assert ll[0] == pytest.approx(stats.multivariate_normal(W @ z0, Sy).logpdf(D.y), abs=1e-10)
    Kg = Pz @ W.T @ np.linalg.inv(Sy)
    L = np.array([e.L for e in D.estimands])
    np.testing.assert_allclose(M[0], L @ (z0 + Kg @ (D.y - W @ z0)), atol=1e-11)


def test_covariance_forms_closed_form():
    """Sampling correlation forms and time correlations by hand: exchangeable r, decay
    r^|dt|, ratio sqrt(min/max) (Trikalinos & Olkin 2012, cumulative outcomes); ar1 rho^|i-k|
    on positions, car rho^|t-t'| on values."""
    df = pd.DataFrame(dict(study="s", time=[1, 4, 9], yi=0.0, sei=[1.0, 2.0, 3.0]))
    for form, r, want in (("exchangeable", 0.3, [[1, .3, .3], [.3, 1, .3], [.3, .3, 1]]),
                          ("decay", 0.9, [[1, .9 ** 3, .9 ** 8], [.9 ** 3, 1, .9 ** 5],
                                          [.9 ** 8, .9 ** 5, 1]]),
                          ("ratio", None, [[1, .5, 1 / 3], [.5, 1, 2 / 3], [1 / 3, 2 / 3, 1]])):
        D = ghm.build_design(df, correlation=form, r=r)
        C = D.corr_matrix(np.array([r or 0.0]))[0]
        np.testing.assert_allclose(C, want, atol=1e-15)
    for ts, want in (("ar1", [[1, .5, .25], [.5, 1, .5], [.25, .5, 1]]),
                     ("car", [[1, .5 ** 3, .5 ** 8], [.5 ** 3, 1, .5 ** 5],
                              [.5 ** 8, .5 ** 5, 1]])):
        D = ghm.build_design(df, time_structure=ts)
        G = D.G(D.theta(np.array([[2.0, 0.5, 1.0, 1.0]])[:, :len(D.hypers)]))[0]
        np.testing.assert_allclose(G[:3, :3], 4.0 * np.array(want), atol=1e-14)


# --------------------------------------------------------------------------------------------
# special cases equal the existing exact engines
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mu_prior", [P.Normal(0.0, 4.0), P.Flat()])
def test_one_cell_equals_exact_nnhm(bcg_rows, mu_prior):
    """One cell, one row per study (no study effect, no time): the GHM is the NNHM; reference:
    bayesmeta.exact.fit_exact (its own sinh quadrature), QUADRATURE tolerance."""
    f = ghm_exact.fit_ghm(bcg_rows, measure="OR", mean_prior=mu_prior, tau=P.HalfNormal(0.5))
    e = exact.fit_exact(bcg_rows["yi"], vi=bcg_rows["vi"], tau_prior=P.HalfNormal(0.5),
                        mu_prior=mu_prior)
    s = f.summary(0.9)
    qs = [0.025, 0.1, 0.5, 0.9, 0.975]
    for name in ("mu", "theta_new"):
        assert s.loc[Param(name), "estimate"] == pytest.approx(e.summary(name)["mean"], **Q_ABS)
        assert s.loc[Param(name), "se"] == pytest.approx(e.summary(name)["sd"], **Q_ABS)
        np.testing.assert_allclose(f.quantile(name, qs), e.quantile(name, qs), **QUADRATURE)
        lo, hi = e.interval(name, 0.9)
        assert (s.loc[Param(name), "ci_low"], s.loc[Param(name), "ci_high"]) == \
            pytest.approx((lo, hi), **Q_ABS)
    np.testing.assert_allclose(f.quantile("tau", qs), e.quantile("tau", qs), **QUADRATURE)
    assert s.loc[Param("tau"), "estimate"] == pytest.approx(e.tau["mean"], **Q_ABS)
    assert f.prob("mu", below=-0.5) == pytest.approx(float(e.cdf("mu", -0.5)), **Q_ABS)
    assert f.prob("tau", above=0.5) == pytest.approx(1 - float(e.cdf("tau", 0.5)), **Q_ABS)
    if not mu_prior.is_flat:
        assert f.log_evidence == pytest.approx(e.log_marginal_likelihood, abs=1e-8)


def test_survival_style_equals_survival_exact():
    """One subgroup, published pooled rows of one source at 4 times, exchangeable cell
    deviations, known within-source correlation: the model of
    survival.fit_survival_published_exact (exchangeable structure and correlation, rho 0.5,
    mu ~ N(0, 1.5), sigma_time ~ HN(0.5)); QUADRATURE tolerance."""
    p = pd.read_csv("data/msc_2023_pooled.csv")
    s = p[p["outcome"] == "survival"].sort_values("time_wk")
    times = s["time_wk"].astype(int).tolist()
    ref = survival.fit_survival_published_exact(times, s["estimate"], s["ci_low"],
                                                s["ci_high"], rho=0.5)
    df = pd.DataFrame(dict(yi=np.log(s["estimate"]), time=times, source="pub",
                           sei=(np.log(s["ci_high"]) - np.log(s["ci_low"])) / (2 * Z975),
                           row_kind="pooled"))
    f = ghm_exact.fit_ghm(df, mean_prior=P.Normal(0, 1.5), sigma_time=P.HalfNormal(0.5),
                          r=0.5, measure="OR")
    sm = f.summary(0.95)
    pairs = [(Param("mu"), "mu"), (Param("sigma_time"), "sigma_time")]
    pairs += [(Param("mu", time=str(t)), f"logOR[{t}]") for t in times]
    for par, lab in pairs:
        r = ref.summary.loc[lab]
        got = sm.loc[par]
        for a, b in (("estimate", "mean"), ("se", "sd"), ("median", "median"),
                     ("ci_low", "eti95_lb"), ("ci_high", "eti95_ub")):
            assert got[a] == pytest.approx(r[b], **Q_ABS), (par, a)


# --------------------------------------------------------------------------------------------
# quadrature accuracy
# --------------------------------------------------------------------------------------------
def test_tensor_2d_against_plain_trapezoid(msc2023_subgroups):
    """2 hyperparameters (sigma_time, rho; ar1): posterior moments of the hyperparameters and
    of every estimand against a plain trapezoid rule (step 0.2, no sinh map, no adaptivity) in
    the unconstrained coordinates on mode - 42 .. mode + 12 (log sigma) and mode +- 42 (logit
    rho): the coordinates have exponential tails (log sigma: density ~ sigma as sigma -> 0;
    logit rho under a uniform prior, both ends), which the box must contain to ~e^-40."""
    f = ghm_exact.fit_ghm(msc2023_subgroups, time_structure="ar1")
    assert f.nodes.kind == "tensor" and f.clean
    D = f.design
    kern = ghm_kernel.Kernel(D)
    tgt = ghm_quad._Target(D, kern)
    a = [np.arange(c - 42.0, c + (42.0 if h.kind == "corr" else 12.0), 0.2)
         for c, h in zip(f.nodes.mode, D.hypers)]
    Zg = np.stack(np.meshgrid(*a, indexing="ij"), -1).reshape(-1, 2)
    lp = tgt(Zg)
    w = np.exp(lp - lp.max())
    sel = w > 1e-18 * w.sum()
    X = tgt.x_of_z(Zg[sel])
    w = w[sel] / w[sel].sum()
    M, V, _ = kern.full_diag(D.theta(X))
    s = f.summary()
    for i, e in enumerate(D.estimands):
        mean = w @ M[:, i]
        sd = math.sqrt(w @ (V[:, i] + M[:, i] ** 2) - mean ** 2)
        assert s.loc[e.param, "estimate"] == pytest.approx(mean, abs=1e-6), e.param
        assert s.loc[e.param, "se"] == pytest.approx(sd, abs=1e-6), e.param
    for j, h in enumerate(D.hypers):
        assert s.loc[Param(h.name), "estimate"] == pytest.approx(w @ X[:, j], abs=1e-6)


def test_qmc_is_within_its_error_of_the_tensor_rule(meld2014):
    """Importance sampling (forced with tensor_max_dim=1) against the tensor rule on the same
    2-hyperparameter posterior (2014 MELD arm data, tau fixed): differences within 4 x the
    reported Monte Carlo error (+ 1e-6); k-hat <= 0.7 and flagged accurate."""
    data = meld2014[["study", "time", "yi", "vi", "n1i", "n2i"]]
    f = ghm_exact.fit_ghm(data, tau=0.5, tensor_max_dim=1)
    assert f.nodes.kind == "qmc-is" and f.clean
    assert f.nodes.diagnostics["khat"] <= 0.7
    g = ghm_exact.fit_ghm(data, tau=0.5)
    assert g.nodes.kind == "tensor" and g.clean
    sf, sg = f.summary(), g.summary()
    for p in sf.index:
        assert abs(sf.loc[p, "estimate"] - sg.loc[p, "estimate"]) <= \
            4 * sf.loc[p, "mcse"] + 1e-6, p


@pytest.mark.slow
def test_qmc_is_3d_within_its_error_of_a_fine_tensor_rule(meld2014):
    """3 hyperparameters (2014 MELD): QMC-IS (default) against the tensor rule forced to 3
    dimensions (step 1/8, ~1e-5 relative); within 4 x the reported Monte Carlo error."""
    data = meld2014[["study", "time", "yi", "vi", "n1i", "n2i"]]
    f = ghm_exact.fit_ghm(data)
    assert f.nodes.kind == "qmc-is" and f.clean
    g = ghm_exact.fit_ghm(data, tensor_max_dim=3, tol=1e-5, warn=False)
    sf, sg = f.summary(), g.summary()
    for p in sf.index:
        assert abs(sf.loc[p, "estimate"] - sg.loc[p, "estimate"]) <= \
            4 * sf.loc[p, "mcse"] + 1e-4, p


def test_mixture_quantile_inverts_cdf(msc2023_subgroups):
    """quantile(q) and prob(below=) are inverse functions at any level (mixture CDF)."""
    f = ghm_exact.fit_ghm(msc2023_subgroups)
    for p in f.params():
        for q in (0.005, 0.5, 0.999):
            x = float(np.atleast_1d(f.quantile(p, [q]))[0])
            assert f.prob(p, below=x) == pytest.approx(q, abs=1e-9), (p, q)


def test_joint_draws(msc2023_subgroups):
    """Draws are joint: contrast draws equal the difference of the two cell-mean draws; the
    draws' means agree with the exact mixture means within 4 Monte Carlo SEs."""
    f = ghm_exact.fit_ghm(msc2023_subgroups, extrapolate=True, n_draws=20000)
    c = f.draws(Param("contrast", subgroup="cirrhosis - ACLF", time="24"))
    a = f.draws(Param("mu", subgroup="cirrhosis", time="24"))
    b = f.draws(Param("mu", subgroup="ACLF", time="24"))
    np.testing.assert_allclose(c, a - b, atol=1e-9)
    s = f.summary()
    for p in s.index:
        d = f.draws(p)
        assert abs(d.mean() - s.loc[p, "estimate"]) <= 4 * d.std() / math.sqrt(d.size)


def test_psis_generalised_pareto_fit():
    """The generalised Pareto fit of PSIS equals ArviZ's (arviz_stats _gpdfit, the reference
    implementation of Vehtari et al. 2024) on the same exceedances, and k-hat recovers the
    tail index of Pareto weights (shape alpha -> k = 1/alpha; n = 20000, tolerance 0.1)."""
    from arviz_stats.base.diagnostics import _DiagnosticsBase

    rng = np.random.default_rng(3)
    x = np.sort(rng.pareto(3.0, 500)) + 1e-3
    k, s = ghm_quad._gpdfit(x)
    kr, sr = _DiagnosticsBase._gpdfit(x)
    assert (k, s) == pytest.approx((kr, sr), rel=1e-10)
    for alpha in (2.0, 5.0):
        lw = np.log(rng.pareto(alpha, 20000) + 1.0)
        _, k = ghm_quad._psis(lw)
        assert k == pytest.approx(1 / alpha, abs=0.1)


# --------------------------------------------------------------------------------------------
# options, estimands, notes and bad input
# --------------------------------------------------------------------------------------------
def test_contrast_prior_stated(msc2023_subgroups):
    """Fixed subgroups: the implied contrast prior is N(0, 2 s0²) (closed form: 95% within
    +-1.96 sqrt(2) s0), stated in notes and the prior table; random subgroups: the scale
    mixture's 97.5% point equals a Monte Carlo of sqrt(2) sigma Z, sigma ~ HN(1)."""
    f = ghm_exact.fit_ghm(msc2023_subgroups, mean_prior=P.Normal(0, 3))
    lo, hi = f.design.contrast_prior_interval()
    assert hi == pytest.approx(Z975 * math.sqrt(2) * 3, rel=1e-12) and lo == -hi
    assert any("implied prior of each contrast" in n for n in f.notes)
    tab = f.prior_table()
    assert tab["parameter"].str.startswith("contrast").any()
    D = ghm.build_design(msc2023_subgroups, subgroup="random",
                         sigma_subgroup=P.HalfNormal(1.0))
    q = D.contrast_prior_interval()[1]
    rng = np.random.default_rng(0)
    mc = np.quantile(math.sqrt(2) * np.abs(rng.normal(size=400000)) * rng.normal(size=400000),
                     0.975)
    assert q == pytest.approx(mc, rel=0.01)


def test_contrasts_only_where_both_observed(msc2023_subgroups):
    """The 2023 MELD subgroups: ACLF at 12 and 24 weeks, cirrhosis at 24 only. The contrast is
    reported at 24; at 12 only with extrapolate=True, marked as extrapolation."""
    f = ghm_exact.fit_ghm(msc2023_subgroups)
    names = {p for p in f.params() if p.name == "contrast"}
    assert Param("contrast", subgroup="cirrhosis - ACLF", time="24") in names
    assert Param("contrast", subgroup="cirrhosis - ACLF", time="12") not in names
    g = ghm_exact.fit_ghm(msc2023_subgroups, extrapolate=True)
    s = g.summary()
    assert s.loc[Param("contrast", subgroup="cirrhosis - ACLF", time="12"),
                 "note"].startswith("extrapolation")
    assert s.loc[Param("contrast", subgroup="cirrhosis - ACLF", time="24"), "note"] == ""
    fr = g.to_frame()
    ext = fr[(fr["parameter"] == "contrast") & (fr["time"] == "12")]
    assert (ext["flag"] == "EXTRAPOLATION").all() and len(ext) == 1
    assert (fr[(fr["parameter"] == "contrast") & (fr["time"] == "24")]["flag"] == "").all()


def test_window_weights_and_frame(meld2014):
    """A stated window is the weighted average of the cells (linear, so its posterior mean is
    the weighted mean of the cell means exactly); to_frame fills time and subgroup."""
    data = meld2014[["study", "time", "yi", "vi"]]
    f = ghm_exact.fit_ghm(data, windows={"4-24": {4: 1, 24: 3}}, mean_prior=P.Normal(0, 5),
                          sigma_study=P.HalfNormal(1), sigma_time=P.HalfNormal(1),
                          tau=P.HalfNormal(1))
    s = f.summary()
    want = 0.25 * s.loc[Param("mu", time="4"), "estimate"] + \
        0.75 * s.loc[Param("mu", time="24"), "estimate"]
    assert s.loc[Param("mu", time="4-24"), "estimate"] == pytest.approx(want, abs=1e-12)
    fr = f.to_frame(0.8)
    assert set(fr["time"]) >= {"2", "4", "24", "4-24"} and (fr["level"] == 0.8).all()


@pytest.mark.parametrize("kw, err", [
    (dict(time_structure="spline"), SpecError),
    (dict(subgroup="mixed"), SpecError),
    (dict(correlation="ratio", r=0.5), SpecError),
    (dict(rho=P.HalfNormal(1)), SpecError),
    (dict(time_structure="car", rho=ghm.BetaPrior(1, 1, lower=-1)), SpecError),
    (dict(correlation="decay", r=-0.3), SpecError),
    (dict(r=ghm.BetaPrior(2, 2, lower=-0.5)), SpecError),
    (dict(sigma_subgroup=P.HalfNormal(1)), SpecError),
    (dict(tau=-1.0), SpecError),
    (dict(windows={"w": {99: 1}}), SpecError),
    (dict(contrasts=[("A", "Z")]), SpecError),
])
def test_options_rejected_not_ignored(kw, err):
    with pytest.raises(err):
        ghm.build_design(_design_rows(pooled=False), **kw)


def test_bad_rows_located():
    df = _design_rows(pooled=False)
    bad = df.copy()
    bad.loc[3, "sei"] = -1
    with pytest.raises(DataError, match="row 4"):
        ghm.build_design(bad)
    with pytest.raises(DataError, match="time"):
        ghm.build_design(df.drop(columns="time"))
    dup = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    with pytest.raises(DataError, match="same study"):
        ghm.build_design(dup)
    txt = df.assign(time=df["time"].map({2: "early", 4: "mid", 12: "late"}))
    with pytest.raises(DataError, match="numeric"):
        ghm.build_design(txt, time_structure="car")
    allp = pd.concat([df, pd.DataFrame([dict(subgroup="", time=2, yi=0, sei=1,
                                             row_kind="pooled")])], ignore_index=True)
    with pytest.raises(DataError, match="same patients"):
        ghm.build_design(allp)


def test_defaults_stated_in_notes(meld2014):
    """Every default that moves the answer is in the notes: the mean prior, each scale prior
    (scale-aware for MD) and r."""
    f = ghm_exact.fit_ghm(meld2014[["study", "time", "yi", "vi", "n1i", "n2i"]])
    text = " ".join(f.notes)
    for word in ("mean prior", "sigma_time ~", "sigma_study ~", "tau ~", "r = 0.5"):
        assert word in text


def test_exact_engine_does_not_import_pymc():
    """Exact-only work stays light: importing the exact engine and the classical twin does not
    import PyMC (a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys, bayesmeta.ghm_exact, bayesmeta.ghm_reml, bayesmeta.workflow; "
            "sys.exit(int('pymc' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
