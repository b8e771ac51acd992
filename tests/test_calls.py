"""The one metered model call: events, budget, slots and call ids, for every role."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import pytest

import fathom
from fathom.budget import Budget, Spend
from fathom.calls import CallSite, Meter, Role, RunHandle, current_call
from fathom.errors import BudgetExceeded, LMError
from fathom.limiter import Holder
from fathom.lm import ScriptedLM
from fathom.trace import Clock, Event, LMCall, LMCallStart, RunStart, SubRLMStart, read
from tests.test_engine import by_query, repl


def meter(budget: Budget | None = None, concurrency: int = 4) -> tuple[Meter, list[Event]]:
    events: list[Event] = []
    return Meter(Spend(budget), events.append, Clock(), concurrency), events


def test_a_call_is_traced_as_a_start_end_pair_with_its_usage() -> None:
    m, events = meter()
    run = RunHandle("q")
    site = CallSite(run, Role.ROOT, run.call_id())
    completion = asyncio.run(m.call(ScriptedLM(["hi"]), [{"role": "user", "content": "p"}], site))
    assert completion.text == "hi"
    start, end = events
    assert isinstance(start, LMCallStart) and isinstance(end, LMCall)
    assert start.call_id == end.call_id == f"{run.run_id}-1"
    assert end.response == "hi" and end.prompt_tokens > 0 and not end.refused
    assert m.spend.usage.calls == 1


def test_a_budget_refusal_is_a_typed_pair_and_raises() -> None:
    m, events = meter(Budget(calls=0))
    run = RunHandle("q")
    site = CallSite(run, Role.SUB, run.call_id(), batch_id="b")
    lm = ScriptedLM(["never"])
    with pytest.raises(BudgetExceeded):
        asyncio.run(m.call(lm, [{"role": "user", "content": "p"}], site))
    assert [type(e) for e in events] == [LMCallStart, LMCall]
    end = events[1]
    assert isinstance(end, LMCall) and end.refused and end.batch_id == "b"
    assert not lm.calls  # the model was never asked


def test_a_failed_call_releases_its_reservation_and_says_why() -> None:
    m, events = meter(Budget(tokens=1_000))
    run = RunHandle("q")
    site = CallSite(run, Role.ROOT, run.call_id())
    with pytest.raises(LMError):
        asyncio.run(m.call(ScriptedLM([LMError("down")]), [{"role": "user", "content": "x"}], site))
    end = events[-1]
    assert isinstance(end, LMCall) and end.error and "down" in end.error and not end.refused
    assert m.spend.exhausted() is None  # the estimate did not stay reserved


def test_only_the_top_runs_own_turns_skip_the_shared_slots() -> None:
    m, _ = meter(concurrency=1)
    top, child = RunHandle("q"), RunHandle("c", depth=1)

    async def go() -> list[str]:
        lm = ScriptedLM(["root", "child"])
        async with Holder(m.limiters.for_model(lm), priority=False):  # every slot taken
            done = await m.call(lm, [{"role": "user", "content": "a"}],
                                CallSite(top, Role.ROOT, top.call_id()))
            waiting = asyncio.create_task(m.call(lm, [{"role": "user", "content": "b"}],
                                                 CallSite(child, Role.ROOT, child.call_id())))
            await asyncio.sleep(0.05)
            assert not waiting.done()  # a child's root turn waits for a slot
        return [done.text, (await waiting).text]

    assert asyncio.run(go()) == ["root", "child"]


def test_the_model_sees_who_is_calling() -> None:
    seen: list[CallSite | None] = []

    def respond(messages: object) -> str:
        seen.append(current_call())
        return "ok"

    m, _ = meter()
    run = RunHandle("q")
    site = CallSite(run, Role.SUB, run.call_id())
    asyncio.run(m.call(ScriptedLM(respond), [{"role": "user", "content": "p"}], site))
    assert seen == [site]
    assert current_call() is None


@pytest.mark.parametrize("sandbox", ["inprocess", "subprocess"])
def test_every_call_of_a_depth_two_run_is_one_paired_call_id_scheme(
    sandbox: str, tmp_path: Path
) -> None:
    lm = by_query({
        "top": [repl("a = rlm_query_batched(['middle', 'middle'])\n"
                     "b = llm_query_batched(['x', 'y'])\nFINAL(a[0] + b[0])")],
        "middle": [repl("c = rlm_query('bottom')\nFINAL('mid:' + c)")],
        "bottom": [repl("FINAL(llm_query('leaf'))")],
    })
    trace = tmp_path / "t.jsonl"
    result = fathom.RLM(lm, sandbox=sandbox, max_depth=2, max_iterations=3, trace=trace).run(
        "top", "ctx"
    )
    assert result.answer.startswith("mid:")
    events = read(trace)
    starts = [e for e in events if isinstance(e, LMCallStart)]
    ends = [e for e in events if isinstance(e, LMCall)]
    runs = {e.run_id for e in events if isinstance(e, RunStart)}
    assert len(runs) == 5  # top, two middles, two bottoms
    assert {e.depth for e in ends} == {0, 1, 2}
    assert {e.role for e in ends} == {"root", "sub"}
    # Every call is one start and one end with the same id, of the form {run_id}-{n}.
    assert Counter(e.call_id for e in starts) == Counter(e.call_id for e in ends)
    assert len({e.call_id for e in ends}) == len(ends)
    for e in ends:
        assert re.fullmatch(rf"{e.run_id}-\d+", e.call_id)
    batches = {e.batch_id for e in ends if e.batch_id} | {
        e.batch_id for e in events if isinstance(e, SubRLMStart) and e.batch_id
    }
    assert len(batches) == 2 and all(re.fullmatch(r"\w+-b\d+", b) for b in batches)
