"""Redundant columns must agree: a contradiction is an error, never a silent choice.

A study table often carries the same information twice: events and non-events *and* group
sizes (``ai + bi = n1i``), a variance *and* a standard error (``vi = sei²``), a one-arm SD *and*
the SE of the mean (``sei = sdi / sqrt(ni)``), two means *and* their difference (``yi = m1i -
m2i``, measure MD), or a printed estimate and CI *and* the analysis-scale ``yi``/``sei`` derived
from them. The analysis uses one of the two; when they disagree, the numbers depend on which
one, so :func:`check_redundant_columns` and :func:`check_published_redundant` refuse the row
with a :class:`~bayesmeta.exceptions.DataError` naming the row and both columns.

Counts are compared exactly (they are whole numbers). Every other comparison allows for the
printed precision: a number written with ``d`` decimals may be off by half a unit of its last
digit, and two columns contradict each other only when no pair of unrounded values within
those rounding intervals satisfies the identity (interval arithmetic, as in
:mod:`bayesmeta.published`).
"""

from __future__ import annotations

import math
from decimal import Decimal
from statistics import NormalDist

import numpy as np
import pandas as pd

from bayesmeta.exceptions import DataError

__all__ = ["check_redundant_columns", "check_mean_difference", "check_published_redundant"]

_RATIO = ("OR", "RR", "HR", "IRR", "PETO", "LOGOR", "LOGRR")
_Z95 = NormalDist().inv_cdf(0.975)


def _rows(df: pd.DataFrame) -> list[int]:
    rows = df.attrs.get("rows")
    if rows is not None and len(rows) == len(df):
        return list(rows)
    return list(range(2, len(df) + 2))


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def _half(x: float) -> float:
    """Half a unit of the last decimal ``x`` is written with (its shortest repr; 0.5 for a
    whole number), plus slack for binary floating point."""
    if not math.isfinite(x):
        return 0.0
    d = max(0, -Decimal(repr(float(x))).normalize().as_tuple().exponent)
    return 0.5 * 10.0 ** (-d) * (1 + 1e-9) + abs(x) * 1e-12


def _study(df, i) -> str:
    return f" (study {df['study'].iloc[i]!r})" if "study" in df.columns else ""


def _g(x: float) -> str:
    return f"{x:.6g}"


def _fail(df, rows, i, file, column, problem, fix):
    raise DataError(problem + _study(df, i), file=file, row=rows[i], column=column, fix=fix)


def _disjoint(a_lo, a_hi, b_lo, b_hi) -> bool:
    return a_hi < b_lo or b_hi < a_lo


def check_redundant_columns(df: pd.DataFrame, measure: str | None = None, *,
                            file=None) -> pd.DataFrame:
    """Refuse rows whose redundant columns contradict each other; returns ``df`` unchanged.

    Checked whenever the columns are present (a cell missing in a row skips that row):

    - ``ai + bi = n1i`` and ``ci + di = n2i`` (exactly: counts);
    - ``vi = sei²``;
    - ``sei = sdi / sqrt(ni)`` and ``vi = sdi² / ni`` (one-arm data with an SE or variance);
    - with ``measure="MD"``: ``yi = m1i - m2i`` (:func:`check_mean_difference`).
    """
    file = file or df.attrs.get("file")
    rows = _rows(df)
    cols = set(map(str, df.columns))
    for ev, non, tot, arm in (("ai", "bi", "n1i", 1), ("ci", "di", "n2i", 2)):
        if {ev, non, tot} <= cols:
            a, b, n = _num(df, ev), _num(df, non), _num(df, tot)
            ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(n)
            bad = np.flatnonzero(ok & (a + b != n))
            if bad.size:
                i = int(bad[0])
                _fail(df, rows, i, file, tot,
                      f"{ev} + {non} = {_g(a[i])} + {_g(b[i])} = {_g(a[i] + b[i])} contradicts "
                      f"{tot} = {_g(n[i])} (group {arm} events plus non-events must equal the "
                      "group size)",
                      f"Correct {ev}, {non} or {tot} against the source, or delete one of the "
                      f"redundant columns ({non} or {tot}).")
    if {"vi", "sei"} <= cols:
        v, s = _num(df, "vi"), _num(df, "sei")
        for i in np.flatnonzero(np.isfinite(v) & np.isfinite(s) & (s > 0) & (v > 0)):
            hs, hv = _half(s[i]), _half(v[i])
            s_lo = max(s[i] - hs, 0.0)
            if _disjoint(s_lo * s_lo, (s[i] + hs) ** 2, v[i] - hv, v[i] + hv):
                _fail(df, rows, int(i), file, "vi",
                      f"vi = {_g(v[i])} contradicts sei = {_g(s[i])} (sei² = "
                      f"{_g(s[i] * s[i])}; the variance is the squared standard error)",
                      "Correct vi or sei against the source (an SD typed as SE?), or delete "
                      "one of the two columns.")
    if {"sdi", "ni"} <= cols:
        sd, n = _num(df, "sdi"), _num(df, "ni")
        for col in ("sei", "vi"):
            if col not in cols:
                continue
            x = _num(df, col)
            for i in np.flatnonzero(np.isfinite(sd) & np.isfinite(n) & (n > 0) & (sd > 0)
                                    & np.isfinite(x) & (x > 0)):
                hsd, hx = _half(sd[i]), _half(x[i])
                root = math.sqrt(n[i])
                lo, hi = max(sd[i] - hsd, 0.0) / root, (sd[i] + hsd) / root
                if col == "vi":
                    lo, hi = lo * lo, hi * hi
                if _disjoint(lo, hi, x[i] - hx, x[i] + hx):
                    want = sd[i] / root if col == "sei" else sd[i] ** 2 / n[i]
                    what = "sdi / sqrt(ni)" if col == "sei" else "sdi² / ni"
                    _fail(df, rows, int(i), file, col,
                          f"{col} = {_g(x[i])} contradicts sdi = {_g(sd[i])} with ni = "
                          f"{_g(n[i])} ({what} = {_g(want)})",
                          f"Correct {col}, sdi or ni against the source (an SE typed as SD, "
                          f"or the reverse?), or delete the {col} column.")
    if measure is not None and str(measure).upper() == "MD":
        check_mean_difference(df, file=file)
    return df


def check_mean_difference(df: pd.DataFrame, *, file=None) -> pd.DataFrame:
    """For measure MD: a ``yi`` column next to ``m1i``/``m2i`` must equal ``m1i - m2i`` within
    the printed precision (the analysis recomputes yi from the means)."""
    file = file or df.attrs.get("file")
    if not {"yi", "m1i", "m2i"} <= set(map(str, df.columns)):
        return df
    rows = _rows(df)
    y, m1, m2 = _num(df, "yi"), _num(df, "m1i"), _num(df, "m2i")
    for i in np.flatnonzero(np.isfinite(y) & np.isfinite(m1) & np.isfinite(m2)):
        d = m1[i] - m2[i]
        tol = _half(y[i]) + _half(m1[i]) + _half(m2[i])
        if abs(y[i] - d) > tol:
            _fail(df, rows, int(i), file, "yi",
                  f"yi = {_g(y[i])} contradicts m1i - m2i = {_g(m1[i])} - {_g(m2[i])} = "
                  f"{_g(d)} (measure MD)",
                  "Correct yi or the means against the source (arms swapped?), or delete the "
                  "yi column: the mean difference is computed from the means.")
    return df


def check_published_redundant(df: pd.DataFrame, ratio, *, file=None) -> pd.DataFrame:
    """Published rows that also carry ``yi`` and/or ``sei``/``vi``: on the analysis scale (log
    for ratio measures, ``ratio`` per row) ``yi`` must equal the estimate and ``sei`` the SE
    implied by the 95% CI, ``(h(ci_high) - h(ci_low)) / (2 * 1.959964)``, within the printed
    precision of every number involved."""
    file = file or df.attrs.get("file")
    cols = set(map(str, df.columns))
    if not ({"yi", "sei", "vi"} & cols) or not {"estimate", "ci_low", "ci_high"} <= cols:
        return df
    rows = _rows(df)
    est, lo, hi = _num(df, "estimate"), _num(df, "ci_low"), _num(df, "ci_high")
    ratio = np.broadcast_to(np.asarray(ratio, bool), est.shape)

    def image(x, h, is_ratio):  # h applied to a rounding interval
        a, b = x - h, x + h
        if is_ratio:
            return (math.log(a) if a > 0 else -math.inf), math.log(b)
        return a, b

    for i in range(len(df)):
        r = bool(ratio[i])
        if not (np.isfinite(est[i]) and (not r or est[i] > 0)):
            continue
        if "yi" in cols:
            y = _num(df, "yi")[i]
            if np.isfinite(y):
                e_lo, e_hi = image(est[i], _half(est[i]), r)
                hy = _half(y)
                if _disjoint(e_lo, e_hi, y - hy, y + hy):
                    scale = "log(estimate)" if r else "estimate"
                    _fail(df, rows, i, file, "yi",
                          f"yi = {_g(y)} contradicts the published estimate {_g(est[i])} "
                          f"({scale} = {_g(math.log(est[i]) if r else est[i])} on the "
                          "analysis scale)",
                          "Correct yi or the estimate against the source (yi of a ratio "
                          "measure is its log), or delete the yi column.")
        have_ci = np.isfinite(lo[i]) and np.isfinite(hi[i]) and (not r or lo[i] > 0)
        if not have_ci:
            continue
        for col in ("sei", "vi"):
            if col not in cols:
                continue
            x = _num(df, col)[i]
            if not (np.isfinite(x) and x > 0):
                continue
            l_lo, l_hi = image(lo[i], _half(lo[i]), r)
            u_lo, u_hi = image(hi[i], _half(hi[i]), r)
            s_lo, s_hi = max((u_lo - l_hi) / (2 * _Z95), 0.0), (u_hi - l_lo) / (2 * _Z95)
            if col == "vi":
                s_lo, s_hi = s_lo * s_lo, s_hi * s_hi
            hx = _half(x)
            if _disjoint(s_lo, s_hi, x - hx, x + hx):
                h = math.log if r else float
                implied = (h(hi[i]) - h(lo[i])) / (2 * _Z95)
                implied = implied if col == "sei" else implied ** 2
                _fail(df, rows, i, file, col,
                      f"{col} = {_g(x)} contradicts the published 95% CI [{_g(lo[i])}, "
                      f"{_g(hi[i])}] (which implies {col} = {_g(implied)} on the analysis "
                      "scale)",
                      f"Correct {col} or the CI against the source (a CI of another level?), "
                      f"or delete the {col} column.")
    return df
