"""Real-browser tier (``pytest -m browser``): every page of a generated report opened in
headless Chromium at 1280 px, as a reader would.

Each page must have no console error, no broken internal link (file or #fragment), every image
loaded and no horizontal overflow; screenshots (first screen and whole page) are saved under
the test's tmp dir (printed at the end of each test). The checker's own test plants each defect
once and expects it to be reported, so a silent checker cannot pass.

References: the DOM facts read by Chromium itself (img.naturalWidth, scrollWidth, element ids)
and the files on disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tests.browser import check_report, ensure_chromium  # noqa: E402

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
EVIL = "<script>console.error('injected')</script>"


@pytest.fixture(scope="module")
def chromium():
    return ensure_chromium()


def problems(results):
    return [p for r in results for p in r.problems()]


def test_checker_reports_each_planted_defect(chromium, tmp_path):
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "index.html").write_text(
        "<!DOCTYPE html><html><body><h1 id='top'>x</h1>"
        "<a href='sub/index.html'>ok</a> <a href='missing.html'>gone</a> "
        "<a href='sub/index.html#nowhere'>bad fragment</a> <a href='#top'>top</a>"
        "<img alt='lost' src='figures/none.png'>"
        "<script>console.error('boom')</script></body></html>", encoding="utf-8")
    (site / "sub" / "index.html").write_text(
        "<!DOCTYPE html><html><body><div style='width:3000px'>wide</div>"
        "<a href='../index.html'>back</a></body></html>", encoding="utf-8")
    res = {r.path.name + r.path.parent.name: r for r in
           check_report(site, tmp_path / "shots", binary=chromium)}
    top, sub = res["index.htmlsite"], res["index.htmlsub"]
    assert "missing.html" in top.broken_links and "index.html#nowhere" in top.broken_links
    assert "#top" not in top.broken_links
    assert top.broken_images == ["lost"]
    assert any("boom" in c for c in top.console)
    assert not top.overflow and sub.overflow.startswith("scrollWidth 30") and "> 1280" in sub.overflow
    assert all(p.stat().st_size > 1000 for r in res.values() for p in r.screenshots)


def synthetic_outputs():
    from bayesmeta import plots
    from bayesmeta.report import AnalysisOutput

    st = pd.DataFrame({"panel": ["4", "4", "12"], "study": [EVIL, "B & C", "D"],
                       "estimate": np.log([0.5, 0.8, 1.2]), "ci_low": np.log([0.2, 0.4, 0.6]),
                       "ci_high": np.log([1.3, 1.6, 2.4]), "weight": [60.0, 40.0, 100.0]})
    po = pd.DataFrame({"panel": ["4", "12"], "source": ["classical", "bayesian"],
                       "label": ["classical: DL", "bayesian: exact-NNHM"],
                       "estimate": np.log([0.6, 1.1]), "ci_low": np.log([0.3, 0.5]),
                       "ci_high": np.log([1.1, 2.2])})
    outs = []
    for i, name in enumerate(("first", "second")):
        o = AnalysisOutput(name=name, title=f"Analysis {i} {EVIL}", kind="generic",
                           description=f"about {EVIL}", answers=[f"line {j}" for j in range(8)],
                           summary=pd.DataFrame({"quantity": ["OR"], "p_benefit": [0.9999]}))
        o.h(f"Heading {EVIL}")
        o.table("wide", pd.DataFrame({f"column_{k}_with_a_long_name": [1.23456789] * 3
                                      for k in range(30)}), "a very wide table")
        o.figure("forest", plots.plot_forest(st, po, transform="exp", xlabel="OR"), "forest")
        o.h("Methods")
        o.p("exact NNHM; R-hat, ESS, E-BFMI.")
        outs.append(o)
    return outs


def test_synthetic_report_is_clean_in_chromium(chromium, tmp_path):
    from bayesmeta.report import write_report

    out = tmp_path / "report"
    write_report(synthetic_outputs(), out, {"command": f"bayesmeta run {EVIL}"})
    t0 = time.monotonic()
    results = check_report(out, tmp_path / "shots", binary=chromium)
    print(f"\n{len(results)} pages checked in {time.monotonic() - t0:.1f} s; screenshots in "
          f"{tmp_path / 'shots'}")
    assert sorted(str(r.path.relative_to(out)) for r in results) == [
        "first/index.html", "index.html", "second/index.html"]
    assert problems(results) == []


def test_bundled_report_fast_is_clean_in_chromium(chromium, tmp_path):
    """The bundled specs with --fast (the report a user gets first), every page."""
    out = tmp_path / "reports"
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "bayesmeta", "run", "--fast", "--out", str(out),
                          "-q"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    t1 = time.monotonic()
    results = check_report(out, tmp_path / "shots", binary=chromium)
    t2 = time.monotonic()
    pages = sorted(str(r.path.relative_to(out)) for r in results)
    print(f"\nrun --fast {t1 - t0:.0f} s; {len(pages)} pages checked in {t2 - t1:.1f} s; "
          f"index {results[0].height} px tall; screenshots in {tmp_path / 'shots'}")
    assert "index.html" in pages
    assert len(pages) == 1 + len(list(out.glob("*/index.html")))
    assert problems(results) == []
