"""The one exception tree of fathom; every message says what to do next.

    FathomError
    ├── ConfigError          bad arguments or settings (unknown model spec, bad budget)
    ├── ContextError         the input cannot be read or loaded
    ├── LMError              a model call failed
    │   ├── AuthenticationError   missing or rejected API key
    │   ├── RateLimitError        throttled for longer than the run may wait
    │   │   └── QuotaExhausted        the account's quota or credit is gone for good
    │   ├── ContextWindowError    the prompt does not fit the model's window
    │   └── ProviderUnavailable   an optional dependency (SDK, weights) is missing
    ├── SandboxError         the sandbox could not start or talk to its worker
    │   └── IsolationError        strict isolation asked for a layer this host lacks
    ├── BudgetExceeded       raised inside the engine when a limit stops a new call
    ├── CallRefused          a REPL call over a sandbox limit (batch size, message size) or
    │                        a cite() span not in the context; also a ValueError, raised in
    │                        the REPL code, which can split or fix the call
    ├── TraceError           a trace file is malformed
    └── SessionError         a saved session cannot be used
        └── ContextChanged        the context differs from the one the session was saved with
"""

from __future__ import annotations


class FathomError(Exception):
    """Root of every error fathom raises on purpose."""


class ConfigError(FathomError):
    """An argument or setting is invalid."""


class ContextError(FathomError):
    """The input given as context cannot be read or loaded."""


class LMError(FathomError):
    """A model call failed."""


class AuthenticationError(LMError):
    """The API key is missing or was rejected."""


class RateLimitError(LMError):
    """The provider kept throttling for longer than the run may wait."""


class QuotaExhausted(RateLimitError):
    """The provider says the account's quota or credit is used up; waiting will not help,
    so the run ends (stop_reason "error") instead of retrying."""


class ContextWindowError(LMError):
    """The prompt does not fit in the model's context window."""


class ProviderUnavailable(LMError):
    """An optional dependency of a provider is not installed."""


class SandboxError(FathomError):
    """The sandbox could not start or lost its worker."""


class IsolationError(SandboxError):
    """Strict isolation needs a protection layer this host does not offer."""


class BudgetExceeded(FathomError):
    """A budget limit was reached; no new model call may start."""


class CallRefused(FathomError, ValueError):
    """A REPL call over one of the sandbox's limits (too many prompts, too large a message), or
    a cite() of a span not in the context; raised in the REPL code, which can split or fix the
    call and go on."""


class TraceError(FathomError):
    """A trace file could not be parsed."""


class SessionError(FathomError):
    """A saved session file cannot be read or used."""


class ContextChanged(SessionError):
    """The context given to Session.load is not the one the session was saved with."""
