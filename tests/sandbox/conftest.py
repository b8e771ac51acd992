"""A fake Bridge that records calls and how many run at once, for the sandbox tests.

It offers the real REPL functions (the specs of `fathom.repl_api`) and answers each
call with the method of the same name, so the sandboxes are tested through the same
`functions()` / `call()` contract the engine's bridge implements.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from fathom import repl_api
from fathom.errors import BudgetExceeded
from fathom.repl_api import FunctionSpec


def _refusing(message: str) -> Callable[[str], str]:
    """A reply that refuses like the budget does."""

    def reply(prompt: str) -> str:
        raise BudgetExceeded(message)

    return reply


@pytest.fixture
def refusing() -> Callable[[str], Callable[[str], str]]:
    return _refusing


class FakeBridge:
    """Answers every call with a tagged echo; optional latency; counts concurrent calls."""

    def __init__(self, delay: float = 0.0, reply: Callable[[str], str] | None = None):
        self.delay = delay
        self.reply = reply or (lambda prompt: f"answer to {prompt}")
        self.calls: list[tuple[str, Any]] = []
        self.threads: set[int] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def functions(self) -> list[FunctionSpec]:
        return [function.spec for function in repl_api.functions()]

    def call(self, name: str, args: dict[str, Any]) -> Any:
        return getattr(self, name)(**args)

    def _one(self, kind: str, payload: Any, prompt: str) -> str:
        with self._lock:
            self.calls.append((kind, payload))
            self.threads.add(threading.get_ident())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            return self.reply(prompt)
        finally:
            with self._lock:
                self.in_flight -= 1

    def llm_query(self, prompt: str, model: str | None = None) -> str:
        return self._one("llm_query", (prompt, model), prompt)

    def llm_query_batched(self, prompts: list[str], model: str | None = None) -> list[str]:
        with self._lock:
            self.calls.append(("llm_query_batched", (list(prompts), model)))
        # Fan out like the real Bridge does, so in-flight counts are meaningful.
        results: list[str] = [""] * len(prompts)
        refusals: list[BudgetExceeded] = []

        def run(i: int, p: str) -> None:
            try:
                results[i] = self._one("batched_item", (p, model), p)
            except BudgetExceeded as exc:
                refusals.append(exc)

        workers = [threading.Thread(target=run, args=(i, p)) for i, p in enumerate(prompts)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if refusals:
            raise refusals[0]
        return results

    def rlm_query(self, prompt: str, context: Any = None) -> str:
        return self._one("rlm_query", (prompt, context), f"rlm {prompt} ctx={context!r}")

    def rlm_query_batched(
        self, prompts: list[str], contexts: list[Any] | None = None
    ) -> list[str]:
        with self._lock:
            self.calls.append(("rlm_query_batched", (list(prompts), contexts)))
        return [f"rlm {p}" for p in prompts]

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]


@pytest.fixture
def bridge() -> FakeBridge:
    return FakeBridge()


@pytest.fixture
def make_bridge() -> type[FakeBridge]:
    return FakeBridge
