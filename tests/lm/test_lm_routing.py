"""Spec strings and the default model."""

from __future__ import annotations

import pytest

from fathom.errors import ConfigError
from fathom.lm import default_model, resolve
from fathom.lm.openai import OpenAILM


def test_default_model_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FATHOM_MODEL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert default_model() == "local"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert default_model() == "openai:gpt-5-mini"
    monkeypatch.setenv("FATHOM_MODEL", "anthropic:claude-sonnet-5-5")
    assert default_model() == "anthropic:claude-sonnet-5-5"


def test_specs_resolve_to_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    lm = resolve("openai:gpt-6-luna")
    assert isinstance(lm, OpenAILM)
    assert (lm.name, lm.context_window) == ("openai:gpt-6-luna", 1_050_000)


def test_bad_specs_say_what_to_write() -> None:
    with pytest.raises(ConfigError, match="'openai:MODEL'"):
        resolve("gemini:pro")
    with pytest.raises(ConfigError, match="openai:gpt-5-mini"):
        resolve("openai:")
    with pytest.raises(ConfigError, match="No model file"):
        resolve("local:/nonexistent/model.gguf")
