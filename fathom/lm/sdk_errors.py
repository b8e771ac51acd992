"""Turning an openai or anthropic SDK error into a fathom.errors one that says what to do.

Both SDKs are generated from one template and share their exception classes by name
(AuthenticationError, RateLimitError, APIStatusError, ...), so one translation serves both;
a provider passes its SDK module, the variables a user sets, and how its API words a
prompt that does not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from fathom.errors import AuthenticationError, ContextWindowError, LMError, RateLimitError


def translate(
    exc: Exception,
    sdk: ModuleType,
    *,
    name: str,
    model: str,
    where: str,
    attempts: int,
    timeout: float,
    key_var: str,
    base_var: str,
    is_context_error: Callable[[str], bool],
) -> Exception:
    """The fathom error for `exc`, raised by `sdk` after `attempts` tries against `where`."""
    if isinstance(exc, sdk.AuthenticationError):
        return AuthenticationError(
            f"{name}: {where} rejected the API key (HTTP 401). "
            f"Set {key_var} to a valid key (or pass api_key=)."
        )
    if isinstance(exc, sdk.PermissionDeniedError):
        return AuthenticationError(
            f"{name}: the key in {key_var} may not use this model (HTTP 403): {exc.message}"
        )
    if isinstance(exc, sdk.RateLimitError):
        return RateLimitError(
            f"{name}: still rate-limited after {attempts} attempts; lower "
            "max_concurrency, wait, or raise your account's limits."
        )
    if isinstance(exc, sdk.APITimeoutError):
        return LMError(
            f"{name}: no reply within {timeout:g}s after {attempts} attempts; "
            "the server is overloaded or the timeout is too short."
        )
    if isinstance(exc, sdk.APIConnectionError):
        return LMError(
            f"{name}: could not connect to {where} after {attempts} attempts; "
            f"check {base_var} and that the server is reachable."
        )
    if isinstance(exc, sdk.APIStatusError):
        message = str(exc.message)
        if exc.status_code == 400 and is_context_error(message.lower()):
            return ContextWindowError(
                f"{name}: the prompt does not fit the model's context window "
                f"({message}); shorten it or use a model with a larger window."
            )
        if exc.status_code == 404:
            return LMError(
                f"{name}: {where} does not know model {model!r} (HTTP 404); "
                "check the model name."
            )
        return LMError(f"{name}: HTTP {exc.status_code} from {where}: {message}")
    return LMError(f"{name}: {exc}")
