"""The schema of analysis specs: every section and key, its type, default and meaning.

:mod:`bayesmeta.spec` validates against it; ``models/README.md`` documents it (rendered by
:func:`bayesmeta.spec.schema_markdown`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from bayesmeta import vocab

MEASURES = vocab.MEASURES
METHODS = vocab.METHODS
TESTS = vocab.TESTS
PRESETS = vocab.PRESETS
ENGINES = ("auto", "exact", "mcmc")
SAMPLERS = ("nutpie", "pymc")
DIRECTIONS = vocab.DIRECTIONS
ROW_KINDS = vocab.ROW_KINDS
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_COLUMN_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
#: keys that no longer exist, with what replaces them
RENAMED = {
    ("analysis", "kind"): "a spec needs no kind: the data's roles and [bayes] model decide "
                          "what is fitted (a simulation spec has a [simulation] section)",
    ("data", "outcome_column"): "renamed to [data] outcome (the outcome column)",
    ("report", "transform"): "ratios are shown on their natural scale automatically",
    ("report", "control_survival"): "a control risk needs its uncertainty, per time point: "
                                    "[report] baseline = {time = \"events/n\"} or "
                                    "{time = \"c (lo-hi)\"}",
    ("report", "control_survival_source"): "renamed to [report] baseline_source",
}


# --------------------------------------------------------------------------------------------
# schema: section -> key -> Key(type, default, check, doc)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Key:
    """One allowed key: its TOML type(s), default, extra check and documentation."""

    types: tuple
    default: Any = None
    required: bool = False
    choices: tuple | None = None
    doc: str = ""
    item_types: tuple | None = None  # for arrays


def _k(types, default=None, *, required=False, choices=None, doc="", items=None):
    if not isinstance(types, tuple):
        types = (types,)
    return Key(types, default, required, choices, doc, items)


def _model_names() -> tuple:
    from bayesmeta.registry import BAYES_MODELS

    return BAYES_MODELS


SCHEMA: dict[str, dict[str, Key]] = {
    "analysis": {
        "name": _k(str, required=True, doc="identifier, [a-z0-9_-], used for output file names"),
        "title": _k(str, required=True, doc="human title shown in the report"),
        "description": _k(str, "", doc="free text shown under the title"),
        "outcome": _k(str, "", doc="outcome label when the data have no outcome column"),
        "priority": _k(int, 0, doc="order on the report's index: lower first; ties keep the "
                                   "order given (command line or models/)"),
    },
    "data": {
        "dataset": _k(str, doc="bundled dataset name (see `bayesmeta datasets`)"),
        "path": _k(str, doc="CSV path, relative to the spec file or absolute"),
        "measure": _k(str, required=True, choices=MEASURES, doc="effect measure"),
        "row_kind": _k(str, "auto", choices=ROW_KINDS,
                       doc="what a row is: arms, effect (yi + vi/sei), published (estimate + "
                           "CI); auto = from the columns"),
        "study": _k(str, "", doc="column naming the study (default: a column named 'study')"),
        "time": _k(str, "", doc="column with the follow-up time (numbers, or labels starting "
                                "with one)"),
        "subgroup": _k(str, "", doc="column with the subgroup"),
        "outcome": _k(str, "", doc="column with the outcome (one analysis per outcome)"),
        "outcomes": _k(list, [], items=(str,), doc="outcomes to analyse, in this order "
                                                   "(values of the outcome column)"),
        "include": _k(dict, {}, doc="row rule: {column = [values]} keeps only these rows"),
        "exclude": _k(dict, {}, doc="row rule: {column = [values]} leaves these rows out "
                                    "(e.g. baseline rows: {time = [0]})"),
        "total_level": _k(str, "", doc="subgroup level meaning 'all patients' (pools the "
                                       "other subgroups: analysed apart from them)"),
        "arm": _k(int, 0, doc="measure MC on a two-arm table: use arm 1 or 2's m, sd, n"),
        "time_unit": _k(str, "", doc="unit of the time column for labels (e.g. 'week')"),
        "published": _k(str, "", doc="bundled dataset with the published numbers to audit "
                                     "(with [audit] recipe)"),
    },
    "classical": {
        "method": _k(str, "REML", choices=METHODS, doc="tau² estimator, or FE/MH/PETO"),
        "test": _k(str, "z", choices=TESTS, doc="z (Wald) or knha (Knapp-Hartung)"),
        "preset": _k(str, "", choices=PRESETS + ("",), doc="revman5 | revman_web"),
        "by": _k(str, "", doc="column for a subgroup analysis with the test for subgroup "
                              "differences (default: the subgroup column)"),
        "prediction": _k(bool, False, doc="report a prediction interval"),
    },
    "bayes": {
        "model": _k((str, list), "nnhm", items=(str,),
                    doc="Bayesian model(s): nnhm, nested, binomial-normal, "
                        "survival-published, survival-counts"),
        "engine": _k(str, "auto", choices=ENGINES,
                     doc="exact (quadrature) or mcmc; auto = exact for the models that have "
                         "an exact engine, mcmc for the others (each model's engine is stated "
                         "in the report)"),
        "mu_prior": _k(str, "", doc="prior of mu, e.g. 'normal:0:10' or 'flat'; empty = the "
                       "measure's default (bayesmeta.priors.default_mu_prior)"),
        "tau_prior": _k(str, "", doc="prior of tau, e.g. 'halfnormal:0.5' or a named empirical "
                        "prior ('turner2015-all'); empty = the measure's default "
                        "(bayesmeta.priors.default_tau_prior, scale-aware for MD)"),
        "correlation": _k(str, "ar1", choices=("exchangeable", "ar1"),
                          doc="survival-published: correlation of the published estimates "
                              "over time (ar1 decays with the distance in time)"),
        "rho_prior": _k(str, "uniform", doc="survival-published: prior of the within-source "
                                            "correlation rho ('uniform', 'beta:A:B'); '' = rho "
                                            "fixed at the middle of [sensitivity] rho"),
        "contrast": _k(list, [], items=(str,),
                       doc="two subgroup levels [a, b]: the contrast a − b per time "
                           "(default: the first two levels in order)"),
        "time_structure": _k(str, "exchangeable", choices=("exchangeable", "ar1", "car"),
                             doc="nested: how the cells of a subgroup vary over time: "
                                 "exchangeable, ar1 (ordered times) or car (continuous "
                                 "time, respects the spacing)"),
        "subgroup_effect": _k(str, "fixed", choices=("fixed", "random"),
                              doc="nested: subgroup means as fixed effects (the implied prior "
                                  "of the contrast is stated) or as a random effect"),
        "study_time": _k(str, "independent", choices=("independent", "ar1", "car"),
                         doc="nested: a study's deviations across its times (metafor "
                             "struct CS / AR / CAR)"),
        "within_correlation": _k(str, "exchangeable",
                                 choices=("exchangeable", "decay", "ratio"),
                                 doc="nested: correlation of the sampling errors of one study's "
                                     "(or published source's) rows at different times: "
                                     "exchangeable r, decay r^|t-t'|, or ratio "
                                     "sqrt(min(t,t')/max(t,t')) for cumulative binary outcomes"),
        "within_r": _k((str, int, float), "",
                       doc="nested: that correlation: a number in [0, 1), 'uniform' or "
                           "'beta:A:B' (integrated); empty = 0.5, stated in the report"),
        "window": _k(list, [], items=(str, int, float),
                     doc="nested: times whose equally weighted average is the across-time "
                         "estimand (default: every time of the data)"),
        "extrapolate": _k(bool, False,
                          doc="nested: also report subgroup cells at times the subgroup was not "
                              "observed at (marked EXTRAPOLATION)"),
        "checks": _k(bool, True,
                     doc="nested: workflow checks (prior/posterior predictive, contraction, "
                         "prior-data conflict, LOO against the simpler models)"),
    },
    "sensitivity": {
        "prior_sets": _k(list, [], items=(str,), doc="named prior sets refitted for sensitivity"),
        "tau_priors": _k(list, [], items=(str,), doc="extra tau priors refitted for sensitivity"),
        "rho": _k(list, [], items=(int, float),
                  doc="within-source correlation values (model survival-published)"),
        "within_r": _k(list, [0.0, 0.5, 0.8, 0.9], items=(int, float),
                       doc="nested: known within-study correlations r the model is refitted "
                           "at ([] = none)"),
        "bias_sd": _k(list, [], items=(int, float),
                      doc="survival-published: SDs of an additive bias of the pooled log OR "
                          "(e.g. [0.3, 0.5]: non-randomised, unblinded studies)"),
        "bias_exaggeration": _k(list, [], items=(int, float),
                                doc="survival-published: factors by which the published OR "
                                    "exaggerates the benefit (e.g. [1.2])"),
    },
    "sampling": {
        "draws": _k(int, 1000, doc="posterior draws per chain"),
        "tune": _k(int, 1000, doc="tuning steps per chain"),
        "chains": _k(int, 4, doc="number of chains"),
        "seed": _k(int, 20240101, doc="random seed (CLI --seed overrides)"),
        "target_accept": _k(float, 0.95, doc="NUTS target acceptance, in (0.5, 1)"),
        "sampler": _k(str, "nutpie", choices=SAMPLERS, doc="NUTS implementation"),
        "fast_draws": _k(int, 200, doc="draws per chain with --fast"),
        "fast_tune": _k(int, 200, doc="tuning steps with --fast"),
    },
    "report": {
        "ci_prob": _k(float, 0.95, doc="interval probability of every reported interval"),
        "thresholds": _k(list, [], items=(int, float),
                         doc="clinically relevant thresholds on the natural scale (e.g. OR 1.5)"),
        "direction": _k(str, "lower_is_better", choices=DIRECTIONS,
                        doc="which sign of the effect is a benefit for the treatment"),
        "reversed_outcomes": _k(list, [], items=(str,),
                                doc="outcomes for which the opposite of `direction` holds"),
        "baseline": _k(dict, {}, doc="control-arm risk per time point, with its uncertainty: "
                                     "{time = \"events/n\"} or {time = \"c (lo-hi)\"} (a "
                                     "Beta); needed for absolute effects and a new trial"),
        "baseline_source": _k(str, "", doc="where the baseline risks come from (quoted in the "
                                           "report)"),
        "events": _k(str, "", choices=("", "deaths", "survivors"),
                     doc="what a binary outcome counts (and what the baseline is the risk of); "
                         "deaths implies lower_is_better, survivors higher_is_better"),
        "mcid": _k(float, 0.0, doc="clinically important risk difference (e.g. 0.1 = 10 "
                                   "points): P(gain > mcid) is reported"),
        "new_trial_n": _k(list, [], items=(int,), doc="per-arm sizes of a hypothetical new trial "
                                                      "(model survival-published)"),
        "notes": _k(str, "", doc="free text appended to the report"),
    },
    "audit": {
        "recipe": _k(str, "", doc="published-number audit of a bundled paper "
                                  "(bayesmeta.recipes.RECIPES)"),
    },
    "provenance": {
        "author": _k(str, "", doc="who wrote the spec"),
        "date": _k(str, "", doc="when (ISO date)"),
        "rationale": _k(str, "", doc="why this analysis, which choices and why"),
    },
    "simulation": {
        "model": _k(str, "nnhm", choices=("nnhm", "nested"),
                    doc="data-generating and analysis model: nnhm (normal-normal, DL/REML/PM "
                        "and exact Bayes; bayesmeta.simulate) or nested (study x time x "
                        "subgroup, exact GHM and its REML twin; bayesmeta.ghm_sim)"),
        "n_per_cell": _k(int, 500, doc="simulated meta-analyses per cell (scale x k x tau, "
                         "x r_true for nested), >= 10; MC SE of a 95% coverage is "
                         "sqrt(.95 x .05 / n)"),
        "fast_n_per_cell": _k(int, 100, doc="meta-analyses per cell with --fast "
                              "(<= n_per_cell)"),
        "k": _k(list, [2, 3, 5, 10], items=(int,),
                doc="numbers of studies, each in [2, 50] (nnhm); studies per subgroup, each "
                    "in [2, 20], default [3] (nested)"),
        "tau": _k(list, [], items=(int, float),
                  doc="true tau values (>= 0) on the scale's units (log OR for logOR; "
                      "standardised for nested); empty = the model's default grid "
                      "(bayesmeta.simulate.SCALES; nested: 0, 0.25, 0.5, 0.8, 1)"),
        "r_true": _k(list, [], items=(int, float),
                     doc="nested only: true correlation of a study's sampling errors across "
                         "its times, each in [0, 1); empty = [0, 0.7]"),
        "scales": _k(list, ["logOR"], items=(str,),
                     doc="nnhm only: data-generating scales, each 'logOR' or 'MD'"),
        "priors": _k(list, ["weakly_informative", "empirical"], items=(str,),
                     doc="nnhm only: prior sets for the exact-Bayes intervals "
                         "(bayesmeta.priors.PRIOR_SET_NAMES)"),
        "seed": _k(int, 20240601, doc="random seed (CLI --seed overrides)"),
    },
}
#: [simulation] keys that apply to one model only
SIMULATION_MODEL_KEYS = {"nnhm": ("scales", "priors"), "nested": ("r_true",)}
REQUIRED_SECTIONS = ("analysis", "data")
#: sections a simulation spec may have (it generates its data)
SIMULATION_SECTIONS = ("analysis", "simulation", "report", "provenance")


def _check_simulation(v: _Validator, s: dict[str, dict]):
    """Values of ``[simulation]`` (a simulation spec)."""
    from bayesmeta.simulate import SCALES
    from bayesmeta.spec import _prior_sets_available, _suggest

    a, sim, rep = s["analysis"], s.get("simulation", {}), s.get("report", {})

    def bad(problem, key, fix=None, sec="simulation"):
        raise v.error(problem, section=sec, key=key, fix=fix)

    if not _NAME_RE.match(a["name"]):
        bad(f"Invalid name {a['name']!r}: must match [a-z0-9][a-z0-9_-]* (max 64 chars); "
            "it names output files", "name", sec="analysis")
    n = sim.get("n_per_cell", SCHEMA["simulation"]["n_per_cell"].default)
    if n < 10:
        bad(f"Invalid n_per_cell {n}: must be >= 10", "n_per_cell")
    fast = sim.get("fast_n_per_cell", SCHEMA["simulation"]["fast_n_per_cell"].default)
    if fast < 10:
        bad(f"Invalid fast_n_per_cell {fast}: must be >= 10", "fast_n_per_cell")
    if fast > n:
        bad(f"fast_n_per_cell {fast} exceeds n_per_cell {n}: --fast must not simulate more "
            "than a full run", "fast_n_per_cell")
    model = sim.get("model", SCHEMA["simulation"]["model"].default)
    for other, keys in SIMULATION_MODEL_KEYS.items():
        for key in keys:
            if other != model and key in sim:
                bad(f"{key} does not apply to model = {model!r} (only to {other!r})", key,
                    fix=f"Remove {key}, or set model = {other!r}.")
    kmax = 20 if model == "nested" else 50
    ks = sim.get("k", tuple(SCHEMA["simulation"]["k"].default))
    if not ks:
        bad("k is empty: give at least one number of studies", "k")
    for k in ks:
        if not 2 <= k <= kmax:
            bad(f"Invalid k {k}: must be in [2, {kmax}]"
                + (" for model = 'nested' (studies per subgroup)" if model == "nested" else ""),
                "k")
    for t in sim.get("tau", ()):
        if not (t >= 0 and math.isfinite(t)):
            bad(f"Invalid tau {t!r}: must be a finite number >= 0", "tau")
    for r in sim.get("r_true", ()):
        if not (math.isfinite(r) and 0 <= r < 1):
            bad(f"Invalid r_true {r!r}: must be in [0, 1) (a correlation the sampling errors "
                "of a study can have at every pair of its times)", "r_true")
    for key in ("k", "tau", "r_true"):
        vals = list(sim.get(key, ()))
        if len(set(vals)) != len(vals):
            bad(f"{key} lists a value twice ({vals}): each scenario is simulated once", key)
    if model == "nested":
        scales, names = (), ()
    else:
        scales = sim.get("scales", tuple(SCHEMA["simulation"]["scales"].default))
        if not scales:
            bad("scales is empty: give 'logOR' and/or 'MD'", "scales")
        names = sim.get("priors", ())
    for sc in scales:
        if sc not in SCALES:
            sug = _suggest(sc, SCALES) or next((x for x in SCALES if x.lower() == sc.lower()),
                                               None)
            bad(f"Invalid scale {sc!r}: must be one of {list(SCALES)}", "scales",
                fix=f"Did you mean '{sug}'?" if sug else None)
    if sim.get("tau") and len(scales) > 1:
        bad("tau values are in one scale's units, but several scales are listed", "tau",
            fix="Leave tau empty (each scale's default grid) or use one spec per scale.")
    known = _prior_sets_available()
    if known is not None:
        for name in names:
            if name not in known:
                sug = _suggest(name, known)
                bad(f"unknown prior set {name!r}: must be one of {list(known)}", "priors",
                    fix=f"Did you mean '{sug}'?" if sug else None)
    if "seed" in sim and not 0 <= sim["seed"] < 2**32:
        bad(f"Invalid seed {sim['seed']}: must be in [0, 2**32)", "seed")
    if "ci_prob" in rep and not 0.5 <= rep["ci_prob"] < 1:
        bad(f"Invalid ci_prob {rep['ci_prob']}: must be in [0.5, 1)", "ci_prob", sec="report")
    for key in ("control_survival", "control_survival_source", "thresholds", "new_trial_n",
                "reversed_outcomes", "direction"):
        if key in rep:
            bad(f"[report] {key} does not apply to a simulation spec", key, sec="report")
