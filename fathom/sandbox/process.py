"""One worker process as the parent sees it: its pipes, its raw output, how it ended."""

from __future__ import annotations

import codecs
import contextlib
import os
import select
import signal
import subprocess
import threading
from collections import deque
from dataclasses import dataclass, field

from fathom.sandbox.channel import Channel
from fathom.sandbox.output import CappedText

CRASH_TAIL = 2000  # characters of the worker's raw output quoted when it dies

# `python -m fathom.sandbox.worker` would first import fathom/__init__.py (the engine, the
# model registry, asyncio: ~100 ms). The worker needs none of it, so it starts through an
# empty `fathom` package object that still finds every submodule.
BOOT = (
    "import importlib.util, sys, types\n"
    "spec = importlib.util.find_spec('fathom')\n"
    "package = types.ModuleType('fathom')\n"
    "package.__path__ = list(spec.submodule_search_locations)\n"
    "sys.modules['fathom'] = package\n"
    "from fathom.sandbox.worker import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


@dataclass
class WorkerProcess:
    """One worker process, its channel and the thread draining its raw output."""

    popen: subprocess.Popen[bytes]
    channel: Channel
    raw_fd: int
    raw: CappedText
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=64))
    reader: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )
    _eof: bool = False
    _stopping: bool = False

    def drain(self) -> None:
        """Thread: collect fd-level output (C code, child processes, fatal errors) until EOF."""
        os.set_blocking(self.raw_fd, False)
        poller = select.poll()
        poller.register(self.raw_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        # A child that left the worker's session may hold the pipe open forever: wake up
        # now and then to notice stop().
        while not self._eof and not self._stopping:
            poller.poll(500)
            self.pump()
        self.pump()
        with self._lock:  # closed here, under the lock, so pump() never reads a reused number
            self._eof = True
            close_quietly(self.raw_fd)

    def pump(self) -> None:
        """Read the raw output waiting in the pipe, without blocking."""
        with self._lock:
            while not self._eof:
                try:
                    chunk = os.read(self.raw_fd, 1 << 16)
                except BlockingIOError:
                    return
                except OSError:
                    chunk = b""
                if not chunk:
                    self._eof = True
                    return
                text = self._decoder.decode(chunk)
                self.raw.write(text)
                self.tail.append(text)

    def take_raw(self, limit: int) -> str:
        """Raw output written before now (everything already in the pipe is read first)."""
        self.pump()
        with self._lock:
            text = self.raw.text()
            self.raw = CappedText(limit)
        return text

    def stop(self) -> int | None:
        """Kill the worker and everything it started; reap it; close the pipes."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)  # its own session: takes its children
            except OSError:
                self.popen.kill()
        code = self.popen.wait()
        self.channel.close()
        if self.reader is not None:
            self._stopping = True
            self.reader.join(1.0)
        return code


def split_fatal(raw: str) -> tuple[str, str]:
    """Split the interpreter's fatal-error report off the output; keep its REPL lines only."""
    start = raw.find("Fatal Python error")
    if start < 0:
        return raw, ""
    report = raw[start:].splitlines()
    kept = [report[0], *(line.strip() for line in report[1:] if '"<repl>"' in line)]
    return raw[:start], "\n".join(kept)[-CRASH_TAIL:]


def describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGSEGV": "segmentation fault", "SIGKILL": "killed, most likely out of memory",
                "SIGABRT": "aborted", "SIGBUS": "bus error"}.get(name)
        return f"{name}: {hint}" if hint else name
    return f"exit code {code}"


def close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
