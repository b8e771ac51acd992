"""Which model answers a call: the root model, the sub model, or another one the user allowed."""

from __future__ import annotations

from collections.abc import Callable

from fathom.errors import ConfigError
from fathom.lm.base import LM


class ModelRouter:
    """The root and sub models of a run tree, and `llm_query(model=...)` lookups by name."""

    def __init__(self, root: LM, sub: LM, allowed: list[str | LM] | None, wrap: Callable[[LM], LM]):
        self.root = root
        self.sub = sub
        self._wrap = wrap
        self._by_name: dict[str, LM] = {root.name: root, sub.name: sub}
        self._allowed: set[str] | None = None
        if allowed is not None:
            self._allowed = {root.name, sub.name}
            for entry in allowed:
                if isinstance(entry, str):
                    self._allowed.add(entry)
                else:
                    self._allowed.add(entry.name)
                    self._by_name[entry.name] = wrap(entry)

    def get(self, spec: str | None) -> LM:
        """The LM for `llm_query(model=spec)`; ConfigError if the user did not allow it."""
        if spec is None:
            return self.sub
        if spec in self._by_name:
            return self._by_name[spec]
        if self._allowed is None or spec not in self._allowed:
            allowed = sorted(self._allowed or {self.root.name, self.sub.name})
            raise ConfigError(
                f"model {spec!r} is not allowed in this run; use one of {allowed} "
                "(the user can allow more with RLM(allowed_models=[...]))."
            )
        from fathom.lm import resolve

        lm = self._wrap(resolve(spec))
        self._by_name[spec] = lm
        return lm
