"""The README's Python example runs, and its shell commands name real CLI options
(reference: the README itself, which users copy)."""

import re
import shlex
from pathlib import Path

import pytest

from bayesmeta.cli import _build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_python_example_runs(capsys):
    (block,) = re.findall(r"```python\n(.*?)```", README, re.S)
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Random-Effects Model" in out and "exact NNHM" in out


def _commands():
    """Every `bayesmeta ...` line of the README's bash blocks after the first (the first is
    the set-up), with backslash continuations joined."""
    for block in re.findall(r"```bash\n(.*?)```", README, re.S)[1:]:
        for ln in block.replace("\\\n", " ").splitlines():
            ln = ln.split("#")[0].strip()
            if ln.startswith("bayesmeta ") and "|" not in ln:
                yield ln


@pytest.mark.parametrize("line", list(_commands()))
def test_cli_examples_parse(line):
    parser = _build_parser()
    argv = shlex.split(line)[1:]
    args = parser.parse_args(argv)  # SystemExit(2) on an unknown option or choice
    assert args.command == argv[0]
