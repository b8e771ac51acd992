"""Anthropic's Messages API (`anthropic:MODEL`) through the official SDK.

Chat messages are mapped to the Messages API's shape: every system message
goes to `system=`, consecutive messages of the same role are merged (the API
wants user and assistant turns to alternate) and the first turn is a user one.
Keys, clients, retries and errors are fathom.lm.sdk's.

Prompt caching: the request marks `cache_control` breakpoints on the system prompt,
on the first turn (the query and the context's description, the same all run) and
on the last turn, so that each root request reads the previous one's prefix from
Anthropic's cache instead of paying for it again.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable
from typing import Any

import anthropic

from fathom.lm.base import Message, Usage
from fathom.lm.sdk import SDKModel

CONTEXT_WINDOW = 200_000  # Claude 4.x (their 1M windows need a beta header)
LARGE_CONTEXT_WINDOW = 1_000_000  # the Claude 5 family
_SAMPLING_PARAMS = frozenset(
    inspect.signature(anthropic.resources.messages.Messages.create).parameters
) & {"temperature", "top_p", "top_k"}


def default_max_tokens(model: str) -> int:
    """The `max_tokens` sent when the caller gives none (the API requires one)."""
    old = ("claude-3-haiku", "claude-3-opus", "claude-3-sonnet")
    return 4096 if model.startswith(old) else 8192


def context_window_of(model: str) -> int:
    """Context window of a Claude model: 1M for the 5 family, else 200K."""
    return LARGE_CONTEXT_WINDOW if re.match(r"claude-[a-z]+-5(-|$)", model) else CONTEXT_WINDOW


CACHE_CONTROL = {"type": "ephemeral"}
# A prefix shorter than this is not cached by the API (1024 tokens for most models):
# a breakpoint on it would only use up one of the four a request may carry.
MIN_CACHED_CHARS = 1024 * 4


def with_cache_breakpoints(
    system: str | None, turns: list[dict[str, str]]
) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """`system` and `turns` with `cache_control` on the system prompt, the first turn and
    the last turn (within the API's four breakpoints), where the prefix is long enough to
    be cached; a marked part becomes a content block, the rest stay plain text."""

    def marked(text: str) -> list[dict[str, Any]]:
        return [{"type": "text", "text": text, "cache_control": dict(CACHE_CONTROL)}]

    prefix = len(system or "")
    shaped: list[dict[str, Any]] = []
    for index, turn in enumerate(turns):
        prefix += len(turn["content"])
        if index in (0, len(turns) - 1) and prefix >= MIN_CACHED_CHARS:
            shaped.append({"role": turn["role"], "content": marked(turn["content"])})
        else:
            shaped.append(dict(turn))
    if system is not None and len(system) >= MIN_CACHED_CHARS:
        return marked(system), shaped
    return system, shaped


def to_messages_api(messages: list[Message]) -> tuple[str | None, list[dict[str, str]]]:
    """Split chat messages into Anthropic's `system` text and alternating turns."""
    system_parts: list[str] = []
    turns: list[dict[str, str]] = []
    for message in messages:
        role = message.get("role", "user")
        content = message.get("content", "")
        if role == "system":
            system_parts.append(content)
            continue
        role = "assistant" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1] = {"role": role, "content": turns[-1]["content"] + "\n\n" + content}
        else:
            turns.append({"role": role, "content": content})
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": "Continue."})
    return ("\n\n".join(system_parts) if system_parts else None), turns


class AnthropicLM(SDKModel):
    """A Claude model behind the Messages API."""

    provider = "anthropic"
    sdk = anthropic
    host = "api.anthropic.com"
    example = "claude-sonnet-5-5"

    def _default_context_window(self) -> int:
        return context_window_of(self.model)

    def _default_max_output(self) -> int:
        return default_max_tokens(self.model)

    def _is_context_error(self, message: str) -> bool:
        return "prompt is too long" in message or "context" in message

    def _request(self, messages: list[Message], options: dict[str, Any]) -> dict[str, Any]:
        options = dict(options)
        system, turns = with_cache_breakpoints(*to_messages_api(messages))
        max_tokens = options.pop("max_tokens", None) or self.max_output_tokens
        kwargs: dict[str, Any] = {"model": self.model, "messages": turns, "max_tokens": max_tokens}
        if system is not None:
            kwargs["system"] = system
        if "stop" in options:
            stop = options.pop("stop")
            kwargs["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        for key in ("temperature", "top_p", "top_k"):
            value = options.pop(key, None)
            # Newer SDKs (tracking the API) dropped these sampling knobs: follow the SDK.
            if value is not None and key in _SAMPLING_PARAMS:
                kwargs[key] = value
        options.pop("seed", None)  # the Messages API has no seed
        if options:
            kwargs["extra_body"] = {k: v for k, v in options.items() if v is not None}
        return kwargs

    def _send(self, client: Any, request: dict[str, Any]) -> Awaitable[Any]:
        return client.messages.create(**request)

    def _read(self, messages: list[Message], response: Any) -> tuple[str, Usage]:
        text = "".join(
            getattr(block, "text", "") for block in response.content if block.type == "text"
        )
        usage = response.usage
        cache_read = int(getattr(usage, "cache_read_input_tokens", 0) or 0)
        cache_write = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
        # input_tokens excludes cache reads and writes; fathom counts all prompt tokens.
        prompt = int(usage.input_tokens or 0) + cache_read + cache_write
        return text, Usage(
            prompt, int(usage.output_tokens or 0), cache_read, cache_write_tokens=cache_write
        )


def from_spec(model: str) -> AnthropicLM:
    """The LM for the spec `anthropic:MODEL`."""
    return AnthropicLM(model)
