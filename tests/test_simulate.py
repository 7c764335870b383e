"""Tests for bayesmeta.simulate and ``bayesmeta simulate``.

References: nominal coverage (a z interval with known tau = 0 and a correct model is exact; the
HKSJ and exact-Bayes intervals are close to nominal at tau = 0 with k = 10) within a generous
multiple of the Monte Carlo SE; reproducibility (same seed -> same table, however the chunks are
scheduled or resumed).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bayesmeta import simulate as sim
from bayesmeta.cli import main
from bayesmeta.exceptions import SpecError

TINY = sim.SimulationConfig(n=60, ks=(3, 10), scales=("logOR",), taus=(0.0, 0.4),
                            prior_sets=("weakly_informative",), chunk_size=30, seed=7)


def _key(t):
    return t.sort_values(["scale", "k", "tau", "method"]).reset_index(drop=True)


def test_tiny_simulation_table_shape(tmp_path):
    res = sim.simulate(TINY, out=tmp_path, workers=0, quiet=True)
    t = res.table
    methods = {"DL-z", "DL-HKSJ", "REML-z", "REML-HKSJ", "PM-z", "PM-HKSJ",
               "Bayes-weakly_informative"}
    assert set(t["method"]) == methods
    assert len(t) == 2 * 2 * len(methods)
    assert (t["n"] == 60).all() and res.complete and res.n_meta == 2 * 2 * 60
    assert {"coverage", "coverage_mcse", "width", "width_mcse", "bias", "bias_mcse"} <= set(t)
    for f in ("coverage.csv", "coverage.json", "coverage.png", "timing.json", "config.json"):
        assert (tmp_path / f).exists()
    assert len(list((tmp_path / "chunks").glob("*.json"))) == 8


def test_nominal_coverage_within_mcse():
    """At tau = 0 with k = 10, HKSJ intervals are close to nominal 95% (Hartung & Knapp 2001;
    IntHout et al. 2014, doi:10.1186/1471-2288-14-25) and all estimators are unbiased by
    symmetry. Generous: 4 MCSE + 2 points. (Bayes intervals with a tau prior over-cover at
    tau = 0 by design; not a nominal-coverage method here.)"""
    cfg = sim.SimulationConfig(n=2000, ks=(10,), scales=("MD",), taus=(0.0,),
                               prior_sets=("weakly_informative",), chunk_size=1000, seed=3)
    t = sim.simulate(cfg, workers=0, quiet=True).table.set_index("method")
    for m in ("REML-HKSJ", "PM-HKSJ", "DL-HKSJ"):
        c, se = t.loc[m, "coverage"], t.loc[m, "coverage_mcse"]
        assert abs(c - 0.95) <= 4 * max(se, 0.005) + 0.02, (m, c, se)
    for m in t.index:
        assert abs(t.loc[m, "bias"]) <= 4 * t.loc[m, "bias_mcse"] + 1e-9, m


def test_resume_gives_same_table(tmp_path):
    """Interrupt after 3 chunks, re-run: same final table as an uninterrupted run."""
    full = sim.simulate(TINY, workers=0, quiet=True).table
    part = sim.simulate(TINY, out=tmp_path, workers=0, quiet=True, max_chunks=3)
    assert not part.complete and len(list((tmp_path / "chunks").glob("*.json"))) == 3
    rest = sim.simulate(TINY, out=tmp_path, workers=0, quiet=True)
    assert rest.complete and rest.n_run == rest.n_meta - 3 * 30
    pd.testing.assert_frame_equal(_key(rest.table), _key(full), check_exact=True)


def test_other_config_in_same_folder_is_refused(tmp_path):
    sim.simulate(TINY, out=tmp_path, workers=0, quiet=True, max_chunks=1)
    other = sim.SimulationConfig(**{**TINY.__dict__, "seed": 8})
    with pytest.raises(SpecError, match="different simulation"):
        sim.simulate(other, out=tmp_path, workers=0, quiet=True)


def test_through_dask_scheduler_on_loopback():
    """A Dask scheduler and one worker on 127.0.0.1 started here; same table as in-process."""
    from dask.distributed import LocalCluster

    ref = sim.simulate(TINY, workers=0, quiet=True).table
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, host="127.0.0.1",
                      protocol="tcp", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        res = sim.simulate(TINY, scheduler=cluster.scheduler_address, quiet=True)
    assert res.mode == "scheduler" and res.complete
    pd.testing.assert_frame_equal(_key(res.table), _key(ref), check_exact=True)


def test_cli_json(tmp_path, capsys):
    rc = main(["simulate", "--n", "20", "--k", "3", "--scale", "MD", "--tau", "1",
               "--priors", "weakly_informative", "--workers", "0", "--quiet", "--json",
               "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 7 and {r["method"] for r in rows} >= {"DL-z", "REML-HKSJ"}
    assert all(0 <= r["coverage"] <= 1 for r in rows)


def test_config_errors():
    with pytest.raises(SpecError, match="Invalid k 1"):
        sim.SimulationConfig(ks=(1,))
    with pytest.raises(SpecError, match="Invalid scale 'SMD'"):
        sim.SimulationConfig(scales=("SMD",))
    with pytest.raises(SpecError, match="Invalid prior set"):
        sim.simulate(sim.SimulationConfig(n=5, ks=(2,), scales=("MD",), taus=(0.0,),
                                          prior_sets=("nope",)), workers=0, quiet=True)


# --------------------------------------------------------------------------------------------
# simulation specs (a [simulation] section) and `bayesmeta run` (sim_report.run_simulation)
# References: the spec texts written here (line numbers counted in the text itself); the MC SE
# of a proportion sqrt(p(1 - p)/n) (closed form); the [simulation] settings (cells, n).
# --------------------------------------------------------------------------------------------
SIM_SPEC = """\
[analysis]
name = "sim"
title = "Sim"
description = "S"

[simulation]
n_per_cell = 40
fast_n_per_cell = 20
k = [2, 3]
tau = [0.0, 0.5]
priors = ["weakly_informative"]
seed = 11
"""


def _spec(tmp_path, text, name="sim.toml"):
    from bayesmeta.spec import load_spec

    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return load_spec(p)


def test_bundled_simulation_spec_validates():
    from bayesmeta.spec import load_spec, models_dir

    path = models_dir() / "simulation.toml"
    spec = load_spec(path)
    assert spec.kind == "simulation" and spec.data_path == path.resolve()
    s = spec.simulation
    assert tuple(s.k) == (2, 3, 5, 10) and tuple(s.tau) == (0.0, 0.25, 0.5)
    assert tuple(s.scales) == ("logOR",) and s.fast_n_per_cell < s.n_per_cell
    assert spec.sampling.seed == s.seed  # RunContext.seed_for reads it (and --seed overrides)


def test_simulation_spec_defaults(tmp_path):
    """A spec is a simulation spec by its [simulation] section (no kind): an empty one
    holds the documented defaults."""
    spec = _spec(tmp_path, '[analysis]\nname = "s"\ntitle = "S"\n\n[simulation]\n')
    assert spec.is_simulation and spec.kind == "simulation"
    assert spec.simulation.n_per_cell == 500 and tuple(spec.simulation.k) == (2, 3, 5, 10)
    assert tuple(spec.simulation.priors) == ("weakly_informative", "empirical")


@pytest.mark.parametrize("old,new,line,key,fix", [
    ("n_per_cell = 40", "n_per_cel = 40", 7, "simulation.n_per_cel", "Did you mean 'n_per_cell'"),
    ('priors = ["weakly_informative"]', 'priors = ["weakly_informativ"]', 11,
     "simulation.priors", "Did you mean 'weakly_informative'"),
    ("k = [2, 3]", "k = [1, 3]", 9, "simulation.k", None),
    ("tau = [0.0, 0.5]", "tau = [-0.1]", 10, "simulation.tau", None),
    ("fast_n_per_cell = 20", "fast_n_per_cell = 50", 8, "simulation.fast_n_per_cell", None),
    ("seed = 11", 'seed = 11\nscales = ["logor"]', 13, "simulation.scales",
     "Did you mean 'logOR'"),
])
def test_bad_simulation_key_names_line_and_key(tmp_path, old, new, line, key, fix):
    assert old in SIM_SPEC
    with pytest.raises(SpecError) as e:
        _spec(tmp_path, SIM_SPEC.replace(old, new))
    assert e.value.line == line and e.value.key == key, str(e.value)
    assert f"line {line}" in str(e.value)
    if fix:
        assert fix in str(e.value)


def test_simulation_sections_are_kind_specific(tmp_path):
    """A [simulation] section makes a simulation spec (it generates its data): [data],
    [classical], [bayes], [sensitivity] and [sampling] are refused at their header line."""
    with pytest.raises(SpecError, match=r"section \[data\] does not apply to a simulation "
                                        r"spec") as e:
        _spec(tmp_path, SIM_SPEC + '\n[data]\ndataset = "bcg"\nmeasure = "RR"\n')
    assert e.value.line == 14
    with pytest.raises(SpecError, match=r"section \[bayes\] does not apply to a simulation "
                                        r"spec") as e:
        _spec(tmp_path, SIM_SPEC + '\n[bayes]\nmodel = "nested"\n')
    assert e.value.line == 14 and e.value.key == "bayes"
    analysis = ('[analysis]\nname = "g"\ntitle = "G"\n\n[data]\n'
                'dataset = "bcg"\nmeasure = "RR"\n\n[simulation]\nk = [2]\n')
    with pytest.raises(SpecError, match=r"section \[data\] does not apply to a simulation "
                                        r"spec") as e:
        _spec(tmp_path, analysis, "g.toml")
    assert e.value.line == 5
    with pytest.raises(SpecError, match=r"Did you mean \[simulation\]\?"):
        _spec(tmp_path, SIM_SPEC.replace("[simulation]", "[simulaton]"))


def test_run_simulation_fast_table_and_mcse(tmp_path):
    """--fast uses fast_n_per_cell; the table has the documented columns, one row per
    cell x method, and the coverage MC SE is the binomial sqrt(p(1 - p)/n)."""
    from bayesmeta.pipeline import RunContext
    from bayesmeta.sim_report import SIM_COLUMNS, run_simulation

    spec = _spec(tmp_path, SIM_SPEC)
    out = run_simulation(spec, RunContext(fast=True))
    t = out.tables["coverage"]
    assert tuple(t.columns) == SIM_COLUMNS == (
        "scale", "k", "tau", "method", "n", "coverage", "coverage_mcse", "width", "width_mcse",
        "bias", "bias_mcse", "rmse", "n_failed")
    methods = {f"{m}-{z}" for m in ("DL", "REML", "PM") for z in ("z", "HKSJ")} | \
        {"Bayes-weakly_informative"}
    assert set(t["method"]) == methods and len(t) == 2 * 2 * len(methods)
    assert (t["n"] == 20).all()
    p = t["coverage"].to_numpy()
    np.testing.assert_allclose(t["coverage_mcse"], np.sqrt(p * (1 - p) / 20), rtol=1e-12)
    assert ((t["width_mcse"] > 0) & (t["bias_mcse"] > 0)).all()
    assert "coverage" in out.figures and out.fast
    text = " ".join(out.answers)
    assert "k = 2:" in text and "k = 3:" in text and "DL-HKSJ" in text
    methods_par = [b.text for b in out.blocks if b.kind == "text"][-1]
    assert "n = 20 meta-analyses per cell" in methods_par
    assert "bayesmeta simulate --n 10000 --k 2 3" in methods_par
    assert "normal-normal" in methods_par and "unequal study sizes" in methods_par
    full = run_simulation(spec, RunContext(fast=False))
    assert (full.tables["coverage"]["n"] == 40).all()
