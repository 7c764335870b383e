"""A table of one-group pooled changes by time point, audited from the experimental arms.

The 2014 paper's Table 2 pools the experimental arms' change from baseline per outcome and
week (DerSimonian-Laird random effects, Meta Analyst) and prints the estimate, CI, I² and the
heterogeneity P. Where the bundled arm data hold the same studies as a printed row, the row
is recomputed from them; every other row is checked for internal consistency (estimate at the
CI midpoint). A printed row that pools more studies than are bundled is "not checkable".
"""

from __future__ import annotations

import math

import pandas as pd

from bayesmeta import audit as _audit
from bayesmeta import results
from bayesmeta.recipes import RecipeOutput


def run(analysis, published: pd.DataFrame) -> RecipeOutput:
    from bayesmeta.fits import Param

    d = analysis.design
    outc = analysis.spec.analysis.outcome
    lev = 0.95  # the printed intervals are 95%
    pub_o = published[published["outcome"] == outc]
    times = d.levels("time")
    classical = {r.fit.coords.get("time"): r.fit for r in analysis.fits(source="classical")
                 if r.fit.model in ("re", "fe")}
    bayes = {r.fit.coords.get("time"): r.fit for r in analysis.fits(source="bayesian")
             if r.fit.model == "nnhm"}
    rows, prow = [], []
    method = analysis.spec.classical.method
    for t in times:
        cell = d.subset(time=t)
        c = classical[t].result(lev)
        b = bayes.get(t)
        bs = b.summary(lev).loc[Param("mu")] if b is not None else None
        for p in pub_o[pub_o["time_wk"].astype(str) == t].itertuples():
            prow.append(results.row(
                analysis=analysis.name, outcome=outc, source="published",
                method="RE (Meta Analyst, printed)", parameter="mu", time=t,
                estimate=p.estimate, ci_low=p.ci_low, ci_high=p.ci_high, level=0.95,
                interval="published", scale=d.scale))
            same_k = int(p.n_studies) == cell.k
            for q, pv, rv, dec in (("estimate", p.estimate, c.estimate, 2),
                                   ("ci_low", p.ci_low, c.ci_low, 2),
                                   ("ci_high", p.ci_high, c.ci_high, 2),
                                   ("i2", p.i2, c.i2_q / 100, 3), ("p_het", p.p_het, c.q_p, 3)):
                if same_k:
                    v, dg = _audit._verdict(pv, rv, dec)
                    if v == "discrepancy":
                        n = cell.rows["ni"].astype(int)
                        dg += (f"; experimental arms of the bundled studies: n = "
                               f"{', '.join(map(str, n))} (total {int(n.sum())}) vs "
                               f"{int(p.n_cases)} cases printed")
                else:
                    v, dg = "not checkable", (f"the table pools {int(p.n_studies)} studies at "
                                              f"{t} wk; the bundled arm data hold {cell.k}")
                bay = {}
                if bs is not None and q in ("estimate", "ci_low", "ci_high"):
                    bay = dict(bayesian=bs["estimate"], bayesian_ci_low=bs["ci_low"],
                               bayesian_ci_high=bs["ci_high"], bayesian_method=b.method)
                rows.append(dict(
                    analysis=analysis.name, item=f"{outc} one-arm {t} wk", quantity=q, time=t,
                    printed=p.printed, published=pv, decimals=dec,
                    recomputed=rv if same_k else math.nan,
                    recomputed_from=f"experimental arms, {method} random effects",
                    verdict=v, diagnosis=dg, **bay))
    other = published[~((published["outcome"] == outc)
                        & published["time_wk"].astype(str).isin(times))]
    aud = pd.concat([_audit.frame(rows),
                     _audit.audit_published_table(other, analysis=analysis.name, measure="MC",
                                                  item_cols=("outcome", "time_wk"))],
                    ignore_index=True)
    return RecipeOutput(
        audit=aud, published=results.frame(prow),
        answers=["One-group changes mix the treatment effect with the natural course and "
                 "regression to the mean; they are not comparative evidence."],
        caption="The table's rows for this outcome recomputed from the experimental arms "
                "where the same studies are bundled; every other row checked for internal "
                "consistency (estimate vs CI midpoint).",
        columns=("item", "quantity", "published", "recomputed", "bayesian", "verdict",
                 "diagnosis"))
