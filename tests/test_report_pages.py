"""Structure of the report pages: reading order, every answer shown, summary tables,
navigation, glossary, human headers, probability display.

References: the inputs written here (answers, tables, headings) and the documented rules of
bayesmeta.report / bayesmeta.fmt (order = priority then given order; "> 0.999"; a glossary
entry for exactly the terms on the page). Links and ids are read back with the standard
library's HTML parser.
"""

from __future__ import annotations

from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bayesmeta.fmt import GLOSSARY  # noqa: E402
from bayesmeta.report import AnalysisOutput, write_report  # noqa: E402

EVIL = "<script>alert('x')</script>"


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.hrefs, self.th, self.td, self.dt = set(), [], [], [], []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        if tag in ("th", "td", "dt"):
            self._cell = (tag, [])

    def handle_data(self, data):
        if self._cell:
            self._cell[1].append(data)

    def handle_endtag(self, tag):
        if self._cell and tag == self._cell[0]:
            getattr(self, tag).append("".join(self._cell[1]))
            self._cell = None


def parse(path) -> Links:
    p = Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def output(name, title, *, answers=(), priority=None, summary=None):
    o = AnalysisOutput(name=name, title=title, kind="generic", answers=list(answers),
                       priority=priority, summary=summary)
    o.h("Results by time")
    o.table("results", pd.DataFrame({
        "time": ["4", "12", ""], "estimate": [0.1, 0.2, 0.15],
        "p_or_gt_threshold": [0.99996, 0.5, 0.00001], "clean": [True, False, True],
        "survival_diff_median": [0.1, 0.2, 0.3]}), "caption")
    o.h("Methods")
    o.p("Bayesian: exact NNHM by quadrature; R-hat and ESS checked.")
    f = Figure(figsize=(2, 2))
    f.add_subplot(1, 1, 1).plot([0, 1], [0, 1])
    o.figure("line", f, "a line")
    o.h("Results by time")  # a repeated heading gets its own id
    return o


def test_index_order_every_answer_summary_and_links(tmp_path):
    many = [f"answer {i} of nine" for i in range(1, 10)]
    summ = pd.DataFrame({"quantity": ["OR at 12", EVIL], "published": ["2.21 [1.31, 3.74]", ""],
                         "classical": ["2.20 [1.30, 3.70]", ""],
                         "Bayesian": ["1.97 [1.28, 3.07]", ""], "p_benefit": [0.9996, 0.5]})
    outs = [output("zeta", "Zeta first given", answers=["z1"]),
            output("alpha", "Alpha", answers=many, summary=summ),
            output("mid", "Mid with priority", answers=["m1"], priority=1)]
    out = tmp_path / "rep"
    write_report(outs, out, {"command": "x"})
    text = (out / "index.html").read_text(encoding="utf-8")
    # priority first, then the order given (not alphabetical)
    pos = [text.index(f"<section class=\"analysis\" id=\"{n}\">") for n in ("mid", "zeta",
                                                                          "alpha")]
    assert pos == sorted(pos)
    # every answer line is on the index
    for a in many:
        assert f"<li>{a}</li>" in text
    # summary table: human header, probability shown as "> 0.999", escaped text
    idx = parse(out / "index.html")
    assert "P(benefit)" in idx.th and "> 0.999" in idx.td
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert not (out / "alpha" / "tables" / "summary.csv").exists()
    # internal links of the index resolve (files and #fragments)
    for href in idx.hrefs:
        path, _, frag = href.partition("#")
        if path:
            assert (out / path).is_file(), href
            if frag:
                assert frag in parse(out / path).ids, href
        else:
            assert frag in idx.ids, href
    assert "MSC" not in text  # no domain words from the library


def test_page_navigation_glossary_headers(tmp_path):
    out = tmp_path / "rep"
    write_report([output("a", "A", answers=["one"])], out, {})
    page = parse(out / "a" / "index.html")
    text = (out / "a" / "index.html").read_text(encoding="utf-8")
    assert "../index.html" in page.hrefs
    frags = [h[1:] for h in page.hrefs if h.startswith("#")]
    assert set(frags) <= page.ids
    # every section heading is linked from the navigation (the repeated one too)
    assert {"results-by-time", "results-by-time-2", "methods", "glossary", "answers",
            "top"} <= set(frags)
    # human headers in the displayed table; CSV keeps raw names
    assert {"P(OR > threshold)", "diagnostics passed", "survival difference (median)"} \
        <= set(page.th)
    assert "p_or_gt_threshold" not in page.th
    csv = pd.read_csv(out / "a" / "tables" / "results.csv")
    assert "p_or_gt_threshold" in csv.columns and "clean" in csv.columns
    # probabilities never print as certainties; booleans in words
    assert "> 0.999" in page.td and "< 0.001" in page.td and "1.000" not in page.td
    assert "yes" in page.td and "no" in page.td
    # a blank time cell is explained
    assert "Blank time" in text
    # glossary: the terms on the page (NNHM, R-hat, ESS, exact) and no others
    assert {"NNHM", "R-hat", "ESS"} <= set(page.dt)
    assert "E-BFMI" not in page.dt and "NNTH" not in page.dt
    assert all(t in GLOSSARY for t in page.dt)
    md = (out / "a" / "report.md").read_text(encoding="utf-8")
    assert "## Glossary" in md and "P(OR > threshold)" in md


def test_summary_on_page_and_markdown(tmp_path):
    summ = pd.DataFrame({"quantity": ["OR"], "Bayesian": ["1.97 [1.28, 3.07]"],
                         "p_benefit": [np.float64(0.97)]})
    out = tmp_path / "rep"
    write_report([output("a", "A", answers=["one"], summary=summ)], out, {})
    page = parse(out / "a" / "index.html")
    assert "summary" in page.ids and "#summary" in page.hrefs
    assert "0.970" in page.td and "P(benefit)" in page.th
    assert "| quantity | Bayesian | P(benefit) |" in (out / "index.md").read_text()
