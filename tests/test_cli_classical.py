"""``bayesmeta classical``: its scripting contract.

References: metafor JSON (tests/reference/metafor_reference.json) for the numbers; the
printed 2014 Figure 3 (test for subgroup differences 0.84, df 2) for ``--by``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayesmeta.cli import main
from tests.tolerances import METAFOR, OPTIMIZER, published

ROOT = Path(__file__).parents[1]
MELD = ROOT / "data" / "meld_2014_fig3.csv"
REF = json.loads((ROOT / "tests" / "reference" / "metafor_reference.json").read_text())
KEYS = ["k", "measure", "method", "test", "estimate", "se", "ci_low", "ci_high", "statistic",
        "p", "df", "tau2", "tau", "i2", "h2", "q", "q_df", "q_p", "pi_low", "pi_high", "studies"]


def run_json(capsys, *argv):
    code = main(["classical", *map(str, argv), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


@pytest.fixture
def bcg_csv(tmp_path):
    t = REF["tables"]["bcg"]
    p = tmp_path / "bcg.csv"
    pd.DataFrame({"study": t["study"], "ai": t["ai"], "bi": t["bi"], "ci": t["ci"],
                  "di": t["di"]}).to_csv(p, index=False)
    return p


@pytest.fixture
def sparse_csv(tmp_path):
    t = REF["tables"]["sparse"]
    p = tmp_path / "sparse.csv"
    pd.DataFrame({"study": t["study"], "ai": t["ai"], "n1i": np.add(t["ai"], t["bi"]),
                  "ci": t["ci"], "n2i": np.add(t["ci"], t["di"])}).to_csv(p, index=False)
    return p


def test_json_keys_and_values_rr_reml_knha(capsys, bcg_csv):
    d = run_json(capsys, bcg_csv, "--measure", "RR", "--method", "REML", "--test", "knha")
    assert list(d) == KEYS
    ref = REF["rma"]["bcg|REML|knha"]
    for k in ("estimate", "se", "ci_low", "ci_high", "statistic", "p", "df", "tau2", "i2",
              "h2", "q", "q_p", "pi_low", "pi_high"):
        np.testing.assert_allclose(d[k], ref[k], err_msg=k, **OPTIMIZER)
    assert d["measure"] == "RR" and d["k"] == 13 and d["test"] == "knha"
    assert [s["study"] for s in d["studies"]] == REF["tables"]["bcg"]["study"]
    np.testing.assert_allclose([s["weight_pct"] for s in d["studies"]], ref["weights"],
                               **OPTIMIZER)


def test_z_test_has_null_df(capsys, bcg_csv):
    d = run_json(capsys, bcg_csv, "--measure", "RR", "--method", "DL")
    assert d["df"] is None
    np.testing.assert_allclose(d["tau2"], REF["rma"]["bcg|DL|z"]["tau2"], **METAFOR)


@pytest.mark.parametrize("measure", ["OR", "RR", "RD"])
def test_mh(capsys, sparse_csv, measure):
    d = run_json(capsys, sparse_csv, "--measure", measure, "--method", "MH")
    ref = REF["mh"][f"sparse|{measure}"]
    for k in ("estimate", "se", "ci_low", "ci_high", "q", "q_p", "i2"):
        np.testing.assert_allclose(d[k], ref[k], err_msg=k, **METAFOR)


def test_peto(capsys, sparse_csv):
    d = run_json(capsys, sparse_csv, "--measure", "PETO")
    assert d["method"] == "PETO"
    np.testing.assert_allclose(d["estimate"], REF["peto"]["sparse"]["estimate"], **METAFOR)


def test_by_gives_subgroups_and_revman_test(capsys):
    d = run_json(capsys, MELD, "--measure", "MD", "--method", "FE", "--by", "time")
    assert list(d["subgroups"]) == ["2", "4", "24"]
    assert set(d["subgroups"]["2"]) == set(KEYS)
    np.testing.assert_allclose(d["subgroup_test"]["q"], 0.84, **published(2))
    assert d["subgroup_test"]["df"] == 2
    np.testing.assert_allclose(d["subgroup_test"]["p"], 0.66, **published(2))


def test_gen_with_sei_and_preset_revman_web(capsys, tmp_path):
    ds = REF["datasets"]["bcg"]
    p = tmp_path / "gen.csv"
    pd.DataFrame({"study": ds["study"], "yi": ds["yi"], "sei": np.sqrt(ds["vi"])}).to_csv(p, index=False)
    d = run_json(capsys, p, "--measure", "GEN", "--preset", "revman_web")
    assert d["method"] == "REML" and d["test"] == "knha"
    np.testing.assert_allclose(d["ci_low"], REF["rma"]["bcg|REML|knha"]["ci_low"], **OPTIMIZER)


def test_human_readable_output(capsys, bcg_csv):
    assert main(["classical", str(bcg_csv), "--measure", "RR"]) == 0
    out = capsys.readouterr().out
    assert "Random-Effects Model (k = 13; tau^2 estimator: REML)" in out


def test_bad_value_exits_2_with_file_row_column(capsys, tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("study,m1i,sd1i,n1i,m2i,sd2i,n2i\nA,1,2,10,0,2,10\nB,1,-2,10,0,2,10\n")
    code = main(["classical", str(p), "--measure", "MD"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert str(p) in err and "row 3" in err and "sd1i" in err


def test_missing_column_exits_2(capsys, tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("study,yi\nA,0.1\nB,0.2\n")
    assert main(["classical", str(p), "--measure", "GEN"]) == 2
    assert "error:" in capsys.readouterr().err


def test_unknown_by_column_exits_2(capsys):
    assert main(["classical", str(MELD), "--measure", "MD", "--by", "week"]) == 2
    err = capsys.readouterr().err
    assert "week" in err and "meld_2014_fig3.csv" in err


@pytest.mark.parametrize("argv", [["--measure", "MD", "--method", "MH"],
                                  ["--measure", "MD", "--preset", "revman5", "--method", "REML"],
                                  ["--measure", "MD", "--preset", "revman5", "--test", "knha"]])
def test_invalid_combinations_exit_2(capsys, argv):
    assert main(["classical", str(MELD), *argv]) == 2
    assert capsys.readouterr().err.startswith("error:")
