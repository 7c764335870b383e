"""Three designs of a user's own, end to end by spec, CLI and Python, with every model that
fits them.

* binary counts × week × subgroup (``tests/data/design_binary.csv``, cumulative deaths);
* continuous arms × week × subgroup (``design_continuous.csv``);
* published pooled ORs × week × subgroup (``design_published.csv``).

References: the classical cells against metafor 3.8-1 (``tests/reference/metafor_pipeline.json``);
the same exact Bayesian rows from all three entry points (one pipeline, deterministic
engines); a recovery test on data simulated with a known subgroup difference (the truth lies
inside the nested model's intervals). MCMC runs use smoke-test settings (``fast``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayesmeta import cli, pipeline
from bayesmeta.exceptions import DataWarning
from tolerances import OPTIMIZER

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
REF = json.loads((HERE / "reference" / "metafor_pipeline.json").read_text())

DESIGNS = {
    "binary": dict(file="design_binary.csv", measure="OR", study="trial",
                   models=["nnhm", "nested", "binomial-normal", "survival-counts"],
                   direction="lower_is_better"),
    "continuous": dict(file="design_continuous.csv", measure="MD", study="trial",
                       models=["nnhm", "nested"], direction="lower_is_better"),
    "published": dict(file="design_published.csv", measure="OR", study=None,
                      models=["nnhm", "nested", "survival-published"],
                      direction="higher_is_better"),
}


def _py(name, models=None, **kw):
    d = DESIGNS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipeline.analyze(DATA / d["file"], measure=d["measure"], study=d["study"],
                                time="week", subgroup="disease",
                                models=models or d["models"], contrast=("A", "B"),
                                direction=d["direction"], ci_prob=0.9, fast=True, seed=11,
                                **kw)


@pytest.fixture(scope="module", params=list(DESIGNS))
def python_run(request):
    return request.param, _py(request.param)


def _spec(tmp_path: Path, name: str, models) -> Path:
    d = DESIGNS[name]
    study = f'study = "{d["study"]}"\n' if d["study"] else ""
    text = f"""[analysis]
name = "my-{name}"
title = "My {name} trials"

[data]
path = "{(DATA / d['file']).as_posix()}"
measure = "{d['measure']}"
{study}time = "week"
subgroup = "disease"

[bayes]
model = {json.dumps(models)}
contrast = ["A", "B"]

[report]
ci_prob = 0.9
direction = "{d['direction']}"
"""
    sub = tmp_path / "specs"          # the data live outside the spec's folder
    sub.mkdir()
    (sub / f"{name}.toml").write_text(text)
    return sub / f"{name}.toml"


def test_python_every_model_gives_cells_and_contrasts(python_run):
    name, an = python_run
    df = an.to_frame()
    assert set(df["level"]) == {0.9} | ({0.95} if name == "published" else set())
    bay = df[df["source"] == "bayesian"]
    for model in DESIGNS[name]["models"]:
        assert any(r.fit.model == model for r in an.fits()), model
    # a nested cell: parameter mu with the CSV's levels as text
    nested = bay[bay["method"].str.contains("-GHM")]
    cells = nested[(nested["parameter"] == "mu") & (nested["time"] != "all")
                   & ~nested["time"].str.startswith("avg(")]
    assert {(g, t) for g, t in zip(cells["subgroup"], cells["time"])} == \
        set(zip(an.design.rows["subgroup"], an.design.rows["time"]))
    con = nested[nested["parameter"] == "contrast"]
    assert set(con["subgroup"]) == {"A - B"} and "all" in set(con["time"])
    assert len(an.exceedance()) and np.all(an.exceedance()["p_benefit"].between(0, 1))
    if name == "binary":
        # counts of deaths (lower is better); the survival-counts model reports cumulative
        # survival ORs, the reciprocal: its benefit is survival OR > 1, by definition
        rec = next(r for r in an.fits() if r.fit.model == "survival-counts")
        assert rec.fit.scale_reversed
        exc = an.exceedance()
        for p in rec.fit.params():
            if p.name != "mu":
                continue
            got = exc[(exc["method"] == rec.fit.method) & (exc["subgroup"] == p.get(
                "subgroup", rec.fit.coords.get("subgroup", ""))) & (exc["time"] == p.get(
                    "time"))]["p_benefit"]
            draws = rec.fit.draws(p)
            assert float(got.iloc[0]) == pytest.approx(float(np.mean(draws > 0)), abs=1e-9)


@pytest.mark.parametrize("name", ["binary", "continuous"])
def test_python_classical_cells_match_metafor(name):
    an = _py(name, models=["nnhm"])
    df = an.to_frame(0.95)
    for key, ref in REF[name]["cells"].items():
        g, w = key.split("|")
        r = df[(df["source"] == "classical") & (df["parameter"] == "mu")
               & (df["subgroup"] == g) & (df["time"] == w)].iloc[0]
        np.testing.assert_allclose([r.estimate, r.se], [ref["estimate"], ref["se"]],
                                   **OPTIMIZER)
    # the classical twin across weeks: tests/test_nested_pipeline.py (metafor rma.mv + vcalc)
    assert len(df[df["method"].str.startswith("REML-GHM")])


@pytest.mark.parametrize("name", list(DESIGNS))
def test_spec_cli_and_python_give_the_same_exact_rows(name, tmp_path, capsys):
    """`bayesmeta run spec.toml`, `bayesmeta bayes --json` and `bm.analyze` agree row for row
    on the deterministic (exact and classical) fits, at the spec's level 0.9."""
    spec = _spec(tmp_path, name, ["nnhm"])
    out = tmp_path / "report"
    assert cli.main(["run", str(spec), "--out", str(out), "--jobs", "1", "-q"]) == 0
    via_spec = pd.read_csv(out / "results.csv", keep_default_na=False,
                           dtype={"time": str, "subgroup": str})
    d = DESIGNS[name]
    argv = ["bayes", str(DATA / d["file"]), "--measure", d["measure"], "--time", "week",
            "--subgroup", "disease", "--contrast", "A:B", "--level", "0.9",
            "--direction", d["direction"], "--json"]
    if d["study"]:
        argv += ["--study", d["study"]]
    capsys.readouterr()
    assert cli.main(argv) == 0
    via_cli = pd.DataFrame(json.loads(capsys.readouterr().out)["rows"])
    via_py = _py(name, models=["nnhm"]).to_frame()
    key = ["source", "method", "parameter", "subgroup", "time"]
    for other in (via_cli, via_spec):
        a = via_py.set_index(key).sort_index()
        b = other.set_index(key).sort_index()
        assert list(a.index) == list(b.index)
        for col in ("estimate", "ci_low", "ci_high"):
            np.testing.assert_allclose(pd.to_numeric(b[col], errors="coerce"), a[col],
                                       rtol=1e-12)
        assert set(pd.to_numeric(b["level"])) == set(a["level"])


def test_spec_with_nested_model_writes_cells_at_the_spec_level(tmp_path):
    spec = _spec(tmp_path, "continuous", ["nested"])
    out = tmp_path / "report"
    assert cli.main(["run", str(spec), "--out", str(out), "--fast", "--seed", "3",
                     "--jobs", "1", "-q"]) == 0
    df = pd.read_csv(out / "results.csv", keep_default_na=False,
                     dtype={"time": str, "subgroup": str})
    nested = df[df["method"].str.contains("-GHM") & (df["source"] == "bayesian")]
    assert set(nested["level"]) == {0.9}
    cell = nested[(nested["parameter"] == "mu") & (nested["subgroup"] == "B")
                  & (nested["time"] == "24")]
    assert len(cell) == 1
    con = nested[nested["parameter"].str.startswith("contrast")]
    assert {"A - B"} == set(con["subgroup"])
    assert {"2", "4", "24", "all", "avg(2,4,24)"} == set(con["time"])


def test_nested_recovers_a_known_subgroup_difference():
    """12 trials (6 per subgroup) × 3 weeks simulated with subgroup means -2 (A) and -0.5 (B)
    and small between-trial variation: the 95% intervals of both subgroup means and of the
    contrast A − B (true -1.5) contain the truth."""
    rng = np.random.default_rng(7)
    rows = []
    for j in range(12):
        g, m = ("A", -2.0) if j < 6 else ("B", -0.5)
        u = rng.normal(0, 0.3)
        for w in (4, 12, 24):
            se = 0.35
            rows.append({"trial": f"t{j}", "week": w, "disease": g,
                         "yi": m + u + rng.normal(0, 0.2) + rng.normal(0, se), "sei": se})
    df = pd.DataFrame(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        an = pipeline.analyze(df, measure="GEN", study="trial", time="week",
                              subgroup="disease", models="nested", contrast=("A", "B"),
                              checks=False, within_r_grid=[], fast=True, seed=5)
    res = an.to_frame(0.95)
    nested = res[res["method"].str.contains("-GHM") & (res["source"] == "bayesian")]
    for sub, truth in (("A", -2.0), ("B", -0.5)):
        r = nested[(nested["parameter"] == "mu") & (nested["subgroup"] == sub)
                   & (nested["time"] == "all")].iloc[0]
        assert r.ci_low < truth < r.ci_high, (sub, r.ci_low, r.ci_high)
    c = nested[(nested["parameter"] == "contrast") & (nested["time"] == "all")].iloc[0]
    assert c.ci_low < -1.5 < c.ci_high
    assert c.ci_high < 0   # the difference is detected
