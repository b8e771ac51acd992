"""JSON messages between the parent and its worker, one per line, over dedicated pipes.

The worker's stdout belongs to user code, so messages travel on their own pair of
pipes. Messages are JSON objects (never pickle): the parent can validate
everything a possibly hostile worker sends, and a bad line costs one ignored
message, not the parent.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import threading
import time
from enum import StrEnum
from typing import Any

from fathom.errors import BudgetExceeded
from fathom.sandbox.base import Bridge

# Big enough for a long prompt or a full capped output, small enough to bound memory.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_READ_CHUNK = 1 << 16


class ChannelClosed(Exception):
    """The other side closed its end (the worker exited or the parent went away)."""


class BadMessage(Exception):
    """A line that is not a JSON object, or too long; it was skipped."""


class Channel:
    """Newline-delimited JSON objects over a read fd and a write fd; send is thread-safe."""

    def __init__(self, read_fd: int, write_fd: int, *, max_bytes: int = MAX_MESSAGE_BYTES):
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._skipping = False  # inside an over-long line: drop bytes up to its newline
        self._send_lock = threading.Lock()
        self._poller = select.poll()
        self._poller.register(read_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        """Write one message; ChannelClosed if the other side is gone."""
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        payload = data.encode("utf-8", "surrogatepass") + b"\n"
        with self._send_lock:
            view = memoryview(payload)
            try:
                while view:
                    written = os.write(self.write_fd, view)
                    view = view[written:]
            except (BrokenPipeError, OSError) as exc:
                raise ChannelClosed(str(exc)) from exc

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message, or None if none arrived within `timeout` seconds.

        Raises ChannelClosed at end of stream and BadMessage for a skipped line.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            line = self._take_line()
            if line is not None:
                return _decode(line)
            if not self._fill(deadline):
                return None

    def _take_line(self) -> bytes | None:
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > self.max_bytes:
                self._buffer.clear()
                self._skipping = True
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if self._skipping:
            self._skipping = False
            raise BadMessage(f"a message longer than {self.max_bytes:,} bytes was dropped")
        return line

    def _fill(self, deadline: float | None) -> bool:
        """Read more bytes; False on timeout."""
        wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
        if not self._poller.poll(wait_ms):
            return False
        try:
            chunk = os.read(self.read_fd, _READ_CHUNK)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc
        if not chunk:
            self.closed = True
            raise ChannelClosed("end of stream")
        self._buffer += chunk
        return True

    def close(self) -> None:
        """Close both descriptors; safe to call twice."""
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.closed = True


def _decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadMessage(f"a line that is not JSON was dropped ({exc})") from exc
    if not isinstance(message, dict):
        raise BadMessage(f"a message that is not a JSON object was dropped: {line[:80]!r}")
    return message


# --- calls from the worker ---------------------------------------------------------------
class Refusal(StrEnum):
    """Why the parent refused a call instead of answering it (a reply's `refused`)."""

    BUDGET = "budget"


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
    except Exception as exc:  # the Bridge should not raise; REPL code goes on if it does
        reply["value"] = f"Error: {fn} failed: {type(exc).__name__}: {exc}"
    return reply


def raise_refusal(reply: dict[str, Any]) -> None:
    """In the worker: raise what a refused reply stands for into the calling REPL code."""
    if reply.get("refused") == Refusal.BUDGET.value:
        raise BudgetExceeded(str(reply.get("message") or "budget exhausted"))


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
