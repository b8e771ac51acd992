"""Adaptive concurrency per endpoint: growth, cuts, Retry-After, quotas, one limiter per tree."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import fathom
from fathom.errors import QuotaExhausted
from fathom.limiter import BACKOFF, START, Limiter, LimitReason
from fathom.lm import ScriptedLM
from fathom.lm.retry import RetryPolicy
from fathom.trace import ConcurrencyEvent, Event, LMCall
from tests.fake_servers import ScriptedOpenAIServer
from tests.test_engine import repl


def _fill(limiter: Limiter, n: int) -> list[Any]:
    return [asyncio.run(limiter.acquire()) for _ in range(n)]


def test_slow_start_doubles_a_used_limit_then_a_throttle_cuts_it_once() -> None:
    changes: list[Any] = []
    limiter = Limiter("e", initial=4, cap=100, on_change=changes.append)
    tickets = _fill(limiter, 4)
    for ticket in tickets:
        limiter.succeeded(ticket, 0.5)
        limiter.release(ticket)
    assert limiter.limit == 8  # one slot per success: doubled in a round trip
    tickets = _fill(limiter, 8)
    limiter.overloaded(tickets[-1])  # rejected when 8 were in flight
    assert limiter.limit == int(8 * BACKOFF)
    limiter.overloaded(tickets[-2])  # sent before the cut: the same congestion, no second cut
    assert limiter.limit == int(8 * BACKOFF)
    assert [c.reason for c in changes][-1] is LimitReason.THROTTLED
    for ticket in tickets:
        limiter.release(ticket)
    # After a cut, growth is additive: about one slot per round trip.
    tickets = _fill(limiter, limiter.limit)
    before = limiter.limit
    for ticket in tickets:
        limiter.succeeded(ticket, 0.5)
        limiter.release(ticket)
    assert limiter.limit == before + 1


def test_an_unused_limit_does_not_grow_and_a_fixed_one_never_moves() -> None:
    limiter = Limiter("e", initial=10, cap=100)
    ticket = asyncio.run(limiter.acquire())  # 1 in flight of 10: the limit held nothing back
    limiter.succeeded(ticket, 0.1)
    assert limiter.limit == 10
    fixed = Limiter("e", initial=3, cap=3, adaptive=False)
    tickets = _fill(fixed, 3)
    fixed.overloaded(tickets[0])
    fixed.succeeded(tickets[1], 0.1)
    assert fixed.limit == 3


def test_growth_stops_when_latency_climbs() -> None:
    limiter = Limiter("e", initial=2, cap=100)
    for seconds in (0.1, 0.1, 0.1):
        tickets = _fill(limiter, limiter.limit)
        for ticket in tickets:
            limiter.succeeded(ticket, seconds)
            limiter.release(ticket)
    grown = limiter.limit
    tickets = _fill(limiter, grown)
    for ticket in tickets:
        limiter.succeeded(ticket, 5.0)
        limiter.release(ticket)  # the endpoint queues: slow replies
    assert limiter.limit <= grown + 1


def test_waiters_get_slots_in_turn() -> None:
    async def go() -> int:
        limiter = Limiter("e", initial=2, cap=2, adaptive=False)
        peak = 0

        async def call() -> None:
            nonlocal peak
            ticket = await limiter.acquire()
            peak = max(peak, limiter.in_flight)
            await asyncio.sleep(0.01)
            limiter.release(ticket)

        await asyncio.gather(*(call() for _ in range(10)))
        return peak

    assert asyncio.run(go()) == 2


def _scan(prompts: int) -> str:
    return repl(f"r = llm_query_batched([str(i) for i in range({prompts})])\n"
                "print(sum(int(x) for x in r))")


def test_the_limit_follows_a_server_whose_limit_changes_during_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    turns = 0
    server: ScriptedOpenAIServer
    before: tuple[int, int] = (0, 0)  # rejected and requests while the limit was 60

    def respond(messages: list[dict[str, Any]]) -> str:
        nonlocal turns, before
        if messages[0]["role"] != "system":
            return messages[-1]["content"]  # a sub-call: echo its number
        turns += 1
        if turns == 2:
            before = (server.rejected, len(server.requests))
            server.max_in_flight = 8  # the provider tightens its limit mid-run
        # 200 calls after the cut: on a loaded machine slow start overshoots further (to
        # ~100-275), and 100 calls ran out while the limit was still coming down.
        return [_scan(300), _scan(200), repl("FINAL('done')")][turns - 1]

    events: list[Event] = []
    with ScriptedOpenAIServer(respond, delay=0.2, retry_after="0.1",
                              max_in_flight=60) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        result = fathom.RLM("openai:m", sandbox="inprocess", context_window=100_000,
                            on_event=events.append).run("q", "c")
    assert result.answer == "done"
    assert not [e for e in events if isinstance(e, LMCall) and e.error]  # none failed
    changes = [e for e in events if isinstance(e, ConcurrencyEvent)]
    assert changes[0].reason == "start" and changes[0].limit == START
    turn2 = next(i for i, e in enumerate(events) if getattr(e, "iteration", 0) == 2)
    first = [e for e in changes if events.index(e) < turn2]
    later = [e for e in changes if events.index(e) > turn2]
    # The limit's history, so that a failure on a loaded machine says what happened.
    history = ([(e.reason, e.limit) for e in first], [(e.reason, e.limit) for e in later])
    assert max(e.limit for e in first) > START, history  # grew while calls went well
    assert any(e.reason == "throttled" for e in later), history  # cut when the server tightened
    assert later[-1].limit <= 12, history
    # Slow start overshot once (client-side counts run ahead).
    assert before[0] <= 0.25 * before[1], (before, history)


def test_retry_after_is_waited_without_holding_a_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    root = ScriptedLM([repl("print(llm_query('a'))"), repl("FINAL('ok')")])
    with ScriptedOpenAIServer(["b"], fail_first=[429, 429], retry_after="0.3") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        start = time.monotonic()
        result = fathom.RLM(root, "openai:m", sandbox="inprocess").run("q", "c")
        waited = time.monotonic() - start
    assert result.answer == "ok" and len(server.requests) == 3
    assert waited >= 0.6  # Retry-After, twice


def test_a_spent_quota_ends_the_run_with_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    code = "r = llm_query_batched(['a'] * 20)\nprint(r[0])\nFINAL(r[0])"
    root = ScriptedLM([repl(code), repl("FINAL('never')")])
    with ScriptedOpenAIServer(["x"], fail_first=[429] * 100, quota_exhausted=True) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        start = time.monotonic()
        result = fathom.RLM(root, "openai:m", sandbox="inprocess").run("q", "c")
        assert time.monotonic() - start < 10  # fast: no waiting for a quota to come back
        assert len(server.requests) <= 20
    assert result.stop_reason == "error" and result.error_type is QuotaExhausted
    assert "quota" in (result.error or "")
    assert "quota" not in result.answer.lower()  # the error is not passed off as an answer


def test_child_runs_share_the_endpoints_limiter() -> None:
    in_flight = peak = 0

    class Sub(ScriptedLM):
        async def acomplete(self, messages: list[Any], **options: Any) -> Any:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1
            return await super().acomplete(messages, **options)

    def reply(messages: list[dict[str, str]]) -> str:
        if "rlm_query_batched" in "".join(m["content"] for m in messages[2:]):
            return repl("FINAL('ok')")
        if "QTOP" in messages[1]["content"]:
            return repl("r = rlm_query_batched(['QCHILD'] * 4)")
        return repl("r = llm_query_batched(['x'] * 20)\nFINAL(str(len(r)))")

    def run(**options: Any) -> list[Event]:
        events: list[Event] = []
        root, sub = ScriptedLM(reply, name="root"), Sub(lambda m: "1", name="sub")
        result = fathom.RLM(root, sub, sandbox="inprocess", max_depth=1,
                            on_event=events.append, **options).run("QTOP", "c")
        assert result.answer == "ok"
        return events

    run(max_concurrency=3)
    assert peak <= 3  # four children, twenty sub-calls each: still three at once in all
    events = run()
    starts = [e for e in events if isinstance(e, ConcurrencyEvent) and e.reason == "start"]
    assert sorted(e.endpoint for e in starts) == ["root", "sub"]  # one per endpoint, tree-wide


@pytest.mark.parametrize("options", [{"max_concurrency": "fast"}, {"max_concurrency": 0},
                                     {"max_concurrency": 2.5}, {"max_concurrency_cap": 0}])
def test_bad_concurrency_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(fathom.ConfigError, match="max_concurrency"):
        fathom.RLM(ScriptedLM(["x"]), **options)


def test_a_rate_limited_call_waits_until_the_time_budget_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = ScriptedLM([repl("print(llm_query('a'))"), repl("FINAL('never')")])
    with ScriptedOpenAIServer(["b"], fail_first=[429] * 10_000, retry_after="0.1") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        result = fathom.RLM(root, "openai:m", sandbox="inprocess",
                            budget=fathom.Budget(seconds=1.5)).run("q", "c")
        attempts = len(server.requests)
    assert (result.stop_reason, result.budget_limit) == ("budget", "seconds")
    # How many attempts fit in the budget depends on the machine's load (3 under four busy
    # loops on two cores): that throttling is never counted is proved by the next test.
    assert attempts >= 2


def test_throttling_is_waited_out_past_max_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    throttled = RetryPolicy().max_retries + 3  # 429s are waited out, not counted as retries
    root = ScriptedLM([repl("FINAL(llm_query('a'))")])
    with ScriptedOpenAIServer(["b"], fail_first=[429] * throttled, retry_after="0.05") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        result = fathom.RLM(root, "openai:m", sandbox="inprocess").run("q", "c")
        attempts = len(server.requests)
    assert result.answer == "b" and attempts == throttled + 1
