"""``bayesmeta simulate`` with the nested model: spec keys, routing through
:func:`bayesmeta.simulate.simulate` (in-process, LocalCluster, resume) and the table.

References: the spec texts written here (line numbers counted in the text); the chunk
statistics written to the output folder (the table must be their sums: coverage = covered /
analysed); the in-process run of the same configuration (a Dask run must give the identical
table, chunks draw from their own seeds); the number of targets per meta-analysis (3 contrasts,
6 cells) from the data-generating design. Coverage numbers themselves are measured in
benchmarks/nested_sim.md, not asserted.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bayesmeta import ghm_sim
from bayesmeta import simulate as sim
from bayesmeta.cli import main
from bayesmeta.exceptions import SpecError

NESTED_SPEC = """\
[analysis]
name = "nsim"
title = "Nested sim"

[simulation]
model = "nested"
n_per_cell = 10
fast_n_per_cell = 10
k = [3]
tau = [0.5]
r_true = [0.7]
seed = 3
"""


def _spec(tmp_path, text, name="nsim.toml"):
    from bayesmeta.spec import load_spec

    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return load_spec(p)


# --------------------------------------------------------------------------------------------
# spec validation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("old,new,line,key,fix", [
    ('model = "nested"', 'model = "nestd"', 6, "simulation.model", "Did you mean 'nested'"),
    ("r_true = [0.7]", "r_true = [1.0]", 11, "simulation.r_true", None),
    ("r_true = [0.7]", "r_true = [-0.2]", 11, "simulation.r_true", None),
    ("r_true = [0.7]", "r_true = [0.7, 0.7]", 11, "simulation.r_true", None),
    ("r_true = [0.7]", 'r_true = ["high"]', 11, "simulation.r_true", None),
    ("k = [3]", "k = [25]", 9, "simulation.k", None),
    ("k = [3]", "k = [1]", 9, "simulation.k", None),
    ("tau = [0.5]", "tau = [-0.5]", 10, "simulation.tau", None),
    # keys of the other model are rejected, not ignored
    ("seed = 3", 'seed = 3\nscales = ["logOR"]', 13, "simulation.scales",
     "set model = 'nnhm'"),
    ("seed = 3", 'seed = 3\npriors = ["empirical"]', 13, "simulation.priors",
     "set model = 'nnhm'"),
    ('model = "nested"', 'model = "nnhm"', 11, "simulation.r_true", "set model = 'nested'"),
    ('model = "nested"\n', "", 10, "simulation.r_true", "set model = 'nested'"),
])
def test_bad_nested_key_names_line_and_key(tmp_path, old, new, line, key, fix):
    assert old in NESTED_SPEC
    with pytest.raises(SpecError) as e:
        _spec(tmp_path, NESTED_SPEC.replace(old, new))
    assert e.value.key == key and e.value.line == line, str(e.value)
    assert "\n" not in str(e.value)
    if fix:
        assert fix in str(e.value)


def test_nnhm_k_range_unchanged_and_nested_defaults(tmp_path):
    """k up to 50 stays valid for the nnhm model; a nested spec without k/tau/r_true gets the
    nested grid (k 3, tau 0..1 with 0.8 and 1, r_true 0 and 0.7), not the nnhm defaults."""
    spec = _spec(tmp_path, '[analysis]\nname = "s"\ntitle = "S"\n\n[simulation]\nk = [50]\n')
    assert spec.simulation.model == "nnhm"
    spec = _spec(tmp_path, '[analysis]\nname = "s"\ntitle = "S"\n\n[simulation]\n'
                           'model = "nested"\n')
    cfg = sim.config_from_spec(spec.simulation, spec.given["simulation"])
    assert isinstance(cfg, ghm_sim.NestedSimConfig)
    assert cfg.ks == (3,) and cfg.taus == (0.0, 0.25, 0.5, 0.8, 1.0)
    assert cfg.r_trues == (0.0, 0.7) and cfg.n == spec.simulation.n_per_cell


def test_bundled_nested_spec(tmp_path):
    from bayesmeta.spec import load_spec, models_dir

    spec = load_spec(models_dir() / "simulations" / "simulation_nested.toml")
    assert spec.is_simulation and spec.simulation.model == "nested"
    cfg = sim.config_from_spec(spec.simulation, spec.given["simulation"],
                               level=spec.report.ci_prob)
    assert {0.0, 0.25, 0.5, 0.8, 1.0} == set(cfg.taus) and set(cfg.r_trues) == {0.0, 0.7}
    assert cfg.seed == spec.simulation.seed


@pytest.mark.parametrize("argv,needle", [
    (["--r-true", "0.5"], "--r-true does not apply to model 'nnhm'"),
    (["--model", "nested", "--scale", "MD"], "--scale does not apply to model 'nested'"),
    (["--model", "nested", "--priors", "empirical"],
     "--priors does not apply to model 'nested'"),
    (["--model", "nested", "--r-true", "1"], "Invalid r_true 1.0"),
    (["--model", "nested", "--k", "30"], "Invalid k 30"),
])
def test_cli_rejects_options_of_the_other_model(argv, needle, capsys):
    assert main(["simulate", *argv, "--workers", "0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err, err


def test_cli_spec_and_contradicting_model(tmp_path, capsys):
    p = tmp_path / "nsim.toml"
    p.write_text(NESTED_SPEC)
    assert main(["simulate", str(p), "--model", "nnhm", "--quiet"]) == 2
    assert "contradicts the spec" in capsys.readouterr().err
    p.write_text(NESTED_SPEC.replace("r_true = [0.7]", 'r_true = [0.7]\nscales = ["MD"]'))
    assert main(["simulate", str(p), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "simulation.scales" in err and "line 12" in err


# --------------------------------------------------------------------------------------------
# runs (a few datasets)
# --------------------------------------------------------------------------------------------
TINY = ghm_sim.NestedSimConfig(n=2, chunk_size=1, ks=(2,), taus=(0.5,), r_trues=(0.0, 0.7),
                               seed=5)


def test_tiny_nested_run_in_process_table_files_and_resume(tmp_path):
    """4 meta-analyses in-process: the table has the documented columns, one row per
    r_true x estimand x method; its counts and coverage are the sums of the chunk files; a
    second run resumes every chunk and gives the same table."""
    res = sim.simulate(TINY, out=tmp_path, workers=0, quiet=True)
    t = res.table
    assert tuple(t.columns) == ghm_sim.NESTED_COLUMNS
    assert res.mode == "in-process" and res.complete and res.n_meta == 4 and res.n_run == 4
    assert len(t) == 2 * 2 * len(ghm_sim.METHODS)
    assert set(t["r_true"]) == {0.0, 0.7} and set(t["estimand"]) == {"contrast", "cell"}
    assert set(t["method"]) == set(ghm_sim.METHODS) and set(t["tau"]) == {0.5}
    per = {"contrast": 3, "cell": 6}
    for r in t.itertuples():
        assert r.n + r.n_failed == 2 * per[r.estimand]
    chunks = [json.loads(f.read_text()) for f in (tmp_path / "chunks").glob("*.json")]
    assert len(chunks) == 4
    for r in t.itertuples():
        st = [c["methods"][f"{r.method} {r.estimand}"] for c in chunks
              if c["r_true"] == r.r_true]
        assert r.n == sum(s["n"] for s in st)
        assert r.coverage == sum(s["cover"] for s in st) / r.n
    for f in ("coverage.csv", "coverage.json", "coverage.png", "timing.json", "config.json"):
        assert (tmp_path / f).exists()
    assert json.loads((tmp_path / "timing.json").read_text())["model"] == "nested"
    again = sim.simulate(TINY, out=tmp_path, workers=0, quiet=True)
    assert again.n_run == 0
    pd.testing.assert_frame_equal(again.table, t, check_exact=True)
    # an nnhm simulation is refused in a nested folder (different digest)
    with pytest.raises(SpecError, match="different simulation"):
        sim.simulate(sim.SimulationConfig(n=5, ks=(2,), scales=("MD",)), out=tmp_path,
                     workers=0, quiet=True)


def test_cli_nested_spec_json(tmp_path, capsys):
    """The CLI runs a nested spec; --n and --tau override the spec's values."""
    p = tmp_path / "nsim.toml"
    p.write_text(NESTED_SPEC)
    rc = main(["simulate", str(p), "--n", "1", "--tau", "0.25", "--workers", "0", "--quiet",
               "--json"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["estimand"] for r in rows} == {"contrast", "cell"}
    assert {r["tau"] for r in rows} == {0.25} and {r["r_true"] for r in rows} == {0.7}
    assert {r["n"] + r["n_failed"] for r in rows} == {3, 6}


@pytest.mark.slow
def test_local_cluster_two_workers_same_table_as_in_process(tmp_path):
    """A LocalCluster of 2 worker processes: identical table to the in-process run (chunk j
    draws from its own spawned seed, whatever worker runs it)."""
    cfg = ghm_sim.NestedSimConfig(n=2, chunk_size=1, ks=(2,), taus=(0.0, 1.0),
                                  r_trues=(0.7,), seed=9)
    ref = sim.simulate(cfg, workers=0, quiet=True).table
    res = sim.simulate(cfg, out=tmp_path, workers=2, quiet=True)
    assert res.mode == "local-cluster" and res.workers == 2 and res.complete
    pd.testing.assert_frame_equal(res.table, ref, check_exact=True)
    assert (tmp_path / "coverage.png").is_file()
