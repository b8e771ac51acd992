"""The default sandbox: REPL code runs in a worker process that may crash, hang or be hostile.

The parent enforces every limit: a per-block timeout (SIGINT first, SIGKILL when
the block does not stop), the memory limit (RLIMIT_AS via the isolation plan), the
output cap, and validation of every channel message. When the worker dies it is
restarted, reloads the context and restores the variables its last snapshot
held; the ExecResult says what happened and what was lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fathom.context import Context
from fathom.errors import IsolationError, SandboxError
from fathom.sandbox import SandboxOptions
from fathom.sandbox import isolation as isolation_module
from fathom.sandbox.base import Bridge, ExecResult
from fathom.sandbox.channel import (
    CALLS,
    BadMessage,
    Channel,
    ChannelClosed,
    call_bridge,
    capped_text,
    names_from,
)
from fathom.sandbox.output import CappedText
from fathom.sandbox.process import (
    BOOT,
    CRASH_TAIL,
    WorkerProcess,
    close_quietly,
    describe_exit,
    split_fatal,
)
from fathom.sandbox.worker import SNAPSHOT_NAME


class _Dead(Exception):
    """The worker stopped answering (exited, or was killed by us)."""


def _cleanup(state: dict[str, Any]) -> None:
    """Stop the worker and delete the scratch dir (close(), garbage collection, exit)."""
    process: WorkerProcess | None = state.pop("process", None)
    if process is not None:
        process.stop()
        # Kills what REPL code left behind under the sandbox's own uid (setsid'd children).
        state.get("isolation_cleanup", _nothing)()
    pool: ThreadPoolExecutor | None = state.pop("pool", None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
    scratch = state.pop("scratch", None)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    # Frees the sandbox's scratch tmpfs (disk quota), which lives in RAM.
    state.pop("isolation_close", _nothing)()


_MAX_NOTES = 5

def _nothing() -> None:
    pass


class SubprocessSandbox:
    """A persistent REPL in an isolated worker process, restarted when it dies."""

    name = "subprocess"

    def __init__(
        self,
        options: SandboxOptions | None = None,
        *,
        interrupt_grace: float = 2.0,
        start_timeout: float = 60.0,
    ):
        self.options = options or SandboxOptions()
        self.interrupt_grace = interrupt_grace
        self.start_timeout = start_timeout
        self._state: dict[str, Any] = {}
        # Runs at close(), when the sandbox is collected, or at interpreter exit.
        self._finalizer = weakref.finalize(self, _cleanup, self._state)
        self._bridge: Bridge | None = None
        self._context: Context | None = None
        self._layers: dict[str, str] = {}  # what the first worker reported as really in force
        self._init: dict[str, Any] = {}
        self._plan: isolation_module.IsolationPlan | None = None
        self._lock = threading.Lock()
        self._ids = 0
        self._notes: list[str] = []

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, context: Context, bridge: Bridge) -> None:
        """Create the scratch dir, plan the isolation, start the worker and load the context."""
        if not self._finalizer.alive:
            raise SandboxError("This sandbox was closed; create a new one for a new run.")
        if "scratch" in self._state:
            raise SandboxError("This sandbox is already started; create one sandbox per run.")
        scratch = Path(tempfile.mkdtemp(prefix="fathom-sandbox-"))
        self._state["scratch"] = scratch
        self._state["pool"] = ThreadPoolExecutor(max_workers=64, thread_name_prefix="fathom-call")
        self._bridge = bridge
        self._context = context
        spec = _context_spec(context, scratch)
        self._plan = isolation_module.prepare(
            self.options.isolation,
            scratch=scratch,
            readable=_readable_paths(spec),
            memory_mb=_memory_for(self.options.memory_mb, spec),
        )
        self._state["isolation_cleanup"] = self._plan.cleanup
        self._state["isolation_close"] = self._plan.close
        self._init = {
            "op": "init",
            "scratch": str(scratch),
            "output_limit": self.options.output_limit,
            "isolation": self._plan.worker_spec,
        }
        ready = self._spawn(restore=False)
        layers = ready.get("layers")
        if isinstance(layers, dict):
            self._layers = {str(k)[:100]: str(v)[:300] for k, v in list(layers.items())[:50]}

    def _spawn(self, *, restore: bool) -> dict[str, Any]:
        """Start a worker and wait for its `ready`; SandboxError if it cannot start."""
        assert self._plan is not None
        plan = self._plan
        to_worker_r, to_worker_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        raw_r, raw_w = os.pipe()
        # -P: the cwd (scratch, writable by REPL code) must not shadow modules the next
        # worker imports before its isolation is in force.
        argv = [*plan.argv_prefix, sys.executable, "-P", "-c", BOOT,
                str(to_worker_r), str(to_parent_w)]
        try:
            popen = subprocess.Popen(
                argv, env=plan.env, preexec_fn=plan.preexec, cwd=self._state["scratch"],
                stdin=subprocess.DEVNULL, stdout=raw_w, stderr=raw_w,
                pass_fds=(to_worker_r, to_parent_w), start_new_session=True,
            )
        except OSError as exc:
            for fd in (to_worker_w, to_parent_r, raw_r):  # the child's ends: in `finally`
                close_quietly(fd)
            raise SandboxError(
                f"Cannot start the sandbox worker ({exc}); check that {argv[0]} runs."
            ) from exc
        finally:
            for fd in (to_worker_r, to_parent_w, raw_w):
                close_quietly(fd)
        process = WorkerProcess(
            popen, Channel(to_parent_r, to_worker_w), raw_r, CappedText(self.options.output_limit)
        )
        process.reader = threading.Thread(target=process.drain, name="fathom-raw", daemon=True)
        process.reader.start()
        self._state["process"] = process
        try:
            # Asked again at each start: REPL code may have deleted a spilled context file.
            spec = _context_spec(self._context, self._state["scratch"])
            process.channel.send({**self._init, "context": spec, "restore": restore})
            ready = self._wait_for(process, "ready", None, time.monotonic() + self.start_timeout)
        except (_Dead, ChannelClosed):
            ready = None
        if ready is None or ready.get("op") != "ready":
            self._state.pop("process", None)
            code = process.stop()  # also collects the last raw output (a traceback, say)
            self._plan.cleanup()
            detail = (ready or {}).get("error") or "".join(process.tail)[-CRASH_TAIL:]
            if (ready or {}).get("kind") == "IsolationError":
                raise IsolationError(str(detail))
            raise SandboxError(
                f"The sandbox worker did not start (exit code {code}): {str(detail).strip()}\n"
                "Try sandbox='inprocess' to run without a worker, or check the isolation "
                "layers with `fathom doctor`."
            )
        return ready

    def close(self) -> None:
        """Kill the worker and remove the scratch directory; safe to call twice."""
        self._finalizer()

    # --- running code ------------------------------------------------------------------
    def execute(self, code: str, timeout: float | None = None) -> ExecResult:
        """Run `code` in the worker; a crash or hang ends in a restart, never an exception."""
        with self._lock:
            limit = self.options.exec_timeout if timeout is None else timeout
            process = self._require()
            self._notes = []
            if process.popen.poll() is None:
                return self._run(process, code, limit)
            # Died between blocks (say, a thread the last block started): restart, then run.
            before = self._recover(process, time.monotonic(), limit, timed_out=False, idle=True)
            self._notes = []
            result = self._run(self._require(), code, limit)
            return dataclasses.replace(
                result,
                stdout=before.stdout + result.stdout,
                notice=" ".join(n for n in (before.notice, result.notice) if n),
                restarted=True,
                lost_variables=before.lost_variables + result.lost_variables,
            )

    def _run(self, process: WorkerProcess, code: str, limit: float) -> ExecResult:
        """Send one block and serve its calls until it is done, interrupted or killed."""
        self._ids += 1
        exec_id = self._ids
        started = time.monotonic()
        interrupted_at: float | None = None
        try:
            process.channel.send({"op": "exec", "id": exec_id, "code": code, "timeout": limit})
            while True:
                if interrupted_at is None:
                    deadline = started + limit
                else:
                    deadline = interrupted_at + self.interrupt_grace
                done = self._wait_for(process, "done", exec_id, deadline)
                if done is not None:
                    return self._result(process, done, time.monotonic() - started, limit)
                if interrupted_at is not None:
                    return self._recover(process, started, limit, timed_out=True)
                os.kill(process.popen.pid, signal.SIGINT)
                interrupted_at = time.monotonic()
        except (_Dead, ChannelClosed):
            return self._recover(process, started, limit, timed_out=False)

    def _wait_for(
        self, process: WorkerProcess, op: str, msg_id: int | None, deadline: float
    ) -> dict[str, Any] | None:
        """Serve the worker's calls until message `op` (with `msg_id`) arrives or the deadline."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                message = process.channel.recv(remaining)
            except BadMessage as exc:
                self._note(f"ignored a malformed message from the worker: {exc}")
                continue
            except ChannelClosed as exc:
                raise _Dead(str(exc)) from exc
            if message is None:
                return None
            kind = message.get("op")
            if kind == "call":
                self._serve(process, message)
            elif kind == op and (msg_id is None or message.get("id") == msg_id):
                return message
            elif kind == "failed" and op == "ready":  # the worker could not load the context
                return dict(message)
            else:
                self._note(f"ignored an unexpected message from the worker ({str(kind)[:40]!r})")

    def _note(self, text: str) -> None:
        """Remember something for the block's notice; a flood of them is only counted."""
        if len(self._notes) < _MAX_NOTES:
            self._notes.append(text)
        elif len(self._notes) == _MAX_NOTES:
            self._notes.append("(further messages like these were ignored too)")

    def _serve(self, process: WorkerProcess, message: dict[str, Any]) -> None:
        """Answer one model-call request in a pool thread, so calls run concurrently."""
        call_id, fn, args = message.get("id"), message.get("fn"), message.get("args")
        if not isinstance(call_id, int) or fn not in CALLS or not isinstance(args, dict):
            self._note(f"ignored a malformed call request from the worker ({str(fn)[:40]!r})")
            return
        self._state["pool"].submit(self._answer, process, call_id, str(fn), args)

    def _answer(self, process: WorkerProcess, call_id: int, fn: str, args: dict[str, Any]) -> None:
        value = call_bridge(self._bridge, fn, args)
        # If the worker died meanwhile, its restart has no use for this answer.
        with contextlib.suppress(ChannelClosed):
            process.channel.send({"op": "reply", "id": call_id, "value": value})

    def _result(
        self, process: WorkerProcess, done: dict[str, Any], seconds: float, limit: float
    ) -> ExecResult:
        """An ExecResult from a validated `done` message."""
        cap = self.options.output_limit
        raw = process.take_raw(cap)
        stdout = capped_text(done.get("stdout"), cap) + raw
        interrupted = done.get("interrupted") is True
        notes = list(self._notes)
        if interrupted:
            notes.insert(0, f"The block exceeded the {limit:g} s timeout and was interrupted; "
                         "variables are kept.")
        if done.get("out_of_memory") is True:
            limit_mb = self.options.memory_mb
            notes.insert(0, f"The block hit the sandbox memory limit ({limit_mb} MB); variables "
                         "it filled still hold that memory: `del` them or keep less.")
        final = done.get("final")
        return ExecResult(
            stdout=stdout,
            stderr=capped_text(done.get("stderr"), cap),
            error=capped_text(done.get("error"), cap) or None,
            seconds=seconds,
            final=final if isinstance(final, str) else None,
            notice=" ".join(notes) or None,
        )

    def _recover(
        self, process: WorkerProcess, started: float, limit: float, *, timed_out: bool,
        idle: bool = False,
    ) -> ExecResult:
        """The worker died or would not stop: restart it, restore what it saved, explain."""
        self._state.pop("process", None)
        code = process.stop()
        self._state.get("isolation_cleanup", _nothing)()
        raw, fatal = split_fatal(process.take_raw(self.options.output_limit))
        if timed_out:
            what = (f"exceeded the {limit:g} s timeout and did not stop when interrupted, "
                    "so the worker was killed")
            error = f"TimeoutError: the block ran longer than {limit:g} s"
        elif idle:
            what = (f"could not run at first: the worker had died after the previous block "
                    f"({describe_exit(code)}), so it ran on a new worker")
            error = None
        else:
            what = f"crashed the worker ({describe_exit(code)})"
            error = f"SandboxError: the worker died ({describe_exit(code)})"
        if fatal and error is not None:
            error += f"\n{fatal}"
        try:
            ready = self._spawn(restore=True)
            restored = names_from(ready.get("restored"))
            lost = names_from(ready.get("lost"))
        except SandboxError:
            # Restoring itself killed the new worker (a hostile or broken snapshot): start
            # clean rather than not at all.
            (self._state["scratch"] / SNAPSHOT_NAME).unlink(missing_ok=True)
            ready = self._spawn(restore=False)
            restored, lost = [], ["(all variables: restoring them failed)"]
        notice = (
            f"The block {what}. The worker was restarted and the context reloaded; "
            f"variables restored: {', '.join(restored) or 'none'}; "
            f"lost: {', '.join(lost) or 'none'}. "
            + ("" if idle else "Anything assigned by the failed block is lost.")
        )
        return ExecResult(
            stdout=raw,
            error=error,
            seconds=time.monotonic() - started,
            notice=" ".join([notice, *self._notes]),
            restarted=True,
            lost_variables=tuple(lost),
        )

    # --- inspection ---------------------------------------------------------------------
    def variables(self) -> dict[str, str]:
        """User variables in the worker: name -> short type and size summary."""
        with self._lock:
            process = self._require()
            self._ids += 1
            try:
                process.channel.send({"op": "vars", "id": self._ids})
                reply = self._wait_for(process, "vars", self._ids, time.monotonic() + 30)
            except (_Dead, ChannelClosed):
                reply = None
        found = (reply or {}).get("variables")
        if not isinstance(found, dict):
            return {}
        return {str(k): str(v)[:200] for k, v in found.items()}

    def isolation(self) -> dict[str, str]:
        """The isolation plan's layers: name -> "active" | "off" | "unavailable: why"."""
        return dict(self._layers or (self._plan.layers if self._plan is not None else {}))

    @property
    def scratch(self) -> Path | None:
        """The worker's private scratch directory (its cwd, HOME and TMPDIR)."""
        scratch = self._state.get("scratch")
        return Path(scratch) if scratch is not None else None

    @property
    def pid(self) -> int | None:
        """The current worker's process id (None before start or after close)."""
        process = self._state.get("process")
        return process.popen.pid if process is not None else None

    def _require(self) -> WorkerProcess:
        process: WorkerProcess | None = self._state.get("process")
        if process is None:
            raise SandboxError("The sandbox is not started (or was closed): call start() first.")
        return process


def _memory_for(memory_mb: int | None, spec: dict[str, Any]) -> int | None:
    """The address-space limit: room for decoding a big context (~3 bytes a byte) on top."""
    size = spec.get("bytes")
    if not memory_mb or not isinstance(size, int):
        return memory_mb
    return max(memory_mb, 3 * size // 2**20 + 1024)


def _context_spec(context: Context | None, scratch: Path) -> dict[str, Any]:
    """How the worker finds the context (a file it reads itself, never the value)."""
    if context is None:
        raise SandboxError("The sandbox has no context: call start() first.")
    return context.worker_spec(scratch)


def _readable_paths(spec: dict[str, Any]) -> list[Path]:
    """Files the worker must be able to read to load the context."""
    found: list[Path] = []
    paths = spec.get("paths")
    if isinstance(paths, list):
        found.extend(Path(p) for p in paths if isinstance(p, str))
    return found
