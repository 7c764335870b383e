"""Declarative analysis specifications: ``models/*.toml`` → :class:`AnalysisSpec`.

A spec is data, never code: it is parsed with :mod:`tomllib` and validated against
:data:`SCHEMA` before anything runs. Every problem is a :class:`~bayesmeta.exceptions.SpecError`
naming the file, the line, the key and, where one exists, the nearest valid key
("did you mean ...?"). A spec needs no "kind": the data's roles and the models asked for
decide what is fitted (:mod:`bayesmeta.pipeline`); ``bayesmeta validate`` builds the design
and asks every requested model whether the design can carry it, so nothing fails after
fitting has started.

Sections (every key is documented in ``models/README.md``; :func:`schema_markdown` renders the
same table from :data:`SCHEMA`, and a test checks that the README lists every key):

``[analysis]``     name, title, description, outcome, priority
``[data]``         dataset | path, measure, row_kind, study/time/subgroup/outcome columns,
                   outcomes, include, exclude, total_level, arm, time_unit, published
``[classical]``    method, test, preset, by, prediction
``[bayes]``        model, engine, mu_prior, tau_prior, correlation, rho_prior, contrast,
                   time_structure, subgroup_effect, study_time, within_correlation, within_r,
                   window, extrapolate, checks (nested; bayesmeta.nested_part)
``[sensitivity]``  prior_sets, tau_priors, rho, bias_sd, bias_exaggeration, within_r
``[sampling]``     draws, tune, chains, seed, target_accept, sampler, fast_draws, fast_tune
``[report]``       ci_prob, thresholds, direction, reversed_outcomes, baseline,
                   baseline_source, events, mcid, new_trial_n, notes
``[audit]``        recipe (published-number audit of a bundled paper: bayesmeta.recipes)
``[provenance]``   author, date, rationale
``[simulation]``   n_per_cell, fast_n_per_cell, k, tau, scales, priors, seed (a simulation
                   spec generates its data: no ``[data]``, ``[classical]``, ``[bayes]``,
                   ``[sensitivity]`` or ``[sampling]``)

Python and the CLI build the same :class:`AnalysisSpec` with :func:`spec_from_options`,
through the same validators.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import re
import tomllib
from types import MappingProxyType
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bayesmeta import vocab
from bayesmeta.exceptions import SpecError

from bayesmeta.spec_schema import (DIRECTIONS, ENGINES, MEASURES, METHODS, PRESETS,  # noqa: F401
                                   RENAMED, REQUIRED_SECTIONS, ROW_KINDS, SAMPLERS, SCHEMA,
                                   SIMULATION_SECTIONS, TESTS, Key, _COLUMN_RE, _NAME_RE,
                                   _check_simulation, _model_names)


# --------------------------------------------------------------------------------------------
# value objects
# --------------------------------------------------------------------------------------------
def _section_class(name: str, keys: dict[str, Key]):
    fields = []
    for k, key in keys.items():
        default = key.default
        if isinstance(default, list):
            default = tuple(default)
        elif isinstance(default, dict):
            default = MappingProxyType(dict(default))
        fields.append((k, Any, field(default=default)))
    cls = dataclasses.make_dataclass(f"{name.title()}Section", fields, frozen=True)
    cls.__doc__ = f"Validated ``[{name}]`` section (keys: {', '.join(keys)})."
    cls.__module__ = __name__
    return cls


SECTION_CLASSES = {name: _section_class(name, keys) for name, keys in SCHEMA.items()}
AnalysisSection = SECTION_CLASSES["analysis"]
DataSection = SECTION_CLASSES["data"]
ClassicalSection = SECTION_CLASSES["classical"]
BayesSection = SECTION_CLASSES["bayes"]
SensitivitySection = SECTION_CLASSES["sensitivity"]
SamplingSection = SECTION_CLASSES["sampling"]
ReportSection = SECTION_CLASSES["report"]
AuditSection = SECTION_CLASSES["audit"]
ProvenanceSection = SECTION_CLASSES["provenance"]


@dataclass(frozen=True)
class AnalysisSpec:
    """A validated analysis specification.

    Attributes
    ----------
    path : Path or None
        The spec file (resolved); None for a spec built in Python or by the CLI.
    sha256 : str
        SHA-256 of the spec file's bytes (or of the options' canonical text).
    data_path : Path or None
        The data file. A simulation spec reads no file: the spec file itself, so provenance
        records its checksum as the data's.
    analysis, data, classical, bayes, sensitivity, sampling, report, audit, provenance
        One frozen section object each; absent sections hold their defaults.
    """

    path: Path | None
    sha256: str
    data_path: Path | None
    analysis: Any
    data: Any
    classical: Any
    bayes: Any
    sensitivity: Any
    sampling: Any
    report: Any
    audit: Any
    provenance: Any
    published_path: Path | None = None
    simulation: Any = None
    #: which keys the user gave, per section (keys not given hold defaults)
    given: Any = field(default=None, repr=False, compare=False, hash=False)
    #: the validated design (built by :func:`load_spec`; the pipeline reuses it)
    design: Any = field(default=None, repr=False, compare=False, hash=False)

    @property
    def name(self) -> str:
        return self.analysis.name

    @property
    def is_simulation(self) -> bool:
        return self.simulation is not None

    @property
    def kind(self) -> str:
        """``"simulation"`` or ``"analysis"`` (for progress lines and provenance)."""
        return "simulation" if self.is_simulation else "analysis"

    def replace_sampling(self, **changes) -> "AnalysisSpec":
        """Copy with changed sampling settings (e.g. the CLI's ``--seed``)."""
        return dataclasses.replace(self, sampling=dataclasses.replace(self.sampling, **changes))

    def with_data_path(self, path: Path) -> "AnalysisSpec":
        return dataclasses.replace(self, data_path=Path(path))

    def uses_mcmc(self) -> bool:
        """Does this analysis fit PyMC models (and so pay a compile)?"""
        if self.is_simulation:
            return False
        from bayesmeta.registry import MODELS

        models = [self.bayes.model] if isinstance(self.bayes.model, str) else self.bayes.model
        return any(self.bayes.engine == "mcmc" or "exact" not in MODELS[m].engines
                   for m in models if m in MODELS)


# --------------------------------------------------------------------------------------------
# locating keys in the text (tomllib keeps no positions)
# --------------------------------------------------------------------------------------------
_HEADER_RE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\s*(#.*)?$")
_KEY_RE = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")


def find_line(text: str, section: str | None, key: str | None = None) -> int | None:
    """1-based line of ``key`` inside ``[section]`` (or of the header if ``key`` is None).

    A best-effort scan of the TOML text: headers ``[a]``/``[a.b]`` and ``key =`` lines,
    including dotted keys (``a.b = ...`` at top level).
    """
    current = ""
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0] if "=" not in raw else raw
        m = _HEADER_RE.match(line)
        if m and not line.lstrip().startswith("[["):
            current = m.group(1).replace('"', "").replace("'", "").replace(" ", "")
            if key is None and current == section:
                return lineno
            continue
        m = _KEY_RE.match(raw)
        if m:
            full = m.group(1).replace('"', "").replace("'", "")
            dotted = f"{current}.{full}" if current else full
            target = f"{section}.{key}" if section and key else (section or key)
            if dotted == target or (key is None and dotted.startswith(f"{section}.")):
                return lineno
    return None


def _suggest(word: str, options) -> str | None:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return close[0] if close else None


# --------------------------------------------------------------------------------------------
# prior strings
# --------------------------------------------------------------------------------------------
def parse_prior_string(text: str, kind: str | None = None):
    """Parse a prior string with :func:`bayesmeta.priors.parse_prior`.

    Returns the prior object. Raises the engine's ``SpecError`` on a bad string.
    """
    from bayesmeta import priors

    return priors.parse_prior(text, kind=kind)


def _prior_sets_available() -> tuple[str, ...] | None:
    try:
        from bayesmeta import priors
    except ImportError:  # pragma: no cover - engine not installed
        return None
    names = getattr(priors, "PRIOR_SET_NAMES", None)
    return tuple(names) if names is not None else None


# --------------------------------------------------------------------------------------------
# data location
# --------------------------------------------------------------------------------------------
def project_root(start: Path) -> Path:
    """The project directory holding ``start``: nearest ancestor with pyproject.toml, else
    ``start`` itself."""
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / "pyproject.toml").is_file():
            return d
    return start


def _data_dir() -> Path:
    from bayesmeta import datasets

    return Path(datasets.data_dir())


def _manifest() -> dict:
    import json

    f = _data_dir() / "MANIFEST.json"
    if not f.is_file():
        return {}
    return json.loads(f.read_text(encoding="utf-8")).get("datasets", {})


def _dataset_file(name: str) -> Path | None:
    """Path of a bundled dataset's CSV (from the data directory's MANIFEST.json)."""
    entry = _manifest().get(name)
    if entry is None:
        return None
    p = _data_dir() / entry["file"]
    return p if p.is_file() else None


def _dataset_names() -> list[str]:
    return sorted(_manifest())


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _type_name(types) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true/false",
             list: "an array", dict: "a table"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_type(value, key: Key) -> bool:
    if bool in key.types:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if float in key.types and isinstance(value, int):
        return True
    return isinstance(value, key.types)


class _Validator:
    def __init__(self, path: Path | None, text: str):
        self.path, self.text = path, text

    def error(self, problem, section=None, key=None, fix=None, line=None):
        if line is None:
            line = find_line(self.text, section, key)
        full = f"{section}.{key}" if section and key else (section or key)
        return SpecError(problem, file=str(self.path) if self.path else None, line=line,
                         key=full, fix=fix)

    def sections(self, raw: dict) -> dict[str, dict]:
        out = {}
        for sec, body in raw.items():
            if sec not in SCHEMA:
                sug = _suggest(sec, SCHEMA)
                raise self.error(
                    f"unknown section [{sec}]: must be one of {sorted(SCHEMA)}",
                    section=sec, fix=f"Did you mean [{sug}]?" if sug else None,
                    line=find_line(self.text, sec) or find_line(self.text, None, sec))
            if not isinstance(body, dict):
                raise self.error(f"'{sec}' must be a table [{sec}], got {type(body).__name__}",
                                 key=sec, line=find_line(self.text, None, sec))
            out[sec] = self.keys(sec, body)
        if "simulation" in out:
            for sec in out:
                if sec not in SIMULATION_SECTIONS:
                    raise self.error(
                        f"section [{sec}] does not apply to a simulation spec (it generates "
                        f"its data): allowed sections are {list(SIMULATION_SECTIONS)}",
                        section=sec, line=find_line(self.text, sec),
                        fix="Put the simulation settings in [simulation]; see "
                            "models/README.md.")
            if "analysis" not in out:
                raise self.error("missing required section [analysis]", section="analysis",
                                 line=0)
            return out
        for sec in REQUIRED_SECTIONS:
            if sec not in out:
                raise self.error(f"missing required section [{sec}]", section=sec,
                                 fix=f"Add a [{sec}] table; see models/README.md.", line=0)
        return out

    def keys(self, sec: str, body: dict) -> dict:
        schema = SCHEMA[sec]
        values = {}
        for k, v in body.items():
            if (sec, k) in RENAMED:
                raise self.error(f"key '{k}' in [{sec}] no longer exists: {RENAMED[(sec, k)]}",
                                 section=sec, key=k, fix=f"Remove '{k}'.")
            if k not in schema:
                sug = _suggest(k, schema)
                raise self.error(
                    f"unknown key '{k}' in [{sec}]: valid keys are {sorted(schema)}",
                    section=sec, key=k, fix=f"Did you mean '{sug}'?" if sug else None)
            key = schema[k]
            if not _check_type(v, key):
                raise self.error(f"Invalid {k} {v!r}: must be {_type_name(key.types)}, got "
                                 f"{type(v).__name__}", section=sec, key=k)
            if isinstance(v, list):
                for item in v:
                    if key.item_types and not _check_type(item, Key(key.item_types)):
                        raise self.error(f"Invalid item {item!r} in {k}: every item must be "
                                         f"{_type_name(key.item_types)}", section=sec, key=k)
                v = tuple(float(i) if float in (key.item_types or ()) else i for i in v)
            if isinstance(v, dict):
                v = self.rule(sec, k, v)
            if float in key.types and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            self.values(sec, k, v)
            if key.choices is not None and v not in key.choices:
                sug = _suggest(str(v), [c for c in key.choices if c])
                if sug is None and isinstance(v, str):
                    up = [c for c in key.choices if c and c.lower() == v.lower()]
                    sug = up[0] if up else None
                raise self.error(f"Invalid {k} {v!r}: must be one of "
                                 f"{[c for c in key.choices if c]}", section=sec, key=k,
                                 fix=f"Did you mean '{sug}'?" if sug else None)
            values[k] = v
        for k, key in schema.items():
            if key.required and k not in values:
                raise self.error(f"missing required key '{k}' in [{sec}]", section=sec, key=k,
                                 line=find_line(self.text, sec),
                                 fix=f"Add {k} = ... ({key.doc}).")
        return values

    def values(self, sec: str, k: str, v):
        """Values no analysis can use: a number that is not finite, a count beyond
        :data:`_LIMITS`, a string with control characters (free text may span lines)."""
        from bayesmeta.textsafe import has_control, terminal_safe

        items = v if isinstance(v, (list, tuple)) else (
            [x for vals in v.values() for x in vals] if isinstance(v, dict) else (v,))
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                raise self.error(f"Invalid {k} {item!r}: must be a finite number", section=sec,
                                 key=k, fix="Give a number (inf and nan are not values).")
            if isinstance(item, int) and not isinstance(item, bool) and (sec, k) in _LIMITS:
                top = _LIMITS[(sec, k)]
                if item > top:
                    raise self.error(f"Invalid {k} {item}: must be <= {top:,}", section=sec,
                                     key=k, fix=f"Use at most {top:,} ({k} is a count per "
                                                "chain or per run; more cannot finish).")
            if isinstance(item, str):
                bad = has_control(item, newlines=k in _FREE_TEXT)
                if bad is not None:
                    raise self.error(
                        f"Invalid {k} '{terminal_safe(item, newlines=False)}': contains the "
                        f"control character '{terminal_safe(bad, newlines=False)}'",
                        section=sec, key=k,
                        fix="Remove it (an escape sequence pasted from a terminal?); only "
                            "printable text is allowed.")

    def rule(self, sec: str, k: str, table: dict) -> dict:
        """A row rule ``{column = [values]}``: values are arrays of strings or numbers."""
        out = {}
        for col, vals in table.items():
            if not isinstance(vals, list):
                vals = [vals]
            for x in vals:
                if isinstance(x, bool) or not isinstance(x, (str, int, float)):
                    raise self.error(f"Invalid {k} value {x!r} for column {col!r}: must be a "
                                     "string or a number", section=sec, key=k)
            out[str(col)] = tuple(vals)
        return out



#: upper bounds of counts (the lower bounds are checked with the settings they constrain)
_LIMITS = {("sampling", "draws"): 10**6, ("sampling", "tune"): 10**6,
           ("sampling", "fast_draws"): 10**6, ("sampling", "fast_tune"): 10**6,
           ("sampling", "chains"): 64, ("simulation", "n_per_cell"): 10**7,
           ("simulation", "fast_n_per_cell"): 10**7, ("report", "new_trial_n"): 10**9}
#: free-text keys, which may span several lines
_FREE_TEXT = ("description", "notes", "rationale", "baseline_source")


def _check_prior(v: _Validator, sec: str, key: str, text: str, kind: str):
    from bayesmeta import priors

    try:
        return priors.parse_prior(text, kind=kind)
    except Exception as err:  # noqa: BLE001 - any parse failure is the user's to fix
        problem = getattr(err, "problem", str(err))
        fix = getattr(err, "fix", None) or ("Use e.g. 'halfnormal:0.5', 'halfcauchy:1', "
                                            "'normal:0:10', 'flat' or a named empirical prior "
                                            "(see bayesmeta.priors).")
        raise v.error(f"Invalid prior {text!r}: {problem}", section=sec, key=key,
                      fix=fix) from err


def _resolve_data(v: _Validator, spec_path: Path | None, sec: str, key: str, value: str,
                  is_dataset: bool) -> Path:
    """A bundled dataset's file, or a data path relative to the spec file (or absolute):
    a user may keep data anywhere readable."""
    if is_dataset:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", value) or value.startswith("."):
            raise v.error(f"Invalid dataset {value!r}: must be a bundled dataset name",
                          section=sec, key=key, fix="Use `path = ...` for a file.")
        p = _dataset_file(value)
        if p is None or not p.is_file():
            names = _dataset_names()
            sug = _suggest(value, names)
            raise v.error(f"unknown dataset {value!r}"
                          + (f": must be one of {names}" if names else ""),
                          section=sec, key=key,
                          fix=f"Did you mean '{sug}'?" if sug else None)
        return p.resolve()
    raw = Path(value).expanduser()
    base = spec_path.parent if spec_path is not None else Path.cwd()
    target = (raw if raw.is_absolute() else base / raw).resolve()
    if not target.is_file():
        raise v.error(f"data file not found: {target}", section=sec, key=key,
                      fix="Check the path (relative to the spec file, or absolute).")
    return target


def _contradictions(v: _Validator, s: dict[str, dict], *, need_source: bool = True):
    a, d = s["analysis"], s["data"]
    c, b = s.get("classical", {}), s.get("bayes", {})
    sens, samp, rep = s.get("sensitivity", {}), s.get("sampling", {}), s.get("report", {})
    measure = d["measure"]

    def bad(problem, sec, key, fix=None):
        raise v.error(problem, section=sec, key=key, fix=fix)

    if need_source and ("dataset" in d) == ("path" in d):
        bad("[data] needs exactly one of 'dataset' or 'path'", "data",
            "path" if "path" in d else "dataset")
    if not _NAME_RE.match(a["name"]):
        bad(f"Invalid name {a['name']!r}: must match [a-z0-9][a-z0-9_-]* (max 64 chars); "
            "it names output files", "analysis", "name")
    for col_key in ("study", "time", "subgroup", "outcome", "total_level", "time_unit"):
        col = d.get(col_key, "")
        if col and not _COLUMN_RE.match(col):
            bad(f"Invalid {col_key} {col!r}", "data", col_key)
    if d.get("outcomes") and not d.get("outcome"):
        bad("'outcomes' needs 'outcome' (the column they are values of)", "data", "outcomes")
    if d.get("total_level") and not d.get("subgroup"):
        bad("'total_level' needs 'subgroup' (the column it is a level of)", "data",
            "total_level")
    if d.get("arm", 0) not in (0, 1, 2):
        bad(f"Invalid arm {d['arm']}: must be 1 or 2", "data", "arm")
    if d.get("arm") and measure != "MC":
        bad("'arm' selects one arm for the one-group measure MC; the measure is "
            f"{measure!r}", "data", "arm")
    method = c.get("method", SCHEMA["classical"]["method"].default)
    if method in ("MH", "PETO") and measure not in vocab.BINARY:
        bad(f"method '{method}' needs 2x2 counts (measure OR/RR/RD/PETO), got '{measure}'",
            "classical", "method")
    if c.get("preset") == "revman5":
        if c.get("test", "z") == "knha":
            bad("preset 'revman5' uses Wald z tests; test = 'knha' contradicts it",
                "classical", "test")
        if method not in ("FE", "DL", "MH", "PETO"):
            bad(f"preset 'revman5' supports FE/MH/PETO/DL only, got method '{method}'",
                "classical", "method", fix="Use preset = 'revman_web' for REML.")
    if c.get("preset") == "revman_web" and method in ("DL",) and "method" in c:
        bad("preset 'revman_web' uses REML; method = 'DL' contradicts it", "classical", "method")
    models = b.get("model", SCHEMA["bayes"]["model"].default)
    models = (models,) if isinstance(models, str) else tuple(models)
    if not models:
        bad("model is empty: name at least one Bayesian model", "bayes", "model")
    known = _model_names()
    for m in models:
        if m not in known:
            sug = _suggest(m.replace("_", "-"), known)
            bad(f"unknown model {m!r}: must be one of {list(known)}", "bayes", "model",
                fix=f"Did you mean '{sug}'?" if sug else None)
    con = b.get("contrast", ())
    if con and (len(con) != 2 or con[0] == con[1]):
        bad(f"Invalid contrast {list(con)}: give two different subgroup levels [a, b]",
            "bayes", "contrast")
    for sec_, key_, body in (("bayes", "correlation", b), ("bayes", "rho_prior", b),
                             ("sensitivity", "bias_sd", sens),
                             ("sensitivity", "bias_exaggeration", sens)):
        if key_ in body and "survival-published" not in models:
            bad(f"'{key_}' applies to model 'survival-published' only", sec_, key_)
    if b.get("rho_prior"):
        from bayesmeta.survival_exact import parse_rho_prior

        try:
            parse_rho_prior(b["rho_prior"])
        except SpecError as err:
            bad(f"Invalid rho_prior {b['rho_prior']!r}: {err.problem}", "bayes", "rho_prior",
                fix=err.fix or "Use 'uniform' or 'beta:A:B'.")
    for x in sens.get("bias_sd", ()):
        if not x >= 0:
            bad(f"Invalid bias_sd {x}: must be >= 0", "sensitivity", "bias_sd")
    for x in sens.get("bias_exaggeration", ()):
        if not x > 0:
            bad(f"Invalid bias_exaggeration {x}: a ratio, must be > 0", "sensitivity",
                "bias_exaggeration")
    if sens.get("rho") and "survival-published" not in models:
        bad("'rho' (within-source correlation over time) applies to model "
            "'survival-published' only", "sensitivity", "rho")
    for r in sens.get("rho", ()):
        if not -1.0 < r < 1.0:
            bad(f"Invalid rho {r!r}: must be in (-1, 1)", "sensitivity", "rho")
    limits = {"draws": (10, 10**6), "tune": (10, 10**6), "chains": (1, 64),
              "fast_draws": (10, 10**6), "fast_tune": (10, 10**6)}
    for name, (lo, hi) in limits.items():
        if name in samp and not lo <= samp[name] <= hi:
            bad(f"Invalid {name} {samp[name]}: must be in [{lo}, {hi}]", "sampling", name)
    if "seed" in samp and not 0 <= samp["seed"] < 2**32:
        bad(f"Invalid seed {samp['seed']}: must be in [0, 2**32)", "sampling", "seed")
    if "target_accept" in samp and not 0.5 < samp["target_accept"] < 1:
        bad(f"Invalid target_accept {samp['target_accept']}: must be in (0.5, 1)", "sampling",
            "target_accept")
    if "fast_draws" in samp and samp["fast_draws"] > samp.get("draws", 1000):
        bad("fast_draws exceeds draws: --fast must not draw more than a full run",
            "sampling", "fast_draws")
    _check_report(v, rep, measure, models)


def _check_report(v: _Validator, rep: dict, measure: str | None, models=()):
    def bad(problem, key, fix=None):
        raise v.error(problem, section="report", key=key, fix=fix)

    if "ci_prob" in rep and not 0.5 <= rep["ci_prob"] < 1:
        bad(f"Invalid ci_prob {rep['ci_prob']}: must be in [0.5, 1)", "ci_prob")
    if "new_trial_n" in rep and "survival-published" not in models:
        bad("new_trial_n applies to model 'survival-published' only", "new_trial_n")
    if rep.get("baseline"):
        from bayesmeta.absolute import baseline_from_statement

        if not rep.get("baseline_source"):
            bad("baseline needs baseline_source (where the control risks come from)",
                "baseline_source")
        for t, vals in rep["baseline"].items():
            if len(vals) != 1:
                bad(f"baseline at time {t}: give one statement, e.g. \"30/54\" or "
                    "\"0.8 (0.65-0.9)\"", "baseline")
            try:
                baseline_from_statement(str(vals[0]), events=rep.get("events") or None,
                                        where=f"report.baseline.{t}")
            except SpecError as err:
                bad(err.problem, "baseline", fix=err.fix)
    if rep.get("mcid", 0.0) and not -1 < rep["mcid"] < 1:
        bad(f"Invalid mcid {rep['mcid']}: a risk difference in (-1, 1), e.g. 0.1",
            "mcid")
    ev = rep.get("events", "")
    if ev and rep.get("direction"):
        implied = "lower_is_better" if ev == "deaths" else "higher_is_better"
        if rep["direction"] != implied:
            bad(f"events = '{ev}' means {implied}, but direction = '{rep['direction']}'",
                "direction", fix=f"Set direction = '{implied}' or drop it.")
    for t in rep.get("thresholds", ()):
        if measure and vocab.is_ratio(measure) and t <= 0:
            bad(f"Invalid threshold {t}: a ratio threshold must be > 0", "thresholds")
    for n in rep.get("new_trial_n", ()):
        if not 2 <= n <= 10**7:
            bad(f"Invalid new_trial_n {n}: must be in [2, 10^7] per arm", "new_trial_n")


def _check_priors(v: _Validator, s: dict[str, dict]):
    b, sens = s.get("bayes", {}), s.get("sensitivity", {})
    for key in ("mu_prior", "tau_prior"):
        text = b.get(key, "")
        if text:
            _check_prior(v, "bayes", key, text, key.split("_")[0])
    for text in sens.get("tau_priors", ()):
        _check_prior(v, "sensitivity", "tau_priors", text, "tau")
    sets = sens.get("prior_sets", ())
    if sets:
        from bayesmeta.priors import PRIOR_SET_NAMES as known

        for name in sets:
            if name not in known:
                sug = _suggest(name, known)
                raise v.error(f"unknown prior set {name!r}: must be one of {list(known)}",
                              section="sensitivity", key="prior_sets",
                              fix=f"Did you mean '{sug}'?" if sug else None)


def _check_audit(v: _Validator, s: dict[str, dict]):
    recipe = s.get("audit", {}).get("recipe", "")
    if not recipe:
        if s["data"].get("published"):
            raise v.error("[data] published names the printed numbers to audit, but no "
                          "[audit] recipe says how", section="data", key="published",
                          fix="Add [audit] recipe = ... (see bayesmeta.recipes).")
        return
    from bayesmeta.recipes import RECIPES

    if recipe not in RECIPES:
        sug = _suggest(recipe, RECIPES)
        raise v.error(f"unknown recipe {recipe!r}: must be one of {sorted(RECIPES)}",
                      section="audit", key="recipe",
                      fix=f"Did you mean '{sug}'?" if sug else None)
    need = RECIPES[recipe].needs_published
    if need and not s["data"].get("published"):
        raise v.error(f"recipe {recipe!r} needs [data] published (the printed numbers)",
                      section="audit", key="recipe")


def _sections(s: dict[str, dict]) -> dict[str, Any]:
    return {name: cls(**s.get(name, {})) for name, cls in SECTION_CLASSES.items()
            if name != "simulation"}


def _design_check(v: _Validator, spec: AnalysisSpec) -> AnalysisSpec:
    """Build the design and ask every requested model whether it can carry it: the checks
    ``run`` would make, before anything is fitted. A SpecError gets the spec's line."""
    from bayesmeta import pipeline
    from bayesmeta.design import MissingRoleColumn

    try:
        design = pipeline.build_design(spec)
        pipeline.check(spec, design)
    except MissingRoleColumn as err:  # the spec names the column: point at its line
        if spec.path is None:
            raise
        raise v.error(f"the {err.role} column {err.column!r} is not in "
                      f"{Path(str(err.file)).name}", section="data", key=err.role,
                      fix=err.fix) from err
    except SpecError as err:
        if spec.path is None or err.line is not None or not err.key:
            raise
        sec, _, key = err.key.partition(".")
        if sec not in SCHEMA:
            sec, key = "data", err.key
        line, problem = None, err.problem
        rule, _, col = key.partition(".")
        if sec == "data" and rule in ("include", "exclude") and col:
            if (rule == "include" and col == spec.data.outcome and spec.data.outcomes
                    and col not in dict(spec.data.include or {})):
                key = "outcomes"  # the outcomes list is applied as an include rule
                problem = problem.replace("include:", "outcomes:", 1)
            else:  # a rule as an inline table or as a [data.include] table
                line = (find_line(v.text, "data", key) or find_line(v.text, "data", rule)
                        or find_line(v.text, f"data.{rule}", col)
                        or find_line(v.text, f"data.{rule}"))
        raise v.error(problem, section=sec, key=key, fix=err.fix, line=line) from err
    return dataclasses.replace(spec, design=design)


def load_spec(path, *, check_priors: bool = True, check_data: bool = True) -> AnalysisSpec:
    """Read and validate one spec file.

    Parameters
    ----------
    path : str or Path
        A ``.toml`` file.
    check_priors : bool
        Parse every prior string with :mod:`bayesmeta.priors` (default True).
    check_data : bool
        Build the design (read and validate the data, apply the row rules) and check every
        requested model against it (default True): the checks ``bayesmeta run`` makes, so
        nothing fails after fitting starts.

    Raises
    ------
    SpecError
        Unreadable or invalid TOML, unknown section/key (with the nearest valid key), wrong
        type, unknown measure/method/model/prior, prior scale <= 0, a missing data file,
        contradictory settings, a model the design cannot carry. Names file, line and key.
    DataError
        Data that ``bayesmeta.io`` / the design refuse: names file, row and column.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError("spec file not found", file=str(path),
                        fix="Give a path to a .toml file (see models/).")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a UTF-8 byte-order mark is accepted
    except UnicodeDecodeError as err:
        raise SpecError(f"not UTF-8 text ({err})", file=str(path)) from err
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"line (\d+)", str(err))
        raise SpecError(f"invalid TOML: {err}", file=str(path),
                        line=int(m.group(1)) if m else None) from err
    v = _Validator(path, text)
    s = v.sections(raw)
    given = {sec: frozenset(body) for sec, body in s.items()}
    sha = hashlib.sha256(data).hexdigest()
    if "simulation" in s:
        _check_simulation(v, s)
        sim = s.get("simulation", {})
        # the spec seed lives in [simulation]; RunContext.seed_for reads [sampling] seed
        seed = sim.get("seed", SCHEMA["simulation"]["seed"].default)
        s = {**s, "sampling": {"seed": seed}}
        return AnalysisSpec(path=path.resolve(), sha256=sha, data_path=path.resolve(),
                            simulation=SECTION_CLASSES["simulation"](**sim), given=given,
                            **_sections(s))
    _contradictions(v, s)
    d = s["data"]
    is_ds = "dataset" in d
    data_path = _resolve_data(v, path, "data", "dataset" if is_ds else "path",
                              d["dataset"] if is_ds else d["path"], is_ds)
    published_path = None
    if d.get("published"):
        published_path = _resolve_data(v, path, "data", "published", d["published"], True)
    if check_priors:
        _check_priors(v, s)
    _check_audit(v, s)
    spec = AnalysisSpec(path=path.resolve(), sha256=sha, data_path=data_path,
                        published_path=published_path, given=given, **_sections(s))
    return _design_check(v, spec) if check_data else spec


#: option name (Python keyword / CLI) → (section, key); names unique across sections
def _option_map() -> dict[str, tuple[str, str]]:
    out = {}
    for sec, keys in SCHEMA.items():
        if sec in ("simulation",):
            continue
        for k in keys:
            if sec == "analysis" and k == "outcome":
                out["outcome_label"] = (sec, k)
            elif k not in out:
                out[k] = (sec, k)
    out["models"] = ("bayes", "model")
    out["within_r_grid"] = ("sensitivity", "within_r")
    return out


def spec_from_options(*, name: str = "analysis", title: str | None = None, path=None,
                      **options) -> AnalysisSpec:
    """An :class:`AnalysisSpec` from keyword options (Python's :func:`bayesmeta.analyze`, the
    CLI), validated by the same checks as a spec file. ``None`` means "not given"; an
    unknown option is a SpecError with the nearest valid name."""
    omap = _option_map()
    raw: dict[str, dict] = {"analysis": {"name": name, "title": title or name}}
    for opt, val in options.items():
        if val is None:
            continue
        if opt not in omap:
            sug = _suggest(opt, omap)
            raise SpecError(f"unknown option {opt!r}", key=opt,
                            fix=f"Did you mean {sug!r}?" if sug else
                            f"Options: {', '.join(sorted(omap))}.")
        sec, key = omap[opt]
        if isinstance(val, tuple):
            val = list(val)
        if isinstance(val, dict):
            val = {k: list(x) if isinstance(x, (tuple, list)) else x for k, x in val.items()}
        if sec == "report" and key == "ci_prob" and float(val) == 0.95:
            continue
        raw.setdefault(sec, {})[key] = val
    raw.setdefault("data", {})
    if path is not None:
        raw["data"]["path"] = str(path)
    v = _Validator(None, "")
    s = v.sections(raw)
    _contradictions(v, s, need_source=False)
    _check_priors(v, s)
    _check_audit(v, s)
    text = repr(sorted((sec, sorted(body.items(), key=str)) for sec, body in s.items()))
    data_path = None
    if path is not None:
        data_path = _resolve_data(v, None, "data", "path", str(path), False)
    return AnalysisSpec(path=None, sha256=hashlib.sha256(text.encode()).hexdigest(),
                        data_path=data_path, given={k: frozenset(b) for k, b in s.items()},
                        **_sections(s))


# --------------------------------------------------------------------------------------------
# bundled specs and documentation
# --------------------------------------------------------------------------------------------
def models_dir() -> Path:
    """Bundled specs: ``bayesmeta/_models`` in an installed wheel, else ``<repo>/models``."""
    pkg = Path(__file__).resolve().parent
    installed = pkg / "_models"
    if installed.is_dir():
        return installed
    return pkg.parent / "models"


def bundled_specs() -> list[Path]:
    """All ``*.toml`` files in :func:`models_dir`, sorted by name."""
    return sorted(models_dir().glob("*.toml"))


def expand_spec_args(args) -> list[Path]:
    """CLI arguments (files or directories) → spec files; none → the bundled specs."""
    if not args:
        return bundled_specs()
    out = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            out.extend(sorted(p.glob("*.toml")))
        else:
            out.append(p)
    return out


def schema_markdown() -> str:
    """Markdown table of every section and key (used for models/README.md)."""
    lines = []
    for sec, keys in SCHEMA.items():
        lines += [f"### `[{sec}]`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for k, key in keys.items():
            t = "/".join(x.__name__ for x in key.types)
            if key.item_types:
                t += "[" + "/".join(x.__name__ for x in key.item_types) + "]"
            dflt = "required" if key.required else repr(key.default)
            doc = key.doc + (f" — one of {', '.join(c for c in key.choices if c)}"
                             if key.choices else "")
            lines.append(f"| `{k}` | {t} | {dflt} | {doc} |")
        lines.append("")
    return "\n".join(lines)
