"""No paper's words in library code: a user's own table must not inherit them.

The bundled papers' specifics live in data (published tables, specs) and in
``bayesmeta/recipes/`` (their published-number audits). Everywhere else in ``bayesmeta/`` the
words below may not appear, in code, labels, defaults or docstrings. Reference: the text of
the source files themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "bayesmeta"
WORDS = re.compile(r"MSC|ACLF|cirrhosis|MELD|\bwk\b")


def test_no_domain_words_outside_recipes():
    hits = []
    for f in sorted(PKG.rglob("*.py")):
        if "recipes" in f.relative_to(PKG).parts:
            continue
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if WORDS.search(line):
                hits.append(f"{f.relative_to(PKG.parent)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_the_check_can_fail(tmp_path):
    assert WORDS.search('label = f"{t} wk"') and WORDS.search("default ('ACLF', 'x')")
    assert not WORDS.search("weeks; walk; awkward")
