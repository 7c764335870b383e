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
    """A recipe and what it reads: the design it can audit (measure, row kind, roles, data
    columns) and the columns of the printed table; :meth:`validate` refuses anything else
    before fitting starts."""

    name: str
    needs_published: bool
    doc: str
    run: Callable  # (analysis, published table) -> RecipeOutput
    measures: tuple = ()
    row_kinds: tuple = ()
    needs_roles: tuple = ()
    data_columns: tuple = ()
    published_columns: tuple = ()

    def validate(self, spec, design) -> None:
        """Raise a SpecError (key ``audit.recipe`` or ``data.published``) when the design or
        the printed table is not what this recipe audits."""
        from bayesmeta.exceptions import SpecError

        key, what = "audit.recipe", f"recipe {self.name!r} ({self.doc})"
        if self.measures and design.measure not in self.measures:
            raise SpecError(f"{what} needs measure {' or '.join(self.measures)}, the data use "
                            f"{design.measure!r}", key=key)
        if self.row_kinds and design.row_kind not in self.row_kinds:
            raise SpecError(f"{what} needs {' or '.join(self.row_kinds)} rows, the data are "
                            f"{design.row_kind} rows", key=key)
        for role in self.needs_roles:
            if not design.has(role):
                raise SpecError(f"{what} needs a {role} column", key=key,
                                fix=f"Set [data] {role}.")
        miss = [c for c in self.data_columns if c not in design.rows.columns]
        if miss:
            raise SpecError(f"{what} needs data columns {miss}", key=key)
        if self.published_columns and spec.data.published:
            have = set(published_table(spec).columns)
            miss = [c for c in self.published_columns if c not in have]
            if miss:
                raise SpecError(f"{what}: the printed table {spec.data.published!r} lacks "
                                f"columns {miss}", key="data.published")


def _revman(analysis, published):
    from bayesmeta.recipes.revman_forest import run

    return run(analysis, published)


def _onearm(analysis, published):
    from bayesmeta.recipes.onearm_table import run

    return run(analysis, published)


RECIPES: dict[str, Recipe] = {
    "revman-forest": Recipe(
        "revman-forest", True, "RevMan 5 forest plot of MDs by time", _revman,
        measures=("MD",), row_kinds=("arms",), needs_roles=("time",),
        data_columns=("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i", "pub_md", "pub_ci_low",
                      "pub_ci_high", "pub_weight_pct"),
        published_columns=("level", "time", "quantity", "value", "decimals", "printed", "op")),
    "onearm-table": Recipe(
        "onearm-table", True, "one-group pooled changes by time", _onearm,
        measures=("MC",), row_kinds=("arms",), needs_roles=("time",), data_columns=("ni",),
        published_columns=("outcome", "time_wk", "n_studies", "n_cases", "i2", "p_het",
                           "estimate", "ci_low", "ci_high", "printed")),
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
