"""Crash recovery keeps to the block's time: a variable whose unpickling stalls (sleeps,
loops, swallows the interrupt) is dropped and named, instead of holding the block for the
60 s start timeout; the run's time budget holds too."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import fathom
from fathom.lm import ScriptedLM
from fathom.sandbox.base import ExecResult
from fathom.sandbox.subprocess import SubprocessSandbox
from fathom.trace import ExecEvent

from .conftest import FakeBridge, restarted, start_sandbox

# A value whose unpickling sleeps for an hour (only its restore is slow, not the block).
SLEEPY = """
import os, time
class Sleepy:
    def __reduce__(self):
        return (time.sleep, (3600,))
slow = Sleepy()
kept = {'a': 1}
"""
# One that catches the interrupt and keeps going: only killing the worker stops it.
STUBBORN = """
import os
class Stubborn:
    def __reduce__(self):
        return (exec, ("import time\\nwhile True:\\n    try:\\n        time.sleep(10)\\n"
                       "    except BaseException:\\n        pass\\n",))
stubborn = Stubborn()
kept = {'a': 1}
"""


@pytest.fixture
def sandbox(fake_bridge: FakeBridge) -> Iterator[SubprocessSandbox]:
    box = start_sandbox(fake_bridge, exec_timeout=2.0)
    yield box
    box.close()


def _timed(
    sandbox: SubprocessSandbox, code: str, timeout: float | None = None
) -> tuple[ExecResult, float]:
    began = time.monotonic()
    result = sandbox.execute(code, timeout=timeout)
    return result, time.monotonic() - began


def test_a_variable_that_sleeps_while_restoring_is_dropped_within_the_block(
    sandbox: SubprocessSandbox,
) -> None:
    assert sandbox.execute(SLEEPY).error is None
    result, seconds = _timed(sandbox, "os._exit(3)")
    assert restarted(result)
    assert seconds < 2.0 + 1.0 + 1.5, seconds  # the block's time + the grace, with slack
    assert "lost: slow (slow took too long to restore)" in (result.notice or ""), result.notice
    assert "kept" in (result.notice or "").split("lost:")[0]
    after = sandbox.execute("print(kept)\nslow")
    assert after.stdout == "{'a': 1}\n" and "NameError" in (after.error or ""), after


def test_one_that_ignores_the_interrupt_is_cut_off_and_named(
    sandbox: SubprocessSandbox,
) -> None:
    assert sandbox.execute(STUBBORN).error is None
    result, seconds = _timed(sandbox, "os._exit(3)", timeout=1.0)
    assert restarted(result)
    # 1 s of block + 1 s grace, then the wait for a worker start (2 s + 2 starts), then a
    # clean start: far from the 60 s start timeout.
    assert seconds < 8.0, seconds
    notice = result.notice or ""
    assert "stubborn" in notice and "kept" in notice.split("lost:")[1], notice
    assert "(restoring them failed or took too long)" in notice
    after = sandbox.execute("print(6 * 7)\nstubborn")
    assert after.stdout == "42\n" and "NameError" in (after.error or ""), after


def test_a_restart_before_a_block_leaves_it_the_rest_of_its_time(
    sandbox: SubprocessSandbox,
) -> None:
    """The worker died idle (a thread of the last block): restoring comes out of the next
    block's time, which is not granted twice."""
    setup = SLEEPY + "import threading\nthreading.Timer(0.2, os._exit, (3,)).start()\n"
    assert sandbox.execute(setup).error is None
    time.sleep(0.6)
    result, seconds = _timed(sandbox, "print(kept)", timeout=2.0)
    assert "could not run at first" in (result.notice or ""), result.notice
    assert result.stdout.endswith("{'a': 1}\n"), result
    assert seconds < 2.0 + 1.0 + 1.5, seconds


def test_a_planted_snapshot_runs_no_code_before_the_restore(
    sandbox: SubprocessSandbox,
) -> None:
    """The snapshot's index is read with a loader that refuses code, so a file REPL code
    wrote in its place cannot stall (or do anything in) the next worker's start."""
    plant = (
        "import os, pickle, time\n"
        "class Hang:\n"
        "    def __reduce__(self):\n"
        "        return (time.sleep, (3600,))\n"
        "with open('.fathom-snapshot.pkl', 'wb') as f:\n"
        "    pickle.dump(Hang(), f)\n"
        "del Hang\n"
    )
    assert sandbox.execute(plant).error is None
    result, seconds = _timed(sandbox, "os._exit(3)")
    assert restarted(result) and seconds < 2.0 + 1.0 + 1.5, (seconds, result.notice)
    assert sandbox.execute("print(6 * 7)").stdout == "42\n"


def test_the_run_budget_bounds_a_stalled_restore(fake_bridge: FakeBridge) -> None:
    """The issue's run, scaled down: exec_timeout=2 and Budget(seconds=6)."""
    root = ScriptedLM([
        f"```repl\n{SLEEPY}\n```",
        "```repl\nos._exit(3)\n```",
        "```repl\nprint(kept)\n```",
        "```repl\nFINAL(str(kept['a']))\n```",
    ])
    seen: list[object] = []
    began = time.monotonic()
    result = fathom.RLM(root, sandbox="subprocess", exec_timeout=2, memory_mb=1024,
                        budget=fathom.Budget(seconds=6), on_event=seen.append).run("q", "c")
    assert time.monotonic() - began < 6 + 1.5
    assert result.answer == "1", result
    crash = next(e for e in seen if isinstance(e, ExecEvent) and "os._exit" in e.code)
    assert crash.seconds < 2.0 + 1.0 + 1.0, crash.seconds
    assert "slow took too long to restore" in (crash.notice or "")
