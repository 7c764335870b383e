"""Building a :class:`bayesmeta.ghm.GHMDesign` from a table: validation, levels, priors,
estimands (the model itself is described in :mod:`bayesmeta.ghm`)."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from bayesmeta import priors as P
from bayesmeta.exceptions import DataError, SpecError
from bayesmeta.fits import Param
from bayesmeta.ghm import (ALL, CORRELATION_FORMS, DEFAULT_R, ROW_KINDS, STUDY_TIME,
                           SUBGROUP_MODES, TIME_STRUCTURES, BetaPrior, Estimand, GHMDesign, Hyper,
                           Window, fmt_time, num_time)

__all__ = ["build_design"]


# --------------------------------------------------------------------------------------------
# building a design from a table
# --------------------------------------------------------------------------------------------
def _clean_rows(data) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        data = pd.DataFrame(data)
    df = data.reset_index(drop=True).copy()
    if len(df) == 0:
        raise DataError("no rows", fix="give at least one estimate")
    if "yi" not in df:
        raise DataError("need a 'yi' column (the estimates)", column="yi")
    if "sei" not in df:
        if "vi" not in df:
            raise DataError("need 'sei' or 'vi'", column="sei",
                            fix="add the standard errors (sei) or sampling variances (vi)")
        v = pd.to_numeric(df["vi"], errors="coerce")
        df["sei"] = np.sqrt(v.where(v > 0))
    for col in ("yi", "sei"):
        v = pd.to_numeric(df[col], errors="coerce").astype(float)
        bad = ~np.isfinite(v.to_numpy())
        if col == "sei":
            bad |= ~(v.to_numpy() > 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"'{col}' must be finite{' and > 0' if col == 'sei' else ''}, got "
                            f"{df[col].iloc[i]!r}", row=i + 1, column=col)
        df[col] = v
    if "time" not in df:
        raise DataError("need a 'time' column (the follow-up time of each row)", column="time")
    miss = df["time"].isna() | (df["time"].astype(str).str.strip() == "")
    if miss.any():
        raise DataError("'time' missing", row=int(np.flatnonzero(miss)[0]) + 1, column="time")
    if "outcome" in df and df["outcome"].nunique() > 1:
        raise DataError(f"rows of {df['outcome'].nunique()} outcomes given", column="outcome",
                        fix="fit one outcome at a time")
    for col in ("study", "source", "subgroup"):
        if col not in df:
            df[col] = ""
        df[col] = ["" if (v is None or (isinstance(v, float) and math.isnan(v)) or pd.isna(v))
                   else str(v).strip() for v in df[col]]
    df["subgroup"] = [v if v else ALL for v in df["subgroup"]]
    if "row_kind" not in df:
        if "pooled" in df:
            df["row_kind"] = np.where(df["pooled"].astype(bool), "pooled", "study")
        else:
            df["row_kind"] = "study"
    df["row_kind"] = ["study" if (pd.isna(v) or str(v).strip() == "") else str(v).strip()
                      for v in df["row_kind"]]
    bad = ~df["row_kind"].isin(ROW_KINDS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"row_kind {df['row_kind'].iloc[i]!r} is not one of {list(ROW_KINDS)}",
                        row=i + 1, column="row_kind")
    nolab = (df["row_kind"] == "study") & (df["study"] == "")
    if nolab.any():
        raise DataError("a study row needs a study label", row=int(np.flatnonzero(nolab)[0]) + 1,
                        column="study", fix="label the study, or mark the row as pooled")
    df["time_label"] = [fmt_time(t) for t in df["time"]]
    key = df["study"].where(df["row_kind"] == "study", df["source"])
    dup = df.assign(_k=key)[key != ""].duplicated(["_k", "time_label", "subgroup"], keep=False)
    if dup.any():
        i = int(np.flatnonzero(dup.reindex(df.index, fill_value=False).to_numpy())[0])
        raise DataError("two rows of the same study/source, time and subgroup", row=i + 1,
                        fix="each study or source gives one estimate per time and subgroup")
    return df


def _overlap_check(df: pd.DataFrame) -> None:
    """An all-patients row beside subgroup rows at the same time counts patients twice."""
    if df["subgroup"].nunique() < 2 or ALL not in set(df["subgroup"]):
        return
    for t in df.loc[df["subgroup"] == ALL, "time_label"]:
        if ((df["time_label"] == t) & (df["subgroup"] != ALL)).any():
            i = int(np.flatnonzero(((df["time_label"] == t) & (df["subgroup"] == ALL))
                                   .to_numpy())[0])
            raise DataError(f"an all-patients row and subgroup rows at time {t} describe the "
                            "same patients twice", row=i + 1, column="subgroup",
                            fix="fit the all-patients rows and the subgroup rows separately")


def _hyper_prior(value, default, kind: str, name: str, reason: str, fixed: dict, hypers: list,
                 defaults: dict, notes: list):
    """Resolve one hyperparameter: a number fixes it, a prior makes it free, None = default."""
    from bayesmeta.exact import FixedTau
    src = "given"
    if value is None:
        value, src = default, "default"
    if isinstance(value, str):
        value = P.parse_prior(value, kind="tau") if kind == "scale" else float(value)
    if isinstance(value, FixedTau):
        value = float(value.value)
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        v = float(value)
        ok = (v >= 0 and math.isfinite(v)) if kind == "scale" else (-1 < v < 1)
        if not ok:
            raise SpecError(f"Invalid {name} {value!r}: must be "
                            + ("a number >= 0" if kind == "scale" else "in (-1, 1)"), key=name)
        fixed[name] = v
        defaults[name] = reason if src == "default" else "given"
        notes.append(f"{name} fixed at {v:g}" + (f" ({reason})" if src == "default" else ""))
        return
    if kind == "scale" and not isinstance(value, P.TauPrior):
        raise SpecError(f"Invalid {name} prior {value!r}: must be a tau prior (e.g. "
                        "HalfNormal(0.5)) or a number", key=name)
    if kind == "corr" and not isinstance(value, BetaPrior):
        raise SpecError(f"Invalid {name} prior {value!r}: must be a BetaPrior or a number in "
                        "(-1, 1)", key=name)
    if kind == "scale" and not getattr(value, "is_proper", True):
        raise SpecError(f"{name} prior {value} is improper", key=name,
                        fix="use a proper prior")
    hypers.append(Hyper(name, value, kind))
    defaults[name] = reason if src == "default" else "given"
    if src == "default" and kind == "scale":
        # the reason of the shared scale default is stated once (see build_design)
        notes.append(f"{name} ~ {value} (default scale prior)")
    else:
        notes.append(f"{name} ~ {value}" + (f" ({reason})" if src == "default" else ""))


def build_design(data, *, time_structure: str = "exchangeable", subgroup: str = "fixed",
                 correlation: str = "exchangeable", r=None, mean_prior=None,
                 sigma_time=None, sigma_study=None, tau=None, sigma_subgroup=None, rho=None,
                 windows: Mapping | None = None, contrasts=None, measure: str = "MD",
                 extrapolate: bool = False, study_time: str = "independent",
                 rho_within=None) -> GHMDesign:
    """Validate a table and fix the model: levels, hyperparameters and priors, estimands.

    Parameters
    ----------
    data : DataFrame
        Columns ``yi``, ``sei`` (or ``vi``), ``time``; optional ``time_value`` (numeric time of
        each row; default: the ``time`` label read as a number), ``subgroup`` (empty: one
        subgroup ``"all"``), ``study``, ``source`` (the published source of a pooled row),
        ``row_kind`` (``"study"`` default | ``"pooled"`` | ``"subgroup_pooled"``) or a boolean
        ``pooled`` column, optional ``n1i``/``n2i``/``ni`` (for the scale-aware default priors).
    time_structure : ``"exchangeable"`` | ``"ar1"`` | ``"car"``
    subgroup : ``"fixed"`` | ``"random"``
    correlation : ``"exchangeable"`` | ``"decay"`` | ``"ratio"``
        Form of the within-group sampling correlation (module docstring).
    r : float, BetaPrior or None
        Within-group sampling correlation: a number (known), a prior (integrated); default
        :data:`DEFAULT_R` (stated in the notes). Rejected with ``"ratio"`` (no parameter).
    mean_prior : Normal or Flat
        Prior of each fixed subgroup mean (or of mu for random subgroups); default
        :func:`bayesmeta.priors.default_mu_prior`.
    sigma_time, sigma_study, tau, sigma_subgroup : TauPrior, number or None
        Priors of the scale parameters (a number fixes one); default
        :func:`bayesmeta.priors.default_tau_prior` (scale-aware for MD).
    rho : BetaPrior, number or None
        Prior of the time correlation (``ar1``/``car``); default ``BetaPrior(1, 1)`` on (0, 1).
    windows : {name: {time: weight}}, optional
        Time windows whose weighted average is reported per subgroup; default one window
        ``"avg(...)"`` with equal weights on every time of the data.
    contrasts : list of (a, b), optional
        Subgroup contrasts a - b; default every pair (later minus earlier subgroup in the
        order of first appearance, the all-patients level excluded).
    extrapolate : bool
        Also report cell means and contrasts at times where a subgroup was not observed
        (marked ``extrapolation`` in the summary's ``note``).
    study_time : ``"independent"`` | ``"ar1"`` | ``"car"``
        Correlation of a study's within-cell deviations across its times (:mod:`bayesmeta.ghm`).
    rho_within : BetaPrior, number or None
        Prior of that correlation (``ar1``/``car``); default ``BetaPrior(1, 1)`` on (0, 1).
    """
    if time_structure not in TIME_STRUCTURES:
        raise SpecError(f"Invalid time_structure {time_structure!r}: must be one of "
                        f"{list(TIME_STRUCTURES)}.", key="time_structure")
    if subgroup not in SUBGROUP_MODES:
        raise SpecError(f"Invalid subgroup {subgroup!r}: must be one of {list(SUBGROUP_MODES)}.",
                        key="subgroup")
    if study_time not in STUDY_TIME:
        raise SpecError(f"Invalid study_time {study_time!r}: must be one of {list(STUDY_TIME)}.",
                        key="study_time")
    if correlation not in CORRELATION_FORMS:
        raise SpecError(f"Invalid correlation {correlation!r}: must be one of "
                        f"{list(CORRELATION_FORMS)}.", key="correlation")
    df = _clean_rows(data)
    _overlap_check(df)
    notes: list[str] = []
    # levels ---------------------------------------------------------------------------------
    named = [g for g in dict.fromkeys(df["subgroup"]) if g != ALL]
    subgroups = named + ([ALL] if ALL in set(df["subgroup"]) else [])
    if "time_value" in df:
        tv = pd.to_numeric(df["time_value"], errors="coerce").to_numpy(float)
        if not np.all(np.isfinite(tv)):
            i = int(np.flatnonzero(~np.isfinite(tv))[0])
            raise DataError("'time_value' must be a finite number", row=i + 1,
                            column="time_value")
    else:
        tv = np.array([num_time(t) if num_time(t) is not None else np.nan
                       for t in df["time_label"]], dtype=float)
    labels = list(dict.fromkeys(df["time_label"]))
    lab_val = {}
    for lab, v in zip(df["time_label"], tv):
        if lab in lab_val and not (np.isnan(lab_val[lab]) and np.isnan(v)) \
                and lab_val[lab] != v:
            raise DataError(f"time {lab!r} has two numeric values ({lab_val[lab]:g}, {v:g})",
                            column="time_value")
        lab_val[lab] = v
    numeric = all(np.isfinite(v) for v in lab_val.values())
    needs_num = (time_structure in ("ar1", "car") or correlation in ("decay", "ratio")
                 or study_time in ("ar1", "car"))
    if needs_num and not numeric and len(labels) > 1:
        bad = [lab for lab, v in lab_val.items() if not np.isfinite(v)]
        raise DataError(f"times {bad} are not numbers; time_structure={time_structure!r} and "
                        f"correlation={correlation!r} need ordered numeric times",
                        column="time", fix="add a numeric 'time_value' column")
    times = sorted(labels, key=lambda lab: (lab_val[lab], lab)) if numeric else labels
    tvals = np.array([lab_val[lab] for lab in times], dtype=float)
    if correlation == "ratio" and numeric and np.any(tvals <= 0):
        raise DataError("correlation='ratio' needs positive times (sqrt(min/max) of follow-up)",
                        column="time")
    counts = df[df["study"] != ""].groupby("study").size()
    studies = [j for j in dict.fromkeys(df["study"]) if j and counts.get(j, 0) >= 2]
    s_idx = np.array([subgroups.index(g) for g in df["subgroup"]], dtype=int)
    t_idx = np.array([times.index(t) for t in df["time_label"]], dtype=int)
    j_idx = np.array([studies.index(j) if j in studies else -1 for j in df["study"]], dtype=int)
    h = (df["row_kind"] == "study").to_numpy(float)
    key = [(st if kind == "study" else src, g) if (st if kind == "study" else src) else None
           for st, src, kind, g in zip(df["study"], df["source"], df["row_kind"],
                                       df["subgroup"])]
    keys = [k for k in dict.fromkeys(key) if k is not None]
    group = np.array([keys.index(k) if k is not None else -1 for k in key], dtype=int)
    unlabelled = int(((df["row_kind"] != "study") & (df["source"] == "")
                      & (df["study"] == "")).sum())
    if unlabelled and len(df) > 1:
        notes.append(f"{unlabelled} pooled row(s) carry no study or source label: their sampling "
                     "errors are taken as independent of every other row")
    # priors ---------------------------------------------------------------------------------
    pdata = {"vi": df["sei"].to_numpy(float) ** 2}
    for c in ("n1i", "n2i", "ni"):
        if c in df:
            pdata[c] = pd.to_numeric(df[c], errors="coerce").to_numpy(float)
    if mean_prior is None:
        mean_prior, why = P.default_mu_prior(measure, pdata)
        notes.append(f"mean prior {mean_prior} ({why})")
    elif isinstance(mean_prior, str):
        mean_prior = P.parse_prior(mean_prior, kind="mu")
    if not isinstance(mean_prior, (P.Normal, P.Flat)):
        raise SpecError(f"mean_prior must be Normal(mean, sd) or Flat(), got {mean_prior!r}",
                        key="mean_prior")
    scale_default, scale_why = P.default_tau_prior(measure, pdata)
    fixed: dict = {}
    hypers: list[Hyper] = []
    defaults: dict = {}
    multi_sub = len(subgroups) > 1
    if subgroup == "random" and multi_sub:
        _hyper_prior(sigma_subgroup, scale_default, "scale", "sigma_subgroup", scale_why, fixed,
                     hypers, defaults, notes)
    elif sigma_subgroup is not None:
        raise SpecError("sigma_subgroup is used only with subgroup='random' and two or more "
                        "subgroups", key="sigma_subgroup")
    if len(times) > 1:
        _hyper_prior(sigma_time, scale_default, "scale", "sigma_time", scale_why, fixed, hypers,
                     defaults, notes)
        if time_structure != "exchangeable":
            if time_structure == "car" and isinstance(rho, BetaPrior) and rho.lower < 0:
                raise SpecError("car needs rho > 0 (rho^|t - t'| at non-integer lags)",
                                key="rho")
            if time_structure == "car" and isinstance(rho, (int, float)) and rho <= 0:
                raise SpecError(f"Invalid rho {rho!r}: car needs rho in (0, 1)", key="rho")
            _hyper_prior(rho, BetaPrior(1.0, 1.0, source="uniform on (0, 1)"), "corr", "rho",
                         "uniform on (0, 1)", fixed, hypers, defaults, notes)
        elif rho is not None:
            raise SpecError("rho is used only with time_structure 'ar1' or 'car'", key="rho")
    elif sigma_time is not None or rho is not None:
        raise SpecError("sigma_time/rho need two or more distinct times", key="sigma_time")
    if studies:
        _hyper_prior(sigma_study, scale_default, "scale", "sigma_study", scale_why, fixed,
                     hypers, defaults, notes)
    elif sigma_study is not None:
        raise SpecError("sigma_study needs a study with two or more rows", key="sigma_study")
    if h.any():
        _hyper_prior(tau, scale_default, "scale", "tau", scale_why, fixed, hypers, defaults,
                     notes)
    elif tau is not None:
        raise SpecError("tau (within-cell heterogeneity) needs study rows; every row is pooled",
                        key="tau")
    probe = GHMDesign(rows=df.assign(time_label=df["time_label"]), y=np.zeros(len(df)),
                      se=df["sei"].to_numpy(float), h=h, s_idx=s_idx, t_idx=t_idx, j_idx=j_idx,
                      group=np.full(len(df), -1), subgroups=subgroups, times=times,
                      time_values=tvals, studies=studies, time_structure=time_structure,
                      subgroup_mode=subgroup, correlation=correlation, mean_prior=mean_prior,
                      hypers=[], fixed={}, windows=[], contrasts=[], measure="", notes=[],
                      defaults={}, study_time=study_time)
    if probe.use_rho_within:
        if study_time == "car" and ((isinstance(rho_within, BetaPrior) and rho_within.lower < 0)
                                    or (isinstance(rho_within, (int, float))
                                        and rho_within <= 0)):
            raise SpecError("study_time='car' needs rho_within > 0", key="rho_within")
        _hyper_prior(rho_within, BetaPrior(1.0, 1.0, source="uniform on (0, 1)"), "corr",
                     "rho_within", "uniform on (0, 1)", fixed, hypers, defaults, notes)
    elif rho_within is not None or study_time != "independent":
        raise SpecError(f"study_time={study_time!r} / rho_within need a study with study rows at "
                        "two or more times within a subgroup", key="study_time")
    if any(n.endswith("(default scale prior)") for n in notes):
        notes.append(f"default scale prior: {scale_why}")
    g = group
    has_pairs = bool(((g[:, None] == g[None, :]) & (g[:, None] >= 0)).sum() > len(g[g >= 0]))
    if correlation == "ratio":
        if r is not None:
            raise SpecError("correlation='ratio' has no parameter r", key="r")
        if has_pairs:
            notes.append("sampling correlation of rows of the same study/source: "
                         "sqrt(min(t, t')/max(t, t')) (cumulative outcomes)")
    elif has_pairs:
        if r is None:
            r_val = DEFAULT_R
            fixed["r"] = r_val
            defaults["r"] = "default"
            notes.append(f"within-study sampling correlation r = {r_val:g} ({correlation}; "
                         "default: change scores of the same patients are typically "
                         "correlated 0.5-0.9; vary it with r_sensitivity)")
        else:
            _hyper_prior(r, None, "corr", "r", "", fixed, hypers, defaults, notes)
        lo_r = fixed["r"] if "r" in fixed else next(x.prior.lower for x in hypers
                                                    if x.name == "r")
        if lo_r < 0 and (correlation == "decay" or "r" not in fixed):
            raise SpecError(f"r must be >= 0 for correlation={correlation!r}"
                            + (" (r^|t - t'| at non-integer lags)" if correlation == "decay"
                               else " when given a prior"), key="r")
    elif r is not None:
        raise SpecError("r is used only when a study or source has rows at two or more times "
                        "within a subgroup", key="r")
    if numeric and len(times) > 1 and time_structure == "car":
        notes.append(f"car: correlation rho^|t - t'| with t in the data's time unit "
                     f"(times {', '.join(times)})")
    # estimands ------------------------------------------------------------------------------
    if windows is None:
        windows = {f"avg({','.join(times)})": {t: 1.0 for t in times}} if len(times) > 1 else {}
    wins = [Window.make(k, v) for k, v in dict(windows).items()]
    for w in wins:
        unknown = [t for t, _ in w.weights if t not in times]
        if unknown:
            raise SpecError(f"window {w.name!r}: times {unknown} not in the data {times}",
                            key="windows")
        if w.name in times:
            raise SpecError(f"window name {w.name!r} equals a time label", key="windows")
    if contrasts is None:
        contrasts = [(named[j], named[i]) for i in range(len(named))
                     for j in range(i + 1, len(named))]
    cons = []
    for c in contrasts:
        a, b = tuple(c)
        miss = [x for x in (a, b) if x not in subgroups]
        if miss or a == b:
            raise SpecError(f"Invalid contrast {c!r}: subgroups {miss or [a]} "
                            f"{'not in the data ' + str(subgroups) if miss else 'repeated'}",
                            key="contrasts")
        cons.append((subgroups.index(a), subgroups.index(b)))
    d = GHMDesign(rows=df, y=df["yi"].to_numpy(float), se=df["sei"].to_numpy(float), h=h,
                  s_idx=s_idx, t_idx=t_idx, j_idx=j_idx, group=group, subgroups=subgroups,
                  times=times, time_values=tvals, studies=studies,
                  time_structure=time_structure, subgroup_mode=subgroup,
                  correlation=correlation, mean_prior=mean_prior, hypers=hypers, fixed=fixed,
                  windows=wins, contrasts=cons, measure=str(measure).upper(), notes=notes,
                  defaults=defaults, study_time=study_time)
    if subgroup == "fixed" and cons:
        notes.append(f"fixed subgroup means: implied prior of each contrast "
                     f"{d.contrast_prior_text()}, 95% within "
                     f"[{d.contrast_prior_interval()[0]:.4g}, "
                     f"{d.contrast_prior_interval()[1]:.4g}]")
    d.estimands = _estimands(d, extrapolate)
    return d


def _estimands(d: GHMDesign, extrapolate: bool) -> list[Estimand]:
    """Every reported linear combination of z = (beta, gamma)."""
    o = d.offsets
    p, g = d.p, o["g"]
    T = d.n_t
    out: list[Estimand] = []

    def level(s):  # m_s as a row over z
        L = np.zeros(p + g)
        if p == 1:
            L[0] = 1.0
        else:
            L[s] = 1.0
        if d.use_subgroup:
            L[p + o["a"] + s] = 1.0
        return L

    def cell(s, t):
        L = level(s)
        if d.use_time:
            L[p + o["d"] + s * T + t] = 1.0
        return L

    def window(s, w):
        L = np.zeros(p + g)
        for lab, wt in w.weights:
            L += wt * cell(s, d.times.index(lab))
        return L

    def obs_note(ss, ts):
        miss = [f"{d.subgroups[s]} at {d.times[t]}" for s in ss for t in ts
                if not d.observed(s, t)]
        return ("extrapolation: not observed: " + ", ".join(miss)) if miss else ""

    new_extra = tuple((nm, 1.0) for nm, use in (("sigma_study", d.use_study),
                                                 ("tau", d.use_tau)) if use)
    if d.subgroup_mode == "random" and d.n_s > 1:
        L = np.zeros(p + g)
        L[0] = 1.0
        out.append(Estimand(Param("mu"), L))
    for s, sg in enumerate(d.subgroups):
        sub = {} if d.n_s == 1 else {"subgroup": sg}
        out.append(Estimand(Param("mu", sub), level(s)))
        if d.use_time:
            for t, tl in enumerate(d.times):
                note = obs_note([s], [t])
                if note and not extrapolate:
                    continue
                out.append(Estimand(Param("mu", {**sub, "time": tl}), cell(s, t), note=note))
            for w in d.windows:
                ts = [d.times.index(lab) for lab, wt in w.weights if wt > 0]
                out.append(Estimand(Param("mu", {**sub, "time": w.name}), window(s, w),
                                    note=obs_note([s], ts)))
        if new_extra:
            for t, tl in enumerate(d.times):
                if not d.observed(s, t) and not extrapolate:
                    continue
                tc = {"time": tl} if d.use_time else {}
                out.append(Estimand(Param("theta_new", {**sub, **tc}), cell(s, t),
                                    extra=new_extra, note=obs_note([s], [t])))
    for a, b in d.contrasts:
        lab = f"{d.subgroups[a]} - {d.subgroups[b]}"
        out.append(Estimand(Param("contrast", subgroup=lab), level(a) - level(b),
                            note="difference of subgroup levels" if d.use_time else ""))
        if d.use_time:
            for t, tl in enumerate(d.times):
                note = obs_note([a, b], [t])
                if note and not extrapolate:
                    continue
                out.append(Estimand(Param("contrast", subgroup=lab, time=tl),
                                    cell(a, t) - cell(b, t), note=note))
            for w in d.windows:
                ts = [d.times.index(x) for x, wt in w.weights if wt > 0]
                out.append(Estimand(Param("contrast", subgroup=lab, time=w.name),
                                    window(a, w) - window(b, w), note=obs_note([a, b], ts)))
    return out
