"""Bad-input catalogue: every kind of bad input, through the real CLI.

Contract under test (DEVELOPING.md, style §10.5): bad input gives exit code 2, no
traceback, exactly one line on stderr that starts with ``error:`` and names the file, the row
and the column (for a spec: the spec file, the line and the key), says what is wrong and what
to do; nothing is written to stdout and no output file or directory is (half-)written.
``warning:`` lines may precede the error (they say what was done, e.g. a continuity
correction); ``bayesmeta validate`` may end with its ``N of M spec(s) invalid`` summary.

Reference: the contract itself; each expected fragment is what the contract asks
the message to contain (location + the offending value or key + a remedy), not a copy of our
own output. Cases that document a defect are ``xfail(strict=True)`` naming file:function.

Most cases run ``bayesmeta.cli.main`` in-process (``capsys``); ``TestSubprocess`` runs
``python -m bayesmeta`` to prove the exit code and the absence of a traceback end to end.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from bayesmeta.cli import main

ROOT = Path(__file__).parents[1]
HAS_BAYES_CLI = importlib.util.find_spec("bayesmeta.cli._bayes") is not None
BAYES_MISSING = pytest.mark.xfail(
    not HAS_BAYES_CLI, strict=True,
    reason="`bayesmeta bayes` not implemented yet (bayesmeta/cli/_bayes.py missing)")

MD = "study,m1i,sd1i,n1i,m2i,sd2i,n2i\n"
MD_OK = "B,2.0,1.5,12,0.5,1.0,11\nC,0.5,1.0,20,0.0,1.2,20\n"
OR = "study,ai,n1i,ci,n2i\n"
OR_OK = "B,3,20,6,21\nC,5,30,9,28\n"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def cli(capsys, *argv):
    """Run the CLI in-process; returns (exit code, stdout, stderr).

    An uncaught exception is returned as code ``"traceback"`` with the traceback as stderr,
    so the contract assertions fail with a readable message instead of erroring.
    """
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    except BaseException:  # noqa: BLE001 - a traceback is exactly the defect we look for
        cap = capsys.readouterr()
        return "traceback", cap.out, cap.err + traceback.format_exc()
    cap = capsys.readouterr()
    return code, cap.out, cap.err


_SUMMARY = re.compile(r"^\d+ of \d+ spec\(s\) invalid$")


def error_line(code, out, err, *, validate=False) -> str:
    """Assert the bad-input contract; return the single error line."""
    assert code == 2, f"exit code {code!r}, expected 2; stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    if validate:
        lines = [ln for ln in lines if not _SUMMARY.match(ln)]
    assert len(lines) == 1, f"expected exactly one error line on stderr, got:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    assert out.strip() == "", f"nothing may go to stdout on error, got:\n{out}"
    return lines[0]


def has_all(line: str, *needles):
    for n in needles:
        if isinstance(n, re.Pattern):
            assert n.search(line), f"{n.pattern!r} not in: {line}"
        else:
            assert n in line, f"{n!r} not in: {line}"


def write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# 1. CSV through `bayesmeta classical`
# ---------------------------------------------------------------------------------------------
# (id, file content, measure, extra args, fragments the one error line must contain).
# Every message must name the file; row/column fragments are listed per case.
FIX = re.compile(r"(?i)\b(check|use|enter|fill|remove|re-save|rename|did you mean|add|put|give|"
                 r"write|type|replace|swap|provide)\b")
CSV_CASES = [
    ("missing-required-column", "study,m1i,sd1i,n1i,m2i,sd2i\nA,1,1,10,0,1\n", "MD", [],
     ["row 1", "column 'n2i'", "n2i"]),
    ("typo-of-required-column", "study,m1i,sd1,n1i,m2i,sd2i,n2i\nA,1,1,10,0,1,10\n" + MD_OK,
     "MD", [], ["row 1", "column 'sd1i'", "Did you mean 'sd1'"]),
    ("typo-of-event-column", "study,ai,n1i,cii,n2i\nA,1,10,2,10\n", "OR", [],
     ["row 1", "column 'ci'", "Did you mean 'cii'"]),
    ("non-numeric-value", MD + "A,1,abc,10,0,1,10\n" + MD_OK, "MD", [],
     ["row 2", "column 'sd1i'", "'abc'"]),
    ("nan-value", MD + "A,1,1,10,NaN,1,10\n" + MD_OK, "MD", [],
     ["row 2", "column 'm2i'", "missing"]),
    ("blank-required-cell", MD + "A,1,1,10,,1,10\n" + MD_OK, "MD", [],
     ["row 2", "column 'm2i'", "missing"]),
    ("inf-value", MD + "A,1,1,10,0,inf,10\n" + MD_OK, "MD", [],
     ["row 2", "column 'sd2i'", "finite"]),
    ("negative-inf-value", "study,yi,vi\nA,-Infinity,0.1\nB,0.2,0.1\n", "GEN", [],
     ["row 2", "column 'yi'", "finite"]),
    ("negative-sd", MD + MD_OK + "D,1,-1.2,10,0,1,10\n", "MD", [],
     ["row 4", "column 'sd1i'", "-1.2"]),
    ("zero-sd", MD + MD_OK + "D,1,1,10,0,0,10\n", "MD", [],
     ["row 4", "column 'sd2i'", re.compile(r"> ?0")]),
    ("zero-sd-one-arm", "study,mi,sdi,ni\nA,1,0,10\nB,2,1,12\n", "MC", [],
     ["row 2", "column 'sdi'", re.compile(r"> ?0")]),
    ("n-zero", MD + "A,1,1,0,0,1,10\n" + MD_OK, "MD", [],
     ["row 2", "column 'n1i'"]),
    ("n-negative-one-arm", "study,mi,sdi,ni\nA,1,1,-3\nB,2,1,12\n", "MC", [],
     ["row 2", "column 'ni'"]),
    ("n-not-integer", MD + "A,1,1,10.5,0,1,10\n" + MD_OK, "MD", [],
     ["row 2", "column 'n1i'", "whole number"]),
    ("events-exceed-total", OR + "A,12,10,3,10\n" + OR_OK, "OR", [],
     ["row 2", "column 'ai'", "12", "10"]),
    ("negative-events", OR + OR_OK + "D,2,10,-1,10\n", "RR", [],
     ["row 4", "column 'ci'", "-1"]),
    ("events-not-integer", OR + "A,2.5,10,3,10\n" + OR_OK, "OR", [],
     ["row 2", "column 'ai'", "whole number"]),
    ("empty-arm-2x2", "study,ai,bi,ci,di\nA,0,0,3,7\nB,1,9,2,8\n", "OR", [],
     ["row 2", "column 'ai'"]),
    ("gen-vi-not-positive", "study,yi,vi\nA,0.1,0.04\nB,0.3,0\n", "GEN", [],
     ["row 3", "column 'vi'"]),
    ("gen-sei-negative", "study,yi,sei\nA,0.1,0.2\nB,0.3,-0.1\n", "GEN", [],
     ["row 3", "column 'sei'"]),
    ("gen-needs-vi-or-sei", "study,yi,se\nA,0.1,0.2\nB,0.3,0.1\n", "GEN", [],
     ["row 1", "column 'vi'"]),
    ("duplicate-study", MD + "A,1,1,10,0,1,10\n" + MD_OK + "A,1,1,10,0,1,10\n", "MD", [],
     ["row 5", "column 'study'", "rows 2 and 5", "identical"]),
    ("duplicate-study-same-time",
     "study,time,m1i,sd1i,n1i,m2i,sd2i,n2i\nA,4,1,1,10,0,1,10\nA,8,1,1,10,0,1,10\n"
     "B,4,1,1,10,0,1,10\nA,4,2,1,10,0,1,10\n", "MD", [],
     ["row 5", "time '4'", "rows 2 and 5"]),
    ("duplicate-study-same-subgroup",
     "study,subgroup,m1i,sd1i,n1i,m2i,sd2i,n2i\nA,x,1,1,10,0,1,10\nA,y,1,1,10,0,1,10\n"
     "A,x,1,1,10,0,1,10\n", "MD", [],
     ["row 4", "subgroup 'x'", "rows 2 and 4", "identical"]),
    ("empty-file", "", "MD", [], ["empty"]),
    ("whitespace-only-file", "\n \n", "MD", [], ["empty"]),
    ("header-only", MD, "MD", [], ["no data rows"]),
    ("semicolon-delimiter", "study;m1i;sd1i;n1i;m2i;sd2i;n2i\nA;1;1;10;0;1;10\n", "MD", [],
     ["row 1", "semicolon"]),
    ("tab-delimiter", "study\tm1i\tsd1i\tn1i\tm2i\tsd2i\tn2i\nA\t1\t1\t10\t0\t1\t10\n", "MD",
     [], ["row 1", "tab"]),
    ("latin-1-encoding", (MD + "M\u00fcller 2011,1,1,10,0,1,10\n" + MD_OK).encode("latin-1"),
     "MD", [], ["row 2", "UTF-8"]),
    ("windows-1252-minus", (MD + "A,1,1,10,\u20130.5,1,10\n").encode("cp1252"), "MD", [],
     ["row 2", "UTF-8"]),
    ("utf-16-encoding", (MD + "A,1,1,10,0,1,10\n").encode("utf-16"), "MD", [], ["UTF-16"]),
    ("thousands-separator", MD + 'A,1,1,"1,234",0,1,10\n' + MD_OK, "MD", [],
     ["row 2", "column 'n1i'", "'1,234'", "thousands"]),
    ("decimal-comma", MD + 'A,"1,5",1,10,0,1,10\n' + MD_OK, "MD", [],
     ["row 2", "column 'm1i'", "'1,5'", "decimal"]),
    ("unquoted-decimal-comma", MD + "A,1,5,1,10,0,1,10\n" + MD_OK, "MD", [],
     ["row 2", "fields"]),
    ("en-dash-minus", MD + "A,\u20131.5,1,10,0,1,10\n" + MD_OK, "MD", [],
     ["row 2", "column 'm1i'", "dash"]),
    ("em-dash-minus", "study,yi,vi\nA,\u20141.5,0.1\nB,0.2,0.1\n", "GEN", [],
     ["row 2", "column 'yi'", "dash"]),
    ("pasted-ci-range", "study,yi,vi\nA,-4.19\u20131.19,0.1\nB,0.2,0.1\n", "GEN", [],
     ["row 2", "column 'yi'", "range"]),
    ("unbalanced-quote", MD + 'A,"1,1,10,0,1,10\n' + MD_OK, "MD", [], ["quote"]),
    ("ragged-row-too-many-fields", MD + "A,1,1,10,0,1,10,7\n", "MD", [], ["row 2", "fields"]),
    ("empty-column-name", "study,m1i,,n1i,m2i,sd2i,n2i\nA,1,1,10,0,1,10\n", "MD", [],
     ["row 1", "empty name"]),
    ("duplicate-column-name", "study,m1i,m1i,n1i,m2i,sd2i,n2i\nA,1,1,10,0,1,10\n", "MD", [],
     ["row 1", "column 'm1i'", "twice"]),
    ("by-column-missing", MD + "A,1,1,10,0,1,10\n" + MD_OK, "MD", ["--by", "week"],
     ["row 1", "column 'week'"]),
]


def _csv_param(c):
    return pytest.param(*c[1:], id=c[0])


@pytest.mark.parametrize("content,measure,extra,needles", [_csv_param(c) for c in CSV_CASES])
def test_csv_classical(capsys, tmp_path, content, measure, extra, needles):
    f = write(tmp_path / "studies.csv", content)
    line = error_line(*cli(capsys, "classical", f, "--measure", measure, *extra))
    has_all(line, str(f), *needles)
    assert FIX.search(line.split(":", 1)[1]), f"message says nothing about what to do: {line}"


def test_csv_classical_same_label_different_data_is_two_studies(capsys, tmp_path):
    """Two first authors called A (different data, no time column): two studies, each
    relabelled with its row, and one warning line naming both rows."""
    f = write(tmp_path / "studies.csv", MD + "A,1,1,10,0,1,10\n" + MD_OK + "A,1.1,1,10,0,1,10\n")
    code, out, err = cli(capsys, "classical", f, "--measure", "MD", "--json")
    assert code == 0, err
    assert json.loads(out)["k"] == 4
    (w,) = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    has_all(w, "rows 2, 5", "'A (row 2)'", "'A (row 5)'")


def test_file_not_found(capsys, tmp_path):
    f = tmp_path / "nope.csv"
    line = error_line(*cli(capsys, "classical", f, "--measure", "MD"))
    has_all(line, str(f), "not found")


def test_directory_instead_of_file(capsys, tmp_path):
    line = error_line(*cli(capsys, "classical", tmp_path, "--measure", "MD"))
    has_all(line, str(tmp_path), "directory")


def test_bom_is_accepted(capsys, tmp_path):
    """Excel's 'CSV UTF-8' writes a BOM: it must be read, with the same numbers as without."""
    body = MD + "A,1,1,10,0,1,10\n" + MD_OK
    plain = write(tmp_path / "plain.csv", body)
    bom = write(tmp_path / "bom.csv", b"\xef\xbb\xbf" + body.encode())
    c1, o1, e1 = cli(capsys, "classical", plain, "--measure", "MD", "--json")
    c2, o2, e2 = cli(capsys, "classical", bom, "--measure", "MD", "--json")
    assert (c1, c2) == (0, 0), e2
    assert o1 == o2


def test_unicode_minus_is_parsed_with_warning(capsys, tmp_path):
    """U+2212 as printed in papers is a minus sign: parsed, and one warning says so."""
    ascii_ = write(tmp_path / "a.csv", MD + "A,-1.5,1,10,0,1,10\n" + MD_OK)
    uni = write(tmp_path / "u.csv", MD + "A,\u22121.5,1,10,0,1,10\n" + MD_OK)
    c1, o1, _ = cli(capsys, "classical", ascii_, "--measure", "MD", "--json")
    c2, o2, e2 = cli(capsys, "classical", uni, "--measure", "MD", "--json")
    assert (c1, c2) == (0, 0), e2
    assert o1 == o2
    warn = [ln for ln in e2.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "U+2212" in warn[0] and "m1i" in warn[0], e2


def test_one_study_is_a_clear_warning(capsys, tmp_path):
    """Decision (as the classical engine does, like metafor): k = 1 runs, with a warning that
    tau² is not estimable; the estimate is that study's own MD (closed form: 1 - 0 = 1)."""
    f = write(tmp_path / "one.csv", MD + "A,1,1,10,0,1,10\n")
    code, out, err = cli(capsys, "classical", f, "--measure", "MD", "--json")
    assert code == 0, err
    assert "Traceback" not in err
    warn = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "1 study" in warn[0] and "tau" in warn[0], err
    assert '"estimate": 1.0' in out and '"k": 1' in out


@pytest.mark.parametrize("measure", ["OR", "RR"])
def test_all_double_zero_ratio_is_refused(capsys, tmp_path, measure):
    """Every study with zero events in both arms carries no information about OR/RR: refuse,
    say so, and point to RD (which is defined: 0)."""
    f = write(tmp_path / "zero.csv", OR + "A,0,10,0,10\nB,0,12,0,11\n")
    line = error_line(*cli(capsys, "classical", f, "--measure", measure))
    has_all(line, str(f), "both arms", "RD")


@pytest.mark.parametrize("method", ["MH", "PETO"])
def test_all_double_zero_mh_peto_refused(capsys, tmp_path, method):
    f = write(tmp_path / "zero.csv", OR + "A,0,10,0,10\nB,0,12,0,11\n")
    line = error_line(*cli(capsys, "classical", f, "--measure", "OR", "--method", method))
    has_all(line, re.compile(r"(?i)no events|zero events"))


@pytest.mark.parametrize("measure", ["RR", "RD", "OR"])
def test_mh_all_tables_uninformative(capsys, tmp_path, measure):
    """One table with all events in both arms, one with none: after dropping them (as RevMan
    and metafor's rma.mh do) nothing is left: a one-line error, not a traceback."""
    f = write(tmp_path / "t.csv", "study,ai,bi,ci,di\nA,2,0,2,0\nB,0,2,0,2\n")
    line = error_line(*cli(capsys, "classical", f, "--measure", measure, "--method", "MH"))
    has_all(line, re.compile(r"(?i)undefined|no events|no information"))


def test_all_double_zero_rd_is_defined(capsys, tmp_path):
    """RD of double-zero tables is defined (closed form without correction: 0/10 - 0/12 = 0):
    analysed, not refused. metafor's default continuity correction (0.5 added to tables with a
    zero cell, which applies to RD too) moves each RD by at most 0.5/10.5 - 0.5/13 < 0.01."""
    import json

    f = write(tmp_path / "zero.csv", OR + "A,0,10,0,10\nB,0,12,0,11\n")
    code, out, err = cli(capsys, "classical", f, "--measure", "RD", "--method", "FE", "--json")
    assert code == 0, err
    assert abs(json.loads(out)["estimate"]) < 0.01


# ---------------------------------------------------------------------------------------------
# 2. command-line arguments
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opt,value", [("--measure", "MDX"), ("--method", "REMLL"),
                                       ("--test", "t"), ("--preset", "revman6")])
def test_unknown_choice_on_cli(capsys, tmp_path, opt, value):
    """argparse: exit 2, no traceback; the message names the option, the bad value and the
    valid choices (argparse adds its usage lines above the error)."""
    f = write(tmp_path / "s.csv", MD + "A,1,1,10,0,1,10\n" + MD_OK)
    argv = ["classical", f, "--measure", "MD", opt, value]
    if opt == "--measure":
        argv = ["classical", f, opt, value]
    code, out, err = cli(capsys, *argv)
    assert code == 2 and "Traceback" not in err and out == ""
    last = err.strip().splitlines()[-1]
    has_all(last, "error:", opt, repr(value), "choose from")


@pytest.mark.parametrize("argv,needles", [
    (["--measure", "MD", "--method", "MH"], ["MH", "OR"]),
    (["--measure", "MD", "--method", "PETO"], ["PETO"]),
    (["--measure", "MD", "--preset", "revman5", "--method", "REML"], ["revman5", "REML"]),
    (["--measure", "MD", "--preset", "revman5", "--test", "knha"], ["revman5", "knha"]),
], ids=["mh-needs-2x2", "peto-needs-2x2", "revman5-no-reml", "revman5-no-knha"])
def test_contradictory_cli_settings(capsys, tmp_path, argv, needles):
    f = write(tmp_path / "s.csv", MD + "A,1,1,10,0,1,10\n" + MD_OK)
    line = error_line(*cli(capsys, "classical", f, *argv))
    has_all(line, *needles)


# ---------------------------------------------------------------------------------------------
# 3. `bayesmeta bayes` (documented contract; bayesmeta/cli/_bayes.py)
# ---------------------------------------------------------------------------------------------
@BAYES_MISSING
def test_bayes_runs_on_good_input(capsys, tmp_path):
    f = write(tmp_path / "s.csv", MD + "A,1,1,10,0,1,10\n" + MD_OK)
    code, out, err = cli(capsys, "bayes", f, "--measure", "MD", "--tau-prior", "halfnormal:1")
    assert code == 0, err
    assert out.strip()


@pytest.mark.parametrize("prior,needles", [
    ("halfnorml:1", ["--tau-prior", "halfnorml", "halfnormal"]),
    ("halfnormal:0", ["--tau-prior", re.compile(r"> ?0")]),
    ("halfnormal:-1", ["--tau-prior", re.compile(r"> ?0")]),
    ("halfnormal:abc", ["--tau-prior", "abc"]),
], ids=["unknown-prior", "scale-zero", "scale-negative", "scale-non-numeric"])
def test_bayes_bad_tau_prior(capsys, tmp_path, prior, needles):
    f = write(tmp_path / "s.csv", MD + "A,1,1,10,0,1,10\n" + MD_OK)
    line = error_line(*cli(capsys, "bayes", f, "--measure", "MD", "--tau-prior", prior))
    has_all(line, *needles)


@BAYES_MISSING
@pytest.mark.parametrize("content,needles", [
    (MD + "A,1,-1,10,0,1,10\n" + MD_OK, ["row 2", "column 'sd1i'"]),
    (MD + "A,1,1,10,\u20130.5,1,10\n" + MD_OK, ["row 2", "column 'm2i'", "dash"]),
    (MD + "A,1,1,10,0,1,10\n" + MD_OK + "A,1,1,10,0,1,10\n", ["row 5", "column 'study'"]),
], ids=["negative-sd", "en-dash", "duplicate-study"])
def test_bayes_bad_csv(capsys, tmp_path, content, needles):
    """The Bayesian command reads data exactly as the classical one (io.read_table)."""
    f = write(tmp_path / "s.csv", content)
    line = error_line(*cli(capsys, "bayes", f, "--measure", "MD", "--tau-prior",
                           "halfnormal:1"))
    has_all(line, str(f), *needles)


# ---------------------------------------------------------------------------------------------
# 4. TOML specs through `bayesmeta validate` and `bayesmeta run`
# ---------------------------------------------------------------------------------------------
SPEC = '''[analysis]
name = "hardening"
title = "hardening test"
description = "d"

[data]
path = "data.csv"
measure = "MD"

[classical]
method = "DL"

[bayes]
tau_prior = "halfnormal:1"
'''
GOOD_MD = MD + "A,1,1,10,0,1,10\n" + MD_OK


@pytest.fixture
def project(tmp_path):
    """A stand-alone project: a spec and its data side by side (no pyproject.toml above)."""
    d = tmp_path / "proj"
    d.mkdir()
    write(d / "data.csv", GOOD_MD)
    return d


def _spec(project: Path, text: str, name="spec.toml") -> Path:
    return write(project / name, text)


def _line_of(text: str, fragment: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if fragment in ln)


# (id, spec text, fragment marking the expected line (or None), fragments of the message)
SPEC_CASES = [
    ("syntax-error", SPEC.replace('measure = "MD"', 'measure = "MD'), 'measure = "MD',
     [re.compile(r"(?i)toml")]),
    ("syntax-error-missing-bracket", SPEC.replace("[classical]", "[classical"), "[classical",
     [re.compile(r"(?i)toml")]),
    ("unknown-key-suggests", SPEC.replace('method = "DL"', 'methd = "DL"'), "methd",
     ["key 'classical.methd'", "Did you mean 'method'"]),
    ("unknown-key-no-suggestion", SPEC.replace('method = "DL"', 'method = "DL"\ncolour = 1'),
     "colour", ["key 'classical.colour'", "valid keys"]),
    ("unknown-section", SPEC + "\n[sampler]\ndraws = 100\n", "[sampler]",
     ["sampler", "Did you mean [sampling]"]),
    ("wrong-type", SPEC.replace('method = "DL"', "method = 3"), "method = 3",
     ["key 'classical.method'", "string"]),
    ("wrong-type-int", SPEC + "\n[sampling]\ndraws = \"many\"\n", "draws",
     ["key 'sampling.draws'", "integer"]),
    ("missing-required-key", SPEC.replace('measure = "MD"\n', ""), None,
     ["data.measure", "Add"]),
    ("kind-refused", SPEC.replace('description = "d"', 'kind = "generic"'), "kind =",
     ["key 'analysis.kind'", "no longer exists", "needs no kind", "Remove 'kind'"]),
    ("unknown-row-kind",
     SPEC.replace('measure = "MD"', 'measure = "MD"\nrow_kind = "published_pooled"'),
     "row_kind =", ["key 'data.row_kind'", "Did you mean 'published'"]),
    ("unknown-measure", SPEC.replace('measure = "MD"', 'measure = "MDD"'), "measure =",
     ["key 'data.measure'", "'MDD'", "MD"]),
    ("unknown-method", SPEC.replace('method = "DL"', 'method = "REMLL"'), "method =",
     ["key 'classical.method'", "Did you mean 'REML'"]),
    ("unknown-prior", SPEC.replace("halfnormal:1", "halfnorml:1"), "tau_prior",
     ["key 'bayes.tau_prior'", "halfnormal"]),
    ("unknown-model", SPEC.replace("[bayes]", '[bayes]\nmodel = "nnhmm"'), "model =",
     ["key 'bayes.model'", "Did you mean 'nnhm'"]),
    ("prior-scale-zero", SPEC.replace("halfnormal:1", "halfnormal:0"), "tau_prior",
     ["key 'bayes.tau_prior'", re.compile(r"> ?0")]),
    ("prior-scale-negative", SPEC.replace("halfnormal:1", "halfcauchy:-0.5"), "tau_prior",
     ["key 'bayes.tau_prior'", re.compile(r"> ?0")]),
    ("mu-prior-sd-zero", SPEC.replace("[bayes]", '[bayes]\nmu_prior = "normal:0:0"'),
     "mu_prior", ["key 'bayes.mu_prior'", re.compile(r"> ?0")]),
    ("sensitivity-prior-scale-zero",
     SPEC + '\n[sensitivity]\ntau_priors = ["halfnormal:0"]\n', "tau_priors",
     ["key 'sensitivity.tau_priors'", re.compile(r"> ?0")]),
    ("data-file-missing", SPEC.replace("data.csv", "nope.csv"), "path =",
     ["key 'data.path'", "nope.csv", "not found"]),
    ("data-file-missing-outside-project", SPEC.replace("data.csv", "../../../nope/x.csv"),
     "path =", ["key 'data.path'", "x.csv", "not found"]),
    ("unknown-dataset", SPEC.replace('path = "data.csv"', 'dataset = "bcgg"'), "dataset =",
     ["key 'data.dataset'", "Did you mean 'bcg'"]),
    ("dataset-and-path", SPEC.replace('path = "data.csv"',
                                      'path = "data.csv"\ndataset = "bcg"'), None,
     ["dataset", "path"]),
    ("contradictory-mh-with-md", SPEC.replace('method = "DL"', 'method = "MH"'), "method =",
     ["key 'classical.method'", "MH", "MD"]),
    ("contradictory-revman5-reml",
     SPEC.replace('method = "DL"', 'method = "REML"\npreset = "revman5"'), "method =",
     ["revman5", "REML"]),
    ("contradictory-exact-binomial-normal",
     SPEC.replace("[bayes]", '[bayes]\nmodel = "binomial-normal"\nengine = "exact"'), "engine =",
     ["key 'bayes.engine'", "exact", "binomial-normal"]),
    ("model-the-design-cannot-carry", SPEC.replace("[bayes]", '[bayes]\nmodel = "nested"'),
     "model =", ["key 'bayes.model'", "nested", "two cells"]),
    ("contradictory-fast-draws", SPEC + "\n[sampling]\ndraws = 100\nfast_draws = 500\n",
     "fast_draws", ["key 'sampling.fast_draws'"]),
    ("ci-prob-out-of-range", SPEC + "\n[report]\nci_prob = 95\n", "ci_prob",
     ["key 'report.ci_prob'", "95"]),
    ("column-not-in-data", SPEC.replace('measure = "MD"', 'measure = "MD"\ntime = "week"'),
     "time =", ["key 'data.time'", "week"]),
]


@pytest.mark.parametrize("text,line_of,needles", [
    pytest.param(*c[1:], id=c[0]) for c in SPEC_CASES])
def test_spec_validate(capsys, project, text, line_of, needles):
    spec = _spec(project, text)
    line = error_line(*cli(capsys, "validate", spec), validate=True)
    has_all(line, str(spec), *needles)
    if line_of is not None:
        has_all(line, f"line {_line_of(text, line_of)}")


@pytest.mark.parametrize("text,line_of,needles",
                         [c[1:] for c in SPEC_CASES if c[0] in (
                             "syntax-error", "unknown-key-suggests", "prior-scale-zero",
                             "data-file-missing-outside-project", "contradictory-mh-with-md",
                             "model-the-design-cannot-carry")],
                         ids=["syntax-error", "unknown-key-suggests", "prior-scale-zero",
                              "data-file-missing-outside-project", "contradictory-mh-with-md",
                              "model-the-design-cannot-carry"])
def test_spec_run_refuses_before_writing(capsys, project, text, line_of, needles):
    """`bayesmeta run` validates before running: same one-line error, no output directory."""
    spec = _spec(project, text)
    out_dir = project / "report"
    line = error_line(*cli(capsys, "run", spec, "--out", out_dir, "-q"))
    has_all(line, str(spec), *needles)
    assert not out_dir.exists()
    assert not [p for p in project.iterdir() if p.name.startswith(".report")]


@pytest.mark.parametrize("how", ["relative-outside-project", "absolute"])
def test_spec_data_may_live_outside_the_project(capsys, tmp_path, project, how):
    """Users keep data anywhere: a data path relative to the spec may leave the spec's
    directory, and an absolute one is accepted (validate exits 0, says the spec is valid)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = write(elsewhere / "trials.csv", GOOD_MD)
    ref = "../elsewhere/trials.csv" if how != "absolute" else str(data)
    spec = _spec(project, SPEC.replace('"data.csv"', f'"{ref}"'))
    code, out, err = cli(capsys, "validate", spec)
    assert code == 0 and "Traceback" not in err, err
    assert out.startswith("ok ") and str(spec) in out, out


def test_spec_file_not_found(capsys, project):
    spec = project / "nope.toml"
    line = error_line(*cli(capsys, "validate", spec), validate=True)
    has_all(line, str(spec), "not found")


def test_spec_not_utf8(capsys, project):
    spec = write(project / "spec.toml", SPEC.replace("hardening test", "M\u00fcller").encode(
        "latin-1"))
    line = error_line(*cli(capsys, "validate", spec), validate=True)
    has_all(line, str(spec), "UTF-8")


# -- data files named by a spec: `run` must check them as `classical` does (io.read_table) -----
RUN_DATA_CASES = [
    ("negative-sd", MD + "A,1,-1,10,0,1,10\n" + MD_OK, ["row 2", "column 'sd1i'", "-1"]),
    ("non-numeric", MD + "A,1,abc,10,0,1,10\n" + MD_OK, ["row 2", "column 'sd1i'", "'abc'"]),
    ("en-dash", MD + "A,\u20131,1,10,0,1,10\n" + MD_OK, ["row 2", "column 'm1i'", "dash"]),
    ("duplicate-study", MD + "A,1,1,10,0,1,10\n" + MD_OK + "A,1,1,10,0,1,10\n",
     ["row 5", "column 'study'", "identical"]),
    ("latin-1", (MD + "M\u00fcller,1,1,10,0,1,10\n" + MD_OK).encode("latin-1"),
     ["row 2", "UTF-8"]),
    ("missing-column", "study,m1i,sd1i,n1i,m2i,sd2i\nA,1,1,10,0,1\n",
     ["row 1", "column 'n2i'"]),
]


@pytest.mark.parametrize("content,needles", [c[1:] for c in RUN_DATA_CASES],
                         ids=[c[0] for c in RUN_DATA_CASES])
def test_run_bad_data_file(capsys, project, content, needles):
    data = write(project / "data.csv", content)
    spec = _spec(project, SPEC)
    out_dir = project / "report"
    line = error_line(*cli(capsys, "run", spec, "--out", out_dir, "-q"))
    has_all(line, str(data.name), *needles)
    assert not out_dir.exists()


def test_same_label_different_data_is_two_studies_with_a_warning(capsys, project):
    """Design rule: without a time column, two rows with one study label and different data
    are two studies (two first authors called A): analysed as such, and one warning names
    both rows and their new labels (never silently merged or dropped)."""
    write(project / "data.csv", MD + "A,1,1,10,0,1,10\n" + MD_OK + "A,2,1,10,0,1,10\n")
    spec = _spec(project, SPEC)
    code, out, err = cli(capsys, "validate", spec)
    assert code == 0, err
    warn = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1, err
    has_all(warn[0], "data.csv", "rows 2, 5", "'A (row 2)'", "'A (row 5)'")


def test_validate_checks_data_values(capsys, project):
    write(project / "data.csv", MD + "A,1,-1,10,0,1,10\n" + MD_OK)
    spec = _spec(project, SPEC)
    line = error_line(*cli(capsys, "validate", spec), validate=True)
    has_all(line, "data.csv", "row 2", "column 'sd1i'")


PUB_SPEC = '''[analysis]
name = "pub"
title = "published ORs"

[data]
path = "pub.csv"
measure = "OR"
row_kind = "published"
outcome = "outcome"
'''
PUB = "outcome,measure,estimate,ci_low,ci_high\n"
PUB_CASES = [
    ("ci-low-above-high", PUB + "rash,OR,0.8,0.5,1.2\ninfection,OR,0.9,1.4,0.6\n",
     ["row 3", "column 'ci_low'"]),
    ("ratio-estimate-zero", PUB + "rash,OR,0,0.5,1.2\ninfection,OR,0.9,0.6,1.4\n",
     ["row 2", "column 'estimate'", "> 0"]),
    ("ratio-ci-negative", PUB + "rash,OR,0.8,-0.5,1.2\ninfection,OR,0.9,0.6,1.4\n",
     ["row 2", "column 'ci_low'", "> 0"]),
]


@pytest.mark.parametrize("content,needles", [c[1:] for c in PUB_CASES],
                         ids=[c[0] for c in PUB_CASES])
def test_run_bad_published_table(capsys, project, content, needles):
    """Published estimate/CI rows (io.validate_published's checks) must be refused by `run`
    with file, row and column, and nothing written."""
    write(project / "pub.csv", content)
    spec = _spec(project, PUB_SPEC)
    out_dir = project / "report"
    line = error_line(*cli(capsys, "run", spec, "--out", out_dir, "-q"))
    has_all(line, "pub.csv", *needles)
    assert not out_dir.exists()


def test_run_published_estimate_outside_ci_is_a_finding(capsys, project):
    """A printed estimate outside its printed CI is kept (papers do print such numbers) and
    reported by the audit as a finding, never silently used as 'reproduced'."""
    import pandas as pd

    write(project / "pub.csv", PUB + "rash,OR,0.8,0.5,1.2\ninfection,OR,2.9,0.6,1.4\n")
    spec = _spec(project, PUB_SPEC)
    out_dir = project / "report"
    code, out, err = cli(capsys, "run", spec, "--out", out_dir, "-q")
    assert code == 0, err
    aud = pd.read_csv(out_dir / "audit.csv")
    row = aud[(aud["item"] == "infection") & (aud["quantity"] == "estimate")].iloc[0]
    assert row["verdict"] != "reproduced" and "outside its CI" in row["diagnosis"]
    assert "outside its CI" in (out_dir / "index.html").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# 5. end to end in a subprocess: exit code 2, one stderr line, no traceback
# ---------------------------------------------------------------------------------------------
def _subprocess(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "bayesmeta", *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": str(ROOT)})


class TestSubprocess:
    def test_negative_sd(self, tmp_path):
        f = write(tmp_path / "s.csv", MD + "A,1,-1,10,0,1,10\n" + MD_OK)
        p = _subprocess("classical", f, "--measure", "MD", cwd=tmp_path)
        line = error_line(p.returncode, p.stdout, p.stderr)
        has_all(line, str(f), "row 2", "column 'sd1i'")

    def test_not_utf8(self, tmp_path):
        f = write(tmp_path / "s.csv", (MD + "M\u00fcller,1,1,10,0,1,10\n").encode("latin-1"))
        p = _subprocess("classical", f, "--measure", "MD", cwd=tmp_path)
        line = error_line(p.returncode, p.stdout, p.stderr)
        has_all(line, str(f), "row 2", "UTF-8")

    def test_bad_spec_run(self, tmp_path):
        d = tmp_path / "proj"
        d.mkdir()
        write(d / "data.csv", GOOD_MD)
        spec = _spec(d, SPEC.replace('method = "DL"', 'methd = "DL"'))
        p = _subprocess("run", spec, "--out", d / "report", "-q", cwd=d)
        line = error_line(p.returncode, p.stdout, p.stderr)
        has_all(line, str(spec), "line 11", "Did you mean 'method'")
        assert not (d / "report").exists()

    def test_debug_shows_traceback(self, tmp_path):
        """--debug is the one way to get a traceback (for bug reports)."""
        f = write(tmp_path / "s.csv", MD + "A,1,-1,10,0,1,10\n" + MD_OK)
        p = _subprocess("--debug", "classical", f, "--measure", "MD", cwd=tmp_path)
        assert p.returncode != 0 and "Traceback" in p.stderr and "DataError" in p.stderr
