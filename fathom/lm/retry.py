"""Retries with exponential backoff that honour the server's Retry-After.

The providers turn off their SDK's own retries and use this instead, so that
OpenAI, Anthropic and every OpenAI-compatible server share one policy: retry
429, 408/409, 5xx, connection errors and timeouts; wait what `Retry-After`
(or `retry-after-ms`) asks when it asks for a sane amount, else back off
exponentially with jitter; give up after `max_retries` and let the provider
turn the last error into a `fathom.errors` one.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("fathom.lm")

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry and how long to wait between attempts."""

    max_retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    # A Retry-After beyond this is treated as "not soon": we back off ourselves instead.
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        if retry_after is not None and 0 <= retry_after <= self.max_retry_after:
            return retry_after
        backoff = min(self.max_delay, self.base_delay * 2**attempt)
        return backoff * (0.75 + random.random() * 0.25)  # jitter spreads retrying sub-calls


@dataclass(frozen=True)
class RetryNotice:
    """A failed attempt about to be retried, as the caller of the model call hears of it."""

    attempt: int  # the attempt that comes next, 2 for the first retry
    attempts: int  # how many there will be at most
    reason: str
    delay: float


# Set by whoever makes the model call (fathom.calls.Meter) to hear of retries as they happen.
retry_listener: contextvars.ContextVar[Callable[[RetryNotice], None] | None] = (
    contextvars.ContextVar("fathom_retry_listener", default=None)
)


@dataclass(frozen=True)
class Verdict:
    """What a provider's classifier says about an exception."""

    retry: bool
    retry_after: float | None = None


Classifier = Callable[[BaseException], Verdict]


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds asked for by `retry-after-ms` or `Retry-After` (seconds or HTTP date)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    millis = lower.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _announce(policy: RetryPolicy, attempt: int, verdict: Verdict, exc: BaseException) -> float:
    # Logged so a throttled run explains its pauses (the CLI shows fathom's log on stderr).
    delay = policy.delay(attempt, verdict.retry_after)
    log.info(
        "model call failed (%s); retry %d of %d in %.1f s",
        type(exc).__name__,
        attempt + 1,
        policy.max_retries,
        delay,
    )
    listener = retry_listener.get()
    if listener is not None:
        reason = f"{type(exc).__name__}: {exc}"[:300]
        listener(RetryNotice(attempt + 2, policy.max_retries + 1, reason, delay))
    return delay


async def acall_with_retries(
    fn: Callable[[], Awaitable[T]],
    classify: Classifier,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Await `fn()` until it succeeds, `classify` says stop, or the retries run out."""
    attempt = 0
    while True:
        try:
            return await fn()
        except Exception as exc:
            verdict = classify(exc)
            if not verdict.retry or attempt >= policy.max_retries:
                raise
            await sleep(_announce(policy, attempt, verdict, exc))
            attempt += 1


def classify_sdk_error(exc: BaseException, connection_errors: tuple[type, ...]) -> Verdict:
    """Verdict for an exception of the openai or anthropic SDK (they share a shape)."""
    if isinstance(exc, connection_errors):  # includes their timeout errors
        return Verdict(True)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status in RETRYABLE_STATUS:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        return Verdict(True, parse_retry_after(headers))
    return Verdict(False)
