"""Write data/MANIFEST.json: one entry per bundled dataset (file, sha256, schema, provenance).

The schema and provenance text live here; the sha256 values are computed from the files. Run after
any change to a CSV (from the repository root):  python data/scripts/build_manifest.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1]

PAPER_2014 = ("Meta-analysis of bone marrow-derived mesenchymal stem cells (BM-MSC) in the "
              "treatment of decompensated liver cirrhosis, (c) 2014 Baishideng Publishing Group "
              "(authors, title and journal are not in the extracted text); text in "
              "../shared/papers/bm_msc_decompensated_cirrhosis_2014.txt")
PAPER_2023 = ("Wang H, Yao W, Wang Y, et al. Stem Cell Research & Therapy (2023) 14:267, "
              "doi:10.1186/s13287-023-03494-2 (MSC therapy in end-stage liver disease: "
              "decompensated cirrhosis and ACLF); text in "
              "../shared/papers/msc_end_stage_liver_disease_2023.txt")
LIC_PAPER = ("facts (published summary numbers) transcribed from the article for verification "
             "purposes, with the printed text quoted; the article's own license applies to the text")
LIC_2023 = ("facts transcribed from an open-access article (CC BY 4.0, "
            "http://creativecommons.org/licenses/by/4.0/), printed text quoted")
LIC_METADAT = ("published summary counts from the cited article, as distributed in R package "
               "metadat 1.2.0 (GPL-2 | GPL-3); exported by tests/reference/metadat_export.R")


def col(type_, description, required=True):
    return {"type": type_, "description": description, "required": required}


STUDY = col("str", "study label")
PUB = "printed in the source"

DATASETS = {
    "meld_2014_fig3": dict(
        file="meld_2014_fig3.csv",
        description=("MELD score change from baseline, MSC vs control, arm level (mean, SD, n) for "
                     "Amer 2011 and Peng 2011 at 2, 4 and 24 weeks, with the per-study MD, 95% CI "
                     "and weight printed in the RevMan 5.1 forest plot (IV, fixed, MD)."),
        citation=PAPER_2014 + ", Figure 3",
        provenance=("Parsed from the printed forest-plot lines by data/scripts/extract_2014_fig3.py; "
                    "each row's `source` quotes its printed line."),
        license=LIC_PAPER,
        measure=["MD"],
        columns={
            "study": STUDY,
            "time": col("int", "follow-up week (2, 4, 24)"),
            "m1i": col("float", "mean MELD change, MSC arm"),
            "sd1i": col("float", "SD of MELD change, MSC arm"),
            "n1i": col("int", "patients, MSC arm"),
            "m2i": col("float", "mean MELD change, control arm"),
            "sd2i": col("float", "SD of MELD change, control arm"),
            "n2i": col("int", "patients, control arm"),
            "pub_md": col("float", "per-study mean difference " + PUB + " (2 decimals)"),
            "pub_ci_low": col("float", "lower 95% CI bound " + PUB),
            "pub_ci_high": col("float", "upper 95% CI bound " + PUB),
            "pub_weight_pct": col("float", "IV fixed-effect weight in % " + PUB + " (1 decimal)"),
            "source": col("str", "provenance with the verbatim printed line"),
        },
        findings=[
            "Peng L 2011, 24 wk: printed MD -3.94 (a copy of the 4-wk value) while its arm data give "
            "-14.91 - (-11.25) = -3.66 and its printed CI [-6.34, -0.98] is centred on -3.66.",
            "The 24-wk subgroup is labelled '1.1.2', the same label as the 4-wk subgroup.",
            "Study is labelled 'Amer ME 2011' in the figure but 'Amer et al 2010' in Table 1.",
        ],
    ),
    "meld_2014_fig3_published": dict(
        file="meld_2014_fig3_published.csv",
        description=("Printed subtotal (per week), overall and subgroup-difference statistics of the "
                     "2014 Figure 3 forest plot (MD, CI, weight, chi2, df, P, I2, Z), one number a "
                     "row with its printed decimals and verbatim line."),
        citation=PAPER_2014 + ", Figure 3",
        provenance="Parsed from the printed lines by data/scripts/extract_2014_fig3.py.",
        license=LIC_PAPER,
        measure=["MD"],
        columns={
            "level": col("str", "subtotal | overall | subgroup_test"),
            "time": col("int", "week for subtotals; blank otherwise", required=False),
            "quantity": col("str", "md, ci_low, ci_high, weight_pct, chi2, df, p_het, i2_pct, z, p"),
            "value": col("float", "the printed number (a '<' bound for op '<')"),
            "decimals": col("int", "decimals printed"),
            "printed": col("str", "the verbatim printed line"),
            "op": col("str", "'=' or '<' (P printed as an upper bound)"),
            "note": col("str", "printed oddity, if any", required=False),
        },
        findings=[
            "Results text: 'total of mean difference was 1.68, 95%CI: -2.42-(-0.94)' (sign dropped) "
            "vs figure -1.68.",
            "Overall effect P printed as '< 0.00001'.",
            "The overall total is printed with the label 'Subtotal (95%CI)'.",
            "24-wk subtotal MD printed '- 2.01' (space after the minus sign).",
        ],
    ),
    "msc_2014_table1": dict(
        file="msc_2014_table1.csv",
        description="Characteristics of the 5 studies included in the 2014 meta-analysis (Table 1).",
        citation=PAPER_2014 + ", Table 1",
        provenance=("Transcribed by hand (the text extraction breaks cells across lines) in "
                    "data/scripts/extract_2014_tables.py; cells kept as printed."),
        license=LIC_PAPER,
        measure=[],
        columns={
            "study": STUDY,
            "ref": col("int", "reference number in the paper"),
            "year": col("int", "year as printed in Table 1"),
            "country": col("str", "country"),
            "purity_assessment": col("str", "assessment of purity, as printed"),
            "cells_and_volume": col("str", "type of infused cells and volume, as printed"),
            "infused_cells": col("str", "infused cells (n), as printed (superscripts lost)"),
            "infused_cells_n": col("float", "infused cells as a number", required=False),
            "patients_etiology": col("str", "patients and disease etiology, as printed"),
            "n_msc": col("int", "patients treated with MSC"),
            "n_control": col("int", "control patients (blank: single-arm study)", required=False),
            "frequency": col("str", "frequency of transfusions"),
            "route": col("str", "route of transfusion"),
            "note": col("str", "transcription notes", required=False),
            "source": col("str", "provenance"),
        },
        findings=[
            "Table 1 gives Amer et al. year 2010; Figure 3 labels the study 'Amer ME 2011'.",
            "Patient counts in Table 1 add to 79 (6+15, 4, 4, 20+20, 10); the text says 'a total of "
            "80 patients'.",
            "Cell counts printed '31.7 × 106' etc.: superscript exponents lost in extraction (10^6).",
        ],
    ),
    "msc_2014_table2_onearm": dict(
        file="msc_2014_table2_onearm.csv",
        description=("One-arm random-effects pooled change from baseline (MSC arm only) of ALB, ALT, "
                     "TBIL, PT and MELD by week (Meta-Analyst software), 2014 Table 2."),
        citation=PAPER_2014 + ", Table 2",
        provenance=("Parsed from the printed rows by data/scripts/extract_2014_tables.py; printed "
                    "intervals 'low-high' split at the separating hyphen ('-9.22--0.33' = -9.22 to "
                    "-0.33)."),
        license=LIC_PAPER,
        measure=["MC"],
        columns={
            "outcome": col("str", "ALB | ALT | TBIL | PT | MELD"),
            "unit": col("str", "unit as printed (blank if none)", required=False),
            "time_wk": col("int", "follow-up week"),
            "n_studies": col("int", "number of studies"),
            "n_cases": col("int", "number of cases"),
            "model": col("str", "RE (random effects)"),
            "i2": col("float", "I2 printed as a fraction (0.413 = 41.3%)"),
            "p_het": col("float", "heterogeneity P (0.000 printed = < 0.0005)"),
            "estimate": col("float", "pooled change from baseline"),
            "ci_low": col("float", "lower 95% CI bound"),
            "ci_high": col("float", "upper 95% CI bound"),
            "printed": col("str", "the verbatim printed row"),
            "note": col("str", "finding from checking the row", required=False),
            "source": col("str", "provenance"),
        },
        findings=[
            "ALB 8 wk: estimate -0.28 but CI (-3.31, 2.85) centred on -0.23.",
            "ALT 48 wk: estimate -18.18 but CI (-44.03, 7.06) centred on -18.485 (7.67 would be "
            "symmetric).",
            "TBIL 4 wk: estimate -69.34 but CI (-191.12, 53.45) centred on -68.835.",
            "ALB 24 wk: p_het 0.185 vs 0.182 implied by I2 = 0.413 with df = 2 (small).",
        ],
    ),
    "msc_2023_pooled": dict(
        file="msc_2023_pooled.csv",
        description=("Every pooled estimate printed in the 2023 meta-analysis (Results text and "
                     "Table 2): survival OR by week, MD of MELD, ALB, TB, PT, ALT, AST by week "
                     "(0 = baseline) overall and by ACLF/cirrhosis subgroup, complication ORs."),
        citation=PAPER_2023,
        provenance=("Parsed from verbatim excerpts by data/scripts/extract_2023.py (line breaks "
                    "replaced by one space; no-break spaces, U+2212 minus and en-dashes kept). "
                    "Numbers are NOT corrected; see `note`."),
        license=LIC_2023,
        measure=["OR", "MD"],
        columns={
            "outcome": col("str", "survival, MELD, ALB, TB, PT, INR, ALT, AST, encephalopathy, "
                                  "gi_haemorrhage, rash, infection, hcc"),
            "measure": col("str", "OR or MD"),
            "time_wk": col("int", "week; 0 = baseline; blank for complications", required=False),
            "subgroup": col("str", "all | ACLF | cirrhosis"),
            "estimate": col("float", "printed estimate"),
            "ci_low": col("float", "printed lower 95% CI bound"),
            "ci_high": col("float", "printed upper 95% CI bound"),
            "p_printed": col("float", "printed P (a bound if p_op is '<')"),
            "p_op": col("str", "'=' or '<'"),
            "n_studies": col("int", "number of studies (Table 2 only)", required=False),
            "i2_pct": col("float", "I2 in % (Table 2 only)", required=False),
            "est_decimals": col("int", "decimals printed for the estimate"),
            "ci_decimals": col("int", "fewest decimals printed for a CI bound"),
            "p_decimals": col("int", "decimals printed for P"),
            "printed": col("str", "verbatim printed excerpt"),
            "note": col("str", "findings and ambiguities", required=False),
            "source": col("str", "provenance"),
        },
        findings=[
            "PT baseline: 'MD -2.17, 95% CI -2.17–0.64, P = 0.29' - estimate equals the lower bound; "
            "CI and P agree with each other (midpoint -0.765), so the MD is the likely misprint.",
            "PT 4 wk: 'MD -2.69, 95% CI -4.19–1.19, P = 0.0004' - the upper bound's minus sign is "
            "evidently lost (-1.19 makes CI and P consistent).",
            "Survival OR direction: Methods define OR as relative likelihood of death; Results read "
            "OR > 1 as survival benefit.",
            "ALB 4 and 24 wk subgroup estimates (MD 1.88 and 4.55) are printed once 'in both the "
            "ACLF and cirrhosis subgroups': ambiguous, recorded under both subgroups.",
            "Survival: 'All included patients were diagnosed as ACLF', so subgroup all = ACLF.",
            "ALB baseline MD 0.71 (P = 0.02) is described as 'Little difference'.",
            "INR and the MELD ACLF 4-wk result are described without numbers (no rows).",
        ],
    ),
    "bcg": dict(
        file="bcg.csv",
        description=("BCG vaccine against tuberculosis: 13 trials, 2x2 tables (vaccinated = group 1) "
                     "with absolute latitude and allocation method as moderators."),
        citation=("Colditz GA, Brewer TF, Berkey CS, et al. Efficacy of BCG vaccine in the "
                  "prevention of tuberculosis: meta-analysis of the published literature. JAMA "
                  "1994;271(9):698-702. doi:10.1001/jama.1994.03510330076038 (metadat dat.bcg)"),
        provenance="Rscript tests/reference/metadat_export.R (R 4.2.2, metadat 1.2.0)",
        license=LIC_METADAT,
        measure=["RR", "OR", "RD"],
        columns={
            "study": col("str", "author and year"),
            "trial": col("int", "trial number"),
            "author": col("str", "author(s)"),
            "year": col("int", "publication year"),
            "ai": col("int", "TB positive, vaccinated (tpos)"),
            "bi": col("int", "TB negative, vaccinated (tneg)"),
            "ci": col("int", "TB positive, control (cpos)"),
            "di": col("int", "TB negative, control (cneg)"),
            "n1i": col("int", "vaccinated total"),
            "n2i": col("int", "control total"),
            "ablat": col("int", "absolute latitude (degrees)"),
            "alloc": col("str", "allocation: random, alternate or systematic"),
        },
        findings=[],
    ),
    "pagliaro1992": dict(
        file="pagliaro1992.csv",
        description=("Prevention of first bleeding in cirrhosis: each active treatment "
                     "(beta-blockers or sclerotherapy, `subgroup`) vs the same trial's control, "
                     "2x2 counts; 26 trials, 28 contrasts (2 three-arm trials share their control)."),
        citation=("Pagliaro L, D'Amico G, Sörensen TIA, et al. Prevention of first bleeding in "
                  "cirrhosis: a meta-analysis of randomized trials of nonsurgical treatment. Ann "
                  "Intern Med 1992;117(1):59-70. doi:10.7326/0003-4819-117-1-59 "
                  "(metadat dat.pagliaro1992)"),
        provenance="Rscript tests/reference/metadat_export.R (R 4.2.2, metadat 1.2.0)",
        license=LIC_METADAT,
        measure=["OR", "RR", "RD"],
        columns={
            "study": col("int", "trial id"),
            "subgroup": col("str", "active treatment: beta-blockers or sclerotherapy"),
            "ai": col("int", "patients with first bleeding, active arm"),
            "n1i": col("int", "patients, active arm"),
            "ci": col("int", "patients with first bleeding, control arm"),
            "n2i": col("int", "patients, control arm"),
        },
        findings=["Trials 1 and 2 have three arms: their control arm appears in two contrasts "
                  "(correlated; analyse by subgroup, not pooled across)."],
    ),
    "pagliaro1992_arms": dict(
        file="pagliaro1992_arms.csv",
        description="Pagliaro 1992, arm-level long format as in metadat (54 arms, 26 trials).",
        citation=("Pagliaro L, et al. Ann Intern Med 1992;117(1):59-70. "
                  "doi:10.7326/0003-4819-117-1-59 (metadat dat.pagliaro1992)"),
        provenance="Rscript tests/reference/metadat_export.R (R 4.2.2, metadat 1.2.0)",
        license=LIC_METADAT,
        measure=[],
        unique=["study", "trt"],
        columns={
            "study": col("int", "trial id"),
            "trt": col("str", "beta-blockers, sclerotherapy or control"),
            "xi": col("int", "patients with first bleeding"),
            "ni": col("int", "patients treated"),
        },
        findings=[],
    ),
    "nielweise2007": dict(
        file="nielweise2007.csv",
        description=("Anti-infective-treated vs standard central venous catheters, catheter-related "
                     "bloodstream infections: 18 trials, sparse 2x2 (6 with a zero cell, 1 double "
                     "zero: Yucel 2004)."),
        citation=("Niel-Weise BS, Stijnen T, van den Broek PJ. Anti-infective-treated central "
                  "venous catheters: a systematic review of randomized controlled trials. Intensive "
                  "Care Med 2007;33(12):2058-2068. doi:10.1007/s00134-007-0897-3 "
                  "(metadat dat.nielweise2007)"),
        provenance="Rscript tests/reference/metadat_export.R (R 4.2.2, metadat 1.2.0)",
        license=LIC_METADAT,
        measure=["OR", "RR", "RD", "PETO"],
        columns={
            "study": col("str", "author and year"),
            "author": col("str", "first author"),
            "year": col("int", "publication year"),
            "ai": col("int", "infections, anti-infective catheter"),
            "n1i": col("int", "patients, anti-infective catheter"),
            "ci": col("int", "infections, standard catheter"),
            "n2i": col("int", "patients, standard catheter"),
        },
        findings=[],
    ),
    "hahn2001": dict(
        file="hahn2001.csv",
        description=("Reduced vs standard oral rehydration solution, unscheduled IV infusion in "
                     "children: 12 trials, very sparse 2x2 (4 with a zero cell, 3 double zero)."),
        citation=("Hahn S, Kim Y, Garner P. Reduced osmolarity oral rehydration solution for "
                  "treating dehydration due to diarrhoea in children: systematic review. BMJ "
                  "2001;323(7304):81-85. doi:10.1136/bmj.323.7304.81 (metadat dat.hahn2001)"),
        provenance="Rscript tests/reference/metadat_export.R (R 4.2.2, metadat 1.2.0)",
        license=LIC_METADAT,
        measure=["OR", "RR", "RD", "PETO"],
        columns={
            "study": col("str", "trial name and year (as in metadat)"),
            "ai": col("int", "children needing unscheduled IV infusion, reduced ORS"),
            "n1i": col("int", "children, reduced ORS"),
            "ci": col("int", "children needing unscheduled IV infusion, standard ORS"),
            "n2i": col("int", "children, standard ORS"),
        },
        findings=["Study labels kept as in metadat, including its spellings 'Banhladesh' and "
                  "'Egypt 1886a'."],
    ),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    manifest = {"version": 1, "datasets": {}}
    for name, entry in DATASETS.items():
        path = DATA / entry["file"]
        manifest["datasets"][name] = {"name": name, "file": entry["file"], "sha256": sha256(path),
                                      **{k: v for k, v in entry.items() if k != "file"}}
    (DATA / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                        encoding="utf-8")


if __name__ == "__main__":
    main()
