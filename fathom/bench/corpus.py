"""Natural filler text, offline on every machine: sentences from the standard library's docstrings.

The pool is read once per process from the installed stdlib (`ast.get_docstring` of
modules, classes and functions), filtered to plain English prose and sorted, so a
seed picks the same text on every machine with the same Python. Generators fill any
size by sampling sentences from it; nothing is repeated word by word.
"""

from __future__ import annotations

import ast
import functools
import os
import random
import re
import sysconfig
from collections.abc import Iterator

from fathom import syntax

# Enough distinct prose for long haystacks (about 5,000 sentences) while reading the
# pool takes about a second; more files would only slow every process down.
_POOL_CHARS = 1_000_000
_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "__pycache__", "lib2to3", "turtledemo"}
_SENTENCE_END = re.compile(r"(?<=[a-z)][.!?])\s+(?=[A-Z])")
# Sentences that could be mistaken for a task's own facts are left out of the pool,
# so a haystack never contains a needle or a binding that the generator did not place.
_RESERVED = re.compile(r"magic number|\bVAR\b|\bUser\b|\bRecord\b|\bDoc(?:ument)?\s+\d", re.I)
_SENTENCES_PER_PARAGRAPH = 5


def stdlib_files() -> list[str]:
    """The installed standard library's own .py files (no tests, no site-packages), sorted."""
    root = sysconfig.get_paths()["stdlib"]
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        found.extend(os.path.join(folder, f) for f in files if f.endswith(".py"))
    return sorted(found)


def _docstrings(path: str) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as file:
            tree = syntax.parse(file.read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def _is_prose(sentence: str) -> bool:
    if not 40 <= len(sentence) <= 240 or not sentence[0].isupper() or sentence[-1] not in ".!?":
        return False
    if any(mark in sentence for mark in (">>>", "`", "::", "{", "}", "http", "__", "=", "*")):
        return False
    letters = sum(c.isalpha() or c == " " for c in sentence)
    return letters >= 0.9 * len(sentence) and not _RESERVED.search(sentence)


@functools.lru_cache(maxsize=1)
def sentences() -> tuple[str, ...]:
    """The pool of prose sentences, read once per process and sorted."""
    files = stdlib_files()
    # A stride through the sorted files spreads the pool over the whole library
    # (asyncio to zipfile), not only its first packages alphabetically.
    stride = 3
    ordered = [f for start in range(stride) for f in files[start::stride]]
    pool: set[str] = set()
    read = 0
    for path in ordered:
        for doc in _docstrings(path):
            read += len(doc)
            for paragraph in doc.split("\n\n"):
                flat = " ".join(paragraph.split())
                pool.update(s for s in _SENTENCE_END.split(flat) if _is_prose(s))
        if read >= _POOL_CHARS:
            break
    return tuple(sorted(pool))


def sample(rng: random.Random, count: int) -> list[str]:
    """`count` sentences drawn from the pool (with replacement) by `rng`."""
    return rng.choices(sentences(), k=count)


def sentences_for(rng: random.Random, chars: int) -> list[str]:
    """Enough sentences for about `chars` characters of text joined by spaces."""
    pool = sentences()
    mean = sum(map(len, pool)) / len(pool) + 1
    return rng.choices(pool, k=max(1, round(chars / mean)))


def paragraphs(items: list[str]) -> str:
    """Sentences joined into paragraphs of a few sentences each."""
    step = _SENTENCES_PER_PARAGRAPH
    return "\n\n".join(" ".join(items[i : i + step]) for i in range(0, len(items), step))


def text(rng: random.Random, chars: int) -> str:
    """About `chars` characters of prose in paragraphs, chosen by `rng`."""
    return paragraphs(sentences_for(rng, chars))
