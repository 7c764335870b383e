"""Paper-specific published-number audits: the only home of code that knows a paper.

A recipe recomputes a published table's numbers from the bundled data and gives each printed
number a verdict (:mod:`bayesmeta.audit` columns). A spec asks for one with
``[audit] recipe = "..."`` and names the printed numbers with ``[data] published``. Everything
else about an analysis (designs, models, quantities, report sections) is generic.

=====================  =======================================================================
recipe                 audits
=====================  =======================================================================
``revman-forest``      a RevMan 5 forest plot of mean differences by time point (2014 paper,
                       Figure 3): per-study MD, CI and weight, subtotals, heterogeneity,
                       overall and the test for subgroup differences, from the arm data
``onearm-table``       a table of one-group pooled changes by time (2014 paper, Table 2),
                       recomputed from the experimental arms where the same studies are bundled
=====================  =======================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd


@dataclass
class RecipeOutput:
    """What a recipe adds to an analysis: the audit rows, result rows of printed pooled
    numbers (``source = "published"``), a caption, answer lines and warnings."""

    audit: pd.DataFrame
    published: pd.DataFrame | None = None
    caption: str = ""
    answers: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    columns: tuple = ("item", "quantity", "published", "recomputed", "bayesian",
                      "bayesian_ci_low", "bayesian_ci_high", "verdict", "diagnosis")


@dataclass(frozen=True)
class Recipe:
    name: str
    needs_published: bool
    doc: str
    run: Callable  # (analysis, published table) -> RecipeOutput


def _revman(analysis, published):
    from bayesmeta.recipes.revman_forest import run

    return run(analysis, published)


def _onearm(analysis, published):
    from bayesmeta.recipes.onearm_table import run

    return run(analysis, published)


RECIPES: dict[str, Recipe] = {
    "revman-forest": Recipe("revman-forest", True, "RevMan 5 forest plot of MDs by time",
                            _revman),
    "onearm-table": Recipe("onearm-table", True, "one-group pooled changes by time", _onearm),
}


def published_table(spec) -> pd.DataFrame:
    """The bundled printed numbers a spec audits (``[data] published``), checksummed;
    optional integer columns with blanks as float NaN."""
    from bayesmeta.datasets import load_dataset

    df = load_dataset(spec.data.published)
    for c in df.columns:
        if isinstance(df[c].dtype, pd.Int64Dtype) and df[c].isna().any():
            df[c] = df[c].astype(float)
    return df


def run_recipe(analysis) -> RecipeOutput | None:
    """Run the spec's recipe, if it names one."""
    name = analysis.spec.audit.recipe
    if not name:
        return None
    return RECIPES[name].run(analysis, published_table(analysis.spec))
