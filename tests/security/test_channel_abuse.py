"""Abuse of the worker's channel by REPL code (real subprocess sandbox at `standard`): lines that
never end, floods, huge and deeply nested messages, oversize calls and batches. The parent must
keep its deadlines, stay linear in what it reads, hold bounded memory, and go on running."""

from __future__ import annotations

import json
import os
import select
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

import fathom
from fathom.context import Context
from fathom.lm import ScriptedLM
from fathom.sandbox import IsolationLevel, SandboxOptions
from fathom.sandbox.channel import MAX_DEPTH, BadMessage, Channel
from fathom.sandbox.subprocess import SubprocessSandbox
from fathom.trace import Event, ExecEvent, LMCall
from tests.security.conftest import FakeBridge, assert_healthy, restarted


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


@pytest.fixture
def quick(fake_bridge: FakeBridge, level: IsolationLevel) -> Iterator[SubprocessSandbox]:
    """A started sandbox at `level` (standard, strict) that gives up on an interrupt quickly."""
    box = SubprocessSandbox(
        SandboxOptions(isolation=level, memory_mb=1024, exec_timeout=30.0),
        interrupt_grace=0.5,
    )
    box.start(Context.from_value("public context"), fake_bridge)
    yield box
    box.close()


# --- 1. a line that never ends, and other floods, cannot hold the parent past its deadline ---

# Several threads write to the channel's fd, with the block's interrupt ignored.
FLOOD = """
import os, signal, sys, threading
signal.signal(signal.SIGINT, signal.SIG_IGN)
w = int(sys.argv[-1])
def flood():
    while True:
        os.write(w, PAYLOAD)
for _ in range(3):
    threading.Thread(target=flood, daemon=True).start()
flood()
"""
PAYLOADS = {
    "endless line": "b'x' * 65536",
    "small bad lines": "b'not json\\n[1, 2]\\n{\"op\": 1}\\n' * 1000",
    "deeply nested lines": "b'[' * 100000 + b'\\n'",
    "forged done messages": "b'{\"op\": \"done\", \"id\": -1, \"final\": \"forged\"}\\n' * 500",
}


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_a_flood_on_the_channel_ends_at_the_block_timeout(
    quick: SubprocessSandbox, payload: str
) -> None:
    quick.execute("kept = 'before'")
    began = time.monotonic()
    result = quick.execute(FLOOD.replace("PAYLOAD", payload), timeout=1.0)
    assert time.monotonic() - began < 10  # timeout 1 s + grace 0.5 s + restart
    assert result.final is None
    assert result.error is not None and "TimeoutError" in result.error
    assert restarted(result)
    assert quick.execute("kept").stdout == "'before'\n"
    assert_healthy(quick)


def test_an_endless_line_from_a_child_process_on_the_inherited_fd(
    quick: SubprocessSandbox,
) -> None:
    code = (
        "import subprocess, sys, time\n"
        "w = int(sys.argv[-1])\n"
        "writer = 'import os, sys\\nwhile True: os.write(int(sys.argv[1]), b\"y\" * 65536)'\n"
        "child = subprocess.Popen([sys.executable, '-c', writer, str(w)], pass_fds=(w,),\n"
        "                         start_new_session=True)\n"
        "time.sleep(0.5)  # the flood is on when the block ends\n"
    )
    began = time.monotonic()
    result = quick.execute(code, timeout=1.0)
    assert time.monotonic() - began < 10
    # The block itself finished, but its `done` drowned in the endless line: it timed out.
    assert result.error is not None and "TimeoutError" in result.error
    assert restarted(result)
    assert_healthy(quick)


def test_an_endless_line_cannot_hold_a_whole_run() -> None:
    rlm = fathom.RLM(
        ScriptedLM([repl(FLOOD.replace("PAYLOAD", PAYLOADS["endless line"])),
                    repl("FINAL('still here')")]),
        exec_timeout=1, budget=fathom.Budget(seconds=60),
    )
    began = time.monotonic()
    result = rlm.run("Flood the channel.", "context")
    assert time.monotonic() - began < 15  # timeout 1 s + the default grace 2 s + a restart
    assert result.answer == "still here" and result.stop_reason == "final"


# --- 2. receiving is linear, and an over-long line is skipped in bounded memory ---------------


class _Counting(Channel):
    """A Channel that counts the bytes it searches for newlines and its largest buffer."""

    searched = 0
    largest = 0

    def _take_line(self) -> bytearray | None:
        self.searched += len(self._buffer) - self._scanned
        self.largest = max(self.largest, len(self._buffer))
        return super()._take_line()


def _write_in_thread(fd: int, data: bytes) -> threading.Thread:
    def write() -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_each_byte_is_searched_for_a_newline_once() -> None:
    read_fd, write_fd = os.pipe()
    channel = _Counting(read_fd, write_fd, max_bytes=64 * 2**20)
    message = {"op": "call", "id": 1, "fn": "llm_query", "args": {"prompt": "z" * 32 * 2**20}}
    line = json.dumps(message).encode() + b"\n"
    writer = _write_in_thread(write_fd, line + b'{"op": "after"}\n')
    try:
        assert channel.recv(timeout=30) == message
        assert channel.recv(timeout=30) == {"op": "after"}
    finally:
        writer.join()
        channel.close()
    assert channel.searched <= len(line) + 100  # the old receive searched ~10,000x more


def test_an_over_long_line_is_skipped_in_bounded_memory() -> None:
    read_fd, write_fd = os.pipe()
    channel = _Counting(read_fd, write_fd, max_bytes=2**20)
    writer = _write_in_thread(write_fd, b"q" * (48 * 2**20) + b'\n{"op": "next"}\n')
    try:
        with pytest.raises(BadMessage, match=r"longer than the 1\.0 MB cap"):
            channel.recv(timeout=30)
        assert channel.recv(timeout=30) == {"op": "next"}
    finally:
        writer.join()
        channel.close()
    assert channel.largest <= 2 * 2**20 + 100  # the cap plus one read, never the whole line
    assert channel.searched <= 3 * 2**20


def test_a_line_that_never_ends_returns_at_the_deadline() -> None:
    read_fd, write_fd = os.pipe()
    channel = Channel(read_fd, write_fd)
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            if select.select([], [write_fd], [], 0.05)[1]:  # room for one page: never blocks
                os.write(write_fd, b"x" * 4096)

    writer = threading.Thread(target=flood, daemon=True)
    writer.start()
    try:
        began = time.monotonic()
        assert channel.recv(timeout=0.3) is None
        assert time.monotonic() - began < 2
    finally:
        stop.set()
        writer.join()
        channel.close()


def test_a_big_prompt_crosses_the_channel_in_seconds(
    fake_bridge: FakeBridge, quick: SubprocessSandbox
) -> None:
    began = time.monotonic()
    result = quick.execute("len(llm_query('x' * (48 * 2**20)))")
    assert time.monotonic() - began < 10
    assert result.error is None, result.error
    assert result.stdout == f"{48 * 2**20 + len('answer to ')}\n"
    assert len(fake_bridge.calls[0][0]) == 48 * 2**20


# --- 3. a bad line is one ignored message, never the parent's end -----------------------------


def test_deeply_nested_lines_are_refused_as_bad_messages(
    sandbox: SubprocessSandbox, fake_bridge: FakeBridge
) -> None:
    deep_call = json.dumps({"op": "call", "id": 7, "fn": "rlm_query",
                            "args": {"prompt": "deep", "context": _nested(MAX_DEPTH + 5)}})
    result = sandbox.execute(
        "import os, sys\n"
        "w = int(sys.argv[-1])\n"
        "os.write(w, b'[' * 100000 + b'\\n')\n"
        "os.write(w, b'{\"a\":' * 50000 + b'\\n')\n"
        f"os.write(w, {deep_call!r}.encode() + b'\\n')\n"
        "os.write(w, b'\\xff\\xfe not utf-8\\n')\n"
        "print('carried on')"
    )
    assert result.stdout == "carried on\n"
    assert result.notice is not None and "malformed" in result.notice
    assert "nested deeper" in result.notice and "RecursionError" in result.notice
    assert fake_bridge.calls == []  # the forged deep call never reached the bridge
    assert_healthy(sandbox)


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


@pytest.mark.parametrize("levels", [MAX_DEPTH + 10, 5000])
def test_a_context_nested_too_deep_is_refused_in_the_repl_code(
    sandbox: SubprocessSandbox, fake_bridge: FakeBridge, levels: int
) -> None:
    result = sandbox.execute(
        "value = 'leaf'\n"
        f"for _ in range({levels}):\n"
        "    value = {'k': value}\n"
        "try:\n"
        "    rlm_query('p', context=value)\n"
        "except ValueError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    assert result.stdout.startswith("CallRefused rlm_query: the message is nested deeper than")
    assert fake_bridge.calls == []
    assert sandbox.execute("rlm_query('p', context={'a': {'b': 1}})").error is None


# --- 4. caps on one message and on one batch, told to the REPL code -------------------------


@pytest.mark.parametrize("sandbox_name", ["subprocess", "inprocess"])
def test_a_batch_over_max_batch_is_refused_with_a_clear_error(sandbox_name: str) -> None:
    code = (
        "print(len(llm_query_batched(['a'] * 10)))\n"
        "try:\n"
        "    llm_query_batched(['a'] * 11)\n"
        "except ValueError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "FINAL('ok')"
    )
    events: list[Event] = []
    rlm = fathom.RLM(ScriptedLM([repl(code)]), sub_model=ScriptedLM(lambda m: "fine"),
                     sandbox=sandbox_name, max_batch=10, on_event=events.append)
    assert rlm.run("Ask too much.", "context").answer == "ok"
    (run,) = [e for e in events if isinstance(e, ExecEvent)]
    assert run.stdout.splitlines() == [
        "10",
        "CallRefused llm_query_batched got 11 prompts, over the limit of 10 per call: "
        "split them into calls of at most 10.",
    ]
    assert sum(isinstance(e, LMCall) and e.role == "sub" for e in events) == 10


def test_an_oversize_prompt_is_refused_in_the_worker_not_dropped() -> None:
    code = (
        "try:\n"
        "    llm_query('x' * (2 * 2**20))\n"
        "except ValueError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "FINAL(llm_query('small'))"
    )
    events: list[Event] = []
    rlm = fathom.RLM(ScriptedLM([repl(code)]), sub_model=ScriptedLM(lambda m: "fine"),
                     max_message_mb=1, on_event=events.append)
    began = time.monotonic()
    assert rlm.run("Ask too much.", "context").answer == "fine"
    assert time.monotonic() - began < 20  # refused at once, not waited out
    (run,) = [e for e in events if isinstance(e, ExecEvent)]
    assert run.stdout.startswith(
        "CallRefused llm_query: the message is 2.0 MB, over the 1.0 MB cap on one message"
    )
    assert "split the prompt or the batch" in run.stdout
    assert [e.prompt for e in events if isinstance(e, LMCall) and e.role == "sub"] == ["small"]


def test_an_answer_over_the_cap_is_refused_in_the_repl_code() -> None:
    bridge = FakeBridge()
    bridge.llm_query = lambda prompt, model=None: "y" * (2 * 2**20)  # type: ignore[method-assign]
    box = SubprocessSandbox(SandboxOptions(isolation="standard", memory_mb=1024, max_message_mb=1))
    box.start(Context.from_value("public context"), bridge)
    try:
        result = box.execute("try:\n    llm_query('big answer, please')\n"
                             "except ValueError as exc:\n    print(type(exc).__name__, exc)")
        assert result.stdout.startswith("CallRefused llm_query: the answer could not be sent back")
        assert box.execute("print(6 * 7)").stdout == "42\n"
    finally:
        box.close()


def test_output_over_the_cap_is_an_error_not_a_lost_block(fake_bridge: FakeBridge) -> None:
    options = SandboxOptions(isolation="standard", memory_mb=1024, max_message_mb=1,
                             output_limit=4_000_000)
    box = SubprocessSandbox(options)
    box.start(Context.from_value("public context"), fake_bridge)
    try:
        began = time.monotonic()
        result = box.execute("print('z' * 3_000_000)")
        assert time.monotonic() - began < 10
        assert result.error is not None and "could not be sent back" in result.error
        assert not restarted(result)
        assert box.execute("print(6 * 7)").stdout == "42\n"
    finally:
        box.close()


def test_a_forged_call_with_a_huge_args_dict_is_answered_once() -> None:
    code = (
        "import json, os, sys\n"
        "w = int(sys.argv[-1])\n"
        "args = {f'junk{i}': i for i in range(200_000)}\n"
        "args['prompt'] = 'forged'\n"
        "os.write(w, json.dumps({'op': 'call', 'id': 10**9, 'fn': 'llm_query', 'args': args})"
        ".encode() + b'\\n')\n"
        "FINAL(llm_query('asked'))"
    )
    events: list[Event] = []
    rlm = fathom.RLM(ScriptedLM([repl(code)]), sub_model=ScriptedLM(lambda m: "fine"),
                     on_event=events.append)
    assert rlm.run("Forge a call.", "context").answer == "fine"
    prompts = sorted(e.prompt for e in events if isinstance(e, LMCall) and e.role == "sub")
    assert prompts == ["asked", "forged"]


def test_a_flood_of_forged_calls_is_bounded_in_the_parent() -> None:
    bridge = FakeBridge()
    answered = threading.Semaphore(0)

    def slow(prompt: str, model: str | None = None) -> str:
        time.sleep(0.05)
        answered.release()
        return "late"

    bridge.llm_query = slow  # type: ignore[method-assign]
    box = SubprocessSandbox(SandboxOptions(isolation="standard", memory_mb=1024))
    box.start(Context.from_value("public context"), bridge)
    try:
        result = box.execute(
            "import os, sys\n"
            "w = int(sys.argv[-1])\n"
            "line = b'{\"op\": \"call\", \"id\": 5, \"fn\": \"llm_query\", "
            "\"args\": {\"prompt\": \"flood\"}}\\n'\n"
            "for _ in range(5000):\n"
            "    os.write(w, line)\n"
            "print('flooded')"
        )
        assert result.stdout == "flooded\n"
        assert result.notice is not None and "already waiting" in result.notice
    finally:
        box.close()  # drops the queued calls
    assert _drained(answered) <= 300  # at most the calls admitted in flight ran


def _drained(counter: threading.Semaphore) -> int:
    count = 0
    while counter.acquire(timeout=0.5):
        count += 1
    return count


# --- 8. a huge batch under an exhausted budget costs the parent little ------------------------


def test_a_huge_refused_batch_holds_bounded_memory_in_the_parent() -> None:
    code = (
        "try:\n"
        "    llm_query_batched([''] * 200_000)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    events: list[Event] = []
    rlm = fathom.RLM(
        ScriptedLM([repl(code), repl("FINAL('never')")]),
        sub_model=ScriptedLM(lambda m: "never asked"),
        budget=fathom.Budget(calls=1),  # the root's first turn; every sub-call is refused
        max_batch=200_000, max_concurrency=16, on_event=events.append,
    )
    tracemalloc.start()
    try:
        began = time.monotonic()
        result = rlm.run("Ask everything.", "context")
        seconds = time.monotonic() - began
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.stop_reason == "budget"
    assert seconds < 20
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MB"
    refused = [e for e in events if isinstance(e, LMCall) and e.role == "sub"]
    assert 1 <= len(refused) <= 2 * 16  # the window in flight, not 200,000
    assert all(e.refused for e in refused)
    (run,) = [e for e in events if isinstance(e, ExecEvent)]
    assert run.stdout == "BudgetExceeded\n"


# --- a worker that stops reading its channel cannot hang the parent's sends ----------------

# The reader thread is moved onto a pipe nobody writes; the channel's own pipe is kept open
# (so the parent sees no end of stream) and is never read again.
STOP_READING = """
import os, sys, threading
r = int(sys.argv[-2])
keep = os.dup(r)
idle, _unused = os.pipe()
os.dup2(idle, r)
threading.Thread(target=llm_query, args=("p" * 300_000,), daemon=True).start()
"""


def test_a_worker_that_stops_reading_is_restarted_not_waited_for(fake_bridge: FakeBridge) -> None:
    box = SubprocessSandbox(
        SandboxOptions(isolation="standard", memory_mb=1024, exec_timeout=30.0),
        interrupt_grace=0.5, stall_timeout=1.0,
    )
    box.start(Context.from_value("public context"), fake_bridge)
    try:
        box.execute("kept = 'before'")
        box.execute(STOP_READING)
        time.sleep(0.5)  # the parent's answer (600 KB) is now stuck in the full pipe
        began = time.monotonic()
        result = box.execute("x = 1", timeout=20.0)
        assert time.monotonic() - began < 10  # two stalls of 1 s and a restart, not forever
        assert restarted(result)
        assert box.execute("kept").stdout == "'before'\n"
        assert_healthy(box)
    finally:
        box.close()
