"""Retries with exponential backoff that honour the server's Retry-After.

The providers turn off their SDK's own retries and use this instead, so that
OpenAI, Anthropic and every OpenAI-compatible server share one policy: retry
429, 408/409, 5xx, connection errors and timeouts; wait what `Retry-After`
(or `retry-after-ms`, or an `x-ratelimit-reset-*` header) asks when it asks
for a sane amount, plus jitter, else back off exponentially with jitter.

Throttling (429, 503, 529 "overloaded") is not a failure of the call: it is
retried for as long as the run's time budget allows (the metered call cuts it
off) or, with no time budget, until the endpoint has gone `throttle_patience`
seconds without a single success. Other errors give up after `max_retries`.
Either way the provider turns the last error into a `fathom.errors` one.

Whoever holds the call's concurrency slot (fathom.limiter) hears of every
attempt through `attempt_observer`, and gets its slot back during the waits.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, TypeVar

T = TypeVar("T")
log = logging.getLogger("fathom.lm")

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
THROTTLE_STATUS = frozenset({429, 503, 529})  # "slow down": retried while time allows


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry and how long to wait between attempts."""

    max_retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    # A Retry-After beyond this is treated as "not soon": we back off ourselves instead.
    max_retry_after: float = 60.0
    # With no time budget, a throttled call gives up once its endpoint has had no success
    # for this long (a provider that never lets a request through is down, not busy).
    throttle_patience: float = 900.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based): what the server asked
        for plus up to 20% (never less), else exponential backoff; both jittered so that
        the sub-calls rejected together do not all come back together."""
        if retry_after is not None and 0 <= retry_after <= self.max_retry_after:
            return retry_after * (1 + random.random() * 0.2)
        backoff = min(self.max_delay, self.base_delay * 2**min(attempt, 30))
        return backoff * (0.75 + random.random() * 0.25)


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


class Overload(Enum):
    """How an exception tells of an overloaded endpoint (the concurrency limiter's signal)."""

    NONE = 0
    THROTTLED = 1  # 429, 503, 529: retried while the time budget allows
    TIMEOUT = 2  # no reply in time: counted, but retried only `max_retries` times


@dataclass(frozen=True)
class Verdict:
    """What a provider's classifier says about an exception."""

    retry: bool
    retry_after: float | None = None
    overload: Overload = Overload.NONE


class AttemptObserver(Protocol):
    """Who holds a model call's concurrency slot: hears each attempt, lends the slot back."""

    @property
    def last_success(self) -> float:
        """When a call to the same endpoint last succeeded (time.monotonic)."""
        ...

    def succeeded(self, seconds: float) -> None:
        """An attempt got a reply after `seconds`."""
        ...

    def overloaded(self, timeout: bool = False) -> None:
        """An attempt was throttled, or timed out."""
        ...

    async def pause(self, seconds: float, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Wait before the next attempt, without holding the slot."""
        ...


# Set by fathom.calls.Meter around a model call; None outside a metered call.
attempt_observer: contextvars.ContextVar[AttemptObserver | None] = contextvars.ContextVar(
    "fathom_attempt_observer", default=None
)


Classifier = Callable[[BaseException], Verdict]


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds asked for by `retry-after-ms` or `Retry-After` (seconds or HTTP date), else
    by OpenAI's `x-ratelimit-reset-requests` / `-tokens` for a bucket that is empty."""
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
        return _ratelimit_reset(lower)
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _ratelimit_reset(lower: Mapping[str, str]) -> float | None:
    """Seconds until an empty `x-ratelimit-*` bucket refills ("1s", "6m0s", "250ms")."""
    waits = []
    for bucket in ("requests", "tokens"):
        if lower.get(f"x-ratelimit-remaining-{bucket}", "").strip() != "0":
            continue
        reset = lower.get(f"x-ratelimit-reset-{bucket}", "")
        parts = _DURATION.findall(reset)
        if parts:
            waits.append(sum(float(n) * _UNIT[unit] for n, unit in parts))
    return max(waits) if waits else None


def _announce(
    policy: RetryPolicy, attempt: int, verdict: Verdict, exc: BaseException, bounded: bool
) -> float:
    # Logged so a throttled run explains its pauses (the CLI shows fathom's log on stderr).
    delay = policy.delay(attempt, verdict.retry_after)
    attempts = policy.max_retries + 1 if bounded else 0  # 0: until the time budget ends
    log.info(
        "model call failed (%s); retry %d%s in %.1f s",
        type(exc).__name__,
        attempt + 1,
        f" of {policy.max_retries}" if bounded else "",
        delay,
    )
    listener = retry_listener.get()
    if listener is not None:
        reason = f"{type(exc).__name__}: {exc}"[:300]
        listener(RetryNotice(attempt + 2, attempts, reason, delay))
    return delay


async def acall_with_retries(
    fn: Callable[[], Awaitable[T]],
    classify: Classifier,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Await `fn()` until it succeeds, `classify` says stop, or the retries run out
    (throttling: until the endpoint has gone `throttle_patience` without a success)."""
    observer = attempt_observer.get()
    attempt = 0
    throttled_since: float | None = None
    while True:
        start = time.monotonic()
        try:
            result = await fn()
        except Exception as exc:
            verdict = classify(exc)
            if observer is not None and verdict.overload is not Overload.NONE:
                observer.overloaded(timeout=verdict.overload is Overload.TIMEOUT)
            throttled = verdict.overload is Overload.THROTTLED
            if throttled:
                throttled_since = throttled_since or start
                last_good = max(throttled_since, observer.last_success if observer else 0.0)
                give_up = time.monotonic() - last_good >= policy.throttle_patience
            else:
                give_up = attempt >= policy.max_retries
            if not verdict.retry or give_up:
                raise
            delay = _announce(policy, attempt, verdict, exc, bounded=not throttled)
            if observer is not None:
                await observer.pause(delay, sleep)
            else:
                await sleep(delay)
            attempt += 1
        else:
            if observer is not None:
                observer.succeeded(time.monotonic() - start)
            return result


def classify_sdk_error(
    exc: BaseException, connection_errors: tuple[type, ...], timeout_errors: tuple[type, ...] = ()
) -> Verdict:
    """Verdict for an exception of the openai or anthropic SDK (they share a shape)."""
    if isinstance(exc, timeout_errors):
        return Verdict(True, overload=Overload.TIMEOUT)
    if isinstance(exc, connection_errors):  # includes their timeout errors
        return Verdict(True)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status in RETRYABLE_STATUS:
        if status == 429 and quota_exhausted(exc):
            return Verdict(False)  # no wait brings back a spent quota
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        overload = Overload.THROTTLED if status in THROTTLE_STATUS else Overload.NONE
        return Verdict(True, parse_retry_after(headers), overload)
    return Verdict(False)


def quota_exhausted(exc: BaseException) -> bool:
    """Whether an SDK error says the account's quota or credit is gone for good (OpenAI's
    429 `insufficient_quota`, Anthropic's "credit balance is too low")."""
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, dict) else None
    code = [str(error.get(k) or "") for k in ("code", "type")] if isinstance(error, dict) else []
    if "insufficient_quota" in code:
        return True
    return "credit balance is too low" in str(getattr(exc, "message", "")).lower()
