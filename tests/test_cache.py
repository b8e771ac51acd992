"""ResponseCache and CachedLM: a hit is free and calls no model, across threads and processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path

from fathom.cache import CachedLM, ResponseCache, cache_key
from fathom.errors import LMError
from fathom.lm import ScriptedLM
from fathom.lm.openai import OpenAILM
from fathom.lm.retry import RetryPolicy
from tests.fake_servers import ScriptedOpenAIServer

ASK = [{"role": "user", "content": "Where is the key?"}]


def test_second_identical_call_makes_no_model_call(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(["under the mat"]) as server:
        lm = OpenAILM("gpt-5-mini", base_url=server.base_url, api_key="k")
        first = CachedLM(lm, ResponseCache(tmp_path / "r.db")).complete(ASK, max_tokens=50)
        # A fresh wrapper and cache object on the same file: as a re-run would be.
        second = CachedLM(lm, ResponseCache(tmp_path / "r.db")).complete(ASK, max_tokens=50)
        assert len(server.requests) == 1
    assert not first.cached and first.usage.usd > 0
    assert second.cached and second.text == "under the mat"
    assert second.usage.usd == 0.0 and second.usage.calls == 1
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.model == first.model


def test_key_covers_model_messages_and_sampling(tmp_path: Path) -> None:
    base = cache_key("m", ASK, {"temperature": 0})
    assert base == cache_key("m", [dict(ASK[0])], {"temperature": 0})
    assert base != cache_key("n", ASK, {"temperature": 0})
    assert base != cache_key("m", ASK, {"temperature": 1})
    assert base != cache_key("m", [{"role": "user", "content": "Where is the door?"}], {})
    lm = ScriptedLM(["a", "b", "c"])
    cached = CachedLM(lm, ResponseCache(tmp_path / "r.db"))
    texts = [cached.complete(ASK, temperature=t).text for t in (0, 1, 0)]
    assert texts == ["a", "b", "a"] and lm.remaining == 1


def test_concurrent_threads_share_one_model_call_per_prompt(tmp_path: Path) -> None:
    lm = ScriptedLM(lambda messages: "reply to " + messages[-1]["content"], latency=0.05)
    cached = CachedLM(lm, ResponseCache(tmp_path / "r.db"))
    out: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        text = cached.complete([{"role": "user", "content": f"p{i % 4}"}]).text
        with lock:
            out.append(text)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(out)) == [f"reply to p{i}" for i in range(4)]
    assert len(out) == 32 and len(lm.calls) == 4
    assert (cached.hits, cached.misses) == (28, 4)


def test_async_path_hits_too(tmp_path: Path) -> None:
    lm = ScriptedLM(["once"])
    cached = CachedLM(lm, ResponseCache(tmp_path / "r.db"))

    async def twice() -> list[bool]:
        first = await cached.acomplete(ASK)
        second = await cached.acomplete(ASK)
        return [first.cached, second.cached]

    assert asyncio.run(twice()) == [False, True]


def test_several_processes_share_one_file(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    script = (
        "import sys\n"
        "from fathom.cache import CachedLM, ResponseCache\n"
        "from fathom.lm import ScriptedLM\n"
        "lm = CachedLM(ScriptedLM(lambda m: 'r' + m[-1]['content']), ResponseCache(sys.argv[1]))\n"
        "for i in range(40):\n"
        "    lm.complete([{'role': 'user', 'content': str(i)}])\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(db)]) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert len(ResponseCache(db)) == 40


def test_failed_calls_are_not_cached(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(["ok"], fail_first=[500, 500]) as server:
        lm = OpenAILM("m", base_url=server.base_url, api_key="k", retry=RetryPolicy(max_retries=0))
        cached = CachedLM(lm, ResponseCache(tmp_path / "r.db"))
        for _ in range(2):
            with contextlib.suppress(LMError):
                cached.complete(ASK)
        assert cached.complete(ASK).text == "ok"
        assert cached.complete(ASK).cached


def test_cached_rerun_of_an_rlm_makes_no_network_call(tmp_path: Path) -> None:
    import fathom

    def script(messages: list[dict[str, str]]) -> str:
        last = messages[-1]["content"]
        if "Query:" in last and len(messages) <= 2:  # the root's first turn
            return "```repl\nprint(llm_query_batched([context[:10], context[10:]]))\n```"
        if last.startswith(("alpha", "beta")):  # the sub-calls
            return last.split()[0].upper()
        return "FINAL(done)"

    context = "alpha one beta two"
    with ScriptedOpenAIServer(script) as server:
        lm = OpenAILM("gpt-5-mini", base_url=server.base_url, api_key="k")
        db = tmp_path / "responses.db"
        first = fathom.RLM(lm, cache=db, trace=tmp_path / "1.jsonl").run("Go", context)
        calls_after_first = len(server.requests)
        second = fathom.RLM(lm, cache=db, trace=tmp_path / "2.jsonl").run("Go", context)
        assert len(server.requests) == calls_after_first
    assert calls_after_first >= 3  # root turns and both sub-calls went over HTTP once
    assert first.answer == second.answer == "done"
    assert second.total_usage.usd == 0.0 and first.total_usage.usd > 0
    events = (tmp_path / "2.jsonl").read_text().splitlines()
    lm_calls = [json.loads(e) for e in events if '"lm_call"' in e]
    assert lm_calls and all(call["cached"] for call in lm_calls)


def test_concurrent_identical_async_calls_share_one_model_call(tmp_path: Path) -> None:
    lm = ScriptedLM(lambda messages: "reply", latency=0.05)
    cached = CachedLM(lm, ResponseCache(tmp_path / "r.db"))

    async def fan_out() -> list[bool]:
        done = await asyncio.gather(*(cached.acomplete(ASK) for _ in range(5)))
        return [c.cached for c in done]

    assert sorted(asyncio.run(fan_out())) == [False, True, True, True, True]
    assert len(lm.calls) == 1 and (cached.hits, cached.misses) == (4, 1)


def test_a_cancelled_call_lets_the_next_identical_one_through(tmp_path: Path) -> None:
    lm = ScriptedLM(lambda messages: "reply", latency=0.2)
    cached = CachedLM(lm, ResponseCache(tmp_path / "r.db"))

    async def cancel_then_retry() -> str:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cached.acomplete(ASK), timeout=0.05)
        return (await asyncio.wait_for(cached.acomplete(ASK), timeout=5)).text

    assert asyncio.run(cancel_then_retry()) == "reply"
