"""The methods `fathom bench run --methods` compares, by name, in the paper's order."""

from __future__ import annotations

from fathom.bench.methods.base import Limits, Method, Outcome
from fathom.bench.methods.direct import Direct
from fathom.bench.methods.recursive import REPL, RLM1, RLM2
from fathom.bench.methods.retrieval import BM25
from fathom.bench.methods.summarize import Summarize
from fathom.errors import ConfigError

__all__ = ["Limits", "Method", "Outcome", "get_method", "methods"]

_BUILTIN: tuple[Method, ...] = (Direct(), BM25(), Summarize(), REPL, RLM1, RLM2)
_METHODS: dict[str, Method] = {m.name: m for m in _BUILTIN}


def methods() -> list[Method]:
    """Every method, in the order of the paper's table."""
    return list(_METHODS.values())


def get_method(name: str) -> Method:
    """The method called `name`; ConfigError naming the valid ones if there is none."""
    try:
        return _METHODS[name.strip().lower()]
    except KeyError:
        raise ConfigError(
            f"unknown method {name!r}: choose from {', '.join(_METHODS)} "
            "(`fathom bench list` describes them)"
        ) from None
