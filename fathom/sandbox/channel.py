"""JSON messages between the parent and its worker, one per line, over dedicated pipes.

The worker's stdout belongs to user code, so messages travel on their own pair of
pipes. Messages are JSON objects (never pickle): the parent can validate
everything a possibly hostile worker sends, and a bad line costs one ignored
message, not the parent.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import threading
import time
from enum import StrEnum
from typing import Any

from fathom.errors import BudgetExceeded
from fathom.repl_api import CallRefused
from fathom.sandbox.base import Bridge

# The default cap on one message (SandboxOptions.max_message_mb): far above any prompt a model
# can read (a million tokens is a few MB of text), small enough that decoding a hostile message
# cannot take the parent's memory. A bigger batch is split by the code that sends it.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Nesting deeper than this is refused (JSON a hundred levels deep is no call's argument); it
# keeps recursive code in the parent far from Python's recursion limit.
MAX_DEPTH = 100
# One read takes what the pipe holds, up to this much.
_READ_CHUNK = 1 << 20


class ChannelClosed(Exception):
    """The other side closed its end (the worker exited or the parent went away)."""


class BadMessage(Exception):
    """A line that is not a JSON object, too long or too deeply nested; it was skipped."""


class MessageRefused(ValueError):
    """A message over the channel's size cap or nesting depth, refused before anything was
    sent (the other side would drop it, and whoever waits for its answer would wait in vain)."""


class Channel:
    """Newline-delimited JSON objects over a read fd and a write fd; send is thread-safe.

    Receiving is linear in the bytes read (each byte is searched for a newline once), holds
    at most `max_bytes` plus one read of a line, and returns at its deadline even while a
    line that never ends keeps arriving.
    """

    def __init__(
        self, read_fd: int, write_fd: int, *, max_bytes: int = MAX_MESSAGE_BYTES,
        stall_timeout: float | None = None,
    ):
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.max_bytes = max_bytes
        # With a stall timeout, a send that makes no progress for that long (the other side
        # keeps its end open but stopped reading) ends in ChannelClosed instead of hanging.
        self.stall_timeout = stall_timeout
        if stall_timeout is not None:
            os.set_blocking(write_fd, False)
            self._writable = select.poll()
            self._writable.register(write_fd, select.POLLOUT | select.POLLERR | select.POLLHUP)
        self._buffer = bytearray()
        self._scanned = 0  # how much of the buffer is known to hold no newline
        self._skipping = False  # inside an over-long line: drop bytes up to its newline
        self.last_size = 0  # bytes of the last message recv returned
        self._send_lock = threading.Lock()
        self._poller = select.poll()
        self._poller.register(read_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        """Write one message; MessageRefused over the limits, ChannelClosed if the other side
        is gone."""
        too_deep = f"the message is nested deeper than {MAX_DEPTH} levels"
        try:  # first: it refuses cycles, so the depth walk below is bounded by its output
            data = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        except RecursionError:
            raise MessageRefused(too_deep) from None
        if _deeper_than(message, MAX_DEPTH):
            raise MessageRefused(too_deep)
        payload = data.encode("utf-8", "surrogatepass") + b"\n"
        if len(payload) - 1 > self.max_bytes:
            raise MessageRefused(
                f"the message is {_mb(len(payload) - 1)}, over the {_mb(self.max_bytes)} cap "
                "on one message"
            )
        with self._send_lock:
            view = memoryview(payload)
            try:
                while view:
                    try:
                        written = os.write(self.write_fd, view)
                    except BlockingIOError:
                        self._wait_writable()
                        continue
                    view = view[written:]
            except (BrokenPipeError, OSError) as exc:
                raise ChannelClosed(str(exc)) from exc

    def _wait_writable(self) -> None:
        assert self.stall_timeout is not None  # the fd is non-blocking only with a timeout
        if not self._writable.poll(math.ceil(self.stall_timeout * 1000)):
            raise ChannelClosed(
                f"the other side has read nothing for {self.stall_timeout:g} s"
            )

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message, or None if none was complete within `timeout` seconds.

        Raises ChannelClosed at end of stream and BadMessage for a skipped line. A line cut
        short by the timeout is kept, and the next call goes on with it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            line = self._take_line()
            if line is not None:
                self.last_size = len(line)
                return _decode(line)
            if not self._fill(deadline):
                return None

    def _take_line(self) -> bytearray | None:
        end = self._buffer.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(self._buffer)
            if self._scanned > self.max_bytes:
                self._buffer.clear()
                self._scanned = 0
                self._skipping = True
            return None
        line = self._buffer[:end]
        del self._buffer[: end + 1]
        self._scanned = 0
        if end > self.max_bytes:
            raise BadMessage(self._too_long())
        return line

    def _fill(self, deadline: float | None) -> bool:
        """Read what the pipe holds; False at the deadline, even while bytes keep coming."""
        wait_ms = None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            wait_ms = math.ceil(left * 1000)
        if not self._poller.poll(wait_ms):
            return False
        try:
            chunk = os.read(self.read_fd, _READ_CHUNK)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc
        if not chunk:
            self.closed = True
            raise ChannelClosed("end of stream")
        if self._skipping:
            end = chunk.find(b"\n")
            if end < 0:
                return True
            self._skipping = False
            self._buffer += memoryview(chunk)[end + 1 :]
            raise BadMessage(self._too_long())
        self._buffer += chunk
        return True

    def _too_long(self) -> str:
        return f"a message longer than the {_mb(self.max_bytes)} cap was dropped"

    def close(self) -> None:
        """Close both descriptors; safe to call twice."""
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.closed = True


def _mb(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"


def _decode(line: bytes | bytearray) -> dict[str, Any]:
    try:
        message = json.loads(line.decode("utf-8", "surrogatepass"))
    except Exception as exc:  # RecursionError, MemoryError, ValueError: the line's fault alike
        raise BadMessage(
            f"a line that is not JSON was dropped ({type(exc).__name__}: {str(exc)[:100]})"
        ) from exc
    if not isinstance(message, dict):
        raise BadMessage(f"a message that is not a JSON object was dropped: {bytes(line[:80])!r}")
    if _deeper_than(message, MAX_DEPTH):
        raise BadMessage(f"a message nested deeper than {MAX_DEPTH} levels was dropped")
    return message


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether the containers in `value` nest deeper than `limit` (iterative: no recursion)."""
    level: list[Any] = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list | tuple)
        ]
        if not level:
            return False
    return True


# --- calls from the worker ---------------------------------------------------------------
class Refusal(StrEnum):
    """Why the parent refused a call instead of answering it (a reply's `refused`)."""

    BUDGET = "budget"
    LIMIT = "limit"  # a call over one of the sandbox's limits (too many prompts, too large)


def reply_to_call(
    bridge: Bridge | None, call_id: int, fn: str, args: dict[str, Any]
) -> dict[str, Any]:
    """The `reply` message for one call request: its value, or a typed refusal."""
    reply: dict[str, Any] = {"op": "reply", "id": call_id}
    if bridge is None:
        reply["value"] = "Error: the sandbox has no bridge"
        return reply
    try:
        reply["value"] = bridge.call(fn, args)
    except BudgetExceeded as exc:
        reply.update(refused=Refusal.BUDGET.value, message=str(exc))
    except CallRefused as exc:
        reply.update(refused=Refusal.LIMIT.value, message=str(exc))
    except Exception as exc:  # the Bridge should not raise; REPL code goes on if it does
        reply["value"] = f"Error: {fn} failed: {type(exc).__name__}: {exc}"
    return reply


def raise_refusal(reply: dict[str, Any]) -> None:
    """In the worker: raise what a refused reply stands for into the calling REPL code."""
    refused = reply.get("refused")
    if refused == Refusal.BUDGET.value:
        raise BudgetExceeded(str(reply.get("message") or "budget exhausted"))
    if refused == Refusal.LIMIT.value:
        raise CallRefused(str(reply.get("message") or "the call is over a sandbox limit"))


def capped_text(value: Any, cap: int) -> str:
    """A string field from the worker, capped (the worker is not trusted to cap it)."""
    if not isinstance(value, str):
        return ""
    if len(value) <= cap:
        return value
    half = cap // 2
    dropped = f"\n... [{len(value) - cap:,} characters dropped: output limit] ...\n"
    return f"{value[:half]}{dropped}{value[-half:]}"


def names_from(value: Any) -> list[str]:
    """A list of names from the worker, bounded in count and length."""
    if not isinstance(value, list):
        return []
    return [str(v)[:100] for v in value[:1000]]
