"""ScriptedLM: replays fixed model turns so the real engine can be tested offline."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from fathom.errors import LMError
from fathom.lm import pricing
from fathom.lm.base import BaseLM, Completion, Message, Usage

Responder = Callable[[list[Message]], str]


class ScriptedLM(BaseLM):
    """An LM whose replies are a list used in order, or a callable `messages -> str`.

    `latency` (seconds) simulates a slow model with an asyncio sleep. Token counts
    are pricing's estimates, as for a server that reports no usage, so budgets and
    usage work as with real models.
    A reply that is an Exception instance is raised instead of returned.
    """

    def __init__(
        self,
        replies: Sequence[str | BaseException] | Responder,
        *,
        name: str = "scripted",
        latency: float = 0.0,
        context_window: int = 128_000,
        usd_per_million_tokens: float = 0.0,
    ) -> None:
        self.name = name
        self.context_window = context_window
        self.latency = latency
        self.usd_per_million_tokens = usd_per_million_tokens
        self._replies: list[str | BaseException] | None = None
        self._responder: Responder | None = None
        if callable(replies):
            self._responder = replies
        else:
            self._replies = list(replies)
        self._lock = threading.Lock()
        self._index = 0
        self.calls: list[list[Message]] = []

    def _next_reply(self, messages: list[Message]) -> str:
        with self._lock:
            self.calls.append(list(messages))
            if self._responder is not None:
                reply: str | BaseException = self._responder(messages)
            else:
                assert self._replies is not None
                if self._index >= len(self._replies):
                    raise LMError(
                        f"ScriptedLM {self.name!r} ran out of replies after {self._index} calls; "
                        "add more replies to the script."
                    )
                reply = self._replies[self._index]
                self._index += 1
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def acomplete(self, messages: list[Message], **options: Any) -> Completion:
        """Return the next scripted reply."""
        start = time.perf_counter()
        if self.latency:
            await asyncio.sleep(self.latency)
        text = self._next_reply(messages)
        prompt_tokens = pricing.estimate_prompt_tokens(messages)
        completion_tokens = pricing.estimate_tokens(text)
        usd = (prompt_tokens + completion_tokens) * self.usd_per_million_tokens / 1e6
        usage = Usage(prompt_tokens, completion_tokens, 0, usd, 1)
        return Completion(text, self.name, usage, seconds=time.perf_counter() - start)

    @property
    def remaining(self) -> int:
        """How many scripted replies are left (0 for a callable script)."""
        return 0 if self._replies is None else len(self._replies) - self._index
