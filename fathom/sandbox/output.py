"""Capturing what REPL code prints, capped, without touching other threads' output.

`sys.stdout` / `sys.stderr` are replaced (once) by routers that send each write to
the capture of the block that owns the writing thread, or to the original stream.
In the worker every thread belongs to the running block; in the parent process
only the thread executing the block does (the REPL's own `print` covers the
threads that code starts, see repl.py).
"""

from __future__ import annotations

import io
import sys
import threading
from collections import deque
from typing import TextIO


class CappedText:
    """Text written by a block, kept to `limit` characters: the head and the tail survive."""

    def __init__(self, limit: int):
        self._head_limit = max(limit // 2, 0)
        self._tail_limit = max(limit - self._head_limit, 0)
        self._head: list[str] = []
        self._head_len = 0
        self._tail: deque[str] = deque()
        self._tail_len = 0
        self._dropped = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        """Append `text`; beyond the limit the middle is dropped and counted."""
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        size = len(text)
        with self._lock:
            room = self._head_limit - self._head_len
            if room > 0:
                taken = text[:room]
                self._head.append(taken)
                self._head_len += len(taken)
                text = text[room:]
            if text:
                self._tail.append(text)
                self._tail_len += len(text)
                while self._tail_len > self._tail_limit:
                    extra = self._tail_len - self._tail_limit
                    first = self._tail[0]
                    if len(first) <= extra:
                        self._tail.popleft()
                        self._tail_len -= len(first)
                        self._dropped += len(first)
                    else:
                        self._tail[0] = first[extra:]
                        self._tail_len -= extra
                        self._dropped += extra
        return size

    def text(self) -> str:
        """Everything kept, with a marker where the output limit dropped characters."""
        with self._lock:
            head = "".join(self._head)
            tail = "".join(self._tail)
            if not self._dropped:
                return head + tail
            return (
                f"{head}\n... [{self._dropped:,} characters dropped: output limit] ...\n{tail}"
            )


class Capture:
    """The stdout and stderr of one running block."""

    def __init__(self, limit: int):
        self.stdout = CappedText(limit)
        self.stderr = CappedText(limit)


# Which capture a thread writes to; `_all` (the worker) takes every thread.
_by_thread: dict[int, Capture] = {}
_all: list[Capture | None] = [None]
_install_lock = threading.Lock()


def _target(stream: str) -> CappedText | None:
    capture = _by_thread.get(threading.get_ident()) or _all[0]
    if capture is None:
        return None
    return capture.stdout if stream == "stdout" else capture.stderr


class _Router(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr and routes each write by thread."""

    def __init__(self, stream: str, fallback: TextIO):
        super().__init__()
        self._stream = stream
        self.fallback = fallback

    def write(self, text: str) -> int:
        target = _target(self._stream)
        if target is None:
            return self.fallback.write(text)
        return target.write(text)

    def flush(self) -> None:
        if _target(self._stream) is None:
            self.fallback.flush()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        # Code that asks for a file descriptor writes below Python (C, subprocesses): in
        # the worker that reaches the raw-output pipe the parent reads.
        return self.fallback.fileno()


def install_routers() -> None:
    """Put routers in sys.stdout / sys.stderr unless they are there already."""
    with _install_lock:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router("stdout", sys.stdout)
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router("stderr", sys.stderr)


def router_for(capture: Capture | None, thread: int | None) -> None:
    """Send `thread`'s writes (every thread's when None) to `capture`; None stops capturing."""
    if thread is None:
        _all[0] = capture
    elif capture is None:
        _by_thread.pop(thread, None)
    else:
        _by_thread[thread] = capture
