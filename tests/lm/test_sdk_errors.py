"""One translation of openai / anthropic SDK errors into fathom errors."""

from __future__ import annotations

from types import ModuleType

import anthropic
import httpx
import openai
import pytest

from fathom.errors import AuthenticationError, ContextWindowError, LMError
from fathom.lm import sdk_errors


def status_error(sdk: ModuleType, cls: str, status: int, message: str) -> Exception:
    request = httpx.Request("POST", "http://127.0.0.1/v1/x")
    error: Exception = getattr(sdk, cls)(
        message, response=httpx.Response(status, request=request), body=None
    )
    return error


def translate(sdk: ModuleType, exc: Exception) -> Exception:
    return sdk_errors.translate(
        exc, sdk, name="p:m", model="m", where="srv", attempts=3, timeout=5.0,
        key_var="THE_KEY", base_var="THE_BASE_URL", is_context_error=lambda m: "too long" in m,
    )


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
def test_each_sdk_error_becomes_the_fathom_error_that_says_what_to_do(sdk: ModuleType) -> None:
    auth = translate(sdk, status_error(sdk, "AuthenticationError", 401, "bad key"))
    assert isinstance(auth, AuthenticationError) and "Set THE_KEY" in str(auth)
    window = translate(sdk, status_error(sdk, "BadRequestError", 400, "Prompt is too long"))
    assert isinstance(window, ContextWindowError)
    missing = translate(sdk, status_error(sdk, "NotFoundError", 404, "no such model"))
    assert isinstance(missing, LMError) and "does not know model 'm'" in str(missing)
    other = translate(sdk, status_error(sdk, "BadRequestError", 400, "bad field"))
    assert type(other) is LMError and "HTTP 400 from srv: bad field" in str(other)
