"""Derive data/msc_2023_pooled.csv from the 2023 paper text (Wang et al., Stem Cell Res Ther 2023;14:267).

Every pooled estimate printed in the Results text and in Table 2 (major complications).
``printed`` is the verbatim excerpt of ../shared/papers/msc_end_stage_liver_disease_2023.txt, with
each line break of the extracted text (and the whitespace around it) replaced by one space; all
other characters (non-breaking spaces, U+2212 minus signs, en-dashes) are kept. The numbers are
parsed from that excerpt, never retyped, and NOT corrected: inconsistent printed numbers stay as
printed and are explained in ``note``.

Run from the repository root:  python data/scripts/extract_2023.py
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT.parent / "shared" / "papers" / "msc_end_stage_liver_disease_2023.txt"

SURV_DIR = ("direction: the Methods say 'In the survival analysis, the OR indicated the relative "
            "likelihood of death in each group', but the Results read OR > 1 as a higher chance of "
            "survival with MSC; the OR is recorded as printed")
ACLF_ALL = "the text says 'All included patients were diagnosed as ACLF', so this is also the ACLF subgroup"
ALB_AMBIG = ("AMBIGUOUS subgroup: the text prints one estimate 'in both the ACLF and cirrhosis "
             "subgroups' (Fig. 6); it is unclear whether it is the ACLF, the cirrhosis or the "
             "subgroup-analysis total estimate (it differs from the all-studies estimate of Fig. 5); "
             "recorded under both subgroups with the same printed text - do not pool both rows")

# (outcome, measure, time_wk, subgroup, excerpt as searched (plain spaces and '-'), note)
TEXT_ROWS = [
    ("survival", "OR", 8, "all", "at 8 (OR 2.47, 95% CI 1.38–4.43, P = 0.002)", SURV_DIR + "; " + ACLF_ALL),
    ("survival", "OR", 12, "all", "12 weeks (OR 2.21, 95% CI 1.31–3.74, P = 0.003)", SURV_DIR + "; " + ACLF_ALL),
    ("survival", "OR", 4, "all", "4 weeks (OR 4.12, 95% CI 0.52–32.53 P = 0.18)", SURV_DIR),
    ("survival", "OR", 24, "all", "24 weeks (OR 1.71, 95% CI 0.92–3.19, P = 0.09)", SURV_DIR),
    ("MELD", "MD", 0, "all", "(MD -0.04, 95% CI -0.63–0.54, p = 0.88)", ""),
    ("MELD", "MD", 4, "all", "4 weeks (MD -2.35, 95% CI -3.41- -1.29, P < 0.0001)", ""),
    ("MELD", "MD", 12, "all", "12 weeks (MD -3.41, 95% CI -5.41- -1.40, P = 0.0009)", ""),
    ("MELD", "MD", 24, "all", "24 weeks (MD -2.55, 95%CI -3.32- -1.77, P < 0.0001)", ""),
    ("MELD", "MD", 12, "ACLF", "12 weeks (MD -4.09, 95% CI -6.26- -1.92, P = 0.0002)",
     "the ACLF 4-week decrease is stated without numbers"),
    ("MELD", "MD", 24, "ACLF", "24 weeks (MD -4.12, 95% CI -6.21- -2.02, P = 0.0001)", ""),
    ("MELD", "MD", 24, "cirrhosis", "(MD -2.30, 95% CI -3.13- -1.47, P < 0.00001)", ""),
    ("ALB", "MD", 0, "all", "(MD 0.71, 95% CI 0.14– 1.28, P = 0.02)",
     "the text calls this 'Little difference' at baseline although P = 0.02"),
    ("ALB", "MD", 4, "all", "4 weeks (MD 2.08, 95% CI 1.53–2.63, P < 0.00001)", ""),
    ("ALB", "MD", 12, "all", "12 weeks (MD 2.05, 95% CI 0.43–3.66, P = 0.01)", ""),
    ("ALB", "MD", 24, "all", "24 weeks (MD 4.03, 95% CI 3.26–4.81, P < 0.00001)", ""),
    ("ALB", "MD", 4, "ACLF", "4 weeks (MD 1.88, 95% CI 1.31–2.46, P < 0.00001)", ALB_AMBIG),
    ("ALB", "MD", 4, "cirrhosis", "4 weeks (MD 1.88, 95% CI 1.31–2.46, P < 0.00001)", ALB_AMBIG),
    ("ALB", "MD", 24, "ACLF", "24 weeks (MD 4.55, 95% CI 3.20–5.91, P < 0.0001)", ALB_AMBIG),
    ("ALB", "MD", 24, "cirrhosis", "24 weeks (MD 4.55, 95% CI 3.20–5.91, P < 0.0001)", ALB_AMBIG),
    ("TB", "MD", 0, "all", "(MD -1.61, 95% CI -11.14–7.92, P = 0.74)", ""),
    ("TB", "MD", 2, "all", "2 weeks (MD -16.93, 95%CI -29.64- -4.21, p = 0.009)", ""),
    ("TB", "MD", 12, "all", "12 weeks (MD -10.79, 95%CI -21.34- -0.25, p = 0.04)", ""),
    ("TB", "MD", 12, "ACLF", "(MD -15.13, 95% CI -26.94- -3.33, P = 0.01)", ""),
    ("TB", "MD", 4, "cirrhosis", "(MD -24.10, 95% CI -43.11- -5.09, P = 0.01)", ""),
    ("PT", "MD", 0, "all", "(MD -2.17, 95% CI -2.17–0.64, P = 0.29)",
     "INCONSISTENT: the estimate equals the printed lower bound; the CI [-2.17, 0.64] is centred "
     "on -0.765 and with SE 0.717 gives P = 0.29 as printed, so the printed MD -2.17 is the likely "
     "misprint"),
    ("PT", "MD", 4, "all", "4 weeks (MD -2.69, 95% CI -4.19–1.19, P = 0.0004)",
     "INCONSISTENT: the printed CI [-4.19, 1.19] contains 0 and is not centred on -2.69, yet "
     "P = 0.0004; with the upper bound -1.19 the CI is centred on -2.69 (SE 0.765, P = 0.0004), so "
     "the upper bound's minus sign was evidently lost (the en-dash separator swallowed it)"),
    ("PT", "MD", 12, "all", "12 weeks after MSCs treatment (MD 6.40, 95% CI 3.21–9.58, P < 0.0001)", ""),
    ("PT", "MD", 24, "all", "24 weeks (MD 2.51, 95% CI -14.50–19.52, P = 0.77)", ""),
    ("ALT", "MD", 2, "all", "2 weeks (MD - 12.53, 95% CI - 20.56 to - 4.5, P = 0.002)",
     "printed with U+2212 minus signs followed by a no-break space"),
    ("AST", "MD", 4, "all", "4 weeks (MD - 10.77, 95% CI - 20.50 to - 1.04, P = 0.03)",
     "printed with U+2212 minus signs followed by a no-break space"),
    ("AST", "MD", 12, "all", "12 weeks (MD -25.48, 95%CI -48.92- -2.04, p = 0.03)", ""),
]
TABLE2 = {
    "Encephalopathy": "encephalopathy",
    "Gastrointestinal hemorrhage": "gi_haemorrhage",
    "Rash": "rash",
    "Infection": "infection",
    "HCC development": "hcc",
}
TABLE2_TEXT = {
    "encephalopathy": "(OR 0.41, 95% CI 0.18–0.91 P = 0.03)",
    "hcc": "(OR 0.58, 95% CI 0.29–1.15 P = 0.12)",
}
TABLE2_NOTES = {
    "infection": "I2 = 64% although the Methods prescribe a random-effects model above 50%; which "
                 "model was used is not printed",
}

NUM = r"-\s?\d+(?:\.\d+)?|\d+(?:\.\d+)?"
EST_RE = re.compile(
    rf"(MD|OR)\s+({NUM}),\s*95%\s?CI\s+({NUM})\s*(?:–|-|to)\s*({NUM}),?\s+[Pp]\s*([=<])\s*(\d*\.\d+)"
)
T2_RE = re.compile(r"^(.+?) (\d+) (\d+) (\d+(?:\.\d+)?) (\d+\.\d+)–(\d+\.\d+) (\d+\.\d+)$")
COLUMNS = ["outcome", "measure", "time_wk", "subgroup", "estimate", "ci_low", "ci_high",
           "p_printed", "p_op", "n_studies", "i2_pct", "est_decimals", "ci_decimals", "p_decimals",
           "printed", "note", "source"]


def normalised_text(path: Path = PAPER) -> str:
    """The paper text with every line break (and whitespace around it) replaced by one space."""
    return re.sub(r"[ \t\u00a0]*\n\s*", " ", path.read_text(encoding="utf-8"))


def find(text: str, excerpt: str) -> str:
    parts = []
    for ch in excerpt:
        if ch == " ":
            parts.append(r"[ \u00a0]+")
        elif ch == "-":
            parts.append("[-\u2212]")
        else:
            parts.append(re.escape(ch))
    hits = [m.group(0) for m in re.finditer("".join(parts), text)]
    if not hits:
        raise SystemExit(f"excerpt not found in paper: {excerpt!r}")
    return hits[0]


def plain(s: str) -> str:
    return s.replace("\u2212", "-").replace("\u00a0", " ")


def dec(s: str) -> int:
    return len(s.split(".")[1]) if "." in s else 0


def num(s: str) -> str:
    return s.replace(" ", "")


def main() -> None:
    text = normalised_text()
    rows = []
    for outcome, measure, t, sub, excerpt, note in TEXT_ROWS:
        printed = find(text, excerpt)
        m = EST_RE.search(plain(printed))
        assert m and m.group(1) == measure, printed
        _, est, lo, hi, op, p = m.groups()
        est, lo, hi = num(est), num(lo), num(hi)
        rows.append(dict(outcome=outcome, measure=measure, time_wk=t, subgroup=sub, estimate=est,
                         ci_low=lo, ci_high=hi, p_printed=p, p_op=op, n_studies="", i2_pct="",
                         est_decimals=dec(est), ci_decimals=min(dec(lo), dec(hi)),
                         p_decimals=dec(p), printed=printed, note=note,
                         source="2023 paper, Results text"))
    lines = [ln.strip() for ln in PAPER.read_text(encoding="utf-8").splitlines()]
    start = lines.index("Table 2 Meta-analysis of major complications after therapy")
    for ln in lines[start:start + 20]:
        m = T2_RE.match(ln)
        if not m or m.group(1) not in TABLE2:
            continue
        name, k, i2, est, lo, hi, p = m.groups()
        outcome = TABLE2[name]
        note = TABLE2_NOTES.get(outcome, "")
        source = "2023 paper, Table 2 'Meta-analysis of major complications after therapy'"
        if outcome in TABLE2_TEXT:
            also = find(text, TABLE2_TEXT[outcome])
            source += f"; also in the Results text: '{also}'"
        rows.append(dict(outcome=outcome, measure="OR", time_wk="", subgroup="all", estimate=est,
                         ci_low=lo, ci_high=hi, p_printed=p, p_op="=", n_studies=k, i2_pct=i2,
                         est_decimals=dec(est), ci_decimals=min(dec(lo), dec(hi)),
                         p_decimals=dec(p), printed=ln, note=note, source=source))
    assert len(rows) == len(TEXT_ROWS) + 5, len(rows)
    with open(ROOT / "data" / "msc_2023_pooled.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
