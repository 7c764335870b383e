"""Nested-model simulation (bayesmeta.ghm_sim): the data-generating model and the chunk format.

References: Monte Carlo moments of the simulated sampling errors (their correlation across a
study's times is r_true and their variance se²), and bayesmeta.simulate.summarise's input
format (the chunks must tabulate with it).
"""

from __future__ import annotations

import numpy as np
import pytest

from bayesmeta import ghm_sim


def test_dgp_sampling_correlation_and_variance():
    """tau = 0: y - true cell mean is the sampling error (study effect SD tau/2 = 0); over
    4000 datasets its correlation across two times of a study is r_true (0.7) and its
    variance / se² is 1 (within 4 Monte Carlo SEs)."""
    rng = np.random.default_rng(1)
    a, b, z = [], [], []
    for _ in range(4000):
        truth, rows = ghm_sim._draw(rng, 2, 0.0, 0.7)
        e = [(y - truth[(g, t)]) / se for st, g, t, se, y in rows if st == "A0"]
        a.append(e[0])
        b.append(e[2])
        z.append(e[1])
    r = np.corrcoef(a, b)[0, 1]
    assert r == pytest.approx(0.7, abs=4 * (1 - 0.49) / np.sqrt(4000))
    assert np.var(z) == pytest.approx(1.0, abs=4 * np.sqrt(2 / 4000))


def test_chunk_counts_and_summarisable():
    """A chunk's statistics count every target (3 contrasts, 6 cells per meta-analysis) as
    analysed or failed, and tabulate through summarise with one row per scenario x method x
    estimand kind."""
    cfg = ghm_sim.NestedSimConfig(n=1, chunk_size=1, taus=(0.5,), r_trues=(0.7,))
    c = ghm_sim.make_nested_chunks(cfg)
    assert len(c) == 1
    r1 = ghm_sim.run_nested_chunk(c[0])
    for m in ghm_sim.METHODS:
        assert r1["methods"][f"{m} contrast"]["n"] + \
            r1["methods"][f"{m} contrast"]["n_failed"] == 3
        assert r1["methods"][f"{m} cell"]["n"] + r1["methods"][f"{m} cell"]["n_failed"] == 6
    from bayesmeta.simulate import summarise

    tab = summarise([r1], cfg.level)
    assert len(tab) == 2 * len(ghm_sim.METHODS)
    assert (tab["n"] + tab["n_failed"]).isin([3, 6]).all()
