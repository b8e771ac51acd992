"""Anthropic provider through the real SDK against a local Messages API server."""

from __future__ import annotations

import asyncio

import pytest

from fathom.errors import AuthenticationError, RateLimitError
from fathom.lm import pricing, resolve
from fathom.lm.anthropic import AnthropicLM, to_messages_api
from fathom.lm.retry import RetryPolicy
from tests.fake_servers import ScriptedAnthropicServer

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)


def lm_for(server: ScriptedAnthropicServer, model: str = "claude-sonnet-5-5") -> AnthropicLM:
    return AnthropicLM(model, base_url=server.base_url, api_key="test-key", retry=FAST)


def test_system_prompt_goes_to_system_and_roles_alternate() -> None:
    messages = [
        {"role": "system", "content": "You are a REPL agent."},
        {"role": "user", "content": "Context is 10 chars."},
        {"role": "user", "content": "Find the key."},
        {"role": "assistant", "content": "```repl\nprint(1)\n```"},
        {"role": "user", "content": "1"},
    ]
    with ScriptedAnthropicServer(["FINAL(mat)"]) as server:
        completion = lm_for(server).complete(messages, max_tokens=100, temperature=0)
        body = server.requests[0]
    assert completion.text == "FINAL(mat)"
    assert completion.model == "anthropic:claude-sonnet-5-5"
    assert body["system"] == "You are a REPL agent."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == "Context is 10 chars.\n\nFind the key."
    assert body["max_tokens"] == 100


def test_max_tokens_is_always_sent_and_a_leading_assistant_gets_a_user_turn() -> None:
    system, turns = to_messages_api([{"role": "assistant", "content": "hi"}])
    assert system is None
    assert [t["role"] for t in turns] == ["user", "assistant"]
    with ScriptedAnthropicServer(["ok"]) as server:
        lm_for(server).complete([{"role": "user", "content": "q"}])
        assert server.requests[0]["max_tokens"] > 0
        assert "system" not in server.requests[0]


def test_usage_and_cost() -> None:
    with ScriptedAnthropicServer(["twelve chars"]) as server:
        usage = (
            lm_for(server, "claude-haiku-5-5").complete([{"role": "user", "content": "q"}]).usage
        )
    assert usage.calls == 1 and usage.prompt_tokens > 0 and usage.completion_tokens == 4
    assert usage.usd == pytest.approx(
        pricing.cost("claude-haiku-5-5", usage.prompt_tokens, usage.completion_tokens)
    )


@pytest.mark.parametrize("status", [429, 500, 529])
def test_transient_failures_are_retried(status: int) -> None:
    with ScriptedAnthropicServer(["ok"], fail_first=[status, status]) as server:
        assert lm_for(server).complete([{"role": "user", "content": "q"}]).text == "ok"
        assert len(server.requests) == 3


def test_throttling_is_waited_out_until_the_patience_ends() -> None:
    with ScriptedAnthropicServer(["ok"], fail_first=[429, 529] * 3) as server:
        assert lm_for(server).complete([{"role": "user", "content": "q"}]).text == "ok"
        assert len(server.requests) == 7  # more than max_retries: throttling is not failure
    impatient = RetryPolicy(base_delay=0.01, max_delay=0.05, throttle_patience=0.3)
    with ScriptedAnthropicServer(["never"], fail_first=[429] * 1000) as server:
        lm = AnthropicLM("claude-sonnet-5-5", base_url=server.base_url, api_key="k",
                         retry=impatient)
        with pytest.raises(RateLimitError, match="throttled every request"):
            lm.complete([{"role": "user", "content": "q"}])


def test_wrong_key_names_the_variable() -> None:
    with ScriptedAnthropicServer(["never"], api_key="right") as server:
        lm = AnthropicLM("claude-sonnet-5-5", base_url=server.base_url, api_key="wrong")
        with pytest.raises(AuthenticationError, match="ANTHROPIC_API_KEY"):
            lm.complete([{"role": "user", "content": "q"}])
        assert len(server.requests) == 1


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    with pytest.raises(AuthenticationError, match="ANTHROPIC_API_KEY"):
        resolve("anthropic:claude-sonnet-5-5")


def test_spec_reads_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    with ScriptedAnthropicServer(["env"], api_key="env-key") as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
        lm = resolve("anthropic:claude-opus-5-5")
        assert lm.complete([{"role": "user", "content": "q"}]).text == "env"
        assert lm.context_window == 1_000_000


def test_async_fan_out() -> None:
    with ScriptedAnthropicServer(lambda messages: "re: " + messages[-1]["content"]) as server:
        lm = lm_for(server)

        async def fan_out() -> list[str]:
            done = await asyncio.gather(
                *(lm.acomplete([{"role": "user", "content": str(i)}]) for i in range(6))
            )
            return [c.text for c in done]

        assert asyncio.run(fan_out()) == [f"re: {i}" for i in range(6)]


def test_context_window_by_family() -> None:
    with ScriptedAnthropicServer([]) as server:
        assert lm_for(server, "claude-sonnet-5-5").context_window == 1_000_000
        assert lm_for(server, "claude-haiku-4-5").context_window == 200_000
