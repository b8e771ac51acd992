"""A REPL's variables taken out and put back: what a session saves, and how it travels.

`take` runs where the REPL lives (the worker, or this process for the in-process
sandbox): modules are kept by name, functions and classes defined in the REPL by
their source, the rest pickled with cloudpickle; a value that cannot be pickled is
listed with why, never dropped silently. `put` rebuilds them in that order. The parent
only moves the pickled bytes and never unpickles them.

Over the subprocess channel (JSON only) a variable travels as `var` messages, its
bytes in base64 chunks that fit one message.
"""

from __future__ import annotations

import base64
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fathom.sandbox.repl import REPL_MODULE, Repl

# What one save may move out of a worker: past it the worker (or code in it) is refused, so
# it cannot fill the parent's memory.
MAX_SAVE_BYTES = 2 * 2**30


class Kind(StrEnum):
    """How a saved variable is rebuilt, in the order `put` rebuilds them."""

    MODULE = "module"  # data: the module's name, imported again
    SOURCE = "source"  # data: the def/class source, run again
    PICKLE = "pickle"  # data: cloudpickle bytes


_ORDER = [kind.value for kind in Kind]


@dataclass
class Variables:
    """Saved REPL variables: name -> (kind, data), and the names that could not be saved."""

    saved: dict[str, tuple[str, str | bytes]] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)  # name -> why


def take(repl: Repl, skip: frozenset[str] = frozenset()) -> Variables:
    """Every user variable of `repl` but `context` and the names in `skip`."""
    import cloudpickle  # here, not at import: the worker must start light

    found = Variables()
    ns = repl.namespace
    for name in repl.user_names():
        value = ns[name]
        if value is repl.context or name in skip:
            continue
        if isinstance(value, types.ModuleType):
            found.saved[name] = (Kind.MODULE, value.__name__)
        elif defined_here(value, name) and name in repl.definitions:
            found.saved[name] = (Kind.SOURCE, repl.definitions[name])
        else:
            try:
                found.saved[name] = (Kind.PICKLE, cloudpickle.dumps(value))
            except Exception as exc:  # any object may refuse pickling
                found.lost[name] = f"{type(exc).__name__}: {exc}"[:200]
    return found


def put(repl: Repl, variables: Variables) -> tuple[list[str], dict[str, str]]:
    """Rebuild saved variables in `repl`: the names restored, and those lost with why."""
    import pickle  # cloudpickle's output loads with plain pickle (cloudpickle importable)

    restored: list[str] = []
    lost = dict(variables.lost)
    ordered = sorted(variables.saved.items(), key=lambda item: _rank(item[1][0]))
    for name, (kind, data) in ordered:
        try:
            if kind == Kind.MODULE and isinstance(data, str):
                repl.namespace[name] = __import__(data, fromlist=["_"])
            elif kind == Kind.SOURCE and isinstance(data, str):
                repl.define(data)
            elif kind == Kind.PICKLE and isinstance(data, bytes):
                repl.namespace[name] = pickle.loads(data)
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except Exception as exc:  # what fails to rebuild is lost, and said so
            lost[name] = f"{type(exc).__name__}: {exc}"[:200]
            continue
        restored.append(name)
    return sorted(restored), lost


def to_messages(variables: Variables, msg_id: object, chunk: int) -> Iterator[dict[str, Any]]:
    """`var` messages carrying `variables`, each datum cut into base64 chunks of `chunk` bytes."""
    for name, (kind, data) in variables.saved.items():
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        pieces = [raw[i : i + chunk] for i in range(0, len(raw), chunk)] or [b""]
        for index, piece in enumerate(pieces):
            yield {"op": "var", "id": msg_id, "name": name, "kind": kind,
                   "data": base64.b64encode(piece).decode("ascii"),
                   "more": index < len(pieces) - 1}


class Assembler:
    """Rebuilds `Variables` from `var` messages (validated: they may come from a hostile side)."""

    def __init__(self, limit: int = MAX_SAVE_BYTES) -> None:
        self.variables = Variables()
        self._parts: dict[str, tuple[str, list[bytes]]] = {}
        self._left = limit

    def add(self, message: dict[str, Any]) -> None:
        """Take one `var` message; ValueError when it is malformed or over the limit."""
        name, kind, data = message.get("name"), message.get("kind"), message.get("data")
        if not isinstance(name, str) or kind not in _ORDER or not isinstance(data, str):
            raise ValueError("a malformed var message")
        piece = base64.b64decode(data, validate=True)
        self._left -= len(piece)
        if self._left < 0:
            raise ValueError(f"the variables pass {MAX_SAVE_BYTES // 2**30} GB, more than a "
                             "session saves")
        entry = self._parts.setdefault(name, (kind, []))
        entry[1].append(piece)
        if message.get("more") is not True:
            raw = b"".join(self._parts.pop(name)[1])
            value = raw if kind == Kind.PICKLE else raw.decode("utf-8", "surrogatepass")
            self.variables.saved[name] = (kind, value)


def _rank(kind: str) -> int:
    return _ORDER.index(kind) if kind in _ORDER else len(_ORDER)


def defined_here(value: Any, name: str) -> bool:
    """`value` is the function or class that REPL code defined as `name` (kept by source)."""
    return (
        isinstance(value, types.FunctionType | type)
        and getattr(value, "__module__", None) == REPL_MODULE
        and getattr(value, "__name__", None) == name
    )
