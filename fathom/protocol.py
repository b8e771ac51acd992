"""Reading a model reply: its ```repl``` code blocks and a FINAL / FINAL_VAR written as text."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Literal

# ```repl blocks are the protocol; ```python blocks are accepted only when a reply has no
# ```repl block, because small and older models often write the more common fence.
# A closing fence must sit on its own line (so "```" inside code does not end a block); an
# unclosed last block (a reply cut off by max_tokens) still counts as code, not as prose.
_FENCE = re.compile(
    r"^[ \t]*```([\w+-]*)[ \t]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.MULTILINE | re.DOTALL
)
_FINAL_VAR = re.compile(
    r"^[ \t]*FINAL_VAR\(\s*(?P<q>['\"]?)(?P<name>[A-Za-z_]\w*)(?P=q)\s*\)", re.M
)
_FINAL_START = re.compile(r"^[ \t]*FINAL\(", re.M)


@dataclass(frozen=True)
class TextFinal:
    """A FINAL(answer) or FINAL_VAR(name) written outside code."""

    kind: Literal["answer", "variable"]
    value: str


def normalize(reply: str) -> str:
    """Unix line endings, so replies from any server parse the same."""
    return reply.replace("\r\n", "\n").replace("\r", "\n")


def code_blocks(reply: str) -> list[str]:
    """The code of every ```repl``` block in order (```python``` if there is no repl block)."""
    blocks = [(lang.lower(), code) for lang, code in _FENCE.findall(normalize(reply))]
    repl = [code for lang, code in blocks if lang == "repl"]
    if repl:
        return [c for c in repl if c.strip()]
    return [code for lang, code in blocks if lang in ("python", "py") and code.strip()]


def strip_code(reply: str) -> str:
    """The reply with every fenced block removed: the text the model wrote around its code."""
    return _FENCE.sub("", normalize(reply))


def find_final(reply: str) -> TextFinal | None:
    """A FINAL / FINAL_VAR at the start of a line outside code blocks, or None."""
    text = strip_code(reply)
    var = _FINAL_VAR.search(text)
    answer = _FINAL_START.search(text)
    if var and (answer is None or var.start() <= answer.start()):
        return TextFinal("variable", var.group("name"))
    if answer is None:
        return None
    return TextFinal("answer", _unquote(_balanced(text, answer.end()).strip()))


def _balanced(text: str, start: int) -> str:
    """The text from `start` to the parenthesis closing FINAL( (quotes respected).

    Without a matching one, the rest of that line: "FINAL(42)\nSource: (row 3)" is 42.
    """
    depth, quote, i = 1, "", start
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    line = text[start:].split("\n", 1)[0]
    return line[:-1] if line.rstrip().endswith(")") else line


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
