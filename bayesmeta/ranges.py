"""Ranges of reported quantities over a sensitivity grid, so that no answer overclaims.

A sensitivity grid is a long table: one row per setting (a combination of levels of the axes,
e.g. ``rho`` x ``prior_set`` x ``bias``) and per group (e.g. ``time``), with one column per
reported quantity (``p_benefit``, ``p_threshold``, ...). :func:`answer_ranges` returns, for
every group and quantity, the value under the main setting and its lowest and highest value
over every axis jointly (``over="all"``) and over each axis alone with the others held at the
main setting (``over=<axis>``), with the settings where the extremes occur.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from bayesmeta.exceptions import SpecError

__all__ = ["answer_ranges"]


def _match(df: pd.DataFrame, setting: Mapping) -> pd.Series:
    m = pd.Series(True, index=df.index)
    for k, v in setting.items():
        m &= df[k].astype(str) == str(v)
    return m


def answer_ranges(grid: pd.DataFrame, quantities: Sequence[str], axes: Sequence[str], *,
                  main: Mapping, by: Sequence[str] = ("time",),
                  per_axis: bool = True) -> pd.DataFrame:
    """Range of each quantity over the sensitivity axes.

    Parameters
    ----------
    grid : DataFrame
        Columns ``by`` + ``axes`` + ``quantities``; one row per (group, setting).
    quantities : column names of the reported numbers (probabilities, risk differences, ...).
    axes : column names of the sensitivity axes.
    main : dict axis -> level of the main analysis (every axis must be given).
    by : grouping columns (each group gets its own ranges).
    per_axis : also report the range over each axis alone (others at ``main``).

    Returns
    -------
    DataFrame
        Columns ``by...``, ``quantity``, ``over`` ("all" or an axis), ``main`` (value under the
        main setting), ``low``, ``high``, ``low_at``, ``high_at`` (dicts axis -> level),
        ``n_settings``. NaN quantities are ignored; a group whose main setting is missing has
        ``main`` NaN.
    """
    quantities, axes, by = list(quantities), list(axes), list(by)
    missing = [c for c in by + axes + quantities if c not in grid.columns]
    if missing:
        raise SpecError(f"sensitivity grid lacks columns {missing}")
    if set(main) != set(axes):
        raise SpecError(f"main must give a level for every axis {axes}, got {list(main)}")
    rows = []
    groups = grid.groupby(by, sort=False) if by else [((), grid)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        at_main = g[_match(g, main)]
        views = [("all", g)]
        if per_axis:
            for ax in axes:
                others = {k: v for k, v in main.items() if k != ax}
                views.append((ax, g[_match(g, others)]))
        for q in quantities:
            mval = float(at_main[q].iloc[0]) if len(at_main) else np.nan
            for over, v in views:
                vals = v[q].astype(float)
                ok = vals.notna()
                if not ok.any():
                    continue
                vv = v[ok]
                i_lo, i_hi = vals[ok].idxmin(), vals[ok].idxmax()
                rows.append({**dict(zip(by, key)), "quantity": q, "over": over, "main": mval,
                             "low": float(vals[i_lo]), "high": float(vals[i_hi]),
                             "low_at": {a: vv.loc[i_lo, a] for a in axes},
                             "high_at": {a: vv.loc[i_hi, a] for a in axes},
                             "n_settings": int(ok.sum())})
    return pd.DataFrame(rows, columns=by + ["quantity", "over", "main", "low", "high",
                                            "low_at", "high_at", "n_settings"])
