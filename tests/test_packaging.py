"""The wheel must carry the bundled data and analysis specs (style.md §10.1: PyMARE lost its
.stan file from the wheel). Reference: the files tracked in the source tree."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        # hatchling may be missing in an environment without build isolation: build isolated
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
            capture_output=True, text=True,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (whl,) = out.glob("bayesmeta-*.whl")
    return whl


def _tracked(folder):
    files = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True,
                           text=True).stdout.split()
    return [f for f in files if not f.endswith(".gitkeep")]


def test_wheel_ships_every_data_file_and_spec(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = _tracked("data")
    models = _tracked("models")
    if not data and not models:
        pytest.skip("no data or specs tracked yet")
    missing = [f for f in data if "bayesmeta/_data/" + f.removeprefix("data/") not in names]
    missing += [f for f in models if "bayesmeta/_models/" + f.removeprefix("models/") not in names]
    assert not missing, f"not in wheel: {missing}"


def test_wheel_has_cli_entry_point(wheel):
    z = zipfile.ZipFile(wheel)
    (ep,) = [n for n in z.namelist() if n.endswith("entry_points.txt")]
    assert "bayesmeta = bayesmeta.cli:main" in z.read(ep).decode()
