"""Write the report directory: HTML (self-contained), Markdown, CSV, figures, NetCDF, provenance.

Layout of the output directory (``reports/`` by default)::

    index.html                 every analysis on one self-contained page (figures base64-embedded)
    provenance.json            versions, seeds, data sha256, spec hashes, command line, --fast
    results.csv                all schema rows (published | classical | bayesian) of all analyses
    audit.csv                  published-number audit of all analyses
    <name>/index.html          one self-contained page per analysis
    <name>/report.md           the same as Markdown (figures linked)
    <name>/tables/<t>.csv      tidy tables (schema tables use bayesmeta.results.SCHEMA)
    <name>/figures/<f>.png|svg
    <name>/posterior/<d>.nc    posterior DataTrees (git-ignored)

Writing is atomic (:func:`atomic_dir`): everything goes into a temporary directory beside the
target, which replaces the target only after every file was written. An exception, SIGINT or
SIGTERM (the CLI turns it into an exception) leaves the previous report untouched and removes
the temporary directory. All user-controlled text is escaped with :func:`html.escape`; file names
come only from validated identifiers and every path is checked to stay inside the output
directory.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesmeta import outdir as _outdir
from bayesmeta.results import netcdf_ready
from bayesmeta.exceptions import BayesMetaError

MARKER = ".bayesmeta-report"
_SAFE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,80}$")


# --------------------------------------------------------------------------------------------
# content model
# --------------------------------------------------------------------------------------------
@dataclass
class Block:
    """One piece of an analysis page.

    kind : "heading" | "text" | "table" | "figure" | "list" | "note"
    text : heading or paragraph text (plain text; escaped on output), or caption
    table : DataFrame for kind "table" (displayed rounded to ``digits``; CSV keeps full values)
    figure : figure name (a key of :attr:`AnalysisOutput.figures`) for kind "figure"
    items : list items for kind "list"
    """

    kind: str
    text: str = ""
    table: pd.DataFrame | None = None
    figure: str = ""
    items: tuple = ()
    digits: int = 3


@dataclass
class AnalysisOutput:
    """Everything one analysis produces; :func:`write_report` turns it into files."""

    name: str
    title: str
    kind: str
    description: str = ""
    answers: list[str] = field(default_factory=list)     # key findings (index summary)
    blocks: list[Block] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    datatrees: dict[str, Any] = field(default_factory=dict)
    netcdf: dict[str, bytes | str] = field(default_factory=dict)  # prerendered: bytes or error
    provenance: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    fast: bool = False
    seconds: float = math.nan

    # helpers used by runner.py
    def h(self, text):
        self.blocks.append(Block("heading", text))

    def p(self, text):
        self.blocks.append(Block("text", text))

    def note(self, text):
        self.blocks.append(Block("note", text))

    def ul(self, items):
        self.blocks.append(Block("list", items=tuple(items)))

    def table(self, name, df, caption="", *, show=None, digits=3, csv=True):
        """Register ``df`` as CSV ``tables/<name>.csv`` and show ``show`` (or ``df``)."""
        if csv:
            self.tables[name] = df
        self.blocks.append(Block("table", caption, table=df if show is None else show,
                                 digits=digits))

    def figure(self, name, fig, caption=""):
        self.figures[name] = fig
        self.blocks.append(Block("figure", caption, figure=name))


# --------------------------------------------------------------------------------------------
# atomic directory replacement
# --------------------------------------------------------------------------------------------
def atomic_dir(target):
    """Yield a fresh temporary directory that replaces ``target`` on success.

    :func:`bayesmeta.outdir.atomic_dir` with the report's marker: ``target`` must be absent,
    empty, or a previous bayesmeta report (holding the marker file); anything else is refused
    so that ``--out`` can never wipe a user directory. A symlinked ``target`` stays a link (the
    folder it points to is replaced); an exception, SIGINT or SIGTERM leaves the previous report
    exactly as it was and no temporary or moved-aside folder behind.
    """
    return _outdir.atomic_dir(target, marker=MARKER, option="--out", what="report",
                              marker_text="generated by `bayesmeta run`; the whole directory "
                                          "is replaced on the next run\n")


def _inside(root: Path, rel: str) -> Path:
    """``root / rel`` after checking it cannot leave ``root``."""
    parts = Path(rel).parts
    if Path(rel).is_absolute() or any(p in ("..", "") for p in parts):
        raise BayesMetaError(f"refusing to write {rel!r}: outside the output directory")
    for p in parts:
        stem = p.rsplit(".", 1)[0] if "." in p else p
        if not _SAFE.match(stem.lower().replace(".", "-")):
            raise BayesMetaError(f"refusing to write {rel!r}: unsafe file name")
    path = (root / rel)
    if root.resolve() not in path.resolve().parents:
        raise BayesMetaError(f"refusing to write {rel!r}: outside the output directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------
def fmt(x, digits: int = 3) -> str:
    """Display a value: floats rounded to ``digits`` decimals, tiny p-values in e-notation."""
    if x is None:
        return ""
    if isinstance(x, (float, np.floating)):
        if not math.isfinite(x):
            return "" if math.isnan(x) else str(x)
        if x != 0 and abs(x) < 10 ** (-digits):
            return f"{x:.2e}"
        return f"{x:.{digits}f}"
    if isinstance(x, (np.integer,)):
        return str(int(x))
    return str(x)


def _display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Drop columns that are empty in every row (keeps wide schema tables readable)."""
    keep = []
    for c in df.columns:
        col = df[c]
        if col.dtype == object:
            if (col.astype(str) != "").any():
                keep.append(c)
        elif col.notna().any():
            keep.append(c)
    return df[keep]


def table_html(df: pd.DataFrame, digits: int = 3) -> str:
    d = _display_frame(df)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in d.columns)
    rows = []
    for _, r in d.iterrows():
        cells = []
        for c in d.columns:
            v = r[c]
            cls = ' class="num"' if isinstance(v, (float, int, np.number)) and \
                not isinstance(v, bool) else ""
            text = fmt(v, digits)
            if c == "verdict":
                cls = ' class="ok"' if text.startswith("reproduced") else ' class="bad"'
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ("<div class=\"tw\"><table><thead><tr>" + head + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div>")


def _md_cell(v, digits):
    return fmt(v, digits).replace("|", "\\|").replace("\n", " ")


def table_md(df: pd.DataFrame, digits: int = 3) -> str:
    d = _display_frame(df)
    out = ["| " + " | ".join(_md_cell(c, digits) for c in d.columns) + " |",
           "|" + "---|" * len(d.columns)]
    for _, r in d.iterrows():
        out.append("| " + " | ".join(_md_cell(r[c], digits) for c in d.columns) + " |")
    return "\n".join(out)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:0 auto;padding:1em 2em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.3em;border-bottom:1px solid #ddd;margin-top:2em}
h3{font-size:1.1em;margin-top:1.4em}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:2px 6px;vertical-align:top}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.ok{color:#1d6b1d}td.bad{color:#a31515;font-weight:600}
.tw{overflow-x:auto}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4em .8em}
.fast{background:#fdecea;border-left:4px solid #c0392b;padding:.4em .8em}
.answers{background:#eef4fb;border-left:4px solid #1f5fbf;padding:.4em .8em}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:.85em;color:#555}
nav a{margin-right:1em}
"""


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            f"{body}\n</body></html>\n")


def _fig_bytes(fig) -> tuple[bytes, bytes]:
    if isinstance(fig, tuple):  # already rendered by prerender()
        return fig
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=110, metadata={"Software": None})
    fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return png.getvalue(), svg.getvalue()


def prerender(output: AnalysisOutput) -> None:
    """Render ``output``'s figures to (PNG, SVG) bytes now, exactly as :func:`write_report`
    would, and close them: lets a run render while it waits for other analyses."""
    import matplotlib.pyplot as plt

    for name, fig in list(output.figures.items()):
        if not isinstance(fig, tuple):
            output.figures[name] = _fig_bytes(fig)
            plt.close(fig)
    for name, dt in output.datatrees.items():
        if dt is not None and name not in output.netcdf:
            output.netcdf[name] = _netcdf_bytes(dt)


def _fast_banner(fast: bool) -> str:
    if not fast:
        return ""
    return ("<p class=\"fast\"><b>--fast run:</b> MCMC used few draws (smoke-test settings); "
            "Monte Carlo error is larger than in a full run. Do not quote these numbers.</p>")


def analysis_html(out: AnalysisOutput, figs: dict[str, tuple[bytes, bytes]],
                  level: int = 2) -> str:
    """HTML fragment of one analysis (headings start at ``h{level}``)."""
    h1, h2 = f"h{level}", f"h{level + 1}"
    parts = [f"<{h1} id=\"{out.name}\">{html.escape(out.title)}</{h1}>"]
    if out.description:
        parts.append(f"<p>{html.escape(out.description)}</p>")
    parts.append(_fast_banner(out.fast))
    if out.answers:
        parts.append("<div class=\"answers\"><b>Answers</b><ul>"
                     + "".join(f"<li>{html.escape(a)}</li>" for a in out.answers)
                     + "</ul></div>")
    for b in out.blocks:
        if b.kind == "heading":
            parts.append(f"<{h2}>{html.escape(b.text)}</{h2}>")
        elif b.kind == "text":
            parts.append(f"<p>{html.escape(b.text)}</p>")
        elif b.kind == "note":
            parts.append(f"<p class=\"note\">{html.escape(b.text)}</p>")
        elif b.kind == "list":
            parts.append("<ul>" + "".join(f"<li>{html.escape(str(i))}</li>" for i in b.items)
                         + "</ul>")
        elif b.kind == "table":
            if b.text:
                parts.append(f"<p><i>{html.escape(b.text)}</i></p>")
            parts.append(table_html(b.table, b.digits))
        elif b.kind == "figure":
            png = figs[b.figure][0]
            src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            parts.append(f"<figure><img src=\"{src}\" alt=\"{html.escape(b.text or b.figure)}\">"
                         f"<figcaption>{html.escape(b.text)}</figcaption></figure>")
    if out.warnings:
        parts.append(f"<{h2}>Warnings</{h2}><ul>"
                     + "".join(f"<li>{html.escape(w)}</li>" for w in out.warnings) + "</ul>")
    return "\n".join(p for p in parts if p)


def analysis_md(out: AnalysisOutput) -> str:
    lines = [f"# {out.title}", ""]
    if out.description:
        lines += [out.description, ""]
    if out.fast:
        lines += ["> **--fast run:** MCMC used few draws (smoke-test settings); do not quote "
                  "these numbers.", ""]
    if out.answers:
        lines += ["**Answers**", ""] + [f"- {a}" for a in out.answers] + [""]
    for b in out.blocks:
        if b.kind == "heading":
            lines += [f"## {b.text}", ""]
        elif b.kind == "text":
            lines += [b.text, ""]
        elif b.kind == "note":
            lines += [f"> {b.text}", ""]
        elif b.kind == "list":
            lines += [f"- {i}" for i in b.items] + [""]
        elif b.kind == "table":
            if b.text:
                lines += [f"*{b.text}*", ""]
            lines += [table_md(b.table, b.digits), ""]
        elif b.kind == "figure":
            lines += [f"![{b.text}](figures/{b.figure}.png)", "", f"*{b.text}*", ""]
    if out.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in out.warnings] + [""]
    return "\n".join(lines)


def _netcdf_bytes(dt) -> bytes | str:
    """DataTree → NetCDF file contents (text (object) variables, which h5netcdf cannot store,
    are dropped), or the error message if it cannot be written."""
    try:
        return bytes(netcdf_ready(dt).to_netcdf())
    except Exception as err:  # noqa: BLE001 - report, don't lose the run
        return str(err) or type(err).__name__


def _write_csv(df: pd.DataFrame, path: Path):
    """CSV for spreadsheets: a text cell that a spreadsheet would run as a formula (a label
    starting with ``=``, ``+``, ``-``, ``@``) is prefixed with ``'``
    (:func:`bayesmeta.textsafe.spreadsheet_safe`); NetCDF and JSON keep the raw label."""
    from bayesmeta.textsafe import spreadsheet_safe_frame

    spreadsheet_safe_frame(df).to_csv(path, index=False, lineterminator="\n",
                                      float_format="%.17g")


def write_report(outputs: list[AnalysisOutput], out_dir, provenance: dict, *,
                 audit: pd.DataFrame | None = None, results: pd.DataFrame | None = None,
                 progress=None) -> Path:
    """Write every analysis into ``out_dir`` atomically; return the directory.

    Parameters
    ----------
    outputs : list of AnalysisOutput
    out_dir : path
        Replaced as a whole (see :func:`atomic_dir`).
    provenance : dict
        Written to ``provenance.json`` (JSON-serialisable).
    audit, results : DataFrame, optional
        Combined audit table and schema rows of all analyses (``audit.csv``, ``results.csv``).
    """
    import matplotlib.pyplot as plt

    say = progress or (lambda msg: None)
    names = [o.name for o in outputs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise BayesMetaError(f"two analyses share the name(s) {dup}; names must be unique "
                             "(they name the output folders)")
    with atomic_dir(out_dir) as tmp:
        rendered: dict[str, dict[str, tuple[bytes, bytes]]] = {}
        for o in outputs:
            if not _SAFE.match(o.name):
                raise BayesMetaError(f"unsafe analysis name {o.name!r}")
            say(f"writing {o.name}")
            figs = {}
            for fname, fig in o.figures.items():
                png, svg = _fig_bytes(fig)
                if not isinstance(fig, tuple):
                    plt.close(fig)
                figs[fname] = (png, svg)
                _inside(tmp, f"{o.name}/figures/{fname}.png").write_bytes(png)
                _inside(tmp, f"{o.name}/figures/{fname}.svg").write_bytes(svg)
            rendered[o.name] = figs
            for tname, df in o.tables.items():
                _write_csv(df, _inside(tmp, f"{o.name}/tables/{tname}.csv"))
            for dname, dt in o.datatrees.items():
                if dt is None:
                    continue
                nc = o.netcdf.get(dname)
                if nc is None:
                    nc = _netcdf_bytes(dt)
                if isinstance(nc, str):
                    o.warnings.append(f"posterior '{dname}' not saved as NetCDF: {nc}")
                else:
                    _inside(tmp, f"{o.name}/posterior/{dname}.nc").write_bytes(nc)
            nav = "<nav><a href=\"../index.html\">&larr; all analyses</a></nav>"
            _inside(tmp, f"{o.name}/index.html").write_text(
                _page(o.title, nav + analysis_html(o, figs, level=1)), encoding="utf-8")
            _inside(tmp, f"{o.name}/report.md").write_text(analysis_md(o), encoding="utf-8")
        if results is not None:
            _write_csv(results, _inside(tmp, "results.csv"))
        if audit is not None:
            _write_csv(audit, _inside(tmp, "audit.csv"))
        _inside(tmp, "provenance.json").write_text(
            json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n",
            encoding="utf-8")
        _inside(tmp, "index.html").write_text(
            index_html(outputs, rendered, provenance, audit), encoding="utf-8")
        _inside(tmp, "index.md").write_text(index_md(outputs, provenance), encoding="utf-8")
    return Path(out_dir)


def index_html(outputs, rendered, provenance, audit) -> str:
    fast = any(o.fast for o in outputs)
    toc = "".join(f"<li><a href=\"#{o.name}\">{html.escape(o.title)}</a> "
                  f"(<a href=\"{o.name}/index.html\">page</a>, "
                  f"<a href=\"{o.name}/report.md\">Markdown</a>)</li>" for o in outputs)
    summary = []
    for o in outputs:
        if o.answers:
            summary.append(f"<li><b>{html.escape(o.title)}</b><ul>"
                           + "".join(f"<li>{html.escape(a)}</li>" for a in o.answers[:4])
                           + "</ul></li>")
    prov = html.escape(json.dumps({k: provenance.get(k) for k in
                                   ("bayesmeta_version", "created", "command", "fast", "seed")},
                                  default=str))
    body = [
        "<h1>bayesmeta report</h1>",
        "<p>MSC therapy in end-stage liver disease: pooled effects, Bayesian vs classical vs "
        "published, and how certain the survival benefit is. Every figure is embedded; this "
        "file needs no network.</p>",
        _fast_banner(fast),
        f"<h2>Contents</h2><ul>{toc}</ul>",
        "<h2>Key answers</h2><ul>" + "".join(summary) + "</ul>" if summary else "",
    ]
    if audit is not None and len(audit):
        n_bad = int((~audit["verdict"].astype(str).str.startswith("reproduced")).sum())
        body.append(f"<h2>Published-number audit</h2><p>{len(audit)} published numbers checked; "
                    f"{len(audit) - n_bad} reproduced at printed precision, {n_bad} "
                    "discrepancies or not checkable (details per analysis and in "
                    "<code>audit.csv</code>).</p>")
    for o in outputs:
        body.append(analysis_html(o, rendered[o.name], level=2))
    body.append(f"<h2>Provenance</h2><p><code>{prov}</code> — full record in "
                "<code>provenance.json</code>.</p>")
    return _page("bayesmeta report", "\n".join(b for b in body if b))


def index_md(outputs, provenance) -> str:
    lines = ["# bayesmeta report", ""]
    if any(o.fast for o in outputs):
        lines += ["> **--fast run** (few MCMC draws): do not quote these numbers.", ""]
    for o in outputs:
        lines += [f"## [{o.title}]({o.name}/report.md)", ""] + [f"- {a}" for a in o.answers]
        lines.append("")
    lines += [f"Command: `{provenance.get('command', '')}`", ""]
    return "\n".join(lines)
