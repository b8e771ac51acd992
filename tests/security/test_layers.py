"""The isolation layers one by one: levels, strict refusals, fallbacks, the doctor report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fathom.errors import ConfigError, IsolationError
from fathom.sandbox import isolation
from tests.conftest import skip_or_fail

BARE_HOST = isolation._Host(root=False, landlock_abi=0, netns=False, userns=False, seccomp=False)


def run_child(
    code: str, plan: isolation.IsolationPlan | None = None
) -> subprocess.CompletedProcess[str]:
    """Run Python code in a fresh process, started with `plan` when given."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=None if plan is None else plan.env,
        preexec_fn=None if plan is None else plan.preexec,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_off_still_scrubs_the_environment_and_limits_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    plan = isolation.prepare("off", scratch=tmp_path, readable=[], memory_mb=256)
    assert "ANTHROPIC_API_KEY" not in plan.env
    assert plan.env["HOME"] == plan.env["TMPDIR"] == str(tmp_path.resolve())
    assert plan.layers["environment"] == "active"
    assert plan.layers["memory_limit"].startswith("active")
    assert plan.layers["network"] == plan.layers["read_access"] == "off"
    assert isolation.enter(plan.worker_spec) == plan.layers


def test_unknown_level_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="strict, standard, off"):
        isolation.prepare("paranoid", scratch=tmp_path, readable=[], memory_mb=None)


def test_strict_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "_host", lambda: BARE_HOST)
    with pytest.raises(IsolationError) as caught:
        isolation.prepare("strict", scratch=tmp_path, readable=[], memory_mb=512)
    message = str(caught.value)
    assert "network" in message and "user namespaces" in message
    assert "read_access" in message and "Landlock" in message
    assert "sandbox_isolation='standard'" in message


def test_standard_reports_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "_host", lambda: BARE_HOST)
    plan = isolation.prepare("standard", scratch=tmp_path, readable=[], memory_mb=512)
    assert plan.layers["read_access"].startswith("unavailable: the kernel has no Landlock")
    assert plan.layers["network"].startswith("unavailable:")
    assert "weak" in plan.layers["network"]
    assert not plan.worker_spec["seccomp"]  # so enter() falls back to the audit hook
    assert set(plan.layers) == set(isolation.LAYERS)


def test_doctor_report_lists_every_layer() -> None:
    layers = isolation.report()
    assert set(isolation.LAYERS) <= set(layers)
    for name, value in layers.items():
        assert value.startswith(("active", "off", "unavailable: ")), (name, value)
    if not all(v.startswith("active") for v in layers.values()):
        skip_or_fail(f"not every layer is active on this host: {layers}")


def test_syscall_filter_refuses_sockets_namespaces_and_ptrace_but_not_threads() -> None:
    if not isolation.linux.seccomp_supported():
        pytest.skip("no seccomp filter for this system or CPU architecture")
    result = run_child(
        "import ctypes, os, socket, subprocess, threading\n"
        "from fathom.sandbox import linux\n"
        "linux.install_syscall_filter()\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def refused(value):\n"
        "    return 'refused' if value == -1 else f'ALLOWED {value}'\n"
        "for family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.AF_NETLINK):\n"
        "    try:\n"
        "        socket.socket(family, socket.SOCK_STREAM)\n"
        "        print('ALLOWED socket')\n"
        "    except PermissionError:\n"
        "        print('refused')\n"
        "print(refused(libc.unshare(0x10000000)))\n"  # CLONE_NEWUSER
        "print(refused(libc.ptrace(0x4206, os.getppid(), 0, 0)))\n"  # PTRACE_SEIZE
        "print(refused(libc.syscall(425, 8, 0)))\n"  # io_uring_setup
        "a, b = socket.socketpair()\n"  # what asyncio and friends need still works
        "thread = threading.Thread(target=print, args=('thread ok',))\n"
        "thread.start()\n"
        "thread.join()\n"
        "print('subprocess ok' if subprocess.run(['true']).returncode == 0 else 'broken')\n"
    )
    lines = result.stdout.split("\n")
    assert lines[:7] == ["refused"] * 7, (result.stdout, result.stderr)
    assert lines[7:9] == ["thread ok", "subprocess ok"], (result.stdout, result.stderr)


def test_audit_hook_fallback_blocks_python_sockets(tmp_path: Path) -> None:
    spec = {"level": "standard", "scratch": str(tmp_path)}  # no namespace, no seccomp
    result = run_child(
        "import socket, sys\n"
        "from fathom.sandbox.isolation import enter\n"
        f"enter({spec!r})\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
        "except PermissionError as exc:\n"
        "    print('blocked:', exc)\n"
    )
    assert "blocked: network access is disabled" in result.stdout, result.stderr


def test_threads_started_before_enter_are_confined_too(tmp_path: Path) -> None:
    """Landlock starts between fork and exec, so no thread of the worker escapes it."""
    if not isolation._host().landlock_abi:
        skip_or_fail("Landlock is unavailable on this host")
    plan = isolation.prepare("strict", scratch=tmp_path, readable=[], memory_mb=512)
    result = run_child(
        "import json, os, threading\n"
        "seen = []\n"
        "def peek():\n"
        "    try:\n"
        "        seen.append(os.listdir('/'))\n"
        "    except PermissionError:\n"
        "        seen.append('denied')\n"
        "thread = threading.Thread(target=peek)\n"
        "thread.start()\n"
        "thread.join()\n"
        "from fathom.sandbox.isolation import enter\n"
        f"enter(json.loads({json.dumps(plan.worker_spec)!r}))\n"
        "print(seen)\n",
        plan,
    )
    plan.cleanup()
    assert result.stdout.strip() == "['denied']", result.stderr


def test_cleanup_kills_what_the_sandbox_uid_left_running(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a dedicated sandbox uid needs root")
    plan = isolation.prepare("standard", scratch=tmp_path, readable=[], memory_mb=None)
    uid = plan.worker_spec.get("uid")
    if uid is None:
        skip_or_fail(f"no dedicated uid here: {plan.layers['privileges']}")
    sleeper = subprocess.Popen(["sleep", "60"], user=uid, group=uid, start_new_session=True)
    plan.cleanup()
    assert sleeper.wait(timeout=5) == -9


CHECKS = (
    "import json, os, socket, sys\n"
    "from fathom.sandbox.isolation import enter\n"
    "layers = enter(json.loads(sys.argv[1]))\n"
    "status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n"
    "print('caps', status['CapEff'].strip(), 'nnp', status['NoNewPrivs'].strip())\n"
    "for path in sys.argv[2:]:\n"
    "    try:\n"
    "        open(path).read()\n"
    "        print('read', path)\n"
    "    except OSError as exc:\n"
    "        print('denied', type(exc).__name__)\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
    "except OSError as exc:\n"
    "    print('net', type(exc).__name__)\n"
    "print(json.dumps(layers))\n"
)


def start_checks(plan: isolation.IsolationPlan, *paths: Path) -> list[str]:
    """Start a worker with `plan`, enter it, and report capabilities, reads and network."""
    result = subprocess.run(
        [sys.executable, "-c", CHECKS, json.dumps(plan.worker_spec), *map(str, paths)],
        env=plan.env, preexec_fn=plan.preexec, cwd=plan.worker_spec["scratch"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    plan.cleanup()
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_root_without_a_reachable_python_keeps_uid_0_without_capabilities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0 or not isolation._host().landlock_abi:
        pytest.skip("the capability fallback is for root with Landlock")
    monkeypatch.setattr(isolation.view, "masks", lambda python, extra: None)
    plan = isolation.prepare("standard", scratch=tmp_path, readable=[], memory_mb=None)
    assert plan.layers["privileges"].startswith("unavailable:")
    secret = Path("/etc/hostname")
    lines = start_checks(plan, secret)
    assert lines[0] == "caps 0000000000000000 nnp 1"
    assert lines[1] == "denied PermissionError"  # Landlock, since uid 0 passes file modes
    assert lines[2].startswith("net ")


def test_unprivileged_plan_uses_a_user_and_network_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = isolation._host()
    if not host.landlock_abi or not (host.netns or host.userns):
        skip_or_fail("needs Landlock and namespaces")
    # The plan a non-root user gets; root can start it too (it just skips the uid switch).
    fake = isolation._Host(False, host.landlock_abi, False, True, host.seccomp)
    monkeypatch.setattr(isolation, "_host", lambda: fake)
    plan = isolation.prepare("strict", scratch=tmp_path, readable=[], memory_mb=512)
    assert plan.layers["network"].startswith("active")
    assert plan.layers["process_limit"].startswith("active")
    lines = start_checks(plan, Path("/etc/hostname"))
    assert lines[1] == "denied PermissionError" and lines[2].startswith("net ")
    assert all(v.startswith("active") for v in json.loads(lines[3]).values())
