"""What the OpenAI and Anthropic providers share: keys, clients, retries, usage and errors.

Both official SDKs are generated from one template: their async clients take
the same arguments and their exception classes share names (AuthenticationError,
RateLimitError, APIStatusError, ...). So `SDKModel` holds everything but the
wire format, and a provider writes only what differs: how chat messages become a
request, which client method sends it, how the response reads back, and how its
API words a prompt that does not fit.

The SDKs' own retries are off: fathom.lm.retry retries 429, 5xx, connection
errors and timeouts with backoff that honours Retry-After, so both providers
share one policy and the final error says how many attempts were made. A spent
quota (OpenAI's `insufficient_quota`) is not retried: it raises QuotaExhausted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import time
import weakref
from abc import abstractmethod
from collections.abc import Awaitable
from types import ModuleType
from typing import Any, ClassVar

from fathom.errors import (
    AuthenticationError,
    ConfigError,
    ContextWindowError,
    LMError,
    QuotaExhausted,
    RateLimitError,
)
from fathom.lm import pricing
from fathom.lm.base import BaseLM, Completion, Message, Usage
from fathom.lm.retry import (
    RetryPolicy,
    Verdict,
    acall_with_retries,
    classify_sdk_error,
    quota_exhausted,
)


class EmptyReplyError(LMError):
    """A server answered 200 with no reply text (`content: null`); retried as transient."""

DEFAULT_TIMEOUT = 300.0  # seconds per request; reasoning models can think for minutes
DEFAULT_MAX_OUTPUT = 4096  # tokens, or a quarter of a smaller window
NO_KEY = "no-key-needed"  # sent to self-hosted servers, which ignore the key


class SDKModel(BaseLM):
    """A chat model behind an official SDK; a subclass names the SDK and its service.

    The SDK's `AsyncClient` makes the calls and its `APIError`s (HTTP statuses,
    connection failures, timeouts) are translated; its other errors are mistakes
    in setting it up and pass through as they are.
    """

    provider: ClassVar[str]  # the spec prefix: "openai"
    sdk: ModuleType  # the SDK module: openai (a ClassVar cannot hold a module for mypy)
    host: ClassVar[str]  # of the official API, which needs a key: "api.openai.com"
    example: ClassVar[str]  # a model to suggest: "gpt-5-mini"
    versioned_url: ClassVar[bool] = False  # whether a base URL must end in the version: /v1

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        context_window: int | None = None,
        max_output_tokens: int | None = None,
    ) -> None:
        if not model:
            raise ConfigError(
                f"'{self.provider}:' needs a model name, e.g. '{self.provider}:{self.example}'."
            )
        self.model = model
        self.name = f"{self.provider}:{model}"
        self.base_url = base_url or os.environ.get(self.base_var) or None
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._window = context_window
        self._max_output = max_output_tokens
        key = api_key or os.environ.get(self.key_var)
        if not key:
            if self.base_url is None or self.host in self.base_url:
                raise AuthenticationError(
                    f"{self.name} needs an API key: set {self.key_var} (or pass api_key=), "
                    f"set {self.base_var} to a compatible server, or use model='local'."
                )
            key = NO_KEY
        self._key = key
        # An async client is tied to the event loop it first ran on: keep one per loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]
        self._clients = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, base_url={self.base_url!r})"

    @property
    def key_var(self) -> str:
        """The variable that holds the API key, named as the SDK names it: OPENAI_API_KEY."""
        return f"{self.provider.upper()}_API_KEY"

    @property
    def base_var(self) -> str:
        """The variable that points the SDK at another server: OPENAI_BASE_URL."""
        return f"{self.provider.upper()}_BASE_URL"

    @property
    def endpoint(self) -> str:
        """Where this model's calls go, as one concurrency limiter serves them: provider,
        server and model (fathom.limiter)."""
        return f"{self.provider}:{self.where}:{self.model}"

    @property
    def where(self) -> str:
        """The server this model is called on, as error messages name it."""
        return self.base_url or self.host

    def configure(
        self,
        *,
        request_timeout: float | None = None,
        context_window: int | None = None,
        max_output_tokens: int | None = None,
    ) -> None:
        """Set what a spec string cannot say; None keeps the current value."""
        if request_timeout is not None:
            self.timeout = request_timeout
            with self._lock:
                self._clients = weakref.WeakKeyDictionary()  # clients hold the old timeout
        if context_window is not None:
            self._window = context_window
        if max_output_tokens is not None:
            self._max_output = max_output_tokens

    @property
    def context_window(self) -> int:
        """Tokens the model takes, prompt and reply: given, else asked of the server once."""
        with self._lock:
            if self._window is None:
                self._window = self._discover_window() or self._default_context_window()
            return self._window

    @context_window.setter
    def context_window(self, tokens: int) -> None:
        self._window = tokens

    @property
    def max_output_tokens(self) -> int:
        """Tokens a reply may take, sent with every request; the prompt gets the rest."""
        if self._max_output is not None:
            return self._max_output
        return self._default_max_output()

    # -- what a provider writes ----------------------------------------------------
    @abstractmethod
    def _default_context_window(self) -> int:
        """The window of `self.model` when the caller gives none."""

    def _default_max_output(self) -> int:
        """The reply limit when the caller gives none."""
        return min(DEFAULT_MAX_OUTPUT, self.context_window // 4)

    def _discover_window(self) -> int | None:
        """The window the server reports, if it reports one; never raises."""
        return None

    @abstractmethod
    def _request(self, messages: list[Message], options: dict[str, Any]) -> dict[str, Any]:
        """The SDK call's keyword arguments for `messages` and sampling `options`."""

    @abstractmethod
    def _send(self, client: Any, request: dict[str, Any]) -> Awaitable[Any]:
        """Start the SDK call on `client`."""

    @abstractmethod
    def _read(self, messages: list[Message], response: Any) -> tuple[str, Usage]:
        """The reply text and its token counts (the cost is added here)."""

    @abstractmethod
    def _is_context_error(self, message: str) -> bool:
        """Whether an HTTP 400's lower-cased `message` says the prompt does not fit."""

    # -- the shared call path ------------------------------------------------------
    async def acomplete(self, messages: list[Message], **options: Any) -> Completion:
        """Send `messages` and return the reply, retrying transient failures."""
        options.setdefault("max_tokens", self.max_output_tokens)
        request = self._request(messages, options)
        client = self._client()
        start = time.perf_counter()

        async def attempt() -> tuple[str, Usage]:
            return self._read(messages, await self._send(client, request))

        attempts = self.retry.max_retries + 1
        try:
            text, tokens = await acall_with_retries(attempt, self._classify, self.retry)
        except self.sdk.APIError as exc:
            raise translate(exc, self) from exc
        except EmptyReplyError:
            raise LMError(
                f"{self.name}: {self.where} replied with no text (content: null) "
                f"{attempts} times; the server may be failing to generate."
            ) from None
        except json.JSONDecodeError as exc:
            raise LMError(
                f"{self.name}: {self.where} sent a reply that is not valid JSON ({exc}) "
                f"{attempts} times; is it an OpenAI-compatible server, and is its URL right?"
            ) from exc
        usd = pricing.cost(
            self.model, tokens.prompt_tokens, tokens.completion_tokens, tokens.cached_tokens,
            tokens.cache_write_tokens,
        )
        usage = dataclasses.replace(tokens, usd=usd, calls=1)
        return Completion(text, self.name, usage, seconds=time.perf_counter() - start)

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                client = self.sdk.AsyncClient(
                    api_key=self._key, base_url=self.base_url, timeout=self.timeout, max_retries=0
                )
                self._clients[loop] = client
        return client

    def _classify(self, exc: BaseException) -> Verdict:
        if isinstance(exc, EmptyReplyError | json.JSONDecodeError):
            return Verdict(True)  # a server's hiccup, as a 5xx is
        return classify_sdk_error(
            exc, (self.sdk.APIConnectionError,), timeout_errors=(self.sdk.APITimeoutError,)
        )


def translate(exc: Exception, lm: SDKModel) -> Exception:
    """The fathom error that says what to do about `exc`, raised by `lm`'s SDK after retries."""
    sdk, name, where = lm.sdk, lm.name, lm.where
    attempts = lm.retry.max_retries + 1
    if isinstance(exc, sdk.AuthenticationError):
        return AuthenticationError(
            f"{name}: {where} rejected the API key (HTTP 401). "
            f"Set {lm.key_var} to a valid key (or pass api_key=)."
        )
    if isinstance(exc, sdk.PermissionDeniedError):
        return AuthenticationError(
            f"{name}: the key in {lm.key_var} may not use this model (HTTP 403): {exc.message}"
        )
    if quota_exhausted(exc):
        return QuotaExhausted(
            f"{name}: {where} says the account's quota or credit is used up "
            f"({getattr(exc, 'message', exc)}); "
            "add credit or raise the plan's limits, or use another key or model."
        )
    if isinstance(exc, sdk.RateLimitError) or getattr(exc, "status_code", None) in (503, 529):
        patience = lm.retry.throttle_patience
        return RateLimitError(
            f"{name}: {where} throttled every request for {patience:g}s (HTTP "
            f"{getattr(exc, 'status_code', 429)}); wait and try again, set a time budget "
            "(Budget(seconds=...), --max-seconds) to bound the waiting, or raise your "
            "account's limits."
        )
    if isinstance(exc, sdk.APITimeoutError):
        return LMError(
            f"{name}: no reply within {lm.timeout:g}s after {attempts} attempts; "
            "the server is overloaded or the timeout is too short."
        )
    if isinstance(exc, sdk.APIConnectionError):
        return LMError(
            f"{name}: could not connect to {where} after {attempts} attempts; "
            f"check {lm.base_var} and that the server is reachable."
        )
    if isinstance(exc, sdk.APIStatusError):
        message = str(exc.message)
        if exc.status_code == 400 and lm._is_context_error(message.lower()):
            return ContextWindowError(
                f"{name}: the prompt does not fit the model's context window "
                f"({message}); shorten it or use a model with a larger window."
            )
        if exc.status_code == 404 and lm.versioned_url and not _has_version(lm.base_url):
            return LMError(
                f"{name}: {where} answered HTTP 404; the base URL probably lacks /v1 "
                f"(try {(lm.base_url or '').rstrip('/')}/v1)."
            )
        if exc.status_code == 404:
            return LMError(
                f"{name}: {where} does not know model {lm.model!r} (HTTP 404); "
                "check the model name."
            )
        return LMError(f"{name}: HTTP {exc.status_code} from {where}: {message}")
    return LMError(f"{name}: {exc}")


def _has_version(url: str | None) -> bool:
    """Whether `url`'s path names an API version, as OpenAI-compatible servers expect: /v1."""
    from urllib.parse import urlparse

    if url is None:
        return True  # the official API
    parts = urlparse(url).path.strip("/").split("/")
    return any(p[:1] == "v" and p[1:2].isdigit() for p in parts)
