"""End-to-end: `bayesmeta run` on bundled specs in --fast mode.

References: the bundled data files (sha256 via hashlib), the shared schema
(bayesmeta.results.SCHEMA), the printed numbers in the bundled published tables (every one must
appear in the audit with a verdict), and a second run with the same seed (byte-identical CSVs).
The default run uses the exact/classical analyses plus one tiny MCMC analysis (2014 Figure 3);
every spec runs under the `slow` marker.
"""

import hashlib
import json
import time
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr

from bayesmeta import results, runner
from bayesmeta.cli import main
from bayesmeta.spec import bundled_specs, models_dir

EXACT_SPECS = ["bcg.toml", "complications_2023.toml", "onearm_2014.toml"]


def spec_paths(names):
    return [str(models_dir() / n) for n in names]


def csv_bytes(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*.csv"))}


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("exact")
    a = runner.run(spec_paths(EXACT_SPECS), out_dir=base / "a", seed=7, fast=True)
    b = runner.run(spec_paths(EXACT_SPECS), out_dir=base / "b", seed=7, fast=True)
    return a, b


@pytest.fixture(scope="module")
def fig3_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fig3") / "reports"
    return runner.run(spec_paths(["meld_2014_fig3.toml"]), out_dir=out, fast=True)


def test_report_layout_and_provenance(exact_run):
    out, _ = exact_run
    assert (out / "index.html").is_file() and (out / "provenance.json").is_file()
    for name in ("bcg", "complications-2023", "onearm-2014"):
        assert (out / name / "index.html").is_file() and (out / name / "report.md").is_file()
        assert list((out / name / "figures").glob("*.png"))
        assert not list((out / name / "figures").glob("*.svg"))  # SVG only with svg=True
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["fast"] is True and prov["seed"] == 7
    for name, p in prov["analyses"].items():
        data = models_dir().parent / "data" if (models_dir().parent / "data").is_dir() else None
        assert len(p["data_sha256"]) == 64 and len(p["spec_sha256"]) == 64
        if data is not None:
            assert p["data_sha256"] == hashlib.sha256((data / p["data"]).read_bytes()).hexdigest()
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "--fast run" in html


def test_results_csv_uses_shared_schema(exact_run):
    out, _ = exact_run
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert tuple(df.columns) == results.SCHEMA
    assert set(df["source"]) <= {"published", "classical", "bayesian"}
    bcg = df[df["analysis"] == "bcg"]
    assert {"classical", "bayesian"} <= set(bcg["source"])


def test_same_seed_gives_identical_csv_bytes(exact_run):
    a, b = exact_run
    ca, cb = csv_bytes(a), csv_bytes(b)
    assert ca.keys() == cb.keys() and len(ca) > 5
    assert ca == cb


def test_fig3_audit_in_report(fig3_run):
    """Every printed number of 2014 Figure 3 (bundled published table + per-study rows) is in
    audit.csv with published value, recomputed classical value, Bayesian posterior where one
    exists, and a verdict."""
    out = fig3_run
    aud = pd.read_csv(out / "audit.csv", keep_default_na=False)
    pub = pd.read_csv(models_dir().parent / "data" / "meld_2014_fig3_published.csv") \
        if (models_dir().parent / "data").is_dir() else None
    f3 = aud[aud["analysis"] == "meld-2014-fig3"]
    if pub is not None:
        assert len(f3) == len(pub) + 6 * 4 + 1
    assert {"published", "recomputed", "bayesian", "verdict"} <= set(f3.columns)
    assert (f3["verdict"] != "").all()
    est = f3[f3["quantity"].isin(["md", "ci_low", "ci_high"]) & (f3["item"] != "overall MD, "
                                                                   "Results text")]
    assert pd.to_numeric(est["bayesian"]).notna().all()
    page = (out / "meld-2014-fig3" / "index.html").read_text(encoding="utf-8")
    assert "Peng L 2011" in page and "transcription error" in page
    res = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert (res["method"].str.startswith("exact-GHM")).any()


def test_cli_validate_exit_codes(tmp_path, capsys):
    assert main(["validate"]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[analysis]\nname = "x"\ntitle = "x"\ndescription = "x"\n\n'
                   '[data]\ndataset = "bcg"\nmeasure = "RR"\nstudyy = "study"\n')
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 9" in err and "Did you mean 'study'?" in err


def test_cli_run_invalid_spec_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[analysis]\nname = "x"\ntitle = "x"\n\n'
                   '[data]\ndataset = "bcg"\nmeasure = "RR"\nrow_kind = "armss"\n')
    out = tmp_path / "out"
    assert main(["run", str(bad), "--out", str(out), "-q"]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert "line 8" in err and "Did you mean 'arms'?" in err


@pytest.mark.slow
def test_every_bundled_spec_runs_fast_and_reproducibly(tmp_path):
    a = runner.run([], out_dir=tmp_path / "a", fast=True)
    names = {p.name for p in a.iterdir() if p.is_dir()}
    assert len(names) == len(bundled_specs())
    b = runner.run([], out_dir=tmp_path / "b", fast=True)
    assert csv_bytes(a) == csv_bytes(b)


def test_baseline_rows_are_not_pooled_with_follow_up():
    """2023 paper, Results: week-0 MDs are baseline comparisons ("Baseline MELD score was not
    different between the MSC and control groups"), not treatment effects: the nested model must
    not see them (they would pull the pooled effect toward 0). The bundled spec leaves them out
    with an exclude rule; they stay in the design's excluded rows for the audit."""
    from bayesmeta.datasets import load_dataset
    from bayesmeta.nested_part import ghm_table
    from bayesmeta.spec import load_spec

    pub = load_dataset("msc_2023_pooled")
    meld = pub[pub["outcome"] == "MELD"]
    n_base = int((pd.to_numeric(meld["time_wk"]) == 0).sum())
    assert n_base >= 1
    design = load_spec(models_dir() / "liver_2023.toml").design
    md = design.subset(outcome="MELD")
    assert "0" not in set(md.rows["time"])
    for _, part in md.parts():
        assert "0" not in set(ghm_table(part)["time"])
    ex = design.excluded
    assert int(((ex["outcome"] == "MELD") & (ex["time"] == "0")).sum()) == n_base
    assert md.k + int((ex["outcome"] == "MELD").sum()) <= len(meld)


def test_simulation_spec_same_seed_identical_csv_bytes(tmp_path):
    """A simulation spec through `bayesmeta run --fast`: same seed -> byte-identical CSVs
    (reference: the first run); another --seed -> other numbers; the report has the figure."""
    spec = spec_paths(["simulation.toml"])
    a = runner.run(spec, out_dir=tmp_path / "a", seed=3, fast=True)
    b = runner.run(spec, out_dir=tmp_path / "b", seed=3, fast=True)
    c = runner.run(spec, out_dir=tmp_path / "c", seed=4, fast=True)
    ca, cb = csv_bytes(a), csv_bytes(b)
    assert "simulation/tables/coverage.csv" in ca and ca == cb
    assert csv_bytes(c)["simulation/tables/coverage.csv"] != ca["simulation/tables/coverage.csv"]
    assert (a / "simulation" / "figures" / "coverage.png").is_file()
    prov = json.loads((a / "provenance.json").read_text())
    assert prov["analyses"]["simulation"]["seed"] == 3


def test_parallel_schedule_gives_the_serial_numbers(tmp_path, capfd):
    """`--jobs 2` runs MCMC analyses in a worker process beside the others; each analysis is
    seeded from its own spec, so the tables must be byte-identical to a serial run (reference:
    the serial run). The worker reports its own progress on stderr only when progress is on."""
    from bayesmeta import runner
    from bayesmeta.spec import models_dir

    # every bundled analysis is exact: an MCMC copy of the BCG analysis makes the worker's job
    text = (models_dir() / "bcg.toml").read_text(encoding="utf-8")
    text = text.replace('name = "bcg"', 'name = "bcg-mcmc"').replace(
        'engine = "exact"', 'engine = "mcmc"')
    mc = tmp_path / "bcg_mcmc.toml"
    mc.write_text(text, encoding="utf-8")
    specs = [mc, models_dir() / "meld_2014_fig3.toml"]
    # survival (exact, run and rendered with its NetCDF by whichever process is free first)
    specs_ab = specs + [models_dir() / "survival_2023.toml"]
    a = runner.run(specs_ab, out_dir=tmp_path / "serial", fast=True, jobs=1)
    lines = []
    b = runner.run(specs_ab, out_dir=tmp_path / "parallel", fast=True, jobs=2,
                   progress=lines.append, svg=True)
    for name in ("results.csv", "audit.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    pngs = sorted(p.relative_to(b) for p in b.glob("*/figures/*.png"))  # drawn in either process
    assert pngs and [p.with_suffix(".svg") for p in pngs] == sorted(
        p.relative_to(b) for p in b.glob("*/figures/*.svg"))
    assert not list(a.glob("*/figures/*.svg"))
    ncs = sorted(p.relative_to(a) for p in a.glob("*/posterior/*.nc"))
    assert ncs and ncs == sorted(p.relative_to(b) for p in b.glob("*/posterior/*.nc"))
    for rel in ncs:  # NetCDF rendered in either process, or at writing: same draws
        with xr.open_datatree(a / rel) as ta, xr.open_datatree(b / rel) as tb:
            assert set(ta.children) == set(tb.children) and "posterior" in ta.children
            for g in set(ta.children) - {"sample_stats"}:  # sample_stats hold timings
                xr.testing.assert_equal(ta[g].to_dataset(), tb[g].to_dataset())
    err = capfd.readouterr().err
    assert "(worker) bcg-mcmc (analysis) --fast" in err
    assert any("bcg-mcmc (analysis) done in" in m and "(worker)" in m for m in lines)
    runner.run(specs, out_dir=tmp_path / "quiet", fast=True, jobs=2)
    assert "(worker)" not in capfd.readouterr().err


def test_an_error_in_the_worker_reaches_the_caller(tmp_path, monkeypatch):
    """An analysis failing in the worker process fails the run with the worker's own exception
    (reference: the SpecError that loading the same file gives here), and no process is left.
    This process's analysis waits until the worker has claimed the other, so the worker runs
    one whatever the timing; both files are broken after validation, as if edited mid-run."""
    from bayesmeta.exceptions import SpecError
    from bayesmeta.spec import load_spec

    text = (models_dir() / "bcg.toml").read_text(encoding="utf-8")
    files = [tmp_path / "a.toml", tmp_path / "b.toml"]
    for f, name in zip(files, "ab"):
        f.write_text(text.replace('name = "bcg"', f'name = "bcg-{name}"'), encoding="utf-8")
    specs = [load_spec(f) for f in files]
    for f in files:
        f.write_text(text.replace("[data]", "[data]\nrow_kindd = 1"), encoding="utf-8")
    with pytest.raises(SpecError) as here:
        load_spec(files[0])
    ctx = runner.RunContext()
    worker = runner._Worker(ctx)
    real = runner.run_spec

    def run_after_the_worker_claims(spec, c):
        while worker.counter.value < len(specs):
            time.sleep(0.01)
        return real(spec, c)

    monkeypatch.setattr(runner, "run_spec", run_after_the_worker_claims)
    try:
        with pytest.raises(SpecError) as there:
            runner._run_all(specs, ctx, 2, worker=worker)
        assert str(there.value).replace("b.toml", "a.toml") == str(here.value)
    finally:
        worker.close()
    assert not worker.proc.is_alive() and worker.proc.exitcode is not None


def test_simulation_page_carries_the_benchmark_table(tmp_path):
    """Issue 6: benchmark tables in the report. Reference: the committed
    benchmarks/results.json, every case of which must appear on the simulation page."""
    import json

    from bayesmeta import runner
    from bayesmeta.spec import models_dir

    rows = json.loads((models_dir().parent / "benchmarks" / "results.json").read_text())
    out = runner.run([models_dir() / "simulation.toml"], out_dir=tmp_path / "r", fast=True)
    page = (out / "simulation" / "report.md").read_text()
    assert "## Benchmarks" in page
    assert all(r["case"] in page for r in rows)


def test_nested_forest_labels_name_the_subgroup_mean():
    """A subgroup-mean row is pooled across time (time "all"); its forest label must say so,
    never read " wk · bayesian" (reference: the wording in bayesmeta.labels.Labels.time's
    docstring: "12" -> "week 12" with time_unit week, "all" -> all weeks, "" -> "")."""
    from bayesmeta.labels import Labels

    L = Labels("MD", time_unit="week")
    assert L.time("12") == "week 12" and L.time("") == ""
    assert L.time("all") == "all weeks (pooled)"
    assert L.cell("ACLF", "all") == "ACLF, all weeks (pooled)"
    assert L.cell("", "") == "overall"
    assert Labels("MD").time("all") == "all times (pooled)"
