"""OpenAI provider: the real SDK over real HTTP, against scripted and llama.cpp servers."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from fathom.errors import (
    AuthenticationError,
    ContextWindowError,
    LMError,
    QuotaExhausted,
)
from fathom.lm import pricing, resolve
from fathom.lm.openai import DEFAULT_CONTEXT_WINDOW, OpenAILM
from fathom.lm.retry import RetryPolicy
from tests.fake_servers import ScriptedOpenAIServer
from tests.lm.conftest import SERVER_ALIAS

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)
ASK = [{"role": "user", "content": "Where is the key?"}]


def lm_for(server: ScriptedOpenAIServer, model: str = "gpt-4o-mini", **kw: object) -> OpenAILM:
    return OpenAILM(model, base_url=server.base_url, api_key="test-key", retry=FAST, **kw)  # type: ignore[arg-type]


def test_reply_usage_and_cost_come_from_the_response() -> None:
    with ScriptedOpenAIServer(["under the mat"]) as server:
        completion = lm_for(server).complete(ASK)
    assert completion.text == "under the mat"
    assert completion.model == "openai:gpt-4o-mini"
    usage = completion.usage
    assert usage.calls == 1 and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.usd == pytest.approx(
        pricing.cost("gpt-4o-mini", usage.prompt_tokens, usage.completion_tokens)
    )
    assert server.headers[0]["authorization"] == "Bearer test-key"


def test_usage_is_estimated_when_the_server_sends_none() -> None:
    with ScriptedOpenAIServer(["x" * 40], usage=False) as server:
        usage = lm_for(server).complete(ASK).usage
    assert usage.completion_tokens == 10  # 4 characters per token
    assert usage.prompt_tokens == pricing.estimate_prompt_tokens(ASK)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_failure_is_retried_then_succeeds(status: int) -> None:
    with ScriptedOpenAIServer(["ok"], fail_first=[status]) as server:
        assert lm_for(server).complete(ASK).text == "ok"
        assert len(server.requests) == 2


def test_retry_after_is_honoured_over_the_backoff() -> None:
    slow_backoff = RetryPolicy(max_retries=2, base_delay=30.0)
    with ScriptedOpenAIServer(["ok"], fail_first=[429], retry_after="0.4") as server:
        lm = OpenAILM("m", base_url=server.base_url, api_key="k", retry=slow_backoff)
        start = time.monotonic()
        assert lm.complete(ASK).text == "ok"
        waited = time.monotonic() - start
    assert 0.4 <= waited < 5


def test_sdk_retries_are_off_so_the_count_is_ours() -> None:
    with ScriptedOpenAIServer(["ok"], fail_first=[500] * 10) as server:
        lm = lm_for(server)
        with pytest.raises(LMError, match="HTTP 500"):
            lm.complete(ASK)
        assert len(server.requests) == 4  # 1 + FAST.max_retries


def test_a_rate_limit_is_waited_out_past_max_retries() -> None:
    with ScriptedOpenAIServer(["ok"], fail_first=[429] * 6, retry_after="0.01") as server:
        assert lm_for(server).complete(ASK).text == "ok"
        assert len(server.requests) == 7


def test_a_spent_quota_fails_at_once_with_its_own_type() -> None:
    with ScriptedOpenAIServer(["never"], fail_first=[429] * 5, quota_exhausted=True) as server:
        with pytest.raises(QuotaExhausted, match="quota"):
            lm_for(server).complete(ASK)
        assert len(server.requests) == 1  # no retry: waiting brings no quota back


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    lm = OpenAILM("m", base_url=f"http://127.0.0.1:{port}/v1", api_key="k", retry=FAST)
    with pytest.raises(LMError, match="could not connect"):
        lm.complete(ASK)


def test_request_timeout_is_enforced() -> None:
    with ScriptedOpenAIServer(["late"] * 5, delay=2.0) as server:
        lm = OpenAILM(
            "m", base_url=server.base_url, api_key="k", timeout=0.3,
            retry=RetryPolicy(max_retries=1, base_delay=0.01),
        )  # fmt: skip
        start = time.monotonic()
        with pytest.raises(LMError, match=r"no reply within 0\.3s after 2 attempts"):
            lm.complete(ASK)
        assert time.monotonic() - start < 3.5  # without the timeout: 2 x 2 s


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        resolve("openai:gpt-5-mini")


def test_wrong_key_names_the_variable_and_is_not_retried() -> None:
    with ScriptedOpenAIServer(["never"], api_key="right") as server:
        lm = OpenAILM("m", base_url=server.base_url, api_key="wrong", retry=FAST)
        with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
            lm.complete(ASK)
        assert len(server.requests) == 1


def test_env_vars_configure_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    with ScriptedOpenAIServer(["from env"]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "env-key")
        lm = resolve("openai:qwen3-coder")
        assert lm.complete(ASK).text == "from env"
        assert server.headers[0]["authorization"] == "Bearer env-key"
        assert server.requests[0]["model"] == "qwen3-coder"


def test_self_hosted_server_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedOpenAIServer(["no key"]) as server:
        assert OpenAILM("llama", base_url=server.base_url).complete(ASK).text == "no key"


def test_reasoning_models_get_max_completion_tokens_and_no_temperature() -> None:
    with ScriptedOpenAIServer(["a", "b"]) as server:
        lm_for(server, "gpt-5-mini").complete(ASK, max_tokens=50, temperature=0.3)
        lm_for(server, "gpt-4o").complete(ASK, max_tokens=50, temperature=0.3, seed=1)
        reasoning, chat = server.requests
    assert reasoning["max_completion_tokens"] == 50
    assert "temperature" not in reasoning and "max_tokens" not in reasoning
    assert (chat["max_tokens"], chat["temperature"], chat["seed"]) == (50, 0.3, 1)


def test_async_calls_run_concurrently_on_fresh_loops() -> None:
    with ScriptedOpenAIServer(lambda messages: messages[-1]["content"].upper()) as server:
        lm = lm_for(server)

        async def fan_out() -> list[str]:
            prompts = [f"item {i}" for i in range(8)]
            done = await asyncio.gather(
                *(lm.acomplete([{"role": "user", "content": p}]) for p in prompts)
            )
            return [c.text for c in done]

        # Two asyncio.run calls: the client of a closed loop must not be reused.
        assert asyncio.run(fan_out()) == [f"ITEM {i}" for i in range(8)]
        assert asyncio.run(fan_out())[0] == "ITEM 0"


def test_async_path_retries_too() -> None:
    with ScriptedOpenAIServer(["ok"], fail_first=[500, 429]) as server:
        assert asyncio.run(lm_for(server).acomplete(ASK)).text == "ok"
        assert len(server.requests) == 3


def test_context_window_per_known_model() -> None:
    with ScriptedOpenAIServer([]) as server:
        assert lm_for(server, "gpt-4.1-2025-04-14").context_window == 1_047_576
        assert lm_for(server, "gpt-5-mini").context_window == 400_000
        assert lm_for(server, "my-local-model").context_window == DEFAULT_CONTEXT_WINDOW
        assert lm_for(server, "x", context_window=4096).context_window == 4096


@pytest.mark.llamacpp
def test_real_llamacpp_server_sync_and_async(llamacpp_server: str) -> None:
    lm = OpenAILM(SERVER_ALIAS, base_url=llamacpp_server, api_key="unused")
    messages = [{"role": "user", "content": "What is the capital of France? One word."}]
    completion = lm.complete(messages, max_tokens=16, temperature=0)
    assert completion.text.strip()
    assert completion.usage.prompt_tokens > 5 and completion.usage.completion_tokens > 0
    assert completion.usage.usd == 0.0  # not in the price table
    again = asyncio.run(lm.acomplete(messages, max_tokens=16, temperature=0))
    assert again.text.strip()


@pytest.mark.llamacpp
def test_real_llamacpp_server_prompt_too_long(llamacpp_server: str) -> None:
    lm = OpenAILM(SERVER_ALIAS, base_url=llamacpp_server, api_key="unused")
    huge = [{"role": "user", "content": "word " * 12_000}]
    with pytest.raises(ContextWindowError):
        lm.complete(huge, max_tokens=8)


def test_window_is_learned_from_a_llamacpp_server_and_bounds_the_reply() -> None:
    with ScriptedOpenAIServer(["short"], n_ctx=2048) as server:
        lm = lm_for(server, "my-local-model")
        assert lm.context_window == 2048
        lm.complete(ASK)
    assert server.requests[0]["max_tokens"] == 512  # a quarter of the window


def test_given_window_and_reply_limit_are_used_as_they_are() -> None:
    with ScriptedOpenAIServer(["a"], n_ctx=2048) as server:
        lm = lm_for(server, "my-local-model", context_window=8192, max_output_tokens=700)
        lm.complete(ASK)
    assert lm.context_window == 8192 and server.requests[0]["max_tokens"] == 700
    with ScriptedOpenAIServer(["b"]) as server:
        lm_for(server, "gpt-5-mini").complete(ASK)
    assert server.requests[0]["max_completion_tokens"] == 32_768


def test_a_hung_server_times_out_and_each_retry_is_announced() -> None:
    from fathom.lm.retry import RetryNotice, retry_listener

    heard: list[RetryNotice] = []
    with ScriptedOpenAIServer(["late"] * 3, delay=2.0) as server:
        lm = OpenAILM(
            "m", base_url=server.base_url, api_key="k", timeout=0.3,
            retry=RetryPolicy(max_retries=1, base_delay=0.01),
        )
        retry_listener.set(heard.append)
        started = time.monotonic()
        with pytest.raises(LMError, match=r"no reply within 0\.3s after 2 attempts"):
            lm.complete(ASK)
    assert time.monotonic() - started < 2.0
    assert [(n.attempt, n.attempts) for n in heard] == [(2, 2)]
    assert "Timeout" in heard[0].reason


def test_configure_sets_the_timeout_of_the_next_client() -> None:
    with ScriptedOpenAIServer(["late"] * 2, delay=1.0) as server:
        lm = OpenAILM("m", base_url=server.base_url, api_key="k", retry=RetryPolicy(0))
        lm.configure(request_timeout=0.2)
        with pytest.raises(LMError, match=r"no reply within 0\.2s"):
            lm.complete(ASK)


def test_content_null_is_retried_then_fails_naming_the_server() -> None:
    with ScriptedOpenAIServer(["a", "ok"], null_replies=1) as server:
        assert lm_for(server).complete(ASK).text == "ok"
    nothing = r"replied with no text \(content: null\) 4 times"
    with ScriptedOpenAIServer(["x"] * 4, null_replies=4) as server, pytest.raises(
        LMError, match=nothing
    ) as e:
        lm_for(server).complete(ASK)
    assert server.base_url in str(e.value) and len(server.requests) == 4


def test_malformed_json_names_the_server_and_the_cause() -> None:
    with ScriptedOpenAIServer(["x"], malformed=True) as server, pytest.raises(
        LMError, match="not valid JSON"
    ) as caught:
        lm_for(server).complete(ASK)
    assert server.base_url in str(caught.value)


def test_a_base_url_without_v1_is_named_as_the_likely_cause() -> None:
    with ScriptedOpenAIServer(["x"]) as server:
        bare = server.base_url.removesuffix("/v1")
        lm = OpenAILM("llama", base_url=bare, api_key="k", retry=FAST)
        with pytest.raises(LMError, match="probably lacks /v1") as caught:
            lm.complete(ASK)
    assert "does not know model" not in str(caught.value)
