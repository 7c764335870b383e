"""The one table schema shared by published, classical and Bayesian results.

Every result object converts to a :class:`pandas.DataFrame` with exactly the columns in
:data:`SCHEMA`, so rows from different sources can be concatenated and set side by side.
Numbers are stored unrounded; rounding happens only when printing.

Columns
-------
analysis : str       name of the analysis (spec name or free text)
outcome : str        outcome, e.g. "survival"
source : str         "published" | "classical" | "bayesian"
method : str         e.g. "IV-FE", "DL", "REML+KNHA", "exact-NNHM", "nested-MCMC"
parameter : str      e.g. "mu", "tau", "tau2", "theta_new", "theta[Amer 2011]", "contrast"
subgroup : str       subgroup level or "" (overall)
time : str           follow-up time label or ""
estimate : float     point estimate (posterior mean for Bayesian rows)
se : float           standard error (posterior SD for Bayesian rows)
ci_low, ci_high : float   interval bounds on the analysis scale
level : float        interval probability, e.g. 0.95
interval : str       "wald-z" | "t" | "eti" | "hdi" | "published" | "q-profile"
scale : str          analysis scale: "MD", "SMD", "logOR", "logRR", "RD", "MC", "GEN"
statistic : float    z or t statistic (classical), NaN otherwise
df : float           degrees of freedom of a t statistic, NaN under z
p_value : float      two-sided p (classical/published), NaN for Bayesian rows
median : float       posterior median (Bayesian), NaN otherwise
mcse : float         Monte Carlo SE of the mean (MCMC); 0 for exact engines; NaN classical
ess_bulk : float     bulk ESS (MCMC), NaN otherwise
r_hat : float        R-hat (MCMC), NaN otherwise
flag : str           "" when there is nothing to report; "NOT CLEAN" for an MCMC fit that failed
                     its diagnostics (also in ``method``); "NOT CONVERGED" for an iterative
                     classical estimator that stopped at its iteration limit. Filter on it
                     before quoting a number: ``df[df.flag == ""]``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SCHEMA: tuple[str, ...] = (
    "analysis", "outcome", "source", "method", "parameter", "subgroup", "time",
    "estimate", "se", "ci_low", "ci_high", "level", "interval", "scale",
    "statistic", "df", "p_value", "median", "mcse", "ess_bulk", "r_hat", "flag",
)
_STR_COLS = ("analysis", "outcome", "source", "method", "parameter", "subgroup", "time",
             "interval", "scale", "flag")
SOURCES = ("published", "classical", "bayesian")


def row(**values) -> dict:
    """One schema row; missing numeric fields are NaN, missing text fields ''.

    Raises ``KeyError`` for a field that is not in :data:`SCHEMA` (a programming error).
    """
    unknown = set(values) - set(SCHEMA)
    if unknown:
        raise KeyError(f"not schema columns: {sorted(unknown)}")
    out = {}
    for col in SCHEMA:
        v = values.get(col)
        if col in _STR_COLS:
            out[col] = "" if v is None else str(v)
        else:
            out[col] = math.nan if v is None else float(v)
    return out


def frame(rows) -> pd.DataFrame:
    """Build a schema-conforming DataFrame from dict rows (see :func:`row`)."""
    df = pd.DataFrame([r if set(r) == set(SCHEMA) else row(**r) for r in rows],
                      columns=list(SCHEMA))
    return check_frame(df)


def check_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Check that ``df`` has exactly the schema columns with the right kinds; return it."""
    if tuple(df.columns) != SCHEMA:
        raise ValueError(f"columns {list(df.columns)} differ from schema {list(SCHEMA)}")
    bad = set(df["source"]) - set(SOURCES)
    if bad:
        raise ValueError(f"unknown source(s) {sorted(bad)}; must be one of {SOURCES}")
    for col in SCHEMA:
        if col not in _STR_COLS and not np.issubdtype(df[col].dtype, np.floating):
            df[col] = df[col].astype(float)
    return df


def concat(*frames: pd.DataFrame) -> pd.DataFrame:
    """Stack schema frames (published, classical, Bayesian) into one table."""
    return check_frame(pd.concat([check_frame(f) for f in frames], ignore_index=True))


def netcdf_ready(dt):
    """A posterior DataTree ready for NetCDF: text (object) variables, which h5netcdf cannot
    store, dropped from every group (used by ``save`` of results and by the report)."""
    return dt.map_over_datasets(
        lambda ds: ds.drop_vars([v for v in ds.data_vars if ds[v].dtype == object]))
