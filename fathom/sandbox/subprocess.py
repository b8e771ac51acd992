"""The default sandbox: REPL code runs in a worker process that may crash, hang or be hostile.

The parent enforces every limit: a per-block timeout (SIGINT first, SIGKILL when
the block does not stop), the memory limit (a memory cgroup and RLIMIT_AS via the
isolation plan), the output cap, and validation of every channel message. When the
worker dies it is restarted, reloads the context and restores the variables its last
snapshot held, within the block's time; the ExecResult's notice says what happened and
which variables were lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fathom.context import Context
from fathom.errors import IsolationError, SandboxError
from fathom.sandbox import SandboxOptions
from fathom.sandbox.base import Bridge, ExecResult
from fathom.sandbox.channel import (
    BadMessage,
    Channel,
    ChannelClosed,
    MessageRefused,
    Refusal,
    capped_text,
    names_from,
    reply_to_call,
)
from fathom.sandbox.isolation import Layer, layers_from_text, layers_to_text
from fathom.sandbox.isolation.plan import IsolationPlan, prepare
from fathom.sandbox.output import CappedText
from fathom.sandbox.process import (
    BOOT,
    CRASH_TAIL,
    WorkerProcess,
    close_quietly,
    describe_exit,
    split_fatal,
)
from fathom.sandbox.state import Assembler, Variables, to_messages
from fathom.sandbox.worker import Restore


class _Dead(Exception):
    """The worker stopped answering (exited, or was killed by us)."""


class Recovery(enum.Enum):
    """Why a worker is being replaced."""

    TIMED_OUT = "timed out"  # the block did not stop when interrupted, so it was killed
    CRASHED = "crashed"  # the worker died while running the block
    DIED_IDLE = "died idle"  # the worker died between blocks (a thread of the last one)


@dataclass
class _State:
    """What a sandbox must free: its worker, scratch dir, call threads and isolation plan.

    Its finalizer holds this object, never the sandbox, so a sandbox nobody closed is
    still collected and cleaned up. release() may run on another thread than a block (a
    cancelled run closes its sandbox while the block is still running): once it has begun,
    nothing may create the scratch dir, a plan or a worker again (see `opened`).
    """

    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=64, thread_name_prefix="fathom-call")
    )
    scratch: Path | None = None
    plan: IsolationPlan | None = None
    process: WorkerProcess | None = None
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def opened(self) -> Iterator[None]:
        """Hold off release() while the body makes what it must free; SandboxError if closed."""
        with self.lock:
            if self.closed:
                raise SandboxError("This sandbox was closed; create a new one for a new run.")
            yield

    def stop_worker(self) -> int | None:
        """Kill the current worker and what REPL code left behind; its exit code."""
        with self.lock:
            process, self.process = self.process, None
        if process is None:
            return None
        code = process.stop()
        if self.plan is not None:
            self.plan.cleanup()  # processes left under the sandbox's own uid (setsid'd ones)
        return code

    def release(self) -> None:
        """Stop the worker and delete the scratch dir (close(), garbage collection, exit)."""
        with self.lock:  # waits for a worker being started; none starts after this
            self.closed = True
        self.stop_worker()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None
        if self.plan is not None:
            self.plan.close()  # frees the scratch tmpfs (disk quota), which lives in RAM


_MAX_NOTES = 5
# The address space a worker needs besides its context: ~170 MB at its peak while starting,
# and 8 MB per thread (stacks are reserved whole, used or not).
_ADDRESS_SPACE_MB = 256
# A restart rebuilds variables in what is left of the block's time plus this grace; the
# parent waits that long plus a worker start (twice the first one's, plus the slack), then
# starts one without them.
_RESTORE_GRACE = 1.0
_START_SLACK = 2.0
# Calls from the worker being answered at once; past these (in number, or in bytes: messages
# of the largest size) a request is ignored, so a flood of them cannot pile up in the parent.
# Honest code waits on each call in a thread (128 at most at `standard`).
_MAX_CALLS_IN_FLIGHT = 256
# How long interrupt() watches for a block that was about to start when it was called.
_INTERRUPT_WATCH = 1.0
_MAX_MESSAGES_IN_FLIGHT = 4


@dataclass
class _InFlight:
    """The worker's calls the parent is answering: how many, and the bytes of their requests."""

    calls: int = 0
    size: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, size: int, max_size: int) -> bool:
        """Count a call in, unless that would pass either bound."""
        with self.lock:
            if self.calls >= _MAX_CALLS_IN_FLIGHT or self.size + size > max_size:
                return False
            self.calls += 1
            self.size += size
            return True

    def release(self, size: int) -> None:
        """Count an answered call out."""
        with self.lock:
            self.calls -= 1
            self.size -= size


class SubprocessSandbox:
    """A persistent REPL in an isolated worker process, restarted when it dies."""

    name = "subprocess"

    def __init__(
        self,
        options: SandboxOptions | None = None,
        *,
        interrupt_grace: float = 2.0,
        start_timeout: float = 60.0,
        stall_timeout: float = 10.0,
    ):
        self.options = options or SandboxOptions()
        self.interrupt_grace = interrupt_grace
        # A worker that leaves its channel unread this long is treated as dead and restarted.
        self.stall_timeout = stall_timeout
        self.start_timeout = start_timeout
        self._state = _State()
        # Runs at close(), when the sandbox is collected, or at interpreter exit.
        self._finalizer = weakref.finalize(self, self._state.release)
        self._bridge: Bridge | None = None
        self._context: Context | None = None
        self._layers: dict[str, Layer] = {}  # what the first worker reported as in force
        self._init: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._ids = 0
        self._notes: list[str] = []
        self._in_flight = _InFlight()
        self._start_seconds = 0.0  # what the first start took: a restart needs as much

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, context: Context, bridge: Bridge) -> None:
        """Create the scratch dir, plan the isolation, start the worker and load the context."""
        if not self._finalizer.alive:
            raise SandboxError("This sandbox was closed; create a new one for a new run.")
        if self._state.scratch is not None:
            raise SandboxError("This sandbox is already started; create one sandbox per run.")
        with self._state.opened():  # a close() meanwhile must find the dir and plan to free
            scratch = self._state.scratch = Path(tempfile.mkdtemp(prefix="fathom-sandbox-"))
            self._bridge = bridge
            self._context = context
            spec = _context_spec(context, scratch)
            plan = self._state.plan = prepare(
                self.options.isolation,
                scratch=scratch,
                readable=_readable_paths(spec),
                memory_mb=self.options.memory_mb,
                address_space_mb=_address_space_for(self.options.memory_mb, spec),
            )
        self._init = {
            "op": "init",
            "scratch": str(scratch),
            "output_limit": self.options.output_limit,
            "max_message_bytes": self.options.max_message_bytes,
            "isolation": plan.worker_spec,
            "functions": [spec.to_dict() for spec in bridge.functions()],
        }
        began = time.monotonic()
        ready = self._spawn(Restore.NONE)
        self._start_seconds = time.monotonic() - began
        layers = ready.get("layers")
        if isinstance(layers, dict):  # from the worker: capped like any message it sends
            found = {str(k)[:100]: str(v)[:300] for k, v in list(layers.items())[:50]}
            self._layers = layers_from_text(found)

    def _launch(self) -> tuple[WorkerProcess, dict[str, Any]]:
        """Start a worker process (the current one from now on) and find the context's spec."""
        plan, scratch = self._state.plan, self._state.scratch
        assert plan is not None and scratch is not None
        to_worker_r, to_worker_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        raw_r, raw_w = os.pipe()
        # -P: the cwd (scratch, writable by REPL code) must not shadow modules the next
        # worker imports before its isolation is in force.
        argv = [sys.executable, "-P", "-c", BOOT, str(to_worker_r), str(to_parent_w)]
        try:
            popen = subprocess.Popen(
                argv, env=plan.env, preexec_fn=plan.preexec, cwd=scratch,
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
            popen,
            Channel(to_parent_r, to_worker_w, max_bytes=self.options.max_message_bytes,
                    stall_timeout=self.stall_timeout),
            raw_r, CappedText(self.options.output_limit),
        )
        process.reader = threading.Thread(target=process.drain, name="fathom-raw", daemon=True)
        process.reader.start()
        self._state.process = process
        # Asked again at each start: REPL code may have deleted a spilled context file.
        return process, _context_spec(self._context, scratch)

    def _spawn(self, restore: Restore, restore_seconds: float = 0.0) -> dict[str, Any]:
        """Start a worker and wait for its `ready`; SandboxError if it cannot start.

        Restoring variables gets `restore_seconds` in the worker, and the wait only that
        much more than a start (a rebuild the worker cannot interrupt is cut off there).
        """
        if restore is Restore.VARIABLES:
            start = 2 * self._start_seconds + _START_SLACK
            deadline = time.monotonic() + restore_seconds + start
        else:
            deadline = time.monotonic() + self.start_timeout
        with self._state.opened():  # closed meanwhile: no worker, and no context respilled
            process, spec = self._launch()
        try:
            init = {**self._init, "context": spec, "restore": restore.value}
            if restore is Restore.VARIABLES:
                init["restore_seconds"] = restore_seconds
            process.channel.send(init)
            ready = self._wait_for(process, "ready", None, deadline)
            died = False
        except (_Dead, ChannelClosed):
            ready, died = None, True
        if ready is None or ready.get("op") != "ready":
            code = self._state.stop_worker()  # also collects the last raw output (a traceback)
            if self._state.closed:  # stopped by close(), not by the context or a limit
                raise SandboxError("This sandbox was closed; create a new one for a new run.")
            detail = (ready or {}).get("error") or "".join(process.tail)[-CRASH_TAIL:]
            if (ready or {}).get("kind") == "IsolationError":
                raise IsolationError(str(detail))
            ending = "died" if died else "hung" if ready is None else "failed"
            raise SandboxError(self._start_failure(ending, code, str(detail).strip(), spec))
        return ready

    def _start_failure(self, ending: str, code: int | None, detail: str, spec: Any) -> str:
        """Why a worker did not start ("died", "hung" or "failed": said so), what to do."""
        if ending == "hung":
            what = "did not start in time (it was stopped)"
        elif ending == "died" and code == -signal.SIGKILL and self.options.memory_mb:
            # Nothing of ours kills a starting worker that has not timed out: the cgroup did.
            size = spec.get("bytes") if isinstance(spec, dict) else None
            context = f" ({size / 2**20:,.0f} MB)" if isinstance(size, int) else ""
            return (f"The sandbox worker was killed while loading the context{context}, most "
                    f"likely by its memory limit: loading it needs more than memory_mb="
                    f"{self.options.memory_mb} MB. Raise memory_mb (RLM(memory_mb=...)), or "
                    "pass a smaller context.")
        else:
            what = f"did not start (exit code {code})"
        return (f"The sandbox worker {what}: {detail}\nTry sandbox='inprocess' to run without "
                "a worker, or check the isolation layers with `fathom doctor`.")

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
            # Died between blocks (say, a thread the last block started): restart, then run
            # in what is left of the block's time.
            started = time.monotonic()
            before = self._recover(process, started, limit, Recovery.DIED_IDLE)
            self._notes = []
            result = self._run(self._require(), code, limit, started)
            return dataclasses.replace(
                result,
                stdout=before.stdout + result.stdout,
                notice=" ".join(n for n in (before.notice, result.notice) if n),
            )

    def _run(
        self, process: WorkerProcess, code: str, limit: float, started: float | None = None
    ) -> ExecResult:
        """Send one block and serve its calls until it is done, interrupted or killed; its
        time runs from `started` (now by default)."""
        self._ids += 1
        exec_id = self._ids
        started = time.monotonic() if started is None else started
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
                    return self._recover(process, started, limit, Recovery.TIMED_OUT)
                os.kill(process.popen.pid, signal.SIGINT)
                interrupted_at = time.monotonic()
        except (_Dead, ChannelClosed):
            return self._recover(process, started, limit, Recovery.CRASHED)

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
        if not isinstance(call_id, int) or not isinstance(fn, str) or not isinstance(args, dict):
            self._note(f"ignored a malformed call request from the worker ({str(fn)[:40]!r})")
            return
        size = process.channel.last_size
        if not self._in_flight.admit(size, _MAX_MESSAGES_IN_FLIGHT * process.channel.max_bytes):
            self._note(f"ignored a call request from the worker: {_MAX_CALLS_IN_FLIGHT} calls, "
                       f"or {_MAX_MESSAGES_IN_FLIGHT} messages' worth of bytes, already waiting")
            return
        self._state.pool.submit(self._answer, process, call_id, str(fn), args, size)

    def _answer(
        self, process: WorkerProcess, call_id: int, fn: str, args: dict[str, Any], size: int
    ) -> None:
        try:
            reply = reply_to_call(self._bridge, call_id, fn, args)
            # If the worker died meanwhile, its restart has no use for this answer.
            with contextlib.suppress(ChannelClosed):
                try:
                    process.channel.send(reply)
                except MessageRefused as exc:
                    process.channel.send({
                        "op": "reply", "id": call_id, "refused": Refusal.LIMIT.value,
                        "message": f"{fn}: the answer could not be sent back: {exc}; "
                                   "ask for less in one call",
                    })
        finally:
            self._in_flight.release(size)

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
        self, process: WorkerProcess, started: float, limit: float, why: Recovery
    ) -> ExecResult:
        """The worker died or would not stop: restart it, restore what it saved, explain."""
        code = self._state.stop_worker()
        raw, fatal = split_fatal(process.take_raw(self.options.output_limit))
        what, error = _explain(why, limit, describe_exit(code))
        if fatal and error is not None:
            error += f"\n{fatal}"
        seconds = max(started + limit - time.monotonic(), 0.0) + _RESTORE_GRACE
        restored, lost, why_lost = self._restart(seconds)
        notice = (
            f"The block {what}. The worker was restarted and the context reloaded; "
            f"variables restored: {', '.join(restored) or 'none'}; "
            f"lost: {', '.join(lost) or 'none'}{why_lost}."
        )
        if why is not Recovery.DIED_IDLE:
            notice += " Anything assigned by the failed block is lost."
        return ExecResult(
            stdout=raw,
            error=error,
            seconds=time.monotonic() - started,
            notice=" ".join([notice, *self._notes]),
        )

    def _restart(self, seconds: float) -> tuple[list[str], list[str], str]:
        """A new worker holding what its predecessor saved, rebuilt within `seconds`: the
        names restored and lost, and why some were lost (text for the notice)."""
        try:
            ready = self._spawn(Restore.VARIABLES, seconds)
        except IsolationError:
            raise
        except SandboxError:
            # Restoring outlasted the deadline or killed the new worker (a hostile or broken
            # snapshot): start one that only names what the snapshot held, and drops it.
            lost = names_from(self._spawn(Restore.NAMES).get("lost"))
            return [], lost or ["(all variables)"], " (restoring them failed or took too long)"
        slow = names_from(ready.get("slow"))
        why = f" ({', '.join(slow)} took too long to restore)" if slow else ""
        return names_from(ready.get("restored")), names_from(ready.get("lost")), why

    # --- a session's variables ------------------------------------------------------------
    def variables(self) -> dict[str, str]:
        """The REPL's user variables: name -> type and size, as SHOW_VARS prints them."""
        reply, _ = self._session_request({"op": "vars"}, "vars")
        found = reply.get("variables")
        if not isinstance(found, dict):
            return {}
        return {str(k)[:200]: str(v)[:200] for k, v in list(found.items())[:1000]}

    def take_variables(self, skip: frozenset[str] = frozenset()) -> Variables:
        """The REPL's variables, pickled in the worker (see fathom.sandbox.state.take)."""
        reply, variables = self._session_request({"op": "take", "skip": sorted(skip)}, "taken")
        lost = reply.get("lost")
        if isinstance(lost, dict):
            variables.lost.update({str(k): str(v)[:200] for k, v in lost.items()})
        return variables

    def put_variables(self, variables: Variables) -> tuple[list[str], dict[str, str]]:
        """Rebuild saved variables in the worker: the names restored, those lost and why."""
        with self._lock:
            process = self._require()
            self._ids += 1
            chunk = max(1024, (process.channel.max_bytes - 4096) * 3 // 4)
            try:
                for part in to_messages(variables, self._ids, chunk):
                    process.channel.send(part)
            except ChannelClosed as exc:
                raise SandboxError(f"The sandbox worker is gone ({exc}).") from exc
        reply, _ = self._session_request({"op": "put"}, "put")
        restored = names_from(reply.get("restored"))
        lost = reply.get("lost")
        lost = {str(k): str(v)[:200] for k, v in lost.items()} if isinstance(lost, dict) else {}
        for name in variables.saved.keys() - set(restored) - lost.keys():
            lost[name] = "it did not reach the worker"
        return restored, {**variables.lost, **lost}

    def interrupt(self) -> None:
        """Stop the running block as its timeout would (a session's Ctrl-C); returns at once.

        A cancelled run's block may be about to start rather than running: SIGINT is sent
        again while an execute() holds the sandbox, for at least _INTERRUPT_WATCH seconds.
        The worker ignores it between blocks.
        """
        threading.Thread(target=self._interrupt_until_idle, name="fathom-interrupt",
                         daemon=True).start()

    def _interrupt_until_idle(self) -> None:
        watch = time.monotonic() + _INTERRUPT_WATCH
        give_up = time.monotonic() + self.options.exec_timeout + self.interrupt_grace
        while time.monotonic() < give_up and (self._lock.locked() or time.monotonic() < watch):
            process = self._state.process
            if self._lock.locked() and process is not None and process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.popen.pid, signal.SIGINT)
            time.sleep(0.1)

    def _session_request(
        self, message: dict[str, Any], answer: str
    ) -> tuple[dict[str, Any], Variables]:
        """Send a session op and wait for its `answer`, collecting the `var` messages before it."""
        with self._lock:
            process = self._require()
            self._ids += 1
            msg_id = self._ids
            incoming = Assembler()
            deadline = time.monotonic() + max(self.start_timeout, self.options.exec_timeout)
            try:
                process.channel.send({**message, "id": msg_id})
                while (remaining := deadline - time.monotonic()) > 0:
                    got = process.channel.recv(remaining)
                    if got is None:
                        break
                    kind = got.get("op")
                    if kind == "call":  # a thread an earlier block started
                        self._serve(process, got)
                    elif kind == "var" and got.get("id") == msg_id:
                        incoming.add(got)
                    elif kind == answer and got.get("id") == msg_id:
                        if got.get("error") is not None:
                            raise SandboxError(f"The sandbox worker failed a session request "
                                               f"({capped_text(got.get('error'), 500)}).")
                        return dict(got), incoming.variables
            except (ChannelClosed, BadMessage, ValueError) as exc:
                raise SandboxError(
                    f"The sandbox worker failed to answer a session request ({exc})."
                ) from exc
            raise SandboxError("The sandbox worker did not answer a session request in time.")

    # --- inspection ---------------------------------------------------------------------
    def isolation(self) -> dict[str, str]:
        """The layers in force, in their trace form: name -> "active (how)", "off" or
        "unavailable: why" (what the first worker reported, else what the plan expects)."""
        plan = self._state.plan
        return layers_to_text(self._layers or (plan.layers if plan is not None else {}))

    @property
    def scratch(self) -> Path | None:
        """The worker's private scratch directory (its cwd, HOME and TMPDIR)."""
        return self._state.scratch

    @property
    def pid(self) -> int | None:
        """The current worker's process id (None before start or after close)."""
        process = self._state.process
        return process.popen.pid if process is not None else None

    def _require(self) -> WorkerProcess:
        process = self._state.process
        if process is None:
            raise SandboxError("The sandbox is not started (or was closed): call start() first.")
        return process


def _explain(why: Recovery, limit: float, ending: str) -> tuple[str, str | None]:
    """What the notice says the block did, and the error the block reports."""
    if why is Recovery.TIMED_OUT:
        what = (f"exceeded the {limit:g} s timeout and did not stop when interrupted, "
                "so the worker was killed")
        return what, f"TimeoutError: the block ran longer than {limit:g} s"
    if why is Recovery.DIED_IDLE:
        what = (f"could not run at first: the worker had died after the previous block "
                f"({ending}), so it ran on a new worker")
        return what, None
    return f"crashed the worker ({ending})", f"SandboxError: the worker died ({ending})"


def _address_space_for(memory_mb: int | None, spec: dict[str, Any]) -> int | None:
    """Each worker process's address-space limit: the worker's own, and room for decoding
    the context (~3 bytes a byte). The plan warns when that passes memory_mb with no memory
    cgroup to hold the sandbox to memory_mb."""
    size = spec.get("bytes")
    if not memory_mb or not isinstance(size, int):
        return memory_mb
    return max(memory_mb, 3 * size // 2**20 + _ADDRESS_SPACE_MB)


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
