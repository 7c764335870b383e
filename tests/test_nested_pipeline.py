"""The nested model through the pipeline (spec keys, CLI, Python), its classical twin and its
workflow checks.

References: the classical twin against metafor 3.8-1 ``rma.mv`` with ``vcalc`` (r = 0.5) and
fixed cell means (``tests/reference/metafor_pipeline.R`` → ``metafor_pipeline.json``, key
``twin``); the engines themselves are checked in ``test_ghm.py`` (Gaussian conditioning,
quadrature), ``test_ghm_reml.py`` (metafor struct CS/AR/CAR), ``test_ghm_mcmc.py`` (MCMC twin)
and ``test_ghm_calibration.py`` (SBC). Here: every setting reaches the model it names, and the
report states it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesmeta as bm
from bayesmeta.exceptions import SpecError
from bayesmeta.spec import load_spec

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
REF = json.loads((HERE / "reference" / "metafor_pipeline.json").read_text())
CONT = dict(measure="MD", study="trial", time="week", subgroup="disease")


def _an(**kw):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bm.analyze(DATA / "design_continuous.csv", **{**CONT, **kw})


@pytest.fixture(scope="module")
def nested():
    return _an(models="nested", contrast=("A", "B"))


@pytest.mark.parametrize("name", ["continuous", "binary"])
def test_classical_twin_matches_metafor_rma_mv_with_vcalc(name):
    """Cell means and each subgroup's average over its weeks (a linear combination) equal
    metafor's rma.mv(yi, vcalc(r = 0.5), mods = ~0 + cell, random = ~1|trial + ~1|row)."""
    measure = "MD" if name == "continuous" else "OR"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        an = bm.analyze(DATA / f"design_{name}.csv", measure=measure, study="trial",
                        time="week", subgroup="disease", models="nnhm")
    df = an.to_frame(0.95)
    t = df[df["method"].str.startswith("REML-GHM") & (df["parameter"] == "mu")]
    ref = REF[name]["twin"]
    for key, r in ref["cells"].items():
        g, w = key.split("|")
        row = t[(t["subgroup"] == g) & (t["time"] == w)].iloc[0]
        np.testing.assert_allclose([row.estimate, row.se, row.ci_low, row.ci_high],
                                   [r["estimate"], r["se"], r["ci_low"], r["ci_high"]],
                                   rtol=1e-6, atol=1e-8)
    for g, r in ref["windows"].items():
        row = t[(t["subgroup"] == g) & t["time"].str.startswith("avg(")].iloc[0]
        np.testing.assert_allclose([row.estimate, row.se, row.ci_low, row.ci_high],
                                   [r["estimate"], r["se"], r["ci_low"], r["ci_high"]],
                                   rtol=1e-6, atol=1e-8)


def test_naive_pooling_across_weeks_is_not_offered(nested):
    df = nested.to_frame()
    cl = df[df["source"] == "classical"]
    assert not len(cl[cl["time"] == "all"])  # only the twin's stated window pools weeks
    assert any("appear at several time points" in w for w in nested.warnings)


def test_default_settings_are_stated(nested):
    main = nested.fits(source="bayesian", model="nested")
    assert len(main) == 1
    f = main[0].fit
    assert f.method.startswith("exact-GHM (times exchangeable, subgroups fixed, r 0.5)")
    notes = " ".join(f.notes)
    assert "within-study sampling correlation r = 0.5" in notes
    assert "implied prior of each contrast" in notes
    from bayesmeta.sections import render

    out = render(nested)
    text = " ".join(out.answers)
    assert "Within-study correlation of sampling errors across times (assumed r = 0.5" in text
    assert "Prior: implied prior of each contrast Normal(0" in text


def test_within_r_grid_refits_and_moves_the_window(nested):
    sens = [r for r in nested.fits(role="sensitivity") if r.setting.startswith("r = ")]
    assert [r.setting for r in sens] == ["r = 0", "r = 0.5", "r = 0.8", "r = 0.9"]
    est = {}
    for r in sens:
        s = r.fit.summary(0.95)
        p = r.fit.find("mu", subgroup="A", time="avg(2,4,24)")
        est[r.setting] = (s.loc[p, "estimate"], s.loc[p, "ci_high"] - s.loc[p, "ci_low"])
    main = nested.fits(source="bayesian", model="nested")[0].fit
    p = main.find("mu", subgroup="A", time="avg(2,4,24)")
    s = main.summary(0.95)
    assert est["r = 0.5"][0] == pytest.approx(s.loc[p, "estimate"], rel=1e-9)
    assert len({round(v[1], 6) for v in est.values()}) == 4  # r changes the answer


@pytest.mark.parametrize("opts, param", [
    (dict(time_structure="ar1"), "rho"),
    (dict(time_structure="car"), "rho"),
    (dict(subgroup_effect="random"), "sigma_subgroup"),
    (dict(within_r="uniform"), "r"),
    (dict(study_time="ar1"), "rho_within"),
])
def test_each_setting_reaches_the_model(opts, param):
    an = _an(models="nested", within_r_grid=[], checks=False, **opts)
    f = an.fits(source="bayesian", model="nested")[0].fit
    assert param in {p.name for p in f.params()}, opts
    base = _an(models="nested", within_r_grid=[], checks=False)
    assert param not in {p.name for p in base.fits(source="bayesian",
                                                   model="nested")[0].fit.params()}


def test_within_r_number_and_window_and_extrapolate():
    an = _an(models="nested", within_r=0.8, window=[4, 24], within_r_grid=[], checks=False)
    f = an.fits(source="bayesian", model="nested")[0].fit
    assert "r 0.8" in f.method
    assert {p.get("time") for p in f.params() if p.get("time", "").startswith("avg(")} == {
        "avg(4,24)"}


def test_within_r_ratio_form_for_cumulative_outcomes():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        an = bm.analyze(DATA / "design_binary.csv", measure="OR", study="trial", time="week",
                        subgroup="disease", models="nested", within_correlation="ratio",
                        checks=False)
    f = an.fits(source="bayesian", model="nested")[0].fit
    assert any("sqrt(min(t, t')/max(t, t'))" in n for n in f.notes)
    assert not [r for r in an.fits(role="sensitivity") if r.setting.startswith("r = ")]


@pytest.mark.parametrize("opts, key", [
    (dict(models="nnhm", time_structure="ar1"), "bayes.time_structure"),
    (dict(models="nnhm", within_r=0.3), "bayes.within_r"),
    (dict(models="nnhm", within_r_grid=[0.2]), "sensitivity.within_r"),
    (dict(models="nested", within_r=1.2), "bayes.within_r"),
    (dict(models="nested", within_r="beta:0:1"), "bayes.within_r"),
    (dict(models="nested", within_r=0.5, within_correlation="ratio"), "bayes.within_r"),
    (dict(models="nested", window=[3]), "bayes.window"),
    (dict(models="nested", within_r_grid=[1.0]), "sensitivity.within_r"),
])
def test_bad_or_inapplicable_settings_are_refused(opts, key):
    with pytest.raises(SpecError) as e:
        _an(**opts)
    assert e.value.key == key


def test_workflow_checks_are_computed_and_rendered(nested):
    from bayesmeta.sections import render

    ck = nested.checks[("", "")] if ("", "") in nested.checks else next(iter(
        nested.checks.values()))
    assert {"prior_predictive", "posterior_predictive", "prior_posterior", "loo"} <= set(ck)
    pp = ck["prior_posterior"]
    assert {"sigma_time", "sigma_study", "tau"} <= set(pp["parameter"])
    assert pp["contraction"].between(-1, 1).all()
    assert set(ck["loo"]["model"]) >= {"fitted model", "independent sampling errors (r = 0)"}
    out = render(nested)
    assert "Model checks" in [b.text for b in out.blocks if b.kind == "heading"]
    names = set(out.tables)
    assert any(n.startswith("checks_prior-posterior") for n in names)
    assert any(n.startswith("checks_loo") for n in names)


def test_decided_by_the_prior_is_an_answer_line():
    """Two studies give the study-effect SD almost nothing to learn from: its contraction is
    below 0.2 and the report says so next to the answers."""
    import warnings

    from bayesmeta.pipeline import run_analysis
    from bayesmeta.sections import render

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        an = run_analysis(load_spec(HERE.parent / "models" / "meld_2014_fig3.toml"))
    pp = an.checks[("MELD", "")]["prior_posterior"]
    row = pp[pp["parameter"] == "sigma_study"].iloc[0]
    assert row["contraction"] < 0.2 and row["decided_by_prior"]
    text = " ".join(render(an).answers)
    assert "sigma_study is decided by the prior" in text


def test_extrapolated_contrast_is_marked_not_hidden():
    """Subgroup B observed only at week 4, A only at week 12: the average over both weeks is
    an extrapolation for each subgroup and is marked."""
    df = pd.DataFrame({"study": ["s1", "s2", "s3", "s4"], "week": [12, 12, 4, 4],
                       "g": ["A", "A", "B", "B"], "yi": [-1.0, -1.4, -0.2, -0.5],
                       "vi": [0.1, 0.12, 0.09, 0.11]})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        an = bm.analyze(df, measure="MD", study="study", time="week", subgroup="g",
                        models="nested", checks=False)
    res = an.to_frame()
    win = res[(res["parameter"] == "contrast") & res["time"].str.startswith("avg(")]
    assert len(win) and (win["flag"].str.contains("EXTRAPOLATION")).all()
    con = an.contrasts()
    assert con[con["time"].str.startswith("avg(")]["extrapolation"].all()


def test_cli_bayes_passes_nested_settings(tmp_path):
    cmd = [sys.executable, "-m", "bayesmeta", "bayes", str(DATA / "design_continuous.csv"),
           "--measure", "MD", "--model", "nested", "--study", "trial", "--time", "week",
           "--subgroup", "disease", "--time-structure", "ar1", "--within-r", "0.7", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    methods = {x["method"] for x in rows if x["source"] == "bayesian"}
    assert any("times ar1" in m and "r 0.7" in m for m in methods), methods
    assert any(x["parameter"] == "rho" for x in rows)


def test_cli_refuses_nested_setting_for_nnhm():
    cmd = [sys.executable, "-m", "bayesmeta", "bayes", str(DATA / "design_continuous.csv"),
           "--measure", "MD", "--study", "trial", "--within-r", "0.7"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "within_r" in r.stderr and "Traceback" not in r.stderr
