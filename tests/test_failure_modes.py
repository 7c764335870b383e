"""Failure modes: nothing is lost, half-written, reported clean when it is not, or
rendered unescaped.

References: the writing contract ("Writing is atomic: an interrupted run leaves
the previous report intact. Re-running with the same seed gives identical numbers."; "User
strings are HTML-escaped") and the convergence thresholds of Vehtari et al. (2021) as encoded in
``bayesmeta.diagnostics.THRESHOLDS`` (two chains centred 5 SD apart have R-hat >> 1.01).

Runs use a small arm-level spec (model nnhm) on the exact engine (no MCMC) except
``test_nonconvergence_is_reported_in_results_and_report``, which uses the pymc sampler with 10
draws (the ``--fast`` path) precisely because such a fit cannot be clean.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayesmeta.cli import main
from bayesmeta.exceptions import ConvergenceWarning, EstimationError
from tests.test_bad_input import GOOD_MD, MD, MD_OK, SPEC, cli, error_line, has_all, write

ROOT = Path(__file__).parents[1]


@pytest.fixture
def project(tmp_path):
    d = tmp_path / "proj"
    d.mkdir()
    write(d / "data.csv", GOOD_MD)
    write(d / "spec.toml", SPEC)
    return d


def snapshot(d: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``d``."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def run_ok(capsys, project, out, *extra):
    code, o, e = cli(capsys, "run", project / "spec.toml", "--out", out, "-q", *extra)
    assert code == 0, e
    return out


# ---------------------------------------------------------------------------------------------
# convergence is never reported clean when it is not
# ---------------------------------------------------------------------------------------------
def _datatree(shift: float, draws=500, chains=2, seed=0):
    import arviz as az

    rng = np.random.default_rng(seed)
    mu = np.stack([rng.normal(i * shift, 1, draws) for i in range(chains)])
    return az.from_dict({"posterior": {"mu": mu, "tau": np.abs(rng.normal(0, 1, (chains, draws)))},
                         "sample_stats": {"diverging": np.zeros((chains, draws), bool),
                                          "energy": rng.normal(0, 1, (chains, draws))}})


def test_check_convergence_flags_disagreeing_chains():
    from bayesmeta.diagnostics import check_convergence

    with pytest.warns(ConvergenceWarning, match=r"r_hat\('mu'\) = [\d.]+ > 1.01.*increase"):
        c = check_convergence(_datatree(shift=5.0))
    assert not c.clean and c.r_hat_max > 1.5 and c.problems


def test_check_convergence_clean_on_agreeing_chains():
    from bayesmeta.diagnostics import check_convergence

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        c = check_convergence(_datatree(shift=0.0, draws=2000, chains=4))
    assert c.clean and not c.problems


def test_check_convergence_counts_divergences():
    from bayesmeta.diagnostics import check_convergence

    dt = _datatree(shift=0.0, draws=2000, chains=4)
    dt["sample_stats"]["diverging"][0, :3] = True
    with pytest.warns(ConvergenceWarning, match="3 divergent"):
        c = check_convergence(dt)
    assert not c.clean and c.divergences == 3


def test_nonconvergence_is_reported_in_results_and_report(capsys, project):
    """10 draws x 2 chains cannot reach ESS 400: the MCMC rows say NOT CLEAN in results.csv
    and in the HTML report."""
    write(project / "spec.toml", SPEC.replace(
        "[bayes]", '[bayes]\nengine = "mcmc"').replace(
        'tau_prior = "halfnormal:1"',
        'tau_prior = "halfnormal:1"\n\n[sampling]\nfast_draws = 10\nfast_tune = 10'))
    out = run_ok(capsys, project, project / "report", "--fast")
    res = pd.read_csv(out / "results.csv")
    mc = res[res["method"].astype(str).str.contains("MCMC")]
    assert len(mc) and mc["method"].str.contains("NOT CLEAN").all(), res["method"].unique()
    flag = res["flag"].fillna("")   # the shared schema's flag column (CSV: empty -> NaN)
    assert (flag[mc.index] == "NOT CLEAN").all() and (flag.drop(mc.index) == "").all()
    assert "NOT CLEAN" in (out / "index.html").read_text(encoding="utf-8")


def test_sampler_failure_is_an_error_and_keeps_previous_report(capsys, project, monkeypatch):
    import bayesmeta.mcmc

    out = run_ok(capsys, project, project / "report")
    before = snapshot(out)
    write(project / "spec.toml", SPEC.replace("[bayes]", '[bayes]\nengine = "mcmc"'))

    def boom(*a, **k):
        raise EstimationError("sampler failed: initial point has non-finite log density")

    monkeypatch.setattr(bayesmeta.mcmc, "fit_nnhm", boom)
    line = error_line(*cli(capsys, "run", project / "spec.toml", "--out", out, "-q"))
    has_all(line, "sampler failed")
    assert snapshot(out) == before
    assert leftovers(project, "report") == []


def test_unexpected_sampler_crash_is_one_line(capsys, project, monkeypatch):
    import bayesmeta.mcmc

    write(project / "spec.toml", SPEC.replace("[bayes]", '[bayes]\nengine = "mcmc"'))

    def boom(*a, **k):
        raise RuntimeError("nutpie: chain 1 panicked")

    monkeypatch.setattr(bayesmeta.mcmc, "fit_nnhm", boom)
    line = error_line(*cli(capsys, "run", project / "spec.toml", "--out",
                           project / "report", "-q"))
    has_all(line, "hardening", "panicked")


# ---------------------------------------------------------------------------------------------
# atomic writing: interruption, failure mid-write, unwritable / foreign output directory
# ---------------------------------------------------------------------------------------------
_SLOW = textwrap.dedent("""
    import sys, time
    import bayesmeta.report as r
    orig = r._write_csv
    def slow(df, path):
        orig(df, path)
        sys.stderr.write("WROTE " + str(path) + "\\n"); sys.stderr.flush()
        time.sleep(60)
    r._write_csv = slow
    from bayesmeta.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_keeps_previous_report(capsys, project, sig):
    """Interrupt `bayesmeta run` while it is writing (after the first CSV is in the temporary
    directory): the previous report is byte-identical and no temporary directory remains."""
    out = run_ok(capsys, project, project / "report")
    before = snapshot(out)
    write(project / "data.csv", MD + "A,3,1,10,0,1,10\n" + MD_OK)  # a different result
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    # default SIGINT disposition in the child: a test run started in the background (`cmd &`)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    p = subprocess.Popen([sys.executable, "-c", _SLOW, "run", str(project / "spec.toml"),
                          "--out", str(out), "-q"], cwd=project, env=env,
                         stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while time.monotonic() < deadline:
            ln = p.stderr.readline()
            if not ln:
                break
            seen += ln
            if ln.startswith("WROTE"):
                break
        assert "WROTE" in seen, f"run never reached the writer:\n{seen}"
        assert leftovers(project, "report"), "expected a temporary directory mid-write"
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, (p.returncode, err)
    assert "Traceback" not in err and "interrupted" in err
    assert snapshot(out) == before
    assert leftovers(project, "report") == []


def test_failure_mid_write_keeps_previous_report(capsys, project, monkeypatch):
    """Disk full while writing the third CSV: previous report intact, no temporary files."""
    import bayesmeta.report as report

    out = run_ok(capsys, project, project / "report")
    before = snapshot(out)
    orig, calls = report._write_csv, []

    def full(df, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        orig(df, path)

    monkeypatch.setattr(report, "_write_csv", full)
    code, _, err = cli(capsys, "run", project / "spec.toml", "--out", out, "-q")
    assert code != 0 and len(calls) == 3
    assert snapshot(out) == before
    assert leftovers(project, "report") == []


def test_disk_full_is_a_clear_error(capsys, project, monkeypatch):
    import bayesmeta.report as report

    def full(df, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(report, "_write_csv", full)
    line = error_line(*cli(capsys, "run", project / "spec.toml", "--out",
                           project / "report", "-q"))
    has_all(line, "No space left on device")


def test_unwritable_output_directory(capsys, project):
    """You are root here, so chmod cannot block writes: an output path under a regular *file*
    cannot be created by anyone."""
    blocker = write(project / "afile", "not a directory")
    line = error_line(*cli(capsys, "run", project / "spec.toml", "--out", blocker / "sub",
                           "-q"))
    has_all(line, str(blocker))
    assert blocker.read_text() == "not a directory"


def test_foreign_output_directory_is_not_replaced(capsys, project):
    """--out pointing at a user directory (no report marker) is refused; its files stay."""
    mine = project / "thesis"
    mine.mkdir()
    write(mine / "chapter1.tex", "precious")
    line = error_line(*cli(capsys, "run", project / "spec.toml", "--out", mine, "-q"))
    has_all(line, str(mine), "--out")
    assert snapshot(mine) == {"chapter1.tex": hashlib.sha256(b"precious").hexdigest()}
    assert leftovers(project, "thesis") == []


# ---------------------------------------------------------------------------------------------
# reproducibility and escaping
# ---------------------------------------------------------------------------------------------
def test_same_seed_gives_byte_identical_csv(capsys, project):
    a = run_ok(capsys, project, project / "a", "--seed", "7")
    b = run_ok(capsys, project, project / "b", "--seed", "7")
    ca = {k: v for k, v in snapshot(a).items() if k.endswith(".csv")}
    cb = {k: v for k, v in snapshot(b).items() if k.endswith(".csv")}
    assert ca and ca == cb


def test_html_report_escapes_user_strings(capsys, project):
    evil = "<script>alert(1)</script>"
    write(project / "data.csv", MD + f'"{evil}",1,1,10,0,1,10\n' + MD_OK)
    write(project / "spec.toml", SPEC.replace('title = "hardening test"',
                                              f'title = "T {evil}"\noutcome = "<b>o</b>"'))
    out = run_ok(capsys, project, project / "report")
    pages = [out / "index.html", *out.glob("*/index.html")]
    assert len(pages) >= 2
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "<script>alert" not in text and "<b>o</b>" not in text, page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, page
