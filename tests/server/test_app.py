"""The OpenAI-compatible app, driven through the official openai SDK over real HTTP."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import openai
import pytest

from fathom.budget import Budget
from fathom.server.config import ServerConfig
from tests.server.conftest import SLEEP, scripted, serving, wait_for, workers

SECRET = "Ledger, page 12: the code is 4217. Nothing else matters."


def client(base: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def test_a_completion_answers_from_the_context_field_over_the_real_sandbox() -> None:
    with serving(ServerConfig(model=scripted())) as base:
        reply = client(base).chat.completions.create(
            model="fathom", messages=[{"role": "user", "content": "What is the code?"}],
            extra_body={"context": {"ledger": SECRET}})
    assert reply.choices[0].message.content == "4217"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens > 0
    extra = reply.model_extra or {}
    assert extra["fathom"]["stop_reason"] == "final"
    assert extra["fathom"]["iterations"] == 2 and extra["fathom"]["trace_id"]
    assert workers() == []


def test_without_a_context_field_the_earlier_messages_are_the_context() -> None:
    with serving(ServerConfig(model=scripted())) as base:
        reply = client(base).chat.completions.create(model="fathom", messages=[
            {"role": "system", "content": SECRET},
            {"role": "user", "content": "What is the code?"}])
    assert reply.choices[0].message.content == "4217"


def test_a_stream_shows_progress_as_reasoning_then_the_answer() -> None:
    with serving(ServerConfig(model=scripted())) as base:
        stream = client(base).chat.completions.create(
            model="fathom", messages=[{"role": "user", "content": "What is the code?"}],
            extra_body={"context": SECRET}, stream=True)
        chunks = list(stream)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                        for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "iteration 1" in reasoning and "running:" in reasoning and "re.search" in reasoning
    assert "sub-calls so far: 0 done" in reasoning
    assert content == "4217"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert (chunks[-1].model_extra or {})["fathom"]["stop_reason"] == "final"


def test_a_cancelled_stream_cancels_its_run_and_its_worker_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the scratch dir goes
    with serving(ServerConfig(model=scripted(SLEEP))) as base:
        stream = client(base).chat.completions.create(
            model="fathom", messages=[{"role": "user", "content": "What is the code?"}],
            extra_body={"context": SECRET}, stream=True)
        for part in stream:
            if "running:" in ((part.choices[0].delta.model_extra or {})
                              .get("reasoning_content") or ""):
                break
        wait_for(lambda: workers())  # the worker is running time.sleep(60)
        stream.close()
        wait_for(lambda: not workers(), timeout=10)
        wait_for(lambda: not list(tmp_path.iterdir()), timeout=10)  # its scratch dir too
        metrics = httpx.get(f"{base}/metrics").text
    assert 'fathom_runs_total{outcome="cancelled"} 1.0' in metrics


def test_a_client_that_disconnects_cancels_its_run() -> None:
    with serving(ServerConfig(model=scripted(SLEEP))) as base:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/chat/completions", timeout=3, json={
                "messages": [{"role": "user", "content": "code?"}], "context": SECRET})
        wait_for(lambda: not workers(), timeout=10)
        wait_for(lambda: 'outcome="cancelled"} 1.0' in httpx.get(f"{base}/metrics").text)


def _error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return dict(error)


@pytest.mark.parametrize(("body", "param"), [
    (b"{not json", None),
    (b'{"model": "fathom"}', "messages"),
    (b'{"messages": []}', "messages"),
    (b'{"messages": [{"role": "system", "content": "hi"}]}', "messages"),
    (b'{"messages": [{"role": "user", "content": "q"}], "context": 5}', "context"),
    (b'{"messages": [{"role": "user", "content": "q"}]}', "context"),
    (b'{"messages": [{"role": "user", "content": "q"}], "context": "x", "budget": {"usd": -1}}',
     "budget.usd"),
])
def test_bad_bodies_get_400_in_the_openai_format(body: bytes, param: str | None) -> None:
    lm = scripted()
    with serving(ServerConfig(model=lm)) as base:
        response = httpx.post(f"{base}/v1/chat/completions", content=body)
    error = _error(response, 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert lm.calls == []


def test_a_100_mb_body_gets_413_whether_declared_or_streamed() -> None:
    big = b"x" * (100 * 2**20)
    with serving(ServerConfig(model=scripted())) as base:
        declared = httpx.post(f"{base}/v1/chat/completions", content=big)
        streamed = httpx.post(f"{base}/v1/chat/completions",
                              content=(big[i:i + 2**20] for i in range(0, len(big), 2**20)))
    assert _error(declared, 413)["code"] == "request_too_large"
    assert _error(streamed, 413)["code"] == "request_too_large"


def test_the_api_key_is_required_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(ServerConfig(model=scripted(), api_key="s3cret")) as base:
        body = {"messages": [{"role": "user", "content": "code?"}], "context": SECRET}
        missing = httpx.post(f"{base}/v1/chat/completions", json=body)
        wrong = httpx.post(f"{base}/v1/chat/completions", json=body,
                           headers={"Authorization": "Bearer nope"})
        with pytest.raises(openai.AuthenticationError):
            client(base, "nope").models.list()
        right = client(base, "s3cret").chat.completions.create(
            model="fathom", messages=body["messages"], extra_body={"context": SECRET})
    assert _error(missing, 401)["code"] == "invalid_api_key"
    assert _error(wrong, 401)["code"] == "invalid_api_key"
    assert right.choices[0].message.content == "4217"


def test_beyond_max_runs_and_the_queue_requests_get_429_with_retry_after() -> None:
    import threading

    config = ServerConfig(model=scripted(latency=1.0), max_runs=1, max_queue=0,
                          rlm_options={"sandbox": "inprocess"})
    with serving(config) as base:
        body = {"messages": [{"role": "user", "content": "code?"}], "context": SECRET}
        first = threading.Thread(target=httpx.post, args=(f"{base}/v1/chat/completions",),
                                 kwargs={"json": body, "timeout": 30})
        first.start()
        wait_for(lambda: "fathom_runs_in_progress 1.0" in httpx.get(f"{base}/metrics").text)
        refused = httpx.post(f"{base}/v1/chat/completions", json=body)
        first.join()
    assert _error(refused, 429)["code"] == "too_many_runs"
    assert int(refused.headers["retry-after"]) >= 1


def test_models_health_metrics_and_unknown_routes() -> None:
    with serving(ServerConfig(model=scripted())) as base:
        models = client(base).models.list()
        health = httpx.get(f"{base}/health").json()
        client(base).chat.completions.create(model="fathom", messages=[
            {"role": "user", "content": "code?"}], extra_body={"context": SECRET})
        metrics = httpx.get(f"{base}/metrics").text
        missing = httpx.get(f"{base}/v2/nothing")
    assert [m.id for m in models.data] == ["fathom"]
    assert health["status"] == "ok"
    for name in ('fathom_runs_total{outcome="final"} 1.0', "fathom_runs_in_progress 0.0",
                 "fathom_queue_length 0.0", "fathom_iterations_total 2.0",
                 "fathom_run_seconds_count 1.0", 'fathom_tokens_total{kind="prompt"}',
                 "fathom_usd_total", "fathom_sub_calls_total"):
        assert name in metrics
    assert _error(missing, 404)["type"] == "not_found_error"


def test_context_paths_read_only_under_allow_dir(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "ledger.txt").write_text(SECRET)
    (outside / "secret.txt").write_text("the code is 9999")
    (allowed / "link.txt").symlink_to(outside / "secret.txt")
    (allowed / "linkdir").symlink_to(outside)
    (allowed / "sub").mkdir()
    (allowed / "sub" / "notes.txt").write_text("no number here")
    (allowed / "sub" / "leak.txt").symlink_to(outside / "secret.txt")
    lm = scripted()
    config = ServerConfig(model=lm, allow_dirs=(allowed,))

    def ask(paths: object) -> httpx.Response:
        return httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "code?"}], "context_paths": paths})

    with serving(config) as base:
        ok = ask(["ledger.txt"])
        folder = ask(["sub"])  # its symlink to outside is skipped, not followed
        globbed = ask([str(allowed / "*.txt")])  # the symlink matches too: refused
        refused = [ask([p]) for p in (str(outside / "secret.txt"), "../outside/secret.txt",
                                      "link.txt", "linkdir/secret.txt", "linkdir",
                                      str(outside / "*.txt"), str(allowed / "../outside"))]
    assert ok.json()["choices"][0]["message"]["content"] == "4217"
    assert folder.json()["choices"][0]["message"]["content"] == "none"
    assert _error(globbed, 403)["code"] == "path_not_allowed"
    for response in refused:
        assert _error(response, 403)["type"] == "permission_error"
    assert len(lm.calls) == 4  # only the two allowed requests reached the model


def test_without_allow_dir_no_path_can_be_read(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(SECRET)
    with serving(ServerConfig(model=scripted())) as base:
        response = httpx.post(f"{base}/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "code?"}],
            "context_paths": [str(tmp_path / "a.txt")]})
    assert "--allow-dir" in str(_error(response, 403)["message"])


def test_a_request_budget_only_lowers_the_operators() -> None:
    from fathom.server.requests import parse_body, run_budget

    operator = Budget(usd=1.0, tokens=1000)
    raised = parse_body(b'{"messages": [{"role": "user", "content": "q"}], "context": "x", '
                        b'"budget": {"usd": 5, "tokens": 99999, "seconds": 30}}')
    assert run_budget(operator, raised) == Budget(usd=1.0, tokens=1000, seconds=30)
    lowered = parse_body(b'{"messages": [{"role": "user", "content": "q"}], "context": "x", '
                         b'"max_tokens": 200, "budget": {"usd": 0.25}}')
    assert run_budget(operator, lowered) == Budget(usd=0.25, tokens=200)


def test_a_failed_run_is_a_502_and_a_stream_ends_with_an_error_chunk() -> None:
    from fathom.errors import LMError
    from fathom.lm import ScriptedLM

    def down(messages: object) -> str:
        raise LMError("the provider is down")

    with serving(ServerConfig(model=ScriptedLM(down))) as base:
        body = {"messages": [{"role": "user", "content": "code?"}], "context": SECRET}
        plain = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
        with pytest.raises(openai.APIError, match="the provider is down"):
            list(client(base).chat.completions.create(
                model="fathom", messages=body["messages"],  # type: ignore[arg-type]
                extra_body={"context": SECRET}, stream=True))
    error = _error(plain, 502)
    assert error["code"] == "model_error" and "the provider is down" in str(error["message"])


def test_max_tokens_lowers_the_token_budget_and_the_stop_is_length() -> None:
    with serving(ServerConfig(model=scripted())) as base:
        reply = client(base).chat.completions.create(
            model="fathom", messages=[{"role": "user", "content": "What is the code?"}],
            max_tokens=1, extra_body={"context": SECRET})
    assert reply.choices[0].finish_reason == "length"
    fathom_info = (reply.model_extra or {})["fathom"]
    assert fathom_info["stop_reason"] == "budget" and fathom_info["budget_limit"] == "tokens"


def test_a_stream_counts_sub_calls() -> None:
    from fathom.lm import ScriptedLM

    batch = "```repl\nanswer = str(len(llm_query_batched(['a', 'b', 'c'])))\n```"

    def respond(messages: list[dict[str, str]]) -> str:
        if len(messages) == 1:  # a sub-call: the prompt alone
            return "sub answer"
        return "FINAL_VAR(answer)" if any(m["role"] == "assistant" for m in messages) else batch

    with serving(ServerConfig(model=ScriptedLM(respond))) as base:
        chunks = list(client(base).chat.completions.create(
            model="fathom", messages=[{"role": "user", "content": "How many?"}],
            extra_body={"context": SECRET}, stream=True))
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                        for c in chunks)
    assert "sub-calls: 1 done" in reasoning  # the first, at once; then once a second
    assert "sub-calls so far: 3 done" in reasoning
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "3"
