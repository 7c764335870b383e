"""Rendering tests of the report figures: artists, labels, tick texts and layout boxes.

References: the expected texts are closed forms computed here from the inputs (exp of a log
ratio printed with 2 decimals; the observed time points; the set of marks drawn), and the
layout checks compare window extents of the drawn artists (Agg renderer) - no pixels.
"""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from bayesmeta import plots  # noqa: E402

PLAIN = re.compile(r"^[\u2212-]?\d+(\.\d+)?$")  # "0.25", "1", "−0.5": no 10^x, no ×


def draw(fig):
    FigureCanvasAgg(fig).draw()
    return fig.canvas.get_renderer()


def ticktexts(axis):
    return [t.get_text() for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]


def minor_texts(axis):
    return [t.get_text() for t in axis.get_minorticklabels() if t.get_text()]


def overlaps(a, b) -> bool:
    return a.x0 < b.x1 - 0.5 and b.x0 < a.x1 - 0.5 and a.y0 < b.y1 - 0.5 and b.y0 < a.y1 - 0.5


def legend_texts(fig):
    return [t.get_text() for lg in fig.legends for t in lg.get_texts()]


# ------------------------------------------------------------------ inputs
OR = {"A 2011": (0.5, 0.2, 1.25), "B 2012": (0.8, 0.4, 1.6), "C 2016": (1.4, 0.6, 3.2)}


def forest_inputs():
    st = pd.DataFrame({"panel": ["12", "4", "4"], "study": ["C 2016", "A 2011", "B 2012"],
                       "estimate": np.log([OR[s][0] for s in ("C 2016", "A 2011", "B 2012")]),
                       "ci_low": np.log([OR[s][1] for s in ("C 2016", "A 2011", "B 2012")]),
                       "ci_high": np.log([OR[s][2] for s in ("C 2016", "A 2011", "B 2012")]),
                       "weight": [100.0, 60.0, 40.0]})
    po = pd.DataFrame({"panel": ["4", "overall", "overall"],
                       "source": ["classical", "classical", "published"],
                       "label": ["classical: DL", "classical: REML",
                                 "published: published (printed)"],
                       "estimate": np.log([0.6, 0.7, 0.65]), "ci_low": np.log([0.35, 0.5, 0.5]),
                       "ci_high": np.log([1.0, 0.95, 0.85])})
    return st, po


# ------------------------------------------------------------------ ratio ticks
@pytest.mark.parametrize("lo, hi, ticks", [
    (0.2, 5.0, [0.25, 0.5, 1, 2, 4]),
    (0.45, 0.85, [0.5, 0.6, 0.7, 0.8]),
    (0.01, 100.0, [0.01, 0.1, 1, 10, 100]),
    (0.05, 3.0, [0.125, 0.25, 0.5, 1, 2]),
    (0.05, 8.0, [0.125, 0.25, 0.5, 1, 2, 4, 8]),
    (0.3, 1.05, [0.4, 0.6, 0.8, 1.0]),
])
def test_ratio_ticks_are_plain_values(lo, hi, ticks):
    assert plots.ratio_ticks(lo, hi) == pytest.approx(ticks)


def test_clean_label_drops_repeated_source():
    assert plots.clean_label("published: published (printed)") == "published (printed)"
    assert plots.clean_label("bayesian: exact-NNHM") == "bayesian: exact-NNHM"


# ------------------------------------------------------------------ forest
def test_forest_layout_columns_ticks_and_legend():
    st, po = forest_inputs()
    fig = plots.plot_forest(st, po, transform="exp", xlabel="odds ratio")
    r = draw(fig)
    ax_lab, ax, ax_est, ax_wt = fig.axes
    # plain ticks on the ratio axis, no minor labels (no 10^0, 2x10^0, overprinting)
    ticks = ticktexts(ax.xaxis)
    assert ticks and all(PLAIN.match(t) for t in ticks), ticks
    assert "1" in ticks and minor_texts(ax.xaxis) == []
    # study column: header, panels in numeric order (4 before 12), studies, pooled labels
    labels = [t.get_text() for t in ax_lab.texts]
    assert labels[0] == "Study"
    assert labels.index("4") < labels.index("A 2011") < labels.index("12") \
        < labels.index("C 2016") < labels.index("overall")
    assert "published (printed)" in labels
    assert not any("published: published" in x for x in labels)
    # estimate column: exp of the logs with 2 decimals (closed form)
    est = [t.get_text() for t in ax_est.texts]
    assert est[0] == "Estimate [95% CI]"
    for s, (e, lo, hi) in OR.items():
        assert f"{e:.2f} [{lo:.2f}, {hi:.2f}]" in est, s
    assert "0.65 [0.50, 0.85]" in est
    assert sorted(t.get_text() for t in ax_wt.texts) == ["100.0%", "40.0%", "60.0%", "Weight"]
    # diamonds: one polygon per pooled row
    assert len(ax.patches) == len(po)
    # legend lists only what is drawn: no shrinkage, no Bayesian marks here
    assert legend_texts(fig) == ["study (95% CI)", "classical pooled", "published"]
    # nothing overlaps the plot: legend below it, text columns beside it
    box = ax.get_window_extent(r)
    for lg in fig.legends:
        assert not overlaps(lg.get_window_extent(r), box)
    for t in ax_lab.texts + ax_est.texts + ax_wt.texts:
        assert not overlaps(t.get_window_extent(r), box), t.get_text()


def test_forest_with_shrinkage_and_no_weights_mean_difference():
    st, po = forest_inputs()
    st = st.drop(columns="weight")
    sh = st[["panel", "study", "estimate", "ci_low", "ci_high"]].assign(
        estimate=lambda d: d["estimate"] * 0.5)
    po = pd.concat([po, po.iloc[[0]].assign(source="bayesian", label="bayesian: exact-NNHM")])
    fig = plots.plot_forest(st, po, shrinkage=sh, xlabel="MD")
    draw(fig)
    assert len(fig.axes) == 3  # no weight column without weights
    ax = fig.axes[1]
    assert ax.get_xscale() == "linear"
    assert legend_texts(fig) == ["study (95% CI)", "study, Bayesian shrinkage",
                                 "classical pooled", "Bayesian posterior", "published"]
    # MD estimates printed as given (no exp): -0.69 = log(0.5)
    assert f"{math.log(0.5):.2f} [{math.log(0.2):.2f}, {math.log(1.25):.2f}]" in \
        [t.get_text() for t in fig.axes[2].texts]


def test_forest_pooled_only():
    _, po = forest_inputs()
    fig = plots.plot_forest(pd.DataFrame(columns=["panel", "study", "estimate", "ci_low",
                                                  "ci_high"]), po, transform="exp")
    draw(fig)
    assert legend_texts(fig) == ["classical pooled", "published"]
    assert "Study" not in [t.get_text() for t in fig.axes[0].texts]  # no study rows


# ------------------------------------------------------------------ over time
def over_time_inputs():
    t = [4, 8, 12, 24]
    post = pd.DataFrame({"time": t, "estimate": np.log([2.0, 2.05, 1.97, 1.76]),
                         "ci_low": np.log([0.99, 1.3, 1.28, 1.05]),
                         "ci_high": np.log([4.82, 3.35, 3.07, 2.83])})
    pub = post.assign(estimate=np.log([4.12, 2.47, 2.21, 1.71]),
                      ci_low=np.log([0.52, 1.38, 1.31, 0.92]),
                      ci_high=np.log([32.5, 4.43, 3.74, 3.19]))
    prob = pd.concat([pd.DataFrame({"time": t, "label": "P(OR > 1)",
                                    "value": [0.97, 0.999, 0.999, 0.98]}),
                      pd.DataFrame({"time": t, "label": "P(OR > 1.5)",
                                    "value": [0.82, 0.91, 0.89, 0.74]})])
    return post, pub, prob


def test_over_time_ticks_at_observed_times_shared_axis_plain_ratio():
    post, pub, prob = over_time_inputs()
    fig = plots.plot_over_time(post, published=pub, prob=prob, transform="exp",
                               threshold=1.5, ylabel="survival OR")
    r = draw(fig)
    ax, ax2 = fig.axes
    assert ticktexts(ax2.xaxis) == ["4", "8", "12", "24"]          # observed times only
    assert list(ax.get_xticks()) == list(ax2.get_xticks()) == [4, 8, 12, 24]
    assert ax.get_xlim() == ax2.get_xlim()
    yt = ticktexts(ax.yaxis)
    assert yt and all(PLAIN.match(t) for t in yt) and minor_texts(ax.yaxis) == []
    assert legend_texts(fig) == ["posterior (band: interval)", "published", "threshold 1.5",
                                 "P(OR > 1)", "P(OR > 1.5)"]
    for lg in fig.legends:
        for a in (ax, ax2):
            assert not overlaps(lg.get_window_extent(r), a.get_window_extent(r))
    # the x label is not under the legend
    assert not overlaps(ax2.xaxis.label.get_window_extent(r),
                        fig.legends[0].get_window_extent(r))


def test_over_time_series_without_published_or_probabilities():
    post, _, _ = over_time_inputs()
    two = pd.concat([post.assign(series="rho 0"), post.assign(series="rho 0.9")])
    fig = plots.plot_over_time(two, ylabel="MD", xlabel="months")
    draw(fig)
    (ax,) = fig.axes
    assert ticktexts(ax.xaxis) == ["4", "8", "12", "24"] and ax.get_xlabel() == "months"
    assert legend_texts(fig) == ["posterior rho 0 (band: interval)",
                                 "posterior rho 0.9 (band: interval)"]


# ------------------------------------------------------------------ sensitivity
def test_sensitivity_groups_numeric_no_legend_plain_ticks():
    g = ["12 wk", "24 wk", "4 wk"]
    df = pd.DataFrame({"group": np.repeat(g, 2), "setting": ["rho 0", "rho 0.9"] * 3,
                       "estimate": np.log([1.5, 1.7] * 3), "ci_low": np.log([0.9, 1.1] * 3),
                       "ci_high": np.log([2.5, 3.4] * 3)})
    fig = plots.plot_sensitivity(df, transform="exp", xlabel="survival OR")
    r = draw(fig)
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["4 wk", "rho 0", "rho 0.9", "12 wk", "rho 0", "rho 0.9", "24 wk",
                      "rho 0", "rho 0.9"]
    bold = [t.get_text() for t in ax.get_yticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["4 wk", "12 wk", "24 wk"]
    assert ax.get_legend() is None and not fig.legends
    xt = ticktexts(ax.xaxis)
    assert xt and all(PLAIN.match(t) for t in xt) and minor_texts(ax.xaxis) == []
    assert len(ax.lines) == 2 * len(df) + 1  # whisker + dot per row, reference line
    assert r is not None


# ------------------------------------------------------------------ tau
def test_tau_panels_sorted_and_legend_outside():
    tau = np.linspace(0, 2, 30)
    cur = pd.concat([pd.DataFrame({"panel": p, "tau": tau, "prior": np.exp(-tau),
                                   "posterior": np.exp(-(tau - 0.5) ** 2)})
                     for p in ["24", "4", "12"]])
    fig = plots.plot_tau_prior_posterior(cur, xlabel="tau (points)")
    r = draw(fig)
    assert [a.get_title() for a in fig.axes] == ["4", "12", "24"]
    assert len({a.get_xlim() for a in fig.axes}) == 1  # one tau range across panels
    assert legend_texts(fig) == ["prior", "posterior"]
    for a in fig.axes:
        assert not overlaps(fig.legends[0].get_window_extent(r), a.get_window_extent(r))
        assert len(ticktexts(a.xaxis)) <= 6
