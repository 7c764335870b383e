"""Report writer: escaping, self-contained HTML, containment, atomic replacement.

References: the strings written here (an HTML-escaped form is fixed by html.escape's contract),
and the file system state before/after (byte comparison).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bayesmeta.exceptions import BayesMetaError  # noqa: E402
from bayesmeta.report import MARKER, AnalysisOutput, atomic_dir, write_report  # noqa: E402

EVIL = "<script>alert('x')</script>"


def make_output(name="demo", title=f"Title {EVIL}", study=EVIL, fig=None):
    o = AnalysisOutput(name=name, title=title, kind="generic", description=f"desc {EVIL}")
    o.answers = [f"answer {EVIL}"]
    df = pd.DataFrame({"study": [study, "B & C"], "estimate": [0.1, -0.2]})
    o.table("studies", df, f"caption {EVIL}")
    f = fig or Figure(figsize=(2, 2))
    if fig is None:
        f.add_subplot(1, 1, 1).plot([0, 1], [0, 1])
    o.figure("line", f, f"figure {EVIL}")
    o.note(f"note {EVIL}")
    return o


def tree(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_user_strings_are_escaped(tmp_path):
    out = tmp_path / "rep"
    write_report([make_output()], out, {"command": f"bayesmeta run {EVIL}"})
    for page in (out / "index.html", out / "demo" / "index.html"):
        text = page.read_text(encoding="utf-8")
        assert "<script>" not in text
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
        assert "B &amp; C" in text


def test_html_is_self_contained(tmp_path):
    out = tmp_path / "rep"
    write_report([make_output(title="plain")], out, {})
    text = (out / "index.html").read_text(encoding="utf-8")
    assert 'src="data:image/png;base64,' in text
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert (out / "demo" / "figures" / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.rglob("*.svg"))  # SVG only when asked for
    assert "<code>&lt;analysis&gt;/figures/&lt;figure&gt;.png</code>" in text  # where they are
    assert (out / "demo" / "tables" / "studies.csv").is_file()
    assert (out / "demo" / "report.md").is_file() and (out / "provenance.json").is_file()


def test_svg_copies_when_asked_for(tmp_path):
    """``svg=True`` writes every figure as SVG too (reference: the SVG format's root element)
    and the index says so; the PNG is the same file as without SVG (byte comparison)."""
    from bayesmeta.report import prerender

    write_report([make_output(title="plain")], tmp_path / "png", {})
    write_report([make_output(title="plain")], tmp_path / "both", {}, svg=True)
    svg = (tmp_path / "both" / "demo" / "figures" / "line.svg").read_bytes()
    assert b"<svg" in svg and svg.rstrip().endswith(b"</svg>")
    assert (tmp_path / "both" / "demo" / "figures" / "line.png").read_bytes() == \
        (tmp_path / "png" / "demo" / "figures" / "line.png").read_bytes()
    assert "and <code>.svg</code>" in (tmp_path / "both" / "index.html").read_text("utf-8")
    o = make_output(title="plain")
    prerender(o)  # rendered without SVG: asking for it at writing is refused, not ignored
    with pytest.raises(BayesMetaError, match="SVG"):
        write_report([o], tmp_path / "late", {}, svg=True)
    o = make_output(title="plain")
    prerender(o, svg=True)
    write_report([o], tmp_path / "pre", {}, svg=True)
    assert (tmp_path / "pre" / "demo" / "figures" / "line.svg").read_bytes() == svg


def test_unsafe_analysis_name_is_refused(tmp_path):
    out = tmp_path / "rep"
    with pytest.raises(BayesMetaError, match="unsafe"):
        write_report([make_output(name="../evil")], out, {})
    assert not (tmp_path / "evil").exists() and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_refuses_to_replace_a_user_directory(tmp_path):
    user = tmp_path / "home"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    with pytest.raises(BayesMetaError, match="not a bayesmeta report"):
        write_report([make_output()], user, {})
    assert (user / "thesis.tex").read_text() == "precious"


class Boom(RuntimeError):
    pass


def test_failure_mid_write_leaves_previous_report_intact(tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    (out / ".gitkeep").touch()
    write_report([make_output(title="first")], out, {"run": 1})
    before = tree(out)
    assert (out / MARKER).is_file() and (out / ".gitkeep").is_file()

    bad = Figure(figsize=(2, 2))
    bad.savefig = lambda *a, **k: (_ for _ in ()).throw(Boom("disk full"))
    with pytest.raises(Boom):
        write_report([make_output(title="second"), make_output(name="other", fig=bad)], out,
                     {"run": 2})
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]  # no temp dirs left


def test_successful_rewrite_replaces_everything(tmp_path):
    out = tmp_path / "reports"
    write_report([make_output(name="old")], out, {})
    write_report([make_output(name="new")], out, {})
    assert not (out / "old").exists() and (out / "new" / "index.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]


def test_keyboard_interrupt_inside_atomic_dir(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as tmp:
            (tmp / "x").write_text("partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_sigterm_leaves_previous_report_and_no_temp(tmp_path):
    """A real SIGTERM, handled as the CLI does (bayesmeta.cli._run installs the handler)."""
    out = tmp_path / "reports"
    write_report([make_output(title="keep")], out, {})
    before = tree(out)
    script = textwrap.dedent(f"""
        import signal, sys, time
        from bayesmeta.cli._run import _on_sigterm
        from bayesmeta.report import atomic_dir
        signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            with atomic_dir({str(out)!r}) as tmp:
                (tmp / "half.txt").write_text("partial")
                print("ready", flush=True)
                time.sleep(60)
        except KeyboardInterrupt:
            sys.exit(143)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]
