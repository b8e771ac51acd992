"""The Sandbox protocol: where REPL code runs, and the Bridge it calls models through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from fathom.context import Context


@dataclass(frozen=True)
class ExecResult:
    """What one code block did.

    `final` is set when the code called FINAL / FINAL_VAR successfully. `notice`
    is text for the model about something the sandbox did on its own (timeout,
    worker restart, which variables were restored and which were lost).
    """

    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    seconds: float = 0.0
    final: str | None = None
    notice: str | None = None


@runtime_checkable
class Bridge(Protocol):
    """The parent's side of the REPL functions. Implemented by the engine; thread-safe.

    Every method returns text even when the call failed (an "Error: ..." string),
    so REPL code keeps running.
    """

    def llm_query(self, prompt: str, model: str | None = None) -> str:
        """One sub-call to a model."""
        ...

    def llm_query_batched(self, prompts: list[str], model: str | None = None) -> list[str]:
        """Many sub-calls, run concurrently, answers in prompt order."""
        ...

    def rlm_query(self, prompt: str, context: Any = None) -> str:
        """A child RLM with its own sandbox (llm_query at the depth limit)."""
        ...

    def rlm_query_batched(
        self, prompts: list[str], contexts: list[Any] | None = None
    ) -> list[str]:
        """Many child RLMs, run concurrently, answers in prompt order."""
        ...


@runtime_checkable
class Sandbox(Protocol):
    """A persistent Python REPL holding `context`; one per RLM run."""

    name: str

    def start(self, context: Context, bridge: Bridge) -> None:
        """Load `context` and the REPL functions; must be called once before `execute`."""
        ...

    def execute(self, code: str, timeout: float | None = None) -> ExecResult:
        """Run `code` in the persistent namespace and report what it did."""
        ...

    def isolation(self) -> dict[str, str]:
        """Protection layers: name -> "active", "off" or "unavailable: why"."""
        ...

    def close(self) -> None:
        """Stop the worker and free its resources; safe to call twice."""
        ...


# A Bridge reply that starts with this means the run's budget refused the call; the REPL
# functions turn it into a BudgetExceeded in user code so a runaway loop stops.
BUDGET_STOP = "Error: budget exhausted"
