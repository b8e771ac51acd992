"""The ipc layer: the worker has an IPC namespace of its own, so it cannot reach the host's
SysV shared memory, message queues, semaphores or POSIX message queues, and what it makes
dies with it (capped meanwhile: SysV shared memory at memory_mb)."""

from __future__ import annotations

import ctypes
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from fathom.errors import IsolationError
from fathom.sandbox import linux
from fathom.sandbox.isolation import LayerStatus, layers_from_text
from fathom.sandbox.isolation.plan import prepare
from fathom.sandbox.subprocess import SubprocessSandbox

from .conftest import (
    BARE_HOST,
    SECRET,
    FakeBridge,
    attack,
    require,
    restarted,
    run_child,
    start_sandbox,
)

_IPC_CREAT, _IPC_RMID, _SHM_RDONLY = 0o1000, 0, 0o10000

# Defined in the sandbox: the SysV and POSIX IPC calls, through libc, raising OSError.
IPC = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
def _ok(result, what):
    if result is None or result in (-1, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), what + ': ' + os.strerror(ctypes.get_errno()))
    return result
def shmget(key, size, flags=0):
    return _ok(libc.shmget(key, ctypes.c_size_t(size), flags), 'shmget')
def shm_read(shmid, size):
    address = _ok(libc.shmat(shmid, None, 0o10000), 'shmat')
    try:
        return ctypes.string_at(address, size)
    finally:
        libc.shmdt(ctypes.c_void_p(address))
def mq_open(name, flags):
    return _ok(libc.mq_open(name.encode(), flags, 0o600, None), 'mq_open')
"""


class _Libc:
    """The host side of the same calls, for the test's own objects."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.shmat.restype = ctypes.c_void_p
        self.libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                                      ctypes.c_void_p]  # fmt: skip

    def check(self, result: int, what: str) -> int:
        if result == -1:
            raise OSError(ctypes.get_errno(), what)
        return result


@pytest.fixture
def libc() -> _Libc:
    if not linux.LINUX:
        pytest.skip("SysV IPC namespaces are Linux only")
    return _Libc()


@pytest.fixture
def host_segment(libc: _Libc) -> Iterator[tuple[int, int]]:
    """A world-readable shared-memory segment of a host process, holding a secret."""
    key = secrets.randbelow(2**30) + 1
    shmid = libc.check(libc.libc.shmget(key, ctypes.c_size_t(4096), _IPC_CREAT | 0o644), "shmget")
    try:
        address = libc.libc.shmat(shmid, None, 0)
        ctypes.memmove(address, SECRET.encode(), len(SECRET))
        libc.libc.shmdt(ctypes.c_void_p(address))
        yield key, shmid
    finally:
        libc.libc.shmctl(shmid, _IPC_RMID, None)


@pytest.fixture
def host_queue(libc: _Libc) -> Iterator[str]:
    """A POSIX message queue of a host process that anyone may read."""
    name = f"/fathom-test-{secrets.token_hex(4)}"
    libc.check(libc.libc.mq_open(name.encode(), os.O_CREAT | os.O_RDWR, 0o644, None), "mq_open")
    try:
        yield name
    finally:
        libc.libc.mq_unlink(name.encode())


def _host_ipc() -> dict[str, list[str]]:
    """The host namespace's SysV objects (the first columns: key, id, perms)."""
    found = {}
    for kind in ("shm", "msg", "sem"):
        lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        found[kind] = sorted(" ".join(line.split()[:3]) for line in lines)
    return found


def test_host_shared_memory_and_queues_are_out_of_reach(
    sandbox: SubprocessSandbox, host_segment: tuple[int, int], host_queue: str
) -> None:
    require(sandbox, "ipc")
    key, shmid = host_segment
    result = attack(
        sandbox,
        IPC + f"attempt(lambda: shmget({key}, 0))\n"
        f"attempt(lambda: shm_read({shmid}, 64))\n"
        f"attempt(lambda: mq_open({host_queue!r}, os.O_RDONLY))\n"
        "attempt(lambda: open('/proc/sysvipc/shm').read())\n",
    )
    blocked = [line for line in result.stdout.splitlines() if line.startswith("BLOCKED")]
    assert len(blocked) == 4, result.stdout
    assert "No such file" in blocked[0] and "Invalid argument" in blocked[1], blocked
    assert "No such file" in blocked[2], blocked  # another namespace's queues do not exist


def test_a_host_posix_shm_file_is_unreadable(sandbox: SubprocessSandbox) -> None:
    """/dev/shm is a host tmpfs, not part of the IPC namespace: Landlock keeps it out."""
    require(sandbox, "read_access")
    path = Path("/dev/shm") / f"fathom-test-{secrets.token_hex(4)}"
    if not path.parent.is_dir():
        pytest.skip("no /dev/shm here")
    path.write_text(SECRET)
    path.chmod(0o644)
    try:
        result = attack(
            sandbox,
            f"import os\nattempt(lambda: open({str(path)!r}).read())\n"
            "attempt(lambda: os.listdir('/dev/shm'))\n"
            "attempt(lambda: open('/dev/shm/planted', 'w').write('x'))\n",
        )
        assert result.stdout.count("BLOCKED PermissionError") == 3, result.stdout
    finally:
        path.unlink()
    assert not Path("/dev/shm/planted").exists()


def test_ipc_objects_of_repl_code_stay_in_the_worker_and_die_with_it(
    fake_bridge: FakeBridge, libc: _Libc
) -> None:
    before = _host_ipc()
    sandbox = start_sandbox(fake_bridge)
    try:
        require(sandbox, "ipc")
        made = sandbox.execute(
            IPC + "shm = shmget(0, 1 << 20, 0o1600)\n"
            "libc.memset(ctypes.c_void_p(libc.shmat(shm, None, 0)), 120, 1 << 20)\n"
            "queue = _ok(libc.msgget(0, 0o1600), 'msgget')\n"
            "sems = _ok(libc.semget(0, 4, 0o1600), 'semget')\n"
            "print(shm_read(shm, 3))\n"
            # POSIX queues live on a mount of their own, which Landlock leaves closed.
            "attempt(lambda: mq_open('/fathom-made', os.O_CREAT | os.O_RDWR))\n"
        )
        assert made.error is None, made.error
        assert made.stdout.startswith("b'xxx'"), made.stdout
        assert "BLOCKED PermissionError" in made.stdout, made.stdout
        assert _host_ipc() == before  # made in the worker's namespace, not the host's
        crash = sandbox.execute("os._exit(3)")
        assert restarted(crash)
        # The new worker has a namespace of its own: the old one died with its worker.
        gone = sandbox.execute(
            IPC + "attempt(lambda: shm_read(shm, 3))\n"
            "message = (1).to_bytes(8, 'little') + b'x'\n"
            "attempt(lambda: _ok(libc.msgsnd(queue, message, 1, 0o4000), 'msgsnd'))\n"
            "attempt(lambda: _ok(libc.semctl(sems, 0, 12), 'semctl'))\n"  # GETVAL
        )
        assert gone.stdout.count("BLOCKED OSError") == 3, gone.stdout
        assert gone.stdout.count("Invalid argument") == 3, gone.stdout
    finally:
        sandbox.close()
    assert _host_ipc() == before


def test_shared_memory_is_capped_at_memory_mb(fake_bridge: FakeBridge) -> None:
    """A segment outlives detaching (RLIMIT_AS no longer counts it): the namespace's caps do."""
    sandbox = start_sandbox(fake_bridge, memory_mb=256)
    try:
        require(sandbox, "ipc")
        result = sandbox.execute(
            IPC + "attempt(lambda: shmget(0, 300 << 20, 0o1600))\n"
            "first = shmget(0, 200 << 20, 0o1600)\n"
            "attempt(lambda: shmget(0, 100 << 20, 0o1600))\n"
        )
        assert result.error is None, result.error
        lines = result.stdout.splitlines()
        assert "Invalid argument" in lines[0], lines  # past shmmax
        assert "No space left" in lines[1], lines  # past shmall, counted over segments
    finally:
        sandbox.close()


def test_without_namespaces_ipc_is_unavailable_and_strict_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fathom.sandbox.isolation.plan.probe_host", lambda: BARE_HOST)
    ipc = prepare("standard", scratch=tmp_path, readable=[], memory_mb=None).layers["ipc"]
    assert ipc.status is LayerStatus.UNAVAILABLE and "IPC namespace" in ipc.detail
    with pytest.raises(IsolationError, match=r"ipc .*user namespaces"):
        prepare("strict", scratch=tmp_path, readable=[], memory_mb=None)


def test_a_worker_left_in_the_host_namespace_says_so(tmp_path: Path) -> None:
    if not linux.LINUX:
        pytest.skip("namespaces are Linux only")
    spec = {"level": "standard", "scratch": str(tmp_path), "layers": {"ipc": "active"},
            "parent_ipcns": linux.namespace_id("ipc")}  # fmt: skip
    result = run_child(
        "import json\nfrom fathom.sandbox.isolation import layers_to_text\n"
        "from fathom.sandbox.isolation.worker_side import enter\n"
        f"print(json.dumps(layers_to_text(enter({spec!r}))))\n"
    )
    assert result.returncode == 0, result.stderr
    ipc = layers_from_text(__import__("json").loads(result.stdout.splitlines()[-1]))["ipc"]
    assert ipc.status is LayerStatus.UNAVAILABLE and "IPC namespace" in ipc.detail


def test_the_ipc_limits_refuse_to_touch_the_host_namespace() -> None:
    if not linux.LINUX:
        pytest.skip("namespaces are Linux only")
    before = Path("/proc/sys/kernel/shmmax").read_text()
    with pytest.raises(OSError, match="host's IPC limits"):
        linux.limit_ipc(1 << 20, 1, linux.namespace_id("ipc"))
    assert Path("/proc/sys/kernel/shmmax").read_text() == before
