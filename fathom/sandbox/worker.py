"""The code that runs inside the subprocess worker: `python -P -m fathom.sandbox.worker R W`.

(subprocess.py starts it through a bootstrap that skips fathom/__init__.py; same `main`.)

R and W are the pipe descriptors of the channel to the parent. The worker loads
the context itself from the spec in the first message, applies the isolation
layers, restores the variables a crashed predecessor saved, then runs blocks.
REPL functions become channel requests answered by the parent. After each block
it saves the picklable user variables to its scratch directory (after replying,
so the snapshot costs no latency); the parent never reads that file.
"""

from __future__ import annotations

import contextlib
import enum
import faulthandler
import io
import itertools
import os
import pickle
import queue
import signal
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fathom.context import load_spec
from fathom.repl_api import CallRefused, FunctionSpec
from fathom.sandbox import state
from fathom.sandbox.channel import (
    BadMessage,
    Channel,
    ChannelClosed,
    MessageRefused,
    raise_refusal,
)
from fathom.sandbox.isolation import layers_to_text, worker_side
from fathom.sandbox.repl import Repl
from fathom.sandbox.state import defined_here

SNAPSHOT_NAME = ".fathom-snapshot.pkl"
# A session's requests about the REPL's variables (see Worker.session_op) -> the op of the
# answer, which carries "error" when the request failed (`var` is not answered).
SESSION_OPS = {"vars": "vars", "take": "taken", "var": None, "put": "put"}


class Restore(enum.Enum):
    """What a new worker does with its predecessor's snapshot (the `restore` of `init`)."""

    NONE = "none"  # nothing: a first start
    VARIABLES = "variables"  # rebuild them within `restore_seconds`
    NAMES = "names"  # only name them, as lost, and delete the snapshot (it hung or crashed)


# Variables are saved after every block; past this many bytes the rest is not saved (it
# would be lost in a crash), so huge states do not cost seconds per block.
SNAPSHOT_MAX_BYTES = 128 * 1024 * 1024
_IMMUTABLE = (str, bytes, int, float, complex, bool, type(None), frozenset)


class ChannelBridge:
    """The Bridge as seen from the worker: every call is a request to the parent."""

    def __init__(self, channel: Channel, functions: list[FunctionSpec]):
        self._channel = channel
        self._functions = functions
        self._ids = itertools.count(1)
        self._waiting: dict[int, list[Any]] = {}
        self._lock = threading.Lock()

    def functions(self) -> list[FunctionSpec]:
        """The functions the parent offers (sent in its `init` message)."""
        return list(self._functions)

    def call(self, name: str, args: dict[str, Any]) -> Any:
        """Ask the parent and wait; its typed refusal is raised here, in the REPL code."""
        call_id = next(self._ids)
        slot: list[Any] = [threading.Event(), None]
        with self._lock:
            self._waiting[call_id] = slot
        try:
            try:
                self._channel.send({"op": "call", "id": call_id, "fn": name, "args": args})
            except MessageRefused as exc:
                raise CallRefused(
                    f"{name}: {exc}: send less in one call (split the prompt or the batch, "
                    "or flatten the context)."
                ) from None
            except (TypeError, ValueError) as exc:
                return _error_for(args, f"Error: {name} arguments must be JSON-like ({exc})")
            slot[0].wait()
            reply: dict[str, Any] = slot[1]
        finally:
            with self._lock:
                self._waiting.pop(call_id, None)
        raise_refusal(reply)
        return reply.get("value")

    def answer(self, reply: dict[str, Any]) -> None:
        """Hand the parent's reply to the thread waiting for it."""
        call_id = reply.get("id")
        with self._lock:
            slot = self._waiting.get(call_id) if isinstance(call_id, int) else None
        if slot is not None:
            slot[1] = reply
            slot[0].set()


def _error_for(args: dict[str, Any], text: str) -> Any:
    prompts = args.get("prompts")
    return [text] * len(prompts) if isinstance(prompts, list) and prompts else text


class Worker:
    """The worker's main loop: blocks from the queue, run in the main thread."""

    def __init__(self, channel: Channel, context: Any, init: dict[str, Any]):
        self.channel = channel
        specs = [FunctionSpec.from_dict(f) for f in init.get("functions") or []]
        self.bridge = ChannelBridge(channel, specs)
        limit = int(init["output_limit"])
        self.repl = Repl(context, self.bridge, output_limit=limit, register=True)
        self.snapshot_path = Path(init["scratch"]) / SNAPSHOT_NAME
        self.isolation_spec: dict[str, Any] = init.get("isolation") or {}
        self.inbox: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.running = False
        self._timeout_text: str | None = None
        self._blobs: dict[str, tuple[Any, bytes]] = {}
        self._saved: dict[str, tuple[str, Any]] | None = None
        self._incoming = state.Assembler()  # variables a session is putting back

    def read_forever(self) -> None:
        """Reader thread: route replies to waiting calls, queue the rest; exit with the parent."""
        while True:
            try:
                message = self.channel.recv()
            except BadMessage:
                continue
            except ChannelClosed:
                os._exit(0)  # the parent is gone: nothing left to serve
            if message is None:
                continue
            if message.get("op") == "reply":
                self.bridge.answer(message)
            else:
                self.inbox.put(message)

    def on_sigint(self, signum: int, frame: types.FrameType | None) -> None:
        """The parent's timeout: interrupt the running block, ignore it otherwise."""
        if self.running:
            self.repl.timeout_message = self._timeout_text
            raise KeyboardInterrupt

    def serve(self) -> None:
        """Run blocks until the parent stops the worker."""
        while True:
            message = self.inbox.get()
            op = message.get("op")
            if op == "exec":
                self._exec(message)
                self.snapshot()
            elif op == "stop":
                return
            elif op in SESSION_OPS:
                try:
                    self.session_op(message)
                except Exception as exc:  # say so: the parent is waiting for the answer
                    answer = SESSION_OPS[op]
                    if answer is not None:
                        self.channel.send({"op": answer, "id": message.get("id"),
                                           "error": f"{type(exc).__name__}: {exc}"[:500]})

    def _exec(self, message: dict[str, Any]) -> None:
        timeout = message.get("timeout")
        self._timeout_text = (
            f"TimeoutError: the block ran longer than {timeout:g} s"
            if isinstance(timeout, int | float) else "TimeoutError: the block was interrupted"
        )
        reply: dict[str, Any] = {"op": "done", "id": message.get("id")}
        try:
            self.running = True
            outcome = self.repl.execute(str(message.get("code", "")), all_threads=True)
            self.running = False
            reply.update(stdout=outcome.stdout, stderr=outcome.stderr, error=outcome.error,
                         final=outcome.final, interrupted=outcome.interrupted,
                         out_of_memory=outcome.out_of_memory)
        except KeyboardInterrupt:  # the interrupt landed outside the block itself
            reply.update(error=self._timeout_text, interrupted=True)
        finally:
            self.running = False
        try:
            self.channel.send(reply)
        except MessageRefused as exc:  # output_limit set above what one message may hold
            self.channel.send({"op": "done", "id": message.get("id"), "error": (
                f"SandboxError: the block's output could not be sent back: {exc}; "
                "print less, or lower output_limit")})
        if reply.get("interrupted"):
            # A timed-out block may have left processes behind (a fork bomb): end them.
            worker_side.kill_strays(self.isolation_spec)

    # --- a session's variables (fathom.sandbox.state) -------------------------------------
    def session_op(self, message: dict[str, Any]) -> None:
        """List the variables, send them (`take`), or receive (`var`) and rebuild (`put`) them."""
        op, msg_id = message.get("op"), message.get("id")
        if op == "vars":
            self.channel.send({"op": "vars", "id": msg_id, "variables": self.repl.variables()})
        elif op == "take":
            skip = message.get("skip")
            names = frozenset(n for n in skip if isinstance(n, str)) if isinstance(skip, list) \
                else frozenset()
            chunk = max(1024, (self.channel.max_bytes - 4096) * 3 // 4)  # base64 grows by 4/3
            variables = state.take(self.repl, names)
            for part in state.to_messages(variables, msg_id, chunk):
                self.channel.send(part)
            self.channel.send({"op": "taken", "id": msg_id, "lost": variables.lost})
        elif op == "var":
            try:
                self._incoming.add(message)
            except ValueError:
                self._incoming = state.Assembler()  # the `put` reports those names as missing
        elif op == "put":
            restored, lost = state.put(self.repl, self._incoming.variables)
            self._incoming = state.Assembler()
            self.channel.send({"op": "put", "id": msg_id, "restored": restored, "lost": lost})
            self.snapshot()  # a crash from now on restores them too

    # --- crash recovery --------------------------------------------------------------
    def snapshot(self) -> None:
        """Save what a restarted worker can rebuild: modules, definitions, picklable values."""
        ns = self.repl.namespace
        entries: dict[str, tuple[str, Any]] = {}
        blobs: dict[str, tuple[Any, bytes]] = {}
        room = SNAPSHOT_MAX_BYTES
        for name in self.repl.user_names():
            value = ns[name]
            if value is self.repl.context:
                entries[name] = ("context", None)
            elif isinstance(value, types.ModuleType):
                entries[name] = ("module", value.__name__)
            elif defined_here(value, name) and name in self.repl.definitions:
                entries[name] = ("source", self.repl.definitions[name])
            else:
                cached = self._blobs.get(name)
                if cached is not None and cached[0] is value and isinstance(value, _IMMUTABLE):
                    blobs[name] = cached
                else:
                    try:
                        blobs[name] = (value, _pickle_capped(value, room))
                    except Exception as exc:  # any object may refuse pickling
                        entries[name] = ("lost", f"{type(exc).__name__}: {exc}"[:200])
                        continue
                room -= len(blobs[name][1])
                entries[name] = ("pickle", blobs[name][1])
        self._blobs = blobs
        if entries == self._saved:
            return  # nothing changed since the last block: skip the disk write
        self._saved = entries
        tmp = self.snapshot_path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as handle:
                pickle.dump(entries, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.snapshot_path)
        except (OSError, MemoryError):
            # A stale snapshot would restore old values silently; better to restore nothing.
            for path in (tmp, self.snapshot_path):
                path.unlink(missing_ok=True)

    def recover(self, init: dict[str, Any]) -> dict[str, list[str]]:
        """What the parent asked for at start (Restore): the names restored, lost, too slow."""
        how = init.get("restore")
        if how == Restore.VARIABLES.value:
            seconds = init.get("restore_seconds")
            by = time.monotonic() + seconds if isinstance(seconds, int | float) else None
            return self.restore(by)
        if how == Restore.NAMES.value:
            lost = sorted(self._saved_entries() or {})
            self.snapshot_path.unlink(missing_ok=True)  # a snapshot that hung or crashed us
            return {"restored": [], "lost": lost, "slow": []}
        return {"restored": [], "lost": [], "slow": []}

    def restore(self, by: float | None = None) -> dict[str, list[str]]:
        """Rebuild the saved variables, each within its share of the time left until `by`
        (time.monotonic()); one that takes longer is dropped and listed as slow."""
        entries = self._saved_entries()
        if entries is None:
            return {"restored": [], "lost": [], "slow": []}
        return self._rebuild(entries, by)

    def _saved_entries(self) -> dict[str, tuple[str, Any]] | None:
        """The snapshot's entries, read without running any of its code (None: no snapshot)."""
        try:
            with open(self.snapshot_path, "rb") as handle:
                entries = _EntriesUnpickler(handle).load()
        except FileNotFoundError:
            return None
        except Exception:  # a corrupt (or tampered) snapshot: start clean
            return None
        return entries if isinstance(entries, dict) else None

    def _rebuild(
        self, entries: dict[str, tuple[str, Any]], by: float | None
    ) -> dict[str, list[str]]:
        ns = self.repl.namespace
        found: dict[str, list[str]] = {"restored": [], "lost": [], "slow": []}
        order = {"context": 0, "module": 1, "source": 2, "pickle": 3, "lost": 4}
        ordered = sorted(entries.items(), key=lambda e: order.get(_kind(e[1]), 9))
        for left, (name, entry) in zip(range(len(ordered), 0, -1), ordered, strict=True):
            kind, data = entry if isinstance(entry, tuple) and len(entry) == 2 else ("lost", None)
            share = None if by is None else (by - time.monotonic()) / left
            try:
                if share is not None and share <= 0:
                    raise _TooSlow
                with _time_limit(share):
                    if kind == "context":
                        ns[name] = self.repl.context
                    elif kind == "module":
                        ns[name] = __import__(data, fromlist=["_"])
                    elif kind == "source":
                        self.repl.define(data)
                    elif kind == "pickle":
                        ns[name] = pickle.loads(data)
                    else:
                        found["lost"].append(name)
                        continue
                found["restored"].append(name)
            except _TooSlow:
                ns.pop(name, None)
                found["lost"].append(name)
                found["slow"].append(name)
            except Exception:  # what fails to rebuild is lost
                found["lost"].append(name)
        return {key: sorted(names) for key, names in found.items()}


class _TooSlow(BaseException):
    """A variable took longer to rebuild than its share of the restore time.

    A BaseException, so the `except Exception` of code run while unpickling lets it pass.
    """


def _on_alarm(signum: int, frame: types.FrameType | None) -> None:
    raise _TooSlow


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise _TooSlow in this (the main) thread after `seconds` (None: no limit).

    Code that catches BaseException or sits in C can outlast it; the parent kills a worker
    that is not ready by its deadline, and the next one starts without the snapshot.
    """
    if seconds is None:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))  # 0 would mean no timer
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _EntriesUnpickler(pickle.Unpickler):
    """Loads a snapshot's outer dict (names, kinds, pickled bytes), refusing any code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a snapshot's index holds no objects ({module}.{name})")


def _kind(entry: Any) -> str:
    return entry[0] if isinstance(entry, tuple) and entry and isinstance(entry[0], str) else ""


class _TooLarge(Exception):
    """A value whose pickle would not fit in what is left of the snapshot budget."""


class _CappedBuffer(io.BytesIO):
    def __init__(self, cap: int):
        super().__init__()
        self.cap = cap

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.cap:
            raise _TooLarge(f"too large to save for crash recovery (> {self.cap:,} bytes left)")
        return super().write(data)


def _rough_size(value: Any, depth: int = 2) -> int:
    """A cheap lower estimate of a value's pickled size (samples big containers)."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if depth == 0 or not isinstance(value, list | tuple | dict):
        return 8
    items = list(value.values()) if isinstance(value, dict) else value
    sample = items[:1000]
    if not sample:
        return 8
    seen = sum(_rough_size(item, depth - 1) for item in sample)
    return seen * len(items) // len(sample)


def _pickle_capped(value: Any, cap: int) -> bytes:
    """Pickle `value`, giving up as soon as it passes `cap` bytes (bounded time and memory)."""
    if _rough_size(value) > cap:  # e.g. a list holding the whole context: skip the big encode
        raise _TooLarge(f"too large to save for crash recovery (> {cap:,} bytes left)")
    buffer = _CappedBuffer(max(cap, 0))
    pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def main(argv: list[str]) -> int:
    """Serve one parent over the channel on descriptors argv[0] (read) and argv[1] (write)."""
    channel = Channel(int(argv[0]), int(argv[1]))
    # A segfault then leaves the crashing <repl> line in the raw output for the parent.
    faulthandler.enable(file=2, all_threads=False)
    try:
        init = channel.recv()
    except (ChannelClosed, BadMessage):
        return 1
    if not init or init.get("op") != "init":
        return 1
    cap = init.get("max_message_bytes")
    if isinstance(cap, int) and cap > 0:
        channel.max_bytes = cap  # the parent's cap: bigger calls are refused here, not sent
    try:
        context = load_spec(init["context"])
        worker = Worker(channel, context, init)
        # Before any thread starts: Landlock confines only the calling thread and later ones.
        layers = layers_to_text(worker_side.enter(init.get("isolation") or {}))
    except Exception as exc:  # the parent raises SandboxError (IsolationError at strict)
        kind = type(exc).__name__
        channel.send({"op": "failed", "kind": kind, "error": f"{kind}: {exc}"})
        return 1
    signal.signal(signal.SIGINT, worker.on_sigint)
    recovered = worker.recover(init)  # before the reader thread: SIGALRM must find this one
    threading.Thread(target=worker.read_forever, name="fathom-channel", daemon=True).start()
    channel.send({"op": "ready", "pid": os.getpid(), **recovered, "layers": layers})
    worker.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
