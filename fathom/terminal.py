"""Text from a model or the sandbox, made safe to show on a terminal.

A reply, a REPL's output or an error message may hold characters a terminal obeys
instead of showing: escape sequences write the clipboard (OSC 52), set the window
title, clear the screen or move the cursor; a lone carriage return overwrites what
was printed; an 8-bit C1 code starts a sequence of its own; a bidi override reorders
what the reader sees. `safe_text` shows each of them as its Python escape (`\\x1b`,
`\\r`, `\\x9b`, `\\u202e`), so nothing is hidden and nothing is obeyed, and keeps
newlines and tabs. Everything written to a terminal passes through it; `--json` and
an answer redirected to a file or a pipe keep the exact text (`safe_json` escapes
the same characters the JSON way, so the decoded value is unchanged).
"""

from __future__ import annotations

import os
import re
from typing import TextIO

# C0 controls but tab and newline, DEL, C1 controls, the Unicode bidirectional
# controls (Trojan Source, CVE-2021-42574) and lone surrogates, which no encoding
# can write (a str from JSON may hold them).
_UNSAFE = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def safe_text(text: str) -> str:
    """`text` with every character a terminal would obey shown as its escape; CRLF becomes LF."""
    return _UNSAFE.sub(_python_escape, text.replace("\r\n", "\n"))


def safe_json(dumped: str) -> str:
    """JSON text (from `json.dumps`) with those characters as `\\uXXXX` escapes: the same value."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)


def is_terminal(stream: TextIO) -> bool:
    """Whether `stream` writes to a terminal, asked of its file descriptor first: the
    in-process sandbox stands in routers for sys.stdout and sys.stderr that say they are not."""
    try:
        return os.isatty(stream.fileno())
    except (OSError, ValueError):  # no descriptor: a StringIO, a closed stream
        return stream.isatty()


def _python_escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")
