"""The generic pipeline on users' own tables: design rules, classical twins against metafor,
levels chosen when read, direction, repeated studies.

References
----------
* metafor 3.8-1: ``tests/reference/metafor_pipeline.R`` → ``metafor_pipeline.json`` (per-cell
  REML, rma.mh, rma.mv(~1 | trial/week), FE moderator test), on the committed CSVs in
  ``tests/data/`` (two synthetic designs, and metadat's dat.yusuf1985 table 6 with its two
  different trials labelled "Barber").
* closed form: a Wald interval at level p is estimate ± Φ⁻¹((1+p)/2)·SE; the difference of two
  independent estimates has SE sqrt(se_a² + se_b²).
* quadrature: the exact NNHM interval at any level against the nested Gauss-Legendre integral
  of ``tests/test_exact.py`` (written for the tests only).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayesmeta import pipeline
from bayesmeta.design import Design
from bayesmeta.exceptions import DataError, DataWarning, SpecError
from tolerances import EXACT, METAFOR, OPTIMIZER, QUADRATURE

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
REF = json.loads((HERE / "reference" / "metafor_pipeline.json").read_text())


def _row(df, **kw):
    m = np.ones(len(df), bool)
    for k, v in kw.items():
        m &= (df[k] == v).to_numpy()
    assert m.sum() == 1, (kw, m.sum())
    return df[m].iloc[0]


def analyze(*a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return pipeline.analyze(*a, **kw)


# --------------------------------------------------------------------------------------------
# row identity
# --------------------------------------------------------------------------------------------
def test_same_label_different_data_are_two_studies_metafor_yusuf1985():
    """Two different trials labelled 'Barber' (metadat dat.yusuf1985, table 6): both are
    analysed, relabelled with their row, with a warning; REML and MH pool all 21 rows exactly
    as metafor does."""
    with pytest.warns(DataWarning, match=r"rows share the study label 'Barber' \(rows 5, 18\)"):
        d = Design.from_frame(DATA / "yusuf1985_table6.csv", "OR")
    assert "Barber (row 5)" in d.studies and "Barber (row 18)" in d.studies
    an = analyze(DATA / "yusuf1985_table6.csv", measure="OR")
    mu = _row(an.to_frame(), source="classical", parameter="mu")
    ref = REF["yusuf_reml"]
    assert an.design.k == ref["k"] == 21
    np.testing.assert_allclose([mu.estimate, mu.se], [ref["estimate"], ref["se"]], **OPTIMIZER)
    mh = analyze(DATA / "yusuf1985_table6.csv", measure="OR", method="MH")
    m = _row(mh.to_frame(), source="classical", parameter="mu")
    np.testing.assert_allclose([m.estimate, m.se], [REF["yusuf_mh"]["estimate"],
                                                    REF["yusuf_mh"]["se"]], **METAFOR)


def test_identical_duplicate_rows_are_an_error(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("study,yi,vi\nA,0.1,0.04\nB,0.3,0.05\nA,0.1,0.04\n")
    with pytest.raises(DataError, match=r"row 4, column .study.: rows 2 and 4 are identical"):
        Design.from_frame(f, "GEN")


def test_a_label_links_rows_across_time_and_a_repeat_at_one_time_is_an_error(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("study,week,yi,vi\nA,4,0.1,0.04\nA,12,0.2,0.05\nB,4,0.3,0.05\nB,4,0.4,0.06\n")
    with pytest.raises(DataError, match=r"two rows for the same study 'B', time '4' \(rows 4 "
                                        r"and 5\)"):
        Design.from_frame(f, "GEN", time="week")
    f.write_text("study,week,yi,vi\nA,4,0.1,0.04\nA,12,0.2,0.05\nB,4,0.3,0.05\n")
    d = Design.from_frame(f, "GEN", time="week")
    assert d.repeated_studies() == {"A": ["4", "12"]}


def test_numeric_study_names_a_week_column_and_time_labels_with_units(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("trial,week,yi,vi\n1,12 weeks,0.1,0.04\n2,4 weeks,0.2,0.05\n"
                 "1,4 weeks,0.3,0.05\n3,24 weeks,0.1,0.05\n")
    d = Design.from_frame(f, "GEN", study="trial", time="week")
    assert d.studies == ["1", "2", "3"]
    assert d.levels("time") == ["4 weeks", "12 weeks", "24 weeks"]   # numeric order
    assert d.repeated_studies() == {"1": ["4 weeks", "12 weeks"]}


def test_missing_role_value_is_an_error_naming_row_and_column(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("study,grp,yi,vi\nA,x,0.1,0.04\nB,,0.3,0.05\nC,y,0.2,0.05\n")
    with pytest.raises(DataError, match=r"row 3, column 'grp': missing value '' in role column"):
        Design.from_frame(f, "GEN", subgroup="grp")


def test_row_rules_include_exclude_and_wildcards(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("study,week,note,yi,vi\nA,0,,0.0,0.04\nA,4,,0.2,0.05\nB,0,,0.1,0.05\n"
                 "B,4,CHECK this,0.4,0.06\nC,4,,0.3,0.05\n")
    d = Design.from_frame(f, "GEN", time="week", exclude={"week": [0], "note": ["CHECK*"]})
    assert d.rows["row"].tolist() == [3, 6]
    assert any("exclude week in ['0']" in n for n in d.info)
    assert d.excluded["row"].tolist() == [2, 4, 5]
    with pytest.raises(SpecError, match=r"exclude: value\(s\) \['7'\] not found in column "
                                        r"'week'"):
        Design.from_frame(f, "GEN", time="week", exclude={"week": [7]})


def test_published_row_with_another_measure_is_an_error(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("outcome,measure,week,estimate,ci_low,ci_high\nx,OR,4,1.5,1.1,2.0\n"
                 "y,MD,4,-1.2,-2.0,-0.4\n")
    with pytest.raises(DataError, match=r"row 3, column 'measure': row's measure 'MD' differs"):
        Design.from_frame(f, "OR", time="week", outcome="outcome")
    d = Design.from_frame(f, "OR", time="week", outcome="outcome", include={"outcome": ["x"]})
    np.testing.assert_allclose(d.rows["yi"], [math.log(1.5)], **EXACT)


def test_total_level_rows_are_analysed_apart_from_the_subgroups(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("week,grp,estimate,ci_low,ci_high\n4,all,-2,-3,-1\n4,a,-2.5,-4,-1\n"
                 "4,b,-1.5,-3,0\n12,all,-2.2,-3.2,-1.2\n12,a,-3,-5,-1\n")
    d = Design.from_frame(f, "MD", time="week", subgroup="grp", total_level="all")
    parts = dict(d.parts())
    assert parts["all"].rows["row"].tolist() == [2, 5]
    assert parts["by subgroup"].rows["row"].tolist() == [3, 4, 6]


# --------------------------------------------------------------------------------------------
# classical twins against metafor
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def continuous():
    return analyze(DATA / "design_continuous.csv", measure="MD", study="trial", time="week",
                   subgroup="disease")


def test_per_cell_reml_matches_metafor(continuous):
    df = continuous.to_frame()
    for key, ref in REF["continuous"]["cells"].items():
        g, w = key.split("|")
        r = _row(df, source="classical", method="REML", parameter="mu", subgroup=g, time=w)
        np.testing.assert_allclose([r.estimate, r.se, r.ci_low, r.ci_high],
                                   [ref["estimate"], ref["se"], ref["ci_low"], ref["ci_high"]],
                                   **OPTIMIZER)


def test_repeated_studies_are_pooled_by_the_two_level_model_only(continuous):
    """Each trial has rows at weeks 2, 4 and 24: no classical estimate pools the weeks as
    independent studies; across weeks there is only the classical twin of the nested model
    (its window average, checked against metafor rma.mv + vcalc in test_nested_pipeline.py);
    a warning names the repeated trials."""
    df = continuous.to_frame()
    cl = df[df["source"] == "classical"]
    assert not len(cl[cl["time"] == "all"])
    across = cl[cl["time"].str.startswith("avg(")]
    assert len(across) and across["method"].str.startswith("REML-GHM").all()
    assert any("6 studies appear at several time points (S1: 2, 4, 24" in w
               for w in continuous.warnings)


def test_fe_test_for_subgroup_differences_matches_metafor_qm():
    an = analyze(DATA / "design_continuous.csv", measure="MD", study="trial", time="week",
                 subgroup="disease", method="FE")
    for w, ref in REF["continuous"]["tests_fe"].items():
        t = an.tests[an.tests["time"] == w].iloc[0]
        np.testing.assert_allclose([t.q, t.p], [ref["QM"], ref["QMp"]], **METAFOR)
        assert t.df == ref["QMdf"]


def test_classical_contrast_is_the_difference_of_independent_cells(continuous):
    """a − b = est_a − est_b with SE sqrt(se_a² + se_b²) from metafor's cell fits."""
    cl = continuous.classical_contrasts(0.95)
    for w in ("2", "4", "24"):
        a, b = REF["continuous"]["cells"][f"A|{w}"], REF["continuous"]["cells"][f"B|{w}"]
        r = _row(cl, time=w)
        assert r.subgroup == "A - B"
        se = math.hypot(a["se"], b["se"])
        np.testing.assert_allclose([r.estimate, r.se], [a["estimate"] - b["estimate"], se],
                                   **OPTIMIZER)


def test_mh_per_cell_matches_metafor():
    an = analyze(DATA / "design_binary.csv", measure="OR", study="trial", time="week",
                 subgroup="disease", method="MH")
    df = an.to_frame()
    for key, ref in REF["binary"]["mh"].items():
        g, w = key.split("|")
        r = _row(df[~df["method"].str.startswith("REML-GHM")], source="classical",
                 parameter="mu", subgroup=g, time=w)
        np.testing.assert_allclose([r.estimate, r.se], [ref["estimate"], ref["se"]], **METAFOR)


# --------------------------------------------------------------------------------------------
# the level is chosen when results are read
# --------------------------------------------------------------------------------------------
def test_level_reaches_classical_rows(continuous):
    ref = REF["continuous"]["cells"]["A|4"]
    for level in (0.8, 0.9, 0.99):
        r = _row(continuous.to_frame(level), source="classical", method="REML",
                 parameter="mu", subgroup="A", time="4")
        z = stats.norm.ppf(0.5 + level / 2)
        assert r.level == level
        np.testing.assert_allclose([r.ci_low, r.ci_high],
                                   [ref["estimate"] - z * ref["se"],
                                    ref["estimate"] + z * ref["se"]], **OPTIMIZER)


def test_level_reaches_exact_bayesian_rows(continuous):
    """The exact NNHM interval at level 0.9 equals the 5% / 95% quantiles of the posterior
    by independent nested Gauss-Legendre integration (tests/test_exact.py)."""
    from test_exact import BruteForce

    cell = continuous.design.subset(subgroup="B", time="24")
    rec = [r for r in continuous.fits(source="bayesian")
           if r.fit.coords.get("subgroup") == "B" and r.fit.coords.get("time") == "24"][0]
    res = rec.fit.result
    mu_p = (res.mu_prior.mean, res.mu_prior.sd)
    bf = BruteForce(cell.rows["yi"], cell.rows["sei"], res.tau_prior, mu_p)
    r = _row(continuous.to_frame(0.9), source="bayesian", parameter="mu", subgroup="B",
             time="24")
    assert r.level == 0.9
    for q, x in ((0.05, r.ci_low), (0.95, r.ci_high)):
        np.testing.assert_allclose(bf.cdf_mu(x), q, **QUADRATURE)


def test_spec_ci_prob_sets_the_default_level():
    an = analyze(DATA / "design_continuous.csv", measure="MD", study="trial", time="week",
                 ci_prob=0.9)
    assert set(an.to_frame()["level"]) == {0.9}


# --------------------------------------------------------------------------------------------
# direction
# --------------------------------------------------------------------------------------------
def test_flipping_direction_maps_p_benefit_to_its_complement():
    kw = dict(measure="MD", study="trial", time="week", subgroup="disease", thresholds=[-1.0])
    lo = analyze(DATA / "design_continuous.csv", direction="lower_is_better", **kw).exceedance()
    hi = analyze(DATA / "design_continuous.csv", direction="higher_is_better", **kw).exceedance()
    np.testing.assert_allclose(lo["p_benefit"] + hi["p_benefit"], 1.0, atol=1e-12)
    np.testing.assert_allclose(lo["p_beyond_-1"] + hi["p_beyond_-1"], 1.0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# bad model / contrast / role: one line, before fitting
# --------------------------------------------------------------------------------------------
def test_model_the_design_cannot_carry_is_refused():
    with pytest.raises(SpecError, match=r"model 'binomial-normal' needs measure OR"):
        analyze(DATA / "design_continuous.csv", measure="MD", models="binomial-normal")
    with pytest.raises(SpecError, match=r"model 'survival-published' needs a time column"):
        analyze(DATA / "design_published.csv", measure="OR", models="survival-published")
    with pytest.raises(SpecError, match=r"model 'nested' needs at least two cells"):
        analyze(DATA / "yusuf1985_table6.csv", measure="OR", models="nested")


def test_unknown_contrast_level_and_absent_role_column():
    with pytest.raises(SpecError, match=r"contrast level\(s\) \['C'\] not in the subgroup "
                                        r"column 'disease'"):
        analyze(DATA / "design_continuous.csv", measure="MD", study="trial", time="week",
                subgroup="disease", contrast=("A", "C"))
    with pytest.raises(DataError, match=r"the time column 'weeks' is not in the table\. "
                                        r"Did you mean 'week'\?"):
        analyze(DATA / "design_continuous.csv", measure="MD", time="weeks")


def test_unknown_option_suggests():
    with pytest.raises(SpecError, match=r"unknown option 'subgrup'.*Did you mean 'subgroup'"):
        analyze(DATA / "design_continuous.csv", measure="MD", subgrup="disease")
