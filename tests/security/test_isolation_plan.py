"""The parent's plan, layer by layer: levels, strict refusals, fallbacks, and workers
started with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fathom.errors import ConfigError, IsolationError
from fathom.sandbox.isolation import LAYERS, LayerStatus, layers_from_text
from fathom.sandbox.isolation.host import Host, probe_host
from fathom.sandbox.isolation.plan import IsolationPlan, prepare
from fathom.sandbox.isolation.worker_side import enter
from tests.conftest import skip_or_fail

from .conftest import BARE_HOST

ACTIVE, OFF, UNAVAILABLE = LayerStatus.ACTIVE, LayerStatus.OFF, LayerStatus.UNAVAILABLE


def test_off_still_scrubs_the_environment_and_limits_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    plan = prepare("off", scratch=tmp_path, readable=[], memory_mb=256)
    assert "ANTHROPIC_API_KEY" not in plan.env
    assert plan.env["HOME"] == plan.env["TMPDIR"] == str(tmp_path.resolve())
    assert plan.layers["environment"].status is ACTIVE
    assert plan.layers["memory_limit"].detail == "256 MB of address space"
    assert plan.layers["network"].status is plan.layers["read_access"].status is OFF
    assert enter(plan.worker_spec) == plan.layers


def test_unknown_level_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="strict, standard, off"):
        prepare("paranoid", scratch=tmp_path, readable=[], memory_mb=None)  # type: ignore[arg-type]


def test_strict_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fathom.sandbox.isolation.plan.probe_host", lambda: BARE_HOST)
    with pytest.raises(IsolationError) as caught:
        prepare("strict", scratch=tmp_path, readable=[], memory_mb=512)
    message = str(caught.value)
    assert "network" in message and "user namespaces" in message
    assert "read_access" in message and "Landlock" in message
    assert "sandbox_isolation='standard'" in message


def test_standard_reports_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fathom.sandbox.isolation.plan.probe_host", lambda: BARE_HOST)
    plan = prepare("standard", scratch=tmp_path, readable=[], memory_mb=512)
    assert plan.layers["read_access"].status is UNAVAILABLE
    assert plan.layers["read_access"].detail.startswith("the kernel has no Landlock")
    assert plan.layers["network"].status is UNAVAILABLE
    assert "weak" in plan.layers["network"].detail
    assert not plan.worker_spec["seccomp"]  # so enter() falls back to the audit hook
    assert list(plan.layers) == list(LAYERS)
    assert layers_from_text(plan.worker_spec["layers"]) == plan.layers  # what enter() gets


def test_cleanup_kills_what_the_sandbox_uid_left_running(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a dedicated sandbox uid needs root")
    plan = prepare("standard", scratch=tmp_path, readable=[], memory_mb=None)
    uid = plan.worker_spec.get("uid")
    if uid is None:
        skip_or_fail(f"no dedicated uid here: {plan.layers['privileges'].text}")
    sleeper = subprocess.Popen(["sleep", "60"], user=uid, group=uid, start_new_session=True)
    plan.cleanup()
    assert sleeper.wait(timeout=5) == -9


def test_a_uid_still_in_use_is_not_handed_out_again(tmp_path: Path) -> None:
    """Unreaped zombies of a closed sandbox would count against the next one's process limit."""
    if os.geteuid() != 0:
        pytest.skip("a dedicated sandbox uid needs root")
    first = prepare("standard", scratch=tmp_path, readable=[], memory_mb=None)
    first.close()
    uid = first.worker_spec.get("uid")
    if uid is None:
        skip_or_fail(f"no dedicated uid here: {first.layers['privileges'].text}")
    sleeper = subprocess.Popen(["sleep", "60"], user=uid, group=uid, start_new_session=True)
    try:
        again = prepare("standard", scratch=tmp_path, readable=[], memory_mb=None)
        again.close()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert again.worker_spec["uid"] != uid


CHECKS = (
    "import json, os, socket, sys\n"
    "from fathom.sandbox.isolation import layers_to_text\n"
    "from fathom.sandbox.isolation.worker_side import enter\n"
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
    "print(json.dumps(layers_to_text(layers)))\n"
)


def start_checks(plan: IsolationPlan, *paths: Path) -> list[str]:
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
    if os.geteuid() != 0 or not probe_host().landlock_abi:
        pytest.skip("the capability fallback is for root with Landlock")
    monkeypatch.setattr("fathom.sandbox.view.masks", lambda python, extra: None)
    plan = prepare("standard", scratch=tmp_path, readable=[], memory_mb=None)
    assert plan.layers["privileges"].status is UNAVAILABLE
    secret = Path("/etc/hostname")
    lines = start_checks(plan, secret)
    assert lines[0] == "caps 0000000000000000 nnp 1"
    assert lines[1] == "denied PermissionError"  # Landlock, since uid 0 passes file modes
    assert lines[2].startswith("net ")


def test_unprivileged_plan_uses_a_user_and_network_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = probe_host()
    if not host.landlock_abi or not (host.netns or host.userns):
        skip_or_fail("needs Landlock and namespaces")
    # The plan a non-root user gets; root can start it too (it just skips the uid switch).
    fake = Host(False, host.landlock_abi, False, True, host.seccomp)
    monkeypatch.setattr("fathom.sandbox.isolation.plan.probe_host", lambda: fake)
    plan = prepare("strict", scratch=tmp_path, readable=[], memory_mb=512)
    assert plan.layers["network"].status is ACTIVE
    assert plan.layers["process_limit"].status is ACTIVE
    lines = start_checks(plan, Path("/etc/hostname"))
    assert lines[1] == "denied PermissionError" and lines[2].startswith("net ")
    in_force = layers_from_text(json.loads(lines[3]))
    assert all(layer.status is ACTIVE for layer in in_force.values()), lines[3]
