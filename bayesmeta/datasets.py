"""Bundled datasets: list, load (checksum-verified on every load) and describe.

The datasets live in ``data/`` with ``data/MANIFEST.json`` (file, SHA-256, description,
citation/provenance, license, measures, column schema and recorded findings). In a wheel the
folder is shipped as ``bayesmeta/_data`` (``pyproject.toml`` force-include); in a source or
editable install it is ``<repo>/data``.

>>> from bayesmeta.datasets import list_datasets, load_dataset
>>> "bcg" in list_datasets()
True
>>> load_dataset("meld_2014_fig3")[["study", "time", "m1i"]].head(2)
          study  time   m1i
0  Amer ME 2011     2 -0.45
1   Peng L 2011     2 -6.13
"""

from __future__ import annotations

import difflib
import hashlib
import json
import textwrap
from functools import lru_cache
from pathlib import Path

import pandas as pd

from bayesmeta.exceptions import DataError
from bayesmeta.io import read_table

__all__ = ["data_dir", "list_datasets", "load_dataset", "describe_dataset", "dataset_info",
           "dataset_path", "manifest"]

_TYPES = ("str", "int", "float")


def data_dir() -> Path:
    """The folder holding ``MANIFEST.json``: ``bayesmeta/_data`` in a wheel, else ``<repo>/data``."""
    pkg = Path(__file__).resolve().parent
    for cand in (pkg / "_data", pkg.parent / "data"):
        if (cand / "MANIFEST.json").is_file():
            return cand
    raise DataError(
        "bundled data not found (looked for MANIFEST.json in "
        f"{pkg / '_data'} and {pkg.parent / 'data'})",
        fix="Reinstall bayesmeta; in a source checkout make sure data/MANIFEST.json exists.",
    )


@lru_cache(maxsize=8)
def _read_manifest(path: str, mtime_ns: int) -> dict:
    try:
        m = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"MANIFEST.json is not valid JSON: {err.msg}", file=path, row=err.lineno,
                        fix="Regenerate it with python data/scripts/build_manifest.py.") from None
    if not isinstance(m, dict) or not isinstance(m.get("datasets"), dict):
        raise DataError("MANIFEST.json has no 'datasets' object", file=path,
                        fix="Regenerate it with python data/scripts/build_manifest.py.")
    return m


def manifest(directory: str | Path | None = None) -> dict:
    """The parsed ``MANIFEST.json`` (``{"version": 1, "datasets": {name: entry}}``)."""
    d = Path(directory) if directory is not None else data_dir()
    p = d / "MANIFEST.json"
    if not p.is_file():
        raise DataError("MANIFEST.json not found", file=p,
                        fix="Point to a folder with MANIFEST.json, or reinstall bayesmeta.")
    return _read_manifest(str(p), p.stat().st_mtime_ns)


def list_datasets(directory: str | Path | None = None) -> list[str]:
    """Names of the bundled datasets, in manifest order."""
    return list(manifest(directory)["datasets"])


def dataset_info(name: str, directory: str | Path | None = None) -> dict:
    """The manifest entry of ``name``; an unknown name is a DataError with a did-you-mean."""
    ds = manifest(directory)["datasets"]
    if name not in ds:
        hit = difflib.get_close_matches(str(name), list(ds), n=1, cutoff=0.5)
        if not hit:
            low = {k.lower(): k for k in ds}
            hit = [low[str(name).lower()]] if str(name).lower() in low else []
        raise DataError(
            f"Invalid dataset {name!r}: must be one of {list(ds)}",
            fix=f"Did you mean {hit[0]!r}?" if hit else "See `bayesmeta datasets list`.",
        )
    return ds[name]


def dataset_path(name: str, directory: str | Path | None = None) -> Path:
    """Path of the CSV file of dataset ``name``."""
    d = Path(directory) if directory is not None else data_dir()
    return d / dataset_info(name, d)["file"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_dataset(name: str, *, directory: str | Path | None = None) -> pd.DataFrame:
    """Load a bundled dataset as a DataFrame, verifying its SHA-256 and declared schema.

    Columns get their declared types (``int`` -> int64, or nullable Int64 when an optional
    column has blanks; ``float``; ``str``). ``df.attrs`` holds ``name``, ``file``, ``sha256``,
    ``citation`` and ``measure``.

    Raises
    ------
    DataError
        Unknown name (with did-you-mean), missing file, checksum mismatch, a declared column
        missing, an undeclared column, or a value not of its declared type.
    """
    d = Path(directory) if directory is not None else data_dir()
    info = dataset_info(name, d)
    path = d / info["file"]
    if not path.is_file():
        raise DataError(f"file of dataset {name!r} not found", file=path,
                        fix="Reinstall bayesmeta or restore the file from git.")
    got = _sha256(path)
    if got != info["sha256"]:
        raise DataError(
            f"checksum mismatch for dataset {name!r}: MANIFEST.json has sha256 "
            f"{info['sha256'][:12]}..., the file has {got[:12]}...; the file was modified or "
            "corrupted",
            file=path,
            fix="Restore it (git checkout data/) or, if the change is intended, run "
                "python data/scripts/build_manifest.py and commit both.",
        )
    cols = info["columns"]
    required = [c for c, spec in cols.items() if spec.get("required", True)]
    numeric = [c for c, spec in cols.items() if spec["type"] == "float"]
    integer = [c for c, spec in cols.items() if spec["type"] == "int"]
    text = [c for c, spec in cols.items() if spec["type"] == "str"]
    df = read_table(path, required=required, numeric=numeric, integer=integer, text=text,
                    unique=info.get("unique", "auto"), name=str(path))
    extra = [c for c in df.columns if c not in cols]
    if extra:
        raise DataError(f"column {extra[0]!r} is not declared in MANIFEST.json", file=path,
                        row=1, column=extra[0],
                        fix="Declare it in data/scripts/build_manifest.py and rebuild the manifest.")
    for c in text:
        if c in df.columns:
            df[c] = df[c].astype(object)
    df.attrs.update(name=name, file=str(path), sha256=got, citation=info.get("citation", ""),
                    measure=list(info.get("measure", [])))
    return df


def describe_dataset(name: str, directory: str | Path | None = None) -> str:
    """A readable description: source, license, measures, columns and recorded findings."""
    d = Path(directory) if directory is not None else data_dir()
    info = dataset_info(name, d)
    df = load_dataset(name, directory=d)
    wrap = lambda s, ind="  ": textwrap.fill(s, 96, initial_indent=ind, subsequent_indent=ind)  # noqa: E731
    out = [f"{name}: {len(df)} rows x {df.shape[1]} columns ({info['file']}, sha256 "
           f"{info['sha256'][:12]}...)", wrap(info.get("description", "")), "",
           "Source:", wrap(info.get("citation", ""))]
    if info.get("provenance"):
        out += ["Provenance:", wrap(info["provenance"])]
    if info.get("license"):
        out += ["License:", wrap(info["license"])]
    if info.get("measure"):
        out += [f"Measures: {', '.join(info['measure'])}"]
    out += ["", "Columns:"]
    width = max(len(c) for c in info["columns"])
    for c, spec in info["columns"].items():
        req = "" if spec.get("required", True) else " (optional)"
        out.append(f"  {c:<{width}}  {spec['type']:<5}  {spec.get('description', '')}{req}")
    if info.get("findings"):
        out += ["", "Findings recorded in the source (kept as printed):"]
        out += [textwrap.fill(f, 96, initial_indent="  - ", subsequent_indent="    ")
                for f in info["findings"]]
    return "\n".join(out)
