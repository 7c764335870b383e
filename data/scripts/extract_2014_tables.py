"""Derive data/msc_2014_table1.csv and data/msc_2014_table2_onearm.csv from the 2014 paper text.

Table 2 rows are parsed from the printed lines (kept verbatim in ``printed``). Printed intervals are
written "low-high" with a hyphen as separator, so "-9.22--0.33" is -9.22 to -0.33 and "-3.31-2.85" is
-3.31 to 2.85. Table 1's text extraction is broken across lines, so its cells are transcribed by hand
from ../shared/papers/bm_msc_decompensated_cirrhosis_2014.txt (lines ~283-340) and each printed cell
is kept as printed; superscripts were lost in extraction ("31.7 × 106" is 31.7 × 10^6).

Run from the repository root:  python data/scripts/extract_2014_tables.py
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT.parent / "shared" / "papers" / "bm_msc_decompensated_cirrhosis_2014.txt"

SECTIONS = {
    "Change from baseline of albumin levels (g/L)": ("ALB", "g/L"),
    "Change from baseline of ALT levels (IU/L)": ("ALT", "IU/L"),
    "Change from baseline of TBIL levels": ("TBIL", ""),
    "Change from baseline of PT values (s)": ("PT", "s"),
    "Change from baseline MELD scores": ("MELD", "score"),
}
ROW_RE = re.compile(
    r"^(\d+) wk (\d+)\s+(\d+) (RE) (\d\.\d+) (\d\.\d+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)-(-?\d+\.\d+)$"
)
# Findings from checking each printed row (estimate vs CI midpoint; P vs I²-implied Q = df/(1-I²)).
NOTES = {
    ("ALB", 8): "estimate -0.28 is not the CI midpoint (-3.31+2.85)/2 = -0.23; asymmetric beyond rounding",
    ("ALB", 24): "p_het 0.185 vs 0.182 implied by I2 0.413 with df 2 (Q = df/(1-I2)); small",
    ("ALT", 48): "estimate -18.18 is not the CI midpoint (-44.03+7.06)/2 = -18.485; upper bound 7.06 "
                 "may be a typo (symmetric bound would be 7.67)",
    ("TBIL", 4): "estimate -69.34 is not the CI midpoint (-191.12+53.45)/2 = -68.835; asymmetric "
                 "beyond rounding",
}

TABLE1_COLS = ["study", "ref", "year", "country", "purity_assessment", "cells_and_volume",
               "infused_cells", "infused_cells_n", "patients_etiology", "n_msc", "n_control",
               "frequency", "route", "note", "source"]
TABLE1 = [
    dict(study="Peng 2011", ref=19, year=2011, country="China", purity_assessment="Flow cytometry",
         cells_and_volume="BMNCs (MSCs) from iliac crest (120 mL)", infused_cells="NA",
         infused_cells_n="", patients_etiology="6 HBV + 15ctrl. after 48 wk follow-up", n_msc=6,
         n_control=15, frequency="Once", route="Hepatic artery", note=""),
    dict(study="Mohamadnejad 2007a", ref=20, year=2007, country="Iran",
         purity_assessment="Fluorescence-assisted cell sorting flowcytometry",
         cells_and_volume="Cultured bone marrow-derived MSCs (80-100 mL)",
         infused_cells="31.7 × 106 (mean)", infused_cells_n="3.17e7",
         patients_etiology="3 Cryptogenic, 1 AIH", n_msc=4, n_control="", frequency="Once",
         route="Cubital vein of the arm over 30 min",
         note="'106' is 10^6 (superscript lost in extraction); one-arm study"),
    dict(study="Mohamadnejad 2007b", ref=21, year=2007, country="Iran",
         purity_assessment="FACS Calibur flow cytometer",
         cells_and_volume="Bone marrow-derived CD34+ Cells from iliac crest (200 mL)",
         infused_cells="5.25 × 106 (mean)", infused_cells_n="5.25e6",
         patients_etiology="1 HBV, 1 PBC, 1 AIH1, 1 cryptogenic", n_msc=4, n_control="",
         frequency="Once", route="Hepatic artery",
         note="'106' is 10^6 (superscript lost); 'AIH1' carries footnote 1 (progressive renal "
              "failure, type 1 hepatorenal syndrome, died of liver failure); one-arm study"),
    dict(study="Amer 2010", ref=18, year=2010, country="Egypt", purity_assessment="Immunophenotyping",
         cells_and_volume="Cultured bone-marrow derived MSCs stimulated to hepatic lineage using "
                          "HGF-containing medium (95 ± 25 mL)",
         infused_cells="2 × 108", infused_cells_n="2e8", patients_etiology="20 HCV + 20 ctrl",
         n_msc=20, n_control=20, frequency="Once", route="Intrasplenic or intrahepatic",
         note="'108' is 10^8 (superscript lost); Table 1 gives year 2010 but Figure 3 labels the "
              "study 'Amer ME 2011'"),
    dict(study="Lyra 2007", ref=22, year=2007, country="Brazil", purity_assessment="NA",
         cells_and_volume="BMNCs (MSCs) from iliac crest (maximum 50 mL)", infused_cells="1 × 108",
         infused_cells_n="1e8", patients_etiology="10 NA", n_msc=10, n_control="", frequency="Once",
         route="Hepatic artery", note="'108' is 10^8 (superscript lost); etiology not available"),
]


def main() -> None:
    lines = [ln.strip() for ln in PAPER.read_text(encoding="utf-8").splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Table 2  Albumin, total bilirubin"))
    rows, outcome, unit = [], None, None
    for ln in lines[start:start + 40]:
        if ln in SECTIONS:
            outcome, unit = SECTIONS[ln]
            section = ln
        elif m := ROW_RE.match(ln):
            t, k, n, model, i2, p, est, lo, hi = m.groups()
            rows.append(dict(outcome=outcome, unit=unit, time_wk=int(t), n_studies=int(k),
                             n_cases=int(n), model=model, i2=i2, p_het=p, estimate=est,
                             ci_low=lo, ci_high=hi, printed=ln,
                             note=NOTES.get((outcome, int(t)), ""),
                             source=f"2014 paper, Table 2, section '{section}'"))
        elif ln.startswith("PT: Prothrombin"):
            break
    assert len(rows) == 18, len(rows)
    with open(ROOT / "data" / "msc_2014_table2_onearm.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    with open(ROOT / "data" / "msc_2014_table1.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=TABLE1_COLS, lineterminator="\n")
        w.writeheader()
        for r in TABLE1:
            w.writerow({**r, "source": "2014 paper, Table 1 'Characteristics of the included studies'"})


if __name__ == "__main__":
    main()
