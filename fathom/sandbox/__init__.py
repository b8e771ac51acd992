"""Sandboxes behind one `Sandbox` protocol, resolved by name.

"subprocess" (default) runs REPL code in an isolated worker process;
"inprocess" runs it in this process (fastest, no isolation). A new sandbox is
one module plus one `register_sandbox` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from fathom.errors import ConfigError
from fathom.registry import Registry
from fathom.sandbox.base import Bridge, ExecResult, Sandbox
from fathom.sandbox.channel import MAX_MESSAGE_BYTES

IsolationLevel = Literal["strict", "standard", "off"]
# The levels in the order help texts list them; derived so the Literal stays the one list.
ISOLATION_LEVELS: tuple[IsolationLevel, ...] = get_args(IsolationLevel)


@dataclass(frozen=True)
class SandboxOptions:
    """Limits a sandbox enforces on the code it runs."""

    exec_timeout: float = 120.0
    memory_mb: int | None = 4096
    output_limit: int = 1_000_000  # characters of stdout/stderr kept per execution
    isolation: IsolationLevel = "standard"
    # One message between the parent and the worker (a call with its prompts, a reply); a
    # bigger call is refused in the REPL code, which splits it.
    max_message_mb: int = MAX_MESSAGE_BYTES // 2**20
    max_batch: int = 10_000  # prompts in one llm_query_batched / rlm_query_batched call

    @property
    def max_message_bytes(self) -> int:
        """`max_message_mb` in bytes."""
        return self.max_message_mb * 2**20


SandboxFactory = Callable[[SandboxOptions], Sandbox]

_SANDBOXES = Registry[SandboxFactory](
    {
        "subprocess": "fathom.sandbox.subprocess:SubprocessSandbox",
        "inprocess": "fathom.sandbox.inprocess:InProcessSandbox",
    }
)


def register_sandbox(name: str, factory: SandboxFactory) -> None:
    """Make `sandbox=name` build sandboxes with `factory(options)`."""
    _SANDBOXES.register(name, factory)


def sandbox_names() -> list[str]:
    """Every registered sandbox name."""
    return _SANDBOXES.names()


def create(spec: str | SandboxFactory, options: SandboxOptions) -> Sandbox:
    """Build a fresh sandbox from a name or a factory (each run gets its own)."""
    if callable(spec):
        return spec(options)
    try:
        factory = _SANDBOXES.get(spec)
    except KeyError:
        raise ConfigError(
            f"Unknown sandbox {spec!r}: use one of {', '.join(sandbox_names())}, "
            "or pass a callable that returns a Sandbox."
        ) from None
    return factory(options)


__all__ = [
    "ISOLATION_LEVELS",
    "Bridge",
    "ExecResult",
    "IsolationLevel",
    "Sandbox",
    "SandboxOptions",
    "create",
    "register_sandbox",
    "sandbox_names",
]
