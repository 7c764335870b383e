"""bayesmeta: Bayesian and classical meta-analysis, checked against metafor, RevMan and exact posteriors."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("bayesmeta")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
