"""Questions about a real code base, answered from its syntax trees.

The context is a dict path -> source of consecutive files of the installed standard
library (then of the installed packages, for sizes beyond the library's ~8M tokens).
Questions: which functions call a given one, which classes derive from a given one,
and in which file a module-level constant is assigned. Answers come from `ast`.
"""

from __future__ import annotations

import ast
import os
import random
import re
import sysconfig
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from fathom import syntax
from fathom.bench import scoring
from fathom.bench.tasks.base import Task, target_chars, task_rng
from fathom.errors import ConfigError

VARIANTS = ("callers", "subclasses", "constant")
MAX_ANSWERS = 20
# A name found in more files than this is too common to check quickly (and to ask about).
MAX_FILES_PER_NAME = 300
_CONSTANT = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_PACKAGES = "site-packages/"


@lru_cache(maxsize=1)
def code_files() -> tuple[tuple[str, str, int], ...]:
    """(path shown, path on disk, bytes) of every .py file: the stdlib, then installed packages."""
    paths = sysconfig.get_paths()
    found: list[tuple[str, str, int]] = []
    for root, prefix in ((paths["stdlib"], ""), (paths["purelib"], _PACKAGES)):
        batch = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "site-packages")]
            for name in files:
                if name.endswith(".py"):
                    disk = os.path.join(folder, name)
                    shown = prefix + os.path.relpath(disk, root).replace(os.sep, "/")
                    batch.append((shown, disk, os.path.getsize(disk)))
        found.extend(sorted(batch))
    return tuple(found)


def select_files(rng: random.Random, chars: int) -> dict[str, str]:
    """Consecutive files (so mostly whole packages) from a random start, about `chars` in all.

    Only the standard library while it is large enough; installed packages after it.
    """
    files = code_files()
    stdlib = [f for f in files if not f[0].startswith(_PACKAGES)]
    if chars <= 0.9 * sum(size for _, _, size in stdlib):
        files = tuple(stdlib)
    start = rng.randrange(len(stdlib))
    chosen: dict[str, str] = {}
    total = 0
    for i in range(len(files)):
        shown, disk, size = files[(start + i) % len(files)]
        if total >= 0.95 * chars:
            break
        if size == 0 or total + size > 1.05 * chars:
            continue
        try:
            with open(disk, encoding="utf-8") as file:
                source = file.read()
        except (OSError, UnicodeDecodeError):
            continue
        chosen[shown] = source
        total += len(source) + len(shown)
    return chosen


def parse(source: str) -> ast.Module | None:
    """The syntax tree of a file, or None when this Python cannot parse it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes and the like in old code
        try:
            return cast(ast.Module, syntax.parse(source))
        except (SyntaxError, ValueError, RecursionError):
            return None


def _defs(node: ast.AST, prefix: str, owner: str | None) -> Iterator[tuple[ast.AST, str | None]]:
    """Every node under `node` with the qualified name of the def whose own body holds it."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = prefix + child.name
            yield child, owner
            yield from _defs(child, name + ".", name)
        elif isinstance(child, ast.ClassDef):
            name = prefix + child.name
            yield child, owner
            yield from _defs(child, name + ".", None)
        else:
            yield child, owner
            yield from _defs(child, prefix, owner)


def _called(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(
        func, ast.Attribute) else None


def callers(tree: ast.Module, name: str) -> set[str]:
    """Qualified names of the defs whose own body calls `name(...)` or `x.name(...)`."""
    return {owner for node, owner in _defs(tree, "", None)
            if owner and isinstance(node, ast.Call) and _called(node) == name}


def _classes(node: ast.AST, prefix: str) -> Iterator[tuple[ast.ClassDef, str]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            name = prefix + child.name
            if isinstance(child, ast.ClassDef):
                yield child, name
            yield from _classes(child, name + ".")
        else:
            yield from _classes(child, prefix)


def _base_name(base: ast.expr) -> str | None:
    return base.id if isinstance(base, ast.Name) else base.attr if isinstance(
        base, ast.Attribute) else None


def subclasses(tree: ast.Module, name: str) -> set[str]:
    """Qualified names of the classes with `name` or `x.name` among their bases."""
    return {qual for cls, qual in _classes(tree, "")
            if any(_base_name(b) == name for b in cls.bases)}


def module_constants(tree: ast.Module) -> set[str]:
    """UPPER_CASE names assigned at module level (in if/try blocks too, not in defs)."""
    found: set[str] = set()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        found.update(t.id for t in targets if isinstance(t, ast.Name) and _CONSTANT.fullmatch(t.id))
        if isinstance(node, ast.stmt) and not isinstance(node, ast.Assign | ast.AnnAssign):
            pending.extend(ast.iter_child_nodes(node))
    return found


def _names_defined(tree: ast.Module, variant: str) -> list[str]:
    if variant == "constant":
        return sorted(module_constants(tree))
    defs = (ast.FunctionDef, ast.AsyncFunctionDef)
    kinds: Any = ast.ClassDef if variant == "subclasses" else defs
    return sorted({n.name for n in ast.walk(tree) if isinstance(n, kinds)
                   and len(n.name) >= 6 and not n.name.startswith("__")})


def _answer(files: dict[str, str], variant: str, name: str) -> list[str] | None:
    """The answer about `name` over all files; None when it is unusable (too common, none)."""
    holders = [path for path, source in files.items() if name in source]
    if len(holders) > MAX_FILES_PER_NAME:
        return None
    found: list[str] = []
    for path in holders:
        tree = parse(files[path])
        if tree is None:
            return None  # a file we cannot read must not hide part of the answer
        if variant == "constant":
            found += [path] if name in module_constants(tree) else []
        else:
            find: Callable[[ast.Module, str], set[str]] = (
                callers if variant == "callers" else subclasses)
            found += [f"{path}:{qual}" for qual in find(tree, name)]
    wanted = len(found) == 1 if variant == "constant" else 1 <= len(found) <= MAX_ANSWERS
    return sorted(found) if wanted else None


_QUERIES = {
    "callers": (
        "Which functions and methods call `{name}`? Count a call written `{name}(...)` or "
        "`something.{name}(...)` in the body of a def; a call inside a nested def or class "
        "counts only for that nested one, and module-level code does not count. Answer with "
        "path:QualifiedName for each, such as json/decoder.py:JSONDecoder.decode (nested "
        "names joined by dots), separated by commas, in any order."
    ),
    "subclasses": (
        "Which classes derive directly from a class named `{name}` (written `{name}` or "
        "`module.{name}` among their bases)? Answer with path:QualifiedName for each, such "
        "as json/decoder.py:JSONDecoder (nested names joined by dots), separated by commas, "
        "in any order."
    ),
    "constant": (
        "In which file is the module-level constant `{name}` assigned? Answer with the file "
        "path only, as written in the keys of the context."
    ),
}


@dataclass(frozen=True)
class Codeqa:
    """The `codeqa` family."""

    name: str = "codeqa"
    description: str = "code QA: callers, subclasses and constants in the stdlib's source (AST)"

    def generate(self, size: int, seed: int, *, variant: str | None = None) -> Task:
        """About `size` tokens of source files (a dict path -> source) and one question."""
        variant = variant or VARIANTS[seed % len(VARIANTS)]
        rng = task_rng(self.name, size, seed, variant)
        for _ in range(20):  # a new set of files when none of these has a usable name
            files = select_files(rng, target_chars(size))
            found = self._question(rng, files, variant)
            if found:
                name, expected = found
                query = ("The context is a dict mapping file paths to Python source code. "
                         + _QUERIES[variant].format(name=name))
                return Task(self.name, size, seed, variant, query, files,
                            expected[0] if variant == "constant" else expected)
        raise ConfigError(f"codeqa found no {variant} question with a checkable answer in "
                          f"{size:,} tokens of source: try another seed or a larger size")

    def _question(
        self, rng: random.Random, files: dict[str, str], variant: str,
    ) -> tuple[str, list[str]] | None:
        paths = list(files)
        for path in rng.sample(paths, min(len(paths), 40)):
            tree = parse(files[path])
            names = _names_defined(tree, variant) if tree else []
            for name in rng.sample(names, min(len(names), 10)):
                expected = _answer(files, variant, name)
                if expected:
                    return name, expected
        return None

    def score(self, task: Task, answer: Any) -> float:
        """Exact match of the path; for lists, the share named (extras cost), in any order."""
        if isinstance(task.expected, str):
            return scoring.exact_match(answer, task.expected)
        return scoring.set_match(answer, task.expected)


FAMILY = Codeqa()
