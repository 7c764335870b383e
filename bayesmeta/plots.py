"""Report figures (matplotlib, Agg): forest plot in the RevMan/metafor layout, tau prior vs
posterior, effect over time with probabilities of benefit, prior sensitivity.

Every function takes tidy DataFrames (numbers on the analysis scale) and returns a
:class:`matplotlib.figure.Figure`; nothing is shown or saved here (``bayesmeta.report`` saves
PNG, and SVG when asked for). Intervals are drawn exactly as given: the caller decides the level.

Conventions that hold for every figure:

- ratio measures (``transform="exp"``) are drawn on a log axis whose ticks are plain numbers
  (0.25, 0.5, 1, 2, 4; see :func:`ratio_ticks`) with no minor tick labels;
- a legend lists only what was drawn and sits outside the axes (below the figure), so it
  never covers data;
- time axes have ticks at the observed times only, and panels over time share one x range;
- numeric panel levels sort by value (:func:`bayesmeta.fmt.level_sort_key`).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator  # noqa: E402

from bayesmeta.fmt import clean_label, estimate_ci, level_sort_key  # noqa: E402

COLORS = {"published": "#7f7f7f", "classical": "#000000", "bayesian": "#1f5fbf",
          "study": "#000000", "shrinkage": "#1f5fbf", "prior": "#999999"}
SOURCE_NAMES = {"published": "published", "classical": "classical pooled",
                "bayesian": "Bayesian posterior"}
plt.rcParams["svg.hashsalt"] = "bayesmeta"  # deterministic SVG ids

_CHAR_IN = 0.068  # inches per character of 8-pt text (generous: text must fit its column)


def _new(figsize) -> Figure:
    return Figure(figsize=figsize, layout="constrained")


def _tf(x, transform):
    x = np.asarray(x, dtype=float)
    return np.exp(x) if transform == "exp" else x


def _plain(v, _pos=None) -> str:
    return f"{v:g}"


# --------------------------------------------------------------------------------------------
# axes helpers
# --------------------------------------------------------------------------------------------
_LADDERS = (
    tuple(2.0 ** k for k in range(-3, 5)),                                      # 0.25 0.5 1 2 4
    tuple(m * 10.0 ** e for e in range(-4, 5) for m in (1, 2, 5)),              # 0.1 0.2 0.5 1
    tuple(10.0 ** e for e in range(-6, 7)),                                     # 0.01 0.1 1 10
)


def ratio_ticks(lo: float, hi: float) -> list[float]:
    """Plain tick values for a log-scaled ratio axis spanning ``[lo, hi]`` (both > 0).

    Tries, in order, powers of two from 0.125 to 16 (0.25, 0.5, 1, 2, 4), the 1-2-5 series
    and powers of ten, taking the first that puts 3 to 7 ticks inside the range and spans at
    least 60% of it (on the log scale); a narrow range (e.g. 0.45 to 0.85) gets evenly spaced
    plain values (0.5, 0.6, 0.7, 0.8).
    """
    lo, hi = float(min(lo, hi)), float(max(lo, hi))
    span = math.log(hi / lo) if hi > lo > 0 else 0.0
    for ladder in _LADDERS:
        t = [x for x in ladder if lo * (1 - 1e-9) <= x <= hi * (1 + 1e-9)]
        if 3 <= len(t) <= 7 and span > 0 and math.log(t[-1] / t[0]) >= 0.6 * span:
            return t
    vals = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    t = [float(x) for x in vals if lo * (1 - 1e-9) <= x <= hi * (1 + 1e-9) and x > 0]
    if len(t) >= 2:
        return t
    return [x for x in _LADDERS[2] if lo <= x <= hi] or [lo, hi]


def set_ratio_axis(ax, axis: str = "x") -> None:
    """Log scale with plain major ticks from :func:`ratio_ticks` and no minor tick labels.

    Call after everything is drawn: the ticks are chosen for the current data limits.
    """
    if axis == "x":
        ax.set_xscale("log")
        ax.autoscale_view()
        lo, hi = ax.get_xlim()
        a = ax.xaxis
    else:
        ax.set_yscale("log")
        ax.autoscale_view()
        lo, hi = ax.get_ylim()
        a = ax.yaxis
    a.set_major_locator(FixedLocator(ratio_ticks(lo, hi)))
    a.set_major_formatter(FuncFormatter(_plain))
    a.set_minor_locator(NullLocator())
    (ax.set_xlim if axis == "x" else ax.set_ylim)(lo, hi)


def set_time_axis(axes, times, xlabel: str | None = None) -> None:
    """Ticks at the observed ``times`` only (plain numbers), the same x range on every axis."""
    t = sorted({float(x) for x in times if np.isfinite(float(x))})
    if not t:
        return
    span = (t[-1] - t[0]) or 1.0
    lim = (t[0] - 0.08 * span, t[-1] + 0.08 * span)
    for ax in axes:
        ax.xaxis.set_major_locator(FixedLocator(t))
        ax.xaxis.set_major_formatter(FuncFormatter(_plain))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(*lim)
        if xlabel:
            ax.set_xlabel(xlabel)


def _dodge(times, n: int, j: int) -> float:
    """Horizontal offset of series ``j`` of ``n`` at the same time: a fraction of the smallest
    gap between observed times, so marks stay beside their tick."""
    t = sorted({float(x) for x in times})
    gap = min(np.diff(t)) if len(t) > 1 else 1.0
    return 0.12 * gap * (j - (n - 1) / 2)


def _legend_below(fig: Figure, handles, ncol: int | None = None) -> None:
    """Figure legend outside the axes (below them), listing ``handles`` only."""
    if not handles:
        return
    fig.legend(handles=handles, loc="outside lower center", frameon=False, fontsize=8,
               ncol=ncol or min(len(handles), 3))


def _panels(studies, pooled, panel_order):
    if panel_order is not None:
        return list(panel_order)
    seen = list(dict.fromkeys(list(studies["panel"]) if "panel" in studies else [])
                | dict.fromkeys(pooled["panel"]))
    if any(level_sort_key(p)[0] == 0 for p in seen):
        return sorted(seen, key=level_sort_key)
    return seen


# --------------------------------------------------------------------------------------------
# forest plot
# --------------------------------------------------------------------------------------------
def plot_forest(studies: pd.DataFrame, pooled: pd.DataFrame, *, shrinkage: pd.DataFrame | None
                = None, panel_order=None, xlabel: str = "effect", transform: str = "none",
                title: str = "", ci_label: str = "95% CI", digits: int = 2) -> Figure:
    """Forest plot in the RevMan/metafor layout: study | plot | estimate [CI] | weight.

    Parameters
    ----------
    studies : DataFrame
        Columns ``panel, study, estimate, ci_low, ci_high`` (observed per-study effects with
        their interval), optional ``weight`` (percent; sets the square size and fills the
        weight column).
    pooled : DataFrame
        Columns ``panel, source, label, estimate, ci_low, ci_high``; ``source`` in
        published/classical/bayesian. Drawn as diamonds (published grey, classical black,
        Bayesian blue) under the panel's studies: subgroup diamonds in each panel, overall
        diamonds in a panel of their own (e.g. "overall").
    shrinkage : DataFrame, optional
        Bayesian shrinkage estimates of the study effects: ``panel, study, estimate, ci_low,
        ci_high``; drawn in blue just below each study's observed estimate.
    panel_order : list, optional
        Panel order; default: order of appearance, or by value when panels are numeric.
    transform : {"none", "exp"}
        ``exp``: the numbers are log ratios, drawn and printed on their natural scale.
    ci_label : str
        Header of the estimate column ("95% CI").
    """
    ratio = transform == "exp"
    studies = studies if studies is not None else pd.DataFrame(columns=["panel", "study"])
    has_weight = "weight" in studies and studies["weight"].notna().any()
    rows = []  # (y, kind, label, est_text, weight_text, payload)
    y = 0.0
    for p in _panels(studies, pooled, panel_order):
        st = studies[studies["panel"] == p] if len(studies) else studies
        po = pooled[pooled["panel"] == p]
        if not len(st) and not len(po):
            continue
        rows.append((y, "header", str(p), "", "", None))
        y -= 1.0
        for _, r in st.iterrows():
            w = r.get("weight") if has_weight else None
            rows.append((y, "study", str(r["study"]),
                         estimate_ci(r["estimate"], r["ci_low"], r["ci_high"], ratio=ratio,
                                     digits=digits),
                         f"{float(w):.1f}%" if w is not None and pd.notna(w) else "", r))
            y -= 1.0
        for _, r in po.iterrows():
            rows.append((y, "pooled", clean_label(r["label"]),
                         estimate_ci(r["estimate"], r["ci_low"], r["ci_high"], ratio=ratio,
                                     digits=digits), "", r))
            y -= 1.0
        y -= 0.4
    y_bottom = y + 0.4 - 0.6
    head = "Study" if len(studies) else ""
    labels = [r[2] for r in rows] + [head]
    ests = [r[3] for r in rows] + [f"Estimate [{ci_label}]"]
    w_label = max(1.2, _CHAR_IN * max(len(s) for s in labels) + 0.15)
    w_est = max(1.0, _CHAR_IN * max(len(s) for s in ests) + 0.15)
    w_wt = 0.75 if has_weight else 0.0
    w_plot = 4.0
    height = max(2.4, 0.24 * (1 - y_bottom) + 1.3)
    fig = _new((w_label + w_plot + w_est + w_wt + 0.4, height))
    ratios = [w_label, w_plot, w_est] + ([w_wt] if has_weight else [])
    gs = fig.add_gridspec(1, len(ratios), width_ratios=ratios, wspace=0.01)
    ax_lab = fig.add_subplot(gs[0, 0])
    ax = fig.add_subplot(gs[0, 1], sharey=ax_lab)
    ax_est = fig.add_subplot(gs[0, 2], sharey=ax_lab)
    ax_wt = fig.add_subplot(gs[0, 3], sharey=ax_lab) if has_weight else None
    for a in (ax_lab, ax_est, ax_wt):
        if a is not None:
            a.set_axis_off()
            a.set_xlim(0, 1)
    y_head = 1.0
    ax_lab.text(0, y_head, head, ha="left", va="center", fontsize=8, fontweight="bold")
    ax_est.text(1, y_head, f"Estimate [{ci_label}]", ha="right", va="center", fontsize=8,
                fontweight="bold")
    if ax_wt is not None:
        ax_wt.text(1, y_head, "Weight", ha="right", va="center", fontsize=8, fontweight="bold")
    drawn = {}
    for yy, kind, label, est_text, wt_text, r in rows:
        if kind == "header":
            ax_lab.text(0, yy, label, ha="left", va="center", fontsize=8, fontweight="bold")
            continue
        ax_lab.text(0.04, yy, label, ha="left", va="center", fontsize=8,
                    style="italic" if kind == "pooled" else "normal")
        ax_est.text(1, yy, est_text, ha="right", va="center", fontsize=8)
        if ax_wt is not None and wt_text:
            ax_wt.text(1, yy, wt_text, ha="right", va="center", fontsize=8)
        lo, est, hi = _tf([r["ci_low"], r["estimate"], r["ci_high"]], transform)
        if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(est)):
            continue
        if kind == "study":
            ax.plot([lo, hi], [yy, yy], color=COLORS["study"], lw=1)
            w = r.get("weight") if has_weight else None
            size = 4 + 0.25 * float(w) if w is not None and pd.notna(w) else 6
            ax.plot([est], [yy], marker="s", color=COLORS["study"], ms=min(size, 14), ls="none")
            drawn["study"] = True
            if shrinkage is not None and len(shrinkage):
                sh = shrinkage[(shrinkage["panel"] == r["panel"])
                               & (shrinkage["study"] == r["study"])]
                for _, s in sh.iterrows():
                    slo, sest, shi = _tf([s["ci_low"], s["estimate"], s["ci_high"]], transform)
                    if not np.all(np.isfinite([slo, sest, shi])):
                        continue
                    ax.plot([slo, shi], [yy - 0.3, yy - 0.3], color=COLORS["shrinkage"], lw=1)
                    ax.plot([sest], [yy - 0.3], marker="o", color=COLORS["shrinkage"], ms=4,
                            ls="none")
                    drawn["shrinkage"] = True
        else:
            src = str(r["source"])
            c = COLORS.get(src, "#444444")
            ax.fill([lo, est, hi, est], [yy, yy + 0.32, yy, yy - 0.32], color=c,
                    alpha=0.85 if src != "published" else 0.5, lw=0)
            drawn[src] = True
    ax.axvline(1.0 if ratio else 0.0, color="#555555", lw=0.8, ls="--")
    ax.set_ylim(y_bottom, y_head + 0.6)
    ax.tick_params(axis="y", left=False, labelleft=False)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    if ratio:
        set_ratio_axis(ax, "x")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    handles = []
    if drawn.get("study"):
        handles.append(Line2D([], [], marker="s", color=COLORS["study"], ls="-",
                              label=f"study ({ci_label})"))
    if drawn.get("shrinkage"):
        handles.append(Line2D([], [], marker="o", color=COLORS["shrinkage"], ls="-",
                              label="study, Bayesian shrinkage"))
    for src in ("classical", "bayesian", "published"):
        if drawn.get(src):
            handles.append(Patch(color=COLORS[src], alpha=0.85 if src != "published" else 0.5,
                                 label=SOURCE_NAMES[src]))
    for src in sorted(k for k in drawn if k not in COLORS and k not in ("study", "shrinkage")):
        handles.append(Patch(color="#444444", label=src))
    _legend_below(fig, handles, ncol=min(len(handles), 4))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# tau
# --------------------------------------------------------------------------------------------
def plot_tau_prior_posterior(curves: pd.DataFrame, *, xlabel: str = "tau",
                             title: str = "") -> Figure:
    """Prior and posterior density of tau.

    Parameters
    ----------
    curves : DataFrame
        Columns ``panel, tau, prior, posterior`` (densities on a grid; one curve per panel).
    """
    panels = sorted(dict.fromkeys(curves["panel"]), key=level_sort_key)
    n = max(1, len(panels))
    ncol = min(n, 3)
    nrow = math.ceil(n / ncol)
    fig = _new((3.2 * ncol, 2.4 * nrow + 0.5))
    drawn = set()
    first = None
    for i, p in enumerate(panels):
        ax = fig.add_subplot(nrow, ncol, i + 1, sharex=first)  # one tau range for all panels
        first = first or ax
        c = curves[curves["panel"] == p]
        if np.isfinite(c["prior"].to_numpy(float)).any():
            ax.plot(c["tau"], c["prior"], color=COLORS["prior"], ls="--")
            drawn.add("prior")
        if np.isfinite(c["posterior"].to_numpy(float)).any():
            ax.plot(c["tau"], c["posterior"], color=COLORS["bayesian"])
            drawn.add("posterior")
        ax.set_title(str(p), fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.set_xlim(left=0)
    handles = []
    if "prior" in drawn:
        handles.append(Line2D([], [], color=COLORS["prior"], ls="--", label="prior"))
    if "posterior" in drawn:
        handles.append(Line2D([], [], color=COLORS["bayesian"], label="posterior"))
    _legend_below(fig, handles)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# over time
# --------------------------------------------------------------------------------------------
def plot_over_time(post: pd.DataFrame, *, published: pd.DataFrame | None = None,
                   prob: pd.DataFrame | None = None, transform: str = "none",
                   ylabel: str = "effect", threshold: float | None = None,
                   title: str = "", xlabel: str = "weeks") -> Figure:
    """Effect over follow-up time with credible bands, and probabilities of benefit.

    Parameters
    ----------
    post : DataFrame
        ``time`` (numeric), ``estimate``, ``ci_low``, ``ci_high`` and optional ``series``
        (e.g. rho value or prior set; one band per series) on the analysis scale.
    published : DataFrame, optional
        ``time, estimate, ci_low, ci_high`` printed in the paper (grey, beside the posterior).
    prob : DataFrame, optional
        ``time, label, value``: probabilities (e.g. P(OR > 1), P(OR > 1.5)) for the lower panel.
    xlabel : str
        Unit of ``time``.

    Both panels share the x axis; ticks sit at the observed times only.
    """
    fig = _new((7.0, 5.6 if prob is not None else 3.8))
    ax = fig.add_subplot(2 if prob is not None else 1, 1, 1)
    times = list(post["time"].astype(float))
    if published is not None and len(published):
        times += list(published["time"].astype(float))
    if prob is not None and len(prob):
        times += list(prob["time"].astype(float))
    series = list(dict.fromkeys(post["series"])) if "series" in post else [""]
    n_marks = len(series) + (1 if published is not None and len(published) else 0)
    cmap = plt.get_cmap("Blues")
    handles = []
    for j, s in enumerate(series):
        d = post[post["series"] == s] if "series" in post else post
        d = d.sort_values("time")
        col = cmap(0.45 + 0.5 * (j + 1) / (len(series) + 1)) if len(series) > 1 \
            else COLORS["bayesian"]
        t = d["time"].to_numpy(float) + _dodge(times, n_marks, j)
        ax.fill_between(t, _tf(d["ci_low"], transform), _tf(d["ci_high"], transform),
                        color=col, alpha=0.18, lw=0)
        ax.plot(t, _tf(d["estimate"], transform), marker="o", color=col)
        handles.append(Line2D([], [], marker="o", color=col,
                              label=f"posterior {s}".strip() + " (band: interval)"))
    if published is not None and len(published):
        p = published.sort_values("time")
        t = p["time"].to_numpy(float) + _dodge(times, n_marks, n_marks - 1)
        est, lo, hi = (_tf(p[c], transform) for c in ("estimate", "ci_low", "ci_high"))
        ax.errorbar(t, est, yerr=[est - lo, hi - est], fmt="D", color=COLORS["published"],
                    capsize=2, ms=4)
        handles.append(Line2D([], [], marker="D", color=COLORS["published"], ls="-",
                              label="published"))
    ref = 1.0 if transform == "exp" else 0.0
    ax.axhline(ref, color="#555555", lw=0.8, ls="--")
    if threshold is not None:
        ax.axhline(threshold, color="#c0392b", lw=0.8, ls=":")
        handles.append(Line2D([], [], color="#c0392b", lw=0.8, ls=":",
                              label=f"threshold {threshold:g}"))
    if transform == "exp":
        set_ratio_axis(ax, "y")
    ax.set_ylabel(ylabel)
    axes = [ax]
    if title:
        ax.set_title(title, fontsize=10)
    if prob is not None:
        ax2 = fig.add_subplot(2, 1, 2, sharex=ax)
        markers = "osD^v"
        for i, lab in enumerate(dict.fromkeys(prob["label"])):
            d = prob[prob["label"] == lab].sort_values("time")
            col = plt.get_cmap("tab10")(i % 10)
            ax2.plot(d["time"].astype(float), d["value"], marker=markers[i % len(markers)],
                     color=col)
            handles.append(Line2D([], [], marker=markers[i % len(markers)], color=col,
                                  label=str(lab)))
        ax2.set_ylim(0, 1.02)
        ax2.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        ax2.axhline(0.5, color="#bbbbbb", lw=0.6)
        ax2.set_ylabel("posterior probability")
        axes.append(ax2)
        ax.tick_params(axis="x", labelbottom=False)
        set_time_axis(axes, times)
        ax2.set_xlabel(xlabel)
    else:
        set_time_axis(axes, times, xlabel)
    _legend_below(fig, handles)
    return fig


# --------------------------------------------------------------------------------------------
# sensitivity
# --------------------------------------------------------------------------------------------
def plot_sensitivity(df: pd.DataFrame, *, xlabel: str = "effect", transform: str = "none",
                     title: str = "") -> Figure:
    """Dot-and-whisker plot of a parameter under several priors or settings.

    Parameters
    ----------
    df : DataFrame
        ``group`` (e.g. time point), ``setting`` (prior set / rho), ``estimate``, ``ci_low``,
        ``ci_high``.

    Each group is a bold heading row followed by one row per setting (labelled on the axis,
    coloured by setting), so no legend is needed and nothing covers the intervals. Numeric
    groups sort by value.
    """
    groups = sorted(dict.fromkeys(df["group"]), key=level_sort_key) \
        if any(level_sort_key(g)[0] == 0 for g in dict.fromkeys(df["group"])) \
        else list(dict.fromkeys(df["group"]))
    settings = list(dict.fromkeys(df["setting"]))
    one_group = len(groups) == 1
    nrows = len(df) + (0 if one_group else len(groups))
    fig = _new((7.0, max(2.2, 0.24 * nrows + 0.3 * len(groups) + 1.0)))
    ax = fig.add_subplot(1, 1, 1)
    cmap = plt.get_cmap("tab10")
    y = 0.0
    yt, yl, bold = [], [], []
    for g in groups:
        if not one_group:
            yt.append(y)
            yl.append(str(g))
            bold.append(True)
            y -= 1
        for j, s in enumerate(settings):
            r = df[(df["group"] == g) & (df["setting"] == s)]
            if not len(r):
                continue
            r = r.iloc[0]
            lo, est, hi = _tf([r["ci_low"], r["estimate"], r["ci_high"]], transform)
            ax.plot([lo, hi], [y, y], color=cmap(j % 10), lw=1.2)
            ax.plot([est], [y], "o", color=cmap(j % 10), ms=4)
            yt.append(y)
            yl.append(str(s))
            bold.append(False)
            y -= 1
        y -= 0.4
    ax.axvline(1.0 if transform == "exp" else 0.0, color="#555555", lw=0.8, ls="--")
    ax.set_yticks(yt, yl, fontsize=7)
    for lab, b in zip(ax.get_yticklabels(), bold):
        if b:
            lab.set_fontweight("bold")
            lab.set_fontsize(8)
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(y + 0.4 - 0.6, 0.6)
    if transform == "exp":
        set_ratio_axis(ax, "x")
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_audit(df: pd.DataFrame, *, title: str = "") -> Figure:
    """Published vs recomputed values (each on its own scale, relative to the printed one).

    ``df``: ``label, published, recomputed, verdict`` (verdict 'reproduced' or other).
    """
    d = df[np.isfinite(df["published"].astype(float)) & np.isfinite(df["recomputed"].astype(float))]
    fig = _new((6.0, max(2.0, 0.22 * len(d) + 1.0)))
    ax = fig.add_subplot(1, 1, 1)
    y = -np.arange(len(d), dtype=float)
    diff = d["recomputed"].astype(float).to_numpy() - d["published"].astype(float).to_numpy()
    ok = d["verdict"].astype(str).str.startswith("reproduced").to_numpy()
    ax.barh(y, diff, color=np.where(ok, "#4a8f4a", "#c0392b"))
    ax.set_yticks(y, d["label"].astype(str), fontsize=6)
    ax.axvline(0, color="#555555", lw=0.8)
    ax.set_xlabel("recomputed − published")
    if title:
        ax.set_title(title, fontsize=10)
    return fig
