"""The default sandbox, through a real worker process: semantics, limits, crash recovery."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fathom.context import Context
from fathom.errors import ContextError, SandboxError
from fathom.sandbox import SandboxOptions, create
from fathom.sandbox.isolation.cgroup import WorkerCgroups, probe_cgroups
from fathom.sandbox.subprocess import SubprocessSandbox

CONTEXT = "The quick brown fox. " * 100
RESTARTED = "The worker was restarted and the context reloaded"


def restarted(result) -> bool:
    """The notice tells the model the worker was replaced."""
    return RESTARTED in (result.notice or "")


@pytest.fixture
def start(bridge):
    """Start subprocess sandboxes (closed at the end of the test)."""
    boxes: list[SubprocessSandbox] = []

    def _start(context=CONTEXT, the_bridge=None, grace=1.0, **options) -> SubprocessSandbox:
        options.setdefault("memory_mb", 1024)
        box = SubprocessSandbox(SandboxOptions(**options), interrupt_grace=grace)
        ctx = Context.from_value(context)
        box.start(ctx, the_bridge or bridge)
        box._test_context = ctx  # keep the Context (and its spilled file) alive
        boxes.append(box)
        return box

    yield _start
    for box in boxes:
        box.close()


def _gone(pid: int) -> bool:
    """The process no longer exists (neither running nor a zombie)."""
    return not Path(f"/proc/{pid}").exists()


def test_registry_default_is_subprocess():
    assert isinstance(create("subprocess", SandboxOptions()), SubprocessSandbox)


def test_state_persists_echo_and_final(start):
    box = start()
    assert box.execute("n = len(context)").error is None
    assert box.execute("n").stdout == f"{len(CONTEXT)}\n"
    assert box.execute("words = context.split()\nlen(words)").stdout == "400\n"
    assert box.execute("FINAL(words[1])\nprint('unreached')").final == "quick"


def test_final_var_forms(start):
    box = start()
    box.execute("answer = 'Lisbon'")
    assert box.execute("FINAL_VAR('answer')").final == "Lisbon"
    missing = box.execute("FINAL_VAR('nope')")
    assert missing.final is None
    assert missing.error is not None and "FINAL_VAR: no variable named 'nope'" in missing.error
    assert box.execute("FINAL_VAR(42)").final == "42"


def test_dict_and_list_contexts_load_in_the_worker(start):
    assert start(context={"a.md": "x", "b.md": "yy"}).execute("sorted(context)").stdout == (
        "['a.md', 'b.md']\n"
    )
    assert start(context=[1, "two", {"k": None}]).execute("context").stdout == (
        "[1, 'two', {'k': None}]\n"
    )


def test_output_stderr_threads_and_traceback(start):
    box = start()
    result = box.execute(
        "import sys, threading\nprint('out')\nprint('err', file=sys.stderr)\n"
        "t = threading.Thread(target=lambda: print('thread'))\nt.start(); t.join()\n"
        "def f():\n    return {}['missing']\nf()"
    )
    assert result.stdout == "out\nthread\n"
    assert result.stderr == "err\n"
    assert result.error is not None
    assert "return {}['missing']" in result.error and "KeyError: 'missing'" in result.error
    assert "worker.py" not in result.error


def test_fd_level_output_reaches_the_result(start):
    result = start().execute("import os\n_ = os.system('echo from-a-child-process')")
    assert "from-a-child-process" in result.stdout


def test_output_limit(start):
    result = start(output_limit=1000).execute("print('x' * 50_000)\nprint('END')")
    assert len(result.stdout) < 1200
    assert "characters dropped: output limit" in result.stdout
    assert result.stdout.rstrip().endswith("END")


def test_api_key_in_parent_env_is_invisible(start, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-123")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-456")
    box = start()
    result = box.execute(
        "import os\n"
        "print(os.environ.get('OPENAI_API_KEY'), os.environ.get('ANTHROPIC_API_KEY'))\n"
        "try:\n"
        "    print('sk-test-secret' in open('/proc/self/environ').read())\n"
        "except OSError:\n"
        "    print(False)  # isolation may forbid reading it at all"
    )
    assert result.stdout == "None None\nFalse\n"


def test_stdin_is_closed_not_hanging(start):
    result = start().execute("input()", timeout=10)
    assert result.error is not None and "EOFError" in result.error


def test_sub_calls_reach_the_bridge(start, bridge):
    box = start()
    result = box.execute(
        "print(llm_query('q', model='openai:x'))\n"
        "print(llm_query_batched(['a', 'b']))\n"
        "print(rlm_query('sub', context={'k': [1]}))\n"
        "print(rlm_query_batched(['p1', 'p2'], contexts=['c1', 'c2']))"
    )
    assert result.error is None, result.error
    assert result.stdout.splitlines() == [
        "answer to q",
        "['answer to a', 'answer to b']",
        "answer to rlm sub ctx={'k': [1]}",
        "['rlm p1', 'rlm p2']",
    ]
    assert ("llm_query", ("q", "openai:x")) in bridge.calls
    assert ("llm_query_batched", (["a", "b"], None)) in bridge.calls
    assert ("rlm_query_batched", (["p1", "p2"], ["c1", "c2"])) in bridge.calls


def test_non_json_rlm_context_is_an_error_string(start):
    result = start().execute("rlm_query('q', context=object())")
    assert result.error is None
    assert result.stdout.startswith("'Error: rlm_query arguments must be JSON-like")


def test_batched_call_is_one_request_fanned_out_by_the_bridge(start, make_bridge):
    bridge = make_bridge(delay=0.3)
    box = start(the_bridge=bridge)
    result = box.execute("r = llm_query_batched([f'p{i}' for i in range(10)])\nlen(r), r[7]")
    assert result.stdout == "(10, 'answer to p7')\n"
    assert bridge.kinds().count("llm_query_batched") == 1
    assert bridge.max_in_flight == 10  # concurrent, not one after another


def test_concurrent_llm_query_from_threads_run_in_parallel(start, make_bridge):
    bridge = make_bridge(delay=0.3)
    box = start(the_bridge=bridge)
    result = box.execute(
        "from concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor(8) as pool:\n"
        "    answers = list(pool.map(llm_query, [str(i) for i in range(8)]))\n"
        "answers[3]"
    )
    assert result.stdout == "'answer to 3'\n"
    assert bridge.max_in_flight >= 6
    assert len(bridge.threads) >= 6  # parent threads, one per request


def test_budget_stop_ends_a_runaway_loop(start, make_bridge, refusing):
    bridge = make_bridge(reply=refusing("Budget reached: calls limit"))
    result = start(the_bridge=bridge).execute("while True:\n    llm_query('more')")
    assert result.error is not None and "BudgetExceeded" in result.error
    assert len(bridge.calls) == 1


def test_timeout_interrupts_and_keeps_state(start):
    box = start()
    box.execute("kept = [1, 2, 3]")
    began = time.monotonic()
    result = box.execute("while True:\n    pass", timeout=0.5)
    assert time.monotonic() - began < 10  # stopped, not left running
    assert result.error is not None and "TimeoutError" in result.error
    assert "while True" in result.error
    assert result.notice is not None and "timeout" in result.notice
    assert not restarted(result)
    assert box.execute("kept").stdout == "[1, 2, 3]\n"


def test_timeout_that_ignores_the_interrupt_kills_and_restarts(start):
    box = start(grace=0.5)
    box.execute("kept = {'a': 1}\ndef helper(x):\n    return x * 2\n")
    pid = box.pid
    code = (
        "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n"
        "    except KeyboardInterrupt:\n        pass"
    )
    result = box.execute(code, timeout=0.5)
    assert restarted(result)
    assert result.error is not None and "TimeoutError" in result.error
    assert result.notice is not None and "killed" in result.notice and "restored" in result.notice
    assert box.pid != pid and pid is not None and _gone(pid)
    assert box.execute("kept, helper(21)").stdout == "({'a': 1}, 42)\n"


def test_os_exit_restarts_restores_and_reports_losses(start):
    box = start()
    box.execute(
        "import re\n"
        "numbers = list(range(5))\n"
        "class Point:\n    def __init__(self, x):\n        self.x = x\n"
        "p = Point(3)\n"
        "gen = (i for i in range(3))\n"
        "alias = context\n"
    )
    result = box.execute("import os\nnew_var = 1\nos._exit(7)")
    assert restarted(result)
    assert result.error is not None and "exit code 7" in result.error
    assert result.notice is not None and "; lost: gen." in result.notice
    assert "numbers" in result.notice.partition("; lost:")[0]  # restored
    after = box.execute("numbers, p.x, re.sub('a', 'b', 'aa'), alias is context, len(context)")
    assert after.stdout == f"([0, 1, 2, 3, 4], 3, 'bb', True, {len(CONTEXT)})\n"
    missing = box.execute("new_var")
    assert missing.error is not None and "NameError" in missing.error


def test_worker_dying_between_blocks_is_restarted_before_the_next(start):
    box = start()
    box.execute(
        "import os, threading, time\nkept = 5\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), os._exit(4))).start()"
    )
    time.sleep(0.8)
    result = box.execute("kept * 2")
    assert restarted(result)
    assert result.stdout.endswith("10\n")
    assert result.notice is not None and "died after the previous block" in result.notice
    assert result.error is None


def test_modules_planted_in_scratch_do_not_load_in_the_next_worker(start):
    box = start()
    box.execute(
        "import os\n"
        "for name in ('json', 'pickle', 'fathom'):\n"
        "    with open(name + '.py', 'w') as f:\n"
        "        f.write('open(\"planted-ran\", \"w\").close()\\n')\n"
        "os._exit(1)"
    )
    assert box.execute("import os\nos.path.exists('planted-ran')").stdout == "False\n"


def test_a_snapshot_that_kills_its_loader_gives_a_clean_worker(start):
    box = start()
    box.execute("x = 1")
    result = box.execute(
        "import os, pickle\n"
        "class Boom:\n"
        "    def __reduce__(self):\n"
        "        return (os._exit, (9,))\n"
        "evil = {'x': ('pickle', pickle.dumps(Boom()))}\n"
        "with open('.fathom-snapshot.pkl', 'wb') as f:\n"
        "    pickle.dump(evil, f)\n"
        "os._exit(1)"
    )
    assert restarted(result)
    assert result.notice is not None and "lost: x (restoring them failed" in result.notice
    assert box.execute("1 + 1").stdout == "2\n"


def test_segfault_via_ctypes_restarts(start):
    box = start()
    box.execute("survivor = 'still here'")
    result = box.execute("import ctypes\nctypes.string_at(0)")
    assert restarted(result)
    assert result.error is not None and "SIGSEGV" in result.error
    assert '"<repl>"' in result.error  # where user code crashed
    assert box.execute("survivor").stdout == "'still here'\n"


def test_memory_bomb_is_stopped_and_worker_stays_usable(start):
    box = start(memory_mb=512)
    box.execute("small = 'ok'")
    result = box.execute("hog = []\nwhile True:\n    hog.append(bytearray(10 * 1024 * 1024))")
    assert result.error is not None
    assert "MemoryError" in result.error or restarted(result)
    if not restarted(result):
        assert result.notice is not None and "memory limit" in result.notice
    assert box.execute("del hog\nsmall").stdout.endswith("'ok'\n") or restarted(result)
    assert box.execute("small").stdout == "'ok'\n"


def test_forged_and_malformed_channel_messages_are_ignored(start, bridge):
    box = start()
    result = box.execute(
        "import os, sys, json\n"
        "fd = int(sys.argv[2])\n"
        "os.write(fd, b'not json at all\\n')\n"
        "os.write(fd, json.dumps({'op': 'call', 'id': 99, 'fn': 'os.system', 'args': {}})"
        ".encode() + b'\\n')\n"
        "os.write(fd, json.dumps({'op': 'done', 'id': -5, 'final': 'forged'}).encode() + b'\\n')\n"
        "for _ in range(1000):\n"
        "    os.write(fd, b'[1, 2]\\n')\n"
        "print('carried on')"
    )
    assert result.stdout == "carried on\n"
    assert result.final is None
    assert result.notice is not None and "malformed" in result.notice
    assert len(result.notice) < 1000  # a flood is summarised, not repeated
    assert bridge.calls == []
    assert box.execute("1 + 1").stdout == "2\n"


def test_isolation_names_each_layer_in_trace_form(start):
    layers = start().isolation()
    assert layers["environment"] == "active"
    assert all(v.startswith(("active", "off", "unavailable")) for v in layers.values())


def test_close_during_a_block_leaves_no_scratch_dir_and_no_worker(start, make_bridge):
    # A cancelled run closes its sandbox from another thread while the block still runs:
    # the block must not take the killed worker for a crash and restart it (which spilled
    # the context into a new scratch dir after close() had removed it).
    running = threading.Event()
    box = start(the_bridge=make_bridge(reply=lambda prompt: running.set() or "go"))
    scratch, pid = box.scratch, box.pid
    assert scratch is not None and pid is not None
    outcome: list[object] = []

    def block() -> None:
        try:
            outcome.append(box.execute("llm_query('x')\nimport time\ntime.sleep(30)", 60))
        except SandboxError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=block)
    thread.start()
    assert running.wait(30)
    box.close()
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(outcome[0], SandboxError) and "closed" in str(outcome[0])
    assert not scratch.exists() and box.pid is None and _gone(pid)


def test_close_reaps_worker_removes_scratch_and_is_idempotent(start):
    box = start()
    pid = box.pid
    assert pid is not None
    scratch = box.scratch
    assert scratch is not None and scratch.is_dir()
    box.execute("import subprocess\nchild = subprocess.Popen(['sleep', '60'])\npid = child.pid")
    child = int(box.execute("pid").stdout)
    box.close()
    box.close()
    assert _gone(pid) and not scratch.exists()
    deadline = time.monotonic() + 5
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child) or Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
    with pytest.raises(SandboxError):
        box.execute("1")


def test_worker_that_cannot_load_context_raises_sandbox_error(bridge, tmp_path):
    target = tmp_path / "ctx.txt"
    target.write_text("hello", encoding="utf-8")
    ctx = Context.from_value(target)
    target.unlink()
    target.mkdir()  # still there, but the worker cannot read it as text
    box = SubprocessSandbox(SandboxOptions())
    with pytest.raises(SandboxError, match="did not start"):
        box.start(ctx, bridge)
    box.close()


def test_a_deleted_context_file_is_a_context_error_before_any_worker(bridge, tmp_path):
    target = tmp_path / "ctx.txt"
    target.write_text("hello", encoding="utf-8")
    ctx = Context.from_value(target)
    target.unlink()
    box = SubprocessSandbox(SandboxOptions())
    with pytest.raises(ContextError, match="no longer exists"):
        box.start(ctx, bridge)
    box.close()


def test_values_too_large_to_snapshot_are_reported_lost(start):
    box = start(memory_mb=2048)
    box.execute("big = ['x' * 1_000_000] * 200\nsmall = 1")
    result = box.execute("import os\nos._exit(1)")
    assert restarted(result)
    assert result.notice is not None and "; lost: big." in result.notice
    assert box.execute("small").stdout == "1\n"


def test_timeout_while_waiting_for_a_sub_call(start, make_bridge):
    box = start(the_bridge=make_bridge(delay=3.0))
    began = time.monotonic()
    result = box.execute("llm_query('slow')", timeout=0.5)
    assert time.monotonic() - began < 10  # stopped, not left running
    assert result.error is not None and "TimeoutError" in result.error
    assert not restarted(result)
    assert box.execute("2 + 2").stdout == "4\n"


PARENT = """
import os, sys, time
sys.path.insert(0, {tests!r})
from conftest import FakeBridge
from fathom.context import Context
from fathom.sandbox.subprocess import SubprocessSandbox
box = SubprocessSandbox()
ctx = Context.from_value("x")
box.start(ctx, FakeBridge())
print(box.pid, box.scratch, os.getpid(), flush=True)
if sys.argv[1] == "crash":
    os._exit(0)
"""


@pytest.mark.parametrize("how", ["exit", "crash"])
def test_worker_does_not_outlive_its_parent(how, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(tests=str(Path(__file__).parent)), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), how], capture_output=True, text=True, timeout=60
    )
    pid_text, scratch, parent = done.stdout.split()
    pid = int(pid_text)
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid) or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    if how == "exit":  # a normal exit also removes the scratch directory
        assert not Path(scratch).exists()
    shutil.rmtree(scratch, ignore_errors=True)  # a crashed parent leaves it behind
    # And its worker's memory cgroup, which the next plan made on this host removes.
    host = probe_cgroups()
    if host.available:
        WorkerCgroups(host, 2**20).close()
        assert not [n for n in os.listdir(host.parent) if n.startswith(f"fathom-{parent}-")]
