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
