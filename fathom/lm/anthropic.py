"""Anthropic's Messages API (`anthropic:MODEL`) through the official SDK.

Chat messages are mapped to the Messages API's shape: every system message
goes to `system=`, consecutive messages of the same role are merged (the API
wants user and assistant turns to alternate) and the first turn is a user one.
Retries and errors work as in fathom.lm.openai.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import threading
import time
import weakref
from typing import Any

import anthropic

from fathom.errors import (
    AuthenticationError,
    ConfigError,
)
from fathom.lm import pricing, sdk_errors
from fathom.lm.base import Completion, Message, Usage
from fathom.lm.retry import (
    RetryPolicy,
    Verdict,
    acall_with_retries,
    call_with_retries,
    classify_sdk_error,
)

DEFAULT_TIMEOUT = 300.0
CONTEXT_WINDOW = 200_000  # Claude 4.x (their 1M windows need a beta header)
LARGE_CONTEXT_WINDOW = 1_000_000  # the Claude 5 family
NO_KEY = "no-key-needed"
_CONNECTION_ERRORS = (anthropic.APIConnectionError,)  # APITimeoutError is a subclass
_SAMPLING_PARAMS = frozenset(
    inspect.signature(anthropic.resources.messages.Messages.create).parameters
) & {"temperature", "top_p", "top_k"}


def _is_context_error(message: str) -> bool:
    return "prompt is too long" in message or "context" in message


def default_max_tokens(model: str) -> int:
    """The `max_tokens` sent when the caller gives none (the API requires one)."""
    old = ("claude-3-haiku", "claude-3-opus", "claude-3-sonnet")
    return 4096 if model.startswith(old) else 8192


def context_window_of(model: str) -> int:
    """Context window of a Claude model: 1M for the 5 family, else 200K."""
    return LARGE_CONTEXT_WINDOW if re.match(r"claude-[a-z]+-5(-|$)", model) else CONTEXT_WINDOW


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


class AnthropicLM:
    """A Claude model behind the Messages API."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        context_window: int | None = None,
    ) -> None:
        if not model:
            raise ConfigError(
                "An Anthropic model needs a name, e.g. 'anthropic:claude-sonnet-5-5'."
            )
        self.model = model
        self.name = f"anthropic:{model}"
        self.base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.context_window = context_window or context_window_of(model)
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            if self.base_url is None or "api.anthropic.com" in self.base_url:
                raise AuthenticationError(
                    f"{self.name} needs an API key: set ANTHROPIC_API_KEY (or pass api_key=), "
                    "or use model='local'."
                )
            key = NO_KEY
        self._key = key
        self._client = anthropic.Anthropic(
            api_key=key, base_url=self.base_url, timeout=timeout, max_retries=0
        )
        self._aclients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, anthropic.AsyncAnthropic
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AnthropicLM({self.model!r}, base_url={self.base_url!r})"

    def _request(self, messages: list[Message], options: dict[str, Any]) -> dict[str, Any]:
        options = dict(options)
        system, turns = to_messages_api(messages)
        max_tokens = options.pop("max_tokens", None) or default_max_tokens(self.model)
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

    def _async_client(self) -> anthropic.AsyncAnthropic:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._aclients.get(loop)
            if client is None:
                client = anthropic.AsyncAnthropic(
                    api_key=self._key, base_url=self.base_url, timeout=self.timeout, max_retries=0
                )
                self._aclients[loop] = client
        return client

    def _classify(self, exc: BaseException) -> Verdict:
        return classify_sdk_error(exc, _CONNECTION_ERRORS)

    def complete(self, messages: list[Message], **options: Any) -> Completion:
        """Send `messages` and return the reply, retrying transient failures."""
        kwargs = self._request(messages, options)
        start = time.perf_counter()
        try:
            response = call_with_retries(
                lambda: self._client.messages.create(**kwargs), self._classify, self.retry
            )
        except anthropic.AnthropicError as exc:
            raise self._translate(exc) from exc
        return self._completion(response, time.perf_counter() - start)

    async def acomplete(self, messages: list[Message], **options: Any) -> Completion:
        """Async form of `complete`."""
        kwargs = self._request(messages, options)
        client = self._async_client()
        start = time.perf_counter()
        try:
            response = await acall_with_retries(
                lambda: client.messages.create(**kwargs), self._classify, self.retry
            )
        except anthropic.AnthropicError as exc:
            raise self._translate(exc) from exc
        return self._completion(response, time.perf_counter() - start)

    def _completion(self, response: Any, seconds: float) -> Completion:
        text = "".join(
            getattr(block, "text", "") for block in response.content if block.type == "text"
        )
        usage = response.usage
        cache_read = int(getattr(usage, "cache_read_input_tokens", 0) or 0)
        cache_write = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
        # input_tokens excludes cache reads and writes; fathom counts all prompt tokens.
        prompt = int(usage.input_tokens or 0) + cache_read + cache_write
        completion = int(usage.output_tokens or 0)
        usd = pricing.cost(self.model, prompt, completion, cache_read)
        return Completion(
            text=text,
            model=self.name,
            usage=Usage(prompt, completion, cache_read, usd, 1),
            seconds=seconds,
        )

    def _translate(self, exc: anthropic.AnthropicError) -> Exception:
        return sdk_errors.translate(
            exc, anthropic, name=self.name, model=self.model,
            where=self.base_url or "api.anthropic.com", attempts=self.retry.max_retries + 1,
            timeout=self.timeout, key_var="ANTHROPIC_API_KEY", base_var="ANTHROPIC_BASE_URL",
            is_context_error=_is_context_error,
        )

def from_spec(model: str) -> AnthropicLM:
    """The LM for the spec `anthropic:MODEL`."""
    return AnthropicLM(model)
