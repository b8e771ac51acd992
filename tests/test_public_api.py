"""The public API: what `fathom`, `fathom.lm` and `fathom.sandbox` export, and what the README uses.

A change here is a change users see: update the lists on purpose, with a CHANGELOG line.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

import fathom
import fathom.lm
import fathom.sandbox

README = Path(__file__).resolve().parent.parent / "README.md"

FATHOM_ALL = [
    "Budget",
    "BudgetExceeded",
    "ConfigError",
    "Context",
    "ContextChanged",
    "ContextError",
    "FathomError",
    "LMError",
    "RLM",
    "Result",
    "SandboxError",
    "Session",
    "SessionError",
    "__version__",
]

LM_ALL = [
    "BaseLM",
    "Completion",
    "LM",
    "Message",
    "ScriptedLM",
    "Usage",
    "complete_sync",
    "default_model",
    "providers",
    "register_provider",
    "resolve",
]

SANDBOX_ALL = [
    "Bridge",
    "ExecResult",
    "IsolationLevel",
    "Sandbox",
    "SandboxOptions",
    "create",
    "register_sandbox",
    "sandbox_names",
]


def test_fathom_exports_exactly_the_pinned_names() -> None:
    assert sorted(fathom.__all__) == FATHOM_ALL


def test_every_public_name_in_the_fathom_namespace_is_exported() -> None:
    # Submodules become attributes once imported; `annotations` is the __future__ import.
    public = {
        name
        for name, value in vars(fathom).items()
        if not name.startswith("_") and name != "annotations" and not isinstance(value, ModuleType)
    }
    assert public == set(fathom.__all__) - {"__version__"}


@pytest.mark.parametrize(
    ("module", "expected"),
    [(fathom, FATHOM_ALL), (fathom.lm, LM_ALL), (fathom.sandbox, SANDBOX_ALL)],
    ids=["fathom", "fathom.lm", "fathom.sandbox"],
)
def test_exported_names_exist(module: ModuleType, expected: list[str]) -> None:
    assert set(expected) <= set(module.__all__)  # teammates may add names, never drop one
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{module.__name__}.__all__ names what it lacks: {missing}"


def _readme_code() -> list[str]:
    """The README's Python blocks and inline code spans (shell blocks left out)."""
    text = README.read_text(encoding="utf-8")
    fenced = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
    python = [body for lang, body in fenced.findall(text) if lang == "python"]
    prose = fenced.sub("", text)
    return python + re.findall(r"`([^`\n]+)`", prose)


def _readme_names() -> list[str]:
    """Every dotted `fathom.…` name the README's code refers to, with `from X import a, b`."""
    names = set()
    for code in _readme_code():
        names |= {name.rstrip(".") for name in re.findall(r"\bfathom\.[A-Za-z_][\w.]*", code)}
        for module, imported in re.findall(r"from (fathom[\w.]*) import ([\w, ]+)", code):
            names |= {f"{module}.{name.strip()}" for name in imported.split(",") if name.strip()}
    return sorted(names)


def _resolve(dotted: str) -> object:
    """The object a dotted name refers to, importing submodules along the way."""
    parts = dotted.split(".")
    value: object = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 2):
        try:
            value = getattr(value, part)
        except AttributeError:
            value = importlib.import_module(".".join(parts[:i]))
    return value


def test_readme_names_are_found() -> None:
    names = _readme_names()
    assert {"fathom.RLM", "fathom.Budget", "fathom.lm.ScriptedLM"} <= set(names)
    assert {"fathom.sandbox.register_sandbox", "fathom.lm.register_provider"} <= set(names)


@pytest.mark.parametrize("name", _readme_names())
def test_every_name_in_the_readme_exists(name: str) -> None:
    try:
        _resolve(name)
    except ImportError as exc:
        pytest.fail(f"README.md uses {name}, which does not exist ({exc})")
