"""RevMan 5 forest plot of mean differences by time point, audited from its arm data.

The 2014 paper's Figure 3 prints, per study and week, the arm means/SDs/n with the MD, 95% CI
and weight, then per week the subtotal with heterogeneity and its Z test, the overall that
pools every row, and the test for subgroup differences. Every printed number is recomputed
from the bundled arm data with RevMan 5's settings (inverse-variance fixed effect, Wald z,
Q-based I²). Where the printed arm means and SDs are themselves rounded, a number that only
agrees within that rounding is reported as such (:func:`rounding_ranges`).

The overall of a forest plot whose subgroups are time points pools the same patients once per
time point; it is recomputed here only to audit the printed number. The analysis itself never
reports it (:mod:`bayesmeta.pipeline`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bayesmeta import results
from bayesmeta.audit import Z975, _verdict, agrees, frame, tolerance
from bayesmeta.recipes import RecipeOutput

ARM_COLUMNS = ("m1i", "sd1i", "m2i", "sd2i")


def _decimals_of(text: str) -> int:
    t = str(text).strip()
    return len(t.split(".", 1)[1]) if "." in t else 0


def _fe_quantities(y, v, times) -> dict:
    """RevMan 5 IV fixed-effect numbers for arrays y, v of shape (n_draws, k)."""
    from scipy import stats as st

    w = 1.0 / v
    out = {}
    z = Z975
    for i in range(y.shape[1]):
        se = np.sqrt(v[:, i])
        out[("study", i, "md")] = y[:, i]
        out[("study", i, "ci_low")] = y[:, i] - z * se
        out[("study", i, "ci_high")] = y[:, i] + z * se
        out[("study", i, "weight_pct")] = 100 * w[:, i] / w.sum(axis=1)
    levels = list(dict.fromkeys(times))
    ests, ses = [], []
    for lev, mask in [(t, np.array([x == t for x in times])) for t in levels] + \
            [("", np.ones(len(times), bool))]:
        ww, yy = w[:, mask], y[:, mask]
        est = (ww * yy).sum(axis=1) / ww.sum(axis=1)
        se = 1 / np.sqrt(ww.sum(axis=1))
        q = (ww * (yy - est[:, None]) ** 2).sum(axis=1)
        df = mask.sum() - 1
        key = "overall" if lev == "" else "subtotal"
        d = {"md": est, "ci_low": est - z * se, "ci_high": est + z * se,
             "weight_pct": 100 * ww.sum(axis=1) / w.sum(axis=1), "chi2": q,
             "df": np.full_like(q, df), "p_het": st.chi2.sf(q, df),
             "i2_pct": np.where(q > 0, np.maximum(0, (q - df) / np.where(q > 0, q, 1)) * 100, 0),
             "z": np.abs(est) / se, "p": 2 * st.norm.sf(np.abs(est) / se)}
        for qn, val in d.items():
            out[(key, lev, qn)] = val
        if lev != "":
            ests.append(est)
            ses.append(se)
    E, S = np.column_stack(ests), np.column_stack(ses)
    W = 1 / S ** 2
    mean = (W * E).sum(axis=1) / W.sum(axis=1)
    qb = (W * (E - mean[:, None]) ** 2).sum(axis=1)
    dfb = E.shape[1] - 1
    out[("subgroup_test", "", "chi2")] = qb
    out[("subgroup_test", "", "df")] = np.full_like(qb, dfb)
    out[("subgroup_test", "", "p")] = st.chi2.sf(qb, dfb)
    out[("subgroup_test", "", "i2_pct")] = np.where(qb > 0, np.maximum(0, (qb - dfb) / np.where(
        qb > 0, qb, 1)) * 100, 0)
    return out


def rounding_ranges(arm_text: pd.DataFrame, *, time_col="time", n_draws: int = 4000,
                    seed: int = 20140301) -> dict:
    """Range of every RevMan number when the printed arm means/SDs vary within their rounding.

    ``arm_text`` holds the arm columns as printed text (to know each number's decimals). Each
    mean and SD is drawn uniformly within ± half a unit of its last printed digit (``n_draws``
    draws plus the printed values and the 2^4 corners of each row's box, fixed seed); returns
    key -> (min, max) for the keys of the RevMan quantities.
    """
    rng = np.random.default_rng(seed)
    k = len(arm_text)
    vals = {c: arm_text[c].astype(float).to_numpy() for c in ARM_COLUMNS}
    half = {c: np.array([0.5 * 10.0 ** -_decimals_of(t) for t in arm_text[c]])
            for c in ARM_COLUMNS}
    draws = {c: vals[c] + rng.uniform(-1, 1, size=(n_draws, k)) * half[c] for c in ARM_COLUMNS}
    corners = np.array(np.meshgrid(*[[-1, 1]] * 4)).reshape(4, -1).T  # 16 sign patterns
    for c_i, c in enumerate(ARM_COLUMNS):
        extra = np.vstack([vals[c]] + [vals[c] + sgn[c_i] * half[c] for sgn in corners])
        draws[c] = np.vstack([extra, draws[c]])
    n1 = arm_text["n1i"].astype(float).to_numpy()
    n2 = arm_text["n2i"].astype(float).to_numpy()
    y = draws["m1i"] - draws["m2i"]
    v = draws["sd1i"] ** 2 / n1 + draws["sd2i"] ** 2 / n2
    q = _fe_quantities(y, v, [str(t) for t in arm_text[time_col]])
    return {key: (float(np.min(a)), float(np.max(a))) for key, a in q.items()}


def _verdict_rounded(pub, rec, dec, op, rng, diag_if_bad=""):
    """Exact verdict, else 'reproduced within input rounding' when the range allows it."""
    v, d = _verdict(pub, rec, dec, op, "")
    if v.startswith("reproduced") or rng is None:
        return (v, d) if v.startswith("reproduced") else ("discrepancy", diag_if_bad or d)
    lo, hi = rng
    tol = tolerance(dec)
    ok = lo < pub + 1e-15 if op == "<" else (hi >= pub - tol and lo <= pub + tol)
    if ok and not diag_if_bad:
        return ("reproduced within input rounding",
                f"from the arm data as printed {rec:.{int(dec) + 2}f}; the printed arm means and "
                f"SDs are themselves rounded, and within their rounding this number ranges "
                f"{lo:.{int(dec) + 2}f} to {hi:.{int(dec) + 2}f}, which covers the printed "
                f"{pub:g}")
    return "discrepancy", (diag_if_bad or d) + (
        f" (not explained by rounding of the printed arm data: range {lo:.{int(dec) + 2}f} to "
        f"{hi:.{int(dec) + 2}f})")

def audit_fig3(arms: pd.DataFrame, published: pd.DataFrame, sub, *, labels, analysis: str = "",
               bayes_subtotal: dict | None = None, bayes_theta: dict | None = None,
               bayes_overall: tuple | None = None, text_overall: float | None = -1.68,
               arm_text: pd.DataFrame | None = None) -> pd.DataFrame:
    """Audit every printed number of the 2014 Figure 3 against its own arm data.

    Parameters
    ----------
    arms : DataFrame
        ``meld_2014_fig3`` with ``yi``/``vi`` added (MD of MSC minus control) and columns
        ``pub_md, pub_ci_low, pub_ci_high, pub_weight_pct``.
    published : DataFrame
        ``meld_2014_fig3_published`` (level, time, quantity, value, decimals, printed, op).
    sub : bayesmeta.classical.SubgroupResult
        Fixed-effect (RevMan 5) subgroup analysis by week; ``sub.subgroups`` keyed by the
        week label as text (``"2"``, ``"4"``, ``"24"``).
    labels : list of str
        Study labels used in ``sub`` (one per row of ``arms``, unique).
    bayes_subtotal : dict, optional
        week label -> (mean, lower, upper, method) of the Bayesian pooled effect.
    bayes_theta : dict, optional
        study label -> (mean, lower, upper, method) of the Bayesian shrinkage estimate.
    bayes_overall : tuple, optional
        (mean, lower, upper, method) of the Bayesian overall effect (nested model).
    text_overall : float, optional
        The overall MD as printed in the Results *text* (the paper prints '1.68').
    """
    rows = []
    ranges = rounding_ranges(arm_text) if arm_text is not None else {}
    bayes_subtotal = bayes_subtotal or {}
    bayes_theta = bayes_theta or {}
    w_all = sub.overall.weights
    for i, r in enumerate(arms.itertuples()):
        lab = labels[i]
        yi, se = float(r.yi), math.sqrt(float(r.vi))
        lo, hi = yi - Z975 * se, yi + Z975 * se
        b = bayes_theta.get(lab)
        bay = dict(bayesian=b[0], bayesian_ci_low=b[1], bayesian_ci_high=b[2],
                   bayesian_method=b[3]) if b else {}
        printed = str(r.source).split("printed: ", 1)[-1].split("; note", 1)[0]
        for q, pub, rec in (("md", r.pub_md, yi), ("ci_low", r.pub_ci_low, lo),
                            ("ci_high", r.pub_ci_high, hi),
                            ("weight_pct", r.pub_weight_pct, float(w_all.iloc[i]))):
            dec = 1 if q == "weight_pct" else 2
            diag = ""
            if q == "md" and not agrees(pub, rec, dec):
                mid = (r.pub_ci_low + r.pub_ci_high) / 2
                if agrees(mid, rec, dec):
                    same = arms[(arms["study"] == r.study) & (arms["pub_md"] == pub)
                                & (arms["time"] != r.time)]
                    rep = (f"; {pub:g} is the value printed for week "
                           f"{', '.join(str(t) for t in same['time'])}" if len(same) else "")
                    diag = (f"printed MD {pub:g} disagrees with its own arm data "
                            f"({r.m1i:g} − ({r.m2i:g}) = {yi:.2f}), while the printed CI "
                            f"[{r.pub_ci_low:g}, {r.pub_ci_high:g}] is centred on {mid:.2f}, "
                            f"i.e. on the arm-data value: a transcription error in the MD"
                            f"{rep}. The pooled subtotal uses the arm data.")
            v, d = _verdict_rounded(pub, rec, dec, "=", ranges.get(("study", i, q)), diag)
            rows.append(dict(analysis=analysis, item=f"{r.study}, {r.time} wk", quantity=q,
                             time=str(r.time), printed=printed, published=pub, decimals=dec,
                             recomputed=rec, recomputed_from="arm data (IV, fixed, MD)",
                             verdict=v, diagnosis=d, **(bay if q in ("md", "ci_low", "ci_high")
                                                        else {})))
    for p in published.itertuples():
        level, q, dec = p.level, p.quantity, int(p.decimals)
        op = str(p.op) if isinstance(p.op, str) and p.op else "="
        time = "" if (isinstance(p.time, float) and math.isnan(p.time)) or p.time == "" \
            else str(int(float(p.time)))
        if level == "subtotal":
            res = sub.subgroups.get(time)
            item = f"subtotal {time} wk"
            weight = float(w_all[[lab for lab, t in zip(labels, arms["time"].astype(str))
                                  if t == time]].sum())
        elif level == "overall":
            res, item, weight = sub.overall, "overall (all weeks pooled)", 100.0
        else:
            res, item, weight = None, "test for subgroup differences", math.nan
        if res is not None:
            rec = {"md": res.estimate, "ci_low": res.ci_low, "ci_high": res.ci_high,
                   "weight_pct": weight, "chi2": res.q, "df": res.q_df, "p_het": res.q_p,
                   "i2_pct": res.i2_q, "z": abs(res.statistic), "p": res.p}.get(q, math.nan)
        else:
            t = sub.subgroup_test
            rec = {"chi2": t["q"], "df": t["df"], "p": t["p"], "i2_pct": t["i2"]}.get(q, math.nan)
        bay = {}
        if q in ("md", "ci_low", "ci_high"):
            b = bayes_subtotal.get(time) if level == "subtotal" else (
                bayes_overall if level == "overall" else None)
            if b:
                bay = dict(bayesian=b[0], bayesian_ci_low=b[1], bayesian_ci_high=b[2],
                           bayesian_method=b[3])
        diag = ""
        if q == "i2_pct" and not agrees(p.value, rec, dec, op):
            diag = (f"RevMan rounds I² from Q = {res.q if res is not None else math.nan:.4g}; "
                    f"recomputed {rec:.2f}%")
        key = (level, time if level == "subtotal" else "", q)
        v, d = _verdict_rounded(float(p.value), float(rec), dec, op, ranges.get(key), diag)
        rows.append(dict(analysis=analysis, item=item, quantity=q, time=time,
                         printed=p.printed, published=p.value, decimals=dec, recomputed=rec,
                         recomputed_from="arm data (RevMan 5: IV fixed effect, Q-based I²)",
                         verdict=v, diagnosis=d, **bay))
    if text_overall is not None:
        rec = sub.overall.estimate
        v, d = _verdict(1.68, rec, 2, "=", (
            "the Results text prints 'total of mean difference was 1.68, 95%CI: -2.42-(-0.94)' "
            f"— the sign is dropped: the figure prints -1.68, the arm data give {rec:.2f}, and "
            "the text's own CI lies entirely below 0"))
        b = bayes_overall
        rows.append(dict(analysis=analysis, item="overall MD, Results text", quantity="md",
                         printed="total of mean difference was 1.68, 95%CI: -2.42-(-0.94), "
                                 "P < 0.001", published=1.68, decimals=2, recomputed=rec,
                         recomputed_from="arm data (IV fixed effect)", verdict=v, diagnosis=d,
                         **(dict(bayesian=b[0], bayesian_ci_low=b[1], bayesian_ci_high=b[2],
                                 bayesian_method=b[3]) if b else {})))
    return frame(rows)


def _bayes_triple(fit, param, level):
    s = fit.summary(level)
    row = s.loc[[p for p in s.index if p == param][0]]
    return float(row["estimate"]), float(row["ci_low"]), float(row["ci_high"]), fit.method


def run(analysis, published: pd.DataFrame) -> RecipeOutput:
    """Audit Figure 3 (``published``: level, time, quantity, value, decimals, printed, op)."""
    from bayesmeta import classical
    from bayesmeta.fits import Param

    d = analysis.design
    arms = d.rows.copy()
    labels = [f"{s}, {t} wk" for s, t in zip(arms["study"], arms["time"])]
    sub = classical.subgroup_analysis(arms["yi"].to_numpy(float), arms["vi"].to_numpy(float),
                                      arms["time"].tolist(), studies=labels, method="FE",
                                      test="z", measure=d.measure, preset="revman5")
    lev = analysis.ci_prob
    bsub, btheta, bover = {}, {}, None
    for r in analysis.fits(source="bayesian"):
        f = r.fit
        if f.model == "nnhm":
            t = f.coords.get("time", "")
            bsub[t] = _bayes_triple(f, Param("mu"), lev)
            for p in f.params():
                if p.name == "theta":
                    btheta[f"{p.get('study')}, {t} wk"] = _bayes_triple(f, p, lev)
        elif f.model == "nested":
            bover = _bayes_triple(f, f.find("mu", time="all"), lev)
    arm_text = pd.read_csv(analysis.spec.data_path, dtype=str, keep_default_na=False,
                           encoding="utf-8-sig")
    aud = audit_fig3(arms, published, sub, labels=labels, analysis=analysis.name,
                     bayes_subtotal=bsub, bayes_theta=btheta, bayes_overall=bover,
                     arm_text=arm_text)
    prow = []
    for (level, t), g in published[published["quantity"].isin(["md", "ci_low", "ci_high"])
                                   ].groupby(["level", "time"], dropna=False, sort=False):
        v = dict(zip(g["quantity"], g["value"]))
        tt = "all" if level == "overall" else str(int(t))
        prow.append(results.row(analysis=analysis.name, outcome=analysis.spec.analysis.outcome,
                                source="published", method="RevMan IV-FE (printed)",
                                parameter="mu", time=tt, estimate=v["md"], ci_low=v["ci_low"],
                                ci_high=v["ci_high"], level=0.95, interval="published",
                                scale=d.scale))
    n_t = len(d.levels("time"))
    fe = sub.overall
    answers = [f"The printed overall (all weeks pooled) pools the same patients {n_t} times "
               f"(each study at each of {n_t} weeks); recomputed as RevMan does it: MD "
               f"{fe.estimate:.2f} [{fe.ci_low:.2f}, {fe.ci_high:.2f}]. It is audited here and "
               "reported nowhere else."]
    return RecipeOutput(audit=aud, published=results.frame(prow), answers=answers,
                        caption="Every printed number of the forest plot: published, "
                                "recomputed from the arm data, the Bayesian posterior where one "
                                "exists, verdict.")
