"""The Sandbox protocol: where REPL code runs, and the Bridge it calls models through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from fathom.context import Context
    from fathom.repl_api import FunctionSpec


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
    """The parent's side of the REPL functions (see fathom.repl_api); thread-safe.

    A sandbox offers REPL code one function per spec, each forwarding its arguments
    to `call`. `call` returns the function's value (model failures come back as
    "Error: ..." text so REPL code keeps running) and raises BudgetExceeded when the
    run's budget refused the call, so a runaway loop stops.
    """

    def functions(self) -> list[FunctionSpec]:
        """The REPL functions to offer, in the order the prompt lists them."""
        ...

    def call(self, name: str, args: dict[str, Any]) -> Any:
        """Answer one call of REPL function `name` with its prepared arguments."""
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
