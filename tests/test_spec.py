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
description = "D"

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


def _what_is_fitted(spec):
    """What a bundled spec analyses: a spec has no kind; its models, audit recipe and design
    decide (the six bundled analyses plus the simulation)."""
    if spec.is_simulation:
        return "simulation"
    models = (spec.bayes.model,) if isinstance(spec.bayes.model, str) else spec.bayes.model
    return (tuple(models), spec.audit.recipe, spec.data.measure, spec.design.row_kind,
            spec.data.total_level, spec.data.arm)


def test_bundled_specs_cover_every_bundled_analysis():
    """The six bundled analyses, plus the simulation results in the report:
    2014 Figure 3 (per-week NNHM + nested across weeks, RevMan forest audit), 2014 Table 2
    (one-arm change MC of arm 1, its table audited), 2023 survival (published ORs over time),
    2023 liver function (nested over published subgroup x week cells, 'all' apart),
    2023 complications (NNHM on published ORs), a generic arm-level analysis (BCG)."""
    got = {_what_is_fitted(load_spec(p)) for p in bundled_specs()}
    assert got == {
        (("nnhm", "nested"), "revman-forest", "MD", "arms", "", 0),
        (("nnhm",), "onearm-table", "MC", "arms", "", 1),
        (("survival-published",), "", "OR", "published", "", 0),
        (("nested",), "", "MD", "published", "all", 0),
        (("nnhm",), "", "OR", "published", "", 0),
        (("nnhm",), "", "RR", "arms", "", 0),
        "simulation"}


def test_good_spec_defaults(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.kind == "analysis" and not spec.is_simulation and spec.data.measure == "RR"
    assert spec.sampling.draws == 1000 and spec.report.ci_prob == 0.95
    assert spec.classical.method == "REML"
    assert spec.bayes.model == "nnhm" and spec.bayes.engine == "auto"
    assert spec.data.row_kind == "auto" and spec.design.row_kind == "arms"


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
    ('description = "D"', 'kind = "generic"',
     r"'kind' in \[analysis\] no longer exists: a spec needs no kind", 4),
    ('measure = "RR"', 'measure = "RR"\nrow_kind = "published_pooled"',
     r"Invalid row_kind 'published_pooled': must be one of .*Did you mean 'published'", 9),
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


def test_missing_data_file_names_line_and_key(tmp_path):
    text = GOOD.replace('dataset = "bcg"', 'path = "missing.csv"')
    with pytest.raises(SpecError, match="not found") as e:
        load_spec(write(tmp_path, text))
    assert e.value.key == "data.path" and e.value.line == 7


@pytest.mark.parametrize("how", ["relative-outside-project", "absolute"])
def test_data_may_live_outside_the_project(tmp_path, how):
    """Users keep data anywhere: a path relative to the spec file may leave the project, and
    an absolute path is accepted (output paths keep their own checks)."""
    proj = tmp_path / "proj"
    (proj / "models").mkdir(parents=True)
    (proj / "pyproject.toml").write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.csv").write_text("study,ai,bi,ci,di\nA,1,2,3,4\nB,2,5,3,6\n")
    ref = "../../elsewhere/x.csv" if how != "absolute" else str(elsewhere / "x.csv")
    text = GOOD.replace('dataset = "bcg"', f'path = "{ref}"').replace(
        'measure = "RR"', 'measure = "OR"')
    spec = load_spec(write(proj / "models", text))
    assert spec.data_path == (elsewhere / "x.csv").resolve()
    assert spec.design.k == 2 and spec.design.studies == ["A", "B"]


def test_data_path_that_is_not_a_table_is_a_data_error(tmp_path):
    """An absolute path is accepted, but the file is read and checked at validation: a
    non-CSV file is a DataError naming the file and the row."""
    from bayesmeta.exceptions import DataError

    target = tmp_path / "notes.txt"
    target.write_text("a,b\n1,2,3,4\n")
    text = GOOD.replace('dataset = "bcg"', f'path = "{target}"')
    with pytest.raises(DataError) as e:
        load_spec(write(tmp_path, text))
    assert e.value.file == str(target) and e.value.row == 2


@pytest.mark.parametrize("extra,match,key", [
    ('\n[classical]\npreset = "revman5"\ntest = "knha"\n', "contradicts", "classical.test"),
    ('\n[sensitivity]\nrho = [0.5]\n', "survival-published", "sensitivity.rho"),
    ('\n[sampling]\ntarget_accept = 1.5\n', r"must be in \(0.5, 1\)", "sampling.target_accept"),
    ('\n[classical]\nby = "subgrp"\n', "not in bcg.csv", "classical.by"),
])
def test_contradictory_or_impossible_settings(tmp_path, extra, match, key):
    with pytest.raises(SpecError, match=match) as e:
        load_spec(write(tmp_path, GOOD + extra))
    assert e.value.key == key and e.value.line is not None


ROWS = """\
[analysis]
name = "t"
title = "T"

[data]
dataset = "msc_2023_pooled"
measure = "OR"
outcome = "outcome"
outcomes = ["rash", "hcc"]
"""


@pytest.mark.parametrize("old,new,match,key,line", [
    ('"hcc"]', '"hcx"]', r"outcomes: value\(s\) \['hcx'\] not found in column 'outcome'",
     "data.outcomes", 9),
    ('outcome = "outcome"', 'outcome = "outcom"',
     r"outcome column 'outcom' is not in msc_2023_pooled.csv.*Did you mean 'outcome'",
     "data.outcome", 8),
    ('"hcc"]\n', '"hcc"]\nexclude = { notee = ["x"] }\n',
     r"exclude names column 'notee'", "data.exclude.notee", 10),
    ('"hcc"]\n', '"hcc"]\n\n[data.exclude]\nnote = ["nothing like this"]\n',
     r"exclude: value\(s\) \['nothing like this'\] not found in column 'note'",
     "data.exclude.note", 12),
])
def test_data_settings_checked_against_the_table(tmp_path, old, new, match, key, line):
    """Columns, outcomes and row rules named by the spec are checked against the data at
    validation, and the error points at the spec's line and key (the TOML texts here; line
    numbers counted in them)."""
    assert old in ROWS
    with pytest.raises(SpecError, match=match) as e:
        load_spec(write(tmp_path, ROWS.replace(old, new)))
    assert e.value.key == key and e.value.line == line, str(e.value)


def test_model_measure_contradiction(tmp_path):
    """A model the design cannot carry is refused at validation, at the model's line: the
    published-OR survival model on risk ratios."""
    text = GOOD.replace('tau_prior = "halfnormal:0.5"',
                        'tau_prior = "halfnormal:0.5"\nmodel = "survival-published"')
    with pytest.raises(SpecError, match="needs measure OR") as e:
        load_spec(write(tmp_path, text))
    assert e.value.key == "bayes.model" and e.value.line == 12  # the line after tau_prior


@pytest.mark.parametrize("data,published,match,key", [
    ('dataset = "bcg"\nmeasure = "RR"', "meld_2014_fig3_published",
     r"recipe 'revman-forest' .* needs measure MD, the data use 'RR'", "audit.recipe"),
    ('dataset = "meld_2014_fig3"\nmeasure = "MD"', "meld_2014_fig3_published",
     r"recipe 'revman-forest' .* needs a time column", "audit.recipe"),
    ('dataset = "meld_2014_fig3"\nmeasure = "MD"\ntime = "time"', "msc_2014_table2_onearm",
     r"the printed table 'msc_2014_table2_onearm' lacks columns \['level'", "data.published"),
])
def test_recipe_the_design_cannot_feed_is_refused(tmp_path, data, published, match, key):
    """An audit recipe reads a particular design and printed table (2014 Figure 3: arm-level
    MDs by week, the forest plot's printed numbers): anything else is refused at validation,
    at the key's line, not after fitting."""
    text = (f'[analysis]\nname = "t"\ntitle = "T"\n\n[data]\n{data}\n'
            f'published = "{published}"\n\n[audit]\nrecipe = "revman-forest"\n')
    with pytest.raises(SpecError, match=match) as e:
        load_spec(write(tmp_path, text))
    lines = text.splitlines()
    want = key.split(".")[1] + " ="
    assert e.value.key == key
    assert e.value.line == next(i for i, ln in enumerate(lines, 1) if ln.startswith(want))


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
