"""Run trees of one event loop share each endpoint's adaptive limiter (fathom.limiter)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

import fathom
from fathom.limiter import START, Limiter, shared_limiters
from fathom.lm import ScriptedLM
from fathom.result import Result
from fathom.trace import ConcurrencyEvent, Event
from tests.fake_servers import ScriptedOpenAIServer
from tests.test_engine import repl

LIMIT = 8  # the scripted server's calls in flight; beyond, 429


def _root(prompts: int) -> ScriptedLM:
    """Two turns of `prompts` sub-calls each, then FINAL."""

    def reply(messages: list[dict[str, str]]) -> str:
        turn = sum(m["role"] == "assistant" for m in messages)
        if turn < 2:
            return repl(f"r = llm_query_batched([str(i) for i in range({prompts})])\n"
                        "print(sum(int(x) for x in r))")
        return repl("FINAL('done')")

    return ScriptedLM(reply, name="root")


def _echo(messages: list[dict[str, Any]]) -> str:
    return str(messages[-1]["content"])  # a sub-call: its number back


async def _ask(prompts: int, **options: Any) -> tuple[Result, list[Event]]:
    events: list[Event] = []
    rlm = fathom.RLM(_root(prompts), "openai:m", sandbox="inprocess", on_event=events.append,
                     **options)
    return await rlm.arun("q", "c"), events


def _limits(events: list[Event], endpoint: str) -> list[ConcurrencyEvent]:
    return [e for e in events if isinstance(e, ConcurrencyEvent) and e.endpoint == endpoint]


def _endpoint(limiters: list[Limiter]) -> Limiter:
    served = [limiter for limiter in limiters if limiter.endpoint != "root"]
    assert len(served) == 1  # one limiter for the server's endpoint, whatever ran on it
    return served[0]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Any:
    with ScriptedOpenAIServer(_echo, delay=0.1, retry_after="0.05",
                              max_in_flight=LIMIT) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server


def test_concurrent_runs_share_one_limiter_and_hear_its_changes(
    server: ScriptedOpenAIServer,
) -> None:
    async def go() -> tuple[list[tuple[Result, list[Event]]], Limiter, int]:
        runs = await asyncio.gather(_ask(60), _ask(60))
        limiter = _endpoint(shared_limiters(asyncio.get_running_loop()))
        return runs, limiter, limiter.limit

    runs, limiter, learned = asyncio.run(go())
    assert [result.answer for result, _ in runs] == ["done", "done"]
    # The server's limit for both runs together, not for each (AIMD probes a little above).
    assert learned <= LIMIT + 2
    both = [_limits(events, limiter.endpoint) for _, events in runs]
    assert sorted(changes[0].reason for changes in both) == ["shared", "start"]
    assert both[0][0].limit == both[1][0].limit == START
    for changes in both:  # each trace tells the cuts the two runs' load caused
        assert any(e.reason == "throttled" for e in changes)
    # Two runs ramping on their own would each overshoot; together they pay one ramp.
    assert server.rejected <= 0.3 * len(server.requests)
    assert server.peak <= LIMIT


def test_a_later_run_in_the_loop_starts_at_the_limit_the_first_found(
    server: ScriptedOpenAIServer,
) -> None:
    async def go() -> tuple[int, list[Event], int]:
        await _ask(40)
        learned = _endpoint(shared_limiters(asyncio.get_running_loop())).limit
        rejected = server.rejected
        result, events = await _ask(40)
        assert result.answer == "done"
        return learned, events, rejected

    learned, events, ramp = asyncio.run(go())
    assert learned <= LIMIT + 2
    first = next(e for e in events if isinstance(e, ConcurrencyEvent) and e.endpoint != "root")
    assert first.reason == "shared" and first.limit == learned
    assert server.rejected - ramp < ramp / 2  # no second ramp from START: AIMD's probes only


def test_a_fixed_limit_is_the_trees_own_and_ended_loops_free_their_limiters(
    server: ScriptedOpenAIServer,
) -> None:
    result, events = asyncio.run(_ask(10, max_concurrency=3))
    assert result.answer == "done" and server.peak <= 3
    assert not [e for e in events if isinstance(e, ConcurrencyEvent)]  # a fixed limit: no news
    result, _ = asyncio.run(_ask(10))
    assert result.answer == "done"
    gc.collect()
    assert shared_limiters() == []  # the loop went, and its limiters with it
