"""Published-number audit (bayesmeta.audit; the 2014 Figure 3 recipe in
bayesmeta.recipes.revman_forest).

References: published numbers as printed in the papers (2014 Figure 3, 2014 Table 2, 2023
Results text and Table 2; the bundled CSVs quote each printed line), and arithmetic on the
printed arm data done by hand in the comments.
"""

import pandas as pd
import pytest

from bayesmeta import audit, classical
from bayesmeta.datasets import dataset_path
from bayesmeta.effect_sizes import escalc
from bayesmeta.recipes.revman_forest import audit_fig3


def test_agrees_uses_printed_precision():
    # P printed "0.05" with 2 decimals covers [0.045, 0.055]
    assert audit.agrees(0.05, 0.0477, 2)
    assert not audit.agrees(0.05, 0.0449, 2)
    assert audit.agrees(0.00001, 8e-6, 5, "<") and not audit.agrees(0.00001, 2e-5, 5, "<")


@pytest.fixture(scope="module")
def fig3_audit():
    arms = pd.read_csv(dataset_path("meld_2014_fig3"))
    es = escalc("MD", arms)
    labels = [f"{s}, {t} wk" for s, t in zip(es["study"], es["time"])]
    sub = classical.subgroup_analysis(es["yi"], es["vi"], es["time"].astype(str).tolist(),
                                      studies=labels, method="FE", preset="revman5",
                                      measure="MD")
    pub = pd.read_csv(dataset_path("meld_2014_fig3_published"))
    text = pd.read_csv(dataset_path("meld_2014_fig3"), dtype=str, keep_default_na=False)
    return audit_fig3(es, pub, sub, labels=labels, arm_text=text), pub


def test_every_printed_number_has_a_verdict(fig3_audit):
    aud, pub = fig3_audit
    # 6 study rows x (md, ci_low, ci_high, weight) + every printed pooled number + the text's 1.68
    assert len(aud) == 6 * 4 + len(pub) + 1
    assert aud["verdict"].ne("").all() and aud["recomputed"].notna().all()
    assert list(aud.columns) == list(audit.COLUMNS)


def test_peng_24wk_md_is_a_transcription_error(fig3_audit):
    """Printed MD -3.94 (Figure 3); arm data -14.91 - (-11.25) = -3.66; printed CI
    [-6.34, -0.98] has midpoint -3.66."""
    aud, _ = fig3_audit
    r = aud[(aud["item"] == "Peng L 2011, 24 wk") & (aud["quantity"] == "md")].iloc[0]
    assert r["verdict"] == "discrepancy"
    assert r["recomputed"] == pytest.approx(-3.66, abs=1e-12)
    assert "centred on -3.66" in r["diagnosis"]
    ci = aud[(aud["item"] == "Peng L 2011, 24 wk") & aud["quantity"].isin(["ci_low", "ci_high"])]
    assert ci["verdict"].str.startswith("reproduced").all()


def test_text_overall_sign_dropped(fig3_audit):
    """Results text: 'total of mean difference was 1.68'; Figure 3 prints -1.68."""
    aud, _ = fig3_audit
    r = aud[aud["item"] == "overall MD, Results text"].iloc[0]
    assert r["verdict"] == "discrepancy" and "sign is dropped" in r["diagnosis"]
    fig = aud[(aud["item"] == "overall (all weeks pooled)") & (aud["quantity"] == "md")].iloc[0]
    assert fig["verdict"] == "reproduced"


def test_subtotals_reproduced(fig3_audit):
    """Printed subtotals -1.23, -1.87, -2.01 (Figure 3) from the arm data, at printed
    precision or within the rounding of the printed arm SDs."""
    aud, _ = fig3_audit
    sub = aud[aud["item"].str.startswith("subtotal") & (aud["quantity"] == "md")]
    assert len(sub) == 3 and sub["verdict"].str.startswith("reproduced").all()


def test_2023_pt_rows_are_inconsistent():
    """2023 Results text: PT baseline 'MD -2.17, 95% CI -2.17-0.64, P = 0.29' (estimate equals
    its lower bound) and PT 4 wk 'MD -2.69, 95% CI -4.19-1.19, P = 0.0004' (CI contains 0 but
    P = 0.0004: the upper bound's minus sign is lost)."""
    df = pd.read_csv(dataset_path("msc_2023_pooled"))
    aud = audit.audit_published_table(df, analysis="t", measure_col="measure",
                                      item_cols=("outcome", "time_wk", "subgroup"))
    base = aud[aud["item"] == "PT 0 all"].iloc[0]
    assert base["verdict"] == "inconsistent" and "equals its own CI lower bound" in base["diagnosis"]
    w4 = aud[aud["item"] == "PT 4 all"].iloc[0]
    assert w4["verdict"] == "inconsistent" and "P disagrees" in w4["diagnosis"]
    ok = aud[~aud["item"].isin(["PT 0 all", "PT 4 all"])]
    assert (ok["verdict"] == "reproduced").all(), ok[ok["verdict"] != "reproduced"]


def test_2014_table2_asymmetric_rows():
    """2014 Table 2: ALB 8 wk -0.28 [-3.31, 2.85] has midpoint -0.23 (asymmetric beyond
    rounding); MELD rows are symmetric."""
    t = pd.read_csv(dataset_path("msc_2014_table2_onearm"))
    aud = audit.audit_published_table(t, analysis="t", measure="MC",
                                      item_cols=("outcome", "time_wk"))
    assert aud.set_index("item").loc["ALB 8", "verdict"] == "inconsistent"
    assert (aud[aud["item"].str.startswith("MELD")]["verdict"] == "reproduced").all()
