"""Published estimate + CI (+ P) -> ``yi, sei`` on the analysis scale, and consistency checks.

A paper prints an estimate with a 95% CI and often a P value. To pool or audit it we need
``yi`` and ``sei`` on the scale the analysis used: the log scale for ratio measures (OR, RR, HR,
IRR, PETO), the natural scale otherwise (metafor/RevMan compute Wald CIs there):

    yi  = h(estimate),           h = log for ratios, identity otherwise
    sei = (h(high) - h(low)) / (2 z),   z = Φ⁻¹(1 - (1 - level)/2)   (1.959964 for 95%)

Without a CI, ``sei = |yi| / Φ⁻¹(1 - P/2)`` (two-sided z test).

:func:`check_published` tests whether the printed numbers agree with each other, allowing for
rounding: a number printed with ``d`` decimals may be off by ``0.5·10⁻ᵈ``. Every comparison is
done with interval arithmetic over those rounding intervals, so a finding means "no set of
unrounded numbers could have printed this":

1. CI order: low <= high.
2. Estimate inside its CI.
3. CI symmetric on the analysis scale: h(estimate) equals the CI midpoint (h(low)+h(high))/2.
4. P agrees with z = |h(estimate)|/sei (two-sided normal), given ``p_op`` ("<" means the printed P
   is an upper bound) and the printed decimals of P. When it does not, the P implied by the CI
   midpoint is reported too: agreement there points to a misprinted estimate.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import pandas as pd
from scipy import stats

from bayesmeta.exceptions import DataError, DataWarning

__all__ = ["RATIO_MEASURES", "z_crit", "to_analysis_scale", "check_published", "Verdict",
           "infer_decimals", "is_ratio"]

RATIO_MEASURES = ("OR", "RR", "HR", "IRR", "PETO", "LOGOR", "LOGRR")
_LINEAR = ("MD", "SMD", "RD", "MC", "GEN", "WMD")


def is_ratio(measure: str) -> bool:
    """True for ratio measures (analysed on the log scale)."""
    m = str(measure).upper()
    if m in RATIO_MEASURES:
        return True
    if m in _LINEAR:
        return False
    raise DataError(f"Invalid measure {measure!r}: must be one of "
                    f"{list(RATIO_MEASURES[:5]) + list(_LINEAR)}",
                    fix="Ratio measures (OR, RR, HR) are analysed on the log scale.")


def z_crit(level: float = 0.95) -> float:
    """Two-sided normal critical value for a CI of ``level`` (1.959964 for 0.95)."""
    if not 0 < level < 1:
        raise DataError(f"Invalid level {level!r}: must be in (0, 1)", fix="Use e.g. 0.95.")
    return float(stats.norm.isf((1 - level) / 2))


def infer_decimals(x) -> int:
    """Decimals of a number as its shortest repr shows them (``0.0004`` -> 4, ``2.5`` -> 1).

    A printed trailing zero ("0.10") is lost in a float; the inferred count is then smaller,
    which only widens the rounding tolerance (conservative).
    """
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return 0
    return max(0, -Decimal(repr(float(x))).normalize().as_tuple().exponent)


def _half(decimals) -> float:
    # half a unit of the last printed digit, plus float slack so that exact ties count as agreeing
    return 0.5 * 10.0 ** (-int(decimals)) * (1 + 1e-9) + 1e-12


def _isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA


# ---------------------------------------------------------------------------------------------
# back-conversion
# ---------------------------------------------------------------------------------------------
def _scalar_to_scale(estimate, ci_low, ci_high, measure, level, p, p_op):
    ratio = is_ratio(measure)
    z = z_crit(level)
    if _isnan(estimate):
        raise DataError("estimate is missing", column="estimate", fix="Give the estimate.")
    if ratio:
        for nm, v in (("estimate", estimate), ("ci_low", ci_low), ("ci_high", ci_high)):
            if not _isnan(v) and v <= 0:
                raise DataError(f"a ratio measure must be > 0, got {v}", column=nm,
                                fix="Give the ratio itself (e.g. OR 0.5), not its log.")
    h = math.log if ratio else (lambda v: float(v))
    yi = h(estimate)
    have_ci = not (_isnan(ci_low) or _isnan(ci_high))
    if have_ci:
        if ci_low > ci_high:
            raise DataError(f"CI lower bound {ci_low} is above the upper bound {ci_high}",
                            column="ci_low", fix="Swap the bounds, or check for a lost minus sign.")
        sei = (h(ci_high) - h(ci_low)) / (2 * z)
        if sei <= 0:
            raise DataError(f"CI [{ci_low}, {ci_high}] has zero width", column="ci_low",
                            fix="A zero-width CI gives no standard error; check the source.")
        return yi, sei
    if _isnan(p):
        raise DataError("neither a CI nor a P value is given", column="ci_low",
                        fix="Give ci_low and ci_high, or p.")
    if not 0 < p < 1:
        raise DataError(f"P must be in (0, 1) to give a standard error, got {p}", column="p",
                        fix="P = 1 or 0 carries no SE; give the CI instead.")
    if yi == 0:
        raise DataError("estimate is at the null, so P cannot give a standard error",
                        column="estimate", fix="Give the CI.")
    if p_op == "<":
        warnings.warn(f"P printed as '< {p}': the standard error derived from it is an upper "
                      "bound", DataWarning, stacklevel=3)
    elif p_op not in ("=", None):
        raise DataError(f"Invalid p_op {p_op!r}: must be '=' or '<'", column="p_op",
                        fix="Use '<' for P printed as an upper bound ('P < 0.001').")
    return yi, abs(yi) / float(stats.norm.isf(p / 2))


def to_analysis_scale(estimate, ci_low=None, ci_high=None, measure="MD", level=0.95, p=None,
                      p_op="="):
    """Back-convert a published estimate to ``(yi, sei)`` on the analysis scale.

    Parameters
    ----------
    estimate, ci_low, ci_high : float or array-like
        As printed (ratio scale for OR/RR/HR). Missing CI bounds (None/NaN) -> use ``p``.
    measure : str
        ``OR, RR, HR, IRR, PETO`` (log scale) or ``MD, SMD, RD, MC, GEN`` (natural scale).
    level : float
        CI level (0.95).
    p, p_op : float, str
        Two-sided P and its printed relation (``"="`` or ``"<"``; a bound gives an upper bound
        for sei, with a DataWarning). Used only when the CI is missing.

    If ``estimate`` is a DataFrame (columns ``estimate, ci_low, ci_high`` and optionally
    ``measure``, ``p``/``p_printed``, ``p_op``) a copy with ``yi, sei, vi`` added is returned.
    Array inputs give arrays.

    Examples
    --------
    >>> yi, sei = to_analysis_scale(2.47, 1.38, 4.43, "OR")
    >>> round(yi, 4), round(sei, 4)
    (0.9042, 0.2975)
    """
    if isinstance(estimate, pd.DataFrame):
        df = estimate
        meas = df["measure"] if "measure" in df.columns else pd.Series(measure, index=df.index)
        pcol = "p" if "p" in df.columns else ("p_printed" if "p_printed" in df.columns else None)
        yis, seis = [], []
        for i in range(len(df)):
            r = df.iloc[i]
            yi, sei = _scalar_to_scale(
                _num(r["estimate"]), _num(r.get("ci_low")), _num(r.get("ci_high")),
                meas.iloc[i], level, _num(r[pcol]) if pcol else None,
                r["p_op"] if "p_op" in df.columns else "=")
            yis.append(yi)
            seis.append(sei)
        out = df.copy()
        out["yi"] = yis
        out["sei"] = seis
        out["vi"] = np.square(seis)
        return out
    if np.ndim(estimate) == 0:
        return _scalar_to_scale(estimate, ci_low, ci_high, measure, level, p, p_op)
    b = np.broadcast_arrays(*(np.asarray(np.nan if v is None else v, dtype=float)
                              for v in (estimate, ci_low, ci_high, p)))
    pairs = [_scalar_to_scale(float(e), float(lo), float(hi), measure, level, float(pp), p_op)
             for e, lo, hi, pp in zip(*(x.ravel() for x in b))]
    yi = np.array([a for a, _ in pairs]).reshape(b[0].shape)
    sei = np.array([s for _, s in pairs]).reshape(b[0].shape)
    return yi, sei


def _num(v):
    if v is None or v is pd.NA:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


# ---------------------------------------------------------------------------------------------
# consistency check
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`check_published`; ``str(verdict)`` is ``"consistent"`` or the findings.

    Attributes
    ----------
    consistent : bool
    findings : tuple of str, e.g. ``"estimate outside its CI"``,
        ``"CI asymmetric on log scale (midpoint 0.930 vs log estimate 0.904)"``,
        ``"P disagrees (printed 0.0004, from estimate/SE 0.050; from CI midpoint 0.27)"``.
    yi, sei : estimate and SE on the analysis scale (sei from the CI; NaN without one).
    midpoint : CI midpoint on the analysis scale.
    asymmetry : |yi - midpoint| / CI half-width on the analysis scale (0 = symmetric).
    p_from_estimate, p_from_midpoint : two-sided z-test P of yi/sei and midpoint/sei.
    """

    consistent: bool
    findings: tuple[str, ...]
    measure: str
    scale: str
    yi: float
    sei: float
    midpoint: float
    asymmetry: float
    p_from_estimate: float
    p_from_midpoint: float
    printed: dict = field(default_factory=dict, compare=False)

    @property
    def verdict(self) -> str:
        return "consistent" if self.consistent else "; ".join(self.findings)

    def __str__(self) -> str:
        return self.verdict


def _interval(v, d):
    u = _half(d)
    return v - u, v + u


def _fmt_p(p: float) -> str:
    return f"{p:.2g}"


def check_published(estimate, ci_low=None, ci_high=None, measure="MD", *, p=None, p_op="=",
                    decimals=None, ci_decimals=None, p_decimals=None, level=0.95):
    """Check printed estimate, CI and P against each other, allowing for rounding.

    Parameters
    ----------
    estimate, ci_low, ci_high : printed numbers (ratio scale for OR/RR/HR).
    measure : analysis measure (ratio measures are checked on the log scale).
    p, p_op : printed two-sided P and its relation ("=" or "<").
    decimals, ci_decimals, p_decimals : printed decimals of the estimate, of the CI bounds (the
        fewer of the two) and of P. ``ci_decimals`` defaults to ``decimals``; when neither is
        given they are inferred from the numbers (conservative: "2.50" reads as 1 decimal).
    level : CI level.

    Returns
    -------
    Verdict, or for a DataFrame input (columns ``estimate, ci_low, ci_high`` and optionally
    ``measure, p_printed|p, p_op, est_decimals|decimals, ci_decimals, p_decimals``) a copy with
    columns ``verdict, consistent, yi, sei, asymmetry, p_from_estimate, p_from_midpoint``.

    Examples
    --------
    >>> str(check_published(-2.69, -4.19, 1.19, "MD", p=0.0004, decimals=2))
    'CI asymmetric (midpoint -1.500 vs estimate -2.690); P disagrees (printed 0.0004, from estimate/SE 0.05; from CI midpoint 0.27)'
    """
    if isinstance(estimate, pd.DataFrame):
        return _check_frame(estimate, measure=measure, level=level)
    est, lo, hi = _num(estimate), _num(ci_low), _num(ci_high)
    if est is None:
        raise DataError("estimate is missing", column="estimate", fix="Give the estimate.")
    ratio = is_ratio(measure)
    scale = "log" if ratio else "natural"
    d_e = infer_decimals(est) if decimals is None else int(decimals)
    have_ci = lo is not None and hi is not None
    if ci_decimals is not None:
        d_c = int(ci_decimals)
    elif decimals is not None:
        d_c = int(decimals)  # CIs are printed with the estimate's decimals
    else:
        d_c = min(infer_decimals(lo), infer_decimals(hi)) if have_ci else 0
    findings: list[str] = []
    printed = dict(estimate=est, ci_low=lo, ci_high=hi, p=p, p_op=p_op)
    nan = math.nan
    if ratio:
        for nm, v in (("estimate", est), ("ci_low", lo), ("ci_high", hi)):
            if v is not None and v <= 0:
                findings.append(f"ratio {nm} <= 0 ({v})")
        if findings:
            return Verdict(False, tuple(findings), str(measure), scale, nan, nan, nan, nan, nan,
                           nan, printed)
    h = math.log if ratio else (lambda v: v)

    def h_iv(lo_, hi_):  # image of a rounding interval under h (h increasing)
        if ratio:
            lo_ = max(lo_, 1e-300)
        return h(lo_), h(hi_)

    yi = h(est)
    if not have_ci:
        sei = nan
        if p is not None and not _isnan(p):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DataWarning)
                    _, sei = _scalar_to_scale(est, None, None, measure, level, p, p_op)
            except DataError:
                sei = nan
        return Verdict(True, (), str(measure), scale, yi, sei, nan, nan, nan, nan, printed)

    z = z_crit(level)
    # 1. order
    if lo > hi:
        findings.append(f"CI bounds reversed (low {lo:g} > high {hi:g})")
        return Verdict(False, tuple(findings), str(measure), scale, yi, nan, nan, nan, nan, nan,
                       printed)
    # 2. inside
    slack = 0.0 if d_e == d_c else _half(d_e) + _half(d_c)
    if est < lo - slack or est > hi + slack:
        findings.append(f"estimate outside its CI ({est:g} not in [{lo:g}, {hi:g}])")
    # 3. symmetry, by interval arithmetic over the rounding intervals
    e_lo, e_hi = h_iv(*_interval(est, d_e))
    l_lo, l_hi = h_iv(*_interval(lo, d_c))
    u_lo, u_hi = h_iv(*_interval(hi, d_c))
    mid = (h(lo) + h(hi)) / 2
    sei = (h(hi) - h(lo)) / (2 * z)
    mid_min, mid_max = (l_lo + u_lo) / 2, (l_hi + u_hi) / 2
    half_w = (h(hi) - h(lo)) / 2
    asym = abs(yi - mid) / half_w if half_w > 0 else (0.0 if yi == mid else math.inf)
    if e_hi < mid_min or e_lo > mid_max:
        if ratio:
            findings.append(f"CI asymmetric on log scale (midpoint {mid:.3f} vs log estimate "
                            f"{yi:.3f})")
        else:
            findings.append(f"CI asymmetric (midpoint {mid:.{d_c + 1}f} vs estimate "
                            f"{yi:.{d_e + 1}f})")
    # 4. P
    p_est = float(2 * stats.norm.sf(abs(yi) / sei)) if sei > 0 else nan
    p_mid = float(2 * stats.norm.sf(abs(mid) / sei)) if sei > 0 else nan
    if p is not None and not _isnan(p) and sei > 0:
        d_p = infer_decimals(p) if p_decimals is None else int(p_decimals)
        if p_op == "<":
            pr_lo, pr_hi = 0.0, float(p)
        elif p_op in ("=", None):
            pr_lo, pr_hi = max(0.0, p - _half(d_p)), p + _half(d_p)
        else:
            raise DataError(f"Invalid p_op {p_op!r}: must be '=' or '<'", column="p_op",
                            fix="Use '<' for P printed as an upper bound.")
        # range of |yi| and of sei over the rounding intervals
        a_min = 0.0 if e_lo <= 0 <= e_hi else min(abs(e_lo), abs(e_hi))
        a_max = max(abs(e_lo), abs(e_hi))
        s_min = max((u_lo - l_hi) / (2 * z), 1e-300)
        s_max = (u_hi - l_lo) / (2 * z)
        z_min, z_max = a_min / s_max, a_max / s_min
        pc_lo, pc_hi = 2 * stats.norm.sf(z_max), 2 * stats.norm.sf(z_min)
        if pc_hi < pr_lo or pc_lo > pr_hi:
            shown = f"{'< ' if p_op == '<' else ''}{p:.{d_p}f}"
            findings.append(f"P disagrees (printed {shown}, from estimate/SE {_fmt_p(p_est)}; "
                            f"from CI midpoint {_fmt_p(p_mid)})")
    return Verdict(not findings, tuple(findings), str(measure), scale, yi, sei, mid, asym, p_est,
                   p_mid, printed)


def _check_frame(df: pd.DataFrame, *, measure, level) -> pd.DataFrame:
    def col(*names):
        for n in names:
            if n in df.columns:
                return df[n]
        return None

    meas = col("measure")
    pcol = col("p", "p_printed")
    pop = col("p_op")
    d_e, d_c, d_p = col("est_decimals", "decimals"), col("ci_decimals"), col("p_decimals")
    verdicts = []
    for i in range(len(df)):
        r = df.iloc[i]
        g = lambda s: None if s is None else _num(s.iloc[i])  # noqa: E731
        dc = g(d_c) if d_c is not None else (g(d_e) if d_e is not None else None)
        verdicts.append(check_published(
            r["estimate"], r.get("ci_low"), r.get("ci_high"),
            meas.iloc[i] if meas is not None else measure,
            p=g(pcol), p_op=pop.iloc[i] if pop is not None else "=",
            decimals=g(d_e), ci_decimals=dc, p_decimals=g(d_p), level=level))
    out = df.copy()
    out["verdict"] = [v.verdict for v in verdicts]
    out["consistent"] = [v.consistent for v in verdicts]
    out["yi"] = [v.yi for v in verdicts]
    out["sei"] = [v.sei for v in verdicts]
    out["asymmetry"] = [v.asymmetry for v in verdicts]
    out["p_from_estimate"] = [v.p_from_estimate for v in verdicts]
    out["p_from_midpoint"] = [v.p_from_midpoint for v in verdicts]
    return out


def resolve_inconsistent(df: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Printed rows whose estimate, CI and P contradict each other: use the reading the P
    supports, and record it.

    If the printed P matches the CI midpoint (not the estimate), the estimate is the misprint:
    ``yi`` = the CI midpoint. If it matches the estimate (not the midpoint), the CI is the
    misprint: ``sei`` from the estimate and P. Rows without a printed P, or whose numbers
    agree, are used as printed. Column ``model_input`` says which reading each row uses
    (``"as printed"`` or the repair and its reason).

    ``df`` has ``estimate, ci_low, ci_high, yi, sei`` (from :func:`to_analysis_scale`) and
    optionally ``p_printed``/``p`` and ``p_op``.
    """
    df = df.copy()
    df["model_input"] = "as printed"
    pcol = "p_printed" if "p_printed" in df.columns else ("p" if "p" in df.columns else None)
    if pcol is None:
        return df
    for i, r in df.iterrows():
        p = _num(r.get(pcol))
        if p is None or not math.isfinite(p):
            continue
        op = str(r.get("p_op", "=") or "=")
        v = check_published(r["estimate"], r["ci_low"], r["ci_high"], measure, p=p, p_op=op)
        if v.consistent or not any(f.startswith("P disagrees") for f in v.findings):
            continue
        d_mid = abs(math.log(max(v.p_from_midpoint, 1e-300)) - math.log(p))
        d_est = abs(math.log(max(v.p_from_estimate, 1e-300)) - math.log(p))
        if d_mid < d_est:
            df.at[i, "yi"] = v.midpoint
            df.at[i, "model_input"] = (f"estimate misprinted: yi = CI midpoint {v.midpoint:.4g} "
                                       f"(the printed P {p:g} matches the CI, not the estimate)")
        else:
            _, sei = to_analysis_scale(r["estimate"], None, None, measure, p=p, p_op=op)
            df.at[i, "sei"] = sei
            df.at[i, "vi"] = sei ** 2
            df.at[i, "model_input"] = (f"CI misprinted: SE {sei:.4g} from the estimate and P "
                                       f"{p:g} (the printed CI does not match them)")
    return df
