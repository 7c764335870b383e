"""Report figures (matplotlib, Agg): forest with shrinkage, tau prior vs posterior, survival over
time, prior sensitivity.

Every function takes tidy DataFrames (numbers on the analysis scale) and returns a
:class:`matplotlib.figure.Figure`; nothing is shown or saved here (``bayesmeta.report`` saves
PNG and SVG). Intervals are drawn exactly as given: the caller decides the level (0.95).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

COLORS = {"published": "#7f7f7f", "classical": "#000000", "bayesian": "#1f5fbf",
          "study": "#000000", "shrinkage": "#1f5fbf", "prior": "#999999"}
plt.rcParams["svg.hashsalt"] = "bayesmeta"  # deterministic SVG ids


def _new(figsize) -> Figure:
    return Figure(figsize=figsize, layout="constrained")


def _tf(x, transform):
    x = np.asarray(x, dtype=float)
    return np.exp(x) if transform == "exp" else x


def plot_forest(studies: pd.DataFrame, pooled: pd.DataFrame, *, shrinkage: pd.DataFrame | None
                = None, panel_order=None, xlabel: str = "effect", transform: str = "none",
                title: str = "") -> Figure:
    """Forest plot per panel (time point / subgroup) with classical and Bayesian estimates.

    Parameters
    ----------
    studies : DataFrame
        Columns ``panel, study, estimate, ci_low, ci_high`` (observed per-study effects with
        their classical CI), optional ``weight`` (percent; sets the square size).
    pooled : DataFrame
        Columns ``panel, source, label, estimate, ci_low, ci_high``; ``source`` in
        published/classical/bayesian. Drawn as diamonds (published grey, classical black,
        Bayesian blue).
    shrinkage : DataFrame, optional
        Bayesian shrinkage estimates of the study effects: ``panel, study, estimate, ci_low,
        ci_high``; drawn in blue just below each study's observed estimate.
    transform : {"none", "exp"}
        ``exp`` plots ratio measures on their natural scale (log axis).
    """
    panels = list(panel_order) if panel_order is not None else list(
        dict.fromkeys(list(studies.get("panel", pd.Series(dtype=str))) + list(pooled["panel"])))
    rows_per = []
    for p in panels:
        n_st = int((studies["panel"] == p).sum()) if len(studies) else 0
        n_po = int((pooled["panel"] == p).sum())
        rows_per.append(n_st + n_po + 1.5)
    height = max(2.5, 0.32 * sum(rows_per) + 1.2)
    fig = _new((8.0, height))
    ax = fig.add_subplot(1, 1, 1)
    y = 0.0
    yticks, ylabels = [], []
    for p in panels:
        ax.text(0.0, y, str(p), transform=ax.get_yaxis_transform(), ha="left", va="center",
                fontweight="bold", fontsize=9)
        y -= 1.0
        st = studies[studies["panel"] == p] if len(studies) else studies
        for _, r in st.iterrows():
            lo, est, hi = _tf([r["ci_low"], r["estimate"], r["ci_high"]], transform)
            ax.plot([lo, hi], [y, y], color=COLORS["study"], lw=1)
            size = 4 + 0.25 * float(r["weight"]) if "weight" in st and pd.notna(r.get("weight")) \
                else 6
            ax.plot([est], [y], marker="s", color=COLORS["study"], ms=min(size, 14), ls="none")
            if shrinkage is not None and len(shrinkage):
                sh = shrinkage[(shrinkage["panel"] == p) & (shrinkage["study"] == r["study"])]
                for _, s in sh.iterrows():
                    slo, sest, shi = _tf([s["ci_low"], s["estimate"], s["ci_high"]], transform)
                    ax.plot([slo, shi], [y - 0.3, y - 0.3], color=COLORS["shrinkage"], lw=1)
                    ax.plot([sest], [y - 0.3], marker="o", color=COLORS["shrinkage"], ms=4,
                            ls="none")
            yticks.append(y)
            ylabels.append(str(r["study"]))
            y -= 1.0
        for _, r in pooled[pooled["panel"] == p].iterrows():
            lo, est, hi = _tf([r["ci_low"], r["estimate"], r["ci_high"]], transform)
            if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(est)):
                y -= 1.0
                continue
            c = COLORS.get(r["source"], "#444444")
            ax.fill([lo, est, hi, est], [y, y + 0.3, y, y - 0.3], color=c,
                    alpha=0.85 if r["source"] != "published" else 0.5)
            yticks.append(y)
            ylabels.append(str(r["label"]))
            y -= 1.0
        y -= 0.5
    ref = 1.0 if transform == "exp" else 0.0
    ax.axvline(ref, color="#555555", lw=0.8, ls="--")
    if transform == "exp":
        ax.set_xscale("log")
    ax.set_yticks(yticks, ylabels, fontsize=8)
    ax.set_ylim(y + 0.5, 1.0)
    ax.set_xlabel(xlabel)
    handles = [plt.Line2D([], [], marker="s", color=COLORS["study"], ls="-", label="study (observed, 95% CI)"),
               plt.Line2D([], [], marker="D", color=COLORS["classical"], ls="none", label="classical pooled"),
               plt.Line2D([], [], marker="D", color=COLORS["bayesian"], ls="none", label="Bayesian posterior"),
               plt.Line2D([], [], marker="D", color=COLORS["published"], ls="none", label="published")]
    if shrinkage is not None and len(shrinkage):
        handles.insert(1, plt.Line2D([], [], marker="o", color=COLORS["shrinkage"], ls="-",
                                     label="study (Bayesian shrinkage)"))
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.06 *
              8 / max(height, 4)), ncol=3, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_tau_prior_posterior(curves: pd.DataFrame, *, xlabel: str = "tau",
                             title: str = "") -> Figure:
    """Prior and posterior density of tau.

    Parameters
    ----------
    curves : DataFrame
        Columns ``panel, tau, prior, posterior`` (densities on a grid; one curve per panel).
    """
    panels = list(dict.fromkeys(curves["panel"]))
    n = max(1, len(panels))
    ncol = min(n, 3)
    nrow = math.ceil(n / ncol)
    fig = _new((3.2 * ncol, 2.6 * nrow))
    for i, p in enumerate(panels):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        c = curves[curves["panel"] == p]
        ax.plot(c["tau"], c["prior"], color=COLORS["prior"], ls="--", label="prior")
        ax.plot(c["tau"], c["posterior"], color=COLORS["bayesian"], label="posterior")
        ax.set_title(str(p), fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_yticks([])
        ax.set_xlim(left=0)
        if i == 0:
            ax.legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_over_time(post: pd.DataFrame, *, published: pd.DataFrame | None = None,
                   prob: pd.DataFrame | None = None, transform: str = "none",
                   ylabel: str = "effect", threshold: float | None = None,
                   title: str = "") -> Figure:
    """Effect over follow-up time with credible bands, and probabilities of benefit.

    Parameters
    ----------
    post : DataFrame
        ``time`` (numeric), ``estimate``, ``ci_low``, ``ci_high`` and optional ``series``
        (e.g. rho value or prior set; one band per series) on the analysis scale.
    published : DataFrame, optional
        ``time, estimate, ci_low, ci_high`` printed in the paper (grey, offset).
    prob : DataFrame, optional
        ``time, label, value``: probabilities (e.g. P(OR > 1), P(OR > 1.5)) for the lower panel.
    """
    fig = _new((7.0, 5.2 if prob is not None else 3.4))
    ax = fig.add_subplot(2 if prob is not None else 1, 1, 1)
    series = list(dict.fromkeys(post["series"])) if "series" in post else [""]
    cmap = plt.get_cmap("Blues")
    for j, s in enumerate(series):
        d = post[post["series"] == s] if "series" in post else post
        d = d.sort_values("time")
        col = cmap(0.45 + 0.5 * (j + 1) / (len(series) + 1)) if len(series) > 1 \
            else COLORS["bayesian"]
        t = d["time"].to_numpy(float) + 0.25 * (j - (len(series) - 1) / 2)
        ax.fill_between(t, _tf(d["ci_low"], transform), _tf(d["ci_high"], transform),
                        color=col, alpha=0.18)
        ax.plot(t, _tf(d["estimate"], transform), marker="o", color=col,
                label=f"posterior {s}".strip())
    if published is not None and len(published):
        p = published.sort_values("time")
        t = p["time"].to_numpy(float) + 0.8
        est, lo, hi = (_tf(p[c], transform) for c in ("estimate", "ci_low", "ci_high"))
        ax.errorbar(t, est, yerr=[est - lo, hi - est], fmt="D", color=COLORS["published"],
                    label="published", capsize=2)
    ref = 1.0 if transform == "exp" else 0.0
    ax.axhline(ref, color="#555555", lw=0.8, ls="--")
    if threshold is not None:
        ax.axhline(threshold, color="#c0392b", lw=0.8, ls=":", label=f"threshold {threshold:g}")
    if transform == "exp":
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_xlabel("weeks")
    ax.legend(fontsize=7, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    if prob is not None:
        ax2 = fig.add_subplot(2, 1, 2)
        for lab in dict.fromkeys(prob["label"]):
            d = prob[prob["label"] == lab].sort_values("time")
            ax2.plot(d["time"], d["value"], marker="o", label=str(lab))
        ax2.set_ylim(0, 1.02)
        ax2.axhline(0.5, color="#bbbbbb", lw=0.6)
        ax2.set_ylabel("posterior probability")
        ax2.set_xlabel("weeks")
        ax2.legend(fontsize=7, frameon=False)
    return fig


def plot_sensitivity(df: pd.DataFrame, *, xlabel: str = "effect", transform: str = "none",
                     title: str = "") -> Figure:
    """Dot-and-whisker plot of a parameter under several priors.

    Parameters
    ----------
    df : DataFrame
        ``group`` (e.g. time point), ``setting`` (prior set / rho), ``estimate``, ``ci_low``,
        ``ci_high``.
    """
    groups = list(dict.fromkeys(df["group"]))
    settings = list(dict.fromkeys(df["setting"]))
    fig = _new((7.0, max(2.4, 0.28 * len(df) + 0.45 * len(groups) + 1.0)))
    ax = fig.add_subplot(1, 1, 1)
    cmap = plt.get_cmap("tab10")
    y = 0.0
    yt, yl = [], []
    for g in groups:
        for j, s in enumerate(settings):
            r = df[(df["group"] == g) & (df["setting"] == s)]
            if not len(r):
                continue
            r = r.iloc[0]
            lo, est, hi = _tf([r["ci_low"], r["estimate"], r["ci_high"]], transform)
            ax.plot([lo, hi], [y, y], color=cmap(j % 10), lw=1.2)
            ax.plot([est], [y], "o", color=cmap(j % 10), ms=4,
                    label=str(s) if g == groups[0] else None)
            yt.append(y)
            yl.append(f"{g} · {s}")
            y -= 1
        y -= 0.6
    ax.axvline(1.0 if transform == "exp" else 0.0, color="#555555", lw=0.8, ls="--")
    if transform == "exp":
        ax.set_xscale("log")
    ax.set_yticks(yt, yl, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7, frameon=False, loc="best")
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
