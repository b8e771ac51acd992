"""The parent's side of the REPL functions: dispatch from the table, errors as text, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from fathom.bridge import SubCalls
from fathom.budget import Budget, Spend
from fathom.calls import RunHandle
from fathom.engine import Engine
from fathom.errors import BudgetExceeded, LMError
from fathom.lm import ScriptedLM
from fathom.lm.router import ModelRouter
from fathom.repl_api import CallRefused
from fathom.sandbox import SandboxOptions
from fathom.trace import Event, LMCall
from fathom.tree import RunConfig, RunTree


def on_a_tree(
    probe: Callable[[SubCalls], Any], sub: ScriptedLM, *, budget: Budget | None = None,
    max_depth: int = 1, root: ScriptedLM | None = None, max_concurrency: int = 16,
    max_batch: int = 10_000,
) -> tuple[Any, list[Event]]:
    """Run `probe(bridge)` in a thread, as a sandbox would, while the tree's loop runs."""
    events: list[Event] = []

    async def go() -> Any:
        router = ModelRouter(root or ScriptedLM([]), sub, None, lambda lm: lm)
        config = RunConfig(max_depth=max_depth, sandbox="inprocess",
                           max_concurrency=max_concurrency,
                           sandbox_options=SandboxOptions(max_batch=max_batch))
        tree = RunTree(config, router, Spend(budget), events.append, asyncio.get_running_loop(),
                       Engine)
        return await asyncio.to_thread(probe, SubCalls(tree, RunHandle("q")))

    return asyncio.run(go()), events


def test_functions_are_the_tables_with_the_sub_models_window() -> None:
    names, _ = on_a_tree(lambda b: [s.name for s in b.functions()], ScriptedLM([]))
    assert names == ["llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched", "cite"]
    docs, _ = on_a_tree(lambda b: b.functions()[0].doc,
                        ScriptedLM([], context_window=1_000))
    assert "4,000 characters" in docs and "{sub_window}" not in docs


def test_llm_query_answers_and_is_traced_as_a_sub_call() -> None:
    answer, events = on_a_tree(lambda b: b.call("llm_query", {"prompt": "hi", "model": None}),
                               ScriptedLM(["hello"], name="sub"))
    assert answer == "hello"
    end = [e for e in events if isinstance(e, LMCall)]
    assert len(end) == 1 and end[0].role == "sub" and end[0].model == "sub"


def test_a_model_failure_comes_back_as_text() -> None:
    answer, _ = on_a_tree(lambda b: b.call("llm_query", {"prompt": "hi"}),
                          ScriptedLM([LMError("provider down")]))
    assert answer.startswith("Error: LMError") and "provider down" in answer


def test_a_budget_refusal_is_raised_not_returned() -> None:
    def probe(bridge: SubCalls) -> Any:
        with pytest.raises(BudgetExceeded, match="calls limit"):
            bridge.call("llm_query", {"prompt": "hi"})
        with pytest.raises(BudgetExceeded):
            bridge.call("llm_query_batched", {"prompts": ["a", "b"]})
        return "checked"

    assert on_a_tree(probe, ScriptedLM(["x"] * 5), budget=Budget(calls=0))[0] == "checked"


def test_batched_answers_keep_prompt_order_and_share_a_batch_id() -> None:
    answers, events = on_a_tree(
        lambda b: b.call("llm_query_batched", {"prompts": ["1", "22", "333"]}),
        ScriptedLM(lambda messages: str(len(messages[0]["content"]))),
    )
    assert answers == ["1", "2", "3"]
    batch_ids = {e.batch_id for e in events if isinstance(e, LMCall)}
    assert len(batch_ids) == 1 and None not in batch_ids


def test_a_batch_keeps_a_bounded_window_in_flight_and_its_order() -> None:
    in_flight = peak = 0

    async def slow(messages: Any) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001 * (int(messages[-1]["content"]) % 7))  # finish out of order
        in_flight -= 1
        return messages[-1]["content"]

    class SlowLM(ScriptedLM):
        async def acomplete(self, messages: Any, **kwargs: Any) -> Any:
            text = await slow(messages)
            return await super().acomplete([{"role": "user", "content": text}], **kwargs)

    prompts = [str(i) for i in range(200)]
    answers, events = on_a_tree(
        lambda b: b.call("llm_query_batched", {"prompts": prompts}),
        SlowLM(lambda messages: messages[-1]["content"]), max_concurrency=3,
    )
    assert answers == prompts
    assert peak <= 3  # the model sees max_concurrency at once
    assert sum(isinstance(e, LMCall) for e in events) == 200


def test_a_budget_refusal_stops_the_rest_of_a_batch() -> None:
    def probe(bridge: SubCalls) -> Any:
        with pytest.raises(BudgetExceeded):
            bridge.call("llm_query_batched", {"prompts": ["p"] * 100_000})
        return "refused"

    answer, events = on_a_tree(probe, ScriptedLM(lambda m: "x"), budget=Budget(calls=5),
                               max_concurrency=4, max_batch=100_000)
    assert answer == "refused"
    calls = [e for e in events if isinstance(e, LMCall)]
    assert sum(not e.refused for e in calls) == 5
    assert len(calls) <= 5 + 2 * 4  # the calls in the window when the budget refused, no more


@pytest.mark.parametrize("name", ["llm_query_batched", "rlm_query_batched"])
def test_a_batch_over_max_batch_is_refused_before_any_call(name: str) -> None:
    def probe(bridge: SubCalls) -> Any:
        with pytest.raises(CallRefused, match="got 4 prompts, over the limit of 3 per call"):
            bridge.call(name, {"prompts": ["a", "b", "c", "d"]})
        return bridge.call(name, {"prompts": ["a", "b", "c"]})

    answers, events = on_a_tree(probe, ScriptedLM(lambda m: "x"), max_depth=0, max_batch=3)
    assert answers == ["x", "x", "x"]
    assert sum(isinstance(e, LMCall) for e in events) == 3


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("llm_query_batched", {"prompts": "not a list"}, "needs a list"),
        ("rlm_query_batched", {"prompts": ["a"], "contexts": [1, 2]}, "1 prompts but 2 contexts"),
        ("no_such_function", {}, "no REPL function 'no_such_function'"),
    ],
)
def test_bad_calls_get_an_error_the_code_can_read(
    name: str, args: dict[str, Any], expected: str
) -> None:
    answer, _ = on_a_tree(lambda b: b.call(name, args), ScriptedLM([]))
    assert expected in str(answer)


def test_rlm_query_at_the_depth_limit_is_a_plain_sub_call() -> None:
    answer, events = on_a_tree(lambda b: b.call("rlm_query", {"prompt": "leaf"}),
                               ScriptedLM(["leaf answer"]), max_depth=0)
    assert answer == "leaf answer"
    assert [e.role for e in events if isinstance(e, LMCall)] == ["sub"]


def test_rlm_query_runs_a_child_with_its_own_context() -> None:
    root = ScriptedLM(["```repl\nFINAL(context.upper())\n```"])
    answer, _ = on_a_tree(lambda b: b.call("rlm_query", {"prompt": "p", "context": "abc"}),
                          ScriptedLM([]), root=root)
    assert answer == "ABC"


def test_a_handler_that_breaks_does_not_break_the_repl_code(monkeypatch: Any) -> None:
    from fathom import repl_api

    async def broken(host: Any, args: dict[str, Any]) -> str:
        raise RuntimeError("bug")

    repl_api.register("broken", [], "str", "always fails", broken)
    try:
        answer, _ = on_a_tree(lambda b: b.call("broken", {}), ScriptedLM([]))
    finally:
        repl_api.unregister("broken")
    assert answer == "Error: broken failed: RuntimeError: bug"
