"""The memory_cgroup layer: memory_mb holds for the worker and every process it starts
together (RLIMIT_AS alone holds each process on its own), and where the host offers no
cgroup the sandbox says so instead of pretending."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from fathom.context import Context
from fathom.errors import IsolationError, SandboxError
from fathom.sandbox import SandboxOptions
from fathom.sandbox.isolation import LayerStatus
from fathom.sandbox.isolation.cgroup import CgroupHost, probe_cgroups
from fathom.sandbox.isolation.plan import prepare
from fathom.sandbox.subprocess import SubprocessSandbox

from .conftest import (
    FakeBridge,
    assert_healthy,
    attack,
    require,
    restarted,
    run_child,
    start_sandbox,
)

NO_CGROUP = CgroupHost(missing="no cgroup v2 memory hierarchy (test)")

# REPL code: start `n` children that each fill `mb` MB and hold it; count those that did.
HOLD = """
import subprocess, sys, time
def hold(n, mb):
    code = ("import sys, time\\n"
            f"block = bytearray(b'x') * ({mb} << 20)\\n"
            "print('held', flush=True)\\n"
            "time.sleep(2)\\n")
    kids = [subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
            for _ in range(n)]
    for kid in kids:
        kid.stdout.readline()
    codes = [kid.wait() for kid in kids]  # 0: held its memory to the end, with the others
    print('survived', codes.count(0), 'killed', codes.count(-9))
"""


def _survived(stdout: str) -> tuple[int, int]:
    words = stdout.split()
    return int(words[words.index("survived") + 1]), int(words[words.index("killed") + 1])


@pytest.fixture
def small(fake_bridge: FakeBridge) -> Iterator[SubprocessSandbox]:
    """A sandbox whose processes share 256 MB."""
    sandbox = start_sandbox(fake_bridge, memory_mb=256)
    yield sandbox
    sandbox.close()


def test_child_processes_share_memory_mb(small: SubprocessSandbox) -> None:
    """Six children of 100 MB each, each under its own 256 MB RLIMIT_AS, held 600 MB before."""
    require(small, "memory_cgroup")
    result = attack(small, HOLD + "hold(6, 100)\n")
    survived, killed = _survived(result.stdout)
    assert survived <= 2 and killed >= 4, result.stdout
    assert not restarted(result)  # the kernel killed the biggest: children, not the worker


def test_many_small_children_share_it_too(small: SubprocessSandbox) -> None:
    require(small, "memory_cgroup")
    result = attack(small, HOLD + "hold(16, 25)\n")
    survived, killed = _survived(result.stdout)
    assert survived * 25 < 256 and survived + killed == 16, result.stdout


def test_scratch_files_count_and_a_restart_gets_a_fresh_limit(small: SubprocessSandbox) -> None:
    """Scratch is RAM (a tmpfs): what the worker writes there counts against its memory.

    Each worker has its own cgroup, so the next one is not born with a full predecessor's
    scratch charged to it.
    """
    require(small, "memory_cgroup", "disk_quota")
    assert small.execute("kept = 7").error is None
    fill = (
        "with open('big.bin', 'wb') as f:\n"
        "    for _ in range(40):\n"
        "        f.write(b'x' * (10 << 20))\n"
    )
    result = small.execute(fill)
    assert restarted(result), result
    assert "SIGKILL" in (result.error or ""), result.error
    after = small.execute("import os\nprint(kept, os.path.getsize('big.bin') < (256 << 20))")
    assert after.stdout == "7 True\n", after
    assert_healthy(small)


def test_one_process_still_gets_memory_error_inside(small: SubprocessSandbox) -> None:
    require(small, "memory_cgroup", "memory_limit")
    result = attack(small, "attempt(lambda: bytearray(1 << 30))\n")
    assert "BLOCKED MemoryError" in result.stdout, result.stdout


def test_what_is_left_in_the_cgroup_dies_and_the_cgroup_goes_at_close(
    fake_bridge: FakeBridge,
) -> None:
    sandbox = start_sandbox(fake_bridge)
    require(sandbox, "memory_cgroup")
    plan = sandbox._state.plan
    assert plan is not None
    prefix = plan.worker_spec["memory_cgroup"]
    parent = probe_cgroups().parent
    result = sandbox.execute(
        "import subprocess\n"
        "sleeper = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        "print(sleeper.pid)\n"
    )
    pid = int(result.stdout)
    assert [n for n in os.listdir(parent) if n.startswith(prefix)]
    sandbox.close()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    assert not [n for n in os.listdir(parent) if n.startswith(prefix)]


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_context_that_does_not_fit_says_how_much_is_needed(
    fake_bridge: FakeBridge,
) -> None:
    """memory_mb is never raised behind the user's back: the start fails and says why."""
    # ~16 MB of JSON that becomes ~130 MB of Python objects in the worker.
    context = Context.from_value([str(i) for i in range(2_000_000)])
    sandbox = SubprocessSandbox(SandboxOptions(memory_mb=96, isolation="standard"))
    try:
        if not probe_cgroups().available:
            pytest.skip("without a memory cgroup, RLIMIT_AS reports it (tests/test_context.py)")
        with pytest.raises(SandboxError, match=r"loading it needs more than memory_mb=96"):
            sandbox.start(context, fake_bridge)
    finally:
        sandbox.close()
        context.close()


# --- hosts without a memory cgroup -------------------------------------------------------


def test_without_a_cgroup_it_warns_and_falls_back_to_rlimits(
    fake_bridge: FakeBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fathom.sandbox.isolation.plan.probe_cgroups", lambda: NO_CGROUP)
    with pytest.warns(RuntimeWarning, match=r"no memory cgroup on this host .*memory_mb=512"):
        sandbox = start_sandbox(fake_bridge)
    try:
        layer = sandbox.isolation()
        assert layer["memory_cgroup"] == f"unavailable: {NO_CGROUP.missing}"
        assert layer["memory_limit"] == "active (512 MB of address space)"
        result = attack(sandbox, "attempt(lambda: bytearray(1 << 30))\n")
        assert "BLOCKED MemoryError" in result.stdout
    finally:
        sandbox.close()


def test_without_a_cgroup_a_raised_address_space_is_stated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fathom.sandbox.isolation.plan.probe_cgroups", lambda: NO_CGROUP)
    with pytest.warns(RuntimeWarning, match=r"each process may use 300 MB .* not the 128 MB"):
        plan = prepare("standard", scratch=tmp_path, readable=[], memory_mb=128,
                       address_space_mb=300)  # fmt: skip
    plan.close()
    assert plan.layers["memory_limit"].detail == "300 MB of address space"


def test_with_a_cgroup_memory_mb_holds_as_given(tmp_path: Path) -> None:
    if not probe_cgroups().available:
        pytest.skip(f"no memory cgroup here: {probe_cgroups().missing}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: the cgroup holds 128 MB
        plan = prepare("standard", scratch=tmp_path, readable=[], memory_mb=128,
                       address_space_mb=300)  # fmt: skip
    plan.close()
    cgroup = plan.layers["memory_cgroup"]
    assert cgroup.is_active and "128 MB for the worker and its processes together" in cgroup.detail


def test_strict_without_a_cgroup_refuses_and_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fathom.sandbox.isolation.plan.probe_cgroups", lambda: NO_CGROUP)
    with pytest.raises(IsolationError, match=r"memory_cgroup .*subtree_control"):
        prepare("strict", scratch=tmp_path, readable=[], memory_mb=512)
    plan = prepare("strict", scratch=tmp_path, readable=[], memory_mb=None)  # nothing to hold
    plan.close()
    assert plan.layers["memory_cgroup"].status is LayerStatus.OFF


def test_off_has_no_cgroup(tmp_path: Path) -> None:
    plan = prepare("off", scratch=tmp_path, readable=[], memory_mb=512)
    assert plan.layers["memory_cgroup"].status is LayerStatus.OFF
    assert "memory_cgroup" not in plan.worker_spec


def test_the_probe_names_what_is_missing_on_this_host() -> None:
    found = probe_cgroups()
    assert found.available != bool(found.missing), found
    if found.available:
        assert found.version in (1, 2) and Path(found.parent).is_dir()


def test_the_worker_reports_a_cgroup_it_did_not_join(tmp_path: Path) -> None:
    spec = {"level": "standard", "scratch": str(tmp_path), "memory_cgroup": "fathom-nothere-",
            "cgroup_version": 2, "layers": {"memory_cgroup": "active"}}  # fmt: skip
    result = run_child(
        "import json\nfrom fathom.sandbox.isolation import layers_to_text\n"
        "from fathom.sandbox.isolation.worker_side import enter\n"
        f"print(json.dumps(layers_to_text(enter({spec!r}))))\n"
    )
    assert result.returncode == 0, result.stderr
    assert '"memory_cgroup": "unavailable: the worker could not join' in result.stdout

