"""Read and validate study tables: CSV (or a DataFrame) -> a checked :class:`pandas.DataFrame`.

Every CLI command reads its data through :func:`read_table`. Every bad value raises a
:class:`~bayesmeta.exceptions.DataError` naming the file, the row (as a spreadsheet counts it:
header = row 1, first data row = row 2), the column, the problem and what to do.

Decisions on text typed or pasted from PDFs (each is tested):

- **Encoding.** UTF-8 only. A UTF-8 byte-order mark is accepted (Excel's "CSV UTF-8" writes one).
  Anything else (Windows-1252/Latin-1 from older Excel, UTF-16) is *refused*, with the row of the
  first undecodable byte and the advice to re-save as "CSV UTF-8": guessing an 8-bit code page can
  silently turn a "−" or "µ" into the wrong character.
- **Delimiter.** Comma only. A header that is one field containing ``;`` or a tab is reported as
  "semicolon/tab-separated" (re-save with commas).
- **Decimal commas and thousands separators** ("1,5", "1.234,5", "1,234") are refused: the comma
  is ambiguous and a wrong guess changes a number by a factor of 1000.
- **Unicode minus** (U+2212, as papers print it, and the similar U+FE63, U+FF0D) is parsed as a
  minus sign, with one :class:`~bayesmeta.exceptions.DataWarning` stating how many cells were
  converted and in which columns.
- **En-dash / em-dash** inside a number is refused: "-4.19–1.19" is a range (a pasted CI) and
  "–1.2" may be a dash that lost a digit; the message says to split bounds into two columns.
- **Duplicate rows**: a study may appear once per ``time``/``subgroup`` (whichever of those
  columns exist); a second occurrence is an error naming both rows.
- **Missing values**: blank, ``NA``, ``NaN`` and ``.`` cells in a numeric column are missing; a
  missing value in a *required* column is an error, in an optional one it becomes NaN. ``inf`` is
  always an error.

Row numbers survive validation: the returned frame carries ``df.attrs["file"]`` and
``df.attrs["rows"]`` (the spreadsheet row of each data row), which the measure validators
(:func:`validate_measure_columns`, :func:`validate_published`) use in their messages.
"""

from __future__ import annotations

import csv
import difflib
import io as _io
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmeta.exceptions import DataError, DataWarning

__all__ = [
    "read_table",
    "validate_measure_columns",
    "validate_published",
    "measure_columns",
    "MEASURE_COLUMNS",
    "KNOWN_NUMERIC",
    "KNOWN_INTEGER",
    "suggest_column",
    "check_role_values",
    "is_missing_label",
    "MIN_VARIANCE",
]

#: metafor's vocabulary: always validated as numbers when present.
KNOWN_NUMERIC = ("yi", "vi", "sei", "m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i", "ai", "bi", "ci",
                 "di", "mi", "sdi", "ni", "estimate", "ci_low", "ci_high")
#: columns that must hold whole numbers (checked by :func:`validate_measure_columns`).
KNOWN_INTEGER = ("n1i", "n2i", "ni", "ai", "bi", "ci", "di")

#: accepted column sets per measure (the first is the default asked for).
MEASURE_COLUMNS = {
    "MD": (("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i"),),
    "SMD": (("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i"),),
    "OR": (("ai", "n1i", "ci", "n2i"), ("ai", "bi", "ci", "di")),
    "RR": (("ai", "n1i", "ci", "n2i"), ("ai", "bi", "ci", "di")),
    "RD": (("ai", "n1i", "ci", "n2i"), ("ai", "bi", "ci", "di")),
    "PETO": (("ai", "n1i", "ci", "n2i"), ("ai", "bi", "ci", "di")),
    "MC": (("mi", "sdi", "ni"),),
    "GEN": (("yi", "vi"), ("yi", "sei")),
}
RATIO_MEASURES = ("OR", "RR", "HR", "IRR", "PETO")
#: smallest sampling variance the engines compute with: inverse-variance weights w = 1/vi enter
#: sums of w, w² and w³ (REML information), and w³ stays finite in double precision for
#: vi >= 1e-100 (a smaller vi is a typing error, not a measurement).
MIN_VARIANCE = 1e-100

#: label columns: kept as text even when every value looks like a number (study ids 1, 2, ...)
_LABELS = ("study", "subgroup", "author", "trt", "outcome")
_MISSING = {"", "na", "nan", "n/a", ".", "null", "none"}
_UNICODE_MINUS = "\u2212\ufe63\uff0d"
_DASHES = "\u2013\u2014\u2012"  # en-dash, em-dash, figure dash
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_RANGE = re.compile(r"^[+-]?\d*\.?\d+\s*(-|to|[\u2013\u2014\u2012])\s*[+-]?\d*\.?\d+$")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_DECIMAL_COMMA = re.compile(r"^[+-]?(\d{1,3}(\.\d{3})+|\d*),\d+$")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def suggest_column(name: str, candidates: Iterable[str]) -> str | None:
    """The closest existing column to a missing one (``sd1`` -> ``sd1i``), or None."""
    cands = [c for c in candidates if c is not None]
    lower = {c.lower(): c for c in cands}
    if name.lower() in lower:
        return lower[name.lower()]
    hit = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.6)
    return lower[hit[0]] if hit else None


def _label(file) -> str:
    return "<DataFrame>" if file is None else str(file)


def _decode(raw: bytes, file) -> str:
    if raw.startswith(b"\xff\xfe") or raw.startswith(b"\xfe\xff"):
        raise DataError("file is UTF-16 encoded, not UTF-8", file=file,
                        fix="Re-save it as 'CSV UTF-8 (comma delimited)'.")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # UTF-8 BOM (Excel's "CSV UTF-8"): accepted
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        row = raw.count(b"\n", 0, err.start) + 1
        byte = raw[err.start]
        try:
            guess = bytes([byte]).decode("cp1252")
            hint = f" (in Windows-1252 this byte would be {guess!r})"
        except UnicodeDecodeError:
            hint = ""
        raise DataError(
            f"file is not valid UTF-8: byte 0x{byte:02x} at position {err.start}{hint}; it looks "
            "like Windows-1252/Latin-1 (e.g. older Excel 'CSV')",
            file=file, row=row,
            fix="Re-save it as 'CSV UTF-8 (comma delimited)'; bayesmeta does not guess encodings.",
        ) from None


def _split_rows(text: str, file):
    """Rows of the CSV with their spreadsheet row numbers; blank lines are skipped.

    A row is a CSV record, numbered as a spreadsheet numbers it (blank records count, as a
    spreadsheet shows them): a quoted cell holding a line break (a study name typed on two
    lines) spans two text lines but is one row.
    """
    reader = csv.reader(_io.StringIO(text, newline=""), strict=True)
    out = []
    record = 0
    try:
        for fields in reader:
            record += 1
            if not fields or all(not f.strip() for f in fields):
                continue
            out.append((record, fields))
    except csv.Error as err:
        raise DataError(f"cannot parse CSV: {err}", file=file, row=record + 1,
                        fix="Check for an unbalanced double quote.") from None
    return out


def _check_header(header: list[str], first_line: str, file) -> list[str]:
    cols = [h.strip() for h in header]
    if len(cols) == 1:
        for sep, name in ((";", "semicolon"), ("\t", "tab")):
            if sep in first_line:
                raise DataError(
                    f"the file looks {name}-separated (header {first_line.strip()[:60]!r}); "
                    "bayesmeta reads comma-separated values",
                    file=file, row=1,
                    fix="Re-save as 'CSV UTF-8 (comma delimited)' with '.' as decimal mark.",
                )
    for i, c in enumerate(cols):
        if not c:
            raise DataError(f"column {i + 1} has an empty name", file=file, row=1,
                            fix="Give every column a header or delete the empty column.")
    seen = {}
    for c in cols:
        if c in seen:
            raise DataError(f"column name {c!r} appears twice in the header", file=file, row=1,
                            column=c, fix="Rename or delete one of them.")
        seen[c] = True
    return cols


def _parse_number(cell: str, *, file, row, column, required: bool):
    """Parse one cell; returns (value, converted_unicode_minus)."""
    s = cell.strip()
    if s.lower() in _MISSING:
        if required:
            raise DataError("missing value", file=file, row=row, column=column,
                            fix="Fill it in, or remove the row.")
        return math.nan, False
    converted = False
    if any(ch in s for ch in _UNICODE_MINUS):
        s = re.sub(f"[{_UNICODE_MINUS}]\\s*", "-", s)
        converted = True
    s_nospace = s.replace("\u00a0", " ").strip()
    if any(ch in s_nospace for ch in _DASHES):
        if _RANGE.match(s_nospace):
            raise DataError(
                f"{cell!r} looks like a range (a pasted confidence interval?); an en-dash "
                "separates two numbers here",
                file=file, row=row, column=column,
                fix="Put the lower and upper bounds in separate columns (e.g. ci_low, ci_high).",
            )
        raise DataError(
            f"{cell!r} contains an en-dash/em-dash, which is not a minus sign and is ambiguous "
            "(minus sign or a range with a lost bound?)",
            file=file, row=row, column=column,
            fix="Type the minus sign as '-' (or U+2212) and check the number against the source.",
        )
    s_nospace = s_nospace.replace(" ", "") if re.fullmatch(r"[+-]\s+\d.*", s_nospace) else s_nospace
    if s_nospace.lower().lstrip("+-") in ("inf", "infinity"):
        raise DataError(f"value {cell!r} is not finite", file=file, row=row, column=column,
                        fix="Replace it with the actual number or leave the cell empty.")
    if _NUMBER.match(s_nospace):
        return float(s_nospace), converted
    if _THOUSANDS.match(s_nospace):
        raise DataError(
            f"{cell!r} has a thousands separator (or is a decimal comma: ambiguous)",
            file=file, row=row, column=column,
            fix="Write numbers without thousands separators and with '.' as decimal mark.",
        )
    if _DECIMAL_COMMA.match(s_nospace):
        raise DataError(
            f"{cell!r} uses a decimal comma", file=file, row=row, column=column,
            fix="Use '.' as decimal mark (e.g. 1.5, not 1,5).",
        )
    if _RANGE.match(s_nospace):
        raise DataError(
            f"{cell!r} looks like a range (a pasted confidence interval?), not one number",
            file=file, row=row, column=column,
            fix="Put the lower and upper bounds in separate columns (e.g. ci_low, ci_high).",
        )
    raise DataError(f"non-numeric value {cell!r}", file=file, row=row, column=column,
                    fix="Enter a number (e.g. -1.23), or leave the cell empty if it is missing.")


def _looks_numeric(values: Sequence[str]) -> bool:
    seen = False
    for v in values:
        s = v.strip()
        if s.lower() in _MISSING:
            continue
        if not _NUMBER.match(s):
            return False
        seen = True
    return seen


def _rows_of(df: pd.DataFrame) -> list[int]:
    rows = df.attrs.get("rows")
    if rows is not None and len(rows) == len(df):
        return list(rows)
    return list(range(2, len(df) + 2))


# ---------------------------------------------------------------------------------------------
# read_table
# ---------------------------------------------------------------------------------------------
def read_table(
    path_or_df,
    *,
    required: Sequence[str] = (),
    numeric: Sequence[str] = (),
    integer: Sequence[str] = (),
    text: Sequence[str] = (),
    unique: Sequence[str] | str | None = "auto",
    name: str | None = None,
) -> pd.DataFrame:
    """Read a CSV file (or check a DataFrame) and validate it.

    Parameters
    ----------
    path_or_df : str, Path or DataFrame
        A comma-separated UTF-8 file with a header row, or a DataFrame (rows are then numbered
        as if it were written to CSV: first row = row 2).
    required : columns that must exist; a numeric required column must have no missing value.
    numeric : columns that must hold numbers (metafor's names in :data:`KNOWN_NUMERIC` are
        always checked when present). Other columns are converted to numbers only if every cell is
        a plain number (int64 if all are whole numbers written without a decimal point), except
        label columns (``study, subgroup, author, trt, outcome``), which stay text.
    integer : numeric columns that must hold whole numbers (returned as int64, or Int64 if some
        optional cells are missing).
    text : columns kept as text even if they look numeric (e.g. a study id ``1``).
    unique : key columns that must be unique together. ``"auto"``: ``study`` plus ``time`` and
        ``subgroup`` when those columns exist (nothing is checked without ``study``). ``None``
        switches the check off.
    name : label used for the file in messages (default: the path, or ``<DataFrame>``).

    Returns
    -------
    DataFrame with ``attrs["file"]`` and ``attrs["rows"]`` (spreadsheet row numbers).

    Raises
    ------
    DataError
        Missing/empty file, undecodable bytes, wrong delimiter, missing or misspelled column,
        ragged row, non-numeric/missing/infinite value, decimal comma, en-dash, duplicate study.
    """
    if isinstance(path_or_df, pd.DataFrame):
        file = name or path_or_df.attrs.get("file") or "<DataFrame>"
        src = path_or_df
        if src.empty and len(src.columns) == 0:
            raise DataError("table is empty", file=file, fix="Provide at least a header and one row.")
        cols = [str(c).strip() for c in src.columns]
        if len(set(cols)) != len(cols):
            dup = next(c for c in cols if cols.count(c) > 1)
            raise DataError(f"column name {dup!r} appears twice", file=file, row=1, column=dup,
                            fix="Rename or delete one of them.")
        rows = _rows_of(src)
        records = [[("" if (isinstance(v, float) and math.isnan(v)) or v is None or v is pd.NA
                     else str(v)) for v in rec] for rec in src.itertuples(index=False, name=None)]
        raw_cols = {c: [r[i] for r in records] for i, c in enumerate(cols)}
        native = {c: src.iloc[:, i] for i, c in enumerate(cols)}
    else:
        path = Path(path_or_df)
        file = name or str(path_or_df)
        if not path.exists():
            raise DataError("file not found", file=file,
                            fix=f"Check the path (relative paths start from {Path.cwd()}).")
        if path.is_dir():
            raise DataError("is a directory, not a CSV file", file=file,
                            fix="Give the path of the .csv file.")
        raw = path.read_bytes()
        if not raw.strip(b" \t\r\n\xef\xbb\xbf"):
            raise DataError("file is empty", file=file,
                            fix="Provide a header row and one row per study.")
        text_ = _decode(raw, file)
        parsed = _split_rows(text_, file)
        first_line = text_.lstrip("\r\n").splitlines()[0]
        hdr_row, header = parsed[0]
        cols = _check_header(header, first_line, file)
        body = parsed[1:]
        if not body:
            raise DataError("file has a header but no data rows", file=file,
                            fix="Add one row per study.")
        rows = []
        raw_cols = {c: [] for c in cols}
        for line, fields in body:
            if len(fields) > len(cols):
                extra = fields[len(cols):]
                hint = ""
                if any(_NUMBER.match(f.strip() or "x") for f in extra):
                    hint = " (an unquoted decimal comma or thousands separator splits a number)"
                raise DataError(
                    f"row has {len(fields)} fields but the header has {len(cols)}{hint}",
                    file=file, row=line,
                    fix="Remove the extra commas, or use '.' as decimal mark and no thousands "
                        "separators.",
                )
            fields = fields + [""] * (len(cols) - len(fields))
            rows.append(line)
            for c, f in zip(cols, fields):
                raw_cols[c].append(f)
        native = None

    # required columns, with did-you-mean
    missing = [c for c in required if c not in cols]
    if missing:
        present_extra = [c for c in cols if c not in required]
        c0 = missing[0]
        sug = suggest_column(c0, present_extra)
        fix = (f"Did you mean {sug!r}? Rename column {sug!r} to {c0!r}." if sug
               else f"Add the column; the file has: {', '.join(cols)}.")
        what = ("missing required column " + repr(c0) if len(missing) == 1 else
                "missing required columns " + ", ".join(repr(c) for c in missing))
        raise DataError(what, file=file, row=1, column=c0, fix=fix)

    numeric_set = (set(numeric) | set(integer) | (set(KNOWN_NUMERIC) & set(cols))) - set(text)
    for c in numeric_set:
        if c not in cols and c in required:  # pragma: no cover - caught above
            raise DataError(f"missing column {c!r}", file=file, column=c)
    out = {}
    minus_counts: dict[str, int] = {}
    for c in cols:
        vals = raw_cols[c]
        if c in numeric_set:
            parsed_vals = []
            for r, v in zip(rows, vals):
                x, conv = _parse_number(v, file=file, row=r, column=c, required=c in required)
                if conv:
                    minus_counts[c] = minus_counts.get(c, 0) + 1
                parsed_vals.append(x)
            arr = np.array(parsed_vals, dtype=float)
            if c in integer:
                bad = [(r, x) for r, x in zip(rows, arr) if not math.isnan(x) and x != round(x)]
                if bad:
                    r, x = bad[0]
                    raise DataError(f"must be a whole number, got {x:g}", file=file, row=r,
                                    column=c, fix="Counts and sample sizes are integers.")
                out[c] = (pd.array(arr, dtype="Int64") if np.isnan(arr).any()
                          else arr.astype(np.int64))
            else:
                out[c] = arr
        elif c not in text and c not in _LABELS and native is None and _looks_numeric(vals):
            arr = np.array([math.nan if v.strip().lower() in _MISSING else float(v)
                            for v in vals])
            if all(re.fullmatch(r"[+-]?\d+", v.strip()) or v.strip().lower() in _MISSING
                   for v in vals):
                arr = (pd.array(arr, dtype="Int64") if np.isnan(arr).any()
                       else arr.astype(np.int64))
            out[c] = arr
        elif native is not None and c not in text:
            out[c] = native[c].to_numpy()
        else:
            if c in required:
                for r, v in zip(rows, vals):
                    if not v.strip():
                        raise DataError("missing value", file=file, row=r, column=c,
                                        fix="Fill it in, or remove the row.")
            out[c] = np.array([v.strip() for v in vals], dtype=object)
    if minus_counts:
        n = sum(minus_counts.values())
        where = ", ".join(f"{c!r} ({k})" for c, k in minus_counts.items())
        warnings.warn(
            f"{_label(file)}: converted {n} cell(s) with a Unicode minus sign (U+2212) to '-' in "
            f"column(s) {where}.",
            DataWarning, stacklevel=2,
        )
    df = pd.DataFrame(out, columns=cols)
    df.attrs["file"] = file
    df.attrs["rows"] = list(rows)

    # duplicate studies
    if unique == "auto":
        key = (["study"] + [c for c in ("time", "subgroup") if c in cols]) if "study" in cols else []
    elif unique is None:
        key = []
    else:
        key = [unique] if isinstance(unique, str) else list(unique)
        miss = [k for k in key if k not in cols]
        if miss:
            raise DataError(f"missing column {miss[0]!r} needed to identify rows", file=file,
                            row=1, column=miss[0], fix="Add the column.")
    if key:
        seen: dict[tuple, int] = {}
        for i, r in enumerate(rows):
            k = tuple(raw_cols[c][i].strip() for c in key)
            if k in seen:
                desc = ", ".join(f"{c}={v}" for c, v in zip(key, k))
                raise DataError(
                    f"duplicate row for {desc} (also in row {seen[k]})",
                    file=file, row=r, column=key[0],
                    fix="Each study may appear once per "
                        + ("/".join(key[1:]) if len(key) > 1 else "table")
                        + "; remove the duplicate or add a distinguishing 'time' or 'subgroup' "
                          "column.",
                )
            seen[k] = r
    return df


# ---------------------------------------------------------------------------------------------
# role columns (study, time, subgroup, ...): every row needs a value
# ---------------------------------------------------------------------------------------------
def is_missing_label(v) -> bool:
    """True for an empty role cell: None, NaN, blank, or a missing-value token (``NA``,
    ``NaN``, ``n/a``, ``.``, ``null``, ``none``; any case)."""
    if v is None or v is pd.NA:
        return True
    if isinstance(v, (float, np.floating)) and math.isnan(v):
        return True
    return str(v).strip().lower() in _MISSING


def check_role_values(df: pd.DataFrame, columns: Iterable[str], *, file=None,
                      missing_level: str | None = None, where=None,
                      fix: str | None = None) -> pd.DataFrame:
    """Every row must have a value in each role column (study, time, subgroup, a ``--by``
    column): an empty cell (or ``NA``, ``NaN``, ``.``, ``null``, ``none``) would otherwise become
    a level of its own (a subgroup ``''``), silently changing the structure of the analysis.

    Parameters
    ----------
    df : DataFrame (``attrs["rows"]`` give the spreadsheet rows named in messages).
    columns : role columns to check; empty names and columns not in ``df`` are skipped.
    file : file name for messages (default ``df.attrs["file"]``).
    missing_level : if given, missing cells become this explicit level instead of an error
        (the user asked for it, e.g. ``"unknown"``); the returned frame is a copy.
    where : optional boolean mask: only these rows need a value (e.g. study rows of a table
        whose pooled rows legitimately leave the subgroup empty).
    fix : the remedy named in the message (default: fill in the cell or remove the row).

    Returns
    -------
    ``df`` itself (nothing missing) or a copy with the explicit level filled in.

    Raises
    ------
    DataError
        Naming the file, the row and the column of the first missing value and how many more.
    """
    file = file or df.attrs.get("file")
    rows = _rows_of(df)
    out = df
    mask_rows = np.ones(len(df), bool) if where is None else np.asarray(where, bool)
    for c in columns:
        if not c or c not in df.columns:
            continue
        miss = np.array([is_missing_label(v) for v in df[c]], bool) & mask_rows
        if not miss.any():
            continue
        if missing_level is not None:
            if out is df:
                out = df.copy()
                out.attrs = dict(df.attrs)
            col = out[c].astype(object).copy()
            col[miss] = missing_level
            out[c] = col
            continue
        idx = np.flatnonzero(miss)
        i = int(idx[0])
        label = f" (study {df['study'].iloc[i]!r})" if "study" in df.columns and c != "study" \
            else ""
        more = f"; {idx.size - 1} more row(s) likewise" if idx.size > 1 else ""
        raw = df[c].iloc[i]
        shown = "" if raw is None or (isinstance(raw, float) and math.isnan(raw)) else str(raw)
        raise DataError(
            f"missing value {shown!r} in role column {c!r}{label}{more}: an empty cell would "
            f"become a level of its own", file=file, row=rows[i], column=c,
            fix=fix or f"Fill in the {c} of every row, or remove the row.")
    return out


# ---------------------------------------------------------------------------------------------
# measure-specific validation
# ---------------------------------------------------------------------------------------------
def measure_columns(measure: str, columns: Iterable[str] = ()) -> tuple[str, ...]:
    """The column set used for ``measure``: the first accepted set fully present in ``columns``,
    else the default (first) set."""
    m = _check_measure(measure)
    cols = set(columns)
    for alt in MEASURE_COLUMNS[m]:
        if set(alt) <= cols:
            return alt
    return MEASURE_COLUMNS[m][0]


def _check_measure(measure: str, file=None) -> str:
    m = str(measure).upper()
    if m not in MEASURE_COLUMNS:
        hit = difflib.get_close_matches(m, list(MEASURE_COLUMNS), n=1, cutoff=0.5)
        raise DataError(
            f"Invalid measure {measure!r}: must be one of {list(MEASURE_COLUMNS)}", file=file,
            fix=f"Did you mean {hit[0]!r}?" if hit else None,
        )
    return m


def _fail_rows(df, mask, *, file, column, problem, fix, rows):
    idx = np.flatnonzero(np.asarray(mask))
    if idx.size:
        i = idx[0]
        label = ""
        if "study" in df.columns:
            label = f" (study {df['study'].iloc[i]!r})"
        more = f"; {idx.size - 1} more row(s) likewise" if idx.size > 1 else ""
        raise DataError(problem(df[column].iloc[i]) + label + more, file=file, row=rows[i],
                        column=column, fix=fix)


def validate_measure_columns(df: pd.DataFrame, measure: str, *, file=None) -> pd.DataFrame:
    """Check the columns ``measure`` needs and their values; returns ``df`` unchanged.

    - MD/SMD: ``m1i, sd1i, n1i, m2i, sd2i, n2i``; SD > 0; n a whole number >= 2.
    - OR/RR/RD/PETO: ``ai, n1i, ci, n2i`` or ``ai, bi, ci, di``; counts whole numbers >= 0;
      events <= group size; group size >= 1.
    - MC: ``mi, sdi, ni``; sdi > 0; ni whole >= 1.
    - GEN: ``yi`` with ``vi`` > 0 or ``sei`` > 0.
    All used values must be present and finite.
    """
    file = file or df.attrs.get("file")
    m = _check_measure(measure, file)
    rows = _rows_of(df)
    cols = measure_columns(m, df.columns)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        c0 = missing[0]
        sug = suggest_column(c0, [c for c in df.columns if c not in cols])
        alts = " or ".join("(" + ", ".join(a) + ")" for a in MEASURE_COLUMNS[m])
        raise DataError(
            f"measure {m} needs columns {alts}; missing {c0!r}", file=file, row=1, column=c0,
            fix=(f"Did you mean {sug!r}? Rename column {sug!r} to {c0!r}." if sug
                 else f"Add the column; the table has: {', '.join(map(str, df.columns))}."),
        )
    vals = {}
    for c in cols:
        try:
            x = pd.to_numeric(df[c], errors="raise").to_numpy(dtype=float)
        except (ValueError, TypeError):
            bad = next(i for i, v in enumerate(df[c])
                       if pd.isna(pd.to_numeric(pd.Series([v]), errors="coerce"))[0])
            raise DataError(f"non-numeric value {df[c].iloc[bad]!r}", file=file, row=rows[bad],
                            column=c, fix="Enter a number.") from None
        _fail_rows(df, np.isnan(x), file=file, column=c, rows=rows,
                   problem=lambda v: "missing value", fix="Fill it in, or remove the row.")
        _fail_rows(df, np.isinf(x), file=file, column=c, rows=rows,
                   problem=lambda v: f"value {v!r} is not finite", fix="Enter a finite number.")
        vals[c] = x

    def whole(c, minimum, why):
        x = vals[c]
        _fail_rows(df, x != np.round(x), file=file, column=c, rows=rows,
                   problem=lambda v: f"must be a whole number, got {v}",
                   fix="Counts and sample sizes are integers: correct the value against the "
                       "source, or remove the row.")
        _fail_rows(df, x < minimum, file=file, column=c, rows=rows,
                   problem=lambda v: f"must be >= {minimum}, got {v}", fix=why)

    if m in ("MD", "SMD"):
        for c in ("sd1i", "sd2i"):
            _fail_rows(df, vals[c] <= 0, file=file, column=c, rows=rows,
                       problem=lambda v: f"SD must be > 0, got {v}",
                       fix="Check the SD against the source (an SE or a variance typed as SD?).")
        for c in ("n1i", "n2i"):
            whole(c, 2, f"{m} needs at least 2 patients per arm to have an SD: correct the "
                  f"value against the source, or remove the row.")
    elif m == "MC":
        _fail_rows(df, vals["sdi"] <= 0, file=file, column="sdi", rows=rows,
                   problem=lambda v: f"SD must be > 0, got {v}",
                   fix="Check the SD against the source.")
        whole("ni", 1, "A study needs at least 1 patient: correct the value against the "
                       "source, or remove the row.")
    elif m in ("OR", "RR", "RD", "PETO"):
        for c in cols:
            whole(c, 0, "Counts cannot be negative: correct the value against the source, "
                        "or remove the row.")
        if "n1i" in cols:
            for ev, n in (("ai", "n1i"), ("ci", "n2i")):
                _fail_rows(df, vals[n] < 1, file=file, column=n, rows=rows,
                           problem=lambda v: f"group size must be >= 1, got {v}",
                           fix="Remove the study or correct the group size.")
                mask = vals[ev] > vals[n]
                idx = np.flatnonzero(mask)
                if idx.size:
                    i = idx[0]
                    raise DataError(
                        f"events {ev}={vals[ev][i]:g} exceed the group size {n}={vals[n][i]:g}",
                        file=file, row=rows[i], column=ev,
                        fix="Check the columns: n1i/n2i are group totals, ai/ci events.",
                    )
        else:
            for a, b, g in (("ai", "bi", 1), ("ci", "di", 2)):
                mask = vals[a] + vals[b] < 1
                _fail_rows(df, mask, file=file, column=a, rows=rows,
                           problem=lambda v: f"group {g} is empty ({a} + {b} = 0)",
                           fix="Remove the study or correct the counts.")
    elif m == "GEN":
        v = cols[1]
        _fail_rows(df, vals[v] <= 0, file=file, column=v, rows=rows,
                   problem=lambda x: f"{v} must be > 0, got {x}",
                   fix="A study needs a positive sampling variance (or SE): check the value "
                       "against the source (a rounded 0? a sign lost?), or remove the row.")
        floor = MIN_VARIANCE if v == "vi" else math.sqrt(MIN_VARIANCE)
        _fail_rows(df, vals[v] < floor, file=file, column=v, rows=rows,
                   problem=lambda x: f"{v} = {x} is too small to compute with (its inverse "
                                     f"weight overflows; {v} must be >= {floor:g})",
                   fix="Check the value against the source: a sampling variance this small "
                       "is a typing error (a lost exponent?), not a measurement.")
    from bayesmeta.redundant import check_redundant_columns

    check_redundant_columns(df, m, file=file)
    return df


def validate_published(
    df: pd.DataFrame,
    *,
    measure: str | None = None,
    file=None,
    allow_outside_ci: bool = False,
    analysis_measure: str | None = None,
) -> pd.DataFrame:
    """Check a table of published estimates with ``estimate, ci_low, ci_high``.

    CI bounds reversed (low > high) and a ratio estimate or bound <= 0 are always errors. An
    estimate outside its CI is an error unless ``allow_outside_ci`` (audit mode): then the row is
    kept and the returned copy has a ``finding`` column saying so. The measure is ``measure`` or
    a per-row ``measure`` column (ratio measures: OR, RR, HR, IRR, PETO). With
    ``analysis_measure`` (the measure the rows are analysed as), a row whose own measure is on
    the other scale (an MD row in an OR analysis: ratio vs difference) is an error.
    """
    file = file or df.attrs.get("file")
    rows = _rows_of(df)
    for c in ("estimate", "ci_low", "ci_high"):
        if c not in df.columns:
            sug = suggest_column(c, df.columns)
            raise DataError(f"missing required column {c!r}", file=file, row=1, column=c,
                            fix=f"Did you mean {sug!r}? Rename it to {c!r}." if sug
                            else "Add the column.")
    est = pd.to_numeric(df["estimate"], errors="coerce").to_numpy(float)
    lo = pd.to_numeric(df["ci_low"], errors="coerce").to_numpy(float)
    hi = pd.to_numeric(df["ci_high"], errors="coerce").to_numpy(float)
    if measure is not None:
        ratio = np.full(len(df), str(measure).upper() in RATIO_MEASURES)
    elif "measure" in df.columns:
        ratio = df["measure"].astype(str).str.upper().isin(RATIO_MEASURES).to_numpy()
    else:
        ratio = np.zeros(len(df), bool)
    if analysis_measure is not None and "measure" in df.columns:
        want = str(analysis_measure).upper() in RATIO_MEASURES
        row_ratio = df["measure"].astype(str).str.strip().str.upper().isin(RATIO_MEASURES)
        _fail_rows(df, row_ratio.to_numpy() != want, file=file, column="measure", rows=rows,
                   problem=lambda v: f"row measure {v!r} is "
                                     f"{'not ' if want else ''}a ratio measure, but the rows "
                                     f"are analysed as {str(analysis_measure).upper()}",
                   fix="Analyse ratio measures (OR, RR, HR) and differences (MD, RD) in "
                       "separate specs, or correct the measure column.")
    for c, x in (("estimate", est), ("ci_low", lo), ("ci_high", hi)):
        _fail_rows(df, ~np.isfinite(x) & ~np.isnan(x), file=file, column=c, rows=rows,
                   problem=lambda v: f"value {v!r} is not finite", fix="Enter a finite number.")
        _fail_rows(df, ratio & (x <= 0), file=file, column=c, rows=rows,
                   problem=lambda v: f"a ratio measure (OR/RR/HR) must be > 0, got {v}",
                   fix="Ratios are printed on the ratio scale; a log ratio belongs in 'yi'.")
    _fail_rows(df, lo > hi, file=file, column="ci_low", rows=rows,
               problem=lambda v: f"CI lower bound {v} is above the upper bound",
               fix="Swap ci_low and ci_high, or check for a lost minus sign.")
    from bayesmeta.redundant import check_published_redundant

    check_published_redundant(df, ratio, file=file)
    outside = (est < lo) | (est > hi)
    if outside.any() and not allow_outside_ci:
        i = int(np.flatnonzero(outside)[0])
        raise DataError(
            f"estimate {est[i]:g} lies outside its CI [{lo[i]:g}, {hi[i]:g}]", file=file,
            row=rows[i], column="estimate",
            fix="Check the numbers against the source (a lost minus sign?); to keep a printed "
                "inconsistency as a finding use audit mode (allow_outside_ci=True).",
        )
    out = df.copy()
    if allow_outside_ci:
        out["finding"] = np.where(outside, "estimate outside its CI", "")
    return out
