"""fathom: Recursive Language Models for inputs far larger than any context window."""

from __future__ import annotations

from fathom.budget import Budget
from fathom.context import Context
from fathom.errors import (
    BudgetExceeded,
    ConfigError,
    ContextChanged,
    ContextError,
    FathomError,
    LMError,
    SandboxError,
    SessionError,
)
from fathom.rlm import RLM, Result
from fathom.session import Session

__version__ = "0.1.0"

__all__ = [
    "RLM",
    "Budget",
    "BudgetExceeded",
    "ConfigError",
    "Context",
    "ContextChanged",
    "ContextError",
    "FathomError",
    "LMError",
    "Result",
    "SandboxError",
    "Session",
    "SessionError",
    "__version__",
]
