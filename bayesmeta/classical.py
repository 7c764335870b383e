"""Classical (frequentist) meta-analysis: the twin of every Bayesian result.

Implements, from the published formulas, what metafor's ``rma.uni``, ``rma.mh``,
``rma.peto`` and ``rma.mv`` (two-level ``~ 1 | study/time``) compute, and what RevMan 5 and
RevMan Web print.

* :func:`rma` -- inverse-variance fixed effect (``FE``) and random effects with tau² by
  ``DL, REML, ML, PM, HE, SJ, EB, HS``; Wald z or Knapp-Hartung (HKSJ) t tests (plain or
  "ad hoc" truncated); prediction intervals; Q, I² (tau²-based, metafor; and Q-based, RevMan),
  H²; Q-profile confidence intervals for tau², tau, I², H²; optional moderators (QM test).
* :func:`rma_mh` -- Mantel-Haenszel OR/RR/RD (OR: Cochran-Mantel-Haenszel and Tarone's
  heterogeneity tests); :func:`rma_peto` -- Peto's one-step OR.
* :func:`subgroup_analysis` -- per-level fits, RevMan's test for subgroup differences and the
  meta-regression QM.
* :func:`fit_multilevel` -- two-level REML/ML (``rma.mv(yi, vi, random = ~ 1 | study/time)``).
* Presets ``"revman5"`` and ``"revman_web"`` (see :data:`PRESETS`).

Formulas (k studies, p model coefficients, :math:`W=\\mathrm{diag}(1/(v_i+\\tau^2))`,
:math:`P = W - WX(X'WX)^{-1}X'W`; :math:`P_0` is :math:`P` at :math:`\\tau^2=0`; Q = y'P_0y):

* DL: :math:`\\hat\\tau^2 = (Q - (k-p))/\\mathrm{tr}(P_0)` (DerSimonian & Laird 1986).
* HE: :math:`(y'P_Iy - \\mathrm{tr}(P_I V))/(k-p)` with unweighted :math:`P_I` (Hedges 1983).
* HS: :math:`(Q - k)/\\sum w_i` (Hunter & Schmidt 2004).
* SJ: :math:`\\tau_0^2 = \\sum(y_i-\\bar y)^2/k` (about the plain mean, also with
  moderators), then :math:`\\tau_0^2\\, r'P(\\tau_0^2)r/(k-p)`, :math:`r = y-\\bar y`
  (Sidik & Jonkman 2005; as metafor).
* ML / REML: Fisher scoring, steps :math:`(y'PPy-\\mathrm{tr}W)/\\mathrm{tr}(WW)` and
  :math:`(y'PPy-\\mathrm{tr}P)/\\mathrm{tr}(PP)` (Viechtbauer 2005).
* PM: root of :math:`y'P(\\tau^2)y = k-p` (Paule & Mandel 1982), by Brent's method.
* EB: Morris (1983)/Berkey et al. (1995) iteration
  :math:`\\tau^2 \\leftarrow \\sum w_i((k/(k-p))e_i^2 - v_i)/\\sum w_i`; its fixed point equals PM.
* All tau² truncated at 0. Iterative estimators store ``converged``/``iterations`` and warn
  with :class:`~bayesmeta.exceptions.ConvergenceWarning` when not converged.
* KNHA (Knapp & Hartung 2003): :math:`s^2 = y'Py/(k-p)`, Var = :math:`s^2 (X'WX)^{-1}`,
  t(k-p); the ad hoc variant uses :math:`\\max(1, s^2)` (Knapp & Hartung 2003; Röver et al. 2015).
* I² (metafor): :math:`100\\tau^2/(\\tau^2+\\tilde v)`, :math:`\\tilde v=(k-p)/\\mathrm{tr}(P_0)`;
  H² = :math:`(\\tau^2+\\tilde v)/\\tilde v`; under FE, I² = max(0, (Q-(k-p))/Q), H² = Q/(k-p).
  ``i2_q`` is always RevMan's Q-based max(0, (Q-df)/Q); both agree under DL.
* Q-profile CI (Viechtbauer 2007): :math:`y'P(\\tau^2)y = \\chi^2_{k-p;1-\\alpha/2}` (lower)
  and :math:`\\chi^2_{k-p;\\alpha/2}` (upper), a bound is 0 when Q(0) is already below.
* Prediction interval: :math:`\\hat\\mu \\pm c\\sqrt{\\tau^2 + SE^2}`, ``pi_dist="auto"``
  (metafor): c from N(0,1) under z and t(k-p) under KNHA; ``"t"`` t(k-1); ``"t_k2"`` t(k-2)
  (Higgins, Thompson & Spiegelhalter 2009); ``"z"``.

References
----------
DerSimonian R, Laird N (1986) doi:10.1016/0197-2456(86)90046-2.
Viechtbauer W (2005) doi:10.3102/10769986030003261.
Viechtbauer W (2007) doi:10.1002/sim.2514.
Veroniki AA et al. (2016) doi:10.1002/jrsm.1164.
Knapp G, Hartung J (2003) doi:10.1002/sim.1482.
Higgins JPT, Thompson SG, Spiegelhalter DJ (2009) doi:10.1111/j.1467-985X.2008.00552.x.
Sato T, Greenland S, Robins JM (1989) doi:10.2307/2531745.
Robins J, Breslow N, Greenland S (1986) doi:10.2307/2531176.
Greenland S, Robins JM (1985) doi:10.2307/2530883.
Deeks JJ, Higgins JPT (2010) Statistical algorithms in Review Manager 5.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, stats

from bayesmeta import results as _results
from bayesmeta.effect_sizes import SCALE, continuity_correct
from bayesmeta.io import MIN_VARIANCE
from bayesmeta.exceptions import (ConvergenceWarning, DataError, DataWarning,
                                  EstimationError)

METHODS = ("FE", "DL", "REML", "ML", "PM", "HE", "SJ", "EB", "HS")
ITERATIVE = ("REML", "ML", "PM", "EB")
TESTS = ("z", "knha")
PI_DISTS = ("auto", "z", "t", "t_k2")

#: What each preset fixes (everything else keeps its default).
#: revman5 (Deeks & Higgins 2010; R meta ``settings.meta("RevMan5")``): DL only, Wald z CIs,
#: Q-based I², MH analyses with Q (hence DL tau²) around the MH estimate, 0.5 added to every
#: cell of a table with a zero cell (also for the MH estimate), double-zero tables dropped for
#: OR/RR, SMD with RevMan's J and variance. revman_web (RevMan Web 2025, Cochrane Methods
#: "Random-effects meta-analysis methods for Intervention Reviews"): REML, HKSJ, Q-profile CI,
#: prediction interval (t, k-1 df), tau²-based I².
PRESETS = {
    "revman5": dict(methods=("FE", "DL"), test="z", pi_dist="z", mh_cc=True,
                    i2="q"),
    "revman_web": dict(method="REML", test="knha", pi_dist="t", mh_cc=False, i2="tau2"),
}

_CONTROL = dict(threshold=1e-10, maxiter=1000, tol=1e-12)


# --------------------------------------------------------------------------------------
# result objects
# --------------------------------------------------------------------------------------

def _fmt(x, d=4):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "NA"
    return f"{x:.{d}f}"


def _fmt_p(p):
    if p is None or math.isnan(p):
        return "NA"
    return "<.0001" if p < 1e-4 else f"{p:.4f}"


@dataclass(frozen=True)
class ClassicalResult:
    """One classical meta-analysis (fields are raw numbers; rounding only when printed).

    ``estimate``/``ci_*`` are on the analysis ``scale`` (log for OR/RR). ``df`` is None under
    z. ``i2`` is metafor's tau²-based I² (percent), ``i2_q`` RevMan's Q-based one. ``tau2_ci``,
    ``tau_ci``, ``i2_ci``, ``h2_ci`` are Q-profile intervals (NaN when not applicable).
    ``weights`` are percent, indexed by study label. ``studies`` has columns
    ``study, yi, vi, weight_pct``.
    """

    k: int
    measure: str
    scale: str
    method: str
    test: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    statistic: float
    p: float
    df: float | None
    tau2: float
    tau: float
    i2: float
    i2_q: float
    h2: float
    q: float
    q_df: int
    q_p: float
    pi_low: float
    pi_high: float
    weights: pd.Series
    converged: bool
    iterations: int
    studies: pd.DataFrame
    tau2_ci: tuple[float, float] = (math.nan, math.nan)
    tau_ci: tuple[float, float] = (math.nan, math.nan)
    i2_ci: tuple[float, float] = (math.nan, math.nan)
    h2_ci: tuple[float, float] = (math.nan, math.nan)
    tau2_se: float = math.nan
    level: float = 0.95
    knha_adhoc: bool = False
    s2: float = math.nan
    pi_dist: str = "auto"
    pi_df: float | None = None
    preset: str | None = None
    notes: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    # -- metafor-like print ------------------------------------------------------------
    @property
    def is_random(self) -> bool:
        return self.method not in ("FE", "MH", "PETO")

    @property
    def label(self) -> str:
        """Method label used in the shared table, e.g. ``"IV-FE"``, ``"REML+KNHA"``."""
        base = {"FE": "IV-FE"}.get(self.method, self.method)
        if self.test == "knha":
            base += "+KNHA" + ("-adhoc" if self.knha_adhoc else "")
        return base

    def __str__(self) -> str:
        lines = [""]
        if self.is_random:
            lines.append(f"Random-Effects Model (k = {self.k}; tau^2 estimator: {self.method})")
        else:
            what = {"MH": "Mantel-Haenszel", "PETO": "Peto", "FE": "Inverse-variance"}
            lines.append(f"Fixed-Effects Model (k = {self.k}; {what[self.method]})")
        lines.append("")
        if self.is_random:
            se = f" (SE = {_fmt(self.tau2_se)})" if not math.isnan(self.tau2_se) else ""
            lines.append(f"tau^2 (estimated amount of total heterogeneity): {_fmt(self.tau2)}{se}")
            lines.append(f"tau (square root of estimated tau^2 value):      {_fmt(self.tau)}")
        lines.append(f"I^2 (total heterogeneity / total variability):   {_fmt(self.i2, 2)}%"
                     + ("" if not self.is_random else
                        f"   [Q-based (RevMan) I^2: {_fmt(self.i2_q, 2)}%]"))
        lines.append(f"H^2 (total variability / sampling variability):  {_fmt(self.h2, 2)}")
        if self.is_random and not math.isnan(self.tau2_ci[0]):
            lines.append(f"Q-profile {self.level:.0%} CI: tau^2 [{_fmt(self.tau2_ci[0])}, "
                         f"{_fmt(self.tau2_ci[1])}], I^2 [{_fmt(self.i2_ci[0], 2)}%, "
                         f"{_fmt(self.i2_ci[1], 2)}%]")
        lines += ["", "Test for Heterogeneity:",
                  f"Q(df = {self.q_df}) = {_fmt(self.q)}, p-val {'< .0001' if self.q_p < 1e-4 else '= ' + _fmt(self.q_p)}"
                  if not math.isnan(self.q_p) else f"Q(df = {self.q_df}) = {_fmt(self.q)}, p-val = NA",
                  "", f"Model Results ({self.scale} scale):", ""]
        stat = "zval" if self.test == "z" else "tval"
        hdr = f"{'estimate':>9} {'se':>8} {stat:>8} " + (f"{'df':>4} " if self.df else "") + \
            f"{'pval':>8} {'ci.lb':>8} {'ci.ub':>8}"
        val = f"{_fmt(self.estimate):>9} {_fmt(self.se):>8} {_fmt(self.statistic):>8} " + \
            (f"{self.df:>4.0f} " if self.df else "") + \
            f"{_fmt_p(self.p):>8} {_fmt(self.ci_low):>8} {_fmt(self.ci_high):>8}"
        lines += [hdr, val]
        if self.is_random:
            lines += ["", f"{self.level:.0%} prediction interval: [{_fmt(self.pi_low)}, "
                      f"{_fmt(self.pi_high)}]" +
                      (f" (t, df = {self.pi_df:g})" if self.pi_df else " (normal)")]
        if self.test == "knha":
            lines.append(f"Knapp-Hartung adjustment{' (ad hoc, max(1, s^2))' if self.knha_adhoc else ''}:"
                         f" s^2 = {_fmt(self.s2)}")
        if self.scale in ("logOR", "logRR"):
            lines.append(f"Estimates on the {self.scale} scale; exp() to get the ratio.")

        def pval(p):  # metafor's wording on these two lines
            return "= NA" if math.isnan(p) else "< 0.0001" if p < 1e-4 else "= " + _fmt(p)
        tests = []
        if "cmh" in self.extra:
            tests.append(f"Cochran-Mantel-Haenszel Test:    CMH = {_fmt(self.extra['cmh'])}, "
                         f"df = 1, p-val {pval(self.extra['cmh_p'])}")
        if "tarone" in self.extra:  # metafor prints both after the model results
            ta = self.extra["tarone"]
            tests.append("Tarone's Test for Heterogeneity: " + (
                "not computable for these data" if math.isnan(ta) else
                f"X^2 = {_fmt(ta)}, df = {self.extra['tarone_df']}, "
                f"p-val {pval(self.extra['tarone_p'])}"))
        if tests:
            lines += [""] + tests
        if self.preset:
            lines.append(f"Preset: {self.preset}")
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    __repr__ = __str__

    def to_dict(self) -> dict:
        """The scripting-contract JSON object of ``bayesmeta classical --json``."""
        def f(x):
            return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)
        return {
            "k": int(self.k), "measure": self.measure, "method": self.method, "test": self.test,
            "estimate": f(self.estimate), "se": f(self.se), "ci_low": f(self.ci_low),
            "ci_high": f(self.ci_high), "statistic": f(self.statistic), "p": f(self.p),
            "df": f(self.df), "tau2": f(self.tau2), "tau": f(self.tau), "i2": f(self.i2),
            "h2": f(self.h2), "q": f(self.q), "q_df": int(self.q_df), "q_p": f(self.q_p),
            "pi_low": f(self.pi_low), "pi_high": f(self.pi_high),
            "studies": [{"study": str(r.study), "yi": f(r.yi), "vi": f(r.vi),
                         "weight_pct": f(r.weight_pct)} for r in self.studies.itertuples()],
        }  # exactly the scripting contract's keys: the CMH/Tarone tests are not in it

    def to_frame(self, *, analysis: str = "", outcome: str = "", subgroup: str = "",
                 time: str = "", studies: bool = True) -> pd.DataFrame:
        """Rows of the shared schema: ``mu``, ``tau2``, ``tau``, ``theta_new`` (prediction
        interval) and, with ``studies=True``, ``theta[<study>]`` (observed yi with Wald CI)."""
        common = dict(analysis=analysis, outcome=outcome, source="classical",
                      method=self.label, subgroup=subgroup, time=time, level=self.level,
                      scale=self.scale, flag="" if self.converged else "NOT CONVERGED")
        interval = "wald-z" if self.test == "z" else "t"
        rows = [_results.row(parameter="mu", estimate=self.estimate, se=self.se,
                             ci_low=self.ci_low, ci_high=self.ci_high, interval=interval,
                             statistic=self.statistic, df=self.df, p_value=self.p, **common),
                _results.row(parameter="tau2", estimate=self.tau2, se=self.tau2_se,
                             ci_low=self.tau2_ci[0], ci_high=self.tau2_ci[1],
                             interval="q-profile", **common),
                _results.row(parameter="tau", estimate=self.tau, ci_low=self.tau_ci[0],
                             ci_high=self.tau_ci[1], interval="q-profile", **common),
                _results.row(parameter="theta_new", estimate=self.estimate,
                             se=math.sqrt(self.tau2 + self.se ** 2),
                             ci_low=self.pi_low, ci_high=self.pi_high,
                             interval="wald-z" if self.pi_df is None else "t",
                             df=self.pi_df, **common)]
        if studies:
            z = stats.norm.ppf(0.5 + self.level / 2)
            for r in self.studies.itertuples():
                s = math.sqrt(r.vi) if math.isfinite(r.vi) else math.nan
                rows.append(_results.row(parameter=f"theta[{r.study}]", estimate=r.yi, se=s,
                                         ci_low=r.yi - z * s, ci_high=r.yi + z * s,
                                         interval="wald-z", **common))
        out = _results.frame(rows)
        out.attrs.update(ci_prob=self.level, measure=self.measure, scale=self.scale,
                         statistic_kind=self.test if self.test == "z" else "t")
        return out


# --------------------------------------------------------------------------------------
# core linear algebra
# --------------------------------------------------------------------------------------

class _WLS:
    """Weighted least squares at one tau², without any k x k matrix.

    With :math:`W = \\mathrm{diag}(w)`, :math:`w_i = 1/(v_i+\\tau^2)`,
    :math:`V_b = (X'WX)^{-1}` and residuals :math:`e = y - Xb`, the projection
    :math:`P = W - WXV_bX'W` enters only through

    * :math:`Py = w \\circ e` and :math:`y'Py = \\sum w_i e_i^2` (a sum of squares, >= 0);
    * :math:`\\mathrm{tr}\\,P = \\sum w_i - \\mathrm{tr}(V_b X'W^2X)`;
    * :math:`\\mathrm{tr}\\,PP = \\sum w_i^2 - 2\\,\\mathrm{tr}(V_bX'W^3X) +
      \\mathrm{tr}((V_bX'W^2X)^2)`,

    all O(k p²) (O(k) for the intercept-only model, which uses plain weighted sums).
    """

    __slots__ = ("X", "w", "b", "vb", "e", "_intercept")

    def __init__(self, y, v, X, tau2):
        w = 1.0 / (v + tau2)
        self.X, self.w = X, w
        self._intercept = X.shape[1] == 1 and bool(np.all(X == 1.0))
        if self._intercept:
            sw = float(w.sum())
            mu = float(w @ y) / sw
            self.b = np.array([mu])
            self.vb = np.array([[1.0 / sw]])
            self.e = y - mu
        else:
            XtW = X.T * w
            self.vb = np.linalg.inv(XtW @ X)
            self.b = self.vb @ (XtW @ y)
            self.e = y - X @ self.b

    @property
    def Py(self):
        return self.w * self.e

    @property
    def ypy(self) -> float:
        """y'Py = sum w e² (never negative)."""
        return float(self.w @ (self.e * self.e))

    def _m(self, power):
        """X'W^power X (p x p)."""
        return (self.X.T * self.w ** power) @ self.X

    @property
    def trP(self) -> float:
        w = self.w
        if self._intercept:
            # P_ii = w_i (sum of the other weights) / sum w: no subtraction, so a study
            # 1e12 times more precise than the rest cannot cancel the others away
            return float(w @ _others(w)) / float(w.sum())
        return float(w.sum() - np.trace(self.vb @ self._m(2)))

    @property
    def trPP(self) -> float:
        w = self.w
        w2 = w * w
        if self._intercept:
            # sum_i P_ii² + sum_{i != j} P_ij² with P_ij = -w_i w_j / sum w, as sums of
            # positive terms (the expanded form s2 - 2 s3/sw + (s2/sw)² cancels to 0 or below
            # when one weight dominates)
            sw = float(w.sum())
            return float(w2 @ (_others(w) ** 2 + _others(w2))) / (sw * sw)
        a = self.vb @ self._m(2)
        return float(w2.sum() - 2.0 * np.trace(self.vb @ self._m(3)) + np.sum(a * a.T))


def _others(x: np.ndarray) -> np.ndarray:
    """For each i, the sum of x_j over j != i, as a sum of the terms before and after i (exact
    for positive x, where ``x.sum() - x`` loses every digit of the small terms)."""
    c = np.cumsum(x)
    before = np.concatenate(([0.0], c[:-1]))
    after = np.concatenate((np.cumsum(x[::-1])[::-1][1:], [0.0]))
    return before + after


def _wls(y, v, X, tau2) -> _WLS:
    """Weighted LS at tau2 (see :class:`_WLS`)."""
    return _WLS(y, v, X, tau2)


def _score(y, v, X, tau2, method):
    """Score of the (restricted) log-likelihood in tau² (times 2): y'PPy - tr P (REML) or
    y'PPy - sum w (ML), with P as in :class:`_WLS` (Py = w e)."""
    f = _WLS(y, v, X, tau2)
    Py = f.Py
    return float(Py @ Py) - (f.trP if method == "REML" else float(f.w.sum()))


def _score_root(y, v, X, method, xtol, maxiter):
    """tau² solving the score equation, or 0 when the score is <= 0 at the boundary; None
    if no sign change can be bracketed (the caller then warns)."""
    u0 = _score(y, v, X, 0.0, method)
    if u0 <= 0:
        return 0.0
    hi = max(float(np.mean(v)), float(np.var(y)), 1e-300)
    for _ in range(200):
        if _score(y, v, X, hi, method) < 0:
            break
        hi *= 2.0
    else:
        return None
    root, r = optimize.brentq(lambda t: _score(y, v, X, t, method), 0.0, hi, xtol=xtol,
                              rtol=8.9e-16, maxiter=maxiter, full_output=True, disp=False)
    return float(root) if r.converged else None


def _qgen(y, v, X, tau2):
    """Generalised Q: y'P(tau2)y."""
    return _WLS(y, v, X, tau2).ypy


def _ols_parts(y, v, X):
    """Unweighted fit (HE): y'P_I y and tr(P_I V) with P_I = I - X(X'X)^{-1}X'."""
    if X.shape[1] == 1 and bool(np.all(X == 1.0)):
        e = y - y.mean()
        h = np.full(y.size, 1.0 / y.size)
    else:
        XtXi = np.linalg.inv(X.T @ X)
        e = y - X @ (XtXi @ (X.T @ y))
        h = np.einsum("ij,jk,ik->i", X, XtXi, X)  # diagonal of the hat matrix
    return float(e @ e), float(v.sum() - h @ v)


def _conv_warn(method, it, change, maxiter):
    last = f"last change {change:.3g}, " if math.isfinite(change) else ""
    alt = " or ".join(f"'{m}'" for m in ("DL", "PM") if m != method)
    warnings.warn(
        f"{method} tau^2 estimator did not converge in {it} iterations ({last}maxiter "
        f"{maxiter}); the result is the last iterate. Increase control['maxiter'] or use "
        f"method={alt}.", ConvergenceWarning, stacklevel=4)


def _bracket_decreasing(fun, target, lo=0.0, hi=None, maxexp=200):
    """Find hi with fun(hi) < target, for a decreasing fun."""
    hi = hi or 1.0
    for _ in range(maxexp):
        if fun(hi) < target:
            return hi
        hi *= 2.0
    raise EstimationError("could not bracket the root of the generalised Q statistic")


def _tau2(y, v, X, method, control):
    """Estimate tau²; returns (tau2, converged, iterations, tau2_se)."""
    k, p = X.shape
    maxiter = control["maxiter"]
    # stopping rules are relative to the scale of the data (typical vi), so that the
    # estimators are equivariant under y -> c y, v -> c² v: stop when a step is below
    # threshold x (tau² + mean vi); PM's root tolerance is tol x mean vi
    vscale = float(np.mean(v))
    if method == "FE":
        return 0.0, True, 0, math.nan
    if k - p < 1:
        # one study per coefficient: heterogeneity not estimable
        return 0.0, True, 0, math.nan
    if p == 1 and np.ptp(y) == 0:
        # identical estimates: every estimator's tau² is 0 (avoid rounding residue ~1e-36)
        return 0.0, True, 0, math.nan
    f0 = _wls(y, v, X, 0.0)
    Q = max(0.0, f0.ypy)  # a sum of squares, never negative
    if method == "DL":
        return max(0.0, (Q - (k - p)) / f0.trP), True, 0, math.nan
    if method == "HS":
        return max(0.0, (Q - k) / f0.w.sum()), True, 0, math.nan
    if method == "HE":
        rss, trpv = _ols_parts(y, v, X)
        return max(0.0, (rss - trpv) / (k - p)), True, 0, math.nan
    if method == "SJ":
        # initial value: the variance of the estimates about their plain mean, whatever the
        # moderators (Sidik & Jonkman 2005's crude start; metafor does the same); then one
        # weighted step with the model matrix: t0 * r'P(t0) r / (k - p), with r = y - mean(y)
        # (r'Pr = y'Py when X has an intercept, since P annihilates the columns of X)
        r = y - y.mean()
        t0 = float(r @ r) / k
        if t0 <= 0:
            return 0.0, True, 0, math.nan
        fr = _wls(r, v, X, t0)
        return max(0.0, t0 * fr.ypy / (k - p)), True, 0, math.nan
    if method == "PM":
        target = k - p
        if Q <= target:
            return 0.0, True, 0, math.nan
        fun = lambda t: _qgen(y, v, X, t) - target  # noqa: E731
        hi = _bracket_decreasing(lambda t: fun(t) + target, target,
                                 hi=max(vscale, np.var(y) * 4))
        root, r = optimize.brentq(fun, 0.0, hi, xtol=control["tol"] * vscale, rtol=8.9e-16,
                                  maxiter=maxiter, full_output=True, disp=False)
        if not r.converged:
            _conv_warn("PM", r.iterations, math.nan, maxiter)
        return float(root), bool(r.converged), int(r.iterations), math.nan
    if method == "EB":
        t = 0.0
        change = math.inf
        for it in range(1, maxiter + 1):
            fw = _wls(y, v, X, t)
            w, e = fw.w, fw.e
            new = max(0.0, float(np.sum(w * ((k / (k - p)) * e ** 2 - v)) / w.sum()))
            change = abs(new - t)
            t = new
            if change < control["threshold"] * (t + vscale):
                return t, True, it, math.nan
        # the fixed-point iteration cycled; its fixed point solves sum w (k/(k-p) e² - v - t) = 0,
        # i.e. Q_gen(t) = k - p: the Paule-Mandel equation (EB and PM are the same estimator;
        # metafor 3.8-1 EB with stepadj = 0.5 gives 0.0353997850139 on tests/test_classical.py's
        # cycling example, our PM root 0.0353997850142)
        t_pm, ok, it_pm, _ = _tau2(y, v, X, "PM", control)
        if ok:
            return t_pm, True, maxiter + it_pm, math.nan
        _conv_warn("EB", maxiter, change, maxiter)
        return t, False, maxiter, math.nan
    if method in ("REML", "ML"):
        # Fisher scoring from the HE/DL-type start, truncated at the boundary 0
        t = max(0.0, (Q - (k - p)) / f0.trP)
        change = math.inf
        for it in range(1, maxiter + 1):
            ft = _wls(y, v, X, t)
            Py, w = ft.Py, ft.w
            if method == "REML":
                adj = (float(Py @ Py) - ft.trP) / ft.trPP
            else:
                adj = (float(Py @ Py) - w.sum()) / float(np.sum(w * w))
            new = max(0.0, t + adj)
            change = abs(new - t)
            t = new
            if change < control["threshold"] * (t + vscale):
                ft = _wls(y, v, X, t)
                info = ft.trPP if method == "REML" else float(np.sum(ft.w * ft.w))
                return t, True, it, math.sqrt(2.0 / info)
        # Fisher scoring cycled (it can, e.g. with a few very precise studies among imprecise
        # ones; metafor then stops with "did not converge"). The estimate is still well
        # defined: the root of the score equation U(t) = y'PPy - tr P (REML) or
        # y'PPy - sum w (ML), found by bracketing from the boundary.
        root = _score_root(y, v, X, method, control["threshold"] * vscale, maxiter)
        if root is not None:
            ft = _wls(y, v, X, root)
            info = ft.trPP if method == "REML" else float(np.sum(ft.w * ft.w))
            return root, True, maxiter, math.sqrt(2.0 / info)
        _conv_warn(method, maxiter, change, maxiter)
        return t, False, maxiter, math.nan
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _qprofile(y, v, X, level, control):
    """Q-profile CI for tau² (Viechtbauer 2007)."""
    k, p = X.shape
    df = k - p
    if df < 1:
        return math.nan, math.nan
    a = 1 - level
    crit_lo = stats.chi2.ppf(1 - a / 2, df)   # lower bound solves Q = upper quantile
    crit_hi = stats.chi2.ppf(a / 2, df)
    q0 = _qgen(y, v, X, 0.0)
    vscale = float(np.mean(v))  # tolerances relative to the scale of the data

    def solve(crit):
        if q0 <= crit:
            return 0.0
        fun = lambda t: _qgen(y, v, X, t) - crit  # noqa: E731
        hi = _bracket_decreasing(lambda t: fun(t) + crit, crit, hi=max(vscale, np.var(y) * 4))
        return float(optimize.brentq(fun, 0.0, hi, xtol=control["tol"] * vscale, rtol=8.9e-16,
                                     maxiter=1000))
    return solve(crit_lo), solve(crit_hi)


def _prepare(yi, vi, studies, *, allow_missing=True):
    y = np.asarray(yi, dtype=float).ravel()
    v = np.asarray(vi, dtype=float).ravel()
    if y.shape != v.shape:
        raise DataError(f"yi and vi have different lengths ({y.size} vs {v.size})",
                        column="vi")
    if studies is None:
        studies = [f"study {i + 1}" for i in range(y.size)]
    studies = [str(s) for s in studies]
    if len(studies) != y.size:
        raise DataError("study labels and yi have different lengths", column="study")
    miss = np.isnan(y) | np.isnan(v)
    bad_y = np.flatnonzero(~miss & ~np.isfinite(y))
    if bad_y.size:
        raise DataError(f"yi must be finite, got {y[bad_y[0]]} ({studies[bad_y[0]]})",
                        row=int(bad_y[0]) + 2, column="yi")
    bad_v = np.flatnonzero(~miss & ~(np.isfinite(v) & (v > 0)))
    if bad_v.size:
        raise DataError(f"sampling variance vi must be finite and > 0, got "
                        f"{v[bad_v[0]]} ({studies[bad_v[0]]})", row=int(bad_v[0]) + 2,
                        column="vi", fix="check the SDs/counts or supply sei > 0")
    tiny = np.flatnonzero(~miss & (v < MIN_VARIANCE))
    if tiny.size:
        i = int(tiny[0])
        raise DataError(f"sampling variance vi = {v[i]:.3g} is too small to compute with (its "
                        f"inverse weight overflows; vi must be >= {MIN_VARIANCE:g}) "
                        f"({studies[i]})", row=i + 2, column="vi",
                        fix="check the value against the source (a lost exponent?)")
    if miss.any():
        names = ", ".join(s for s, m in zip(studies, miss) if m)
        warnings.warn(f"{int(miss.sum())} stud{'y' if miss.sum() == 1 else 'ies'} with missing "
                      f"yi or vi omitted from the model: {names}", DataWarning, stacklevel=3)
    keep = ~miss
    return y[keep], v[keep], [s for s, m in zip(studies, keep) if m], keep


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _apply_preset(preset, method, test, pi_dist, knha_adhoc, method_given):
    if preset is None:
        return method, test, pi_dist, knha_adhoc
    _check_choice("preset", preset, tuple(PRESETS))
    if preset == "revman5":
        if method not in ("FE", "DL", "MH", "PETO"):
            raise ValueError(f"preset 'revman5' offers only FE, MH, Peto and DL random effects, "
                             f"not method={method!r}")
        return method, "z", "z", False
    # revman_web
    return (method if method_given else "REML"), "knha", "t", False


def _fit(y, v, X, *, method, test, knha_adhoc, level, pi_dist, control):
    """The workhorse shared by rma, subgroups and meta-regression."""
    k, p = X.shape
    tau2, conv, iters, tau2_se = _tau2(y, v, X, method, control)
    ft = _wls(y, v, X, tau2)
    b, vb, w = ft.b, ft.vb, ft.w
    f0 = ft if tau2 == 0 else _wls(y, v, X, 0.0)
    # Q = sum w (y - Xb)^2 is a sum of squares: never negative (clamped for safety)
    Q = max(0.0, f0.ypy)
    qdf = k - p
    q_p = float(stats.chi2.sf(Q, qdf)) if qdf > 0 else math.nan
    s2 = math.nan
    if test == "knha":
        if qdf < 1:
            raise EstimationError(f"Knapp-Hartung needs k > {p} studies (k = {k}); use test='z'")
        s2 = 0.0 if (p == 1 and np.ptp(y) == 0) else ft.ypy / qdf
        fac = max(1.0, s2) if knha_adhoc else s2
        if s2 == 0 and not knha_adhoc:
            warnings.warn("Knapp-Hartung scale factor s^2 = 0 (the estimates agree perfectly); "
                          "the CI has zero width. Consider knha_adhoc=True.", DataWarning,
                          stacklevel=3)
        vb = vb * fac
        dfree = float(qdf)
        crit = stats.t.ppf(0.5 + level / 2, dfree)
    else:
        dfree = None
        crit = stats.norm.ppf(0.5 + level / 2)
    se = np.sqrt(np.diag(vb))
    # heterogeneity
    trP0 = f0.trP
    if qdf > 0:
        i2_q = max(0.0, 100.0 * (Q - qdf) / Q) if Q > 0 else 0.0
        if method == "FE":
            i2, h2 = i2_q, Q / qdf
        else:
            vt = qdf / trP0
            i2, h2 = 100.0 * tau2 / (vt + tau2), (vt + tau2) / vt
    else:
        i2 = i2_q = h2 = math.nan
    return dict(b=b, vb=vb, se=se, tau2=tau2, conv=conv, iters=iters, tau2_se=tau2_se, Q=Q,
                qdf=qdf, q_p=q_p, s2=s2, dfree=dfree, crit=crit, w=w, i2=i2, i2_q=i2_q, h2=h2,
                trP0=trP0)


def rma(yi, vi=None, *, sei=None, studies=None, method: str | None = None, test: str = "z",
        knha_adhoc: bool = False, level: float = 0.95, pi_dist: str = "auto",
        measure: str = "GEN", preset: str | None = None, control: dict | None = None,
        ) -> ClassicalResult:
    """Inverse-variance meta-analysis: fixed effect or random effects (metafor ``rma.uni``).

    Parameters
    ----------
    yi, vi : array-like
        Effect sizes and sampling variances (or give ``sei``). ``yi`` may also be a
        DataFrame from :func:`bayesmeta.effect_sizes.escalc` (columns ``yi``, ``vi``,
        optional ``study``; its ``attrs['measure']`` is used).
    studies : sequence of str, optional
        Study labels (default ``"study 1"``, ...).
    method : {"FE", "DL", "REML", "ML", "PM", "HE", "SJ", "EB", "HS"}, optional
        Default ``"REML"`` (metafor), ``"DL"`` with ``preset="revman5"``.
    test : {"z", "knha"}
        Wald z, or Knapp-Hartung/HKSJ t(k-1). ``knha_adhoc=True`` uses max(1, s²).
    level : float
        Confidence level (0.95).
    pi_dist : {"auto", "z", "t", "t_k2"}
        Prediction-interval quantile: metafor's default (``auto``: z under z, t(k-1) under
        KNHA), normal, t(k-1), or Higgins et al. (2009) t(k-2).
    measure : str
        Label of the effect measure (sets ``scale``).
    preset : {"revman5", "revman_web"}, optional
        See :data:`PRESETS`.
    control : dict, optional
        ``threshold`` (Fisher scoring / EB stop when a tau² step is below threshold x
        (tau² + mean vi); 1e-10), ``maxiter`` (1000), ``tol`` (root-finding tolerance for PM
        and Q-profile, times mean vi; 1e-12). Both are relative to the scale of the data, so
        results are equivariant under yi -> c yi, vi -> c² vi.

    Returns
    -------
    ClassicalResult

    Raises
    ------
    DataError
        Non-finite yi, vi <= 0, or fewer than one usable study.
    EstimationError
        KNHA with k = 1.

    Warns
    -----
    DataWarning
        Studies with missing yi/vi omitted (named); k = 1.
    ConvergenceWarning
        An iterative tau² estimator stopped at ``maxiter``.
    """
    meth_given = method is not None
    method = (method or ("DL" if preset == "revman5" else "REML")).upper()
    if isinstance(yi, pd.DataFrame):
        dfin = yi
        measure = dfin.attrs.get("measure", measure)
        if studies is None and "study" in dfin.columns:
            studies = list(dfin["study"])
        yi = dfin["yi"].to_numpy(float)
        vi = dfin["vi"].to_numpy(float) if "vi" in dfin.columns else dfin["sei"].to_numpy(float) ** 2
    if vi is None:
        if sei is None:
            raise DataError("give vi or sei", column="vi")
        vi = np.asarray(sei, dtype=float) ** 2
    method, test, pi_dist_p, knha_adhoc = _apply_preset(preset, method, test, pi_dist,
                                                        knha_adhoc, meth_given)
    if preset:
        pi_dist = pi_dist_p
    _check_choice("method", method, METHODS)
    _check_choice("test", test, TESTS)
    _check_choice("pi_dist", pi_dist, PI_DISTS)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    ctrl = {**_CONTROL, **(control or {})}
    y, v, labels, _ = _prepare(yi, vi, studies)
    k = y.size
    if k == 0:
        raise DataError("no study with both yi and vi", column="yi")
    notes = []
    if k == 1 and method != "FE":
        notes.append("k = 1: tau^2 not estimable, set to 0")
        warnings.warn("only 1 study: tau^2 is not estimable and is set to 0; the result is "
                      "that study's own estimate", DataWarning, stacklevel=2)
    X = np.ones((k, 1))
    f = _fit(y, v, X, method=method, test=test, knha_adhoc=knha_adhoc, level=level,
             pi_dist=pi_dist, control=ctrl)
    return _make_result(y, v, labels, X, f, method=method, test=test, knha_adhoc=knha_adhoc,
                        level=level, pi_dist=pi_dist, measure=measure, preset=preset,
                        control=ctrl, notes=tuple(notes))


def _make_result(y, v, labels, X, f, *, method, test, knha_adhoc, level, pi_dist, measure,
                 preset, control, notes=(), est_override=None, extra=None, qprofile=True):
    k = y.size
    est = float(f["b"][0]) if est_override is None else est_override[0]
    se = float(f["se"][0]) if est_override is None else est_override[1]
    crit = f["crit"]
    stat = est / se if se > 0 else math.copysign(math.inf, est) if est else math.nan
    if f["dfree"] is None:
        pval = float(2 * stats.norm.sf(abs(stat)))
    else:
        pval = float(2 * stats.t.sf(abs(stat), f["dfree"]))
    tau2 = f["tau2"]
    # prediction interval
    pdist = pi_dist
    if pdist == "auto":
        pdist = "z" if test == "z" else "t"
    if pdist == "z":
        pcrit, pdf = stats.norm.ppf(0.5 + level / 2), None
    else:
        # t(k-p): metafor under KNHA and "t"; Higgins et al. (2009): t(k-2)
        pdf = float(k - X.shape[1]) if pdist == "t" else float(k - 2)
        pcrit = stats.t.ppf(0.5 + level / 2, pdf) if pdf >= 1 else math.nan
    ps = math.sqrt(tau2 + se ** 2)
    w = f["w"]
    wpct = 100 * w / w.sum()
    studies_df = pd.DataFrame({"study": labels, "yi": y, "vi": v, "weight_pct": wpct})
    is_re = method not in ("FE", "MH", "PETO")
    if is_re and qprofile and k - X.shape[1] >= 1:
        lo, hi = _qprofile(y, v, X, level, control)
        vt = (k - X.shape[1]) / f["trP0"]
        tau2_ci = (lo, hi)
        i2_ci = (100 * lo / (vt + lo), 100 * hi / (vt + hi))
        h2_ci = ((vt + lo) / vt, (vt + hi) / vt)
        tau_ci = (math.sqrt(lo), math.sqrt(hi))
    else:
        tau2_ci = tau_ci = i2_ci = h2_ci = (math.nan, math.nan)
    return ClassicalResult(
        k=k, measure=measure, scale=SCALE.get(measure, measure), method=method, test=test,
        estimate=est, se=se, ci_low=est - crit * se, ci_high=est + crit * se, statistic=stat,
        p=pval, df=f["dfree"], tau2=tau2, tau=math.sqrt(tau2), i2=f["i2"], i2_q=f["i2_q"],
        h2=f["h2"], q=f["Q"], q_df=f["qdf"], q_p=f["q_p"], pi_low=est - pcrit * ps,
        pi_high=est + pcrit * ps, weights=pd.Series(wpct, index=labels, name="weight_pct"),
        converged=f["conv"], iterations=f["iters"], studies=studies_df, tau2_ci=tau2_ci,
        tau_ci=tau_ci, i2_ci=i2_ci, h2_ci=h2_ci, tau2_se=f["tau2_se"], level=level,
        knha_adhoc=knha_adhoc, s2=f["s2"], pi_dist=pi_dist, pi_df=pdf, preset=preset,
        notes=tuple(notes), extra=extra or {})


# --------------------------------------------------------------------------------------
# meta-regression on a factor (QM)
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModeratorTest:
    """Omnibus test of moderators (metafor's QM): chi²(m) under z, F(m, k-p) under KNHA."""

    qm: float
    df: int
    df2: float | None
    p: float
    tau2: float
    coefficients: pd.DataFrame


def rma_mods(yi, vi, X, *, names=None, method="REML", test="z", knha_adhoc=False,
             control=None) -> ModeratorTest:
    """Meta-regression with design matrix ``X`` (first column the intercept); QM test of
    all non-intercept coefficients, as metafor's ``rma(yi, vi, mods = ...)``."""
    ctrl = {**_CONTROL, **(control or {})}
    y = np.asarray(yi, float)
    v = np.asarray(vi, float)
    X = np.asarray(X, float)
    f = _fit(y, v, X, method=method, test=test, knha_adhoc=knha_adhoc, level=0.95,
             pi_dist="auto", control=ctrl)
    b, vb = f["b"][1:], f["vb"][1:, 1:]
    m = b.size
    qm = float(b @ np.linalg.solve(vb, b))
    if test == "knha":
        qm /= m
        p = float(stats.f.sf(qm, m, f["dfree"]))
        df2 = f["dfree"]
    else:
        p = float(stats.chi2.sf(qm, m))
        df2 = None
    coef = pd.DataFrame({"estimate": f["b"], "se": f["se"]},
                        index=names or [f"b{i}" for i in range(X.shape[1])])
    return ModeratorTest(qm=qm, df=m, df2=df2, p=p, tau2=f["tau2"], coefficients=coef)


# --------------------------------------------------------------------------------------
# Mantel-Haenszel and Peto
# --------------------------------------------------------------------------------------

def _counts(ai, bi, ci, di, n1i, n2i):
    ai = np.asarray(ai, float)
    ci = np.asarray(ci, float)
    if bi is None:
        if n1i is None:
            raise DataError("give bi or n1i", column="bi")
        bi = np.asarray(n1i, float) - ai
    if di is None:
        if n2i is None:
            raise DataError("give di or n2i", column="di")
        di = np.asarray(n2i, float) - ci
    bi, di = np.asarray(bi, float), np.asarray(di, float)
    for nm, x in (("ai", ai), ("bi", bi), ("ci", ci), ("di", di)):
        bad = np.flatnonzero(np.isfinite(x) & (x < 0))
        if bad.size:
            raise DataError(f"{nm} must be a count >= 0, got {x[bad[0]]}", row=int(bad[0]) + 2,
                            column=nm)
    return ai, bi, ci, di


def rma_mh(ai, bi=None, ci=None, di=None, *, n1i=None, n2i=None, measure="OR", studies=None,
           level=0.95, cc=0.5, drop00=True, rd_variance="sato", preset=None,
           tau2_method=None) -> ClassicalResult:
    """Mantel-Haenszel fixed-effect meta-analysis of 2x2 tables (metafor ``rma.mh``).

    The MH estimate uses the raw counts (no continuity correction), as metafor's ``rma.mh``
    does. With ``preset="revman5"`` 0.5 is added to every cell of tables with a zero cell
    *before* the MH estimate, as RevMan 5 does (R meta ``MH.exact = FALSE``), and
    ``rd_variance`` defaults to RevMan's.

    Variances: log OR -- Robins, Breslow & Greenland (1986); log RR -- Greenland & Robins
    (1985); RD -- ``rd_variance="sato"`` (default): Sato, Greenland & Robins (1989), which is
    what metafor uses (consistent in both sparse-data and large-strata limits);
    ``"greenland_robins"``: Greenland & Robins (1985),
    :math:`\\sum (a_ib_in_{2i}^3 + c_id_in_{1i}^3)/(n_{1i}n_{2i}N_i^2) / (\\sum n_{1i}n_{2i}/N_i)^2`,
    the formula in Deeks & Higgins (2010) "Statistical algorithms in Review Manager 5".
    The two differ (GR is not consistent in the sparse-data limit); they agree in large tables.

    Heterogeneity: Cochran's Q around the MH estimate with inverse-variance weights of the
    per-study (continuity-corrected, double-zero-dropped) yi/vi, as metafor and RevMan 5
    (R meta ``Q.Cochrane = TRUE``) do. ``tau2_method="DL"`` gives RevMan 5's "M-H, Random":
    DL tau² from that Q, then inverse-variance random-effects pooling of the per-study yi.

    Returns a :class:`ClassicalResult` with ``method="MH"`` (or ``"DL"`` for M-H random);
    ``extra`` holds the Cochran-Mantel-Haenszel test (OR, with continuity correction) and
    ``k_yi``, the number of tables contributing to Q. For OR it also holds the Breslow-Day
    statistic (``breslow_day``, ``breslow_day_p``) and Tarone's test for heterogeneity
    (``tarone``, ``tarone_p``, ``tarone_df``; Breslow & Day 1980; Tarone 1985, Biometrika
    72:91-95) over the tables with events and non-events, df = their number - 1 (metafor's
    ``TA``, ``TAp``, ``k.pos - 1``); NaN when the MH odds ratio of the raw counts is 0 or
    infinite, p NaN when df = 0.
    """
    measure = measure.upper()
    _check_choice("measure", measure, ("OR", "RR", "RD"))
    _check_choice("rd_variance", rd_variance, ("sato", "greenland_robins"))
    if preset is not None:
        _check_choice("preset", preset, tuple(PRESETS))
    revman5 = preset == "revman5"
    if revman5 and rd_variance == "sato" and measure == "RD":
        rd_variance = "greenland_robins"
    a, b, c, d = _counts(ai, bi, ci, di, n1i, n2i)
    k = a.size
    labels = [str(s) for s in studies] if studies is not None else [f"study {i + 1}" for i in range(k)]
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(c) & np.isfinite(d)
    if not ok.all():
        warnings.warn(f"{int((~ok).sum())} tables with missing counts omitted: "
                      + ", ".join(s for s, o in zip(labels, ok) if not o), DataWarning,
                      stacklevel=2)
        a, b, c, d = a[ok], b[ok], c[ok], d[ok]
        labels = [s for s, o in zip(labels, ok) if o]
        k = a.size
    if k == 0:
        raise DataError("no 2x2 table with complete counts", column="ai")
    # a table with zero events, or all events, in both arms carries no information on a
    # ratio (and its RD of 0 has variance 0): when every table is like that, the MH estimate
    # is undefined (0/0) -- say so instead of dividing by zero
    uninformative = ((a == 0) & (c == 0)) | ((b == 0) & (d == 0))
    name = {"OR": "odds ratio", "RR": "risk ratio", "RD": "risk difference"}[measure]

    def _undefined():
        return EstimationError(
            f"MH {name} undefined: every table ({k}) has zero events or all events in both "
            f"arms, so the data carry no information on the {measure}"
            + ("; use --method FE (inverse variance with continuity correction) for an RD of 0"
               if measure == "RD" else
               "; use --measure RD (defined as 0 here) or report the event counts only"))
    if uninformative.all() and not (revman5 and measure == "RD"):
        raise _undefined()
    # per-study yi/vi for Q (metafor: add=1/2, to="only0", drop00=TRUE)
    # metafor drops double-zero tables from Q for every measure (drop00=TRUE); RevMan 5 keeps
    # them for RD (an RD of 0 is estimable) and drops them for OR/RR
    dz = drop00 and (measure in ("OR", "RR") or not revman5)
    ya, yb, yc, yd, corr, dropped = continuity_correct(a, b, c, d, cc=cc, cc_policy="only0",
                                                       drop00=dz, measure=measure,
                                                       labels=labels, warn=False)
    if dropped.any():
        warnings.warn(f"{int(dropped.sum())} stud{'y' if dropped.sum() == 1 else 'ies'} with zero "
                      f"events (or all events) in both arms excluded from {measure}: "
                      + ", ".join(s for s, m in zip(labels, dropped) if m), DataWarning,
                      stacklevel=2)
    if corr.any():
        where = ("before the MH estimate (RevMan 5) and for the per-study yi/vi used in Q"
                 if revman5 else "for the per-study yi/vi used in Q only; the MH estimate "
                 "uses the raw counts")
        warnings.warn(f"{cc:g} added to every cell of {int(corr.sum())} table(s) with a zero "
                      f"cell {where}: " + ", ".join(s for s, m in zip(labels, corr) if m),
                      DataWarning, stacklevel=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        n1y, n2y = ya + yb, yc + yd
        if measure == "OR":
            yy = np.log(ya * yd / (yb * yc))
            vy = 1 / ya + 1 / yb + 1 / yc + 1 / yd
        elif measure == "RR":
            yy = np.log((ya / n1y) / (yc / n2y))
            vy = 1 / ya - 1 / n1y + 1 / yc - 1 / n2y
        else:
            p1, p2 = ya / n1y, yc / n2y
            yy, vy = p1 - p2, p1 * (1 - p1) / n1y + p2 * (1 - p2) / n2y
    usable = np.isfinite(yy) & np.isfinite(vy) & (vy > 0)
    # counts for the MH estimate
    if revman5:
        a, b, c, d, _, drop_rm = continuity_correct(a, b, c, d, cc=cc, cc_policy="only0",
                                                    drop00=dz, measure=measure, labels=labels,
                                                    warn=False)
        keep = ~drop_rm
        a, b, c, d = a[keep], b[keep], c[keep], d[keep]
    n1, n2 = a + b, c + d
    N = n1 + n2
    if measure == "OR":
        R, S = a * d / N, b * c / N
        if R.sum() == 0 or S.sum() == 0:
            raise EstimationError("MH odds ratio undefined: no events (or no non-events) in one arm of every table")
        est = math.log(R.sum() / S.sum())
        Pp, Qq = (a + d) / N, (b + c) / N
        var = (np.sum(Pp * R) / (2 * R.sum() ** 2) + np.sum(Pp * S + Qq * R) /
               (2 * R.sum() * S.sum()) + np.sum(Qq * S) / (2 * S.sum() ** 2))
    elif measure == "RR":
        R, S = a * n2 / N, c * n1 / N
        if R.sum() == 0 or S.sum() == 0:
            raise EstimationError("MH risk ratio undefined: no events in one arm of every table")
        est = math.log(R.sum() / S.sum())
        var = np.sum((n1 * n2 * (a + c) - a * c * N) / N ** 2) / (R.sum() * S.sum())
    else:
        W = n1 * n2 / N
        est = float(np.sum((a * n2 - c * n1) / N) / W.sum())
        if rd_variance == "sato":
            Pp = (n1 ** 2 * c - n2 ** 2 * a + n1 * n2 * (n2 - n1) / 2) / N ** 2
            Qq = (a * (n2 - c) + c * (n1 - a)) / (2 * N)
            var = (est * Pp.sum() + Qq.sum()) / W.sum() ** 2
        else:
            var = np.sum((a * b * n2 ** 3 + c * d * n1 ** 3) / (n1 * n2 * N ** 2)) / W.sum() ** 2
    if not (np.isfinite(var) and var > 0):
        if uninformative.all():
            raise _undefined()
        raise EstimationError(f"MH {name} undefined: its variance is {float(var):g} (no "
                              f"information in the tables); check the counts")
    se = math.sqrt(var)
    zc = stats.norm.ppf(0.5 + level / 2)
    yq, vq = yy[usable], vy[usable]
    kq = yq.size
    wq = 1 / vq
    Q = float(np.sum(wq * (yq - est) ** 2)) if kq > 0 else math.nan
    qdf = kq - 1
    q_p = float(stats.chi2.sf(Q, qdf)) if qdf > 0 else math.nan
    i2q = max(0.0, 100 * (Q - qdf) / Q) if qdf > 0 and Q > 0 else (0.0 if qdf > 0 else math.nan)
    h2 = Q / qdf if qdf > 0 else math.nan
    # CMH test (OR only; with continuity correction, as metafor's correct=TRUE)
    extra = {"k_yi": kq, "rd_variance": rd_variance if measure == "RD" else None}
    if measure == "OR":
        a0, b0, c0, d0 = _counts(ai, bi, ci, di, n1i, n2i)
        a0, b0, c0, d0 = a0[ok], b0[ok], c0[ok], d0[ok]
        n10, n20 = a0 + b0, c0 + d0
        N0 = n10 + n20
        m1 = a0 + c0
        inf = N0 > 1
        Ea = n10 * m1 / N0
        Va = np.where(inf, n10 * n20 * m1 * (N0 - m1) / (N0 ** 2 * (N0 - 1)), 0.0)
        if Va.sum() > 0:
            cmh = (abs(a0.sum() - Ea.sum()) - 0.5) ** 2 / Va.sum()
            extra.update(cmh=float(cmh), cmh_p=float(stats.chi2.sf(cmh, 1)))
        # Breslow-Day statistic and Tarone's (1985) correction, from the raw counts and their
        # MH odds ratio psi, as metafor. Given the margins, the expected cell a under psi
        # solves (psi-1) E^2 - A E + psi n1 m1 = 0 with A = psi (n1 + m1) + n2 - m1; its root
        # in the feasible range [max(0, m1 - n2), min(n1, m1)] is (A - B)/(2 (psi-1)),
        # B = sqrt(A^2 - 4 psi (psi-1) n1 m1), written as 2 psi n1 m1/(A + B) when A > 0 (no
        # cancellation; also covers psi = 1). A table counts when its four expected cells are
        # > 0: both arms non-empty, with events and non-events (metafor's k.pos tables, except
        # that metafor keeps a table with an empty arm and returns Inf).
        bd = bd_p = ta = ta_p = math.nan
        kpos = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            r0, s0 = float(np.sum(a0 * d0 / N0)), float(np.sum(b0 * c0 / N0))
        if r0 > 0 and s0 > 0 and math.isfinite(r0) and math.isfinite(s0):
            psi = r0 / s0
            pos = (n10 > 0) & (n20 > 0) & (m1 > 0) & (b0 + d0 > 0)
            n1p, n2p, m1p = n10[pos], n20[pos], m1[pos]
            A = psi * (n1p + m1p) + n2p - m1p
            B = np.sqrt(np.maximum(A * A - 4 * psi * (psi - 1) * n1p * m1p, 0.0))
            with np.errstate(divide="ignore", invalid="ignore"):
                e_a = np.where(A > 0, 2 * psi * n1p * m1p / (A + B), (A - B) / (2 * (psi - 1)))
            e_c = m1p - e_a
            v_bd = 1 / (1 / e_a + 1 / (n1p - e_a) + 1 / e_c + 1 / (n2p - e_c))
            dev = a0[pos] - e_a
            kpos = int(pos.sum())
            bd = float(np.sum(dev ** 2 / v_bd))
            ta = max(0.0, bd - float(dev.sum()) ** 2 / float(v_bd.sum()))
            if kpos > 1:
                bd_p = float(stats.chi2.sf(bd, kpos - 1))
                ta_p = float(stats.chi2.sf(ta, kpos - 1))
        extra.update(breslow_day=bd, breslow_day_p=bd_p, tarone=ta, tarone_p=ta_p,
                     tarone_df=max(kpos - 1, 0))
    wts = np.zeros(yy.size)
    if measure == "OR":
        wraw = b * c / N
    elif measure == "RR":
        wraw = c * n1 / N
    else:
        wraw = n1 * n2 / N
    wfull = np.full(len(labels), np.nan)
    idx = np.flatnonzero(~dropped) if (revman5 and dz) else np.arange(len(labels))
    wfull[idx] = wraw
    wts = 100 * np.nan_to_num(wfull) / np.nansum(wfull)
    studies_df = pd.DataFrame({"study": labels, "yi": yy, "vi": vy, "weight_pct": wts})
    if tau2_method is not None:
        if tau2_method.upper() != "DL":
            raise ValueError("tau2_method for MH random effects must be 'DL' (RevMan 5)")
        # RevMan 5 "M-H, Random": DL tau² from Q around the MH estimate, IV pooling
        trP = wq.sum() - np.sum(wq ** 2) / wq.sum()
        tau2 = max(0.0, (Q - qdf) / trP) if qdf > 0 else 0.0
        wr = 1 / (vq + tau2)
        est_r = float(np.sum(wr * yq) / wr.sum())
        se_r = math.sqrt(1 / wr.sum())
        pcrit_ps = math.sqrt(tau2 + se_r ** 2)
        wpct = np.zeros(len(labels))
        wpct[np.flatnonzero(usable)] = 100 * wr / wr.sum()
        studies_df["weight_pct"] = wpct
        stat = est_r / se_r
        return ClassicalResult(
            k=len(labels), measure=measure, scale=SCALE[measure], method="DL", test="z",
            estimate=est_r, se=se_r, ci_low=est_r - zc * se_r, ci_high=est_r + zc * se_r,
            statistic=stat, p=float(2 * stats.norm.sf(abs(stat))), df=None, tau2=tau2,
            tau=math.sqrt(tau2), i2=i2q, i2_q=i2q, h2=h2, q=Q, q_df=qdf, q_p=q_p,
            pi_low=est_r - zc * pcrit_ps, pi_high=est_r + zc * pcrit_ps,
            weights=pd.Series(wpct, index=labels, name="weight_pct"), converged=True,
            iterations=0, studies=studies_df, level=level, pi_dist="z", preset=preset,
            notes=("M-H random (RevMan 5): DL tau^2 from Q around the MH estimate",),
            extra=extra)
    stat = est / se
    return ClassicalResult(
        k=len(labels), measure=measure, scale=SCALE[measure], method="MH", test="z",
        estimate=est, se=se, ci_low=est - zc * se, ci_high=est + zc * se, statistic=stat,
        p=float(2 * stats.norm.sf(abs(stat))), df=None, tau2=0.0, tau=0.0, i2=i2q, i2_q=i2q,
        h2=h2, q=Q, q_df=qdf, q_p=q_p, pi_low=est - zc * se, pi_high=est + zc * se,
        weights=pd.Series(wts, index=labels, name="weight_pct"), converged=True, iterations=0,
        studies=studies_df, level=level, pi_dist="z", preset=preset,
        notes=(("continuity correction added before the MH estimate (RevMan 5)",)
               if revman5 else ()), extra=extra)


def rma_peto(ai, bi=None, ci=None, di=None, *, n1i=None, n2i=None, studies=None,
             level=0.95, cc=0.5) -> ClassicalResult:
    """Peto's one-step log odds ratio (metafor ``rma.peto``; Yusuf et al. 1985).

    :math:`\\hat\\theta = \\sum(O_i-E_i)/\\sum V_i`, SE = :math:`1/\\sqrt{\\sum V_i}`, and
    Q = :math:`\\sum (O-E)^2/V - (\\sum(O-E))^2/\\sum V`, all from the raw counts (no
    continuity correction); tables with V = 0 (no events or all events) carry no information
    and are left out of Q and its df. ``cc`` is accepted for symmetry and unused.
    """
    a, b, c, d = _counts(ai, bi, ci, di, n1i, n2i)
    k = a.size
    labels = [str(s) for s in studies] if studies is not None else [f"study {i + 1}" for i in range(k)]
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(c) & np.isfinite(d)
    if not ok.all():
        warnings.warn(f"{int((~ok).sum())} tables with missing counts omitted", DataWarning,
                      stacklevel=2)
        a, b, c, d = a[ok], b[ok], c[ok], d[ok]
        labels = [s for s, o in zip(labels, ok) if o]
    n1, n2 = a + b, c + d
    N = n1 + n2
    oe = a - n1 * (a + c) / N
    V = (a + c) * (b + d) * n1 * n2 / (N ** 2 * (N - 1))
    if V.sum() <= 0:
        raise EstimationError("Peto odds ratio undefined: no events in any table")
    est = float(oe.sum() / V.sum())
    se = math.sqrt(1 / V.sum())
    # Q from the raw counts, over tables with V > 0 (as metafor's rma.peto):
    # Q = sum (O-E)^2/V - (sum (O-E))^2 / sum V
    usable = V > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        yy = np.where(usable, oe / V, np.nan)
        vy = np.where(usable, 1 / V, np.nan)
    wq = 1 / vy[usable]
    Q = float(np.sum(wq * (yy[usable] - est) ** 2))
    qdf = int(usable.sum()) - 1
    q_p = float(stats.chi2.sf(Q, qdf)) if qdf > 0 else math.nan
    i2 = max(0.0, 100 * (Q - qdf) / Q) if qdf > 0 and Q > 0 else (0.0 if qdf > 0 else math.nan)
    zc = stats.norm.ppf(0.5 + level / 2)
    wts = 100 * V / V.sum()
    stat = est / se
    return ClassicalResult(
        k=len(labels), measure="PETO", scale="logOR", method="PETO", test="z", estimate=est,
        se=se, ci_low=est - zc * se, ci_high=est + zc * se, statistic=stat,
        p=float(2 * stats.norm.sf(abs(stat))), df=None, tau2=0.0, tau=0.0, i2=i2, i2_q=i2,
        h2=Q / qdf if qdf > 0 else math.nan, q=Q, q_df=qdf, q_p=q_p, pi_low=est - zc * se,
        pi_high=est + zc * se, weights=pd.Series(wts, index=labels, name="weight_pct"),
        converged=True, iterations=0,
        studies=pd.DataFrame({"study": labels, "yi": yy, "vi": vy, "weight_pct": wts}),
        level=level, pi_dist="z")


# --------------------------------------------------------------------------------------
# subgroups
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SubgroupResult:
    """Per-level fits, the overall fit, RevMan's test for subgroup differences and QM.

    ``subgroup_test``: Q on the subgroup estimates with their SEs (for FE this equals
    ``q_total - sum(q_within)``, RevMan's fixed-effect test; for random-effects methods it is
    RevMan's random-effects test using each subgroup's own tau²). ``q_between_fe`` is always
    the fixed-effect decomposition. ``moderators`` is metafor's ``rma(yi, vi,
    mods = ~ factor(g), method = ...)`` QM test. ``weights_overall`` are per-study weights in
    percent of the overall pooled total (as RevMan prints them in a subgrouped forest plot).
    """

    overall: ClassicalResult
    subgroups: dict
    subgroup_test: dict
    q_between_fe: float
    moderators: ModeratorTest | None
    weights_overall: pd.Series
    groups: pd.Series

    def __str__(self) -> str:
        out = []
        for lev, r in self.subgroups.items():
            out.append(f"=== subgroup {lev} ===")
            out.append(str(r))
        out.append("=== overall ===")
        out.append(str(self.overall))
        t = self.subgroup_test
        out.append(f"Test for subgroup differences: Chi^2 = {t['q']:.2f}, df = {t['df']} "
                   f"(P = {t['p']:.2f}), I^2 = {t['i2']:.0f}%")
        if self.moderators is not None:
            m = self.moderators
            kind = f"F(df1 = {m.df}, df2 = {m.df2:g})" if m.df2 else f"QM(df = {m.df})"
            out.append(f"Test of moderators (meta-regression): {kind} = {m.qm:.4f}, "
                       f"p-val = {_fmt_p(m.p)}")
        return "\n".join(out) + "\n"

    __repr__ = __str__

    def to_dict(self) -> dict:
        d = self.overall.to_dict()
        d["subgroups"] = {str(k): v.to_dict() for k, v in self.subgroups.items()}
        d["subgroup_test"] = {"q": float(self.subgroup_test["q"]),
                              "df": int(self.subgroup_test["df"]),
                              "p": float(self.subgroup_test["p"])}
        return d

    def to_frame(self, *, analysis: str = "", outcome: str = "", studies: bool = True):
        frames = [self.overall.to_frame(analysis=analysis, outcome=outcome, studies=studies)]
        for lev, r in self.subgroups.items():
            frames.append(r.to_frame(analysis=analysis, outcome=outcome, subgroup=str(lev),
                                     studies=False))
        return _results.concat(*frames)


def subgroup_analysis(yi, vi, groups, *, studies=None, method: str = "FE", test: str = "z",
                      knha_adhoc: bool = False, level: float = 0.95, pi_dist: str = "auto",
                      measure: str = "GEN", preset: str | None = None,
                      control: dict | None = None) -> SubgroupResult:
    """Subgroup meta-analysis with RevMan's test for subgroup differences.

    Parameters as :func:`rma`; ``groups`` gives each study's subgroup level (levels keep
    their order of first appearance).
    """
    y = np.asarray(yi, float)
    v = np.asarray(vi, float)
    g = pd.Series(list(groups), dtype=object)
    if len(g) != y.size:
        raise DataError("groups and yi have different lengths", column="subgroup")
    if g.isna().any():
        raise DataError(f"missing subgroup label in row {int(np.flatnonzero(g.isna())[0]) + 2}",
                        row=int(np.flatnonzero(g.isna())[0]) + 2, column="subgroup")
    labels = [str(s) for s in studies] if studies is not None else [f"study {i + 1}" for i in range(y.size)]
    kw = dict(method=method, test=test, knha_adhoc=knha_adhoc, level=level, pi_dist=pi_dist,
              measure=measure, preset=preset, control=control)
    overall = rma(y, v, studies=labels, **kw)
    levels = list(dict.fromkeys(g))
    subs = {}
    for lev in levels:
        m = (g == lev).to_numpy()
        subs[lev] = rma(y[m], v[m], studies=[s for s, mm in zip(labels, m) if mm], **kw)
    est = np.array([r.estimate for r in subs.values()])
    se = np.array([r.se for r in subs.values()])
    ok = np.isfinite(est) & np.isfinite(se) & (se > 0)
    wg = 1 / se[ok] ** 2
    qb = float(np.sum(wg * (est[ok] - np.sum(wg * est[ok]) / wg.sum()) ** 2))
    dfb = int(ok.sum()) - 1
    pb = float(stats.chi2.sf(qb, dfb)) if dfb > 0 else math.nan
    i2b = max(0.0, 100 * (qb - dfb) / qb) if dfb > 0 and qb > 0 else 0.0
    q_fe = overall.q - sum(r.q for r in subs.values())
    # meta-regression QM (metafor rma(yi, vi, mods = ~ factor(g)))
    fin = np.isfinite(y) & np.isfinite(v)
    gg = g[fin].to_numpy()
    present = [lev for lev in levels if (gg == lev).any()]
    mods = None
    if len(present) > 1 and fin.sum() > len(present):
        X = np.column_stack([np.ones(fin.sum())] + [(gg == lev).astype(float) for lev in present[1:]])
        meth = "FE" if method.upper() in ("FE",) else overall.method
        mods = rma_mods(y[fin], v[fin], X, names=["intrcpt"] + [f"factor(g){lev}" for lev in present[1:]],
                        method=meth, test=overall.test, knha_adhoc=knha_adhoc, control=control)
    w_all = overall.weights
    return SubgroupResult(overall=overall, subgroups=subs,
                          subgroup_test={"q": qb, "df": dfb, "p": pb, "i2": i2b},
                          q_between_fe=float(q_fe), moderators=mods, weights_overall=w_all,
                          groups=pd.Series(list(g), index=labels, name="subgroup"))


# --------------------------------------------------------------------------------------
# two-level model (rma.mv twin)
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MultilevelResult:
    """Two-level random-effects model ``y_ij = mu + u_i + w_ij + e_ij`` (metafor
    ``rma.mv(yi, vi, random = ~ 1 | study/time)``)."""

    k: int
    n_study: int
    n_inner: int
    method: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    statistic: float
    p: float
    sigma2_study: float
    sigma2_within: float
    q: float
    q_df: int
    q_p: float
    loglik: float
    converged: bool
    iterations: int
    level: float = 0.95
    measure: str = "GEN"

    @property
    def sigma2(self) -> tuple[float, float]:
        return (self.sigma2_study, self.sigma2_within)

    def __str__(self) -> str:
        return (f"\nMultivariate Meta-Analysis Model (k = {self.k}; method: {self.method})\n\n"
                f"Variance Components:\n\n"
                f"            estim    sqrt  nlvls\n"
                f"sigma^2.1  {self.sigma2_study:.4f}  {math.sqrt(self.sigma2_study):.4f}  "
                f"{self.n_study:5d}  study\n"
                f"sigma^2.2  {self.sigma2_within:.4f}  {math.sqrt(self.sigma2_within):.4f}  "
                f"{self.n_inner:5d}  study/time\n\n"
                f"Test for Heterogeneity:\nQ(df = {self.q_df}) = {self.q:.4f}, p-val = "
                f"{_fmt_p(self.q_p)}\n\nModel Results:\n\n"
                f"{'estimate':>9} {'se':>8} {'zval':>8} {'pval':>8} {'ci.lb':>8} {'ci.ub':>8}\n"
                f"{self.estimate:9.4f} {self.se:8.4f} {self.statistic:8.4f} {_fmt_p(self.p):>8} "
                f"{self.ci_low:8.4f} {self.ci_high:8.4f}\n")

    __repr__ = __str__

    def to_frame(self, *, analysis: str = "", outcome: str = "") -> pd.DataFrame:
        common = dict(analysis=analysis, outcome=outcome, source="classical",
                      method=f"{self.method}-2level", level=self.level,
                      scale=SCALE.get(self.measure, self.measure),
                      flag="" if self.converged else "NOT CONVERGED")
        return _results.frame([
            _results.row(parameter="mu", estimate=self.estimate, se=self.se,
                         ci_low=self.ci_low, ci_high=self.ci_high, interval="wald-z",
                         statistic=self.statistic, p_value=self.p, **common),
            _results.row(parameter="sigma2[study]", estimate=self.sigma2_study, **common),
            _results.row(parameter="sigma2[study/time]", estimate=self.sigma2_within, **common),
        ])


def _ml_parts(y, v, X, Zs, s):
    V = np.diag(v) + sum(si * (Z @ Z.T) for si, Z in zip(s, Zs))
    Vi = np.linalg.inv(V)
    XtVi = X.T @ Vi
    A = XtVi @ X
    Ai = np.linalg.inv(A)
    P = Vi - XtVi.T @ Ai @ XtVi
    return V, Vi, A, Ai, P


def _ml_obj(s, y, v, X, Zs, reml):
    V, Vi, A, Ai, P = _ml_parts(y, v, X, Zs, s)
    _, ld = np.linalg.slogdet(V)
    val = ld + float(y @ P @ y)
    if reml:
        val += np.linalg.slogdet(A)[1]
    G = [Z @ Z.T for Z in Zs]
    Py = P @ y
    M = P if reml else Vi
    grad = np.array([np.sum(M * Gj) - float(Py @ Gj @ Py) for Gj in G])
    return 0.5 * val, 0.5 * grad


def fit_multilevel(yi, vi, study, time=None, *, method: str = "REML", level: float = 0.95,
                   measure: str = "GEN", control: dict | None = None) -> MultilevelResult:
    """Two-level REML/ML meta-analysis: studies, and effects (e.g. time points) nested in them.

    Maximises the (restricted) log-likelihood over (sigma²_study, sigma²_study/time) >= 0 with
    L-BFGS-B on analytic gradients, then polishes the free components with Fisher scoring.
    ``time`` labels the inner level; ``None`` uses one inner level per row.
    """
    method = method.upper()
    _check_choice("method", method, ("REML", "ML"))
    ctrl = {**_CONTROL, **(control or {})}
    y = np.asarray(yi, float)
    v = np.asarray(vi, float)
    st = pd.Series(list(study), dtype=object).astype(str)
    tm = pd.Series(list(time) if time is not None else range(y.size), dtype=object).astype(str)
    lab = [f"{a}/{b}" for a, b in zip(st, tm)]
    y, v, keep_lab, keep = _prepare(y, v, lab)
    st, tm = st[keep].to_numpy(), tm[keep].to_numpy()
    k = y.size
    if k < 2:
        raise DataError("a two-level model needs at least 2 estimates", column="yi")
    s_lev = list(dict.fromkeys(st))
    i_lev = list(dict.fromkeys(zip(st, tm)))
    Z1 = np.array([[1.0 if a == lev else 0.0 for lev in s_lev] for a in st])
    Z2 = np.array([[1.0 if (a, b) == lev else 0.0 for lev in i_lev] for a, b in zip(st, tm)])
    X = np.ones((k, 1))
    reml = method == "REML"
    f0 = _wls(y, v, X, 0.0)
    tdl = max(0.0, (f0.ypy - (k - 1)) / f0.trP)
    scale = max(np.var(y), np.mean(v), 1e-8)
    best = None
    for s0 in ([tdl / 2 + 1e-4 * scale] * 2, [tdl + 0.1 * scale, 1e-3 * scale],
               [1e-3 * scale, tdl + 0.1 * scale], [scale, scale]):
        r = optimize.minimize(_ml_obj, np.array(s0, float), args=(y, v, X, [Z1, Z2], reml),
                              jac=True, method="L-BFGS-B", bounds=[(0, None), (0, None)],
                              options=dict(ftol=1e-15, gtol=1e-12, maxiter=ctrl["maxiter"]))
        if best is None or r.fun < best.fun:
            best = r
    s = np.maximum(best.x, 0.0)
    iters = int(best.nit)
    conv = bool(best.success)
    # Fisher-scoring polish on the free components (KKT: zero gradient where s > 0)
    for it in range(200):
        _, g = _ml_obj(s, y, v, X, [Z1, Z2], reml)
        free = [j for j in range(2) if s[j] > 0 or g[j] < 0]
        if not free:
            break
        V, Vi, A, Ai, P = _ml_parts(y, v, X, [Z1, Z2], s)
        M = P if reml else Vi
        G = [Z1 @ Z1.T, Z2 @ Z2.T]
        F = np.array([[0.5 * np.sum((M @ G[a]) * (M @ G[b]).T) for b in free] for a in free])
        step = np.linalg.solve(F, -g[free])
        new = s.copy()
        new[free] = np.maximum(0.0, s[free] + step)
        ch = float(np.max(np.abs(new - s)))
        f_new = _ml_obj(new, y, v, X, [Z1, Z2], reml)[0]
        if f_new > _ml_obj(s, y, v, X, [Z1, Z2], reml)[0] + 1e-12:
            break
        s = new
        iters += 1
        if ch < ctrl["threshold"]:
            conv = True
            break
    if not conv:
        warnings.warn(f"two-level {method} optimisation did not converge ({best.message}); "
                      f"results are the last iterate", ConvergenceWarning, stacklevel=2)
    V, Vi, A, Ai, P = _ml_parts(y, v, X, [Z1, Z2], s)
    b = float((Ai @ (X.T @ Vi @ y))[0])
    se = math.sqrt(Ai[0, 0])
    z = stats.norm.ppf(0.5 + level / 2)
    Q = max(0.0, f0.ypy)
    fval = _ml_obj(s, y, v, X, [Z1, Z2], reml)[0]
    nobs = k - 1 if reml else k
    # metafor's REML log-likelihood includes + 1/2 log|X'X| (Harville 1977 form)
    loglik = -0.5 * nobs * math.log(2 * math.pi) - fval + (
        0.5 * np.linalg.slogdet(X.T @ X)[1] if reml else 0.0)
    return MultilevelResult(
        k=k, n_study=len(s_lev), n_inner=len(i_lev), method=method, estimate=b, se=se,
        ci_low=b - z * se, ci_high=b + z * se, statistic=b / se,
        p=float(2 * stats.norm.sf(abs(b / se))), sigma2_study=float(s[0]),
        sigma2_within=float(s[1]), q=Q, q_df=k - 1, q_p=float(stats.chi2.sf(Q, k - 1)),
        loglik=loglik, converged=conv, iterations=iters, level=level, measure=measure)


__all__ = ["rma", "rma_mh", "rma_peto", "rma_mods", "subgroup_analysis", "fit_multilevel",
           "ClassicalResult", "SubgroupResult", "MultilevelResult", "ModeratorTest", "METHODS",
           "TESTS", "PRESETS", "PI_DISTS"]
