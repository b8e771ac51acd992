"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio, OpenRouter).

`openai:MODEL` uses the official SDK with `OPENAI_API_KEY` and, when set,
`OPENAI_BASE_URL`. The SDK's own retries are off: fathom.lm.retry retries 429,
5xx, connection errors and timeouts with backoff that honours Retry-After, so
OpenAI and Anthropic share one policy and the final error says how many
attempts were made.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from typing import Any

import openai

from fathom.errors import (
    AuthenticationError,
    ConfigError,
    LMError,
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

DEFAULT_TIMEOUT = 300.0  # seconds per request; reasoning models can think for minutes
DEFAULT_CONTEXT_WINDOW = 128_000  # unknown models, e.g. whatever a local server runs
NO_KEY = "no-key-needed"  # sent to self-hosted servers, which ignore the key

CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-6": 1_050_000,
    "gpt-6.1": 1_050_000,
    "gpt-6.2": 1_050_000,
    "gpt-5.6": 1_050_000,
    "gpt-5.5": 1_050_000,
    "gpt-5.4": 1_050_000,
    "gpt-5.2": 400_000,
    "gpt-5.1": 400_000,
    "gpt-5": 400_000,
    "gpt-5-chat": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "gpt-oss-120b": 131_072,
    "gpt-oss-20b": 131_072,
}

_CONNECTION_ERRORS = (openai.APIConnectionError,)  # APITimeoutError is a subclass


def _is_context_error(message: str) -> bool:
    # Servers word it differently: "maximum context length", "context size", "context window".
    return "context" in message and any(w in message for w in ("length", "size", "window"))


def _is_reasoning_model(model: str) -> bool:
    # These reject `max_tokens` and any temperature but the default.
    name = model.lower().rsplit("/", 1)[-1]
    if "-chat" in name:
        return False
    return name.startswith(("gpt-5", "gpt-6", "o1", "o3", "o4"))


def _is_official(base_url: str | None) -> bool:
    return base_url is None or "api.openai.com" in base_url


class OpenAILM:
    """A chat model behind the OpenAI chat completions API."""

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
            raise ConfigError("An OpenAI model needs a name, e.g. 'openai:gpt-5-mini'.")
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.context_window = context_window or (
            pricing.lookup(CONTEXT_WINDOWS, model) or DEFAULT_CONTEXT_WINDOW
        )
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if _is_official(self.base_url):
                raise AuthenticationError(
                    f"{self.name} needs an API key: set OPENAI_API_KEY (or pass api_key=), "
                    "set OPENAI_BASE_URL to an OpenAI-compatible server, or use model='local'."
                )
            key = NO_KEY
        self._key = key
        self._client = openai.OpenAI(
            api_key=key, base_url=self.base_url, timeout=timeout, max_retries=0
        )
        # An async client is tied to the event loop it first ran on: keep one per loop.
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI]
        self._aclients = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAILM({self.model!r}, base_url={self.base_url!r})"

    # -- requests ------------------------------------------------------------------
    def _request(self, messages: list[Message], options: dict[str, Any]) -> dict[str, Any]:
        options = dict(options)
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        max_tokens = options.pop("max_tokens", None)
        temperature = options.pop("temperature", None)
        if _is_reasoning_model(self.model):
            if max_tokens is not None:
                kwargs["max_completion_tokens"] = max_tokens
        else:
            if max_tokens is not None:
                kwargs["max_tokens"] = max_tokens
            if temperature is not None:
                kwargs["temperature"] = temperature
        for key in ("top_p", "seed", "stop", "reasoning_effort", "user"):
            if key in options:
                kwargs[key] = options.pop(key)
        if options:  # anything else goes to the server as-is (vLLM, llama.cpp extras)
            kwargs["extra_body"] = options
        return kwargs

    def _async_client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._aclients.get(loop)
            if client is None:
                client = openai.AsyncOpenAI(
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
                lambda: self._client.chat.completions.create(**kwargs), self._classify, self.retry
            )
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        return self._completion(messages, response, time.perf_counter() - start)

    async def acomplete(self, messages: list[Message], **options: Any) -> Completion:
        """Async form of `complete`."""
        kwargs = self._request(messages, options)
        client = self._async_client()
        start = time.perf_counter()
        try:
            response = await acall_with_retries(
                lambda: client.chat.completions.create(**kwargs), self._classify, self.retry
            )
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        return self._completion(messages, response, time.perf_counter() - start)

    # -- responses -----------------------------------------------------------------
    def _completion(self, messages: list[Message], response: Any, seconds: float) -> Completion:
        if not getattr(response, "choices", None):
            raise LMError(f"{self.name} returned no choices; the server may not speak chat.")
        text = response.choices[0].message.content or ""
        usage = getattr(response, "usage", None)
        if usage is not None and usage.prompt_tokens is not None:
            prompt = int(usage.prompt_tokens)
            completion = int(usage.completion_tokens or 0)
            details = getattr(usage, "prompt_tokens_details", None)
            cached = int(getattr(details, "cached_tokens", 0) or 0)
        else:  # some compatible servers send no usage: estimate (see pricing.estimate_tokens)
            prompt = pricing.estimate_prompt_tokens(messages)
            completion = pricing.estimate_tokens(text)
            cached = 0
        usd = pricing.cost(self.model, prompt, completion, cached)
        return Completion(
            text=text,
            model=self.name,
            usage=Usage(prompt, completion, cached, usd, 1),
            seconds=seconds,
        )

    def _translate(self, exc: openai.OpenAIError) -> Exception:
        return sdk_errors.translate(
            exc, openai, name=self.name, model=self.model,
            where=self.base_url or "api.openai.com", attempts=self.retry.max_retries + 1,
            timeout=self.timeout, key_var="OPENAI_API_KEY", base_var="OPENAI_BASE_URL",
            is_context_error=_is_context_error,
        )

def from_spec(model: str) -> OpenAILM:
    """The LM for the spec `openai:MODEL`."""
    return OpenAILM(model)
