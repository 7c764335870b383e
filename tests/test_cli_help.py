"""The command line teaches: help on every option, an example per command, the columns each
measure needs, one-line argument errors, repeated options refused or combined, --level and
natural-scale printing in `classical`, `run --out` refused before anything is fitted.

References: metafor 3.8.1 (tests/reference/metafor_reference.json, written by
tests/reference/metafor_reference.R) for the bcg REML estimates; the intervals at another level
are the closed form estimate ± q * se with q the normal (z) or t (Knapp-Hartung, df = k - 1)
quantile from scipy; the natural scale is exp() of metafor's log-RR numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayesmeta
from bayesmeta.cli import _build_parser, main
from bayesmeta.io import MEASURE_COLUMNS
from tests.tolerances import OPTIMIZER

ROOT = Path(__file__).parents[1]
REF = json.loads((ROOT / "tests" / "reference" / "metafor_reference.json").read_text())
OURS = ("classical", "run", "validate", "datasets", "simulate")


@pytest.fixture
def bcg_csv(tmp_path):
    t = REF["tables"]["bcg"]
    p = tmp_path / "bcg.csv"
    pd.DataFrame({"study": t["study"], "ai": t["ai"], "bi": t["bi"], "ci": t["ci"],
                  "di": t["di"]}).to_csv(p, index=False)
    return p


def subparsers(parser):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a.choices
    return {}


def all_parsers():
    top = _build_parser()
    out = [("bayesmeta", top)]
    for name, p in subparsers(top).items():
        if name in OURS:
            out.append((name, p))
            out += [(f"{name} {n}", q) for n, q in subparsers(p).items()]
    return out


@pytest.mark.parametrize("name, parser", all_parsers(), ids=lambda x: str(x)[:30])
def test_every_option_has_help_and_every_command_an_example(name, parser):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            continue
        assert a.help and a.help.strip(), f"{name}: {a.option_strings or a.dest} has no help"
    assert "examples:\n  bayesmeta " in (parser.epilog or ""), name


def test_top_level_help_is_plain_text(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "``" not in out and ":func:" not in out and ":mod:" not in out
    assert "examples:" in out and "bayesmeta classical" in out


def test_classical_help_lists_columns_of_every_measure(capsys):
    with pytest.raises(SystemExit):
        main(["classical", "--help"])
    out = capsys.readouterr().out
    for m, alts in MEASURE_COLUMNS.items():
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(m + " "))
        for cols in alts:
            assert " ".join(cols) in line, (m, line)
    assert "--level" in out and "--log" in out


@pytest.mark.parametrize("argv, needle", [
    (["classical"], "required"),
    (["classical", "x.csv", "--measure", "MDX"], "invalid choice"),
    (["classical", "x.csv", "--measure", "MD", "--level", "95"], "between 0 and 1"),
    (["nope"], "invalid choice"),
    (["run", "--jobs", "0"], "below 1"),
    (["simulate", "--n", "ten"], "not a whole number"),
])
def test_argument_errors_are_one_line_exit_2(capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bayesmeta") and needle in lines[0]
    assert "usage:" not in err


def test_repeated_option_refused_list_option_combined(capsys):
    with pytest.raises(SystemExit) as e:
        main(["classical", "x.csv", "--measure", "MD", "--by", "time", "--by", "week"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--by given twice" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["classical", "x.csv", "--measure", "MD", "--measure", "OR"])
    assert "--measure given twice" in capsys.readouterr().err
    args = _build_parser().parse_args(["simulate", "--k", "2", "3", "--k", "5"])
    assert args.k == [2, 3, 5]


@pytest.mark.parametrize("test, level", [("z", 0.9), ("knha", 0.8)])
def test_classical_level(capsys, bcg_csv, test, level):
    ref = REF["rma"][f"bcg|REML|{test}"]
    assert main(["classical", str(bcg_csv), "--measure", "RR", "--test", test, "--level",
                 str(level), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    q = (stats.norm.ppf(0.5 + level / 2) if test == "z"
         else stats.t.ppf(0.5 + level / 2, ref["k"] - 1))
    np.testing.assert_allclose([d["ci_low"], d["ci_high"]],
                               [ref["estimate"] - q * ref["se"], ref["estimate"] + q * ref["se"]],
                               **OPTIMIZER)


def test_classical_prints_ratios_on_natural_scale(capsys, bcg_csv):
    ref = REF["rma"]["bcg|REML|z"]
    assert main(["classical", str(bcg_csv), "--measure", "RR"]) == 0
    out = capsys.readouterr().out
    line = out.splitlines()[out.splitlines().index(
        next(ln for ln in out.splitlines() if ln.strip().startswith("estimate"))) + 1]
    shown = [float(x) for x in line.split()[:3]]
    np.testing.assert_allclose(shown, np.exp([ref["estimate"], ref["ci_low"], ref["ci_high"]]),
                               atol=5e-5)  # printed with 4 decimals
    assert "RR, natural scale" in out and "logRR scale):" not in out
    pi = next(ln for ln in out.splitlines() if "prediction interval (RR)" in ln)
    lo, hi = (float(x) for x in pi.split("[")[1].split("]")[0].split(","))
    np.testing.assert_allclose([lo, hi], np.exp([ref["pi_low"], ref["pi_high"]]), atol=5e-5)
    # --log: metafor's log-scale printout
    assert main(["classical", str(bcg_csv), "--measure", "RR", "--log"]) == 0
    out = capsys.readouterr().out
    assert "Model Results (logRR scale):" in out and f"{ref['estimate']:.4f}" in out


def test_classical_log_refused_for_difference_measures(capsys):
    f = ROOT / "data" / "meld_2014_fig3.csv"
    assert main(["classical", str(f), "--measure", "MD", "--log"]) == 2
    assert "--log applies to ratio measures" in capsys.readouterr().err


def test_run_out_checked_before_fitting(capsys, tmp_path, monkeypatch):
    fake = types.ModuleType("bayesmeta.runner")

    def boom(*a, **k):
        raise AssertionError("fitting started before --out was checked")
    fake.run = boom
    monkeypatch.setitem(sys.modules, "bayesmeta.runner", fake)
    monkeypatch.setitem(vars(bayesmeta), "runner", fake)  # no lazy import of the real one
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "chapter1.tex").write_text("precious")
    assert main(["run", "--out", str(user), "-q"]) == 2
    err = capsys.readouterr().err
    assert "not a bayesmeta report" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "afile").write_text("x")
    assert main(["run", "--out", str(tmp_path / "afile" / "sub"), "-q"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert (user / "chapter1.tex").read_text() == "precious"
