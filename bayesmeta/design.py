"""The design of a user's table: which column plays which role, and what a row is.

A :class:`Design` is built once from a CSV file or a DataFrame (:meth:`Design.from_frame`)
and is what every model reads. It holds canonical rows (``study, time, subgroup, outcome,
yi, vi, sei, pooled`` plus the input columns), ordered levels per role, and the record of
everything that was done to the input (rows excluded by a rule, studies relabelled, rows
dropped for lack of an effect size) so the report can state it next to the answer.

What a row is (``row_kind``)
----------------------------
``arms``       arm-level data of one study (metafor columns ``m1i, sd1i, n1i, ...`` or
               ``ai, bi, ci, di, n1i, n2i``); effect sizes by :func:`bayesmeta.escalc`.
``effect``     a study's effect size ``yi`` with ``vi`` or ``sei`` (analysis scale).
``published``  a published pooled estimate ``estimate, ci_low, ci_high`` (natural scale;
               optional ``p_printed``/``p``, ``p_op``), back-converted by
               :func:`bayesmeta.published.to_analysis_scale`. Its SE already contains the
               between-study heterogeneity of the studies it pools (``pooled`` = True).
``auto``       ``effect`` if ``yi`` is present, ``published`` if ``estimate, ci_low,
               ci_high`` are, else ``arms``.

Row identity
------------
Rows are keyed by (study, time, subgroup, outcome) over the roles present.

* With a time role, one label links a study's rows across times (the same patients); the
  same key twice is an error naming both rows.
* Without a time role, two rows with the same label and different data are two studies
  (e.g. two first authors called Barber): they are relabelled ``"Barber (row 4)"`` with a
  warning naming them. Rows identical in every column are an error (a pasted duplicate).

Levels
------
Time levels sort numerically by the number a label starts with (``"4" < "12" < "24"``;
``"4 weeks"`` reads as 4); other levels keep the order of first appearance (or the order a spec
lists them in).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from bayesmeta import vocab
from bayesmeta.exceptions import DataError, DataWarning, SpecError

#: canonical columns of :attr:`Design.rows` (before the input's own columns)
CANONICAL = ("row", "study", "time", "time_value", "subgroup", "outcome", "yi", "vi", "sei",
             "pooled")
_LEADING_NUMBER = re.compile(r"^\s*([+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)")


class MissingRoleColumn(DataError):
    """A role names a column the table does not have. ``role`` lets a caller that knows
    where the column was named (a spec's line) report it there."""

    def __init__(self, problem, *, role: str, **kw):
        self.role = role
        super().__init__(problem, **kw)


def label_text(v) -> str:
    """A level as text: whole floats without '.0' (``2.0`` → ``"2"``), blanks as ``""``."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v).strip()


def time_value(label: str) -> float:
    """The number a time label starts with (``"12"`` → 12, ``"4 weeks"`` → 4), else NaN."""
    m = _LEADING_NUMBER.match(str(label))
    return float(m.group(1)) if m else math.nan


def level_order(labels: Iterable[str], *, numeric: bool) -> list[str]:
    """Distinct labels in display order: numeric by leading number (then text), else first
    appearance."""
    seen = list(dict.fromkeys(labels))
    if not numeric:
        return seen
    num = [x for x in seen if not math.isnan(time_value(x))]
    txt = [x for x in seen if math.isnan(time_value(x))]
    return sorted(num, key=lambda x: (time_value(x), x)) + txt


def _infer_row_kind(columns) -> str:
    cols = set(columns)
    if "yi" in cols and ({"vi", "sei"} & cols):
        return "effect"
    if {"estimate", "ci_low", "ci_high"} <= cols:
        return "published"
    return "arms"


@dataclass(frozen=True)
class Design:
    """A validated table with roles; build with :meth:`from_frame` (see module docstring).

    Attributes
    ----------
    measure, scale : str
        Effect measure and analysis scale (``"OR"``, ``"logOR"``).
    row_kind : str
        ``"arms"``, ``"effect"`` or ``"published"``.
    roles : dict
        Role → input column (``None`` when the role is absent).
    rows : DataFrame
        Canonical columns :data:`CANONICAL` (``row`` = the input's row number as a spreadsheet
        shows it; role values as text, ``""`` when the role is absent) then the input columns.
    file : str
        Name used in messages.
    notes : tuple of str
        What was done to the input that the user must know (studies relabelled, rows without
        an effect size, a misprinted published row read one way): raised as warnings when
        built, and stated in the report.
    info : tuple of str
        What the user's own rules did (rows kept or left out by include/exclude).
    total_level : str or None
        A subgroup label meaning "all patients" (rows that summarise the other subgroups'
        patients; they are analysed apart from the subgroup rows).
    order : dict
        Role → level order requested by the user (e.g. the spec's outcome list).
    """

    measure: str
    scale: str
    row_kind: str
    roles: dict
    rows: pd.DataFrame
    file: str = "<data>"
    notes: tuple = ()
    info: tuple = ()
    total_level: str | None = None
    order: dict = field(default_factory=dict)
    #: input rows left out by an ``exclude`` rule (kept for audits of published tables)
    excluded: pd.DataFrame | None = field(default=None, repr=False)

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_frame(cls, data, measure: str, *, study: str | None = None,
                   time: str | None = None, subgroup: str | None = None,
                   outcome: str | None = None, row_kind: str = "auto",
                   include: Mapping[str, Iterable] | None = None,
                   exclude: Mapping[str, Iterable] | None = None,
                   total_level: str | None = None, arm: int | None = None,
                   file: str | None = None, warn: bool = True) -> "Design":
        """Read and validate ``data`` (a CSV path or a DataFrame) into a design.

        Parameters
        ----------
        data : str, Path or DataFrame
        measure : str
            One of :data:`bayesmeta.vocab.MEASURES`.
        study, time, subgroup, outcome : str, optional
            Input columns playing each role. ``study`` defaults to a column named ``study``
            when there is one (else rows are numbered ``"study 1", ...``).
        row_kind : {"auto", "arms", "effect", "published"}
        include, exclude : mapping column → values, optional
            Row rules: keep only rows whose column has one of the values / drop those that
            do (values compared as text: ``0``, ``0.0`` and ``"0"`` are the same level; a
            value with ``*`` is a wildcard pattern, e.g. ``"AMBIGUOUS*"``).
            ``include`` on the outcome column also fixes the outcomes' order.
        total_level : str, optional
            Subgroup label of rows that pool all subgroups' patients.
        arm : {1, 2}, optional
            For the one-group measure ``MC`` on a two-arm table: which arm's ``m, sd, n``.
        file : str, optional
            Name of the data in messages (default: the path).
        """
        from bayesmeta.io import read_table

        measure = str(measure).upper()
        if measure not in vocab.MEASURES:
            raise SpecError(f"Invalid measure {measure!r}: must be one of "
                            f"{list(vocab.MEASURES)}.", key="measure")
        if row_kind not in vocab.ROW_KINDS:
            raise SpecError(f"Invalid row_kind {row_kind!r}: must be one of "
                            f"{list(vocab.ROW_KINDS)}.", key="row_kind")
        roles = {"study": study, "time": time, "subgroup": subgroup, "outcome": outcome}
        label_cols = tuple(c for c in roles.values() if c)
        df = read_table(data, unique=None, text=label_cols + ("study",), name=file)
        fname = df.attrs.get("file", file or "<data>")
        rownum = list(df.attrs.get("rows", range(2, len(df) + 2)))
        df = df.reset_index(drop=True)
        df.insert(0, "__row", rownum)
        if roles["study"] is None and "study" in df.columns:
            roles["study"] = "study"
        for role, col in roles.items():
            if col and col not in df.columns:
                from bayesmeta.io import suggest_column
                sug = suggest_column(col, [c for c in df.columns if c != "__row"])
                raise MissingRoleColumn(f"the {role} column {col!r} is not in the table",
                                        role=role, file=fname, row=1, column=col,
                                        fix=(f"Did you mean {sug!r}? " if sug else "")
                                        + "The table has: "
                                        + f"{', '.join(c for c in df.columns if c != '__row')}.")
        notes: list[str] = []
        info: list[str] = []

        def say(msg: str) -> None:
            notes.append(msg)
            if warn:
                warnings.warn(f"{fname}: {msg}", DataWarning, stacklevel=4)

        for col in set(c for c in roles.values() if c):
            df[col] = [label_text(v) for v in df[col]]
        order: dict[str, list[str]] = {}
        excluded: list[pd.DataFrame] = []
        # row rules
        for rule, keep in (("include", True), ("exclude", False)):
            spec = dict((include if keep else exclude) or {})
            for col, values in spec.items():
                if col not in df.columns:
                    raise SpecError(f"{rule} names column {col!r}, which the table does not have",
                                    key=f"{rule}.{col}",
                                    fix=f"Use one of: {', '.join(c for c in df.columns if c != '__row')}.")
                want = [label_text(v) for v in values]
                have = [label_text(v) for v in df[col]]
                unknown = [w for w in want if not any(_matches(h, w) for h in have)]
                if unknown:
                    raise SpecError(f"{rule}: value(s) {unknown} not found in column {col!r}",
                                    key=f"{rule}.{col}",
                                    fix=f"Values present: {sorted(set(have))[:20]}.")
                mask = np.array([any(_matches(h, w) for w in want) for h in have])
                gone = df.loc[~mask if keep else mask, "__row"].tolist()
                if not keep and mask.any():
                    excluded.append(df[mask])
                if gone:
                    info.append(f"{len(gone)} row(s) left out by the rule {rule} {col} in "
                                 f"{want}: rows {', '.join(map(str, gone[:12]))}"
                                 + (" ..." if len(gone) > 12 else ""))
                df = df[mask if keep else ~mask].reset_index(drop=True)
                if keep and col == roles.get("outcome"):
                    order["outcome"] = want
        if df.empty:
            raise DataError("no rows left after the include/exclude rules", file=fname,
                            fix="Check the rule values against the table.")
        # role values: never silently blank (an empty cell, NA, ".": bayesmeta.io)
        from bayesmeta.io import check_role_values

        probe = df.copy()
        probe.attrs = {"file": fname, "rows": df["__row"].tolist()}
        published = _infer_or(row_kind, df) == "published"
        check_role_values(probe, [c for r, c in roles.items() if c and not
                                  (r == "study" and published)], file=fname,
                          fix="Fill in every row's value, or leave the rows out with an "
                              "include/exclude rule.")
        # what a row is, and its effect size on the analysis scale
        kind = _infer_row_kind(df.columns) if row_kind == "auto" else row_kind
        df = _effect_sizes(df, measure, kind, arm=arm, file=fname, say=say, info=info.append)
        # canonical role columns
        for role, col in roles.items():
            df[f"__{role}"] = df[col] if col else ""
        if not roles["study"]:
            df["__study"] = ["" if kind == "published" else f"study {i + 1}"
                             for i in range(len(df))]
        df = identify_rows(df, roles, kind, fname, say)
        canon = pd.DataFrame({
            "row": df["__row"].astype(int).to_numpy(),
            "study": df["__study"].astype(str).to_numpy(),
            "time": df["__time"].astype(str).to_numpy(),
            "time_value": [time_value(t) if t else math.nan for t in df["__time"]],
            "subgroup": df["__subgroup"].astype(str).to_numpy(),
            "outcome": df["__outcome"].astype(str).to_numpy(),
            "yi": df["yi"].to_numpy(float), "vi": df["vi"].to_numpy(float),
            "sei": np.sqrt(df["vi"].to_numpy(float)),
            "pooled": kind == "published"})
        rest = df.drop(columns=[c for c in df.columns if c.startswith("__")
                                or c in ("yi", "vi", "sei")
                                or (c in CANONICAL and c in roles.values())])
        rest = rest.rename(columns={c: f"{c}_input" for c in rest.columns if c in CANONICAL})
        rows = pd.concat([canon, rest.reset_index(drop=True)], axis=1)
        if total_level is not None:
            total_level = label_text(total_level)
            if not roles["subgroup"]:
                raise SpecError("total_level needs a subgroup column", key="total_level",
                                fix="Set [data] subgroup, or remove total_level.")
            if total_level not in set(rows["subgroup"]):
                raise SpecError(f"total_level {total_level!r} is not a level of "
                                f"{roles['subgroup']!r}", key="total_level",
                                fix=f"Levels: {sorted(set(rows['subgroup']))}.")
        ex = pd.concat(excluded, ignore_index=True) if excluded else df.iloc[:0]
        ex = ex.assign(**{role: ex[col] if col else "" for role, col in roles.items()
                          if role not in ex.columns or col}).rename(columns={"__row": "row"})
        return cls(measure=measure, scale=vocab.scale_of(measure), row_kind=kind, roles=roles,
                   rows=rows, file=fname, notes=tuple(notes), info=tuple(info),
                   total_level=total_level, order={k: tuple(v) for k, v in order.items()},
                   excluded=ex)

    # ---- reading ---------------------------------------------------------------------------
    @property
    def k(self) -> int:
        """Number of rows."""
        return len(self.rows)

    def has(self, role: str) -> bool:
        """Is the role given (a column plays it)?"""
        return bool(self.roles.get(role))

    def levels(self, role: str) -> list[str]:
        """The role's levels in display order (numeric for time)."""
        if not self.has(role) and role != "study":
            return []
        vals = self.rows[role].tolist()
        if role in self.order:
            present = set(vals)
            return [v for v in self.order[role] if v in present]
        return level_order(vals, numeric=(role == "time"))

    @property
    def studies(self) -> list[str]:
        return self.levels("study")

    def subset(self, **levels) -> "Design":
        """The rows whose roles have the given levels (e.g. ``subset(time="4")``)."""
        m = np.ones(len(self.rows), bool)
        for role, v in levels.items():
            m &= (self.rows[role] == label_text(v)).to_numpy()
        return replace(self, rows=self.rows[m].reset_index(drop=True))

    def split(self, *roles: str) -> list[tuple[dict, "Design"]]:
        """One sub-design per combination of the given roles' levels (roles that are absent
        are skipped), in display order; empty combinations are left out."""
        roles = tuple(r for r in roles if self.has(r))
        if not roles:
            return [({}, self)]
        out = []

        def rec(i, fixed, d):
            if i == len(roles):
                if d.k:
                    out.append((dict(fixed), d))
                return
            for lev in d.levels(roles[i]):
                rec(i + 1, {**fixed, roles[i]: lev}, d.subset(**{roles[i]: lev}))
        rec(0, {}, self)
        return out

    def repeated_studies(self, across: str = "time") -> dict[str, list[str]]:
        """Studies with rows at two or more levels of ``across`` (the same patients counted
        again): study → its levels."""
        if not self.has(across) or self.row_kind == "published":
            return {}
        out = {}
        for s, g in self.rows.groupby("study", sort=False):
            levs = level_order(g[across].tolist(), numeric=(across == "time"))
            if s and len(levs) > 1:
                out[s] = levs
        return out

    def parts(self) -> list[tuple[str, "Design"]]:
        """Designs that can be analysed without counting patients twice: with a
        ``total_level``, its rows (all patients) apart from the other subgroups' rows."""
        if self.total_level is None:
            return [("", self)]
        is_tot = (self.rows["subgroup"] == self.total_level).to_numpy()
        out = []
        if is_tot.any():
            out.append((self.total_level, replace(self, rows=self.rows[is_tot].reset_index(
                drop=True))))
        if (~is_tot).any():
            out.append(("by subgroup", replace(self, rows=self.rows[~is_tot].reset_index(
                drop=True))))
        return out

    def describe(self) -> str:
        """One paragraph: what the table is and how it was read."""
        parts = [f"{self.k} row(s) of {self.row_kind} data, measure {self.measure}"
                 + (f" (analysed as {self.scale})" if self.scale != self.measure else "")]
        for role in vocab.ROLES:
            if self.has(role):
                levs = self.levels(role)
                parts.append(f"{role} = column {self.roles[role]!r} ({len(levs)} level"
                             f"{'s' if len(levs) != 1 else ''})")
        return "; ".join(parts) + "."


def _matches(value: str, pattern: str) -> bool:
    """A rule value matches a cell: equal text, or a ``*`` wildcard pattern
    (``"AMBIGUOUS*"``)."""
    if "*" in pattern:
        import fnmatch
        return fnmatch.fnmatchcase(value, pattern)
    return value == pattern


def _infer_or(row_kind: str, df) -> str:
    return _infer_row_kind(df.columns) if row_kind == "auto" else row_kind


def _effect_sizes(df: pd.DataFrame, measure: str, kind: str, *, arm, file, say,
                  info=None) -> pd.DataFrame:
    """Add ``yi``/``vi`` on the analysis scale; rows without one are dropped with a note."""
    from bayesmeta.io import validate_measure_columns

    if kind == "effect":
        if "yi" not in df.columns or not ({"vi", "sei"} & set(df.columns)):
            raise DataError("an effect-size table needs 'yi' and 'vi' or 'sei'", file=file,
                            row=1, column="yi" if "yi" not in df.columns else "vi",
                            fix="Add the columns, or set row_kind to 'arms' or 'published'.")
        if measure in vocab.BINARY and {"ai", "ci"} <= set(df.columns):
            pass  # counts are kept for count-based models; yi/vi as given
        validate_measure_columns(df, "GEN", file=file)
        out = df.copy()
        if "vi" not in out.columns:
            out["vi"] = np.square(out["sei"].to_numpy(float))
        return out
    if kind == "published":
        return _published_rows(df, measure, file=file, say=say)
    # arms
    from bayesmeta.effect_sizes import escalc

    src = df
    if measure == "MC" and not ({"mi", "sdi", "ni"} <= set(df.columns)):
        a = arm or 1
        need = [f"m{a}i", f"sd{a}i", f"n{a}i"]
        if not set(need) <= set(df.columns):
            raise DataError("the one-group measure MC needs columns mi, sdi, ni (or the "
                            f"columns {need} of arm {a} of a two-arm table)", file=file, row=1,
                            column="mi", fix="Add the columns, or set [data] arm.")
        src = df.assign(mi=df[need[0]], sdi=df[need[1]], ni=df[need[2]])
        info(f"measure MC (one-group change) computed from arm {a} of the two-arm table "
            f"(columns {', '.join(need)})")
    validate_measure_columns(src, "OR" if measure == "PETO" else measure, file=file)
    es = escalc(measure, src, file=file)
    ok = np.isfinite(es["yi"].to_numpy(float)) & np.isfinite(es["vi"].to_numpy(float))
    if not ok.all():
        gone = es.loc[~ok, "__row"].tolist()
        say(f"{len(gone)} row(s) without an effect size left out: rows "
            f"{', '.join(map(str, gone))}")
        es = es[ok].reset_index(drop=True)
    if es.empty:
        raise DataError("no row has an effect size", file=file,
                        fix="Check the arm columns (events, totals, means, SDs).")
    return es


def _published_rows(df, measure, *, file, say) -> pd.DataFrame:
    """Printed estimates with CI (and P) → yi, sei; contradictory rows resolved by
    :func:`bayesmeta.published.resolve_inconsistent` (recorded in ``model_input``)."""
    from bayesmeta.published import resolve_inconsistent, to_analysis_scale

    for c in ("estimate", "ci_low", "ci_high"):
        if c not in df.columns:
            raise DataError(f"a table of published estimates needs column {c!r}", file=file,
                            row=1, column=c, fix="Columns: estimate, ci_low, ci_high "
                            "(natural scale; ratios as printed), optional p_printed, p_op.")
    if "measure" in df.columns:
        bad = [(r, m) for r, m in zip(df["__row"], df["measure"])
               if str(m).strip().upper() not in ("", measure)]
        if bad:
            r, m = bad[0]
            raise DataError(f"row's measure {m!r} differs from the analysis measure {measure!r}",
                            file=file, row=int(r), column="measure",
                            fix="Analyse one measure at a time: filter the rows (include/"
                                "exclude or outcomes) or change the measure.")
    for c in ("estimate", "ci_low", "ci_high"):
        v = pd.to_numeric(df[c], errors="coerce")
        bad = df["__row"][v.isna()].tolist()
        if bad:
            raise DataError("missing or non-numeric published value", file=file,
                            row=int(bad[0]), column=c, fix="Give the printed number.")
    if vocab.is_ratio(measure):
        for c in ("estimate", "ci_low", "ci_high"):
            bad = df["__row"][pd.to_numeric(df[c]) <= 0].tolist()
            if bad:
                raise DataError(f"a ratio ({measure}) must be > 0", file=file, row=int(bad[0]),
                                column=c, fix="Give the ratio as printed, not its logarithm.")
    bad = df["__row"][pd.to_numeric(df["ci_low"]) > pd.to_numeric(df["ci_high"])].tolist()
    if bad:
        raise DataError("ci_low is above ci_high", file=file, row=int(bad[0]), column="ci_low",
                        fix="Swap the bounds.")
    d = df.copy()
    d["measure"] = measure
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = to_analysis_scale(d, measure=measure)
        d = resolve_inconsistent(d, measure)
    for w in caught:
        say(str(w.message))
    for r, note in zip(d["__row"], d["model_input"]):
        if note != "as printed":
            say(f"row {r}: {note}")
    return d


def identify_rows(df: pd.DataFrame, roles: dict, kind: str, file: str, say) -> pd.DataFrame:
    """Apply the row-identity rules (module docstring) to a frame with ``__row`` and
    ``__<role>`` columns; returns it with duplicate labels of different studies relabelled
    (``say`` receives the warning) or raises a DataError."""
    key = ["__study"] + [f"__{r}" for r in ("time", "subgroup", "outcome") if roles[r]]
    if kind == "published" and not roles["study"]:
        key = key[1:]
    if not key:
        return df
    data_cols = [c for c in df.columns if c not in ("__row",) and not c.startswith("__")]
    groups = df.groupby(key if len(key) > 1 else key[0], sort=False, dropna=False).groups
    relabel = {}
    for k, idx in groups.items():
        if len(idx) < 2:
            continue
        idx = list(idx)
        rows = df.loc[idx]
        kd = dict(zip(key, k if isinstance(k, tuple) else (k,)))
        desc = ", ".join(f"{c[2:]} {v!r}" for c, v in kd.items())
        sig = rows[data_cols].astype(str).agg("\x1f".join, axis=1)
        if sig.duplicated().any():
            a, b = rows["__row"][sig.duplicated(keep=False)].tolist()[:2]
            raise DataError(f"rows {a} and {b} are identical ({desc})", file=file, row=int(b),
                            column=roles.get("study") or "",
                            fix="Remove the duplicated row.")
        if roles["time"] or kind == "published":
            a, b = rows["__row"].tolist()[:2]
            raise DataError(f"two rows for the same {desc} (rows {a} and {b})", file=file,
                            row=int(b), column=roles.get("study") or "",
                            fix="Each study has one row per time point and subgroup; give "
                                "different studies different labels.")
        for i in idx:
            relabel[i] = f"{df.at[i, '__study']} (row {df.at[i, '__row']})"
        say(f"{len(idx)} rows share the study label {kd['__study']!r} (rows "
            f"{', '.join(str(r) for r in rows['__row'])}) but differ in their data: analysed "
            "as different studies, labelled " + ", ".join(repr(relabel[i]) for i in idx)
            + " (if they are one study at several time points, name the time column)")
    if relabel:
        df = df.copy()
        for i, lab in relabel.items():
            df.at[i, "__study"] = lab
    return df
