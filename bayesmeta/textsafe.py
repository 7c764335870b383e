"""User text on a terminal and in a spreadsheet: escape what would act instead of being shown.

Labels come from the user's files (study names, subgroups, outcomes) and travel into two places
where text can do something besides being read:

* a **terminal** interprets control characters: ESC starts an ANSI/OSC escape sequence (colours,
  cursor moves, window titles, hyperlinks; CWE-150), CR returns to the start of the line and
  lets later text overwrite earlier text, and bidirectional overrides (U+202A-U+202E,
  U+2066-U+2069) reorder what is displayed. :func:`terminal_safe` shows each such character as
  a visible escape (``\\x1b``, ``\\r``, ``\\u202e``), so the text is displayed, never executed.
* a **spreadsheet** evaluates a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula
  (CSV/formula injection, CWE-1236; a tab or CR at the start also triggers it in some programs).
  :func:`spreadsheet_safe` prefixes such a text cell with a single quote, which spreadsheets
  display as text. Cells that are plain numbers (``-1.5``) are left as they are. The raw label
  stays in the machine-readable outputs (NetCDF, JSON).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["terminal_safe", "spreadsheet_safe", "spreadsheet_safe_frame", "SafeStream",
           "has_control"]

#: bidirectional embedding/override/isolate controls (display reordering, "Trojan source")
_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _escape(ch: str) -> str:
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    o = ord(ch)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def _unsafe(ch: str, newlines: bool) -> bool:
    if ch == "\t" or (ch == "\n" and newlines):
        return False
    return unicodedata.category(ch) == "Cc" or ch in _BIDI


def has_control(text: str, *, newlines: bool = False) -> str | None:
    """The first character of ``text`` that :func:`terminal_safe` would escape, or None.
    ``newlines=True`` allows line feeds (multi-line free text); tabs are always allowed."""
    for ch in str(text):
        if _unsafe(ch, newlines):
            return ch
    return None


def terminal_safe(text, *, newlines: bool = True) -> str:
    """``text`` with control characters and bidi overrides shown as visible escapes.

    Tabs are kept; line feeds are kept when ``newlines`` (a multi-line printout) and shown as
    ``\\n`` otherwise (a message that must stay one line).

    >>> terminal_safe("A\\x1b[31mB")
    'A\\\\x1b[31mB'
    >>> terminal_safe("two\\nlines", newlines=False)
    'two\\\\nlines'
    """
    s = str(text)
    if not any(_unsafe(ch, newlines) for ch in s):
        return s
    return "".join(_escape(ch) if _unsafe(ch, newlines) else ch for ch in s)


def spreadsheet_safe(value):
    """A text cell a spreadsheet would evaluate as a formula, prefixed with ``'``; anything else
    (numbers, plain-number text such as ``"-1.5"``, a lone ``"-"`` or ``"="``, other text)
    unchanged.

    >>> spreadsheet_safe("=HYPERLINK(\\"http://x\\")")
    '\\'=HYPERLINK("http://x")'
    >>> spreadsheet_safe("-1.5"), spreadsheet_safe(-1.5)
    ('-1.5', -1.5)
    """
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    if len(value) == 1 or _PLAIN_NUMBER.match(value.strip()):
        return value  # a lone sign ("-": not available, "=": a P-value operator) or a number
    return "'" + value


def spreadsheet_safe_frame(df):
    """A copy of ``df`` with :func:`spreadsheet_safe` applied to every text cell and to the
    column names (the header row is a row of cells too)."""
    out = df.copy()
    for c in out.columns:
        col = out[c]
        if col.dtype == object or str(col.dtype) in ("string", "str"):
            out[c] = col.map(spreadsheet_safe)
    out.columns = [spreadsheet_safe(c) for c in out.columns]
    out.attrs = dict(df.attrs)
    return out


class SafeStream:
    """A text stream wrapper whose ``write`` passes text through :func:`terminal_safe`
    (line feeds kept): every byte the CLI prints goes through one place."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        return self._stream.write(terminal_safe(text, newlines=True))

    def __getattr__(self, name):
        return getattr(self._stream, name)
