"""Shared session-scoped fixtures (others may append fixtures below; keep them session-scoped).

MCMC fixtures fit once per test session; compiled models are cached in ``bayesmeta.mcmc`` so
refits at the same shapes only swap data.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="session")
def meld2014() -> pd.DataFrame:
    """2014 paper Figure 3 arm data (2 studies x 3 weeks); MD = m1i - m2i,
    vi = sd1i²/n1i + sd2i²/n2i (computed here, independently of bayesmeta.effect_sizes)."""
    d = pd.read_csv(DATA / "meld_2014_fig3.csv")
    d["yi"] = d["m1i"] - d["m2i"]
    d["vi"] = d["sd1i"] ** 2 / d["n1i"] + d["sd2i"] ** 2 / d["n2i"]
    d["sei"] = np.sqrt(d["vi"])
    return d[["study", "time", "yi", "vi", "sei", "n1i", "n2i"]].copy()


@pytest.fixture(scope="session")
def bcg() -> pd.DataFrame:
    """BCG trials (metadat dat.bcg): log OR and its variance 1/a + 1/b + 1/c + 1/d."""
    d = pd.read_csv(DATA / "bcg.csv")
    d["yi"] = np.log(d["ai"] * d["di"] / (d["bi"] * d["ci"]))
    d["vi"] = 1 / d["ai"] + 1 / d["bi"] + 1 / d["ci"] + 1 / d["di"]
    d["sei"] = np.sqrt(d["vi"])
    return d


@pytest.fixture(scope="session")
def msc2023_meld_rows() -> pd.DataFrame:
    """2023 published pooled MELD MDs (weeks > 0) as nested-model rows: sei from the printed
    95% CI, (hi - lo) / (2 * 1.959964); row_kind 'pooled' for all patients, else
    'subgroup_pooled'."""
    p = pd.read_csv(DATA / "msc_2023_pooled.csv")
    p = p[(p["outcome"] == "MELD") & (p["time_wk"] > 0)].copy()
    p["yi"] = p["estimate"]
    p["sei"] = (p["ci_high"] - p["ci_low"]) / (2 * 1.959963984540054)
    p["time"] = p["time_wk"].astype(int)
    p["row_kind"] = np.where(p["subgroup"] == "all", "pooled", "subgroup_pooled")
    return p[["outcome", "time", "subgroup", "row_kind", "yi", "sei"]].reset_index(drop=True)


@pytest.fixture(scope="session")
def nnhm_bcg_fit(bcg):
    """NNHM on BCG log-OR, default sampler settings (nutpie, 4 x 1000, seed fixed)."""
    from bayesmeta import mcmc, priors

    return mcmc.fit_nnhm(bcg["yi"], bcg["sei"], study=bcg["study"], measure="OR",
                         mu_prior=priors.Normal(0.0, 4.0), tau_prior=priors.HalfNormal(0.5))


@pytest.fixture(scope="session")
def nested_meld_fit(meld2014):
    """Nested model on the 2014 MELD arm data with the package defaults."""
    from bayesmeta import mcmc

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = mcmc.fit_nested(meld2014, measure="MD", outcome="MELD")
    return fit, [str(w.message) for w in caught]


# --------------------------------------------------------------------------------------------
# the real-browser tier: `pytest -m browser` (headless Chromium; tests/browser.py)
# --------------------------------------------------------------------------------------------
def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: opens generated reports in headless Chromium (installs Debian's "
                   "chromium if missing); run with -m browser")


def pytest_collection_modifyitems(config, items):
    """Browser tests run only when selected with -m (e.g. ``-m browser``): the default tier
    stays free of them whatever addopts says."""
    if "browser" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="browser tier: run with -m browser")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)
