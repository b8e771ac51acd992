"""The in-process sandbox: same REPL semantics, Bridge called directly, best-effort timeout."""

from __future__ import annotations

import threading

import pytest

from fathom.context import Context
from fathom.errors import SandboxError
from fathom.sandbox import SandboxOptions, create
from fathom.sandbox.inprocess import InProcessSandbox


@pytest.fixture
def sandbox(bridge):
    box = InProcessSandbox(SandboxOptions(exec_timeout=5))
    box.start(Context.from_value({"a.txt": "alpha", "b.txt": "beta"}), bridge)
    yield box
    box.close()


def test_registry_builds_it():
    box = create("inprocess", SandboxOptions())
    assert isinstance(box, InProcessSandbox)
    assert box.name == "inprocess"


def test_state_persists_and_final(sandbox):
    sandbox.execute("keys = sorted(context)")
    assert sandbox.execute("keys").stdout == "['a.txt', 'b.txt']\n"
    result = sandbox.execute("FINAL(context['b.txt'].upper())")
    assert result.final == "BETA"
    assert result.seconds > 0


def test_bridge_is_called_directly_from_the_block(sandbox, bridge):
    result = sandbox.execute("print(llm_query('hello'))\nllm_query_batched(['1', '2', '3'])")
    assert result.stdout == "answer to hello\n['answer to 1', 'answer to 2', 'answer to 3']\n"
    assert bridge.kinds().count("llm_query_batched") == 1


def test_batched_calls_run_concurrently(make_bridge):
    bridge = make_bridge(delay=0.2)
    box = InProcessSandbox()
    box.start(Context.from_value("x"), bridge)
    result = box.execute("r = llm_query_batched([str(i) for i in range(8)])\nlen(r)")
    assert result.stdout == "8\n"
    assert bridge.max_in_flight >= 4
    box.close()


def test_timeout_interrupts_a_python_loop_and_keeps_state(sandbox):
    sandbox.execute("kept = 'yes'")
    result = sandbox.execute("n = 0\nwhile True:\n    n += 1", timeout=0.3)
    assert result.error is not None and "TimeoutError" in result.error
    assert result.notice is not None and "timeout" in result.notice
    assert sandbox.execute("kept, n > 0").stdout == "('yes', True)\n"


def test_timeout_cannot_eat_the_interrupt_with_except_exception(sandbox):
    code = "while True:\n    try:\n        sum(range(1000))\n    except Exception:\n        pass"
    result = sandbox.execute(code, timeout=0.3)
    assert result.error is not None and "TimeoutError" in result.error


def test_unstoppable_block_is_reported_and_blocks_the_repl(sandbox):
    release = threading.Event()
    sandbox._require().namespace["release"] = release  # a wait the interrupt cannot break
    result = sandbox.execute("release.wait()", timeout=0.2)
    assert result.notice is not None and "could not be interrupted" in result.notice
    busy = sandbox.execute("1")
    assert busy.error is not None and "still running" in busy.error
    release.set()


def test_isolation_is_off_and_close_is_idempotent(sandbox):
    assert sandbox.isolation() == {"process": "off"}
    sandbox.close()
    sandbox.close()
    with pytest.raises(SandboxError, match="start"):
        sandbox.execute("1")


def test_concurrent_sandboxes_in_one_process_keep_their_own_output(bridge):
    boxes = [InProcessSandbox() for _ in range(2)]
    for i, box in enumerate(boxes):
        box.start(Context.from_value(f"ctx{i}"), bridge)
    results: dict[int, str] = {}

    def run(i: int) -> None:
        code = (
            "import sys, time\n"
            "for _ in range(20):\n    sys.stdout.write(context)\n    time.sleep(0.001)"
        )
        results[i] = boxes[i].execute(code).stdout

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: "ctx0" * 20, 1: "ctx1" * 20}
