"""Study-level effect sizes from summary data, like metafor's ``escalc``.

Measures (group 1 = experimental, group 2 = control; metafor's column names):

========  =============================  =================================================
measure   columns                        yi, vi
========  =============================  =================================================
MD        m1i sd1i n1i m2i sd2i n2i      m1-m2, sd1²/n1 + sd2²/n2
SMD       m1i sd1i n1i m2i sd2i n2i      Hedges' g = J·d (exact J, or RevMan 5's approx.)
OR        ai bi ci di (or ai n1i ci n2i) log odds ratio, 1/a+1/b+1/c+1/d
RR        ai bi ci di (or ai n1i ci n2i) log risk ratio, 1/a-1/n1+1/c-1/n2
RD        ai bi ci di (or ai n1i ci n2i) p1-p2, p1(1-p1)/n1 + p2(1-p2)/n2
PETO      ai bi ci di (or ai n1i ci n2i) (O-E)/V, 1/V   (per-study Peto log OR)
MC        mi sdi ni                      one-arm mean change: mi, sdi²/ni (metafor "MN")
GEN       yi and vi, or yi and sei       as given (vi = sei²)
========  =============================  =================================================

Continuity correction for 2x2 measures (``cc``, ``cc_policy``, ``drop00``) follows metafor's
``add``/``to``/``drop00``: the default (``cc_policy="only0"``, ``drop00=False``) adds 0.5 to all
four cells of every table with a zero cell, exactly as ``escalc`` does. ``drop00=True`` sets
tables with zero events (or all events) in both arms to missing (they carry no information
about OR/RR), as RevMan 5 and metafor's ``rma.mh`` do. Every correction or exclusion is
announced with a :class:`~bayesmeta.exceptions.DataWarning` naming the studies.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.special import gammaln

from bayesmeta.exceptions import DataError, DataWarning
from bayesmeta.io import MIN_VARIANCE
from bayesmeta.redundant import check_redundant_columns

MEASURES = ("MD", "SMD", "OR", "RR", "RD", "PETO", "MC", "GEN")
BINARY = ("OR", "RR", "RD", "PETO")
CC_POLICIES = ("only0", "all", "if0all", "none")
SMD_CORRECTIONS = ("exact", "revman5", "none")

#: analysis scale for each measure (ratio measures are analysed on the log scale)
SCALE = {"MD": "MD", "SMD": "SMD", "OR": "logOR", "RR": "logRR", "RD": "RD",
         "PETO": "logOR", "MC": "MC", "GEN": "GEN"}

REQUIRED = {
    "MD": ("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i"),
    "SMD": ("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i"),
    "MC": ("mi", "sdi", "ni"),
}


def hedges_j(m, kind: str = "exact"):
    """Small-sample correction factor J for Hedges' g with ``m = n1 + n2 - 2`` df.

    ``"exact"``: J = Γ(m/2) / (√(m/2) Γ((m-1)/2)) (Hedges 1981; metafor's ``escalc``).
    ``"revman5"``: J = 1 - 3/(4N - 9) with N = n1 + n2 = m + 2 (Deeks & Higgins 2010).
    ``"none"``: J = 1 (Cohen's d with pooled SD).
    """
    m = np.asarray(m, dtype=float)
    if kind == "exact":
        with np.errstate(invalid="ignore"):
            return np.exp(gammaln(m / 2) - 0.5 * np.log(m / 2) - gammaln((m - 1) / 2))
    if kind == "revman5":
        return 1.0 - 3.0 / (4.0 * (m + 2) - 9.0)
    if kind == "none":
        return np.ones_like(m)
    raise ValueError(f"smd_correction must be one of {SMD_CORRECTIONS}, got {kind!r}")


def _as_frame(data) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data.reset_index(drop=True).copy()
    if isinstance(data, Mapping):
        return pd.DataFrame({k: np.atleast_1d(np.asarray(v)) for k, v in data.items()})
    raise TypeError("data must be a pandas DataFrame or a mapping of column name -> array")


def _labels(df: pd.DataFrame) -> list[str]:
    if "study" in df.columns:
        return [str(s) for s in df["study"]]
    return [f"study {i + 1}" for i in range(len(df))]


def _names(labels, mask, limit: int = 8) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(labels[i] for i in idx[:limit])
    return shown + (f" and {len(idx) - limit} more" if len(idx) > limit else "")


def _num(df, col, file=None):
    """Column ``col`` as float; DataError naming the first non-numeric cell."""
    if col not in df.columns:
        raise DataError(f"missing column '{col}'", file=file, column=col,
                        fix="add the column (metafor's vocabulary) or choose another measure")
    s = df[col]
    out = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(np.isnan(out) & s.notna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise DataError(f"not a number: {s.iloc[i]!r}", file=file, row=i + 2, column=col)
    return out


def _check(cond_bad, df, col, problem, file=None):
    bad = np.flatnonzero(cond_bad)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{problem}, got {df[col].iloc[i]!r}", file=file, row=i + 2, column=col)


def _two_by_two(df, file=None):
    """Return ai, bi, ci, di from (ai, bi, ci, di) or (ai, n1i, ci, n2i)."""
    ai, ci = _num(df, "ai", file), _num(df, "ci", file)
    if "bi" in df.columns and "di" in df.columns:
        bi, di = _num(df, "bi", file), _num(df, "di", file)
    elif "n1i" in df.columns and "n2i" in df.columns:
        n1, n2 = _num(df, "n1i", file), _num(df, "n2i", file)
        _check(n1 < ai, df, "n1i", "n1i must be >= ai (events cannot exceed group size)", file)
        _check(n2 < ci, df, "n2i", "n2i must be >= ci (events cannot exceed group size)", file)
        bi, di = n1 - ai, n2 - ci
    else:
        raise DataError("2x2 measures need columns ai, bi, ci, di or ai, n1i, ci, n2i",
                        file=file, column="bi/n1i",
                        fix="add the non-event counts (bi, di) or the group sizes (n1i, n2i)")
    for name, x in (("ai", ai), ("bi", bi), ("ci", ci), ("di", di)):
        col = name if name in df.columns else ("n1i" if name == "bi" else "n2i")
        _check(x < 0, df, col, f"{name} must be a count >= 0", file)
        _check(np.abs(x - np.round(x)) > 1e-9, df, col, f"{name} must be a whole number", file)
    return ai, bi, ci, di


def _refuse_tiny_variance(df, vi, measure, file=None):
    """A sampling variance below :data:`bayesmeta.io.MIN_VARIANCE` (e.g. ``vi = 1e-320``, or an
    SD of 1e-60) makes the inverse-variance weights overflow: refuse the row."""
    tiny = np.flatnonzero(np.isfinite(vi) & (vi < MIN_VARIANCE))
    if not tiny.size:
        return
    i = int(tiny[0])
    col = {"MD": "sd1i", "SMD": "sd1i", "MC": "sdi"}.get(
        measure, "vi" if "vi" in df.columns else ("sei" if "sei" in df.columns else None))
    rows = df.attrs.get("rows")
    row = rows[i] if rows is not None and len(rows) == len(df) else i + 2
    label = f" (study {df['study'].iloc[i]!r})" if "study" in df.columns else ""
    raise DataError(f"sampling variance {vi[i]:.3g} is too small to compute with (its inverse "
                    f"weight overflows; vi must be >= {MIN_VARIANCE:g}){label}", file=file,
                    row=row, column=col,
                    fix="Check the value against the source: a variance this small is a typing "
                        "error (a lost exponent?), not a measurement.")


def continuity_correct(ai, bi, ci, di, *, cc=0.5, cc_policy="only0", drop00=False,
                       measure="OR", labels=None, warn=True):
    """Apply a continuity-correction policy to 2x2 counts.

    Returns ``(a, b, c, d, corrected_mask, dropped_mask)``; dropped tables get NaN cells.
    """
    if cc_policy not in CC_POLICIES:
        raise ValueError(f"cc_policy must be one of {CC_POLICIES}, got {cc_policy!r}")
    if cc < 0:
        raise ValueError(f"cc must be >= 0, got {cc}")
    a, b, c, d = (np.asarray(x, dtype=float).copy() for x in (ai, bi, ci, di))
    k = a.size
    labels = labels or [f"study {i + 1}" for i in range(k)]
    finite = np.isfinite(a) & np.isfinite(b) & np.isfinite(c) & np.isfinite(d)
    dbl = finite & (((a == 0) & (c == 0)) | ((b == 0) & (d == 0)))
    dropped = dbl if drop00 else np.zeros(k, bool)
    anyzero = finite & ~dropped & ((a == 0) | (b == 0) | (c == 0) | (d == 0))
    if cc_policy == "only0":
        corr = anyzero
    elif cc_policy == "all":
        corr = finite & ~dropped
    elif cc_policy == "if0all":
        corr = (finite & ~dropped) if anyzero.any() else np.zeros(k, bool)
    else:
        corr = np.zeros(k, bool)
    if cc == 0:
        corr = np.zeros(k, bool)
    for x in (a, b, c, d):
        x[corr] += cc
        x[dropped] = np.nan
    if warn and dropped.any():
        warnings.warn(
            f"{int(dropped.sum())} stud{'y' if dropped.sum() == 1 else 'ies'} with zero events "
            f"(or all events) in both arms excluded from {measure}: {_names(labels, dropped)}",
            DataWarning, stacklevel=3)
    if warn and corr.any() and cc_policy in ("only0", "if0all"):
        warnings.warn(
            f"{cc:g} added to every cell of {int(corr.sum())} 2x2 table(s) "
            f"({'tables with a zero cell' if cc_policy == 'only0' else 'all tables, because some had a zero cell'})"
            f" for {measure}: {_names(labels, corr)}",
            DataWarning, stacklevel=3)
    if warn and cc_policy == "none":
        z = anyzero & ~dropped
        if z.any():
            warnings.warn(
                f"{int(z.sum())} table(s) with a zero cell and no continuity correction give "
                f"an undefined {measure} (set to missing): {_names(labels, z)}",
                DataWarning, stacklevel=3)
    return a, b, c, d, corr, dropped


def _refuse_all_double_zero(ai, bi, ci, di, measure, file=None):
    """OR/RR are not estimable when every table has zero (or all) events in both arms: any
    value would come from the continuity correction alone (0.5 everywhere gives log 1 = 0)."""
    a, b, c, d = (np.asarray(x, dtype=float) for x in (ai, bi, ci, di))
    finite = np.isfinite(a) & np.isfinite(b) & np.isfinite(c) & np.isfinite(d)
    dbl = ((a == 0) & (c == 0)) | ((b == 0) & (d == 0))
    n = int(finite.sum())
    if n and dbl[finite].all():
        what = ("zero events" if (a[finite] == 0).all() and (c[finite] == 0).all()
                else "zero events (or all events)")
        raise DataError(
            f"all {n} stud{'y has' if n == 1 else 'ies have'} {what} in both arms: the "
            f"{measure} is not estimable (any value would come from the continuity correction "
            f"alone)", file=file,
            fix="Use the risk difference (--measure RD), which is defined (0) for such tables.")


def escalc(measure: str, data=None, *, cc: float = 0.5, cc_policy: str = "only0",
           drop00: bool = False, smd_correction: str = "exact", smd_vtype: str | None = None,
           file=None, **arrays) -> pd.DataFrame:
    """Compute study-level effect sizes ``yi`` and sampling variances ``vi``.

    Parameters
    ----------
    measure : {"MD", "SMD", "OR", "RR", "RD", "PETO", "MC", "GEN"}
    data : DataFrame or mapping, optional
        Columns in metafor's vocabulary (see module docstring). Columns can also be given
        as keyword arrays (``escalc("MD", m1i=..., ...)``).
    cc : float
        Continuity correction added to 2x2 cells (metafor ``add``; default 0.5).
    cc_policy : {"only0", "all", "if0all", "none"}
        metafor's ``to``: which tables get ``cc`` (default: tables with a zero cell).
    drop00 : bool
        Set tables with zero (or all) events in both arms to missing (metafor ``drop00``).
    smd_correction : {"exact", "revman5", "none"}
        Hedges' J: exact gamma-function form (metafor), RevMan 5's ``1 - 3/(4N-9)``, or none.
    smd_vtype : {"LS", "revman5"}, optional
        SMD variance: metafor's large-sample ``1/n1 + 1/n2 + g²/(2(n1+n2))`` ("LS", default
        with ``smd_correction="exact"``) or RevMan 5's ``N/(n1 n2) + g²/(2(N-3.94))``
        (default with ``smd_correction="revman5"``).
    file : str, optional
        Source file name, used in error messages.

    Returns
    -------
    DataFrame
        The input columns plus ``yi``, ``vi`` (and ``sei`` = √vi). Rows with missing input
        get NaN ``yi``/``vi`` and a :class:`DataWarning`; rows are never silently removed.
        ``df.attrs`` holds ``measure`` and ``scale``.

    Raises
    ------
    DataError
        Non-numeric, negative or impossible inputs (located by row and column), missing
        columns, ``vi <= 0`` / ``sei <= 0`` for GEN.

    Notes
    -----
    Hedges' g (metafor ``escalc(measure="SMD")``): with pooled SD
    :math:`s_p^2 = ((n_1-1)s_1^2 + (n_2-1)s_2^2)/(n_1+n_2-2)`,
    :math:`g = J(m)(m_1 - m_2)/s_p`.
    Peto (Yusuf et al. 1985): :math:`O-E = a - n_1(a+c)/N`,
    :math:`V = (a+c)(b+d)n_1n_2/(N^2(N-1))`, yi = (O-E)/V, vi = 1/V (after continuity
    correction, as metafor's ``escalc``; :func:`bayesmeta.classical.rma_peto` pools raw counts).
    """
    measure = str(measure).upper()
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    if data is None:
        data = {}
    df = _as_frame(data) if len(data) or not arrays else pd.DataFrame()
    for k_, v in arrays.items():
        df[k_] = np.atleast_1d(np.asarray(v))
    labels = _labels(df)
    k = len(df)
    check_redundant_columns(df, measure, file=file)

    if measure in ("MD", "SMD"):
        m1, s1, n1, m2, s2, n2 = (_num(df, c, file) for c in REQUIRED[measure])
        for name, x in (("sd1i", s1), ("sd2i", s2)):
            _check(x < 0, df, name, "standard deviation must be >= 0", file)
        for name, x in (("n1i", n1), ("n2i", n2)):
            _check(x < 1, df, name, "group size must be >= 1", file)
        if measure == "MD":
            yi = m1 - m2
            vi = s1 ** 2 / n1 + s2 ** 2 / n2
        else:
            if smd_correction not in SMD_CORRECTIONS:
                raise ValueError(f"smd_correction must be one of {SMD_CORRECTIONS}")
            vtype = smd_vtype or ("revman5" if smd_correction == "revman5" else "LS")
            if vtype not in ("LS", "revman5"):
                raise ValueError("smd_vtype must be 'LS' or 'revman5'")
            _check((n1 + n2) < 3, df, "n2i", "SMD needs n1i + n2i >= 3", file)
            m = n1 + n2 - 2
            sp = np.sqrt(((n1 - 1) * s1 ** 2 + (n2 - 1) * s2 ** 2) / m)
            _check(sp == 0, df, "sd1i", "SMD needs a pooled SD > 0", file)
            yi = hedges_j(m, smd_correction) * (m1 - m2) / sp
            nn = n1 + n2
            if vtype == "LS":
                vi = 1 / n1 + 1 / n2 + yi ** 2 / (2 * nn)
            else:
                vi = nn / (n1 * n2) + yi ** 2 / (2 * (nn - 3.94))
    elif measure == "MC":
        mi, sdi, ni = (_num(df, c, file) for c in REQUIRED["MC"])
        _check(sdi < 0, df, "sdi", "standard deviation must be >= 0", file)
        _check(ni < 1, df, "ni", "sample size must be >= 1", file)
        yi, vi = mi, sdi ** 2 / ni
    elif measure == "GEN":
        yi = _num(df, "yi", file)
        if "vi" in df.columns:
            vi = _num(df, "vi", file)
            _check(vi <= 0, df, "vi", "sampling variance must be > 0", file)
        elif "sei" in df.columns:
            sei = _num(df, "sei", file)
            _check(sei <= 0, df, "sei", "standard error must be > 0", file)
            vi = sei ** 2
        else:
            raise DataError("GEN needs column 'vi' or 'sei'", file=file, column="vi",
                            fix="add the sampling variance (vi) or standard error (sei)")
    else:
        ai, bi, ci, di = _two_by_two(df, file)
        if measure in ("OR", "RR"):
            _refuse_all_double_zero(ai, bi, ci, di, measure, file)
        a, b, c, d, _, _ = continuity_correct(ai, bi, ci, di, cc=cc, cc_policy=cc_policy,
                                              drop00=drop00, measure=measure, labels=labels)
        n1, n2 = a + b, c + d
        with np.errstate(divide="ignore", invalid="ignore"):
            if measure == "OR":
                yi = np.log(a * d / (b * c))
                vi = 1 / a + 1 / b + 1 / c + 1 / d
            elif measure == "RR":
                yi = np.log((a / n1) / (c / n2))
                vi = 1 / a - 1 / n1 + 1 / c - 1 / n2
            elif measure == "RD":
                p1, p2 = a / n1, c / n2
                yi = p1 - p2
                vi = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
            else:  # PETO
                nn = n1 + n2
                oe = a - n1 * (a + c) / nn
                v = (a + c) * (b + d) * n1 * n2 / (nn ** 2 * (nn - 1))
                yi, vi = oe / v, 1 / v
        bad = ~np.isfinite(yi) | ~np.isfinite(vi) | (vi <= 0)
        yi = np.where(bad, np.nan, yi)
        vi = np.where(bad, np.nan, vi)

    yi = np.asarray(yi, dtype=float)
    vi = np.asarray(vi, dtype=float)
    _refuse_tiny_variance(df, vi, measure, file)
    miss = np.isnan(yi) | np.isnan(vi)
    if measure not in BINARY:
        if miss.any():
            warnings.warn(f"{int(miss.sum())} stud{'y has' if miss.sum() == 1 else 'ies have'} "
                          f"missing inputs; yi/vi set to NaN: {_names(labels, miss)}",
                          DataWarning, stacklevel=2)
    out = df.copy()
    out["yi"] = yi
    out["vi"] = vi
    out["sei"] = np.sqrt(vi)
    out.attrs["measure"] = measure
    out.attrs["scale"] = SCALE[measure]
    assert len(out) == k
    return out


def revman5_options(measure: str) -> dict:
    """escalc keyword options that reproduce RevMan 5's study-level effect sizes."""
    measure = measure.upper()
    if measure in ("OR", "RR"):
        return dict(cc=0.5, cc_policy="only0", drop00=True)
    if measure == "RD":
        return dict(cc=0.5, cc_policy="only0", drop00=False)
    if measure == "SMD":
        return dict(smd_correction="revman5", smd_vtype="revman5")
    return {}


__all__ = ["escalc", "hedges_j", "continuity_correct", "revman5_options", "MEASURES",
           "SCALE", "CC_POLICIES", "SMD_CORRECTIONS"]

