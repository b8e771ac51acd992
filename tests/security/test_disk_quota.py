"""The disk_quota layer: scratch is a size-limited tmpfs in a mount namespace that every
worker of one sandbox shares, so REPL code cannot fill the host disk with many files, and
crash recovery (snapshots in scratch) still works across restarts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fathom.errors import IsolationError
from fathom.sandbox import subprocess as subprocess_sandbox
from fathom.sandbox import view
from fathom.sandbox.isolation import LayerStatus
from fathom.sandbox.isolation.host import probe_host
from fathom.sandbox.isolation.plan import IsolationPlan, prepare
from fathom.sandbox.subprocess import SubprocessSandbox

from .conftest import (
    BARE_HOST,
    FakeBridge,
    assert_healthy,
    attack,
    require,
    restarted,
    start_sandbox,
)

QUOTA_MB = 256  # smaller than the 1024 MB default: the test fills it, in RAM

FILL = """
import errno, os
def fill():
    chunk = b'x' * (50 * 1024 * 1024)
    for i in range(40):  # 2 GB: far past the quota, bounded if the quota ever breaks
        with open(f'junk-{i}.bin', 'wb') as f:
            f.write(chunk)
attempt(fill)
sizes = [os.path.getsize(n) for n in os.listdir('.') if n.startswith('junk-')]
print('files', len(sizes), 'written', sum(sizes))
"""


def _quota(monkeypatch: pytest.MonkeyPatch, disk_mb: int) -> None:
    """Make every plan of this test use a `disk_mb` quota (the public API keeps the default)."""
    real_prepare = subprocess_sandbox.prepare

    def with_quota(*args: object, **kwargs: object) -> IsolationPlan:
        return real_prepare(*args, disk_mb=disk_mb, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(subprocess_sandbox, "prepare", with_quota)


def _host_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def test_many_files_stop_at_the_quota_and_recovery_still_works(
    monkeypatch: pytest.MonkeyPatch, fake_bridge: FakeBridge
) -> None:
    _quota(monkeypatch, QUOTA_MB)
    sandbox = start_sandbox(fake_bridge)
    try:
        require(sandbox, "disk_quota")
        assert sandbox.scratch is not None
        disk_before = shutil.disk_usage(sandbox.scratch).used
        result = attack(sandbox, FILL)
        assert "BLOCKED OSError [Errno 28] No space left on device" in result.stdout, result
        files, written = result.stdout.split("files ")[1].split(" written ")
        assert int(files) >= 2 and int(written.split()[0]) <= QUOTA_MB * 1024 * 1024
        # Nothing of it reached the host disk: the host scratch dir holds only the context.
        grown = shutil.disk_usage(sandbox.scratch).used - disk_before
        assert grown < QUOTA_MB * 1024 * 1024, grown
        assert _host_bytes(sandbox.scratch) < 1024 * 1024
        assert not list(sandbox.scratch.glob("junk-*"))

        # Scratch is full: blocks still run; freeing it makes room for the snapshot again.
        tidy = sandbox.execute(
            "for n in os.listdir('.'):\n"
            "    if n.startswith('junk-'):\n"
            "        os.remove(n)\n"
            "kept = {'answer': 42}\n"
            "open('note.txt', 'w').write('still here')\n"
        )
        assert tidy.error is None, tidy.error
        crash = sandbox.execute("import os\nos._exit(3)")
        assert restarted(crash), crash.notice
        assert "kept" not in (crash.notice or "").partition("lost:")[2], crash.notice
        after = sandbox.execute("print(kept['answer'], open('note.txt').read(), len(context))")
        assert after.error is None, after.error
        assert after.stdout.strip() == "42 still here 14"
    finally:
        sandbox.close()


def test_many_empty_files_stop_at_the_file_count(
    monkeypatch: pytest.MonkeyPatch, fake_bridge: FakeBridge
) -> None:
    monkeypatch.setattr(view, "QUOTA_INODES", 2000)
    sandbox = start_sandbox(fake_bridge)
    try:
        require(sandbox, "disk_quota")
        result = attack(
            sandbox,
            "def touch():\n"
            "    for i in range(100_000):\n"
            "        open(f'empty-{i}', 'w').close()\n"
            "attempt(touch)\n"
            "import os\n"
            "for n in os.listdir('.'):\n"
            "    n.startswith('empty-') and os.remove(n)\n",
        )
        assert "BLOCKED OSError [Errno 28] No space left on device" in result.stdout
    finally:
        sandbox.close()


def test_the_spilled_context_in_the_quota_is_untouchable(sandbox: SubprocessSandbox) -> None:
    require(sandbox, "disk_quota")
    result = attack(
        sandbox,
        "import os\n"
        "name = [n for n in os.listdir('.') if n.startswith('fathom-context-')][0]\n"
        "attempt(lambda: open(name, 'w').write('forged'))\n"
        "attempt(lambda: os.remove(name))\n"
        "attempt(lambda: os.rename(name, 'moved'))\n"
        "attempt(lambda: os.chmod(name, 0o666))\n",
    )
    assert result.stdout.count("BLOCKED") == 4, result.stdout
    assert restarted(sandbox.execute("import os\nos._exit(3)"))
    assert_healthy(sandbox)  # the restarted worker loaded the real context


def test_the_default_quota_is_shared_by_restarts_and_freed_by_close(tmp_path: Path) -> None:
    plan = prepare("standard", scratch=tmp_path, readable=[], memory_mb=None)
    quota = plan.layers["disk_quota"]
    if quota.status is not LayerStatus.ACTIVE:
        pytest.skip(f"no quota here: {quota.text}")
    assert quota.detail.startswith("1024 MB tmpfs scratch")
    code = (
        "import json, os, sys\n"
        "from fathom.sandbox.isolation.worker_side import enter\n"
        "quota = enter(json.loads(sys.argv[1]))['disk_quota'].text\n"
        "st = os.statvfs('.')\n"
        "print(st.f_blocks * st.f_frsize // 2**20, os.path.exists('mark'), quota)\n"
        "open('mark', 'w').close()\n"
    )

    def run_worker() -> str:
        done = subprocess.run(
            [sys.executable, "-c", code, json.dumps(plan.worker_spec)],
            env=plan.env, preexec_fn=plan.preexec, cwd=tmp_path,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        plan.cleanup()
        assert done.returncode == 0, done.stderr
        return done.stdout

    # The second worker is a restart: it sees what the first wrote.
    seen = [run_worker().split(" ", 2) for _ in range(2)]
    assert seen[0][:2] == ["1024", "False"] and seen[1][:2] == ["1024", "True"]
    assert seen[1][2].startswith("active")
    assert not (tmp_path / "mark").exists()  # on the tmpfs, never on the host disk

    plan.close()  # frees the namespace; a worker started now is not under the quota
    assert "unavailable: scratch is not the size-limited tmpfs" in run_worker()


def test_off_has_no_quota(tmp_path: Path) -> None:
    plan = prepare("off", scratch=tmp_path, readable=[], memory_mb=None)
    assert plan.layers["disk_quota"].status is LayerStatus.OFF


def test_strict_without_namespaces_names_the_quota_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fathom.sandbox.isolation.plan.probe_host", lambda: BARE_HOST)
    quota = prepare("standard", scratch=tmp_path, readable=[], memory_mb=None).layers["disk_quota"]
    assert quota.status is LayerStatus.UNAVAILABLE
    assert quota.detail.startswith("a tmpfs scratch needs")
    with pytest.raises(IsolationError, match=r"disk_quota .*user\.max_user_namespaces"):
        prepare("strict", scratch=tmp_path, readable=[], memory_mb=None)


def test_a_failed_quota_mount_is_reported_and_refused_at_strict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not probe_host().namespaces:
        pytest.skip("no namespaces here: the quota is never tried")

    def refuse(*args: object, **kwargs: object) -> view.ScratchQuota:
        raise OSError(1, "tmpfs refused")

    monkeypatch.setattr(view.ScratchQuota, "create", refuse)
    quota = prepare("standard", scratch=tmp_path, readable=[], memory_mb=None).layers["disk_quota"]
    assert quota.status is LayerStatus.UNAVAILABLE
    assert quota.detail == "could not mount a tmpfs over scratch ([Errno 1] tmpfs refused)"
    with pytest.raises(IsolationError, match="disk_quota"):
        prepare("strict", scratch=tmp_path, readable=[], memory_mb=None)


def test_strict_worker_that_cannot_join_the_quota_refuses_to_run(tmp_path: Path) -> None:
    try:
        strict = prepare("strict", scratch=tmp_path, readable=[], memory_mb=None)
    except IsolationError as exc:
        pytest.skip(f"strict is refused here: {exc}")
    strict.close()  # as if the quota's namespace were gone
    enter = "import json, sys\nfrom fathom.sandbox.isolation.worker_side import enter\n"
    done = subprocess.run(
        [sys.executable, "-c", enter + "enter(json.loads(sys.argv[1]))",
         json.dumps(strict.worker_spec)],
        env=strict.env, preexec_fn=strict.preexec, cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    strict.cleanup()
    assert done.returncode != 0
    assert "IsolationError" in done.stderr and "disk_quota: scratch is not" in done.stderr
