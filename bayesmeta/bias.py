"""Small-study effects and influence: Egger, Begg, trim-and-fill, leave-one-out.

Each function takes study estimates ``yi`` with sampling variances ``vi`` (or standard errors
``sei``) and returns a frozen result dataclass that prints like metafor and converts to the shared
schema with ``.to_frame()``.

* :func:`egger_test` -- regression test for funnel-plot asymmetry (metafor ``regtest``):
  ``model="lm"`` is Egger's classic test (weighted least squares of ``yi`` on ``sei`` with weights
  ``1/vi``, i.e. ``yi/sei`` regressed on ``1/sei``; t test with ``k - 2`` df); ``model="rma"``
  (metafor's default) adds ``sei`` as a moderator to the (fixed- or random-effects) model and uses
  that model's test (z, or t under Knapp-Hartung).
* :func:`rank_test` -- Begg & Mazumdar's rank correlation (metafor ``ranktest``): Kendall's tau
  between the standardized deviates ``(yi - theta_FE) / sqrt(vi - 1/sum(wi))`` and ``vi``. The
  p-value is exact (null distribution of Kendall's statistic, as R's ``cor.test(exact=TRUE)``)
  when there are no ties and the normal approximation with tie-corrected variance otherwise;
  this is what ``ranktest`` does (it calls ``cor.test(..., exact=TRUE)``).
* :func:`trim_and_fill` -- Duval & Tweedie's trim-and-fill with the L0 or R0 estimator (metafor
  ``trimfill``), including metafor's side detection (sign of the ``sqrt(vi)`` coefficient in a
  meta-regression with the same tau² estimator).
* :func:`leave_one_out` -- the model refitted with each study omitted (metafor ``leave1out``).

Aliases with metafor's names: :data:`regtest`, :data:`ranktest`, :data:`trimfill`,
:data:`leave1out`.

References
----------
Egger M, Davey Smith G, Schneider M, Minder C (1997). Bias in meta-analysis detected by a simple,
graphical test. BMJ 315:629-634. doi:10.1136/bmj.315.7109.629

Begg CB, Mazumdar M (1994). Operating characteristics of a rank correlation test for publication
bias. Biometrics 50(4):1088-1101. doi:10.2307/2533446

Duval S, Tweedie R (2000). Trim and fill: a simple funnel-plot-based method of testing and
adjusting for publication bias in meta-analysis. Biometrics 56(2):455-463.
doi:10.1111/j.0006-341X.2000.00455.x

Viechtbauer W (2010). Conducting meta-analyses in R with the metafor package. Journal of
Statistical Software 36(3):1-48. doi:10.18637/jss.v036.i03
"""

from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special, stats

from bayesmeta import classical, results
from bayesmeta.exceptions import (ConvergenceWarning, DataError, DataWarning,
                                  EstimationError)

__all__ = [
    "EggerResult", "RankTestResult", "TrimFillResult", "LeaveOneOutResult",
    "egger_test", "rank_test", "trim_and_fill", "leave_one_out",
    "regtest", "ranktest", "trimfill", "leave1out", "METHODS",
]

#: tau² estimators supported by the bias functions (metafor names; "EE"/"CE" = "FE").
METHODS = ("FE", "DL", "HE", "ML", "REML", "PM")
_TESTS = ("z", "knha")


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------

def _choice(name, value, options):
    if value not in options:
        close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Invalid {name} {value!r}: must be one of {list(options)}.{hint}")
    return value


def _norm_method(method: str) -> str:
    m = str(method).upper()
    if m in ("EE", "CE"):
        m = "FE"
    return _choice("method", m, METHODS)


def _prepare(yi, vi, sei, study, min_k, what):
    """Validate inputs; omit studies with missing yi/vi (warning names them)."""
    yi = np.asarray(yi, dtype=float).ravel()
    if vi is None and sei is None:
        raise ValueError("Must give 'vi' or 'sei'.")
    if vi is not None and sei is not None:
        raise ValueError("Give either 'vi' or 'sei', not both.")
    v = (np.asarray(vi, dtype=float).ravel() if vi is not None
         else np.asarray(sei, dtype=float).ravel() ** 2)
    vname = "vi" if vi is not None else "sei"
    if v.shape != yi.shape:
        raise ValueError(f"Length mismatch: 'yi' has {yi.size} values but '{vname}' has "
                         f"{v.size}.")
    labels = ([f"Study {i + 1}" for i in range(yi.size)] if study is None
              else [str(s) for s in study])
    if len(labels) != yi.size:
        raise ValueError(f"Length mismatch: 'yi' has {yi.size} values but 'study' has "
                         f"{len(labels)}.")
    miss = np.isnan(yi) | np.isnan(v)
    if miss.any():
        names = [labels[i] for i in np.flatnonzero(miss)]
        warnings.warn(f"{len(names)} studies with missing yi or {vname} were omitted: {names}.",
                      DataWarning, stacklevel=3)
        yi, v = yi[~miss], v[~miss]
        labels = [lab for lab, m in zip(labels, miss) if not m]
    if not np.all(np.isfinite(yi)):
        bad = [labels[i] for i in np.flatnonzero(~np.isfinite(yi))]
        raise DataError(f"'yi' must be finite for every study; {len(bad)} are not: {bad}",
                        column="yi")
    bad = ~(np.isfinite(v) & (v > 0))
    if bad.any():
        names = [labels[i] for i in np.flatnonzero(bad)]
        raise DataError(f"'{vname}' must be finite and > 0 for every study; {len(names)} "
                        f"studies are not: {names}", column=vname)
    if yi.size < min_k:
        raise DataError(f"{what} needs at least {min_k} studies, got k = {yi.size}",
                        fix="it cannot be computed for so few studies")
    return yi, v, labels


# --------------------------------------------------------------------------------------------
# fits: bayesmeta.classical (rma / rma_mods), with warnings of the many internal refits collected
# --------------------------------------------------------------------------------------------

class _Quiet:
    """Collect warnings of internal refits (metafor suppresses them); re-issue convergence
    failures once, with a count, after the loop."""

    def __init__(self, what):
        self.what, self.n_conv = what, 0

    def __enter__(self):
        self._cm = warnings.catch_warnings(record=True)
        self._rec = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        n = sum(issubclass(w.category, ConvergenceWarning) for w in self._rec)
        if n:
            warnings.warn(f"{self.what}: tau² did not converge in {n} of the internal fits.",
                          ConvergenceWarning, stacklevel=3)
        return False


def _rma(yi, vi, method, test="z", level=0.95):
    """Intercept-only fit via :func:`bayesmeta.classical.rma`; None if it cannot be fitted
    (e.g. Knapp-Hartung with k = 1: metafor's leave1out gives NA there too)."""
    try:
        return classical.rma(yi, vi, method=method, test=test, level=level)
    except EstimationError:
        return None


def _coef_sei(yi, vi, method, test="z"):
    """Coefficients (intercept, slope) and SEs of the model with ``sqrt(vi)`` as moderator."""
    X = np.column_stack([np.ones(yi.size), np.sqrt(vi)])
    mt = classical.rma_mods(yi, vi, X, names=["intrcpt", "sei"], method=method, test=test)
    return mt.coefficients["estimate"].to_numpy(), mt.coefficients["se"].to_numpy(), mt.tau2


def _method_label(method, test):
    return method + ("+KNHA" if test == "knha" else "")


_fmt, _fmt_p = classical._fmt, classical._fmt_p  # one number format for all printouts


# --------------------------------------------------------------------------------------------
# Egger
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EggerResult:
    """Regression test for funnel-plot asymmetry.

    ``coef`` is the coefficient of ``sei`` (= the intercept of Egger's regression of ``yi/sei``
    on ``1/sei``); ``statistic`` is its z or t value with ``df`` (NaN under z) and ``p_value``.
    ``limit_estimate`` (with ``ci_low``/``ci_high``) is the model intercept, the predicted
    effect as ``sei -> 0``.
    """

    model: str
    method: str
    test: str
    k: int
    coef: float
    se: float
    statistic: float
    df: float
    p_value: float
    limit_estimate: float
    limit_se: float
    ci_low: float
    ci_high: float
    tau2: float
    level: float = 0.95

    def __str__(self) -> str:
        kind = ("weighted regression with multiplicative dispersion" if self.model == "lm"
                else ("fixed-effects meta-regression model" if self.method == "FE"
                      else f"mixed-effects meta-regression model (tau^2 estimator: "
                           f"{self.method})"))
        stat = (f"t = {self.statistic:.4f}, df = {self.df:g}" if self.test == "t"
                else f"z = {self.statistic:.4f}")
        return (
            "Regression Test for Funnel Plot Asymmetry (Egger)\n\n"
            f"Model:     {kind}\n"
            f"Predictor: standard error (k = {self.k})\n\n"
            f"Test for Funnel Plot Asymmetry: {stat}, p = {_fmt_p(self.p_value)}\n"
            f"Asymmetry coefficient (sei):    {self.coef:.4f} (SE = {self.se:.4f})\n"
            f"Limit Estimate (as sei -> 0):   b = {self.limit_estimate:.4f} "
            f"(CI: {self.ci_low:.4f}, {self.ci_high:.4f})\n"
        )

    def to_frame(self, analysis: str = "", outcome: str = "", scale: str = "") -> pd.DataFrame:
        """Two schema rows: the asymmetry coefficient and the limit estimate."""
        method = f"Egger-{self.model}" + ("" if self.model == "lm" else f"({self.method})")
        interval = "t" if self.test == "t" else "wald-z"
        crit = (stats.t.ppf(0.5 + self.level / 2, self.df) if self.test == "t"
                else stats.norm.ppf(0.5 + self.level / 2))
        common = dict(analysis=analysis, outcome=outcome, source="classical", method=method,
                      level=self.level, interval=interval, scale=scale,
                      df=None if math.isnan(self.df) else self.df)
        return results.frame([
            results.row(parameter="egger_coef", estimate=self.coef, se=self.se,
                        ci_low=self.coef - crit * self.se, ci_high=self.coef + crit * self.se,
                        statistic=self.statistic, p_value=self.p_value, **common),
            results.row(parameter="mu_limit", estimate=self.limit_estimate, se=self.limit_se,
                        ci_low=self.ci_low, ci_high=self.ci_high,
                        statistic=self.limit_estimate / self.limit_se,
                        p_value=(2 * stats.t.sf(abs(self.limit_estimate / self.limit_se),
                                                self.df) if self.test == "t" else
                                 2 * stats.norm.sf(abs(self.limit_estimate / self.limit_se))),
                        **common),
        ])


def egger_test(yi, vi=None, *, sei=None, model: str = "rma", method: str = "REML",
               test: str = "z", level: float = 0.95, study=None) -> EggerResult:
    """Egger's regression test for funnel-plot asymmetry (metafor ``regtest``).

    Parameters
    ----------
    yi : array_like
        Study estimates on the analysis scale.
    vi, sei : array_like
        Sampling variances or standard errors (give one).
    model : {"rma", "lm"}
        ``"lm"``: Egger's classic weighted regression of ``yi`` on ``sei`` (weights ``1/vi``,
        residual variance estimated), t test with ``k - 2`` df, equivalent to regressing
        ``yi/sei`` on ``1/sei`` and testing the intercept. ``"rma"`` (metafor's default): the
        meta-analytic model with ``sei`` as moderator and tau² estimated by ``method``.
    method : str
        tau² estimator for ``model="rma"``: one of :data:`METHODS` ("FE" = fixed effect).
    test : {"z", "knha"}
        Test of the ``model="rma"`` fit (Knapp-Hartung gives a t test with ``k - 2`` df).
    level : float
        Interval probability for the limit estimate.
    study : sequence of str, optional
        Study labels (used in warnings).

    Returns
    -------
    EggerResult
    """
    _choice("model", model, ("rma", "lm"))
    method = _norm_method(method)
    _choice("test", test, _TESTS)
    yi, vi, _ = _prepare(yi, vi, sei, study, 3, "Egger's test")
    sei_ = np.sqrt(vi)
    X = np.column_stack([np.ones(yi.size), sei_])
    if np.ptp(sei_) == 0:
        raise DataError("Egger's test needs studies with different standard errors; all "
                        f"{yi.size} have sei = {sei_[0]:.6g}")
    k = yi.size
    if model == "lm":
        w = 1.0 / vi
        XtW = X.T * w
        inv = np.linalg.inv(XtW @ X)
        b = inv @ XtW @ yi
        res = yi - X @ b
        s2 = float(np.sum(w * res ** 2)) / (k - 2)
        vb = inv * s2
        se = np.sqrt(np.diag(vb))
        df = float(k - 2)
        tstat = b / se
        crit = stats.t.ppf(0.5 + level / 2, df)
        return EggerResult(model="lm", method="FE", test="t", k=k, coef=float(b[1]),
                           se=float(se[1]), statistic=float(tstat[1]), df=df,
                           p_value=float(2 * stats.t.sf(abs(tstat[1]), df)),
                           limit_estimate=float(b[0]), limit_se=float(se[0]),
                           ci_low=float(b[0] - crit * se[0]), ci_high=float(b[0] + crit * se[0]),
                           tau2=0.0, level=level)
    b, se, tau2 = _coef_sei(yi, vi, method, test)
    stat = b / se
    if test == "knha":
        df = float(k - 2)
        pv = 2 * stats.t.sf(np.abs(stat), df)
        crit = stats.t.ppf(0.5 + level / 2, df)
    else:
        df = math.nan
        pv = 2 * stats.norm.sf(np.abs(stat))
        crit = stats.norm.ppf(0.5 + level / 2)
    return EggerResult(model="rma", method=method, test="t" if test == "knha" else "z", k=k,
                       coef=float(b[1]), se=float(se[1]), statistic=float(stat[1]), df=df,
                       p_value=float(pv[1]), limit_estimate=float(b[0]), limit_se=float(se[0]),
                       ci_low=float(b[0] - crit * se[0]), ci_high=float(b[0] + crit * se[0]),
                       tau2=float(tau2), level=level)


# --------------------------------------------------------------------------------------------
# Begg
# --------------------------------------------------------------------------------------------

def _kendall_exact_cdf(q: int, n: int) -> float:
    """P(C <= q) for C = number of concordant pairs of a random permutation of n (Mahonian)."""
    if q < 0:
        return 0.0
    m = n * (n - 1) // 2
    if q >= m:
        return 1.0
    dist = np.zeros(m + 1)
    dist[0] = 1.0
    top = 0
    for j in range(2, n + 1):  # insert element j: adds 0..j-1 inversions, uniformly
        new = np.zeros(m + 1)
        c = np.cumsum(dist[: top + 1])
        top_new = top + j - 1
        for s in range(top_new + 1):
            hi = min(s, top)
            lo = s - (j - 1) - 1
            new[s] = c[hi] - (c[lo] if lo >= 0 else 0.0)
        dist = new / j
        top = top_new
    return float(min(1.0, np.sum(dist[: q + 1])))


@dataclass(frozen=True)
class RankTestResult:
    """Begg & Mazumdar rank correlation test: Kendall's tau (tau-b) and its p-value."""

    k: int
    tau: float
    p_value: float
    exact: bool
    statistic: float  # the number of concordant pairs (exact) or z (normal approximation)

    def __str__(self) -> str:
        how = ("exact null distribution" if self.exact
               else "normal approximation, ties present")
        return ("Rank Correlation Test for Funnel Plot Asymmetry (Begg & Mazumdar)\n\n"
                f"Kendall's tau = {self.tau:.4f}, p = {_fmt_p(self.p_value)} "
                f"(k = {self.k}; {how})\n")

    def to_frame(self, analysis: str = "", outcome: str = "", scale: str = "") -> pd.DataFrame:
        """One schema row ``parameter="kendall_tau"`` (statistic: concordant pairs or z)."""
        return results.frame([results.row(
            analysis=analysis, outcome=outcome, source="classical",
            method="Begg-exact" if self.exact else "Begg-normal", parameter="kendall_tau",
            estimate=self.tau, statistic=self.statistic, p_value=self.p_value, scale=scale)])


def rank_test(yi, vi=None, *, sei=None, exact: bool = True, study=None) -> RankTestResult:
    """Begg & Mazumdar's rank correlation test (metafor ``ranktest``).

    Kendall's tau-b between ``(yi - theta) / sqrt(vi - vb)`` (theta, vb: fixed-effect estimate and
    its variance) and ``vi``. As R's ``cor.test(method="kendall", exact=exact)``: the p-value is
    exact when ``exact`` and there are no ties, otherwise from the normal approximation with the
    tie-corrected variance of Kendall's S (no continuity correction).
    """
    yi, vi, _ = _prepare(yi, vi, sei, study, 3, "The rank correlation test")
    n = yi.size
    wi = 1.0 / vi
    theta = float(np.sum(wi * yi) / np.sum(wi))
    vb = 1.0 / float(np.sum(wi))
    x = (yi - theta) / np.sqrt(vi - vb)
    y = vi
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(n, 1)
    S = float(np.sum(sx[iu] * sy[iu]))
    T0 = n * (n - 1) / 2
    _, cx = np.unique(x, return_counts=True)
    _, cy = np.unique(y, return_counts=True)
    T1 = float(np.sum(cx * (cx - 1))) / 2
    T2 = float(np.sum(cy * (cy - 1))) / 2
    denom = math.sqrt((T0 - T1) * (T0 - T2))
    tau = S / denom if denom > 0 else math.nan
    ties = min(cx.size, cy.size) < n
    if exact and not ties:
        q = int(round((tau + 1) * n * (n - 1) / 4))
        if q > n * (n - 1) / 4:
            p = 1.0 - _kendall_exact_cdf(q - 1, n)
        else:
            p = _kendall_exact_cdf(q, n)
        return RankTestResult(k=n, tau=tau, p_value=min(2 * p, 1.0), exact=True,
                              statistic=float(q))
    xt, yt = cx[cx > 1].astype(float), cy[cy > 1].astype(float)
    v0 = n * (n - 1) * (2 * n + 5)
    vt = float(np.sum(xt * (xt - 1) * (2 * xt + 5)))
    vu = float(np.sum(yt * (yt - 1) * (2 * yt + 5)))
    v1 = float(np.sum(xt * (xt - 1))) * float(np.sum(yt * (yt - 1)))
    v2 = float(np.sum(xt * (xt - 1) * (xt - 2))) * float(np.sum(yt * (yt - 1) * (yt - 2)))
    var_s = ((v0 - vt - vu) / 18 + v1 / (2 * n * (n - 1))
             + (v2 / (9 * n * (n - 1) * (n - 2)) if n > 2 else 0.0))
    z = S / math.sqrt(var_s)
    p = float(2 * min(stats.norm.cdf(z), stats.norm.sf(z)))
    return RankTestResult(k=n, tau=tau, p_value=min(p, 1.0), exact=False, statistic=z)


# --------------------------------------------------------------------------------------------
# trim and fill
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrimFillResult:
    """Trim-and-fill: estimated number of missing studies ``k0`` on ``side`` and the estimate
    from the data augmented with the ``k0`` filled (mirrored) studies."""

    estimator: str
    side: str
    method: str
    k: int               # observed studies
    k0: int
    se_k0: float
    p_k0: float          # R0 only (NaN for L0)
    estimate: float
    se: float
    statistic: float
    p_value: float
    ci_low: float
    ci_high: float
    tau2: float
    q: float
    i2: float
    level: float
    yi: tuple = field(repr=False)       # observed + filled, observed first
    vi: tuple = field(repr=False)
    study: tuple = field(repr=False)
    filled: tuple = field(repr=False)   # bool per row

    @property
    def fill_yi(self) -> np.ndarray:
        return np.asarray(self.yi)[np.asarray(self.filled, dtype=bool)]

    @property
    def fill_vi(self) -> np.ndarray:
        return np.asarray(self.vi)[np.asarray(self.filled, dtype=bool)]

    @property
    def studies(self) -> pd.DataFrame:
        """Observed and filled studies (columns ``study, yi, vi, filled``)."""
        return pd.DataFrame({"study": list(self.study), "yi": list(self.yi),
                             "vi": list(self.vi), "filled": list(self.filled)})

    def __str__(self) -> str:
        se_txt = f"(SE = {self.se_k0:.4f})"
        lines = [f"Estimated number of missing studies on the {self.side} side: {self.k0} "
                 f"{se_txt}  [estimator {self.estimator}]"]
        if self.estimator == "R0":
            lines.append(f"Test of H0: no missing studies on the {self.side} side:      "
                         f"p-val = {_fmt_p(self.p_k0)}")
        model = ("Fixed-Effects Model" if self.method == "FE"
                 else f"Random-Effects Model (tau^2 estimator: {self.method})")
        lines += ["", f"{model}, k = {self.k + self.k0} ({self.k} observed + {self.k0} filled)"]
        if self.method != "FE":
            lines.append(f"tau^2 = {self.tau2:.4f}, I^2 = {self.i2:.2f}%")
        lines += ["", "estimate      se    zval    pval   ci.lb   ci.ub",
                  f"{self.estimate:8.4f} {self.se:7.4f} {self.statistic:7.4f} "
                  f"{_fmt_p(self.p_value):>7} {self.ci_low:7.4f} {self.ci_high:7.4f}", ""]
        return "\n".join(lines)

    def to_frame(self, analysis: str = "", outcome: str = "", scale: str = "") -> pd.DataFrame:
        """Schema rows: adjusted ``mu`` and ``tau2``, and ``k0`` (estimate = count)."""
        m = f"trimfill-{self.estimator}({self.method})"
        c = dict(analysis=analysis, outcome=outcome, source="classical", method=m, scale=scale)
        return results.frame([
            results.row(parameter="mu", estimate=self.estimate, se=self.se,
                        ci_low=self.ci_low, ci_high=self.ci_high, level=self.level,
                        interval="wald-z", statistic=self.statistic, p_value=self.p_value, **c),
            results.row(parameter="tau2", estimate=self.tau2, **c),
            results.row(parameter="k0", estimate=self.k0, se=self.se_k0, p_value=self.p_k0, **c),
        ])


def trim_and_fill(yi, vi=None, *, sei=None, method: str = "REML", estimator: str = "L0",
                  side: str | None = None, level: float = 0.95, maxiter: int = 100,
                  study=None) -> TrimFillResult:
    """Duval & Tweedie's trim-and-fill (metafor ``trimfill``).

    Parameters
    ----------
    method : str
        tau² estimator of the model (one of :data:`METHODS`; "FE" = fixed effect), used for the
        trimmed fits, the side detection and the final fit on the augmented data (z test).
    estimator : {"L0", "R0"}
    side : {"left", "right"} or None
        Side of the funnel where studies are missing. ``None``: as metafor, fit the model with
        ``sqrt(vi)`` as moderator; a negative coefficient means "right", otherwise "left".

    Returns
    -------
    TrimFillResult
    """
    method = _norm_method(method)
    _choice("estimator", estimator, ("L0", "R0"))
    if side is not None:
        _choice("side", side, ("left", "right"))
    yi0, vi0, labels = _prepare(yi, vi, sei, study, 2, "Trim-and-fill")
    quiet = _Quiet("trim-and-fill")
    with quiet:
        if side is None:
            side = "right" if _coef_sei(yi0, vi0, method)[0][1] < 0 else "left"
        res = _trimfill_core(yi0, vi0, labels, method, estimator, side, level, maxiter)
    return res


def _trimfill_core(yi0, vi0, labels, method, estimator, side, level, maxiter):
    y = -yi0 if side == "right" else yi0.copy()
    ix = np.argsort(y, kind="stable")
    y, v = y[ix], vi0[ix]
    k = y.size
    k0_sav, k0, it = -1, 0, 0
    while k0 != k0_sav:
        k0_sav = k0
        it += 1
        if it > maxiter:
            raise EstimationError(f"Trim-and-fill did not converge in {maxiter} iterations.")
        beta = _rma(y[: k - k0], v[: k - k0], method).estimate
        yc = y - beta
        r = stats.rankdata(np.abs(yc), method="ordinal")
        rs = np.sign(yc) * r
        if estimator == "R0":
            neg = -rs[rs < 0]
            k0 = (k - (neg.max() if neg.size else 0)) - 1
            se_k0 = math.sqrt(2 * max(0, k0) + 2)
        else:
            Sr = float(np.sum(rs[rs > 0]))
            k0 = (4 * Sr - k * (k + 1)) / (2 * k - 1)
            var_sr = (k * (k + 1) * (2 * k + 1) + 10 * k0 ** 3 + 27 * k0 ** 2 + 17 * k0
                      - 18 * k * k0 ** 2 - 18 * k * k0 + 6 * k ** 2 * k0) / 24
            # a negative variance gives NaN, as R's sqrt()
            se_k0 = 4 * math.sqrt(var_sr) / (2 * k - 1) if var_sr >= 0 else math.nan
        # R's round(): half to even, as np.round
        k0 = int(max(0, np.round(k0)))
        se_k0 = se_k0 if math.isnan(se_k0) else max(0.0, se_k0)  # R: max(0, NaN) is NaN
    if k0 > 0:
        mirrored = 2 * beta - y[k - k0:]          # on the (possibly flipped) scale
        fill_y = -mirrored if side == "right" else mirrored
        fill_v = v[k - k0:]
        yall = np.concatenate([yi0, fill_y])
        vall = np.concatenate([vi0, fill_v])
        filled = [False] * k + [True] * k0
        names = labels + [f"Filled {i + 1}" for i in range(k0)]
    else:
        yall, vall, filled, names = yi0, vi0, [False] * k, labels
    f = _rma(yall, vall, method, "z", level)
    if estimator == "R0":
        m = np.arange(-1, k0)
        p_k0 = float(1 - np.sum(special.comb(m + 1, m + 1) * 0.5 ** (m + 2)))
    else:
        p_k0 = math.nan
    return TrimFillResult(
        estimator=estimator, side=side, method=method, k=k, k0=k0, se_k0=float(se_k0),
        p_k0=p_k0, estimate=f.estimate, se=f.se, statistic=f.statistic, p_value=f.p,
        ci_low=f.ci_low, ci_high=f.ci_high, tau2=f.tau2, q=f.q, i2=f.i2, level=level,
        yi=tuple(map(float, yall)),
        vi=tuple(map(float, vall)), study=tuple(names), filled=tuple(filled))


# --------------------------------------------------------------------------------------------
# leave one out
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LeaveOneOutResult:
    """The model refitted with each study omitted in turn (metafor ``leave1out``).

    ``table`` columns: ``study, estimate, se, statistic, p_value, ci_low, ci_high, q, q_p, tau2,
    i2, h2`` (row i = study i omitted; ``i2`` in percent, metafor's definition).
    """

    method: str
    test: str
    level: float
    k: int
    table: pd.DataFrame = field(repr=False, compare=False)

    def __str__(self) -> str:
        t = self.table
        head = (f"Leave-one-out analysis ({'FE' if self.method == 'FE' else self.method} "
                f"model, {'t (Knapp-Hartung)' if self.test == 'knha' else 'z'} test, "
                f"k = {self.k}; each row omits the named study)\n\n")
        w = max(len("omitted"), *(len(s) for s in t["study"]))
        stat = "tval" if self.test == "knha" else "zval"
        lines = [f"{'omitted':<{w}} estimate      se {stat:>7}    pval   ci.lb   ci.ub"
                 f"        Q      Qp    tau2      I2"]
        for r in t.itertuples(index=False):
            lines.append(f"{r.study:<{w}} {r.estimate:8.4f} {r.se:7.4f} {r.statistic:7.4f} "
                         f"{_fmt_p(r.p_value):>7} {r.ci_low:7.4f} {r.ci_high:7.4f} "
                         f"{r.q:8.4f} {_fmt_p(r.q_p):>7} {r.tau2:7.4f} {r.i2:7.2f}")
        return head + "\n".join(lines) + "\n"

    def to_frame(self, analysis: str = "", outcome: str = "", scale: str = "") -> pd.DataFrame:
        """Schema rows per omitted study: ``mu[-study]`` and ``tau2[-study]``."""
        m = f"leave1out-{_method_label(self.method, self.test)}"
        rows = []
        for r in self.table.itertuples(index=False):
            c = dict(analysis=analysis, outcome=outcome, source="classical", method=m,
                     scale=scale)
            rows.append(results.row(
                parameter=f"mu[-{r.study}]", estimate=r.estimate, se=r.se, ci_low=r.ci_low,
                ci_high=r.ci_high, level=self.level,
                interval="t" if self.test == "knha" else "wald-z", statistic=r.statistic,
                df=(self.k - 2) if self.test == "knha" else None, p_value=r.p_value, **c))
            rows.append(results.row(parameter=f"tau2[-{r.study}]", estimate=r.tau2, **c))
        return results.frame(rows)


def leave_one_out(yi, vi=None, *, sei=None, method: str = "REML", test: str = "z",
                  level: float = 0.95, study=None) -> LeaveOneOutResult:
    """Refit the intercept-only model with each study omitted (metafor ``leave1out``).

    Parameters
    ----------
    method : str
        tau² estimator (:data:`METHODS`; "FE" = fixed effect).
    test : {"z", "knha"}
        Wald z or Knapp-Hartung t (``k - 2`` df after omission).
    """
    method = _norm_method(method)
    _choice("test", test, _TESTS)
    yi, vi, labels = _prepare(yi, vi, sei, study, 2, "Leave-one-out")
    k = yi.size
    recs = []
    with _Quiet("leave-one-out"):
        for i in range(k):
            keep = np.arange(k) != i
            f = _rma(yi[keep], vi[keep], method, test, level)
            if f is None:
                recs.append(dict(study=labels[i]))
                continue
            recs.append(dict(study=labels[i], estimate=f.estimate, se=f.se,
                             statistic=f.statistic, p_value=f.p, ci_low=f.ci_low,
                             ci_high=f.ci_high, q=f.q, q_p=f.q_p, tau2=f.tau2, i2=f.i2,
                             h2=f.h2))
    cols = ["study", "estimate", "se", "statistic", "p_value", "ci_low", "ci_high", "q", "q_p",
            "tau2", "i2", "h2"]
    return LeaveOneOutResult(method=method, test=test, level=level, k=k,
                             table=pd.DataFrame(recs, columns=cols))


# metafor's names
regtest = egger_test
ranktest = rank_test
trimfill = trim_and_fill
leave1out = leave_one_out
