"""Declarative analysis specifications: ``models/*.toml`` → :class:`AnalysisSpec`.

A spec is data, never code: it is parsed with :mod:`tomllib` and validated against
:data:`SCHEMA` before anything runs. Every problem is a :class:`~bayesmeta.exceptions.SpecError`
naming the file, the line, the key and, where one exists, the nearest valid key
("did you mean ...?").

Sections (every key is documented in ``models/README.md``; :func:`schema_markdown` renders the
same table from :data:`SCHEMA`, and a test checks that the README lists every key):

``[analysis]``     name, title, kind, description, outcome
``[data]``         dataset | path, measure, row_kind, study/time/subgroup/outcome columns, filters
``[classical]``    method, test, preset, by, prediction
``[bayes]``        model, engine, mu_prior, tau_prior
``[sensitivity]``  prior_sets, tau_priors, rho
``[sampling]``     draws, tune, chains, seed, target_accept, sampler, fast_draws, fast_tune
``[report]``       ci_prob, thresholds, control_survival, control_survival_source, new_trial_n,
                   new_trial_control_events, direction, transform, notes
``[provenance]``   author, date, rationale
``[simulation]``   n_per_cell, fast_n_per_cell, k, tau, scales, priors, seed (kind
                   ``simulation`` only: it generates its data, so it has no ``[data]`` and
                   no ``[classical]``/``[bayes]``/``[sensitivity]``/``[sampling]``)

Examples
--------
>>> from bayesmeta.spec import load_spec, bundled_specs
>>> spec = load_spec(bundled_specs()[0])   # doctest: +SKIP
>>> spec.analysis.kind                      # doctest: +SKIP
'fig3_meld'
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bayesmeta.exceptions import SpecError

KINDS = ("fig3_meld", "one_arm", "survival_published", "nested_published", "complications",
         "generic", "simulation")
MEASURES = ("MD", "SMD", "OR", "RR", "RD", "PETO", "MC", "GEN")
ROW_KINDS = ("study", "published_pooled")
METHODS = ("FE", "MH", "PETO", "DL", "REML", "ML", "PM", "HE", "SJ", "EB", "HS")
TESTS = ("z", "knha")
PRESETS = ("revman5", "revman_web")
MODELS = ("nnhm", "nested", "survival", "binomial_normal")
ENGINES = ("exact", "mcmc")
SAMPLERS = ("nutpie", "pymc")
DIRECTIONS = ("lower_is_better", "higher_is_better")
TRANSFORMS = ("none", "exp")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


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


SCHEMA: dict[str, dict[str, Key]] = {
    "analysis": {
        "name": _k(str, required=True, doc="identifier, [a-z0-9_-], used for output file names"),
        "title": _k(str, required=True, doc="human title shown in the report"),
        "kind": _k(str, required=True, choices=KINDS, doc="which analysis recipe runs"),
        "description": _k(str, "", doc="free text shown under the title"),
        "outcome": _k(str, "", doc="outcome label (e.g. 'MELD', 'survival')"),
    },
    "data": {
        "dataset": _k(str, doc="bundled dataset name (see `bayesmeta datasets`)"),
        "path": _k(str, doc="CSV path relative to the spec file; may not leave the project"),
        "measure": _k(str, required=True, choices=MEASURES, doc="effect measure"),
        "row_kind": _k(str, "study", choices=ROW_KINDS,
                       doc="what a row is: a study, or a published pooled estimate"),
        "study": _k(str, "study", doc="column naming the study / source"),
        "time": _k(str, "", doc="column with follow-up time (optional)"),
        "subgroup": _k(str, "", doc="column with subgroup level (optional)"),
        "outcome_column": _k(str, "", doc="column with the outcome name (published tables)"),
        "outcomes": _k(list, [], items=(str,), doc="outcomes to analyse (values of outcome_column)"),
        "published": _k(str, "", doc="bundled dataset with the published numbers to audit"),
    },
    "classical": {
        "method": _k(str, "FE", choices=METHODS, doc="tau² estimator or FE/MH/PETO"),
        "test": _k(str, "z", choices=TESTS, doc="z (Wald) or knha (Knapp-Hartung)"),
        "preset": _k(str, "", choices=PRESETS + ("",), doc="revman5 | revman_web"),
        "by": _k(str, "", doc="column for subgroup analysis (test for subgroup differences)"),
        "prediction": _k(bool, False, doc="report a prediction interval"),
    },
    "bayes": {
        "model": _k(str, "nnhm", choices=MODELS, doc="Bayesian model"),
        "engine": _k(str, "exact", choices=ENGINES, doc="exact quadrature or MCMC"),
        "mu_prior": _k(str, "", doc="prior of mu, e.g. 'normal:0:10' or 'flat'; empty = the "
                       "measure's default (bayesmeta.priors.default_mu_prior)"),
        "tau_prior": _k(str, "", doc="prior of tau, e.g. 'halfnormal:0.5' or a named empirical "
                        "prior ('turner2015-all'); empty = the measure's default "
                        "(bayesmeta.priors.default_tau_prior, scale-aware for MD)"),
    },
    "sensitivity": {
        "prior_sets": _k(list, [], items=(str,), doc="named prior sets refitted for sensitivity"),
        "tau_priors": _k(list, [], items=(str,), doc="extra tau priors refitted for sensitivity"),
        "rho": _k(list, [], items=(int, float),
                  doc="within-source correlation values (survival over time)"),
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
        "ci_prob": _k(float, 0.95, doc="interval probability (classical and Bayesian)"),
        "thresholds": _k(list, [], items=(int, float),
                         doc="clinically relevant thresholds on the natural scale (e.g. OR 1.5)"),
        "control_survival": _k(float, math.nan,
                               doc="control-arm survival for absolute benefit and NNT, in (0, 1)"),
        "control_survival_source": _k(str, "", doc="where control_survival comes from (quoted)"),
        "new_trial_n": _k(list, [], items=(int,), doc="per-arm sizes of a hypothetical new trial"),
        "direction": _k(str, "lower_is_better", choices=DIRECTIONS,
                        doc="which sign of the effect favours MSC"),
        "reversed_outcomes": _k(list, [], items=(str,),
                                doc="outcomes for which the opposite of `direction` "
                                    "holds (e.g. ALB when lower_is_better)"),
        "transform": _k(str, "none", choices=TRANSFORMS, doc="display transform (exp for ratios)"),
        "notes": _k(str, "", doc="free text appended to the report"),
    },
    "provenance": {
        "author": _k(str, "", doc="who wrote the spec"),
        "date": _k(str, "", doc="when (ISO date)"),
        "rationale": _k(str, "", doc="why this analysis, which choices and why"),
    },
    "simulation": {
        "n_per_cell": _k(int, 500, doc="simulated meta-analyses per cell (scale x k x tau), "
                         ">= 10; MC SE of a 95% coverage is sqrt(.95 x .05 / n)"),
        "fast_n_per_cell": _k(int, 100, doc="meta-analyses per cell with --fast "
                              "(<= n_per_cell)"),
        "k": _k(list, [2, 3, 5, 10], items=(int,), doc="numbers of studies, each in [2, 50]"),
        "tau": _k(list, [], items=(int, float),
                  doc="true tau values (>= 0) on the scale's units (log OR for logOR); "
                      "empty = the scale's default grid (bayesmeta.simulate.SCALES)"),
        "scales": _k(list, ["logOR"], items=(str,),
                     doc="data-generating scales, each 'logOR' or 'MD'"),
        "priors": _k(list, ["weakly_informative", "empirical"], items=(str,),
                     doc="prior sets for the exact-Bayes intervals "
                         "(bayesmeta.priors.PRIOR_SET_NAMES)"),
        "seed": _k(int, 20240601, doc="random seed (CLI --seed overrides)"),
    },
}
REQUIRED_SECTIONS = ("analysis", "data")
#: sections a ``simulation`` spec may have (it generates its data)
SIMULATION_SECTIONS = ("analysis", "simulation", "report", "provenance")


# --------------------------------------------------------------------------------------------
# value objects
# --------------------------------------------------------------------------------------------
def _section_class(name: str, keys: dict[str, Key]):
    fields = []
    for k, key in keys.items():
        default = key.default
        if isinstance(default, list):
            default = tuple(default)
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
ProvenanceSection = SECTION_CLASSES["provenance"]


@dataclass(frozen=True)
class AnalysisSpec:
    """A validated analysis specification.

    Attributes
    ----------
    path : Path
        The spec file (resolved).
    sha256 : str
        SHA-256 of the file's bytes (the spec hash recorded in provenance).
    data_path : Path
        Resolved CSV file the analysis reads (inside the spec's project). Kind
        ``simulation`` reads no file (it generates its data from the spec): the spec file
        itself, so provenance records its checksum as the data's.
    analysis, data, classical, bayes, sensitivity, sampling, report, provenance
        One frozen section object each; absent sections hold their defaults.
    """

    path: Path
    sha256: str
    data_path: Path
    analysis: Any
    data: Any
    classical: Any
    bayes: Any
    sensitivity: Any
    sampling: Any
    report: Any
    provenance: Any
    published_path: Path | None = None
    #: the validated data table of a user file (read once by :func:`load_spec`)
    frame: Any = field(default=None, repr=False, compare=False, hash=False)
    #: ``[simulation]`` settings (kind ``simulation``; defaults otherwise)
    simulation: Any = None

    @property
    def name(self) -> str:
        return self.analysis.name

    @property
    def kind(self) -> str:
        return self.analysis.kind

    def replace_sampling(self, **changes) -> "AnalysisSpec":
        """Copy with changed sampling settings (e.g. the CLI's ``--seed``)."""
        return dataclasses.replace(self, sampling=dataclasses.replace(self.sampling, **changes))


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
    the spec's own directory (so a stand-alone spec may read only beside itself)."""
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / "pyproject.toml").is_file():
            return d
    return start


def _data_dir() -> Path:
    try:
        from bayesmeta import datasets
    except ImportError:  # datasets module not present: same rule as models_dir()
        pkg = Path(__file__).resolve().parent
        return pkg / "_data" if (pkg / "_data").is_dir() else pkg.parent / "data"
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
             list: "an array"}
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
    def __init__(self, path: Path, text: str):
        self.path, self.text = path, text

    def error(self, problem, section=None, key=None, fix=None, line=None):
        if line is None:
            line = find_line(self.text, section, key)
        full = f"{section}.{key}" if section and key else (section or key)
        return SpecError(problem, file=str(self.path), line=line, key=full, fix=fix)

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
        if out.get("analysis", {}).get("kind") == "simulation":
            for sec in out:
                if sec not in SIMULATION_SECTIONS:
                    raise self.error(
                        f"section [{sec}] does not apply to kind 'simulation' (it generates "
                        f"its data): allowed sections are {list(SIMULATION_SECTIONS)}",
                        section=sec, line=find_line(self.text, sec),
                        fix="Put the simulation settings in [simulation]; see "
                            "models/README.md.")
            return out
        if "simulation" in out:
            raise self.error("section [simulation] applies to kind 'simulation' only",
                             section="simulation", line=find_line(self.text, "simulation"))
        for sec in REQUIRED_SECTIONS:
            if sec not in out:
                raise self.error(f"missing required section [{sec}]", section=sec,
                                 fix=f"Add a [{sec}] table; see models/README.md.", line=0)
        return out

    def keys(self, sec: str, body: dict) -> dict:
        schema = SCHEMA[sec]
        values = {}
        for k, v in body.items():
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
        """Values no analysis can use, whatever the kind: a number that is not finite, a count
        beyond :data:`_LIMITS`, a string with control characters."""
        from bayesmeta.textsafe import has_control, terminal_safe

        for item in (v if isinstance(v, (list, tuple)) else (v,)):
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


#: upper bounds of counts (the lower bounds are checked with the settings they constrain)
_LIMITS = {("sampling", "draws"): 10**6, ("sampling", "tune"): 10**6,
           ("sampling", "fast_draws"): 10**6, ("sampling", "fast_tune"): 10**6,
           ("sampling", "chains"): 64, ("simulation", "n_per_cell"): 10**7,
           ("simulation", "fast_n_per_cell"): 10**7, ("report", "new_trial_n"): 10**9}
#: free-text keys, which may span several lines
_FREE_TEXT = ("description", "notes", "rationale", "control_survival_source")


def _check_prior(v: _Validator, sec: str, key: str, text: str, kind: str):
    try:
        return parse_prior_string(text, kind=kind)
    except ImportError as err:  # pragma: no cover - engine missing
        raise v.error(f"cannot check prior {text!r}: bayesmeta.priors is not available ({err})",
                      section=sec, key=key) from err
    except Exception as err:  # noqa: BLE001 - any parse failure is the user's to fix
        problem = getattr(err, "problem", str(err))
        fix = getattr(err, "fix", None) or ("Use e.g. 'halfnormal:0.5', 'halfcauchy:1', "
                                            "'normal:0:10', 'flat' or a named empirical prior "
                                            "(see bayesmeta.priors).")
        raise v.error(f"Invalid prior {text!r}: {problem}", section=sec, key=key,
                      fix=fix) from err


def _resolve_data(v: _Validator, spec_path: Path, sec: str, key: str, value: str,
                  is_dataset: bool) -> Path:
    if is_dataset:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", value) or value.startswith("."):
            raise v.error(f"Invalid dataset {value!r}: must be a bundled dataset name",
                          section=sec, key=key, fix="Use `path = ...` for a file.")
        try:
            p = _dataset_file(value)
        except ImportError:  # pragma: no cover
            p = None
        if p is None or not p.is_file():
            names = _dataset_names()
            sug = _suggest(value, names)
            raise v.error(f"unknown dataset {value!r}"
                          + (f": must be one of {names}" if names else ""),
                          section=sec, key=key,
                          fix=f"Did you mean '{sug}'?" if sug else None)
        return p.resolve()
    raw = Path(value)
    if raw.is_absolute():
        raise v.error(f"Invalid path {value!r}: must be relative to the spec file",
                      section=sec, key=key, fix="Write the path relative to the spec.")
    spec_dir = spec_path.parent.resolve()
    target = (spec_dir / raw).resolve()
    roots = {spec_dir, project_root(spec_dir)}
    if not any(target == r or r in target.parents for r in roots):
        raise v.error(f"Invalid path {value!r}: it leaves the project directory "
                      f"({project_root(spec_dir)})", section=sec, key=key,
                      fix="Put the data inside the project (e.g. data/) and refer to it there.")
    if not target.is_file():
        raise v.error(f"data file not found: {target}", section=sec, key=key,
                      fix="Check the path (relative to the spec file).")
    return target


def _check_simulation(v: _Validator, s: dict[str, dict]):
    """Values of ``[simulation]`` (kind ``simulation``)."""
    from bayesmeta.simulate import SCALES

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
    ks = sim.get("k", tuple(SCHEMA["simulation"]["k"].default))
    if not ks:
        bad("k is empty: give at least one number of studies", "k")
    for k in ks:
        if not 2 <= k <= 50:
            bad(f"Invalid k {k}: must be in [2, 50]", "k")
    for t in sim.get("tau", ()):
        if not (t >= 0 and math.isfinite(t)):
            bad(f"Invalid tau {t!r}: must be a finite number >= 0", "tau")
    scales = sim.get("scales", tuple(SCHEMA["simulation"]["scales"].default))
    if not scales:
        bad("scales is empty: give 'logOR' and/or 'MD'", "scales")
    for sc in scales:
        if sc not in SCALES:
            sug = _suggest(sc, SCALES) or next((x for x in SCALES if x.lower() == sc.lower()),
                                               None)
            bad(f"Invalid scale {sc!r}: must be one of {list(SCALES)}", "scales",
                fix=f"Did you mean '{sug}'?" if sug else None)
    if sim.get("tau") and len(scales) > 1:
        bad("tau values are in one scale's units, but several scales are listed", "tau",
            fix="Leave tau empty (each scale's default grid) or use one spec per scale.")
    names = sim.get("priors", ())
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
    for key in ("control_survival", "thresholds", "new_trial_n", "transform",
                "reversed_outcomes"):
        if key in rep:
            bad(f"[report] {key} does not apply to kind 'simulation'", key, sec="report")


def _contradictions(v: _Validator, s: dict[str, dict]):
    a, d = s["analysis"], s["data"]
    c, b = s.get("classical", {}), s.get("bayes", {})
    sens, samp, rep = s.get("sensitivity", {}), s.get("sampling", {}), s.get("report", {})
    kind, measure = a["kind"], d["measure"]

    def bad(problem, sec, key, fix=None):
        raise v.error(problem, section=sec, key=key, fix=fix)

    if ("dataset" in d) == ("path" in d):
        bad("[data] needs exactly one of 'dataset' or 'path'", "data",
            "path" if "path" in d else "dataset")
    if not _NAME_RE.match(a["name"]):
        bad(f"Invalid name {a['name']!r}: must match [a-z0-9][a-z0-9_-]* (max 64 chars); "
            "it names output files", "analysis", "name")
    for col_key in ("study", "time", "subgroup", "outcome_column"):
        col = d.get(col_key, "")
        if col and not _COLUMN_RE.match(col):
            bad(f"Invalid {col_key} {col!r}: must be a column name", "data", col_key)
    if c.get("by") and not _COLUMN_RE.match(c["by"]):
        bad(f"Invalid by {c['by']!r}: must be a column name", "classical", "by")
    need = {"one_arm": ("MC",), "survival_published": ("OR",), "complications": ("OR", "RR"),
            "fig3_meld": ("MD", "SMD")}
    if kind in need and measure not in need[kind]:
        bad(f"kind '{kind}' needs measure {' or '.join(need[kind])}, got '{measure}'",
            "data", "measure")
    if kind in ("survival_published", "nested_published", "complications") and \
            d.get("row_kind", "study") != "published_pooled":
        bad(f"kind '{kind}' analyses published pooled estimates: set row_kind = "
            "'published_pooled'", "data", "row_kind")
    if kind in ("fig3_meld", "one_arm") and d.get("row_kind", "study") != "study":
        bad(f"kind '{kind}' analyses study rows: row_kind must be 'study'", "data", "row_kind")
    if d.get("outcomes") and not d.get("outcome_column"):
        bad("'outcomes' needs 'outcome_column' (the column they are values of)", "data",
            "outcomes")
    method = c.get("method", "FE")
    if method in ("MH", "PETO") and measure not in ("OR", "RR", "RD", "PETO"):
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
    engine = b.get("engine", SCHEMA["bayes"]["engine"].default)
    model = b.get("model", SCHEMA["bayes"]["model"].default)
    if engine == "exact" and model not in ("nnhm", "survival"):
        given = "" if "engine" in b else " (the default engine)"
        bad(f"engine 'exact'{given} exists for models 'nnhm' and 'survival' only, got model "
            f"'{model}'",
            "bayes", "engine" if "engine" in b else "model", fix="Set engine = 'mcmc'.")
    if sens.get("rho") and kind != "survival_published":
        bad("'rho' (within-source correlation over time) applies to kind "
            "'survival_published' only", "sensitivity", "rho")
    for r in sens.get("rho", ()):
        if not -1.0 < r < 1.0:
            bad(f"Invalid rho {r!r}: must be in (-1, 1)", "sensitivity", "rho")
    for name in ("draws", "tune", "chains", "fast_draws", "fast_tune"):
        if name in samp and samp[name] < (1 if name == "chains" else 10):
            bad(f"Invalid {name} {samp[name]}: must be >= {1 if name == 'chains' else 10}",
                "sampling", name)
    if "seed" in samp and not 0 <= samp["seed"] < 2**32:
        bad(f"Invalid seed {samp['seed']}: must be in [0, 2**32)", "sampling", "seed")
    if "target_accept" in samp and not 0.5 < samp["target_accept"] < 1:
        bad(f"Invalid target_accept {samp['target_accept']}: must be in (0.5, 1)", "sampling",
            "target_accept")
    if "fast_draws" in samp and samp["fast_draws"] > samp.get("draws", 1000):
        bad("fast_draws exceeds draws: --fast must not draw more than a full run",
            "sampling", "fast_draws")
    if "ci_prob" in rep and not 0.5 <= rep["ci_prob"] < 1:
        bad(f"Invalid ci_prob {rep['ci_prob']}: must be in [0.5, 1)", "report", "ci_prob")
    cs = rep.get("control_survival", math.nan)
    if "control_survival" in rep and not 0 < cs < 1:
        bad(f"Invalid control_survival {cs}: must be a probability in (0, 1)", "report",
            "control_survival")
    if "control_survival" in rep and not rep.get("control_survival_source"):
        bad("control_survival needs control_survival_source (where the value comes from)",
            "report", "control_survival_source")
    if "control_survival" in rep and kind != "survival_published":
        bad("control_survival applies to kind 'survival_published' only", "report",
            "control_survival")
    for t in rep.get("thresholds", ()):
        if measure in ("OR", "RR", "PETO") and t <= 0:
            bad(f"Invalid threshold {t}: a ratio threshold must be > 0", "report", "thresholds")
    for n in rep.get("new_trial_n", ()):
        if n < 2:
            bad(f"Invalid new_trial_n {n}: must be >= 2 per arm", "report", "new_trial_n")
    if rep.get("transform") == "exp" and measure not in ("OR", "RR", "PETO"):
        bad(f"transform 'exp' is for ratio measures, got '{measure}'", "report", "transform")


def _check_priors(v: _Validator, s: dict[str, dict]):
    b, sens = s.get("bayes", {}), s.get("sensitivity", {})
    parsed = {}
    for key in ("mu_prior", "tau_prior"):
        text = b.get(key, "")
        if not text:
            continue
        p = _check_prior(v, "bayes", key, text, key.split("_")[0])
        parsed[key] = p
        scale = _prior_scale(p)
        if scale is not None and not scale > 0:
            raise v.error(f"Invalid {key} {text!r}: scale must be > 0", section="bayes",
                          key=key)
    for text in sens.get("tau_priors", ()):
        p = _check_prior(v, "sensitivity", "tau_priors", text, "tau")
        scale = _prior_scale(p)
        if scale is not None and not scale > 0:
            raise v.error(f"Invalid tau prior {text!r}: scale must be > 0",
                          section="sensitivity", key="tau_priors")
    sets = sens.get("prior_sets", ())
    if sets:
        known = _prior_sets_available()
        if known is not None:
            for name in sets:
                if name not in known:
                    sug = _suggest(name, known)
                    raise v.error(f"unknown prior set {name!r}: must be one of {list(known)}",
                                  section="sensitivity", key="prior_sets",
                                  fix=f"Did you mean '{sug}'?" if sug else None)
    return parsed


def _bundled_header(data_path: Path, outcome_column: str):
    """Header and outcome values of a bundled (UTF-8, checksummed) dataset file."""
    import csv

    with open(data_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        rows = list(reader) if outcome_column in header else []
    return header, [r[outcome_column] for r in rows]


def _check_columns(v: _Validator, s: dict[str, dict], data_path: Path, header: list[str],
                   outcome_values: list[str]):
    """Columns named in the spec exist in the data; listed outcomes occur in it."""
    d, c = s["data"], s.get("classical", {})
    named = [("data", k, d.get(k, SCHEMA["data"][k].default))
             for k in ("study", "time", "subgroup", "outcome_column")]
    named.append(("classical", "by", c.get("by", "")))
    for sec, key, col in named:
        if not col or (key == "study" and "study" not in d and s["data"].get("row_kind",
                                                                            "study") != "study"):
            continue
        if col not in header:
            sug = _suggest(col, header)
            raise v.error(f"column {col!r} not in {data_path.name} (columns: {header})",
                          section=sec, key=key, fix=f"Did you mean '{sug}'?" if sug else None)
    if d.get("outcomes"):
        present = sorted(set(outcome_values))
        for o in d["outcomes"]:
            if o not in present:
                sug = _suggest(o, present)
                raise v.error(f"outcome {o!r} not in column {d['outcome_column']!r} of "
                              f"{data_path.name} (values: {present})", section="data",
                              key="outcomes", fix=f"Did you mean '{sug}'?" if sug else None)


# --------------------------------------------------------------------------------------------
# the data a spec names: read and validated as every CLI command does (bayesmeta.io)
# --------------------------------------------------------------------------------------------
def _setting(d, key: str):
    """A [data] setting from the raw section dict or a DataSection, with its default."""
    if isinstance(d, dict):
        return d.get(key, SCHEMA["data"][key].default)
    return getattr(d, key)


def _read_user_table(data_path: Path, **kw):
    """A user's CSV through :func:`bayesmeta.io.read_table` (encoding, delimiter, decimal
    commas, dashes, non-numeric and infinite values: a ``DataError`` naming file, row, column)."""
    from bayesmeta import io

    return io.read_table(data_path, name=str(data_path), **kw)


def _row_key(d, columns) -> list[str]:
    """Columns identifying a study row: the study column plus time/subgroup (the spec's, and
    columns literally named ``time``/``subgroup`` as :func:`bayesmeta.io.read_table` does)."""
    key = [_setting(d, "study")]
    for k in ("time", "subgroup"):
        for col in (_setting(d, k), k):
            if col and col in columns and col not in key:
                key.append(col)
    return key


def _validate_values(data_path: Path, kind: str, d, frame, by: str = ""):
    """Check the values of a user table for the spec's measure; returns the validated frame.

    Study rows: duplicate studies (per time/subgroup), empty time/subgroup/``by`` cells
    (:func:`bayesmeta.io.check_role_values`) and the measure's columns and values
    (:func:`bayesmeta.io.validate_measure_columns`; the one-arm kind accepts the experimental
    arm ``m1i, sd1i, n1i`` of a two-arm table). Published pooled rows (of the selected
    outcomes): :func:`bayesmeta.io.validate_published` in audit mode (an estimate outside its
    printed CI is kept for the audit; reversed CIs and ratios <= 0 are errors).
    """
    import warnings

    from bayesmeta import io

    measure = _setting(d, "measure")
    if _setting(d, "row_kind") == "published_pooled":
        sub = frame
        oc, outcomes = _setting(d, "outcome_column"), _setting(d, "outcomes")
        if outcomes and oc in frame.columns:
            mask = frame[oc].astype(str).isin([str(o) for o in outcomes]).to_numpy()
            sub = frame[mask].reset_index(drop=True)
            sub.attrs = dict(frame.attrs)
            sub.attrs["rows"] = [r for r, m in zip(frame.attrs["rows"], mask) if m]
        io.validate_published(sub, measure=None if "measure" in sub.columns else measure,
                              file=str(data_path), allow_outside_ci=True,
                              analysis_measure=measure)
        return frame
    key = _row_key(d, frame.columns)
    with warnings.catch_warnings():  # the first read already warned
        warnings.simplefilter("ignore")
        frame = _read_user_table(data_path, required=key[:1], unique=key)
    # an empty time/subgroup/by cell would become a level of its own
    io.check_role_values(frame, key[1:] + [by], file=str(data_path))
    if kind == "one_arm" and not {"mi", "sdi", "ni"} <= set(frame.columns) and \
            {"m1i", "sd1i", "n1i"} <= set(frame.columns):
        one = frame.rename(columns={"m1i": "mi", "sd1i": "sdi", "n1i": "ni"})
        one.attrs = dict(frame.attrs)
        io.validate_measure_columns(one, "MC", file=str(data_path))
    else:
        io.validate_measure_columns(frame, "MC" if kind == "one_arm" else measure,
                                    file=str(data_path))
    return frame


def _as_read_csv(frame):
    """The validated table with :func:`pandas.read_csv`'s conventions the runner expects:
    empty text cells are NaN, integer columns with blanks are float."""
    import numpy as np

    out = frame.copy()
    for c in out.columns:
        col = out[c]
        if str(col.dtype) == "Int64":
            out[c] = col.astype(float)
        elif col.dtype == object:
            out[c] = col.where(col.astype(str).str.strip() != "", np.nan)
    out.attrs = dict(frame.attrs)
    return out


def read_data(spec: AnalysisSpec):
    """The spec's data table as a DataFrame.

    A user file (``[data] path``) is read with :func:`bayesmeta.io.read_table` and validated
    for the spec's measure (the frame :func:`load_spec` validated is reused); a bundled dataset
    is read as shipped (it is checksummed and tested).
    """
    import pandas as pd

    if spec.data.dataset:
        return pd.read_csv(spec.data_path, keep_default_na=True)
    frame = spec.frame
    if frame is None:
        frame = _validate_values(spec.data_path, spec.kind, spec.data,
                                 _read_user_table(spec.data_path, unique=None),
                                 by=spec.classical.by)
    return _as_read_csv(frame)


def _prior_scale(p):
    for attr in ("scale", "sigma", "s"):
        val = getattr(p, attr, None)
        if isinstance(val, (int, float)):
            return float(val)
    return None


def load_spec(path, *, check_priors: bool = True, check_data: bool = True) -> AnalysisSpec:
    """Read and validate one spec file.

    Parameters
    ----------
    path : str or Path
        A ``.toml`` file.
    check_priors : bool
        Parse every prior string with :mod:`bayesmeta.priors` (default True).
    check_data : bool
        Validate the values of a user data file for the measure (default True; validate early):
        the same checks ``bayesmeta run`` and ``bayesmeta classical`` apply.

    Returns
    -------
    AnalysisSpec

    Raises
    ------
    SpecError
        Unreadable or invalid TOML, unknown section/key (with the nearest valid key), wrong
        type, unknown kind/measure/method/prior, prior scale <= 0, a data path outside the
        project, a missing data file, or contradictory settings. The message names file, line
        and key.
    DataError
        A user data file that ``bayesmeta.io`` refuses (encoding, delimiter, non-numeric or
        impossible values, duplicate studies, bad published rows): names file, row and column.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError("spec file not found", file=str(path),
                        fix="Give a path to a .toml file (see models/).")
    data = path.read_bytes()
    try:
        # a UTF-8 byte-order mark (Windows Notepad, Excel) is accepted, as for data files
        text = data.decode("utf-8-sig")
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
    if s["analysis"]["kind"] == "simulation":
        _check_simulation(v, s)
        sim = s.get("simulation", {})
        # the spec seed lives in [simulation]; RunContext.seed_for reads [sampling] seed
        seed = sim.get("seed", SCHEMA["simulation"]["seed"].default)
        sections = {name: cls(**({"seed": seed} if name == "sampling" else s.get(name, {})))
                    for name, cls in SECTION_CLASSES.items()}
        return AnalysisSpec(path=path.resolve(), sha256=hashlib.sha256(data).hexdigest(),
                            data_path=path.resolve(), **sections)
    _contradictions(v, s)
    d = s["data"]
    is_ds = "dataset" in d
    data_path = _resolve_data(v, path, "data", "dataset" if is_ds else "path",
                              d["dataset"] if is_ds else d["path"], is_ds)
    published_path = None
    if d.get("published"):
        published_path = _resolve_data(v, path, "data", "published", d["published"], True)
    frame = None
    if is_ds:
        header, outcome_values = _bundled_header(data_path, d.get("outcome_column", ""))
    else:  # a user file: read as every command reads data (bayesmeta.io), errors name the row
        frame = _read_user_table(data_path, unique=None)
        oc = d.get("outcome_column", "")
        header = [str(c) for c in frame.columns]
        outcome_values = (frame[oc].astype(str).str.strip().tolist() if oc in frame.columns
                          else [])
    _check_columns(v, s, data_path, header, outcome_values)
    if check_priors:
        _check_priors(v, s)
    if frame is not None and check_data:
        frame = _validate_values(data_path, s["analysis"]["kind"], d, frame,
                                 by=s.get("classical", {}).get("by", ""))
    elif frame is not None:
        frame = None  # not validated: read_data validates when the data are used
    sections = {}
    for name, cls in SECTION_CLASSES.items():
        sections[name] = cls(**s.get(name, {}))
    return AnalysisSpec(path=path.resolve(), sha256=hashlib.sha256(data).hexdigest(),
                        data_path=data_path, published_path=published_path, frame=frame,
                        **sections)


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
