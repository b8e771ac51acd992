"""The root loop end to end, through real sandboxes, with scripted models."""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path
from typing import Any

import pytest

import fathom
from fathom.errors import LMError
from fathom.lm import ScriptedLM
from fathom.lm.base import Message
from fathom.trace import ExecEvent, FinalEvent, IterationEvent, LMCall, RunEnd, RunStart, read
from tests.fake_servers import ScriptedOpenAIServer

SANDBOXES = ["inprocess", "subprocess"]
SECRET = "the-vault-code-is-4417"


def haystack() -> str:
    return "filler text. " * 200 + SECRET + " more filler." * 200


def repl(code: str) -> str:
    return f"Let me look.\n```repl\n{code}\n```\n"


def last_user(messages: list[Message]) -> str:
    return [m for m in messages if m["role"] == "user"][-1]["content"]


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_multi_step_run_never_shows_the_context_to_the_root(sandbox: str) -> None:
    root = ScriptedLM([
        repl("n = len(context)\nprint(n)"),
        repl("idx = context.find('vault-code')\nprint(context[idx:idx+22])"),
        repl("FINAL(context[context.find('vault-code') + 14:][:4])"),
    ])
    result = fathom.RLM(root, sandbox=sandbox).run("What is the vault code?", haystack())
    assert result.answer == "4417"
    assert result.stop_reason == "final"
    assert result.iterations == 3
    first_prompt = "\n".join(m["content"] for m in root.calls[0])
    assert SECRET not in first_prompt
    assert str(len(haystack())) in first_prompt.replace(",", "")
    assert str(len(haystack())) in last_user(root.calls[1])
    assert "vault-code-is-4417" in last_user(root.calls[2])


@pytest.mark.parametrize("sandbox", SANDBOXES)
@pytest.mark.parametrize(
    "reply",
    [
        repl("FINAL('Paris')"),
        repl("city = 'Paris'\nFINAL_VAR('city')"),
        "I know it.\nFINAL(Paris)",
        repl("city = 'Par' + 'is'") + "\nFINAL_VAR(city)",
    ],
    ids=["code-final", "code-final-var", "text-final", "text-final-var-after-code"],
)
def test_every_final_form(sandbox: str, reply: str) -> None:
    result = fathom.RLM(ScriptedLM([reply]), sandbox=sandbox).run("Capital?", "France: Paris")
    assert (result.answer, result.stop_reason, result.iterations) == ("Paris", "final", 1)


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_final_var_of_missing_variable_is_reported_back(sandbox: str) -> None:
    root = ScriptedLM(["FINAL_VAR(nothing_here)", repl("FINAL('ok')")])
    result = fathom.RLM(root, sandbox=sandbox).run("q", "ctx")
    assert result.answer == "ok" and result.iterations == 2
    assert "nothing_here" in last_user(root.calls[1])


def test_reply_without_code_gets_a_nudge() -> None:
    root = ScriptedLM(["I think about it.", repl("FINAL(1)")])
    result = fathom.RLM(root, sandbox="inprocess").run("q", "ctx")
    assert result.answer == "1"
    assert "no ```repl``` code block" in last_user(root.calls[1])


def test_max_iterations_asks_once_for_a_final_answer() -> None:
    root = ScriptedLM([repl("x = 1"), repl("x += 1"), "FINAL(best guess)"])
    result = fathom.RLM(root, sandbox="inprocess", max_iterations=2).run("q", "ctx")
    assert result.stop_reason == "max_iterations"
    assert result.answer == "best guess"
    assert "no iterations left" in last_user(root.calls[2])


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_code_errors_and_output_go_back_to_the_model(sandbox: str) -> None:
    root = ScriptedLM([repl("print('hello')\n1 / 0"), repl("FINAL('done')")])
    fathom.RLM(root, sandbox=sandbox).run("q", "ctx")
    shown = last_user(root.calls[1])
    assert "hello" in shown and "ZeroDivisionError" in shown


def test_long_output_is_truncated_head_and_tail() -> None:
    root = ScriptedLM([repl("print('HEAD' + 'x' * 100_000 + 'TAIL')"), repl("FINAL(1)")])
    fathom.RLM(root, sandbox="inprocess", output_limit=5_000).run("q", "ctx")
    shown = last_user(root.calls[1])
    assert "HEAD" in shown and "TAIL" in shown and "truncated" in shown
    assert len(shown) < 6_000


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_failing_sub_call_returns_an_error_string(sandbox: str, tmp_path: Path) -> None:
    root = ScriptedLM([repl("r = llm_query('hi')\nprint(r)"), repl("FINAL(r[:6])")])
    sub = ScriptedLM([LMError("provider down")], name="sub")
    trace = tmp_path / "t.jsonl"
    result = fathom.RLM(root, sub, sandbox=sandbox, trace=trace).run("q", "ctx")
    assert result.answer == "Error:"
    assert "provider down" in last_user(root.calls[1])
    failed = [e for e in read(trace) if isinstance(e, LMCall) and e.role == "sub"]
    assert failed and failed[0].error and "provider down" in failed[0].error


def test_sub_calls_for_models_the_user_did_not_allow_are_refused() -> None:
    root = ScriptedLM([repl("print(llm_query('hi', model='openai:gpt-5'))"), repl("FINAL(1)")])
    fathom.RLM(root, ScriptedLM(["x"], name="sub"), sandbox="inprocess").run("q", "ctx")
    assert "not allowed" in last_user(root.calls[1])


class PeakCounting(ScriptedLM):
    """A scripted model that records the most calls it had in flight at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight = 0
        self.peak = 0
        self._count_lock = threading.Lock()

    async def acomplete(self, messages: list[Message], **options: Any) -> fathom.lm.Completion:
        with self._count_lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.02)
        with self._count_lock:
            self.in_flight -= 1
        return await super().acomplete(messages)


def by_query(routes: dict[str, list[str]]) -> ScriptedLM:
    """A model whose replies depend on the query of the run asking (root or child)."""
    counters: dict[str, int] = {}
    lock = threading.Lock()

    def respond(messages: list[Message]) -> str:
        text = messages[1]["content"] if len(messages) > 1 else messages[0]["content"]
        for key, replies in routes.items():
            if f"Query: {key}" in text or text == key:
                with lock:
                    i = counters.get(key, 0)
                    counters[key] = i + 1
                return replies[min(i, len(replies) - 1)]
        return "plain answer"

    return ScriptedLM(respond)


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_recursion_to_depth_two(sandbox: str, tmp_path: Path) -> None:
    lm = by_query({
        "top": [repl("a = rlm_query('middle', context=context[:5])\nFINAL('top<' + a + '>')")],
        "middle": [
            repl("b = rlm_query('bottom', context=context.upper())\nFINAL('mid<' + b + '>')")
        ],
        "bottom": [repl("c = rlm_query('leaf')\nFINAL(context + '|' + c)")],
        "leaf": ["leaf answer"],
    })
    trace = tmp_path / "t.jsonl"
    result = fathom.RLM(lm, sandbox=sandbox, max_depth=2, trace=trace).run("top", "hello world")
    assert result.answer == "top<mid<HELLO|leaf answer>>"
    events = read(trace)
    depths = {e.depth for e in events if isinstance(e, RunStart)}
    assert depths == {0, 1, 2}
    # At the depth limit rlm_query is a plain sub-call.
    assert any(isinstance(e, LMCall) and e.role == "sub" and e.prompt == "leaf" for e in events)


def test_budget_on_calls_stops_the_run_with_best_answer() -> None:
    root = ScriptedLM([repl("print('partial: 42')")] * 10)
    result = fathom.RLM(root, sandbox="inprocess", budget=fathom.Budget(calls=3)).run("q", "c")
    assert result.stop_reason == "budget"
    assert result.budget_limit == "calls"
    assert result.iterations <= 3
    assert "42" in result.answer


def test_budget_on_dollars_counts_sub_calls() -> None:
    root = ScriptedLM([repl("r = llm_query_batched(['x'] * 20)")] * 5, usd_per_million_tokens=1.0)
    sub = ScriptedLM(lambda m: "y" * 4000, name="sub", usd_per_million_tokens=1000.0)
    result = fathom.RLM(root, sub, sandbox="inprocess", budget=fathom.Budget(usd=0.5)).run("q", "c")
    assert result.stop_reason == "budget"
    assert result.usage["sub"].calls < 100


def test_runaway_llm_query_loop_is_stopped_by_the_call_budget() -> None:
    root = ScriptedLM([repl("while True:\n    llm_query('again')"), repl("FINAL(1)")])
    sub = ScriptedLM(lambda m: "ok", name="sub")
    result = fathom.RLM(root, sub, sandbox="inprocess", budget=fathom.Budget(calls=20),
                        exec_timeout=30).run("q", "c")
    assert result.stop_reason == "budget"
    assert result.total_usage.calls <= 20


def test_concurrency_limit_holds_for_batched_sub_calls() -> None:
    root = ScriptedLM([repl("r = llm_query_batched([str(i) for i in range(40)])\nFINAL(len(r))")])
    sub = PeakCounting(lambda m: "a", name="sub")
    result = fathom.RLM(root, sub, sandbox="inprocess", max_concurrency=4).run("q", "c")
    assert result.answer == "40"
    assert sub.peak == 4


def test_batched_answers_keep_prompt_order() -> None:
    root = ScriptedLM([repl("FINAL(','.join(llm_query_batched(['3', '1', '2'])))")])
    sub = ScriptedLM(lambda m: "n" + m[-1]["content"], name="sub", latency=0.01)
    assert fathom.RLM(root, sub, sandbox="inprocess").run("q", "c").answer == "n3,n1,n2"


def test_trace_and_on_event_carry_every_event(tmp_path: Path) -> None:
    seen: list[object] = []
    trace = tmp_path / "run.jsonl"
    root = ScriptedLM([repl("print(llm_query('sub?'))"), repl("FINAL('x')")])
    result = fathom.RLM(root, ScriptedLM(["s"], name="sub"), sandbox="inprocess", trace=trace,
                        on_event=seen.append).run("q", "context body")
    events = read(trace)
    assert result.trace_path == str(trace)
    assert [type(e) for e in events] == [type(e) for e in seen]
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "RunStart" and kinds[-1] == "RunEnd"
    assert sum(isinstance(e, IterationEvent) for e in events) == 2
    assert sum(isinstance(e, ExecEvent) for e in events) == 2
    assert any(isinstance(e, FinalEvent) and e.answer == "x" for e in events)
    end = events[-1]
    assert isinstance(end, RunEnd) and end.stop_reason == "final"
    assert end.usage["sub"]["calls"] == 1
    start = events[0]
    assert isinstance(start, RunStart) and start.context["total_chars"] == len("context body")
    ts = [e.t for e in events]
    assert ts == sorted(ts)


def test_long_runs_compact_the_root_history() -> None:
    replies = [repl(f"v{i} = {i}\nprint('x' * 3000)") for i in range(12)]
    root = ScriptedLM([*replies, repl("FINAL(1)")], context_window=4_000)
    seen: list[object] = []
    fathom.RLM(root, sandbox="inprocess", on_event=seen.append).run("q", "c")
    iterations = [e for e in seen if isinstance(e, IterationEvent)]
    assert any(e.compacted for e in iterations)
    assert max(e.prompt_chars for e in iterations[-4:]) < 4_000 * 4
    assert "SHOW_VARS" in "\n".join(m["content"] for m in root.calls[-1])


@pytest.mark.parametrize("context", [["a", "bb", "ccc"], {"x.txt": "hello", "y.txt": "world"}])
def test_list_and_dict_contexts(context: object) -> None:
    root = ScriptedLM([repl("FINAL(type(context).__name__ + str(len(context)))")])
    result = fathom.RLM(root, sandbox="subprocess").run("q", context)
    assert result.answer == f"{type(context).__name__}{len(context)}"  # type: ignore[arg-type]


def test_directory_context(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("beta")
    (tmp_path / "blob.bin").write_bytes(b"\x00\xff\x00\xfe")
    root = ScriptedLM([repl("FINAL(','.join(sorted(context)))")])
    result = fathom.RLM(root, sandbox="subprocess").run("q", tmp_path)
    assert result.answer == "a.txt,sub/b.md"
    assert "blob.bin" in "\n".join(m["content"] for m in root.calls[0])


def test_arun_works_inside_an_event_loop() -> None:
    async def main() -> fathom.Result:
        rlm = fathom.RLM(ScriptedLM([repl("FINAL(2)")]), sandbox="inprocess")
        return await rlm.arun("q", "c")

    assert asyncio.run(main()).answer == "2"


def test_root_model_failure_ends_with_error() -> None:
    result = fathom.RLM(ScriptedLM([LMError("key rejected")]), sandbox="inprocess").run("q", "c")
    assert result.stop_reason == "error"
    assert result.error and "key rejected" in result.error


def test_time_budget_cuts_off_a_slow_model() -> None:
    root = ScriptedLM([repl("x = 1"), repl("FINAL(1)")], latency=5.0)
    rlm = fathom.RLM(root, sandbox="inprocess", budget=fathom.Budget(seconds=0.3))
    result = rlm.run("q", "c")
    assert result.stop_reason == "budget" and result.budget_limit == "seconds"
    assert result.seconds < 2


def test_unexpected_model_exception_ends_the_run_with_an_error() -> None:
    result = fathom.RLM(ScriptedLM([ValueError("bad json")]), sandbox="inprocess").run("q", "c")
    assert result.stop_reason == "error"
    assert result.error and "ValueError: bad json" in result.error


def test_a_failing_on_event_handler_does_not_end_the_run(tmp_path: Path) -> None:
    def broken(event: object) -> None:
        raise ValueError("bug in my handler")

    trace = tmp_path / "t.jsonl"
    rlm = fathom.RLM(ScriptedLM([repl("x = 1"), repl("FINAL('ok')")]), sandbox="inprocess",
                     on_event=broken, trace=trace)
    assert rlm.run("q", "c").answer == "ok"
    assert isinstance(read(trace)[-1], RunEnd)


def test_concurrent_runs_may_not_share_a_trace_file(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"

    async def main() -> list[object]:
        slow = ScriptedLM([repl("FINAL(1)")] * 2, latency=0.2)
        rlm = fathom.RLM(slow, sandbox="inprocess", trace=trace)
        return await asyncio.gather(rlm.arun("q", "c"), rlm.arun("q", "c"),
                                    return_exceptions=True)

    outcomes = asyncio.run(main())
    assert sum(isinstance(o, fathom.ConfigError) for o in outcomes) == 1
    assert sum(isinstance(o, fathom.Result) for o in outcomes) == 1


def test_many_children_do_not_starve_each_other_of_threads() -> None:
    lm = by_query({
        "top": [repl("r = rlm_query_batched([f'child {i}' for i in range(300)])\n"
                     "FINAL(sum(x == 'done' for x in r))")],
    })
    children = ScriptedLM(lambda m: repl("FINAL('done')") if "Query: child" in m[1]["content"]
                          else lm.complete(m).text)
    result = fathom.RLM(children, sandbox="inprocess", max_depth=1,
                        max_concurrency=8).run("top", "c")
    assert result.answer == "300"


def test_compaction_keeps_roles_alternating() -> None:
    replies = [repl(f"v{i} = {i}\nprint('x' * 3000)") for i in range(14)]
    root = ScriptedLM([*replies, repl("FINAL(1)")], context_window=4_000)
    fathom.RLM(root, sandbox="inprocess").run("q", "c")
    for messages in root.calls:
        roles = [m["role"] for m in messages]
        assert roles[0] == "system"
        assert all(a != b for a, b in itertools.pairwise(roles[1:])), roles
        assert all(set(m) == {"role", "content"} for m in messages)
    last_note = [m["content"] for m in root.calls[-1] if "earlier turns" in m["content"]]
    assert last_note and "v0 = 0" in "\n".join(last_note)  # older compactions' notes stay


def test_last_chance_final_var_is_resolved() -> None:
    root = ScriptedLM([repl("city = 'Paris'"), 'FINAL_VAR("city")'])
    result = fathom.RLM(root, sandbox="inprocess", max_iterations=1).run("q", "c")
    assert (result.answer, result.stop_reason) == ("Paris", "max_iterations")


def test_a_child_stopped_by_the_budget_raises_budget_exceeded_in_the_parent() -> None:
    lm = by_query({
        "top": [repl("try:\n    rlm_query('child')\nexcept Exception as e:\n"
                     "    print('stopped', type(e).__name__)"),
                repl("FINAL('never')")],
        "child": [repl("x = 1")] * 10,
    })
    seen: list[object] = []
    result = fathom.RLM(lm, sandbox="inprocess", budget=fathom.Budget(calls=4),
                        on_event=seen.append).run("top", "c")
    assert result.stop_reason == "budget"
    outputs = [e.stdout for e in seen if isinstance(e, ExecEvent) and e.depth == 0]
    assert "stopped BudgetExceeded" in "".join(outputs)


def test_children_share_the_concurrency_limit() -> None:
    def respond(messages: list[Message]) -> str:
        if "Query: top" in messages[1]["content"]:
            return repl("FINAL(len(rlm_query_batched([f'c{i}' for i in range(12)])))")
        return repl("FINAL('x')")

    lm = PeakCounting(respond)
    result = fathom.RLM(lm, sandbox="inprocess", max_concurrency=3).run("top", "c")
    assert result.answer == "12"
    assert lm.peak <= 3 + 1  # three children plus the root's own call


def test_concurrent_sub_calls_cannot_all_start_against_the_same_token_headroom() -> None:
    root = ScriptedLM([repl("r = llm_query_batched(['x' * 400] * 40)")] * 3)
    sub = ScriptedLM(lambda m: "y" * 400, name="sub", latency=0.05)
    result = fathom.RLM(root, sub, sandbox="inprocess", max_concurrency=16,
                        budget=fathom.Budget(tokens=3000)).run("q", "c")
    assert result.stop_reason == "budget"
    assert result.total_usage.total_tokens < 3000 * 1.5



def test_every_root_prompt_fits_a_small_server_window_less_the_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replies = [repl(f"v{i} = {i}\nprint('x' * 30000)") for i in range(10)]
    with ScriptedOpenAIServer([*replies, repl("FINAL(1)")], n_ctx=4096) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        result = fathom.RLM("openai:llama", sandbox="inprocess").run("q", "c")
    assert result.answer == "1"
    for request in server.requests:
        prompt_chars = sum(len(m["content"]) for m in request["messages"])
        assert request["max_tokens"] == 1024  # a quarter of the window the server reports
        assert prompt_chars <= (4096 - 1024) * 4


def test_window_and_reply_options_reach_the_model_and_refuse_oversize_sub_prompts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = "try:\n    llm_query('x' * 20000)\nexcept ValueError as e:\n    print(e)"
    with ScriptedOpenAIServer([repl(code), repl("FINAL(1)")]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        seen: list[object] = []
        rlm = fathom.RLM("openai:llama", sandbox="inprocess", context_window=4000,
                         max_output_tokens=500, on_event=seen.append)
        assert rlm.run("q", "c").answer == "1"
    assert [r["max_tokens"] for r in server.requests] == [500, 500]  # no sub-call was sent
    refusal = next(e for e in seen if isinstance(e, ExecEvent)).stdout
    assert "20,000 characters" in refusal and "14,000" in refusal  # (4000 - 500) * 4
    refused = [e for e in seen if isinstance(e, LMCall) and e.role == "sub"]
    assert refused and "CallRefused" in (refused[0].error or "")


def test_a_retried_root_call_is_traced_and_shown_as_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from fathom.progress import Progress
    from fathom.trace import LMCallRetry

    with ScriptedOpenAIServer([repl("FINAL(1)")], fail_first=[503]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        seen: list[Any] = []
        fathom.RLM("openai:llama", sandbox="inprocess", on_event=seen.append).run("q", "c")
    retry = next(e for e in seen if isinstance(e, LMCallRetry))
    # 503 is throttling: retried while the time budget allows, so no count of attempts.
    assert (retry.role, retry.attempt, retry.attempts) == ("root", 2, 0)
    assert "503" in retry.reason and retry.call_id
    stream = io.StringIO()
    progress = Progress("plain", stream=stream)
    for event in seen[: seen.index(retry) + 1]:
        progress(event)
    assert "attempt 2, throttled" in stream.getvalue()
    waiting = progress.state.waiting_text()
    assert "for openai:llama (" in waiting and "attempt 2, throttled" in waiting
