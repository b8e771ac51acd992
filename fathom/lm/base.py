"""The LM protocol every provider implements, and the values it returns."""

from __future__ import annotations

import asyncio
import contextvars
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fathom.lm.pricing import CHARS_PER_TOKEN

# A chat message: {"role": "system" | "user" | "assistant", "content": str}.
Message = dict[str, str]

# The prompt-cache key of the run tree making the call (set by fathom.calls.Meter), sent as
# OpenAI's `prompt_cache_key` so that one tree's requests land on the same cache.
prompt_cache_key: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fathom_prompt_cache_key", default=None
)


@dataclass(frozen=True)
class Usage:
    """Tokens and dollars of one or more model calls.

    `prompt_tokens` counts every prompt token; of them, `cached_tokens` were read from the
    provider's prompt cache (billed at its cached rate) and `cache_write_tokens` were
    written to it (Anthropic bills writes above the input rate).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    usd: float = 0.0
    calls: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            usd=self.usd + other.usd,
            calls=self.calls + other.calls,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as written in traces and `--json` output."""
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "usd": round(self.usd, 8),
        }


@dataclass(frozen=True)
class Completion:
    """One model reply: its text, the model that wrote it and what it cost."""

    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    cached: bool = False
    seconds: float = 0.0


@runtime_checkable
class LM(Protocol):
    """A chat model. `name` is its spec string, e.g. "openai:gpt-5-mini".

    The engine only awaits `acomplete`; `complete_sync` (or `BaseLM.complete`)
    is the blocking form for scripts and notebooks.
    """

    name: str
    context_window: int

    async def acomplete(self, messages: list[Message], **options: Any) -> Completion:
        """Return the model's reply to `messages`."""
        ...


def complete_sync(lm: LM, messages: list[Message], **options: Any) -> Completion:
    """Blocking call of `lm.acomplete`, usable inside a running event loop's thread too.

    With no loop running the call gets a fresh one here; with a loop running (a
    ScriptedLM responder, a notebook cell) it cannot reuse or block that loop, so
    it runs on a fresh loop in a worker thread while this thread waits.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(lm.acomplete(messages, **options))
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="fathom-complete") as pool:
        return pool.submit(context.run, asyncio.run, lm.acomplete(messages, **options)).result()


class BaseLM(ABC):
    """Base for providers: write `acomplete`, get the blocking `complete` from it."""

    name: str
    context_window: int

    @abstractmethod
    async def acomplete(self, messages: list[Message], **options: Any) -> Completion:
        """Return the model's reply to `messages`."""

    def complete(self, messages: list[Message], **options: Any) -> Completion:
        """Blocking form of `acomplete` (see `complete_sync`)."""
        return complete_sync(self, messages, **options)


def prompt_room(lm: LM) -> int:
    """Characters a prompt to `lm` may take: its window less the tokens kept for the reply.

    A model that sends no reply limit (no `max_output_tokens`) gets its whole window; a
    wrapper (the response cache) is looked through to the model it wraps.
    """
    reply = getattr(lm, "max_output_tokens", None)
    if reply is None:
        reply = getattr(getattr(lm, "lm", None), "max_output_tokens", 0)
    return max(0, lm.context_window - int(reply or 0)) * CHARS_PER_TOKEN


def split_spec(spec: str) -> tuple[str, str]:
    """Split "provider:model" into its parts; "local" alone gives ("local", "")."""
    provider, _, rest = spec.partition(":")
    return provider.strip().lower(), rest.strip()
