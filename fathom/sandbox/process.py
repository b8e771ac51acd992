"""One worker process as the parent sees it: its pipes, its raw output, how it ended."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections import deque
from dataclasses import dataclass, field

from fathom.sandbox.channel import Channel
from fathom.sandbox.output import CappedText

CRASH_TAIL = 2000  # characters of the worker's raw output quoted when it dies


@dataclass
class WorkerProcess:
    """One worker process, its channel and the thread draining its raw output."""

    popen: subprocess.Popen[bytes]
    channel: Channel
    raw_fd: int
    raw: CappedText
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=64))
    reader: threading.Thread | None = None

    def drain(self) -> None:
        """Collect fd-level output (C code, child processes, fatal errors) until EOF."""
        while True:
            try:
                chunk = os.read(self.raw_fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            text = chunk.decode("utf-8", "replace")
            self.raw.write(text)
            self.tail.append(text)

    def take_raw(self, limit: int) -> str:
        """Raw output that arrived since the last call."""
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
            self.reader.join(1.0)
        close_quietly(self.raw_fd)
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
