"""Bad input beyond the first catalogue: one test per defect found by a held-out catalogue.

Contract under test (docs/bad-input.md): bad input is one ``error:`` line, exit code 2, no
traceback and nothing written; a number is never silently wrong; an output folder that is not
ours is never touched; labels cannot act on a terminal or a spreadsheet.

References, per section: redundant columns -- the identities ai + bi = n1i, vi = sei²,
sei = sdi/sqrt(ni), yi = log(OR) and sei = (log(hi) - log(lo)) / (2 x 1.959964) (closed form);
role values -- the subgroup count of the file itself (1 named level + 1 empty cell = 1 level,
not 2); priors -- the range of the study estimates (a pooled mean under priors that do not
contradict the data lies inside it: a weighted average); REML's tr P and tr PP -- exact
rational arithmetic (fractions); folders, CLI and validation -- the contract itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayesmeta.exceptions import DataError, DataWarning
from tests.test_bad_input import GOOD_MD, SPEC, cli, error_line, has_all, write

ROOT = Path(__file__).parents[1]
PRECISE = "study,yi,vi\nA,0.1,1e-8\nB,0.2,1e4\nC,0.25,0.05\nD,0.3,2e-8\n"


# ---------------------------------------------------------------------------------------------
# 1. redundant columns that contradict each other
# ---------------------------------------------------------------------------------------------
REDUNDANT = [
    ("2x2-ai-bi-vs-n1i", "study,ai,bi,ci,di,n1i,n2i\nA,10,90,12,88,100,100\nC,5,95,7,18,25,25\n",
     "OR", ["row 3", "column 'n1i'", "bi", "100", "25"]),
    ("2x2-ci-di-vs-n2i", "study,ai,bi,ci,di,n1i,n2i\nA,10,90,12,88,100,100\nC,5,20,7,18,25,30\n",
     "RR", ["row 3", "column 'n2i'", "di", "25", "30"]),
    ("vi-vs-sei", "study,yi,vi,sei\nA,0.1,0.04,0.2\nB,0.2,0.04,0.5\n", "GEN",
     ["row 3", "column 'vi'", "sei", "0.04", "0.5"]),
    ("one-arm-sei-vs-sd", "study,mi,sdi,ni,sei\nA,1,2,16,0.5\nB,1,2,16,2\n", "MC",
     ["row 3", "column 'sei'", "sdi", "ni"]),
    ("md-yi-vs-means",
     "study,m1i,sd1i,n1i,m2i,sd2i,n2i,yi\nA,3,1,10,1,1,10,2\nB,3,1,10,1,1,10,-2\n",
     "MD", ["row 3", "column 'yi'", "m1i", "m2i"]),
]


@pytest.mark.parametrize("content,measure,needles", [pytest.param(*c[1:], id=c[0])
                                                     for c in REDUNDANT])
def test_contradictory_redundant_columns_are_an_error(capsys, tmp_path, content, measure,
                                                      needles):
    f = write(tmp_path / "d.csv", content)
    line = error_line(*cli(capsys, "classical", f, "--measure", measure))
    has_all(line, str(f), *needles)


def test_consistent_redundant_columns_are_accepted(capsys, tmp_path):
    """Rounded but consistent values pass: sei printed to 3 decimals, vi to 4."""
    f = write(tmp_path / "d.csv", "study,yi,vi,sei\nA,0.1,0.0447,0.2115\nB,0.2,0.04,0.2\n"
                                  "C,0.3,0.0901,0.300\n")
    code, out, err = cli(capsys, "classical", f, "--measure", "GEN")
    assert code == 0, err


def test_bcg_with_every_redundant_column_is_consistent():
    """The bundled bcg table carries ai, bi, ci, di and n1i, n2i: all agree."""
    from bayesmeta.datasets import load_dataset
    from bayesmeta.io import validate_measure_columns

    validate_measure_columns(load_dataset("bcg"), "OR")


def test_escalc_api_refuses_contradictory_counts():
    from bayesmeta.effect_sizes import escalc

    with pytest.raises(DataError, match=r"row 3, column 'n1i'.*ai \+ bi"):
        escalc("OR", pd.DataFrame({"ai": [10, 5], "bi": [90, 95], "ci": [12, 7],
                                   "di": [88, 18], "n1i": [100, 25], "n2i": [100, 25]}))


@pytest.mark.parametrize("extra,needles", [
    ("yi\n0.5", ["column 'yi'", "log(estimate)"]),
    ("sei\n0.9", ["column 'sei'", "CI"]),
], ids=["yi-vs-estimate", "sei-vs-ci"])
def test_published_row_with_contradictory_analysis_scale_columns(extra, needles):
    """OR 2.47 [1.38, 4.43]: yi = log 2.47 = 0.904, sei = (log 4.43 - log 1.38)/3.92 = 0.2975."""
    from bayesmeta.io import validate_published

    col, val = extra.split("\n")
    ok = {"yi": 0.904, "sei": 0.2975}[col]
    df = pd.DataFrame({"outcome": ["a", "b"], "estimate": [2.47, 2.47], "ci_low": [1.38, 1.38],
                       "ci_high": [4.43, 4.43], col: [ok, float(val)]})
    with pytest.raises(DataError) as e:
        validate_published(df, measure="OR", file="pub.csv")
    has_all(str(e.value), "pub.csv", "row 3", *needles)
    validate_published(df.iloc[:1], measure="OR", file="pub.csv")  # the consistent row passes


def test_validate_refuses_a_difference_row_in_a_ratio_analysis(capsys, tmp_path):
    """`validate` said ok and `run` failed inside the analysis (log of a negative MD)."""
    from tests.test_bad_input import PUB, PUB_SPEC

    d = tmp_path / "proj"
    d.mkdir()
    write(d / "pub.csv", PUB + "rash,OR,0.8,0.5,1.2\ninfection,MD,-2.0,-3.0,-1.0\n")
    spec = write(d / "spec.toml", PUB_SPEC)
    line = error_line(*cli(capsys, "validate", spec), validate=True)
    has_all(line, "pub.csv", "row 3", "column 'measure'", "'MD'", "OR")


# ---------------------------------------------------------------------------------------------
# 2. missing role values
# ---------------------------------------------------------------------------------------------
SUB = "study,yi,vi,subgroup\nA,0.1,0.1,x\nB,0.2,0.1,\nC,0.3,0.1,x\nD,0.3,0.2,x\n"


def test_empty_subgroup_cell_is_an_error_not_a_level(capsys, tmp_path):
    f = write(tmp_path / "s.csv", SUB)
    line = error_line(*cli(capsys, "classical", f, "--measure", "GEN", "--by", "subgroup"))
    has_all(line, str(f), "row 3", "column 'subgroup'", "--missing-level")


def test_explicit_missing_level_when_asked(capsys, tmp_path):
    """With --missing-level the empty cell is a named level: 2 levels, df = 1."""
    f = write(tmp_path / "s.csv", SUB)
    code, out, err = cli(capsys, "classical", f, "--measure", "GEN", "--by", "subgroup",
                         "--missing-level", "unknown", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert sorted(d["subgroups"]) == ["unknown", "x"] and d["subgroup_test"]["df"] == 1


@pytest.mark.parametrize("cell", ["", "NA", "nan", " "])
def test_check_role_values(cell):
    from bayesmeta.io import check_role_values

    df = pd.DataFrame({"study": ["A", "B"], "time": ["4", cell]})
    df.attrs.update(file="t.csv", rows=[2, 5])
    with pytest.raises(DataError, match=r"t\.csv, row 5, column 'time'"):
        check_role_values(df, ["time"])
    filled = check_role_values(df, ["time"], missing_level="unknown")
    assert list(filled["time"]) == ["4", "unknown"] and list(df["time"]) == ["4", cell]


def test_nested_preparation_refuses_empty_role_values():
    from bayesmeta.mcmc import _prepare_nested

    base = dict(yi=[1.0, 2.0, 3.0], sei=[1.0, 1.0, 1.0], study=["A", "B", "C"])
    with pytest.raises(DataError, match=r"row 3, column 'time'"):
        _prepare_nested(pd.DataFrame({**base, "time": ["4", "nan", "8"]}), "raise")
    with pytest.raises(DataError, match=r"row 4, column 'subgroup'"):
        _prepare_nested(pd.DataFrame({**base, "time": ["4", "4", "4"],
                                      "subgroup": ["x", "y", ""]}), "raise")


def test_spec_validate_refuses_empty_time_cell(capsys, tmp_path):
    d = tmp_path / "proj"
    d.mkdir()
    write(d / "data.csv", "study,time,m1i,sd1i,n1i,m2i,sd2i,n2i\nA,4,1,1,10,0,1,10\n"
                          "B,,2,1.5,12,0.5,1,11\n")
    spec = write(d / "spec.toml", SPEC.replace('measure = "MD"', 'measure = "MD"\ntime = "time"'))
    line = error_line(*cli(capsys, "validate", spec), validate=True)
    has_all(line, "data.csv", "row 3", "column 'time'")


# ---------------------------------------------------------------------------------------------
# 3. default priors under extreme precision ratios; posteriors outside the data
# ---------------------------------------------------------------------------------------------
def test_default_priors_do_not_contradict_all_studies(capsys, tmp_path):
    """yi = 0.1..0.3 with vi from 1e-8 to 1e4: the pooled mean must lie within the estimates
    (it gave 0.0066 [0.0040, 0.0091]), with a warning naming why the scale was changed."""
    f = write(tmp_path / "p.csv", PRECISE)
    code, out, err = cli(capsys, "bayes", f, "--measure", "GEN", "--json")
    assert code == 0, err
    mu = json.loads(out)["mu"]
    assert 0.1 <= mu["mean"] <= 0.3 and mu["q025"] < 0.1 < 0.3 < mu["q975"]
    assert "precision" in err and "median" in err


def test_posterior_outside_data_check():
    from bayesmeta.checks import posterior_outside_data

    y = [0.1, 0.2, 0.25, 0.3]
    assert posterior_outside_data(y, 0.0040, 0.0091) is not None
    assert posterior_outside_data(y, 0.31, 0.5) is not None
    assert posterior_outside_data(y, 0.0040, 0.1) is None
    assert posterior_outside_data(y, -1.0, 2.0) is None


def test_fit_exact_flags_a_prior_that_overrides_every_study():
    """An informative prior set by the user is honoured, but the result says that it, not the
    data, decides: a warning and a note in the printout and the JSON."""
    from bayesmeta.exact import fit_exact
    from bayesmeta.priors import HalfNormal, Normal

    y = np.array([0.1, 0.2, 0.25, 0.3])
    with pytest.warns(DataWarning, match="not the data"):
        r = fit_exact(y, np.full(4, 0.05), tau_prior=HalfNormal(0.1), mu_prior=Normal(0, 0.001))
    assert r.notes and "note:" in str(r) and r.to_dict()["notes"] == list(r.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r2 = fit_exact(y, np.full(4, 0.05), tau_prior=HalfNormal(0.1), mu_prior=Normal(0, 1))
    assert r2.notes == ()


@pytest.mark.parametrize("y,v", [([0.0, 1.0], [1e9, 1.0]), ([0, 0, 0, 1.0], [1, 1, 10, 1e-10])])
def test_reml_with_one_study_far_more_precise(y, v):
    """tr P and tr PP (REML's information) against exact rational arithmetic; the fit is finite
    and its mean lies within the estimates (it divided by a cancelled 0 before)."""
    from fractions import Fraction

    from bayesmeta import classical as cl

    w = [1 / Fraction(x) for x in v]
    sw = sum(w)
    P = [[(wi if i == j else 0) - wi * wj / sw for j, wj in enumerate(w)]
         for i, wi in enumerate(w)]
    tr_p = sum(P[i][i] for i in range(len(w)))
    tr_pp = sum(P[i][j] ** 2 for i in range(len(w)) for j in range(len(w)))
    f = cl._WLS(np.array(y), np.array(v, float), np.ones((len(y), 1)), 0.0)
    np.testing.assert_allclose([f.trP, f.trPP], [float(tr_p), float(tr_pp)], rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = cl.rma(y, v, method="REML")
    assert np.isfinite([r.estimate, r.se, r.tau2]).all() and min(y) <= r.estimate <= max(y)


# ---------------------------------------------------------------------------------------------
# 4. output folders
# ---------------------------------------------------------------------------------------------
SIM = ["simulate", "--n", "4", "--k", "3", "--scale", "MD", "--workers", "0", "--quiet",
       "--chunk-size", "4", "--priors", "weakly_informative"]


def test_simulate_refuses_a_foreign_folder(capsys, tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    write(mine / "coverage.csv", "precious")
    line = error_line(*cli(capsys, *SIM, "--out", mine))
    has_all(line, str(mine), "--out")
    assert [p.name for p in mine.iterdir()] == ["coverage.csv"]
    assert (mine / "coverage.csv").read_text() == "precious"


def test_simulate_resumes_its_own_folder_and_follows_a_symlink(capsys, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    code, _, err = cli(capsys, *SIM, "--out", link)
    assert code == 0, err
    assert link.is_symlink() and (real / "coverage.csv").is_file()
    code, _, err = cli(capsys, *SIM, "--out", link)  # ours: resumed
    assert code == 0, err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_simulate_truncated_config_is_one_line(capsys, tmp_path):
    out = tmp_path / "sim"
    assert cli(capsys, *SIM, "--out", out)[0] == 0
    cfg = out / "config.json"
    cfg.write_text(cfg.read_text()[:20])
    line = error_line(*cli(capsys, *SIM, "--out", out))
    has_all(line, "config.json", "damaged")


def test_simulate_negative_seed_is_one_line(capsys):
    line = error_line(*cli(capsys, *SIM, "--seed", "-1"))
    has_all(line, "seed", "-1")


@pytest.fixture
def project(tmp_path):
    d = tmp_path / "proj"
    d.mkdir()
    write(d / "data.csv", GOOD_MD)
    write(d / "spec.toml", SPEC)
    return d


def test_run_into_a_symlink_keeps_the_link_and_leaves_no_litter(capsys, project):
    target = project / "elsewhere"
    target.mkdir()
    link = project / "report"
    link.symlink_to(target, target_is_directory=True)
    for _ in range(2):  # first into an empty target, then replacing a previous report
        code, _, err = cli(capsys, "run", project / "spec.toml", "--out", link, "-q")
        assert code == 0, err
        assert link.is_symlink() and (target / "index.html").is_file()
    assert not [p.name for p in project.iterdir() if p.name.startswith(".")]


def test_run_into_a_dangling_symlink_is_refused(capsys, project):
    link = project / "report"
    link.symlink_to(project / "missing")
    line = error_line(*cli(capsys, "run", project / "spec.toml", "--out", link, "-q"))
    has_all(line, str(link), "symbolic link")
    assert link.is_symlink() and not (project / "missing").exists()


def test_run_refuses_a_foreign_folder_before_fitting(capsys, project, monkeypatch):
    import bayesmeta.runner as runner

    def boom(*a, **k):
        raise AssertionError("fitted although the output folder is refused")

    monkeypatch.setattr(runner, "_run_all", boom)
    mine = project / "thesis"
    mine.mkdir()
    write(mine / "notes.txt", "precious")
    line = error_line(*cli(capsys, "run", project / "spec.toml", "--out", mine, "-q"))
    has_all(line, str(mine))


# ---------------------------------------------------------------------------------------------
# 5. validate and the CLI
# ---------------------------------------------------------------------------------------------
def test_huge_prior_scale_is_one_line(capsys, tmp_path):
    f = write(tmp_path / "p.csv", PRECISE)
    line = error_line(*cli(capsys, "bayes", f, "--measure", "GEN", "--mu-prior",
                           "normal:0:1e200"))
    has_all(line, "--mu-prior", "1e+200", "flat")


def test_vi_near_zero_is_one_line_and_blames_no_prior(capsys, tmp_path):
    f = write(tmp_path / "t.csv", "study,yi,vi\nA,0.1,1e-320\nB,0.2,0.1\n")
    for cmd in ("classical", "bayes"):
        line = error_line(*cli(capsys, cmd, f, "--measure", "GEN"))
        has_all(line, str(f), "row 2", "column 'vi'")
        assert "prior" not in line.lower() and "HalfNormal" not in line


def test_study_name_with_a_line_break(capsys, tmp_path):
    """Rows are CSV records (the spreadsheet's rows), and the message stays one line."""
    f = write(tmp_path / "n.csv", 'study,yi,vi\n"A\nB",0.1,0.1\n"C",0.2,-1\n')
    line = error_line(*cli(capsys, "classical", f, "--measure", "GEN"))
    has_all(line, "row 3", "column 'vi'")
    f2 = write(tmp_path / "n2.csv", 'study,yi,vi\n"A\nB",0.1,0.1\n"A\nB",0.2,0.1\n')
    code, _, err = cli(capsys, "classical", f2, "--measure", "GEN")
    assert code == 0        # the same label, different data: two studies, one warning line
    (warn,) = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    has_all(warn, "rows 2, 3", "(row 2)", "(row 3)")


def test_labels_reach_the_terminal_escaped(capsys, tmp_path):
    """A study name carrying an ANSI sequence (ESC [ 2 J clears the screen) is printed as text."""
    f = write(tmp_path / "e.csv", "study,ai,n1i,ci,n2i\n\"\x1b[2J\x1b]0;pwned\x07A\",0,20,3,20\n"
                                  "B,3,20,6,21\n")
    code, out, err = cli(capsys, "classical", f, "--measure", "OR")
    assert code == 0, err
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "\\x1b[2J" in err  # the warning naming the corrected study shows it escaped


def test_spreadsheet_safe_csv_keeps_raw_label_elsewhere(capsys, project):
    """Outcome labels that a spreadsheet would run as formulas (CWE-1236) are prefixed with a
    quote in every CSV of the report; the HTML shows them as text."""
    from tests.test_bad_input import PUB, PUB_SPEC

    evil = ['=HYPERLINK("http://x","rash")', "@infection", "+cmd|' /C calc'!A0", "-2+3"]
    rows = "".join(f'"{e.replace(chr(34), chr(34) * 2)}",OR,0.8,0.5,1.2\n' for e in evil)
    write(project / "pub.csv", PUB + rows)
    write(project / "spec.toml", PUB_SPEC)
    out = project / "report"
    code, _, err = cli(capsys, "run", project / "spec.toml", "--out", out, "-q")
    assert code == 0, err
    csvs = sorted(out.rglob("*.csv"))
    assert {p.name for p in csvs} >= {"results.csv", "audit.csv"}
    seen = set()
    for f in csvs:
        cells = pd.read_csv(f, dtype=str, keep_default_na=False).to_numpy().ravel()
        for c in cells:
            assert not c.startswith(("=", "+", "@")) and not c.startswith("-2+"), (f, c)
            seen |= {e for e in evil if c == "'" + e}
    assert seen == set(evil)


def test_closed_stdout_is_not_a_disk_error(tmp_path):
    """`bayesmeta classical x.csv --measure MD | head -0`: the reader left; nothing to report."""
    f = write(tmp_path / "x.csv", GOOD_MD)
    p = subprocess.Popen([sys.executable, "-m", "bayesmeta", "classical", str(f), "--measure",
                          "MD"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                         env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)})
    p.stdout.close()  # before the child prints anything (its imports take ~1 s)
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "disk space" not in err and "Traceback" not in err and "Exception" not in err, err


# -- spec validation ---------------------------------------------------------------------------
@pytest.fixture
def spec_project(tmp_path):
    d = tmp_path / "sp"
    d.mkdir()
    write(d / "data.csv", GOOD_MD)
    return d


def test_spec_with_utf8_bom_is_accepted(capsys, spec_project):
    spec = write(spec_project / "spec.toml", b"\xef\xbb\xbf" + SPEC.encode())
    code, out, err = cli(capsys, "validate", spec)
    assert code == 0, err


@pytest.mark.parametrize("extra,key,needles", [
    ("[report]\nthresholds = [inf]\n", "report.thresholds", ["finite"]),
    ("[report]\nthresholds = [nan, 1.5]\n", "report.thresholds", ["finite"]),
    ("[report]\nci_prob = nan\n", "report.ci_prob", ["finite"]),
    ("[sampling]\ndraws = 100000000\n", "sampling.draws", ["1,000,000"]),
    ("[sampling]\ntune = 2000000\n", "sampling.tune", ["1,000,000"]),
    ("[sampling]\nchains = 1000\n", "sampling.chains", ["64"]),
    ("[report]\nnotes = \"a\\u001b[31mb\"\n", "report.notes", ["control character"]),
], ids=["inf-threshold", "nan-threshold", "nan-ci-prob", "draws", "tune", "chains",
        "escape-in-notes"])
def test_validate_refuses_unusable_values(capsys, spec_project, extra, key, needles):
    spec = write(spec_project / "spec.toml", SPEC + "\n" + extra)
    line = error_line(*cli(capsys, "validate", spec), validate=True)
    has_all(line, str(spec), f"key '{key}'", *needles)
    assert "\x1b" not in line


def test_validate_allows_line_breaks_in_free_text(capsys, spec_project):
    spec = write(spec_project / "spec.toml", SPEC + '\n[report]\nnotes = """two\nlines"""\n')
    code, _, err = cli(capsys, "validate", spec)
    assert code == 0, err


def test_validate_catches_what_a_published_survival_run_needs(capsys, tmp_path):
    """A published table without p_printed: validate and run agree (run does not fail inside
    the analysis after validate said ok)."""
    from tests.test_bad_input import PUB_SPEC

    d = tmp_path / "proj"
    d.mkdir()
    write(d / "pub.csv", "outcome,measure,time,estimate,ci_low,ci_high\n"
                         "survival,OR,4,0.8,0.5,1.2\nsurvival,OR,8,0.9,0.6,1.4\n")
    spec = write(d / "spec.toml", PUB_SPEC + 'time = "time"\n\n[bayes]\n'
                                             'model = "survival-published"\n')
    code, _, err = cli(capsys, "validate", spec)
    if code == 0:  # then run must not fail inside the analysis
        code, _, err = cli(capsys, "run", spec, "--out", d / "report", "-q")
        assert code == 0, err
    else:
        error_line(code, "", err, validate=True)
