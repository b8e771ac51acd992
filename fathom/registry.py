"""Named factories, with built-ins imported only when first used.

Model providers and sandboxes are both looked up by name. A built-in entry is a
"module:attr" string so that, say, an unused SDK is never imported; a registered
one is the factory itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Factories by name; "module:attr" entries are imported on first `get` and kept."""

    def __init__(self, builtins: Mapping[str, str]) -> None:
        self._entries: dict[str, T | str] = dict(builtins)

    def register(self, name: str, factory: T) -> None:
        """Add `factory` as `name`, replacing any entry of that name."""
        self._entries[name] = factory

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """The factory registered as `name`.

        Raises KeyError for an unknown name and ImportError when a built-in's
        module cannot be imported; callers turn these into their own messages.
        """
        entry = self._entries.get(name)
        if entry is None:
            raise KeyError(f"nothing is registered as {name!r}; known: {', '.join(self.names())}")
        if not isinstance(entry, str):
            return entry
        module_name, _, attr = entry.partition(":")
        factory: T = getattr(importlib.import_module(module_name), attr)
        self._entries[name] = factory
        return factory
