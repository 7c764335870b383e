"""The curated top-level API resolves, and importing the package does not import PyMC
(reference: the module map in DEVELOPING.md)."""

import subprocess
import sys

import bayesmeta


def test_every_exported_name_resolves():
    for name in bayesmeta.__all__:
        assert getattr(bayesmeta, name) is not None, name


def test_import_is_light():
    code = "import sys, bayesmeta; bayesmeta.rma; print('pymc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
