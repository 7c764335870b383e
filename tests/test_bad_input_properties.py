"""Bad input by category, not by case: one hypothesis property per category of docs/bad-input.md.

Each property is the contract itself, stated for every input of its category (the reference is
the identity or the promise, not our own output):

1. **contradictory columns** -- a table whose redundant columns (ai + bi vs n1i, ci + di vs n2i,
   vi vs sei²) disagree in one row is refused with one line naming exactly that row and the
   column; the same table made consistent is analysed.
2. **missing role values** -- an empty (blank, NA, nan, whitespace) cell in the ``--by`` column
   is refused naming the first such row; with ``--missing-level`` the levels are exactly the
   named ones plus the explicit one (the test for subgroup differences has df = levels - 1).
3. **extreme precisions** -- for sampling variances spread over 24 orders of magnitude and
   estimates on any scale, the classical REML mean is finite and lies within the estimates (a
   weighted average), and the exact Bayesian posterior under the default priors reaches the
   range of the estimates (priors that cannot contradict every study); never a traceback.
4. **hostile labels** -- study names with control characters, ANSI/OSC escapes, bidi
   overrides, line breaks, quotes and formula starts never reach the terminal raw; the error
   line stays one line and names the CSV record's row; spreadsheet-safe text is lossless.
5. **folder states** -- for every state of an output folder (absent, empty, ours, foreign,
   a file, a symlink to each, a dangling link) the writer either replaces our folder (a link
   stays a link) or refuses with one error and leaves every byte as it was; nothing else is
   left beside the folder.

Case counts (``max_examples``) are chosen so the file runs in seconds: see each ``SETTINGS``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bayesmeta.exceptions import BayesMetaError
from tests.test_bad_input import cli, error_line, has_all

FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture],
            derandomize=True)


def csv_text(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# 1. contradictory columns
# ---------------------------------------------------------------------------------------------
@st.composite
def two_by_two(draw):
    k = draw(st.integers(2, 8))
    rows = []
    for i in range(k):
        n1, n2 = draw(st.integers(2, 300)), draw(st.integers(2, 300))
        a, c = draw(st.integers(1, n1 - 1)), draw(st.integers(1, n2 - 1))
        rows.append([f"S{i}", a, n1 - a, c, n2 - c, n1, n2])
    bad = draw(st.integers(0, k - 1))
    col = draw(st.sampled_from(["n1i", "n2i", "bi", "di"]))
    delta = draw(st.integers(1, 50))
    return rows, bad, col, delta


@settings(max_examples=40, **FAST)
@given(case=two_by_two())
def test_contradictory_counts_are_refused_at_their_row(capsys, tmp_path_factory, case):
    rows, bad, col, delta = case
    header = ["study", "ai", "bi", "ci", "di", "n1i", "n2i"]
    d = tmp_path_factory.mktemp("c")
    ok = d / "ok.csv"
    ok.write_text(csv_text(header, rows))
    code, _, err = cli(capsys, "classical", ok, "--measure", "OR", "--method", "FE")
    assert code == 0, err
    j = header.index(col)
    rows[bad][j] += delta  # a total or a non-event count no longer adds up
    f = d / "bad.csv"
    f.write_text(csv_text(header, rows))
    line = error_line(*cli(capsys, "classical", f, "--measure", "OR", "--method", "FE"))
    total = "n1i" if col in ("n1i", "bi") else "n2i"
    has_all(line, str(f), f"row {bad + 2},", f"column '{total}'")


SE = st.builds(lambda m, e: m / 1e5 * 10.0 ** e, st.integers(100001, 999999), st.integers(-3, 3))


@settings(max_examples=30, **FAST)
@given(se=st.lists(SE, min_size=2, max_size=6), bad=st.integers(0, 5),
       factor=st.floats(1.5, 100))
def test_variance_contradicting_se_is_refused(capsys, tmp_path_factory, se, bad, factor):
    """vi = sei² up to rounding (both written with 6 significant digits) passes; vi off by a
    factor >= 1.5 in one row is refused at that row. (A number's rounding interval comes from
    the digits it is written with, so the SEs here have 5-6 significant digits: "1" would
    stand for anything in [0.5, 1.5].)"""
    bad = bad % len(se)
    rows = [[f"S{i}", 0.1 * i, f"{s * s:.6g}", f"{s:.6g}"] for i, s in enumerate(se)]
    d = tmp_path_factory.mktemp("v")
    ok = d / "ok.csv"
    ok.write_text(csv_text(["study", "yi", "vi", "sei"], rows))
    code, _, err = cli(capsys, "classical", ok, "--measure", "GEN", "--method", "DL")
    assert code == 0, err
    rows[bad][2] = f"{se[bad] ** 2 * factor:.6g}"
    f = d / "bad.csv"
    f.write_text(csv_text(["study", "yi", "vi", "sei"], rows))
    line = error_line(*cli(capsys, "classical", f, "--measure", "GEN", "--method", "DL"))
    has_all(line, f"row {bad + 2},", "column 'vi'", "sei")


# ---------------------------------------------------------------------------------------------
# 2. missing role values
# ---------------------------------------------------------------------------------------------
MISSING = ["", " ", "NA", "nan", "NaN", "n/a", ".", "null"]


@settings(max_examples=40, **FAST)
@given(levels=st.lists(st.sampled_from(["x", "y", "z", "ACLF", "4"]) | st.sampled_from(MISSING),
                       min_size=3, max_size=10))
def test_missing_role_values_are_errors_or_explicit_levels(capsys, tmp_path_factory, levels):
    named = [v for v in levels if v.strip() and v.strip().lower() not in
             {"na", "nan", "n/a", ".", "null"}]
    assume(named)
    rows = [[f"S{i}", 0.1 * (i % 3), 0.05 + 0.01 * i, g] for i, g in enumerate(levels)]
    f = tmp_path_factory.mktemp("m") / "s.csv"
    f.write_text(csv_text(["study", "yi", "vi", "group"], rows))
    argv = ["classical", f, "--measure", "GEN", "--method", "FE", "--by", "group", "--json"]
    first = next((i for i, g in enumerate(levels) if g not in named), None)
    code, out, err = cli(capsys, *argv)
    if first is not None:
        line = error_line(code, out, err)
        has_all(line, str(f), f"row {first + 2},", "column 'group'")
        code, out, err = cli(capsys, *argv, "--missing-level", "(missing)")
    assert code == 0, err
    import json

    res = json.loads(out)
    expect = set(named) | ({"(missing)"} if first is not None else set())
    assert set(res["subgroups"]) == expect
    assert res["subgroup_test"]["df"] == len(expect) - 1


# ---------------------------------------------------------------------------------------------
# 3. extreme precisions
# ---------------------------------------------------------------------------------------------
@st.composite
def precisions(draw):
    k = draw(st.integers(2, 6))
    unit = 10.0 ** draw(st.integers(-6, 6))  # units of yi (any scale)
    y = [unit * draw(st.floats(-5, 5, allow_nan=False)) for _ in range(k)]
    lv = [draw(st.floats(-12, 12)) for _ in range(k)]  # vi from 1e-12 to 1e12
    n = draw(st.none() | st.lists(st.integers(4, 5000), min_size=k, max_size=k))
    return np.array(y), 10.0 ** np.array(lv), n


@settings(max_examples=100, **FAST)
@given(case=precisions())
def test_extreme_precisions_give_answers_within_the_data(case):
    import pandas as pd

    from bayesmeta import classical as cl
    from bayesmeta import priors as P
    from bayesmeta.exact import fit_exact

    y, v, n = case
    lo, hi = y.min(), y.max()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = cl.rma(y, v, method="REML")
        assert np.isfinite(r.estimate) and np.isfinite(r.se)
        slack = 1e-12 * (hi - lo) + 8 * np.finfo(float).eps * max(abs(lo), abs(hi))
        assert lo - slack <= r.estimate <= hi + slack  # a weighted average, up to rounding
        data = pd.DataFrame({"yi": y, "vi": v})
        if n is not None:
            data["n1i"] = np.asarray(n) // 2 + 1
            data["n2i"] = np.asarray(n) // 2 + 1
        mu_p, _ = P.default_mu_prior("GEN", data)
        tau_p, _ = P.default_tau_prior("GEN", data)
        b = fit_exact(y, np.sqrt(v), mu_prior=mu_p, tau_prior=tau_p)
    ql, qh = b.interval("mu", 0.95)
    assert np.isfinite(ql) and np.isfinite(qh)
    assert b.notes == (), b.notes  # the interval reaches the range of the estimates


# ---------------------------------------------------------------------------------------------
# 4. hostile labels
# ---------------------------------------------------------------------------------------------
PIECES = list("ab =+-@,\"'\n\r\t;") + ["\x1b", "\x07", "\x7f", "\x9b", "\u202e", "\u2066",
                                      "\x1b[31m", "\x1b]0;t\x07", "\x1b[2J", "é", "\u2212"]
HOSTILE = st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join).filter(
    lambda s: s.strip() != "")


def _no_raw_controls(text: str):
    bad = [ch for ch in text if (ord(ch) < 32 and ch not in "\n\t") or 0x7f <= ord(ch) < 0xa0
           or ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"]
    assert not bad, f"raw control characters reached the terminal: {bad!r}"


@settings(max_examples=40, **FAST)
@given(names=st.lists(HOSTILE, min_size=2, max_size=5, unique_by=lambda s: s.strip()))
def test_hostile_labels_never_reach_the_terminal_raw(capsys, tmp_path_factory, names):
    """Zero cells make the CLI name every study in a warning; a negative variance in the last
    row makes it name that study in the error."""
    d = tmp_path_factory.mktemp("h")
    ok = d / "ok.csv"
    ok.write_text(csv_text(["study", "ai", "n1i", "ci", "n2i"],
                           [[s, 0, 20, 3, 20] for s in names]))
    code, out, err = cli(capsys, "classical", ok, "--measure", "OR", "--method", "FE")
    assert code == 0, err
    _no_raw_controls(out + err)
    assert all("\n" not in ln for ln in err.splitlines())
    rows = [[s, 0.1, 0.1] for s in names[:-1]] + [[names[-1], 0.1, -1]]
    bad = d / "bad.csv"
    bad.write_text(csv_text(["study", "yi", "vi"], rows))
    line = error_line(*cli(capsys, "classical", bad, "--measure", "GEN"))
    _no_raw_controls(line)
    has_all(line, f"row {len(names) + 1},", "column 'vi'")


@settings(max_examples=200, **FAST)
@given(s=st.text(min_size=0, max_size=20))
def test_text_functions(s):
    from bayesmeta.textsafe import spreadsheet_safe, terminal_safe

    t = terminal_safe(s, newlines=False)
    _no_raw_controls(t)
    assert "\n" not in t
    x = spreadsheet_safe(s)
    assert x == s or (x == "'" + s)  # lossless: the quote is the only change
    if x == s and len(s) > 1:
        assert not s.startswith(("=", "+", "@", "\t", "\r")) or s.strip().lstrip("+-").replace(
            ".", "", 1).isdigit()


# ---------------------------------------------------------------------------------------------
# 5. folder states
# ---------------------------------------------------------------------------------------------
STATES = ["absent", "empty", "gitkeep", "ours", "foreign", "file"]


def _make(path: Path, state: str, marker: str):
    if state == "absent":
        return
    if state == "file":
        path.write_text("a file")
        return
    path.mkdir()
    if state == "gitkeep":
        (path / ".gitkeep").write_text("")
    elif state == "ours":
        (path / marker).write_text("")
        (path / "old.csv").write_text("previous")
    elif state == "foreign":
        (path / "thesis.tex").write_text("precious")


def _snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link->" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


@settings(max_examples=60, **FAST)
@given(state=st.sampled_from(STATES), via=st.sampled_from(["direct", "link", "dangling"]),
       writer=st.sampled_from(["report", "simulation"]))
def test_every_folder_state_is_replaced_or_left_untouched(tmp_path_factory, state, via, writer):
    from bayesmeta import report, simulate
    from bayesmeta.outdir import claim_dir

    root = tmp_path_factory.mktemp("f")
    marker = report.MARKER if writer == "report" else simulate.MARKER
    target = root / "target"
    if via == "dangling":
        out = root / "out"
        out.symlink_to(root / "nowhere")
        expect_refused = True
    else:
        _make(target, state, marker)
        out = target
        if via == "link":
            out = root / "out"
            out.symlink_to(target)
        # a link to nothing is refused like a dangling one
        expect_refused = state in ("foreign", "file") or (via == "link" and state == "absent")
    before = _snapshot(root)
    try:
        if writer == "report":
            with report.atomic_dir(out) as tmp:
                (tmp / "new.csv").write_text("new")
        else:
            real = simulate._claim_out(out)
            real.mkdir(parents=True, exist_ok=True)
            (real / simulate.MARKER).touch()
            (real / "new.csv").write_text("new")
        refused = False
    except BayesMetaError as err:
        refused = True
        assert "\n" not in str(err)
    assert refused == expect_refused
    if refused:
        assert _snapshot(root) == before
        return
    real = target if via == "link" else out
    assert (real / "new.csv").read_text() == "new" and (real / marker).exists()
    if via == "link":
        assert out.is_symlink() and os.readlink(out) == str(target)
    if writer == "report":
        assert not (real / "old.csv").exists() and not (real / "thesis.tex").exists()
        assert (real / ".gitkeep").exists() == (state == "gitkeep")
    left = {p.name for p in root.iterdir()} - {"target", "out"}
    assert not left, left
    claim_dir(out, marker=marker)  # ours now: claiming it again is allowed
