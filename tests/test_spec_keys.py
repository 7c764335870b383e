"""Every spec key is honoured or rejected: a walk over the whole schema.

For each key of :data:`bayesmeta.spec.SCHEMA` there is a check that changing it changes what
the analysis does or reports (observed on the fitted analysis, the rendered page, the
results table or the arguments that reach the sampler), or that a value the analysis cannot
use is refused with the key named. ``test_every_key_has_a_check`` guards the guard: a new key
without a check fails the suite.

References: the observable is compared between two specs that differ only in that key (no
expected value comes from the code under test, except where the check is "the user's value
reaches the output unchanged").
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayesmeta import pipeline, sections
from bayesmeta.exceptions import DataWarning, SpecError
from bayesmeta.spec import SCHEMA, load_spec

DATA = Path(__file__).resolve().parent / "data"
CONT = (DATA / "design_continuous.csv").as_posix()
PUB = (DATA / "design_published.csv").as_posix()


def toml(sections_: dict) -> str:
    out = []
    for sec, body in sections_.items():
        out.append(f"[{sec}]")
        for k, v in body.items():
            if isinstance(v, dict):
                inner = ", ".join(f"{a} = {json.dumps(b)}" for a, b in v.items())
                out.append(f"{k} = {{ {inner} }}")
            else:
                out.append(f"{k} = {json.dumps(v)}")
        out.append("")
    return "\n".join(out)


BASE = {"analysis": {"name": "k", "title": "keys"},
        "data": {"path": CONT, "measure": "MD", "study": "trial", "time": "week",
                 "subgroup": "disease"},
        "bayes": {"model": "nnhm"}}


def spec_of(tmp_path, change: dict | None = None, drop=()):
    secs = json.loads(json.dumps(BASE))
    for sec, body in (change or {}).items():
        secs.setdefault(sec, {}).update(body)
    for sec, key in drop:
        secs[sec].pop(key, None)
    p = tmp_path / f"s{len(list(tmp_path.glob('s*.toml')))}.toml"
    p.write_text(toml(secs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return load_spec(p)


def run(spec, ctx=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        an = pipeline.run_analysis(spec, ctx)
        return an, sections.render(an)


def page_text(out) -> str:
    parts = [out.title, out.description, *out.answers, *out.warnings]
    for b in out.blocks:
        parts.append(b.text)
        parts.extend(map(str, b.items))
        if b.table is not None:
            parts.append(b.table.to_string())
    return "\n".join(parts)


def refused(tmp_path, change, key):
    with pytest.raises(SpecError) as e:
        spec_of(tmp_path, change)
    assert key in str(e.value), str(e.value)


# --------------------------------------------------------------------------------------------
# the checks, one per key
# --------------------------------------------------------------------------------------------
def k_analysis_name(t):
    an, out = run(spec_of(t, {"analysis": {"name": "other-name"}}))
    assert out.name == "other-name" and set(an.to_frame()["analysis"]) == {"other-name"}
    refused(t, {"analysis": {"name": "Bad Name"}}, "analysis.name")


def k_analysis_title(t):
    assert run(spec_of(t, {"analysis": {"title": "A title of mine"}}))[1].title == \
        "A title of mine"


def k_analysis_description(t):
    assert run(spec_of(t, {"analysis": {"description": "why I pool"}}))[1].description == \
        "why I pool"


def k_analysis_outcome(t):
    an, _ = run(spec_of(t, {"analysis": {"outcome": "score"}}))
    assert set(an.to_frame()["outcome"]) == {"score"}


def k_analysis_priority(t):
    assert run(spec_of(t, {"analysis": {"priority": 3}}))[1].priority == 3
    assert run(spec_of(t))[1].priority is None


def k_data_dataset(t):
    s = spec_of(t, {"data": {"dataset": "bcg", "measure": "RR", "study": "study"}},
                drop=[("data", "path"), ("data", "time"), ("data", "subgroup")])
    assert run(s)[0].design.k == 13
    with pytest.raises(SpecError, match="data.dataset.*Did you mean 'bcg'"):
        spec_of(t, {"data": {"dataset": "bgc", "measure": "RR"}}, drop=[("data", "path")])


def k_data_path(t):
    assert run(spec_of(t))[0].design.k == 18
    refused(t, {"data": {"path": (t / "missing.csv").as_posix()}}, "data.path")


def k_data_measure(t):
    a = run(spec_of(t))[0].to_frame()
    b = run(spec_of(t, {"data": {"measure": "SMD"}}))[0].to_frame()
    assert set(a["scale"]) == {"MD"} and set(b["scale"]) == {"SMD"}


def k_data_row_kind(t):
    with pytest.raises(Exception, match="published estimates needs column 'estimate'"):
        spec_of(t, {"data": {"row_kind": "published"}})


def k_data_study(t):
    a = run(spec_of(t))[0]
    b = run(spec_of(t, drop=[("data", "study"), ("data", "time")]))[0]
    assert a.design.studies[0] == "S1" and b.design.studies[0] == "study 1"
    assert a.design.repeated_studies() and not b.design.repeated_studies()


def k_data_time(t):
    a = run(spec_of(t))[0].to_frame()
    b = run(spec_of(t, drop=[("data", "time")]))
    assert {"2", "4", "24"} <= set(a["time"])


def k_data_subgroup(t):
    a = run(spec_of(t))[0].to_frame()
    b = run(spec_of(t, drop=[("data", "subgroup")]))[0].to_frame()
    assert {"A", "B"} <= set(a["subgroup"]) and set(b["subgroup"]) == {""}


def k_data_outcome(t):
    f = t / "two.csv"
    d = pd.read_csv(CONT)
    pd.concat([d.assign(out="x"), d.assign(out="y", m1i=d["m1i"] + 1)]).to_csv(f, index=False)
    an = run(spec_of(t, {"data": {"path": f.as_posix(), "outcome": "out"}}))[0]
    assert set(an.to_frame()["outcome"]) == {"x", "y"}


def k_data_outcomes(t):
    f = t / "two.csv"
    d = pd.read_csv(CONT)
    pd.concat([d.assign(out="x"), d.assign(out="y")]).to_csv(f, index=False)
    an = run(spec_of(t, {"data": {"path": f.as_posix(), "outcome": "out",
                                  "outcomes": ["y"]}}))[0]
    assert set(an.to_frame()["outcome"]) == {"y"}
    refused(t, {"data": {"outcomes": ["y"]}}, "data.outcomes")


def k_data_include(t):
    an = run(spec_of(t, {"data": {"include": {"week": [4]}}}))[0]
    assert set(an.design.rows["time"]) == {"4"}


def k_data_exclude(t):
    an = run(spec_of(t, {"data": {"exclude": {"week": [2, 24]}}}))[0]
    assert set(an.design.rows["time"]) == {"4"}


def k_data_total_level(t):
    an = run(spec_of(t, {"data": {"total_level": "A"}}))[0]
    assert [p for p, _ in an.design.parts()] == ["A", "by subgroup"]
    refused(t, {"data": {"total_level": "C"}}, "total_level")


def k_data_arm(t):
    a = run(spec_of(t, {"data": {"measure": "MC", "arm": 1}}))[0].design.rows["yi"]
    b = run(spec_of(t, {"data": {"measure": "MC", "arm": 2}}))[0].design.rows["yi"]
    d = pd.read_csv(CONT)
    np.testing.assert_allclose(a, d["m1i"]) and np.testing.assert_allclose(b, d["m2i"])
    refused(t, {"data": {"arm": 1}}, "data.arm")      # MD has two arms


def k_data_time_unit(t):
    _, out = run(spec_of(t, {"data": {"time_unit": "month"}}))
    assert "month 24" in page_text(out)


def k_data_published(t):
    refused(t, {"data": {"published": "meld_2014_fig3_published"}}, "data.published")


def k_audit_recipe(t):
    s = load_spec(Path(__file__).resolve().parents[1] / "models" / "meld_2014_fig3.toml")
    assert s.audit.recipe == "revman-forest"
    refused(t, {"audit": {"recipe": "revman"}}, "audit.recipe")


def k_classical_method(t):
    a = run(spec_of(t))[0].to_frame()
    b = run(spec_of(t, {"classical": {"method": "DL"}}))[0].to_frame()
    assert "REML" in set(a["method"]) and "DL" in set(b["method"])


def k_classical_test(t):
    b = run(spec_of(t, {"classical": {"test": "knha"}}))[0].to_frame()
    mu = b[(b["source"] == "classical") & (b["parameter"] == "mu") & (b["time"] != "all")]
    assert set(mu["interval"]) == {"t"}


def k_classical_preset(t):
    b = run(spec_of(t, {"classical": {"preset": "revman5", "method": "FE"}}))[0].to_frame()
    assert "IV-FE" in set(b["method"])
    refused(t, {"classical": {"preset": "revman5", "method": "REML"}}, "classical.method")


def k_classical_by(t):
    f = t / "by.csv"
    pd.read_csv(CONT).assign(region=lambda d: np.where(d["trial"].isin(["S1", "S4"]), "n",
                                                         "s")).to_csv(f, index=False)
    an = run(spec_of(t, {"data": {"path": f.as_posix()}, "classical": {"by": "region"}},
                     drop=[("data", "subgroup")]))[0]
    assert set(an.tests["by"]) == {"region"}
    refused(t, {"classical": {"by": "regio"}}, "classical.by")


def k_classical_prediction(t):
    a = run(spec_of(t))[0].to_frame()
    b = run(spec_of(t, {"classical": {"prediction": True}}))[0].to_frame()
    cl = lambda d: set(d[d["source"] == "classical"]["parameter"])  # noqa: E731
    assert "theta_new" not in cl(a) and "theta_new" in cl(b)


def k_bayes_model(t):
    b = run(spec_of(t, {"bayes": {"model": ["nnhm", "nested"]}}),
            pipeline.RunContext(fast=True, seed=1))[0]
    assert {r.fit.model for r in b.fits(source="bayesian")} == {"nnhm", "nested"}
    refused(t, {"bayes": {"model": "nestde"}}, "bayes.model")


def k_bayes_engine(t, monkeypatch):
    assert _sampler_kwargs(t, monkeypatch, {})  # engine = "mcmc" reaches the sampler
    refused(t, {"bayes": {"engine": "exact", "model": "binomial-normal"}}, "bayes.engine")


def k_bayes_mu_prior(t):
    an = run(spec_of(t, {"bayes": {"mu_prior": "normal:0:0.01"}}))[0].to_frame()
    mu = an[(an["method"] == "exact-NNHM") & (an["parameter"] == "mu")]
    assert (mu["estimate"].abs() < 0.05).all()


def k_bayes_tau_prior(t):
    a = run(spec_of(t, {"bayes": {"tau_prior": "halfnormal:0.01"}}))[0].to_frame()
    tau = a[(a["method"] == "exact-NNHM") & (a["parameter"] == "tau")]
    assert (tau["ci_high"] < 0.03).all()


def k_bayes_contrast(t):
    an = run(spec_of(t, {"bayes": {"contrast": ["B", "A"]}}))[0]
    assert set(an.classical_contrasts()["subgroup"]) == {"B - A"}
    refused(t, {"bayes": {"contrast": ["A", "C"]}}, "bayes.contrast")


NESTED = {"model": "nested", "checks": False}


def _nested_fit(t, bayes=None, sens=None):
    ch = {"bayes": {**NESTED, **(bayes or {})}, "sensitivity": {"within_r": [], **(sens or {})}}
    an = run(spec_of(t, ch))[0]
    return an, an.fits(source="bayesian", model="nested")[0].fit


def _names(fit):
    return {p.name for p in fit.params()}


def k_bayes_time_structure(t):
    assert "rho" in _names(_nested_fit(t, {"time_structure": "ar1"})[1])
    assert "times car" in _nested_fit(t, {"time_structure": "car"})[1].method
    assert "rho" not in _names(_nested_fit(t)[1])
    refused(t, {"bayes": {"time_structure": "ar1"}}, "bayes.time_structure")


def k_bayes_subgroup_effect(t):
    assert "sigma_subgroup" in _names(_nested_fit(t, {"subgroup_effect": "random"})[1])
    f = _nested_fit(t)[1]
    assert "sigma_subgroup" not in _names(f)
    assert any("implied prior of each contrast" in n for n in f.notes)
    refused(t, {"bayes": {"subgroup_effect": "random"}}, "bayes.subgroup_effect")


def k_bayes_study_time(t):
    assert "rho_within" in _names(_nested_fit(t, {"study_time": "car"})[1])
    refused(t, {"bayes": {"study_time": "ar1"}}, "bayes.study_time")


def k_bayes_within_correlation(t):
    f = _nested_fit(t, {"within_correlation": "decay", "within_r": 0.9})[1]
    assert "r 0.9 decay" in f.method
    g = _nested_fit(t, {"within_r": 0.9})[1]
    s, u = f.summary(0.95), g.summary(0.95)
    p = f.find("mu", subgroup="A", time="avg(2,4,24)")
    assert s.loc[p, "estimate"] != pytest.approx(u.loc[p, "estimate"], rel=1e-6)
    refused(t, {"bayes": {"within_correlation": "ratio"}}, "bayes.within_correlation")


def k_bayes_within_r(t):
    assert "r 0.2" in _nested_fit(t, {"within_r": 0.2})[1].method
    assert "r" in _names(_nested_fit(t, {"within_r": "beta:2:2"})[1])
    refused(t, {"bayes": {**NESTED, "within_r": 1.5}}, "bayes.within_r")
    refused(t, {"bayes": {"within_r": 0.3}}, "bayes.within_r")


def k_bayes_window(t):
    f = _nested_fit(t, {"window": [2, 4]})[1]
    assert {p.get("time") for p in f.params() if p.get("time").startswith("avg(")} == {
        "avg(2,4)"}
    refused(t, {"bayes": {**NESTED, "window": [3]}}, "bayes.window")
    refused(t, {"bayes": {"window": [2]}}, "bayes.window")


def k_bayes_extrapolate(t):
    f = _nested_fit(t, {"extrapolate": True})[1]
    assert "mu" in _names(f)  # every cell is observed here: nothing to mark
    refused(t, {"bayes": {"extrapolate": True}}, "bayes.extrapolate")


def k_bayes_checks(t):
    an = run(spec_of(t, {"bayes": {"model": "nested"}, "sensitivity": {"within_r": []}}))[0]
    assert "prior_posterior" in next(iter(an.checks.values()))
    assert not _nested_fit(t)[0].checks
    refused(t, {"bayes": {"checks": False}}, "bayes.checks")


def k_sensitivity_within_r(t):
    an = _nested_fit(t, sens={"within_r": [0.1, 0.7]})[0]
    assert [r.setting for r in an.fits(role="sensitivity")] == ["r = 0.1", "r = 0.7"]
    refused(t, {"sensitivity": {"within_r": [0.5]}}, "sensitivity.within_r")


def k_sensitivity_prior_sets(t):
    an = run(spec_of(t, {"sensitivity": {"prior_sets": ["sceptical"]}}))[0]
    assert {r.setting for r in an.fits(role="sensitivity")} == {"sceptical"}


def k_sensitivity_tau_priors(t):
    an = run(spec_of(t, {"sensitivity": {"tau_priors": ["halfcauchy:1"]}}))[0]
    assert {r.setting for r in an.fits(role="sensitivity")} == {"tau ~ HalfCauchy(scale=1)"}


def k_sensitivity_rho(t):
    s = spec_of(t, {"data": {"path": PUB, "measure": "OR", "study": ""},
                    "bayes": {"model": "survival-published"},
                    "sensitivity": {"rho": [0.1, 0.9]}})
    an = run(s)[0]
    assert {r.setting for r in an.fits(role="sensitivity")} == {
        f"{c}, rho {r}" for c in ("ar1", "exchangeable") for r in ("0.1", "0.9")}
    refused(t, {"sensitivity": {"rho": [0.5]}}, "sensitivity.rho")


def _sampler_kwargs(t, monkeypatch, change):
    from bayesmeta import mcmc

    seen = {}

    def fake(*a, **kw):
        seen.update(kw)
        raise RuntimeError("stop")
    monkeypatch.setattr(mcmc, "fit_nnhm", fake)
    with pytest.raises(Exception, match="stop"):
        run(spec_of(t, {"bayes": {"engine": "mcmc"}, "sampling": change}),
            pipeline.RunContext(fast="fast_draws" in change or "fast_tune" in change))
    return seen


@pytest.mark.parametrize("key,value,kw", [
    ("draws", 123, "draws"), ("tune", 77, "tune"), ("chains", 3, "chains"),
    ("seed", 99, "seed"), ("target_accept", 0.9, "target_accept"), ("sampler", "pymc",
                                                                         "sampler"),
    ("fast_draws", 55, "draws"), ("fast_tune", 44, "tune")])
def test_sampling_keys_reach_the_sampler(tmp_path, monkeypatch, key, value, kw):
    assert _sampler_kwargs(tmp_path, monkeypatch, {key: value})[kw] == value


def k_report_ci_prob(t):
    an = run(spec_of(t, {"report": {"ci_prob": 0.8}}))[0]
    assert set(an.to_frame()["level"]) == {0.8}


def k_report_thresholds(t):
    an = run(spec_of(t, {"report": {"thresholds": [-1.0]}}))[0]
    assert "p_beyond_-1" in an.exceedance().columns


def k_report_direction(t):
    a = run(spec_of(t))[0].exceedance()["p_benefit"]
    b = run(spec_of(t, {"report": {"direction": "higher_is_better"}}))[0].exceedance()
    np.testing.assert_allclose(a + b["p_benefit"], 1.0, atol=1e-12)


def k_report_reversed_outcomes(t):
    f = t / "two.csv"
    d = pd.read_csv(CONT)
    pd.concat([d.assign(out="x"), d.assign(out="y")]).to_csv(f, index=False)
    an = run(spec_of(t, {"data": {"path": f.as_posix(), "outcome": "out"},
                         "report": {"reversed_outcomes": ["y"]}}))[0]
    e = an.exceedance()
    np.testing.assert_allclose(e[e["outcome"] == "x"]["p_benefit"].to_numpy()
                               + e[e["outcome"] == "y"]["p_benefit"].to_numpy(), 1.0,
                               atol=1e-12)


def _surv(t, report, bayes=None, sensitivity=None):
    return spec_of(t, {"data": {"path": PUB, "measure": "OR", "study": ""},
                       "bayes": {"model": "survival-published", **(bayes or {})},
                       "report": report, "sensitivity": sensitivity or {}})


BASE4 = {"4": "0.8 (0.65-0.9)", "8": "0.7 (0.55-0.82)", "12": "30/50", "24": "25/50"}


def _answers(t, report, bayes=None, sensitivity=None):
    return "\n".join(run(_surv(t, report, bayes, sensitivity))[1].answers)


def k_report_baseline(t):
    assert "No absolute survival gain" in _answers(t, {})
    a = _answers(t, {"baseline": BASE4, "baseline_source": "my registry"})
    assert "Absolute survival gain" in a and "NNTB" in a
    refused(t, {"bayes": {"model": "survival-published"},
                "data": {"path": PUB, "measure": "OR", "study": ""},
                "report": {"baseline": {"4": "0.8"}, "baseline_source": "x"}},
            "report.baseline")


def k_report_baseline_source(t):
    _, out = run(_surv(t, {"baseline": BASE4, "baseline_source": "my registry 2020"}))
    assert "my registry 2020" in page_text(out)
    refused(t, {"bayes": {"model": "survival-published"},
                "data": {"path": PUB, "measure": "OR", "study": ""},
                "report": {"baseline": BASE4}}, "baseline_source")


def k_report_events(t):
    a = _answers(t, {"direction": "higher_is_better"})
    b = _answers(t, {"events": "deaths", "direction": "lower_is_better"})
    assert "odds ratios of survival" in a and "odds ratios of death" in b
    refused(t, {"report": {"events": "deaths", "direction": "higher_is_better"}},
            "report.direction")


def k_report_mcid(t):
    a = _answers(t, {"baseline": BASE4, "baseline_source": "x", "mcid": 0.05})
    assert "P(gain > 5 points)" in a


def k_bayes_correlation(t):
    a = run(_surv(t, {}, {"correlation": "ar1"}))[0].to_frame()
    b = run(_surv(t, {}, {"correlation": "exchangeable"}))[0].to_frame()
    assert not np.allclose(a["estimate"], b["estimate"])
    refused(t, {"bayes": {"correlation": "ar1"}}, "bayes.correlation")


def k_bayes_rho_prior(t):
    a = run(_surv(t, {}, {"rho_prior": "uniform"}))[0].to_frame()
    b = run(_surv(t, {}, {"rho_prior": "beta:8:2"}))[0].to_frame()
    assert "rho" in set(a["parameter"]) and not np.allclose(a["estimate"], b["estimate"])
    refused(t, {"bayes": {"model": "survival-published", "rho_prior": "betta:1:1"},
                "data": {"path": PUB, "measure": "OR", "study": ""}}, "bayes.rho_prior")


def k_sensitivity_bias_sd(t):
    an = run(_surv(t, {}, sensitivity={"bias_sd": [0.4]}))[0]
    assert any("bias SD 0.4" in r.setting for r in an.fits(role="sensitivity"))
    refused(t, {"sensitivity": {"bias_sd": [0.4]}}, "sensitivity.bias_sd")


def k_sensitivity_bias_exaggeration(t):
    an = run(_surv(t, {}, sensitivity={"bias_exaggeration": [1.3]}))[0]
    assert any("exaggerated x1.3" in r.setting for r in an.fits(role="sensitivity"))


def k_report_new_trial_n(t):
    _, out = run(_surv(t, {"new_trial_n": [321], "baseline": BASE4, "baseline_source": "x"}))
    assert any("321 patients per arm" in a for a in out.answers)


def k_report_notes(t):
    assert "my closing remark" in page_text(run(spec_of(
        t, {"report": {"notes": "my closing remark"}}))[1])


def k_provenance_author(t):
    assert "Ada" in page_text(run(spec_of(t, {"provenance": {"author": "Ada"}}))[1])


def k_provenance_date(t):
    assert "2026-12-01" in page_text(run(spec_of(t, {"provenance": {"date": "2026-12-01"}}))[1])


def k_provenance_rationale(t):
    assert "because" in page_text(run(spec_of(t, {"provenance": {"rationale": "because"}}))[1])


SIM = {"analysis": {"name": "sim", "title": "sim"},
       "simulation": {"n_per_cell": 20, "fast_n_per_cell": 10, "k": [2], "tau": [0.0],
                      "priors": ["weakly_informative"], "seed": 5}}


def sim_run(t, change):
    from bayesmeta.pipeline import RunContext
    from bayesmeta.sim_report import run_simulation

    secs = json.loads(json.dumps(SIM))
    for sec, body in change.items():
        secs.setdefault(sec, {}).update(body)
    p = t / f"sim{len(list(t.glob('sim*.toml')))}.toml"
    p.write_text(toml(secs))
    return run_simulation(load_spec(p), RunContext(fast=False))


def k_simulation(t):
    base = sim_run(t, {})
    tab = base.tables["coverage"]
    assert set(tab["k"]) == {2} and set(tab["tau"]) == {0.0} and set(tab["n"]) == {20}
    assert set(sim_run(t, {"simulation": {"k": [3]}}).tables["coverage"]["k"]) == {3}
    assert set(sim_run(t, {"simulation": {"tau": [0.4]}}).tables["coverage"]["tau"]) == {0.4}
    assert set(sim_run(t, {"simulation": {"scales": ["MD"], "tau": []}}).tables["coverage"][
        "scale"]) == {"MD"}
    m = set(sim_run(t, {"simulation": {"priors": ["empirical"]}}).tables["coverage"]["method"])
    assert any("empirical" in x for x in m)
    a = sim_run(t, {"simulation": {"seed": 6}}).tables["coverage"]
    assert not a["width"].equals(tab["width"])


def _one_dataset_per_chunk(monkeypatch):
    """Nested chunks run on one dataset each (the real engines, a fraction of the cost);
    returns the list of (k, tau, r_true) the data generator was called with."""
    from bayesmeta import ghm_sim

    seen, real_run, real_draw = [], ghm_sim.run_nested_chunk, ghm_sim._draw

    def draw(rng, k, tau, r_true):
        seen.append((k, tau, r_true))
        return real_draw(rng, k, tau, r_true)

    monkeypatch.setattr(ghm_sim, "_draw", draw)
    monkeypatch.setattr(ghm_sim, "run_nested_chunk", lambda c: real_run(dict(c, size=1)))
    return seen


NESTED_SIM = {"analysis": {"name": "nsim", "title": "nsim"},
          "simulation": {"model": "nested", "k": [2], "tau": [0.5], "r_true": [0.7],
                         "n_per_cell": 10, "fast_n_per_cell": 10, "seed": 5}}


def nested_sim_run(t, change):
    from bayesmeta.pipeline import RunContext
    from bayesmeta.sim_report import run_simulation

    secs = json.loads(json.dumps(NESTED_SIM))
    secs["simulation"].update(change)
    p = t / f"nsim{len(list(t.glob('nsim*.toml')))}.toml"
    p.write_text(toml(secs))
    return run_simulation(load_spec(p), RunContext(fast=False))


def k_simulation_model(t, monkeypatch):
    """model = "nested" runs the nested simulation (its methods and estimands); the default
    runs the normal-normal battery."""
    _one_dataset_per_chunk(monkeypatch)
    nn = sim_run(t, {}).tables["coverage"]
    assert "estimand" not in nn and {"DL-z", "Bayes-weakly_informative"} <= set(nn["method"])
    ne = nested_sim_run(t, {}).tables["coverage"]
    assert set(ne["method"]) == {"GHM-r0.5", "GHM-r0", "REML-z", "REML-t"}
    assert set(ne["estimand"]) == {"contrast", "cell"}


def k_simulation_r_true(t, monkeypatch):
    """r_true reaches the nested data generator and the table; it is refused for nnhm."""
    seen = _one_dataset_per_chunk(monkeypatch)
    ne = nested_sim_run(t, {"r_true": [0.3]}).tables["coverage"]
    assert set(ne["r_true"]) == {0.3} and seen and {s[2] for s in seen} == {0.3}
    with pytest.raises(SpecError) as e:
        sim_run(t, {"simulation": {"r_true": [0.3]}})
    assert e.value.key == "simulation.r_true"


SIM_KEYS = {f"simulation.{k}" for k in ("n_per_cell", "k", "tau", "scales", "priors", "seed")}


def test_fast_n_per_cell(tmp_path):
    from bayesmeta.pipeline import RunContext
    from bayesmeta.sim_report import run_simulation

    p = tmp_path / "s.toml"
    p.write_text(toml(SIM))
    out = run_simulation(load_spec(p), RunContext(fast=True))
    assert set(out.tables["coverage"]["n"]) == {10}


CHECKS = {name[2:].replace("_", ".", 1): fn for name, fn in list(globals().items())
          if name.startswith("k_") and name != "k_simulation"}
CHECKS.update({k: k_simulation for k in SIM_KEYS})
OTHER_TESTS = {f"sampling.{k}" for k in SCHEMA["sampling"]} | {"simulation.fast_n_per_cell"}


def test_every_key_has_a_check():
    keys = {f"{s}.{k}" for s, body in SCHEMA.items() for k in body}
    assert keys == set(CHECKS) | OTHER_TESTS, sorted(keys ^ (set(CHECKS) | OTHER_TESTS))


@pytest.mark.parametrize("key", sorted(set(CHECKS) - SIM_KEYS) + ["simulation"])
def test_key_is_honoured_or_rejected(key, tmp_path, monkeypatch):
    fn = CHECKS["simulation.k"] if key == "simulation" else CHECKS[key]
    if "monkeypatch" in fn.__code__.co_varnames[:fn.__code__.co_argcount]:
        fn(tmp_path, monkeypatch)
    else:
        fn(tmp_path)
