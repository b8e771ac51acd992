"""The in-process sandbox: REPL code runs in this process. Fastest; no isolation at all.

Use it for trusted code, tests and debugging. The Bridge is called directly. The
timeout is best effort: a block still running at its deadline gets an exception
raised into its thread, which takes effect at the next Python bytecode; a block
stuck inside C code (or waiting for a model call) cannot be stopped and keeps
running in the background.
"""

from __future__ import annotations

import ctypes
import threading
import time

from fathom.context import Context
from fathom.errors import SandboxError
from fathom.sandbox import SandboxOptions, state
from fathom.sandbox.base import Bridge, ExecResult
from fathom.sandbox.repl import ExecInterrupted, Outcome, Repl

# How long a timed-out block gets to unwind after the interrupt before we give up on it.
_UNWIND_SECONDS = 1.0


class InProcessSandbox:
    """A persistent REPL namespace in this process (no isolation, best-effort timeout)."""

    name = "inprocess"

    def __init__(self, options: SandboxOptions | None = None):
        self.options = options or SandboxOptions()
        self._repl: Repl | None = None
        self._stuck: threading.Thread | None = None
        self._running: threading.Thread | None = None  # the last block's thread

    def start(self, context: Context, bridge: Bridge) -> None:
        """Load the context value and bind the REPL functions to `bridge`."""
        self._repl = Repl(context.load(), bridge, output_limit=self.options.output_limit)

    def execute(self, code: str, timeout: float | None = None) -> ExecResult:
        """Run `code` in a thread of its own so a timeout can interrupt it."""
        repl = self._require()
        limit = self.options.exec_timeout if timeout is None else timeout
        if self._stuck is not None and self._stuck.is_alive():
            return ExecResult(
                error="SandboxError: an earlier block is still running and holds the REPL",
                notice="An earlier block that timed out is still running; this block did not run.",
            )
        box: list[Outcome] = []
        started = time.perf_counter()
        thread = threading.Thread(
            target=lambda: box.append(repl.execute(code)), name="fathom-inprocess", daemon=True
        )
        self._running = thread
        thread.start()
        thread.join(limit)
        if thread.is_alive():
            repl.timeout_message = f"TimeoutError: the block ran longer than {limit:g} s"
            _raise_in(thread, ExecInterrupted)
            thread.join(_UNWIND_SECONDS)
        seconds = time.perf_counter() - started
        if not box:
            self._stuck = thread
            return ExecResult(
                error=f"TimeoutError: the block ran longer than {limit:g} s",
                seconds=seconds,
                notice=(
                    f"The block exceeded the {limit:g} s timeout and could not be interrupted "
                    "(it is blocked in C code or a model call); it keeps running in the "
                    "background of the in-process sandbox. Use sandbox='subprocess' to "
                    "have runaway code killed."
                ),
            )
        outcome = box[0]
        notice = None
        if outcome.interrupted and repl.timeout_message:
            notice = (
                f"The block exceeded the {limit:g} s timeout and was stopped; variables are kept."
            )
        return ExecResult(
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            error=outcome.error,
            seconds=seconds,
            final=outcome.final,
            notice=notice,
        )

    def variables(self) -> dict[str, str]:
        """The REPL's user variables: name -> type and size, as SHOW_VARS prints them."""
        return self._require().variables()

    def take_variables(self, skip: frozenset[str] = frozenset()) -> state.Variables:
        """The REPL's variables, pickled (see fathom.sandbox.state.take)."""
        return state.take(self._require(), skip)

    def put_variables(self, variables: state.Variables) -> tuple[list[str], dict[str, str]]:
        """Rebuild saved variables: the names restored, those lost and why."""
        return state.put(self._require(), variables)

    def interrupt(self) -> None:
        """Stop the running block, as its timeout would (best effort, as for a timeout)."""
        thread, repl = self._running, self._repl
        if thread is not None and thread.is_alive() and repl is not None:
            repl.timeout_message = "KeyboardInterrupt: the block was cancelled"
            _raise_in(thread, ExecInterrupted)

    def isolation(self) -> dict[str, str]:
        """No protection layer: the code runs with this process's rights."""
        return {"process": "off"}

    def close(self) -> None:
        """Drop the namespace (and the context it holds); safe to call twice."""
        self._repl = None

    def _require(self) -> Repl:
        if self._repl is None:
            raise SandboxError("The sandbox is not started (or was closed): call start() first.")
        return self._repl


def _raise_in(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Raise `exc_type` in `thread` at its next bytecode (CPython's async exception API)."""
    if thread.ident is None:
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type)
    )
