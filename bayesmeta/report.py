"""Write the report directory: HTML (self-contained), Markdown, CSV, figures, NetCDF, provenance.

Layout of the output directory (``reports/`` by default)::

    index.html                 answers first (every answer line and summary table, in reading
                               order), then every analysis in a collapsed section (one
                               self-contained page, figures base64-embedded)
    provenance.json            versions, seeds, data sha256, spec hashes, command line, --fast
    results.csv                all schema rows (published | classical | bayesian) of all analyses
    audit.csv                  published-number audit of all analyses
    <name>/index.html          one self-contained page per analysis
    <name>/report.md           the same as Markdown (figures linked)
    <name>/tables/<t>.csv      tidy tables (schema tables use bayesmeta.results.SCHEMA)
    <name>/figures/<f>.png     every figure (and <f>.svg when asked for: ``svg=True``,
                               ``bayesmeta run --svg``)
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
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesmeta import outdir as _outdir
from bayesmeta.exceptions import BayesMetaError
from bayesmeta.fmt import GLOSSARY, glossary_terms, human_header, prob
from bayesmeta.results import netcdf_ready

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
    # one-screen summary shown under the answers (index and page), e.g. columns
    # published | classical | Bayesian | P(benefit); displayed only (not written as CSV)
    summary: pd.DataFrame | None = None
    # reading order in the index: smaller first; None = after the numbered ones, in the
    # order given
    priority: float | None = None
    # prerendered page, Markdown, index section, page words and CSV bytes (see prerender)
    pages: dict[str, Any] = field(default_factory=dict)

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
    """Display a value: floats rounded to ``digits`` decimals, tiny values in e-notation,
    booleans as yes/no."""
    if x is None:
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (float, np.floating)):
        if not math.isfinite(x):
            return "" if math.isnan(x) else str(x)
        if x != 0 and abs(x) < 10 ** (-digits):
            return f"{x:.2e}"
        return f"{x:.{digits}f}"
    if isinstance(x, (np.integer,)):
        return str(int(x))
    return str(x)


_PROB_NAME = re.compile(r"^(p|P|p_.*|.*_p|P\(.*\)|.* P|P \(.*\))$")


def _is_probability(name, col: pd.Series) -> bool:
    """A column of probabilities (P-values, posterior probabilities): named like one and every
    finite value in [0, 1]. Shown with :func:`bayesmeta.fmt.prob` ("< 0.001", "> 0.999")."""
    if not _PROB_NAME.match(str(name)) or not pd.api.types.is_numeric_dtype(col) \
            or pd.api.types.is_bool_dtype(col):
        return False
    v = pd.to_numeric(col, errors="coerce").to_numpy(float)
    v = v[np.isfinite(v)]
    return bool(v.size) and bool(((v >= 0) & (v <= 1)).all())


class _Memo:
    """What :func:`write_report` and :func:`prerender_pages` show of each table and page, worked
    out once per call: a table appears on its page, in its Markdown, in the index and in the
    glossary's text. Keyed by object identity, holding the object so that its id stays its
    own; alive only inside ``with _memo():`` (the objects cannot change meanwhile)."""

    current: _Memo | None = None

    def __init__(self):
        self.store: dict[tuple, tuple] = {}

    def get(self, kind: str, obj, extra, make):
        key = (kind, id(obj), extra)
        hit = self.store.get(key)
        if hit is not None and hit[0] is obj:
            return hit[1]
        value = make()
        self.store[key] = (obj, value)
        return value


class _memo:
    """``with _memo():`` memoises tables and page texts (re-entrant: the outer memo serves)."""

    def __enter__(self):
        self.outer = _Memo.current
        if self.outer is None:
            _Memo.current = _Memo()

    def __exit__(self, *exc):
        _Memo.current = self.outer


def _memoised(kind: str, obj, extra, make):
    memo = _Memo.current
    return make() if memo is None else memo.get(kind, obj, extra, make)


def _display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Drop columns that are empty in every row (keeps wide schema tables readable)."""
    return _memoised("frame", df, None, lambda: _drop_empty(df))


def _drop_empty(df: pd.DataFrame) -> pd.DataFrame:
    keep = []
    for c in df.columns:
        col = df[c]
        if not pd.api.types.is_numeric_dtype(col):
            if (col.astype(str) != "").any():
                keep.append(c)
        elif col.notna().any():
            keep.append(c)
    return df[keep]


def _cells(d: pd.DataFrame, digits: int) -> list[list[tuple[str, str]]]:
    """Displayed text and CSS class of every cell."""
    return _memoised("cells", d, digits, lambda: _cell_texts(d, digits))


def _cell_texts(d: pd.DataFrame, digits: int) -> list[list[tuple[str, str]]]:
    prob_cols = {c for c in d.columns if _is_probability(c, d[c])}
    out = []
    for _, r in d.iterrows():
        row = []
        for c in d.columns:
            v = r[c]
            num = isinstance(v, (float, int, np.number)) and not isinstance(v, (bool, np.bool_))
            cls = "num" if num else ""
            text = prob(v, max(digits, 3)) if c in prob_cols and num else fmt(v, digits)
            if c in prob_cols and num and text == "NA":
                text = ""
            if c == "verdict":
                cls = "ok" if text.startswith("reproduced") else "bad"
            row.append((text, cls))
        out.append(row)
    return out


def _blank_notes(d: pd.DataFrame) -> list[str]:
    """What an empty time or subgroup cell means, when the column has both kinds of cell."""
    notes = []
    for c, what in (("time", "Blank time: the row is not for one time point (pooled over "
                             "times)."),
                    ("subgroup", "Blank subgroup: all patients.")):
        if c in d.columns and not pd.api.types.is_numeric_dtype(d[c]):
            s = d[c].fillna("").astype(str)
            if (s == "").any() and (s != "").any():
                notes.append(what)
    return notes


def table_html(df: pd.DataFrame, digits: int = 3) -> str:
    """HTML table with human column headers (CSV files keep the raw names)."""
    d = _display_frame(df)
    head = "".join(f"<th>{html.escape(human_header(c))}</th>" for c in d.columns)
    rows = []
    for cells in _cells(d, digits):
        rows.append("<tr>" + "".join(
            f"<td{f' class={chr(34)}{cls}{chr(34)}' if cls else ''}>{html.escape(t)}</td>"
            for t, cls in cells) + "</tr>")
    notes = "".join(f"<p class=\"tnote\">{html.escape(n)}</p>" for n in _blank_notes(d))
    return ("<div class=\"tw\"><table><thead><tr>" + head + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div>" + notes)


def _md_text(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table_md(df: pd.DataFrame, digits: int = 3) -> str:
    d = _display_frame(df)
    out = ["| " + " | ".join(_md_text(human_header(c)) for c in d.columns) + " |",
           "|" + "---|" * len(d.columns)]
    for cells in _cells(d, digits):
        out.append("| " + " | ".join(_md_text(t) for t, _ in cells) + " |")
    out += [""] + _blank_notes(d) if _blank_notes(d) else []
    return "\n".join(out)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:0 auto;padding:1em 2em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.3em;border-bottom:1px solid #ddd;margin-top:2em}
h3{font-size:1.1em;margin-top:1.4em}h4{font-size:1em}
a.up{font-size:.65em;font-weight:normal;margin-left:.6em;text-decoration:none}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:2px 6px;vertical-align:top}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.ok{color:#1d6b1d}td.bad{color:#a31515;font-weight:600}
.tw{overflow-x:auto}.tnote{font-size:.8em;color:#555;margin:.1em 0 .8em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4em .8em}
.fast{background:#fdecea;border-left:4px solid #c0392b;padding:.4em .8em}
.answers{background:#eef4fb;border-left:4px solid #1f5fbf;padding:.4em .8em}
figure{margin:1em 0}figure img{max-width:100%;height:auto}figcaption{font-size:.85em;color:#555}
nav{font-size:.9em;margin:.4em 0 1em}nav a{margin-right:.9em;white-space:nowrap}
nav.toc{border:1px solid #e3e3e3;background:#fafafa;padding:.4em .8em;line-height:1.8}
section.analysis{border-top:2px solid #1f5fbf;margin-top:2em}
details{margin:.6em 0 1.2em}details>summary{cursor:pointer;color:#1f5fbf;font-weight:600}
dl.glossary{display:grid;grid-template-columns:max-content 1fr;gap:.25em 1.2em}\ndl.glossary dt{font-weight:600}dl.glossary dd{margin:0}
code{overflow-wrap:anywhere}p.links{margin:.2em 0 .6em;font-size:.9em}
"""


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            f"{body}\n</body></html>\n")


def _fig_bytes(fig, svg: bool = False) -> tuple[bytes, bytes | None]:
    """PNG (110 dpi) and, with ``svg``, SVG bytes of ``fig`` (``None`` without)."""
    if isinstance(fig, tuple):  # already rendered by prerender()
        if svg and fig[1] is None:
            raise BayesMetaError("an SVG copy was asked for after the figure was rendered "
                                 "without one: pass svg=True to prerender() too")
        return fig
    png = io.BytesIO()
    # zlib level 3: the same pixels as the default level 6, 2% larger, a third faster to encode
    fig.savefig(png, format="png", dpi=110, metadata={"Software": None},
                pil_kwargs={"compress_level": 3})
    if not svg:
        return png.getvalue(), None
    # the SVG keeps the layout just computed for the PNG: constrained layout positions the
    # axes in figure fractions from text sizes in points, so a second pass at the SVG's 72 dpi
    # would only repeat the text measurements
    fig.set_layout_engine("none")
    out = io.BytesIO()
    fig.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    return png.getvalue(), out.getvalue()


def prerender(output: AnalysisOutput, svg: bool = False) -> None:
    """Render everything :func:`write_report` writes of ``output`` now, exactly as it would:
    figures as (PNG, SVG or ``None``) bytes (closing them), posteriors as NetCDF bytes, the
    page, its Markdown, its index section and its CSV tables; lets the process that ran an
    analysis render it. ``svg`` must match the ``svg`` later given to :func:`write_report`;
    ``output`` must not change afterwards."""
    import matplotlib.pyplot as plt

    for name, fig in list(output.figures.items()):
        if not isinstance(fig, tuple):
            output.figures[name] = _fig_bytes(fig, svg)
            plt.close(fig)
    _posteriors(output)
    output.pages = _pages(output, output.figures)


def _posteriors(output: AnalysisOutput) -> None:
    """NetCDF bytes of every posterior of ``output``, computed once; one that cannot be
    written becomes a warning of the analysis (shown on its page)."""
    for name, dt in output.datatrees.items():
        if dt is not None and name not in output.netcdf:
            nc = output.netcdf[name] = _netcdf_bytes(dt)
            if isinstance(nc, str):
                output.warnings.append(f"posterior '{name}' not saved as NetCDF: {nc}")


def _pages(o: AnalysisOutput, figs) -> dict[str, Any]:
    """The text and CSV files of ``o`` (``figs``: its rendered figures)."""
    with _memo():
        return {"html": _page(o.title, analysis_html(o, figs, level=1)),
                "md": analysis_md(o), "index": _index_section(o, figs), "text": _page_text(o),
                "csv": {t: _csv_bytes(df) for t, df in o.tables.items()}}


def _fast_banner(fast: bool) -> str:
    if not fast:
        return ""
    return ("<p class=\"fast\"><b>--fast run:</b> MCMC used few draws (smoke-test settings); "
            "Monte Carlo error is larger than in a full run. Do not quote these numbers.</p>")


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return s[:40] or "section"


class _Ids:
    """Unique, safe element ids for the headings of one HTML page."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self.used: set[str] = set()

    def __call__(self, text: str) -> str:
        base = f"{self.prefix}{_slug(text)}"
        i, out = 2, base
        while out in self.used:
            out, i = f"{base}-{i}", i + 1
        self.used.add(out)
        return out


def _page_text(out: AnalysisOutput) -> str:
    """All words a reader sees on the page of ``out`` (to pick its glossary terms)."""
    return _memoised("text", out, None, lambda: _words(out))


def _words(out: AnalysisOutput) -> str:
    parts = [out.title, out.description, *out.answers, *out.warnings]
    tables = [out.summary] if out.summary is not None else []
    for b in out.blocks:
        parts.append(b.text)
        parts.extend(str(i) for i in b.items)
        if b.table is not None:
            tables.append(b.table)
    for t in tables:
        d = _display_frame(t)
        parts.extend(human_header(c) for c in d.columns)
        for c in d.columns:
            if not pd.api.types.is_numeric_dtype(d[c]):
                parts.extend(d[c].astype(str).head(200))
    return "\n".join(p for p in parts if isinstance(p, str) and p)


def glossary_html(text: str, level: int = 2, anchor: str = "glossary", up: str = "") -> str:
    """A definition list of the :data:`bayesmeta.fmt.GLOSSARY` terms that occur in ``text``."""
    terms = glossary_terms(text)
    if not terms:
        return ""
    items = "".join(f"<dt>{html.escape(t)}</dt><dd>{html.escape(GLOSSARY[t])}</dd>"
                    for t in terms)
    return (f"<h{level} id=\"{anchor}\">Glossary{up}</h{level}>"
            f"<dl class=\"glossary\">{items}</dl>")


def _answers_html(out: AnalysisOutput) -> str:
    if not out.answers:
        return ""
    return ("<div class=\"answers\"><b>Answers</b><ul>"
            + "".join(f"<li>{html.escape(a)}</li>" for a in out.answers) + "</ul></div>")


def _summary_html(out: AnalysisOutput, caption: str = "Summary") -> str:
    if out.summary is None or not len(out.summary):
        return ""
    return (f"<p><i>{html.escape(caption)}</i></p>" + table_html(out.summary, 3))


def _figure_html(b: Block, figs) -> str:
    png = figs[b.figure][0]
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (f"<figure><img src=\"{src}\" alt=\"{html.escape(b.text or b.figure)}\">"
            f"<figcaption>{html.escape(b.text)}</figcaption></figure>")


def _body_html(out: AnalysisOutput, figs, hl: int, ids: _Ids, up: str) -> tuple[list, list]:
    """HTML of the blocks and warnings of ``out`` (headings ``h{hl}``); returns (parts,
    [(id, heading text)])."""
    parts, heads = [], []
    blocks = list(out.blocks)
    if out.warnings:
        blocks.append(Block("heading", "Warnings"))
        blocks.append(Block("list", items=tuple(out.warnings)))
    for b in blocks:
        if b.kind == "heading":
            hid = ids(b.text)
            heads.append((hid, b.text))
            parts.append(f"<h{hl} id=\"{hid}\">{html.escape(b.text)}{up}</h{hl}>")
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
            parts.append(_figure_html(b, figs))
    return parts, heads


def analysis_html(out: AnalysisOutput, figs: dict[str, tuple[bytes, bytes | None]],
                  level: int = 2) -> str:
    """HTML of one analysis page: navigation (index, every section, glossary), title,
    answers, summary table, every block, warnings and the glossary of the terms used.
    ``level`` is the heading level of the title."""
    hl = level + 1
    ids = _Ids()
    up = " <a class=\"up\" href=\"#top\" title=\"back to the top\">&uarr; top</a>"
    parts = [f"<h{level} id=\"top\">{html.escape(out.title)}</h{level}>"]
    if out.description:
        parts.append(f"<p>{html.escape(out.description)}</p>")
    parts.append(_fast_banner(out.fast))
    heads = []
    if out.answers:
        ids.used.add("answers")
        heads.append(("answers", "Answers"))
        parts.append(f"<div id=\"answers\">{_answers_html(out)}</div>")
    if out.summary is not None and len(out.summary):
        ids.used.add("summary")
        heads.append(("summary", "Summary"))
        parts.append(f"<div id=\"summary\">{_summary_html(out)}</div>")
    body, body_heads = _body_html(out, figs, hl, ids, up)
    parts += body
    heads += body_heads
    gl = glossary_html(_page_text(out), hl, "glossary", up)
    if gl:
        heads.append(("glossary", "Glossary"))
        parts.append(gl)
    nav = ("<nav class=\"toc\"><a href=\"../index.html\">&larr; all analyses</a> "
           + " ".join(f"<a href=\"#{i}\">{html.escape(t)}</a>" for i, t in heads) + "</nav>")
    return nav + "\n" + "\n".join(p for p in parts if p)


def analysis_md(out: AnalysisOutput) -> str:
    lines = [f"# {out.title}", "", "[all analyses](../index.md)", ""]
    if out.description:
        lines += [out.description, ""]
    if out.fast:
        lines += ["> **--fast run:** MCMC used few draws (smoke-test settings); do not quote "
                  "these numbers.", ""]
    if out.answers:
        lines += ["**Answers**", ""] + [f"- {a}" for a in out.answers] + [""]
    if out.summary is not None and len(out.summary):
        lines += ["**Summary**", "", table_md(out.summary, 3), ""]
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
    terms = glossary_terms(_page_text(out))
    if terms:
        lines += ["## Glossary", ""] + [f"- **{t}**: {GLOSSARY[t]}" for t in terms] + [""]
    return "\n".join(lines)


def _netcdf_bytes(dt) -> bytes | str:
    """DataTree → NetCDF file contents (text (object) variables, which h5netcdf cannot store,
    are dropped), or the error message if it cannot be written."""
    try:
        return bytes(netcdf_ready(dt).to_netcdf())
    except Exception as err:  # noqa: BLE001 - report, don't lose the run
        return str(err) or type(err).__name__


def _csv_bytes(df: pd.DataFrame) -> bytes:
    """CSV for spreadsheets: a text cell that a spreadsheet would run as a formula (a label
    starting with ``=``, ``+``, ``-``, ``@``) is prefixed with ``'``
    (:func:`bayesmeta.textsafe.spreadsheet_safe`); NetCDF and JSON keep the raw label."""
    from bayesmeta.textsafe import spreadsheet_safe_frame

    return spreadsheet_safe_frame(df).to_csv(index=False, lineterminator="\n",
                                             float_format="%.17g").encode("utf-8")


def _write_csv(table: pd.DataFrame | bytes, path: Path):
    """Write one CSV file (every CSV of a report is written here): ``table`` or its
    :func:`_csv_bytes`."""
    path.write_bytes(table if isinstance(table, bytes) else _csv_bytes(table))


def write_report(outputs: list[AnalysisOutput], out_dir, provenance: dict, *,
                 audit: pd.DataFrame | None = None, results: pd.DataFrame | None = None,
                 progress=None, svg: bool = False) -> Path:
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
    svg : bool
        Also write every figure as SVG (``figures/<f>.svg``); PNG is always written.
    """
    import matplotlib.pyplot as plt

    say = progress or (lambda msg: None)
    names = [o.name for o in outputs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise BayesMetaError(f"two analyses share the name(s) {dup}; names must be unique "
                             "(they name the output folders)")
    with atomic_dir(out_dir) as tmp, _memo():
        rendered: dict[str, dict[str, Any]] = {}
        for o in outputs:
            if not _SAFE.match(o.name):
                raise BayesMetaError(f"unsafe analysis name {o.name!r}")
            say(f"writing {o.name}")
            figs = {}
            for fname, fig in o.figures.items():
                png, svg_bytes = _fig_bytes(fig, svg)
                if not isinstance(fig, tuple):
                    plt.close(fig)
                figs[fname] = (png, svg_bytes)
                _inside(tmp, f"{o.name}/figures/{fname}.png").write_bytes(png)
                if svg:
                    _inside(tmp, f"{o.name}/figures/{fname}.svg").write_bytes(svg_bytes)
            _posteriors(o)  # before the page: a posterior not saved is a warning on it
            for dname, dt in o.datatrees.items():
                if dt is not None and not isinstance(o.netcdf[dname], str):
                    _inside(tmp, f"{o.name}/posterior/{dname}.nc").write_bytes(o.netcdf[dname])
            pages = rendered[o.name] = o.pages or _pages(o, figs)
            for tname, data in pages["csv"].items():
                _write_csv(data, _inside(tmp, f"{o.name}/tables/{tname}.csv"))
            _inside(tmp, f"{o.name}/index.html").write_text(pages["html"], encoding="utf-8")
            _inside(tmp, f"{o.name}/report.md").write_text(pages["md"], encoding="utf-8")
        if results is not None:
            _write_csv(results, _inside(tmp, "results.csv"))
        if audit is not None:
            _write_csv(audit, _inside(tmp, "audit.csv"))
        _inside(tmp, "provenance.json").write_text(
            json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n",
            encoding="utf-8")
        _inside(tmp, "index.html").write_text(
            index_html(outputs, rendered, provenance, audit, svg=svg), encoding="utf-8")
        _inside(tmp, "index.md").write_text(index_md(outputs, provenance), encoding="utf-8")
    return Path(out_dir)


def ordered(outputs) -> list[AnalysisOutput]:
    """Analyses in reading order: by ``priority`` (smaller first) where given, the others
    after them; ties and unnumbered analyses keep the order given."""
    return sorted(outputs, key=lambda o: (o.priority is None,
                                          o.priority if o.priority is not None else 0))


_UP = " <a class=\"up\" href=\"#top\" title=\"back to the top\">&uarr; top</a>"


def _index_section(o: AnalysisOutput, figs) -> str:
    """The section of ``o`` in the index: links, description, answers, summary table and its
    full results collapsed."""
    parts, _ = _body_html(o, figs, 4, _Ids(f"{o.name}--"), "")
    sec = [f"<section class=\"analysis\" id=\"{o.name}\">",
           f"<h3>{html.escape(o.title)}{_UP}</h3>",
           f"<p class=\"links\"><a href=\"{o.name}/index.html\">full page</a> &middot; "
           f"<a href=\"{o.name}/report.md\">Markdown</a> &middot; "
           f"<a href=\"#{o.name}--details\">all results below</a></p>",
           f"<p>{html.escape(o.description)}</p>" if o.description else "",
           _answers_html(o), _summary_html(o),
           f"<details id=\"{o.name}--details\"><summary>All results, figures and "
           f"methods: {html.escape(o.title)}</summary>\n" + "\n".join(parts) + "</details>",
           "</section>"]
    return "\n".join(s for s in sec if s)


def index_html(outputs, pages, provenance, audit, *, svg: bool = False) -> str:
    """The index: answers first (every answer line and the summary table of each analysis,
    in reading order), then each analysis's full results in a collapsed section, the audit
    summary, the glossary and the provenance. ``pages``: name → :func:`_pages` of each."""
    outputs = ordered(outputs)
    fast = any(o.fast for o in outputs)
    up = " <a class=\"up\" href=\"#top\" title=\"back to the top\">&uarr; top</a>"
    toc = "".join(f"<li><a href=\"#{o.name}\">{html.escape(o.title)}</a> "
                  f"(<a href=\"{o.name}/index.html\">page</a>, "
                  f"<a href=\"{o.name}/report.md\">Markdown</a>)</li>" for o in outputs)
    nav = ("<nav class=\"toc\"><a href=\"#contents\">Contents</a> <a href=\"#answers\">Answers"
           "</a>" + (" <a href=\"#audit\">Published-number audit</a>"
                     if audit is not None and len(audit) else "")
           + " <a href=\"#glossary\">Glossary</a> <a href=\"#provenance\">Provenance</a></nav>")
    body = [
        nav,
        "<h1 id=\"top\">bayesmeta report</h1>",
        "<p>For each analysis: the answers, a summary table (published, classical and "
        "Bayesian), and its full results one click away. Every figure is embedded; this file "
        "needs no network.</p>",
        "<p>The figures are also files, <code>&lt;analysis&gt;/figures/&lt;figure&gt;.png</code>"
        + (" and <code>.svg</code>" if svg else " (SVG copies too with <code>bayesmeta run "
                                                "--svg</code>)") + ".</p>",
        _fast_banner(fast),
        f"<h2 id=\"contents\">Contents{up}</h2><ol>{toc}</ol>",
        f"<h2 id=\"answers\">Answers{up}</h2>",
    ]
    text = []
    for o in outputs:
        body.append(pages[o.name]["index"])
        text.append(pages[o.name]["text"])
    if audit is not None and len(audit):
        n_bad = int((~audit["verdict"].astype(str).str.startswith("reproduced")).sum())
        body.append(f"<h2 id=\"audit\">Published-number audit{up}</h2><p>{len(audit)} "
                    f"published numbers checked; {len(audit) - n_bad} reproduced at printed "
                    f"precision, {n_bad} discrepancies or not checkable (details per analysis "
                    "and in <code>audit.csv</code>).</p>")
    body.append(glossary_html("\n".join(text), 2, "glossary", up)
                or f"<h2 id=\"glossary\">Glossary{up}</h2><p>No specialist terms used.</p>")
    prov = html.escape(json.dumps({k: provenance.get(k) for k in
                                   ("bayesmeta_version", "created", "command", "fast", "seed")},
                                  default=str))
    body.append(f"<h2 id=\"provenance\">Provenance{up}</h2><p><code>{prov}</code> — full "
                "record in <code>provenance.json</code>.</p>")
    return _page("bayesmeta report", "\n".join(b for b in body if b))


def index_md(outputs, provenance) -> str:
    lines = ["# bayesmeta report", ""]
    if any(o.fast for o in outputs):
        lines += ["> **--fast run** (few MCMC draws): do not quote these numbers.", ""]
    for o in ordered(outputs):
        lines += [f"## [{o.title}]({o.name}/report.md)", ""] + [f"- {a}" for a in o.answers]
        lines.append("")
        if o.summary is not None and len(o.summary):
            lines += [table_md(o.summary, 3), ""]
    lines += [f"Command: `{provenance.get('command', '')}`", ""]
    return "\n".join(lines)


def check_out_dir(target) -> Path:
    """Refuse an output directory before any work is done, for the reasons
    :func:`atomic_dir` would refuse it at the end (:func:`bayesmeta.outdir.claim_dir`: a
    file, a dangling link, a non-empty folder that is not a bayesmeta report), or because it
    cannot be created (a parent is a file, or the nearest existing parent is not writable).
    Returns the real folder."""
    t = _outdir.claim_dir(target, marker=MARKER, option="--out", what="report")
    parent = t if t.exists() else t.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BayesMetaError(f"cannot create output directory {t}: {parent} is a file. "
                             "Choose another --out.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BayesMetaError(f"cannot create output directory {t}: {parent} is not writable. "
                             "Choose another --out.")
    return t
