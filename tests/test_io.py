"""Bad-input catalogue for bayesmeta.io: one test per case.

Reference: the contract in bayesmeta/io.py's docstring and DEVELOPING.md — every bad value is a
DataError whose message names the file, the spreadsheet row (header = row 1) and the column.
Expected rows/columns below are read off the hand-written CSV text in each test.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

from bayesmeta.exceptions import DataError, DataWarning
from bayesmeta.io import read_table, validate_measure_columns, validate_published

MD_COLS = ("study", "m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i")
MD_HEADER = ",".join(MD_COLS)


def write(tmp_path, text, name="d.csv", encoding="utf-8"):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_bytes(text.encode(encoding))
    return p


def where(path, row=None, column=None):
    """Regex for the location prefix of a DataError message."""
    s = re.escape(str(path))
    if row is not None:
        s += re.escape(f", row {row}")
    if column is not None:
        s += re.escape(f", column '{column}'")
    return s


# --- files --------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    p = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=where(p) + ": file not found"):
        read_table(p)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        read_table(tmp_path)


def test_empty_file(tmp_path):
    p = write(tmp_path, "")
    with pytest.raises(DataError, match=where(p) + ": file is empty"):
        read_table(p)


def test_whitespace_only_file_is_empty(tmp_path):
    p = write(tmp_path, "\n  \n")
    with pytest.raises(DataError, match="file is empty"):
        read_table(p)


def test_header_only(tmp_path):
    p = write(tmp_path, MD_HEADER + "\n")
    with pytest.raises(DataError, match="no data rows"):
        read_table(p)


def test_valid_md_file_reads_with_types_and_rows(tmp_path):
    p = write(tmp_path, MD_HEADER + "\nA,1.5,2,10,1,2,12\n\nB,-0.5,1,8,0,1,9\n")
    df = read_table(p, required=MD_COLS)
    assert list(df["study"]) == ["A", "B"]
    assert df["m1i"].tolist() == [1.5, -0.5]
    assert df.attrs["rows"] == [2, 4]  # the blank line is spreadsheet row 3


# --- encodings ----------------------------------------------------------------------------
def test_bom_is_accepted(tmp_path):
    p = write(tmp_path, b"\xef\xbb\xbf" + (MD_HEADER + "\nA,1,2,10,1,2,12\n").encode())
    df = read_table(p, required=MD_COLS)
    assert df.columns[0] == "study"


def test_cp1252_is_refused_with_row(tmp_path):
    # row 3 holds "Müller" in Windows-1252 (0xfc)
    p = write(tmp_path, MD_HEADER + "\nA,1,2,10,1,2,12\nMüller,1,2,10,1,2,12\n",
              encoding="cp1252")
    with pytest.raises(DataError, match=where(p, 3) + r": file is not valid UTF-8.*byte 0xfc.*"
                       r"Re-save it as 'CSV UTF-8"):
        read_table(p)


def test_utf16_is_refused(tmp_path):
    p = write(tmp_path, (MD_HEADER + "\nA,1,2,10,1,2,12\n").encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16"):
        read_table(p)


# --- delimiters and number formats -----------------------------------------------------------
def test_semicolon_delimiter_detected(tmp_path):
    p = write(tmp_path, MD_HEADER.replace(",", ";") + "\nA;1,5;2;10;1;2;12\n")
    with pytest.raises(DataError, match=where(p, 1) + r": the file looks semicolon-separated"):
        read_table(p, required=MD_COLS)


def test_tab_delimiter_detected(tmp_path):
    p = write(tmp_path, MD_HEADER.replace(",", "\t") + "\nA\t1\t2\t10\t1\t2\t12\n")
    with pytest.raises(DataError, match=where(p, 1) + r": the file looks tab-separated"):
        read_table(p, required=MD_COLS)


def test_unquoted_decimal_comma_gives_ragged_row(tmp_path):
    p = write(tmp_path, MD_HEADER + "\nA,1,2,10,1,2,12\nB,1,5,2,10,1,2,12\n")
    with pytest.raises(DataError, match=where(p, 3) + r": row has 8 fields but the header has 7 "
                       r"\(an unquoted decimal comma"):
        read_table(p, required=MD_COLS)


def test_quoted_decimal_comma_refused(tmp_path):
    p = write(tmp_path, MD_HEADER + '\nA,"1,5",2,10,1,2,12\n')
    with pytest.raises(DataError, match=where(p, 2, "m1i") + ": '1,5' uses a decimal comma"):
        read_table(p, required=MD_COLS)


def test_thousands_separator_refused(tmp_path):
    p = write(tmp_path, MD_HEADER + '\nA,1,2,"1,234",1,2,12\n')
    with pytest.raises(DataError, match=where(p, 2, "n1i") + ": '1,234' has a thousands separator"):
        read_table(p, required=MD_COLS)


def test_european_number_refused(tmp_path):
    p = write(tmp_path, MD_HEADER + '\nA,"1.234,5",2,10,1,2,12\n')
    with pytest.raises(DataError, match=where(p, 2, "m1i") + ": .*decimal comma"):
        read_table(p, required=MD_COLS)


def test_unicode_minus_parsed_with_warning(tmp_path):
    p = write(tmp_path, MD_HEADER + "\nA,\u22121.5,2,10,1,2,12\nB,\u2212 0.5,1,8,\u22122,1,9\n")
    with pytest.warns(DataWarning, match=r"converted 3 cell\(s\) with a Unicode minus sign "
                      r"\(U\+2212\).*'m1i' \(2\), 'm2i' \(1\)"):
        df = read_table(p, required=MD_COLS)
    assert df["m1i"].tolist() == [-1.5, -0.5]
    assert df["m2i"].tolist() == [1.0, -2.0]


def test_en_dash_range_refused(tmp_path):
    p = write(tmp_path, "study,estimate,ci_low,ci_high\nPT,-2.69,-4.19\u20131.19,1.19\n")
    with pytest.raises(DataError, match=where(p, 2, "ci_low") + r": '-4.19–1.19' looks like a "
                       r"range.*separate columns"):
        read_table(p)


def test_en_dash_as_minus_refused(tmp_path):
    p = write(tmp_path, MD_HEADER + "\nA,\u20131.5,2,10,1,2,12\n")
    with pytest.raises(DataError, match=where(p, 2, "m1i") + r": '–1.5' contains an en-dash"):
        read_table(p, required=MD_COLS)


def test_ascii_range_refused(tmp_path):
    p = write(tmp_path, "study,estimate,ci_low,ci_high\nX,1,0.5-2.0,2\n")
    with pytest.raises(DataError, match=where(p, 2, "ci_low") + ": '0.5-2.0' looks like a range"):
        read_table(p)


# --- columns and values ------------------------------------------------------------------------
def test_missing_required_column_with_typo_suggestion(tmp_path):
    p = write(tmp_path, "study,m1i,sd1,n1i,m2i,sd2i,n2i\nA,1,2,10,1,2,12\n")
    with pytest.raises(DataError, match=where(p, 1, "sd1i") + r": missing required column "
                       r"'sd1i'\. Did you mean 'sd1'\? Rename column 'sd1' to 'sd1i'"):
        read_table(p, required=MD_COLS)


def test_missing_required_column_case_suggestion(tmp_path):
    p = write(tmp_path, "Study,m1i,sd1i,n1i,m2i,sd2i,n2i\nA,1,2,10,1,2,12\n")
    with pytest.raises(DataError, match="Did you mean 'Study'"):
        read_table(p, required=MD_COLS)


def test_missing_column_without_near_match_lists_columns(tmp_path):
    p = write(tmp_path, "study,yi\nA,1\n")
    with pytest.raises(DataError, match=r"missing required column 'vi'.*the file has: study, yi"):
        read_table(p, required=("study", "yi", "vi"))


def test_duplicate_header(tmp_path):
    p = write(tmp_path, "study,yi,yi\nA,1,2\n")
    with pytest.raises(DataError, match=where(p, 1, "yi") + ": column name 'yi' appears twice"):
        read_table(p)


def test_empty_header_name(tmp_path):
    p = write(tmp_path, "study,,vi\nA,1,2\n")
    with pytest.raises(DataError, match=where(p, 1) + ": column 2 has an empty name"):
        read_table(p)


def test_non_numeric_value(tmp_path):
    p = write(tmp_path, MD_HEADER + "\nA,1,2,10,1,2,12\nB,1,two,10,1,2,12\n")
    with pytest.raises(DataError, match=where(p, 3, "sd1i") + ": non-numeric value 'two'"):
        read_table(p, required=MD_COLS)


def test_missing_value_in_required_column(tmp_path):
    p = write(tmp_path, MD_HEADER + "\nA,1,2,10,1,,12\n")
    with pytest.raises(DataError, match=where(p, 2, "sd2i") + ": missing value"):
        read_table(p, required=MD_COLS)


@pytest.mark.parametrize("token", ["NA", "NaN", "."])
def test_nan_tokens_in_required_column(tmp_path, token):
    p = write(tmp_path, MD_HEADER + f"\nA,1,2,10,{token},2,12\n")
    with pytest.raises(DataError, match=where(p, 2, "m2i") + ": missing value"):
        read_table(p, required=MD_COLS)


def test_missing_value_in_optional_numeric_column_is_nan(tmp_path):
    p = write(tmp_path, "study,yi,vi,sei\nA,1,0.1,\n")
    df = read_table(p, required=("study", "yi", "vi"))
    assert np.isnan(df["sei"].iloc[0])


@pytest.mark.parametrize("token", ["inf", "-Inf", "Infinity"])
def test_infinite_value(tmp_path, token):
    p = write(tmp_path, f"study,yi,vi\nA,{token},0.1\n")
    with pytest.raises(DataError, match=where(p, 2, "yi") + ": value .* is not finite"):
        read_table(p, required=("study", "yi", "vi"))


def test_missing_study_label(tmp_path):
    p = write(tmp_path, "study,yi,vi\nA,1,0.1\n,2,0.2\n")
    with pytest.raises(DataError, match=where(p, 3, "study") + ": missing value"):
        read_table(p, required=("study", "yi", "vi"))


def test_duplicate_study_rows(tmp_path):
    p = write(tmp_path, "study,time,yi,vi\nA,2,1,0.1\nB,2,1,0.1\nA,4,1,0.1\nA,2,3,0.3\n")
    with pytest.raises(DataError, match=where(p, 5, "study") + r": duplicate row for study=A, "
                       r"time=2 \(also in row 2\)"):
        read_table(p)


def test_same_study_at_other_times_is_fine(tmp_path):
    p = write(tmp_path, "study,time,yi,vi\nA,2,1,0.1\nA,4,1,0.1\n")
    assert len(read_table(p)) == 2


def test_non_integer_declared_integer(tmp_path):
    p = write(tmp_path, "study,ai,n1i\nA,2.5,10\n")
    with pytest.raises(DataError, match=where(p, 2, "ai") + ": must be a whole number, got 2.5"):
        read_table(p, integer=("ai", "n1i"))


def test_unbalanced_quote(tmp_path):
    p = write(tmp_path, 'study,yi,vi\nB,1,0.1\n"A,1,0.1\n')
    with pytest.raises(DataError, match=where(p, 3) + r": cannot parse CSV.*unbalanced double quote"):
        read_table(p)


def test_dataframe_input_rows_counted_like_csv():
    df = pd.DataFrame({"study": ["A", "B"], "yi": [1.0, "x"], "vi": [0.1, 0.2]})
    with pytest.raises(DataError, match=r"<DataFrame>, row 3, column 'yi': non-numeric value 'x'"):
        read_table(df, required=("study", "yi", "vi"))


def test_dataframe_input_with_name():
    df = pd.DataFrame({"study": ["A"], "yi": [1.0]})
    with pytest.raises(DataError, match=r"mydata, row 1, column 'vi': missing required column"):
        read_table(df, required=("study", "yi", "vi"), name="mydata")


# --- measure validators ---------------------------------------------------------------------------
def md(tmp_path, rows):
    return read_table(write(tmp_path, MD_HEADER + "\n" + "\n".join(rows) + "\n"), required=MD_COLS)


def test_md_zero_sd(tmp_path):
    df = md(tmp_path, ["A,1,2,10,1,2,12", "B,1,0,10,1,2,12"])
    with pytest.raises(DataError, match=r", row 3, column 'sd1i': SD must be > 0, got 0.0 "
                       r"\(study 'B'\)"):
        validate_measure_columns(df, "MD")


def test_md_negative_sd(tmp_path):
    df = md(tmp_path, ["A,1,2,10,1,-2,12"])
    with pytest.raises(DataError, match=r"row 2, column 'sd2i': SD must be > 0, got -2.0"):
        validate_measure_columns(df, "MD")


def test_smd_n_below_two(tmp_path):
    df = md(tmp_path, ["A,1,2,1,1,2,12"])
    with pytest.raises(DataError, match=r"row 2, column 'n1i': must be >= 2, got 1.0"):
        validate_measure_columns(df, "SMD")


def test_md_non_integer_n(tmp_path):
    df = md(tmp_path, ["A,1,2,10.5,1,2,12"])
    with pytest.raises(DataError, match=r"row 2, column 'n1i': must be a whole number, got 10.5"):
        validate_measure_columns(df, "MD")


def test_md_missing_measure_column_suggests(tmp_path):
    p = write(tmp_path, "study,m1i,sd1i,n1,m2i,sd2i,n2i\nA,1,2,10,1,2,12\n")
    df = read_table(p)
    with pytest.raises(DataError, match=where(p, 1, "n1i") + r": measure MD needs columns.*"
                       r"Did you mean 'n1'"):
        validate_measure_columns(df, "MD")


def test_unknown_measure_suggests():
    df = pd.DataFrame({"yi": [1.0], "vi": [0.1]})
    with pytest.raises(DataError, match=r"Invalid measure 'SMDD'.*Did you mean 'SMD'"):
        validate_measure_columns(df, "SMDD")


def test_events_exceed_total(tmp_path):
    df = read_table(write(tmp_path, "study,ai,n1i,ci,n2i\nA,3,10,2,10\nB,12,10,2,10\n"))
    with pytest.raises(DataError, match=r"row 3, column 'ai': events ai=12 exceed the group size "
                       r"n1i=10"):
        validate_measure_columns(df, "OR")


def test_negative_events(tmp_path):
    df = read_table(write(tmp_path, "study,ai,bi,ci,di\nA,3,10,-2,10\n"))
    with pytest.raises(DataError, match=r"row 2, column 'ci': must be >= 0, got -2.0"):
        validate_measure_columns(df, "RR")


def test_non_integer_counts(tmp_path):
    df = read_table(write(tmp_path, "study,ai,n1i,ci,n2i\nA,3.5,10,2,10\n"))
    with pytest.raises(DataError, match=r"row 2, column 'ai': must be a whole number"):
        validate_measure_columns(df, "RD")


def test_empty_group_in_abcd(tmp_path):
    df = read_table(write(tmp_path, "study,ai,bi,ci,di\nA,0,0,2,10\n"))
    with pytest.raises(DataError, match=r"row 2, column 'ai': group 1 is empty"):
        validate_measure_columns(df, "PETO")


def test_zero_events_both_arms_are_valid_counts(tmp_path):
    # double-zero tables are legal data; what to do with them is the estimator's policy
    df = read_table(write(tmp_path, "study,ai,n1i,ci,n2i\nA,0,10,0,12\nB,0,10,0,9\n"))
    assert validate_measure_columns(df, "OR") is df


def test_mc_requires_positive_sd(tmp_path):
    df = read_table(write(tmp_path, "study,mi,sdi,ni\nA,1,0,5\n"))
    with pytest.raises(DataError, match=r"row 2, column 'sdi': SD must be > 0"):
        validate_measure_columns(df, "MC")


def test_gen_vi_must_be_positive(tmp_path):
    df = read_table(write(tmp_path, "study,yi,vi\nA,1,0.1\nB,1,0\n"))
    with pytest.raises(DataError, match=r"row 3, column 'vi': vi must be > 0"):
        validate_measure_columns(df, "GEN")


def test_gen_accepts_sei(tmp_path):
    df = read_table(write(tmp_path, "study,yi,sei\nA,1,0.1\n"))
    assert validate_measure_columns(df, "GEN") is df
    bad = read_table(write(tmp_path, "study,yi,sei\nA,1,-0.1\n", name="e.csv"))
    with pytest.raises(DataError, match=r"column 'sei': sei must be > 0"):
        validate_measure_columns(bad, "GEN")


def test_measure_missing_value_located():
    df = pd.DataFrame({"study": ["A", "B"], "yi": [1.0, np.nan], "vi": [0.1, 0.1]})
    with pytest.raises(DataError, match=r"row 3, column 'yi': missing value"):
        validate_measure_columns(df, "GEN", file="x.csv")


# --- published-estimate tables ---------------------------------------------------------------------
PUB = "study,measure,estimate,ci_low,ci_high\n"


def test_published_ci_reversed(tmp_path):
    p = write(tmp_path, PUB + "A,MD,1,0.5,2\nB,MD,1,2,0.5\n")
    with pytest.raises(DataError, match=where(p, 3, "ci_low") + ": CI lower bound 2.0 is above"):
        validate_published(read_table(p))


def test_published_estimate_outside_ci(tmp_path):
    p = write(tmp_path, PUB + "A,MD,3,0.5,2\n")
    with pytest.raises(DataError, match=where(p, 2, "estimate") + r": estimate 3 lies outside its "
                       r"CI \[0.5, 2\].*audit mode"):
        validate_published(read_table(p))


def test_published_outside_ci_kept_as_finding_in_audit_mode(tmp_path):
    p = write(tmp_path, PUB + "A,MD,3,0.5,2\nB,MD,1,0.5,2\n")
    out = validate_published(read_table(p), allow_outside_ci=True)
    assert out["finding"].tolist() == ["estimate outside its CI", ""]


def test_published_ratio_nonpositive(tmp_path):
    p = write(tmp_path, PUB + "A,OR,0,0.5,2\n")
    with pytest.raises(DataError, match=where(p, 2, "estimate") + r": a ratio measure .* must be "
                       r"> 0, got 0.0"):
        validate_published(read_table(p))


def test_published_ratio_bound_nonpositive(tmp_path):
    p = write(tmp_path, PUB + "A,RR,0.5,-0.1,2\n")
    with pytest.raises(DataError, match=where(p, 2, "ci_low") + r": a ratio measure"):
        validate_published(read_table(p))


def test_published_missing_column_suggests(tmp_path):
    p = write(tmp_path, "study,estimate,ci_lo,ci_high\nA,1,0.5,2\n")
    with pytest.raises(DataError, match=r"missing required column 'ci_low'.*Did you mean 'ci_lo'"):
        validate_published(read_table(p))


def test_no_warning_on_clean_file(tmp_path):
    p = write(tmp_path, MD_HEADER + "\nA,1,2,10,1,2,12\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_measure_columns(read_table(p, required=MD_COLS), "MD")


def test_numeric_study_ids_stay_labels_and_integer_columns_are_int(tmp_path):
    p = write(tmp_path, "study,time,yi,vi\n1,2,0.5,0.1\n2,4,0.4,0.2\n")
    df = read_table(p)
    assert df["study"].tolist() == ["1", "2"]
    assert df["time"].dtype == np.int64
    assert df["yi"].dtype == np.float64
