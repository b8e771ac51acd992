"""The task families by name, and the size syntax of `--sizes`.

Each family lives in its own module and is imported only when first asked for.
"""

from __future__ import annotations

import re

from fathom.bench.tasks.base import Family, Task
from fathom.errors import ConfigError
from fathom.registry import Registry

__all__ = ["Family", "Task", "families", "get_family", "parse_size", "register"]

# In the order `fathom bench list` shows them: retrieval first, then aggregation,
# multi-document reasoning and code.
_BUILTINS = {
    "niah": "fathom.bench.tasks.niah:FAMILY",
    "vartrack": "fathom.bench.tasks.vartrack:FAMILY",
    "oolong": "fathom.bench.tasks.oolong:FAMILY",
    "pairs": "fathom.bench.tasks.pairs:FAMILY",
    "multihop": "fathom.bench.tasks.multihop:FAMILY",
    "codeqa": "fathom.bench.tasks.codeqa:FAMILY",
}

_registry: Registry[Family] = Registry(_BUILTINS)


def register(family: Family) -> None:
    """Add a family of your own (or replace a built-in one) under `family.name`."""
    _registry.register(family.name, family)


def _ordered_names() -> list[str]:
    return list(_BUILTINS) + [n for n in _registry.names() if n not in _BUILTINS]


def families() -> list[Family]:
    """Every family, built-ins first in their usual order."""
    return [_registry.get(name) for name in _ordered_names()]


def get_family(name: str) -> Family:
    """The family called `name`; ConfigError naming the valid ones if there is none."""
    try:
        return _registry.get(name.strip().lower())
    except KeyError:
        raise ConfigError(
            f"unknown task family {name!r}: choose from {', '.join(_ordered_names())} "
            "(`fathom bench list` describes them)"
        ) from None


_SIZE = re.compile(r"(\d+(?:\.\d+)?)([km]?)")
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000}


def parse_size(text: str) -> int:
    """Tokens from a size such as "32k", "1m", "16m" or "8000"; ConfigError otherwise."""
    match = _SIZE.fullmatch(text.strip().lower().replace("_", ""))
    tokens = round(float(match.group(1)) * _UNITS[match.group(2)]) if match else 0
    if tokens <= 0:
        raise ConfigError(
            f"bad size {text!r}: write a number of tokens such as 8000, 32k, 1m or 16m"
        )
    return tokens
