"""Parsing Python source into an AST safely from several threads at once.

CPython 3.11 keeps the AST converter's recursion depth per interpreter, not per thread: two
threads building ASTs at once (in-process REPLs of concurrent runs, bench task generators)
fail with "SystemError: AST constructor recursion depth mismatch". Every parse in fathom
takes this one lock.
"""

from __future__ import annotations

import ast
import threading

AST_LOCK = threading.Lock()


def parse(source: str, filename: str = "<unknown>", mode: str = "exec") -> ast.AST:
    """`ast.parse`, one thread at a time within this process."""
    with AST_LOCK:
        return ast.parse(source, filename, mode)
