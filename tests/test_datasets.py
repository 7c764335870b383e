"""Bundled datasets: manifest integrity, checksum on load, schema, and numbers vs their sources.

References:
- checksums: hashlib over the committed bytes vs MANIFEST.json;
- 2014/2023 numbers: the printed text of the papers in ../shared/papers (beside the repo; the
  tests skip with a reason where that folder is absent), searched verbatim;
- metadat datasets: published cell counts from the original articles as quoted in metadat's
  documentation (Colditz 1994 via dat.bcg, Pagliaro 1992 study 1), typed here by hand.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bayesmeta.cli import main as cli_main
from bayesmeta.datasets import (data_dir, dataset_info, dataset_path, describe_dataset,
                                list_datasets, load_dataset)
from bayesmeta.exceptions import DataError

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ROOT.parent / "shared" / "papers"
PAPER_2014 = PAPERS / "bm_msc_decompensated_cirrhosis_2014.txt"
PAPER_2023 = PAPERS / "msc_end_stage_liver_disease_2023.txt"
ALL = list_datasets()


def paper_text(path: Path, join_lines: bool = False) -> str:
    if not path.is_file():
        pytest.skip(f"paper text {path} not present (CI clones need ../shared beside the repo)")
    text = path.read_text(encoding="utf-8")
    if join_lines:  # the 2023 extraction's convention: a line break (+ whitespace) -> one space
        text = re.sub(r"[ \t\u00a0]*\n\s*", " ", text)
    return text


# --- manifest and loading --------------------------------------------------------------------
def test_expected_datasets_present():
    for name in ("meld_2014_fig3", "meld_2014_fig3_published", "msc_2014_table1",
                 "msc_2014_table2_onearm", "msc_2023_pooled", "bcg", "pagliaro1992",
                 "nielweise2007", "hahn2001"):
        assert name in ALL


def test_data_dir_is_repo_data_in_source_install():
    assert data_dir() == ROOT / "data"


@pytest.mark.parametrize("name", ALL)
def test_every_dataset_loads_with_checksum_and_declared_columns(name):
    info = dataset_info(name)
    path = dataset_path(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"]
    df = load_dataset(name)
    assert len(df) > 0
    assert list(df.columns) == list(info["columns"])
    for col, spec in info["columns"].items():
        assert spec["type"] in ("str", "int", "float")
        if spec["required"]:
            assert df[col].notna().all(), col
        if spec["type"] == "int":
            assert str(df[col].dtype) in ("int64", "Int64"), col
        if spec["type"] == "float":
            assert df[col].dtype.kind == "f", col
    assert df.attrs["sha256"] == info["sha256"]
    for key in ("description", "citation", "license", "provenance"):
        assert info[key], (name, key)


def test_manifest_lists_every_csv_and_nothing_else():
    csvs = {p.name for p in (ROOT / "data").glob("*.csv")}
    files = {dataset_info(n)["file"] for n in ALL}
    assert csvs == files


def test_corrupted_copy_fails_checksum(tmp_path):
    d = tmp_path / "data"
    shutil.copytree(ROOT / "data", d)
    assert len(load_dataset("bcg", directory=d)) == 13
    p = d / "bcg.csv"
    p.write_text(p.read_text().replace("Aronson 1948\",1,\"Aronson\",1948,4",
                                       "Aronson 1948\",1,\"Aronson\",1948,5"))
    with pytest.raises(DataError, match=r"bcg\.csv: checksum mismatch for dataset 'bcg'.*"
                       r"modified or corrupted.*git checkout"):
        load_dataset("bcg", directory=d)


def test_missing_file_in_copy(tmp_path):
    d = tmp_path / "data"
    shutil.copytree(ROOT / "data", d)
    (d / "hahn2001.csv").unlink()
    with pytest.raises(DataError, match=r"hahn2001\.csv: file of dataset 'hahn2001' not found"):
        load_dataset("hahn2001", directory=d)


def test_undeclared_column_fails(tmp_path):
    d = tmp_path / "data"
    shutil.copytree(ROOT / "data", d)
    m = json.loads((d / "MANIFEST.json").read_text())
    del m["datasets"]["hahn2001"]["columns"]["n2i"]
    (d / "MANIFEST.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match=r"row 1, column 'n2i': column 'n2i' is not declared"):
        load_dataset("hahn2001", directory=d)


def test_unknown_name_did_you_mean():
    with pytest.raises(DataError, match=r"Invalid dataset 'bgc'.*Did you mean 'bcg'\?"):
        load_dataset("bgc")
    with pytest.raises(DataError, match=r"Did you mean 'pagliaro1992'"):
        load_dataset("pagliaro")


def test_describe_mentions_source_columns_and_findings():
    text = describe_dataset("meld_2014_fig3")
    assert text.startswith("meld_2014_fig3: 6 rows x 13 columns")
    assert "Figure 3" in text and "pub_weight_pct" in text
    assert "-3.66" in text  # the Peng 24-wk finding


def test_cli_datasets(capsys):
    assert cli_main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^bcg\s+13 rows", out, re.M)
    assert cli_main(["datasets", "path", "hahn2001"]) == 0
    assert capsys.readouterr().out.strip() == str(ROOT / "data" / "hahn2001.csv")
    assert cli_main(["datasets", "describe", "bcg"]) == 0
    assert "Colditz" in capsys.readouterr().out
    assert cli_main(["datasets", "describe", "bgc"]) == 2
    assert "Did you mean 'bcg'" in capsys.readouterr().err


# --- 2014 Figure 3 vs the paper text -------------------------------------------------------------
def test_fig3_printed_lines_are_verbatim_in_paper():
    text = paper_text(PAPER_2014)
    df = load_dataset("meld_2014_fig3")
    for src in df["source"]:
        line = re.search(r"printed: '(.*?)'(;|$)", src).group(1)
        assert line in text, line
    pub = load_dataset("meld_2014_fig3_published")
    for line in pub["printed"]:
        assert line in text, line


def test_fig3_numbers_match_their_printed_line():
    # reference: each number re-parsed from its own printed line by an independent regex
    df = load_dataset("meld_2014_fig3")
    for _, r in df.iterrows():
        line = re.search(r"printed: '(.*?)'", r["source"]).group(1)
        nums = [float(x) for x in re.findall(r"-?\d+\.?\d*", line.split("2011", 1)[1])]
        assert nums == [r.m1i, r.sd1i, r.n1i, r.m2i, r.sd2i, r.n2i, r.pub_weight_pct, r.pub_md,
                        r.pub_ci_low, r.pub_ci_high]


def test_fig3_spot_values():
    # reference: 2014 paper, Figure 3, typed by hand from the printed figure
    df = load_dataset("meld_2014_fig3").set_index(["study", "time"])
    assert tuple(df.loc[("Amer ME 2011", 2), ["m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i"]]) == \
        (-0.45, 2.24, 20, 0.5, 2.57, 20)
    assert tuple(df.loc[("Peng L 2011", 24), ["m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i"]]) == \
        (-14.91, 2.56, 6, -11.25, 3.41, 15)
    assert df.loc[("Peng L 2011", 4), "pub_weight_pct"] == 9.2
    assert sorted(df.reset_index()["time"].unique()) == [2, 4, 24]


def test_fig3_peng_24wk_printed_md_differs_from_arm_data():
    # finding kept as printed: MD -3.94 vs arm data -14.91 - (-11.25) = -3.66 (closed form);
    # the printed CI [-6.34, -0.98] is centred on -3.66.
    r = load_dataset("meld_2014_fig3").set_index(["study", "time"]).loc[("Peng L 2011", 24)]
    assert r.pub_md == -3.94
    assert round(r.m1i - r.m2i, 2) == -3.66
    assert round((r.pub_ci_low + r.pub_ci_high) / 2, 2) == -3.66
    assert "-3.66" in r.source


def test_fig3_published_table():
    pub = load_dataset("meld_2014_fig3_published")
    assert set(pub["level"]) == {"subtotal", "overall", "subgroup_test"}
    q = pub.assign(t=[("" if v is pd.NA else str(v)) for v in pub["time"]]).set_index(["level", "t", "quantity"])
    assert q.loc[("subtotal", "24", "md"), "value"] == -2.01
    assert q.loc[("subtotal", "4", "i2_pct"), "value"] == 74
    assert q.loc[("overall", "", "md"), "value"] == -1.68
    assert q.loc[("overall", "", "p"), "op"] == "<"
    assert q.loc[("overall", "", "p"), "value"] == 0.00001
    assert q.loc[("overall", "", "p"), "decimals"] == 5
    assert q.loc[("subgroup_test", "", "chi2"), "value"] == 0.84
    assert "1.68" in q.loc[("overall", "", "md"), "note"]  # the sign-dropped text finding
    assert len(pub) == 44


def test_2014_text_overall_sign_dropped():
    text = paper_text(PAPER_2014)
    assert "mean difference was 1.68, 95%CI: -2.42-(-0.94)" in text
    assert "100.0%  -1.68 [-2.42, -0.94]" in text


# --- 2014 tables -----------------------------------------------------------------------------------
def test_table2_rows_verbatim_and_intervals_split():
    text = paper_text(PAPER_2014)
    t = load_dataset("msc_2014_table2_onearm")
    assert len(t) == 18
    for line in t["printed"]:
        assert line in text
    r = t.set_index(["outcome", "time_wk"])
    # "-9.22--0.33" = -9.22 to -0.33; "-3.31-2.85" = -3.31 to 2.85 (2014 Table 2)
    assert (r.loc[("PT", 24), "ci_low"], r.loc[("PT", 24), "ci_high"]) == (-9.22, -0.33)
    assert (r.loc[("ALB", 8), "ci_low"], r.loc[("ALB", 8), "ci_high"]) == (-3.31, 2.85)
    assert r.loc[("ALB", 24), "i2"] == 0.413
    assert r.loc[("MELD", 24), "n_studies"] == 4
    assert (t["ci_low"] <= t["ci_high"]).all()


def test_table1_counts():
    t1 = load_dataset("msc_2014_table1")
    assert len(t1) == 5
    assert t1["n_msc"].sum() == 44
    assert int(t1["n_control"].sum()) == 35  # 15 + 20: the same arms as Figure 3


# --- 2023 -----------------------------------------------------------------------------------------
def test_2023_printed_excerpts_verbatim():
    text = paper_text(PAPER_2023, join_lines=True)
    lines = paper_text(PAPER_2023).splitlines()
    d = load_dataset("msc_2023_pooled")
    for printed in d["printed"]:
        assert printed in text or printed in [ln.strip() for ln in lines], printed


def test_2023_vocabulary():
    d = load_dataset("msc_2023_pooled")
    assert set(d["outcome"]) <= {"survival", "MELD", "ALB", "TB", "PT", "INR", "ALT", "AST",
                                 "encephalopathy", "gi_haemorrhage", "rash", "infection", "hcc"}
    assert set(d["measure"]) == {"OR", "MD"}
    assert set(d["subgroup"]) == {"all", "ACLF", "cirrhosis"}
    assert set(d["p_op"]) == {"=", "<"}
    comp = d[d["time_wk"].isna()]
    assert set(comp["outcome"]) == {"encephalopathy", "gi_haemorrhage", "rash", "infection", "hcc"}
    assert comp["n_studies"].notna().all()


def test_2023_spot_values():
    # reference: 2023 paper Results text and Table 2, typed by hand
    d = load_dataset("msc_2023_pooled").set_index(["outcome", "time_wk", "subgroup"])
    assert tuple(d.loc[("survival", 8, "all"), ["estimate", "ci_low", "ci_high", "p_printed"]]) \
        == (2.47, 1.38, 4.43, 0.002)
    assert tuple(d.loc[("ALT", 2, "all"), ["estimate", "ci_low", "ci_high"]]) == \
        (-12.53, -20.56, -4.5)
    r = d.loc[("MELD", 24, "cirrhosis")]
    assert (r.estimate, r.p_printed, r.p_op, r.p_decimals) == (-2.30, 0.00001, "<", 5)
    enc = d.xs("encephalopathy", level="outcome").iloc[0]
    assert (enc.n_studies, enc.i2_pct, enc.estimate) == (3, 0, 0.41)
    inf = d.xs("infection", level="outcome").iloc[0]
    assert inf.i2_pct == 64


def test_2023_inconsistent_numbers_kept_as_printed():
    d = load_dataset("msc_2023_pooled").set_index(["outcome", "time_wk", "subgroup"])
    pt0 = d.loc[("PT", 0, "all")]
    assert (pt0.estimate, pt0.ci_low, pt0.ci_high, pt0.p_printed) == (-2.17, -2.17, 0.64, 0.29)
    assert "INCONSISTENT" in pt0.note
    pt4 = d.loc[("PT", 4, "all")]
    assert (pt4.estimate, pt4.ci_low, pt4.ci_high, pt4.p_printed) == (-2.69, -4.19, 1.19, 0.0004)
    assert "minus sign" in pt4.note
    assert "likelihood of death" in d.loc[("survival", 8, "all"), "note"]
    assert "ACLF" in d.loc[("survival", 12, "all"), "note"]
    for sub in ("ACLF", "cirrhosis"):
        assert "AMBIGUOUS" in d.loc[("ALB", 4, sub), "note"]
        assert d.loc[("ALB", 24, sub), "estimate"] == 4.55


# --- metadat exports vs published counts -------------------------------------------------------------
def test_bcg_counts():
    # reference: Colditz et al. 1994 Table (as in metadat dat.bcg), trial 1 Aronson 1948: 4/123 vs 11/139
    b = load_dataset("bcg")
    assert len(b) == 13
    r = b.iloc[0]
    assert (r.study, r.ai, r.bi, r.ci, r.di, r.n1i, r.n2i, r.ablat, r.alloc) == \
        ("Aronson 1948", 4, 119, 11, 128, 123, 139, 44, "random")
    assert ((b.ai + b.bi) == b.n1i).all() and ((b.ci + b.di) == b.n2i).all()
    assert set(b.alloc) == {"random", "alternate", "systematic"}


def test_pagliaro_contrasts_match_arms():
    arms = load_dataset("pagliaro1992_arms")
    con = load_dataset("pagliaro1992")
    assert arms["study"].nunique() == 26 and len(arms) == 54
    assert len(con) == 28  # 9 beta-blocker + 19 sclerotherapy arms vs control
    assert (con["subgroup"].value_counts().to_dict() ==
            {"sclerotherapy": 19, "beta-blockers": 9})
    a = arms.set_index(["study", "trt"])
    for _, r in con.iterrows():
        assert (r.ai, r.n1i) == tuple(a.loc[(r.study, r.subgroup), ["xi", "ni"]])
        assert (r.ci, r.n2i) == tuple(a.loc[(r.study, "control"), ["xi", "ni"]])
    # study 1: beta-blockers 2/43, sclerotherapy 9/42, control 13/41 (Pagliaro 1992)
    assert tuple(con[(con.study == 1)][["ai", "n1i", "ci", "n2i"]].iloc[0]) == (2, 43, 13, 41)


def test_sparse_datasets_have_zero_and_double_zero_cells():
    nw = load_dataset("nielweise2007")
    hahn = load_dataset("hahn2001")
    for d, k, zero, double in ((nw, 18, 6, 1), (hahn, 12, 4, 3)):
        assert len(d) == k
        assert ((d.ai == 0) | (d.ci == 0)).sum() == zero
        assert ((d.ai == 0) & (d.ci == 0)).sum() == double


# --- installed layout (wheel: data/ shipped as bayesmeta/_data) ------------------------------------
_LOAD_ALL = (
    "import bayesmeta.datasets as d, pathlib;"
    "print(d.data_dir());"
    "print(sum(len(d.load_dataset(n)) for n in d.list_datasets()))"
)


def _expected_rows():
    return sum(len(load_dataset(n)) for n in ALL)


def test_installed_layout_uses_package_data(tmp_path):
    # reference: the wheel layout of pyproject's force-include (data -> bayesmeta/_data),
    # mimicked by copying; run in a fresh interpreter so the source tree is not imported.
    import subprocess
    import sys

    site = tmp_path / "site"
    shutil.copytree(ROOT / "bayesmeta", site / "bayesmeta",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data", site / "bayesmeta" / "_data")
    proc = subprocess.run([sys.executable, "-c", _LOAD_ALL], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    where, rows = proc.stdout.split()
    assert Path(where) == site / "bayesmeta" / "_data"
    assert int(rows) == _expected_rows()


@pytest.mark.slow
def test_built_wheel_loads_every_dataset(tmp_path):
    # style.md §10.1: build the wheel, install it (no deps) into a target dir, load every dataset.
    import subprocess
    import sys

    out = tmp_path / "wheel"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(out), str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (whl,) = out.glob("bayesmeta-*.whl")
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                           str(site), str(whl)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-c", _LOAD_ALL], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    where, rows = proc.stdout.split()
    assert Path(where) == site / "bayesmeta" / "_data"
    assert int(rows) == _expected_rows()
