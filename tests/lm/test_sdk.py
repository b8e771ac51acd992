"""What the SDK providers share: one translation of SDK errors, one client per event loop."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fathom.errors import AuthenticationError, ConfigError, ContextWindowError, LMError
from fathom.lm.anthropic import AnthropicLM
from fathom.lm.openai import OpenAILM
from fathom.lm.sdk import SDKModel, translate


def status_error(lm: SDKModel, cls: str, status: int, message: str) -> Exception:
    request = httpx.Request("POST", "http://127.0.0.1/v1/x")
    error: Exception = getattr(lm.sdk, cls)(
        message, response=httpx.Response(status, request=request), body=None
    )
    return error


@pytest.fixture(params=[OpenAILM, AnthropicLM], ids=["openai", "anthropic"])
def lm(request: pytest.FixtureRequest) -> SDKModel:
    model: SDKModel = request.param("m", base_url="http://srv/v1", api_key="k")
    return model


def test_each_sdk_error_becomes_the_fathom_error_that_says_what_to_do(lm: SDKModel) -> None:
    auth = translate(status_error(lm, "AuthenticationError", 401, "bad key"), lm)
    assert isinstance(auth, AuthenticationError) and f"Set {lm.key_var}" in str(auth)
    too_long = "Prompt is too long for the context window"  # worded so both providers see it
    window = translate(status_error(lm, "BadRequestError", 400, too_long), lm)
    assert isinstance(window, ContextWindowError)
    missing = translate(status_error(lm, "NotFoundError", 404, "no such model"), lm)
    assert isinstance(missing, LMError) and "http://srv/v1 does not know model 'm'" in str(missing)
    other = translate(status_error(lm, "BadRequestError", 400, "bad field"), lm)
    assert type(other) is LMError and "HTTP 400 from http://srv/v1: bad field" in str(other)


def test_one_async_client_per_event_loop(lm: SDKModel) -> None:
    async def two_clients() -> tuple[object, object]:
        return lm._client(), lm._client()

    first, again = asyncio.run(two_clients())
    assert first is again
    other, _ = asyncio.run(two_clients())
    assert other is not first


def test_missing_model_name_shows_an_example() -> None:
    with pytest.raises(ConfigError, match="'anthropic:claude-"):
        AnthropicLM("", api_key="k")
