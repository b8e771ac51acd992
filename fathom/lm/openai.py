"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio, OpenRouter).

`openai:MODEL` uses the official SDK with `OPENAI_API_KEY` and, when set,
`OPENAI_BASE_URL`. Keys, clients, retries and errors are fathom.lm.sdk's.

Every request of a run tree carries the tree's `prompt_cache_key`, so OpenAI routes
them to the same prompt cache; a compatible server that refuses the field (HTTP 400
naming it) is not sent it again.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any

import httpx
import openai

from fathom.errors import LMError
from fathom.lm import pricing
from fathom.lm.base import Message, Usage, prompt_cache_key
from fathom.lm.retry import Verdict
from fathom.lm.sdk import EmptyReplyError, SDKModel

DEFAULT_CONTEXT_WINDOW = 128_000  # unknown models, e.g. whatever a local server runs
REASONING_MAX_OUTPUT = 32_768  # reasoning tokens count as output: leave room to think
PROBE_TIMEOUT = 2.0  # seconds per question about a server's window
OLLAMA_DEFAULT_CTX = 4096  # what Ollama serves when the model sets no num_ctx

CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-6": 1_050_000,
    "gpt-6.1": 1_050_000,
    "gpt-6.2": 1_050_000,
    "gpt-5.6": 1_050_000,
    "gpt-5.5": 1_050_000,
    "gpt-5.4": 1_050_000,
    "gpt-5.2": 400_000,
    "gpt-5.1": 400_000,
    "gpt-5": 400_000,
    "gpt-5-chat": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "gpt-oss-120b": 131_072,
    "gpt-oss-20b": 131_072,
}


def _is_reasoning_model(model: str) -> bool:
    # These reject `max_tokens` and any temperature but the default.
    name = model.lower().rsplit("/", 1)[-1]
    if "-chat" in name:
        return False
    return name.startswith(("gpt-5", "gpt-6", "o1", "o3", "o4"))


class OpenAILM(SDKModel):
    """A chat model behind the OpenAI chat completions API.

    Reasoning models (gpt-5, gpt-6, o-series) get `max_tokens` as `max_completion_tokens`
    and no temperature, which they reject.
    """

    provider = "openai"
    sdk = openai
    host = "api.openai.com"
    example = "gpt-5-mini"
    versioned_url = True
    sends_cache_key = True  # until a server refuses `prompt_cache_key`

    def _default_context_window(self) -> int:
        return pricing.lookup(CONTEXT_WINDOWS, self.model) or DEFAULT_CONTEXT_WINDOW

    def _default_max_output(self) -> int:
        if _is_reasoning_model(self.model):
            return min(REASONING_MAX_OUTPUT, self.context_window // 4)
        return super()._default_max_output()

    def _discover_window(self) -> int | None:
        if self.base_url is None or self.host in self.base_url:
            return None  # the official API: the table knows its models
        return server_window(self.base_url, self.model)

    def _is_context_error(self, message: str) -> bool:
        # Servers word it: "maximum context length", "context size", "context window".
        return "context" in message and any(w in message for w in ("length", "size", "window"))

    # -- requests ------------------------------------------------------------------
    def _request(self, messages: list[Message], options: dict[str, Any]) -> dict[str, Any]:
        options = dict(options)
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        max_tokens = options.pop("max_tokens", None)
        temperature = options.pop("temperature", None)
        if _is_reasoning_model(self.model):
            if max_tokens is not None:
                kwargs["max_completion_tokens"] = max_tokens
        else:
            if max_tokens is not None:
                kwargs["max_tokens"] = max_tokens
            if temperature is not None:
                kwargs["temperature"] = temperature
        for key in ("top_p", "seed", "stop", "reasoning_effort", "user"):
            if key in options:
                kwargs[key] = options.pop(key)
        cache_key = prompt_cache_key.get()
        if cache_key is not None and "prompt_cache_key" not in options:
            kwargs["prompt_cache_key"] = cache_key
        if options:  # anything else goes to the server as-is (vLLM, llama.cpp extras)
            kwargs["extra_body"] = options
        return kwargs

    def _send(self, client: Any, request: dict[str, Any]) -> Awaitable[Any]:
        if not self.sends_cache_key:
            request = {k: v for k, v in request.items() if k != "prompt_cache_key"}
        return client.chat.completions.create(**request)

    def _classify(self, exc: BaseException) -> Verdict:
        message = str(getattr(exc, "message", "")).lower()
        refused = getattr(exc, "status_code", None) == 400 and "prompt_cache_key" in message
        if refused and self.sends_cache_key:
            self.sends_cache_key = False  # a strict server: send the request without it
            return Verdict(True, 0.0)
        return super()._classify(exc)

    # -- responses -----------------------------------------------------------------
    def _read(self, messages: list[Message], response: Any) -> tuple[str, Usage]:
        if not getattr(response, "choices", None):
            raise LMError(f"{self.name} returned no choices; the server may not speak chat.")
        text = response.choices[0].message.content
        if text is None:
            raise EmptyReplyError(f"{self.name}: {self.where} replied with content: null")
        usage = getattr(response, "usage", None)
        if usage is None or usage.prompt_tokens is None:  # some compatible servers send none
            prompt = pricing.estimate_prompt_tokens(messages)
            return text, Usage(prompt, pricing.estimate_tokens(text))
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0)
        return text, Usage(int(usage.prompt_tokens), int(usage.completion_tokens or 0), cached)


def server_window(base_url: str, model: str) -> int | None:
    """The context window a self-hosted server runs `model` with, if it says; never raises.

    llama.cpp's server reports it at /props, vLLM as `max_model_len` in /v1/models, and
    Ollama as the model's `num_ctx` at /api/show.
    """
    root = re.sub(r"/v\d+/?$", "", base_url.rstrip("/"))
    probes = (_llamacpp_window, _vllm_window, _ollama_window)
    try:
        with httpx.Client(timeout=PROBE_TIMEOUT) as client:
            for probe in probes:
                try:
                    window = probe(client, root, base_url.rstrip("/"), model)
                except (httpx.HTTPError, ValueError, TypeError, KeyError, AttributeError):
                    continue
                if window:
                    return window
    except httpx.HTTPError:
        pass
    return None


def _llamacpp_window(client: httpx.Client, root: str, base: str, model: str) -> int | None:
    settings = client.get(f"{root}/props").raise_for_status().json()["default_generation_settings"]
    return int(settings["n_ctx"])


def _vllm_window(client: httpx.Client, root: str, base: str, model: str) -> int | None:
    for entry in client.get(f"{base}/models").raise_for_status().json()["data"]:
        if entry.get("id") == model and entry.get("max_model_len"):
            return int(entry["max_model_len"])
    return None


def _ollama_window(client: httpx.Client, root: str, base: str, model: str) -> int | None:
    shown = client.post(f"{root}/api/show", json={"model": model}).raise_for_status().json()
    for line in str(shown.get("parameters") or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "num_ctx":
            return int(value.strip())
    info = shown.get("model_info") or {}
    trained = [v for k, v in info.items() if k.endswith(".context_length")]
    return min([OLLAMA_DEFAULT_CTX, *map(int, trained)])


def from_spec(model: str) -> OpenAILM:
    """The LM for the spec `openai:MODEL`."""
    return OpenAILM(model)
