"""Budget limits and the shared spend counter."""

from __future__ import annotations

import threading

import pytest

from fathom.budget import Budget, Spend
from fathom.errors import BudgetExceeded, ConfigError
from fathom.lm.base import Usage


def test_invalid_budget_says_what_to_pass() -> None:
    with pytest.raises(ConfigError, match="number >= 0"):
        Budget(usd=-1)


def test_calls_limit_is_never_overshot_by_concurrent_callers() -> None:
    spend = Spend(Budget(calls=10))
    granted = []

    def worker() -> None:
        for _ in range(10):
            try:
                spend.reserve()
                granted.append(1)
            except BudgetExceeded:
                pass

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 10
    assert spend.stopped_by == "calls"


def test_tokens_and_usd_limits() -> None:
    spend = Spend(Budget(tokens=100, usd=1.0))
    spend.reserve()
    spend.record("m", Usage(prompt_tokens=60, completion_tokens=50, usd=0.1, calls=1))
    assert spend.exhausted() == "tokens"
    with pytest.raises(BudgetExceeded, match="tokens limit of 100"):
        spend.reserve()
    assert spend.by_model()["m"].total_tokens == 110


def test_calls_in_flight_count_against_the_token_limit() -> None:
    spend = Spend(Budget(tokens=1000))
    spend.reserve(estimated_tokens=600)
    spend.reserve(estimated_tokens=600)  # 600 < 1000: may start
    with pytest.raises(BudgetExceeded):
        spend.reserve(estimated_tokens=10)  # 1200 in flight: no new call
    spend.record("m", Usage(prompt_tokens=100, completion_tokens=10, calls=1), 600)
    spend.release(600)
    spend.reserve(estimated_tokens=10)
