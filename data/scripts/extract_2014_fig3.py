"""Derive data/meld_2014_fig3.csv and data/meld_2014_fig3_published.csv from the 2014 paper text.

Source: Figure 3 (RevMan 5.1 forest plot) of the 2014 BM-MSC decompensated-cirrhosis meta-analysis,
as extracted to ``../shared/papers/bm_msc_decompensated_cirrhosis_2014.txt`` (beside the repo).
The printed lines are copied verbatim (only leading/trailing whitespace stripped); the numbers are
parsed from those lines, never retyped. Printed oddities are kept as printed (see NOTES).

Run from the repository root:  python data/scripts/extract_2014_fig3.py
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT.parent / "shared" / "papers" / "bm_msc_decompensated_cirrhosis_2014.txt"

NUM = r"-?\s?\d+(?:\.\d+)?"
STUDY_RE = re.compile(
    rf"^(Amer ME 2011|Peng L 2011)\s+({NUM})\s+({NUM})\s+(\d+)\s+({NUM})\s+({NUM})\s+(\d+)\s+"
    rf"({NUM})%\s+({NUM})\s+\[({NUM}),\s*({NUM})\]$"
)
SUB_RE = re.compile(rf"^Subtotal \(95%CI\)\s+(\d+)\s+(\d+)\s+({NUM})%\s+({NUM})\s+\[({NUM}),\s*({NUM})\]$")
HET_RE = re.compile(rf"^Heterogeneity: χ 2 = ({NUM}), df\s+= (\d+) \(P\s+= ({NUM})\); I 2 = (\d+)%$")
Z_RE = re.compile(rf"^Test for overall effect: Z\s*= ({NUM}) \(P\s+([=<]) ({NUM})\)$")
SGT_RE = re.compile(rf"^Test for subgroup differences: χ 2 = ({NUM}), df\s+= (\d+) \(P\s+= ({NUM})\), I 2 = (\d+)%")
HEAD_RE = re.compile(r"^(1\.1\.\d) .* (\d+) wk follow-up$")

NOTES = {
    # (level, time, quantity) -> note
    ("overall", "", "md"): (
        "Results text prints 'total of mean difference was 1.68, 95%CI: -2.42-(-0.94), P < 0.001' "
        "(sign dropped); the figure prints -1.68. The overall row is labelled 'Subtotal (95%CI)' "
        "in the figure."
    ),
    ("subtotal", 24, "md"): "printed with a space after the minus sign: '- 2.01'.",
    ("overall", "", "p"): "printed as an upper bound 'P < 0.00001' (op '<'); value is the bound.",
}
STUDY_NOTES = {
    ("Peng L 2011", 24): (
        "printed MD -3.94 (same as the 4-wk row) but arm data give -14.91 - (-11.25) = -3.66 and the "
        "printed CI [-6.34, -0.98] is centred on -3.66"
    ),
}


def num(s: str) -> str:
    """The printed number as text (a space after the minus sign removed), so decimals survive."""
    s = s.replace(" ", "")
    float(s)
    return s


def decimals(s: str) -> int:
    s = s.replace(" ", "")
    return len(s.split(".")[1]) if "." in s else 0


def main() -> None:
    lines = [ln.strip() for ln in PAPER.read_text(encoding="utf-8").splitlines()]
    start = lines.index("Study or subgroup mean SD Total mean SD Total Weight IV, Fixed, 95%CI IV, Fixed, 95%CI")
    block = lines[start:start + 30]
    studies, published = [], []
    label, time = None, None

    def pub(level, t, quantity, text, printed, op="="):
        published.append(dict(level=level, time=t, quantity=quantity, value=num(text),
                              decimals=decimals(text), printed=printed, op=op,
                              note=NOTES.get((level, t, quantity), "")))

    for ln in block:
        if m := HEAD_RE.match(ln):
            label, time = m.group(1), int(m.group(2))
            head = ln
        elif m := STUDY_RE.match(ln):
            g = m.groups()
            third = " (third subgroup; the label 1.1.2 is printed twice)" if time == 24 else ""
            studies.append(dict(
                study=g[0], time=time, m1i=num(g[1]), sd1i=num(g[2]), n1i=g[3],
                m2i=num(g[4]), sd2i=num(g[5]), n2i=g[6], pub_md=num(g[8]),
                pub_ci_low=num(g[9]), pub_ci_high=num(g[10]), pub_weight_pct=num(g[7]),
                source=f"2014 paper, Figure 3, subgroup {label} '{head}'{third}, printed: '{ln}'"
                + (f"; note: {STUDY_NOTES[(g[0], time)]}" if (g[0], time) in STUDY_NOTES else ""),
            ))
        elif m := SUB_RE.match(ln):
            level, t = ("overall", "") if time == "overall" else ("subtotal", time)
            pub(level, t, "md", m.group(4), ln)
            pub(level, t, "ci_low", m.group(5), ln)
            pub(level, t, "ci_high", m.group(6), ln)
            pub(level, t, "weight_pct", m.group(3), ln)
        elif m := HET_RE.match(ln):
            level, t = ("overall", "") if time == "overall" else ("subtotal", time)
            pub(level, t, "chi2", m.group(1), ln)
            pub(level, t, "df", m.group(2), ln)
            pub(level, t, "p_het", m.group(3), ln)
            pub(level, t, "i2_pct", m.group(4), ln)
        elif m := Z_RE.match(ln):
            level, t = ("overall", "") if time == "overall" else ("subtotal", time)
            pub(level, t, "z", m.group(1), ln)
            pub(level, t, "p", m.group(3), ln, op=m.group(2))
            if time == 24:
                time = "overall"  # the next Subtotal block is the overall total
        elif m := SGT_RE.match(ln):
            printed = ln.split(" Favours")[0]
            pub("subgroup_test", "", "chi2", m.group(1), printed)
            pub("subgroup_test", "", "df", m.group(2), printed)
            pub("subgroup_test", "", "p", m.group(3), printed)
            pub("subgroup_test", "", "i2_pct", m.group(4), printed)
    assert len(studies) == 6, studies
    assert len(published) == 4 * 10 + 4, len(published)

    def write(path, rows):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow(r)

    write(ROOT / "data" / "meld_2014_fig3.csv", studies)
    write(ROOT / "data" / "meld_2014_fig3_published.csv", published)


if __name__ == "__main__":
    main()
