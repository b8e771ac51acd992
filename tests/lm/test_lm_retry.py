"""The shared retry policy: Retry-After parsing, backoff and when to stop."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest

from fathom.lm.retry import RetryPolicy, Verdict, acall_with_retries, parse_retry_after


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None
    date = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= (parse_retry_after({"Retry-After": date}) or 0) <= 10


def test_delay_honours_retry_after_within_reason_else_backs_off() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=4.0, max_retry_after=60)
    assert 2.5 <= policy.delay(0, retry_after=2.5) <= 3.0  # what was asked, plus jitter
    assert 0.75 <= policy.delay(0, retry_after=3600) <= 1.0  # absurd ask: own backoff
    assert 3.0 <= policy.delay(5) <= 4.0  # capped


def test_retries_until_success_and_stops_on_permanent_errors() -> None:
    calls: list[int] = []
    waits: list[float] = []

    async def wait(seconds: float) -> None:
        waits.append(seconds)

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return "ok"

    def retry_connection(exc: BaseException) -> Verdict:
        return Verdict(isinstance(exc, ConnectionError), retry_after=0.0)

    retrying = acall_with_retries(flaky, retry_connection, RetryPolicy(), sleep=wait)
    assert asyncio.run(retrying) == "ok"
    assert waits == [0.0, 0.0]

    async def broken() -> str:
        raise ValueError("bad request")

    with pytest.raises(ValueError):
        asyncio.run(acall_with_retries(broken, retry_connection, RetryPolicy(), sleep=wait))
    assert len(waits) == 2  # no wait for a permanent error


def test_gives_up_after_max_retries() -> None:
    attempts: list[int] = []

    async def always_down() -> None:
        attempts.append(1)
        raise ConnectionError("down")

    policy = RetryPolicy(max_retries=2, base_delay=0.001)
    with pytest.raises(ConnectionError):
        asyncio.run(acall_with_retries(always_down, lambda e: Verdict(True), policy))
    assert len(attempts) == 3


def test_each_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []

    async def twice() -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise ConnectionError("reset")
        return "ok"

    with caplog.at_level("INFO", logger="fathom.lm"):
        asyncio.run(acall_with_retries(twice, lambda e: Verdict(True, 0.0), RetryPolicy()))
    assert "retry 1 of 4 in 0.0 s" in caplog.text and "ConnectionError" in caplog.text


def test_an_empty_ratelimit_bucket_says_how_long_to_wait() -> None:
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30s",
               "x-ratelimit-remaining-tokens": "5000", "x-ratelimit-reset-tokens": "250ms"}
    assert parse_retry_after(headers) == 90.0  # only the empty bucket counts
    assert parse_retry_after({**headers, "retry-after": "2"}) == 2.0  # Retry-After first
    assert parse_retry_after({"x-ratelimit-remaining-tokens": "0",
                              "x-ratelimit-reset-tokens": "250ms"}) == 0.25
