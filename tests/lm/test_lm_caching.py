"""Prompt caching: Anthropic breakpoints, OpenAI's prompt_cache_key, cached tokens and prices."""

from __future__ import annotations

import io
import json

import pytest

import fathom
from fathom.lm import pricing
from fathom.lm.anthropic import MIN_CACHED_CHARS, AnthropicLM
from fathom.lm.openai import OpenAILM
from fathom.lm.retry import RetryPolicy
from fathom.progress import Progress
from fathom.trace import Event, LMCall
from tests.fake_servers import ScriptedAnthropicServer, ScriptedOpenAIServer
from tests.test_engine import repl

FAST = RetryPolicy(max_retries=1, base_delay=0.01)
LONG = "the same long instructions " * (MIN_CACHED_CHARS // 20)


def _breakpoints(body: dict) -> int:
    return json.dumps(body).count('"cache_control"')


def test_anthropic_requests_mark_the_stable_prefix_for_caching() -> None:
    history = [
        {"role": "system", "content": LONG},
        {"role": "user", "content": "query and context description " + LONG},
        {"role": "assistant", "content": "```repl\nprint(1)\n```"},
        {"role": "user", "content": "output: 1"},
    ]
    with ScriptedAnthropicServer(["a", "b"]) as server:
        lm = AnthropicLM("claude-sonnet-5-5", base_url=server.base_url, api_key="k", retry=FAST)
        lm.complete(history)
        lm.complete([{"role": "user", "content": "short"}])
        long_body, short_body = server.requests
    ephemeral = {"type": "ephemeral"}
    assert long_body["system"][-1]["cache_control"] == ephemeral
    assert long_body["messages"][0]["content"][-1]["cache_control"] == ephemeral  # first turn
    assert long_body["messages"][-1]["content"][-1]["cache_control"] == ephemeral  # last turn
    assert _breakpoints(long_body) == 3  # the API allows four
    assert _breakpoints(short_body) == 0  # below the cacheable size: no breakpoint wasted


def test_anthropic_cache_reads_and_writes_are_counted_and_priced() -> None:
    history = [{"role": "system", "content": LONG}, {"role": "user", "content": LONG}]
    with ScriptedAnthropicServer(["a", "b"], prefix_cache=True) as server:
        lm = AnthropicLM("claude-sonnet-5-5", base_url=server.base_url, api_key="k", retry=FAST)
        first = lm.complete(history).usage
        second = lm.complete(history).usage
    assert first.cached_tokens == 0 and first.cache_write_tokens == first.prompt_tokens
    assert second.cached_tokens > 0 and second.prompt_tokens == first.prompt_tokens
    price = pricing.price_for("claude-sonnet-5-5")
    assert price is not None and price.cached_input is not None and price.cache_write
    uncached = second.prompt_tokens - second.cached_tokens - second.cache_write_tokens
    expected = (second.cached_tokens * price.cached_input + uncached * price.input
                + second.cache_write_tokens * price.cache_write
                + second.completion_tokens * price.output) / 1e6
    assert second.usd == pytest.approx(expected)
    assert second.usd < first.usd  # a cache read costs a tenth; the first call wrote it


def test_openai_cached_tokens_are_read_and_priced_at_the_cached_rate() -> None:
    ask = [{"role": "user", "content": LONG}]
    with ScriptedOpenAIServer(["a", "b"], prefix_cache=True) as server:
        lm = OpenAILM("gpt-5-mini", base_url=server.base_url, api_key="k", retry=FAST)
        first, second = lm.complete(ask).usage, lm.complete(ask).usage
    assert first.cached_tokens == 0 and second.cached_tokens >= 1024
    assert second.usd == pytest.approx(pricing.cost(
        "gpt-5-mini", second.prompt_tokens, second.completion_tokens, second.cached_tokens))
    assert second.usd < first.usd


def test_pricing_bills_reads_and_writes_at_their_rates() -> None:
    pricing.set_price("test-cache-model", 10.0, 20.0, cached_input=1.0, cache_write=12.5)
    usd = pricing.cost("test-cache-model", 1_000_000, 0, cached_tokens=500_000,
                       cache_write_tokens=200_000)
    assert usd == pytest.approx(0.5 * 1.0 + 0.2 * 12.5 + 0.3 * 10.0)


def test_one_prompt_cache_key_per_run_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(messages: list[dict]) -> str:
        if messages[0]["role"] != "system":
            return "sub"
        if len(messages) > 2:
            return repl("FINAL('done')")
        return repl("print(llm_query_batched(['a', 'b']))")

    keys = []
    with ScriptedOpenAIServer(respond) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        for _ in range(2):
            fathom.RLM("openai:m", sandbox="inprocess").run("q", "c")
            keys.append({r.get("prompt_cache_key") for r in server.requests})
            server.requests.clear()
    assert all(len(k) == 1 for k in keys)  # root turns and sub-calls share the tree's key
    (first,), (second,) = keys
    assert str(first).startswith("fathom-") and first != second  # each run tree its own


def test_cached_tokens_reach_the_trace_and_the_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    turns = iter([repl(f"print('{i}' * 3000)") for i in range(3)] + [repl("FINAL('ok')")])
    events: list[Event] = []
    with ScriptedOpenAIServer(lambda m: next(turns), prefix_cache=True) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        result = fathom.RLM("openai:gpt-5-mini", sandbox="inprocess",
                            on_event=events.append).run("q", "c")
    calls = [e for e in events if isinstance(e, LMCall)]
    # Each root request repeats the one before, so from the cache's minimum size on it hits.
    assert calls[0].cached_tokens == 0 and all(c.cached_tokens > 0 for c in calls[2:])
    usage = result.usage["openai:gpt-5-mini"]
    assert usage.cached_tokens == sum(c.cached_tokens for c in calls)
    stream = io.StringIO()
    Progress("plain", stream=stream).summary(result)
    assert f"({usage.cached_tokens} cached)" in stream.getvalue()
