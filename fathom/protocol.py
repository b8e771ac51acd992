"""Reading a model reply: its ```repl``` code blocks and a FINAL / FINAL_VAR written as text."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Literal

# ```repl blocks are the protocol; ```python blocks are accepted only when a reply has no
# ```repl block, because small and older models often write the more common fence.
_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)
_FINAL_VAR = re.compile(
    r"^[ \t]*FINAL_VAR\(\s*(?P<q>['\"]?)(?P<name>[A-Za-z_]\w*)(?P=q)\s*\)", re.M
)
_FINAL = re.compile(r"^[ \t]*FINAL\((?P<body>.*)\)[ \t]*$", re.M | re.DOTALL)


@dataclass(frozen=True)
class TextFinal:
    """A FINAL(answer) or FINAL_VAR(name) written outside code."""

    kind: Literal["answer", "variable"]
    value: str


def code_blocks(reply: str) -> list[str]:
    """The code of every ```repl``` block in order (```python``` if there is no repl block)."""
    blocks = [(lang.lower(), code) for lang, code in _FENCE.findall(reply)]
    repl = [code for lang, code in blocks if lang == "repl"]
    if repl:
        return [c for c in repl if c.strip()]
    return [code for lang, code in blocks if lang in ("python", "py") and code.strip()]


def strip_code(reply: str) -> str:
    """The reply with every fenced block removed: the text the model wrote around its code."""
    return _FENCE.sub("", reply)


def find_final(reply: str) -> TextFinal | None:
    """A FINAL / FINAL_VAR at the start of a line outside code blocks, or None."""
    text = strip_code(reply)
    var = _FINAL_VAR.search(text)
    answer = _FINAL.search(text)
    if var and (answer is None or var.start() <= answer.start()):
        return TextFinal("variable", var.group("name"))
    if answer is None:
        return None
    return TextFinal("answer", _unquote(answer.group("body").strip()))


def _unquote(body: str) -> str:
    """FINAL("Paris") means Paris; FINAL(Paris, France) means the text as written."""
    if len(body) >= 2 and body[0] in "'\"" and body[-1] == body[0]:
        try:
            value = ast.literal_eval(body)
        except (ValueError, SyntaxError):
            return body
        if isinstance(value, str):
            return value
    return body


def truncate(text: str, limit: int) -> str:
    """Keep the head and tail of `text` within `limit` characters, saying how much was cut."""
    if limit <= 0 or len(text) <= limit:
        return text
    marker = "\n... [{} characters truncated] ...\n"
    keep = max(0, limit - len(marker.format(len(text))))
    head = keep // 2
    tail = keep - head
    cut = len(text) - head - tail
    return text[:head] + marker.format(cut) + (text[-tail:] if tail else "")
