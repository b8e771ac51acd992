"""fathom: Recursive Language Models for inputs far larger than any context window."""

from __future__ import annotations

from fathom.budget import Budget
from fathom.context import Context
from fathom.errors import (
    BudgetExceeded,
    ConfigError,
    ContextError,
    FathomError,
    LMError,
    SandboxError,
)
from fathom.rlm import RLM, Result

__version__ = "0.1.0"

__all__ = [
    "RLM",
    "Budget",
    "BudgetExceeded",
    "ConfigError",
    "Context",
    "ContextError",
    "FathomError",
    "LMError",
    "Result",
    "SandboxError",
    "__version__",
]
