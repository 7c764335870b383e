"""Spec loading and validation (bayesmeta.spec).

References: the TOML texts written here (line numbers counted in the text itself), hashlib for
the spec hash, models/README.md for documentation coverage.
"""

import hashlib
import textwrap
from pathlib import Path

import pytest

from bayesmeta.exceptions import SpecError
from bayesmeta.spec import SCHEMA, bundled_specs, find_line, load_spec, models_dir

GOOD = """\
[analysis]
name = "t"
title = "T"
kind = "generic"

[data]
dataset = "bcg"
measure = "RR"

[bayes]
tau_prior = "halfnormal:0.5"
"""


def write(tmp_path, text, name="spec.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


@pytest.mark.parametrize("path", bundled_specs(), ids=lambda p: p.name)
def test_every_bundled_spec_validates(path):
    spec = load_spec(path)
    assert spec.data_path.is_file()
    assert spec.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundled_specs_cover_every_analysis_the_issues_ask_for():
    """Issue 4's six bundled analyses, plus issue 6's simulation results in the report."""
    kinds = {load_spec(p).kind for p in bundled_specs()}
    assert kinds == {"fig3_meld", "one_arm", "survival_published", "nested_published",
                     "complications", "generic", "simulation"}


def test_good_spec_defaults(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.analysis.kind == "generic" and spec.data.measure == "RR"
    assert spec.sampling.draws == 1000 and spec.report.ci_prob == 0.95
    assert spec.classical.method == "FE"


def test_unknown_key_names_line_key_and_suggestion(tmp_path):
    p = write(tmp_path, GOOD.replace('title = "T"', 'titel = "T"'))
    with pytest.raises(SpecError, match=r"Did you mean 'title'\?") as e:
        load_spec(p)
    assert e.value.line == 3 and e.value.key == "analysis.titel"
    assert str(p) in str(e.value) and "line 3" in str(e.value)


def test_unknown_section_suggests(tmp_path):
    p = write(tmp_path, GOOD.replace("[bayes]", "[bayse]"))
    with pytest.raises(SpecError, match=r"Did you mean \[bayes\]") as e:
        load_spec(p)
    assert e.value.line == 10


@pytest.mark.parametrize("old,new,match,line", [
    ('kind = "generic"', 'kind = "fig3"', r"Invalid kind 'fig3': must be one of", 4),
    ('measure = "RR"', 'measure = "rr"', r"Did you mean 'RR'", 8),
    ('measure = "RR"', 'measure = 3', r"must be a string", 8),
    ('tau_prior = "halfnormal:0.5"', 'tau_prior = "halfnormol:0.5"', r"unknown prior", 11),
    ('tau_prior = "halfnormal:0.5"', 'tau_prior = "halfnormal:-1"', r"must be > 0", 11),
    ('tau_prior = "halfnormal:0.5"', 'tau_prior = "normal:0:1"', r"not for tau", 11),
    ('dataset = "bcg"', 'dataset = "bgc"', r"Did you mean 'bcg'", 7),
])
def test_bad_values(tmp_path, old, new, match, line):
    with pytest.raises(SpecError, match=match) as e:
        load_spec(write(tmp_path, GOOD.replace(old, new)))
    assert e.value.line == line


def test_wrong_type_in_sampling(tmp_path):
    p = write(tmp_path, GOOD + '\n[sampling]\ndraws = "many"\n')
    with pytest.raises(SpecError, match=r"Invalid draws 'many': must be an integer") as e:
        load_spec(p)
    assert e.value.line == 14 and e.value.key == "sampling.draws"


@pytest.mark.parametrize("path,match", [
    ("../../../etc/passwd", "leaves the project"),
    ("/etc/passwd", "must be relative"),
    ("missing.csv", "not found"),
])
def test_data_path_rules(tmp_path, path, match):
    text = GOOD.replace('dataset = "bcg"', f'path = "{path}"')
    sub = tmp_path / "proj" / "models"
    sub.mkdir(parents=True)
    (tmp_path / "proj" / "pyproject.toml").write_text("")
    with pytest.raises(SpecError, match=match) as e:
        load_spec(write(sub, text))
    assert e.value.key == "data.path" and e.value.line == 7


def test_path_inside_project_is_allowed(tmp_path):
    proj = tmp_path / "proj"
    (proj / "models").mkdir(parents=True)
    (proj / "data").mkdir()
    (proj / "pyproject.toml").write_text("")
    (proj / "data" / "x.csv").write_text("study,ai,bi,ci,di\nA,1,2,3,4\n")
    text = GOOD.replace('dataset = "bcg"', 'path = "../data/x.csv"').replace(
        "[bayes]", "[bayes]\n").replace('measure = "RR"', 'measure = "OR"')
    spec = load_spec(write(proj / "models", text))
    assert spec.data_path == (proj / "data" / "x.csv").resolve()


@pytest.mark.parametrize("extra,match,key", [
    ('\n[classical]\npreset = "revman5"\ntest = "knha"\n', "contradicts", "classical.test"),
    ('\n[sensitivity]\nrho = [0.5]\n', "survival_published", "sensitivity.rho"),
    ('\n[sampling]\ntarget_accept = 1.5\n', r"must be in \(0.5, 1\)", "sampling.target_accept"),
    ('\n[classical]\nby = "subgrp"\n', "not in bcg.csv", "classical.by"),
])
def test_contradictory_or_impossible_settings(tmp_path, extra, match, key):
    with pytest.raises(SpecError, match=match) as e:
        load_spec(write(tmp_path, GOOD + extra))
    assert e.value.key == key and e.value.line is not None


def test_kind_measure_contradiction(tmp_path):
    text = GOOD.replace('kind = "generic"', 'kind = "survival_published"')
    with pytest.raises(SpecError, match="needs measure OR"):
        load_spec(write(tmp_path, text))


def test_name_cannot_escape_output_dir(tmp_path):
    with pytest.raises(SpecError, match="must match") as e:
        load_spec(write(tmp_path, GOOD.replace('name = "t"', 'name = "../evil"')))
    assert e.value.line == 2


def test_invalid_toml_has_line(tmp_path):
    with pytest.raises(SpecError, match="invalid TOML") as e:
        load_spec(write(tmp_path, GOOD + "\nthis is not toml\n"))
    assert e.value.line == 13  # GOOD has 11 lines, then a blank line


def test_spec_is_data_not_code(tmp_path):
    """A string that looks like code stays a string (tomllib never evaluates)."""
    marker = tmp_path / "pwned"
    text = GOOD.replace('title = "T"', f'title = "__import__(\'os\').mkdir(\'{marker}\')"')
    spec = load_spec(write(tmp_path, text))
    assert not marker.exists() and spec.analysis.title.startswith("__import__")


def test_find_line_dotted_and_headers():
    text = "[a]\nx = 1\n\n[b]\ny = 2 # c\n"
    assert find_line(text, "b", "y") == 5 and find_line(text, "a") == 1


def test_readme_documents_every_key():
    readme = (models_dir() / "README.md").read_text(encoding="utf-8")
    missing = [f"{sec}.{k}" for sec, keys in SCHEMA.items() for k in keys
               if f"`{k}`" not in readme]
    assert not missing, missing
