"""JSON-like values: validation that names the bad path, sizes, previews, batched writing."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import IO, Any

from fathom.errors import ContextError

MAX_DEPTH = 500  # nesting limit of list/dict values
_SCALARS = frozenset({str, int, float, bool, type(None)})
# One encoder, built once: json.dumps(..., ensure_ascii=False) builds a new one per call.
JSON_ENCODER = json.JSONEncoder(ensure_ascii=False)


def check_json(value: list[Any] | dict[str, Any]) -> None:
    """Raise ContextError naming the first value JSON cannot hold, and what to pass instead.

    Iterative (no recursion limit) with an exact-type fast path for scalars; a reference
    cycle shows up as nesting deeper than MAX_DEPTH.
    """
    stack: list[tuple[Any, Any, int]] = [(value, None, 0)]  # (container, path node, depth)
    while stack:
        container, node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ContextError(f"{_where(node)} is nested more than {MAX_DEPTH} levels deep or "
                               "contains itself (a reference cycle): flatten it, or pass "
                               "json.dumps(value) as a str.")
        if isinstance(container, dict):
            for key in container:
                if not isinstance(key, str):
                    raise ContextError(
                        f"{_where(node)} has the key {key!r} of type {type(key).__name__}; JSON "
                        "keys are str: convert them, e.g. {str(k): v for k, v in d.items()}."
                    )
            pairs: Iterable[tuple[Any, Any]] = container.items()
        else:
            pairs = enumerate(container)
        for key, item in pairs:
            if type(item) in _SCALARS:
                continue
            if isinstance(item, list | tuple | dict):
                stack.append((item, (node, key), depth + 1))
            elif item is not None and not isinstance(item, str | int | float):
                raise ContextError(unsupported(item, _where((node, key))))


def _where(node: Any) -> str:
    """`context['a'][3]` from a linked (parent, key) path node."""
    keys = []
    while node is not None:
        node, key = node
        keys.append(f"[{key!r}]")
    where = "context" + "".join(reversed(keys))
    return where if len(where) <= 200 else f"{where[:100]}...{where[-90:]}"


def unsupported(value: Any, where: str) -> str:
    """Why `value` (found at `where`) cannot be in a context, and what to pass instead."""
    kind = type(value).__name__
    if isinstance(value, bytes | bytearray | memoryview):
        hint = "decode it to a str first (data.decode('utf-8')) or pass a pathlib.Path to the file"
    elif where in ("context", "text"):
        hint = "pass a str, a list or dict of JSON-like values, a pathlib.Path or a fathom.Context"
    else:
        hint = "convert it to a str, number, bool, None, list or dict (e.g. str(x) or vars(x))"
    return f"{where} is of type {kind}, which a context cannot hold: {hint}."


def json_len(value: Any) -> int:
    """Length in characters of the JSON of `value`."""
    return len(JSON_ENCODER.encode(value))


def clip(value: Any, limit: int, items: int) -> Any:
    """A small copy of `value` whose JSON starts like the real one, for the preview."""
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, dict):
        return {k: clip(v, limit, items) for k, v in itertools.islice(value.items(), items)}
    if isinstance(value, list | tuple):
        return [clip(v, limit, items) for v in value[:items]]
    return value


def write_json(value: object, out: IO[str]) -> None:
    """JSON of a list or dict written in batches of items: C-speed, bounded extra memory."""
    if not isinstance(value, list | tuple | dict):
        out.write(JSON_ENCODER.encode(value))
        return
    is_dict = isinstance(value, dict)
    items = iter(value.items() if isinstance(value, dict) else value)
    out.write("{" if is_dict else "[")
    first = True
    while batch := list(itertools.islice(items, 1000)):
        text = JSON_ENCODER.encode(dict(batch) if is_dict else batch)[1:-1]
        out.write(text if first else ", " + text)
        first = False
    out.write("}" if is_dict else "]")
