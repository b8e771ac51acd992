"""The red-team suite: each attack is REPL code a prompt-injected model could write, run
through the real SubprocessSandbox at `standard` isolation. Each must fail inside the
sandbox, the next block must run normally, and the parent must keep its secrets."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

import pytest

import fathom
from fathom.errors import SandboxError
from fathom.sandbox import subprocess as subprocess_sandbox
from fathom.sandbox.isolation.plan import IsolationPlan
from fathom.sandbox.subprocess import SubprocessSandbox

from .conftest import (
    API_KEY,
    FakeBridge,
    attack,
    require,
    restarted,
    session_processes,
    start_sandbox,
)


def test_api_key_is_not_in_the_worker_environment(sandbox: SubprocessSandbox) -> None:
    result = attack(sandbox, "import os\nprint(sorted(os.environ))\nprint(dict(os.environ))")
    assert "OPENAI_API_KEY" not in result.stdout


def test_parent_environ_in_proc_is_unreadable(sandbox: SubprocessSandbox) -> None:
    require(sandbox, "privileges", "read_access")
    result = attack(
        sandbox,
        "import os\n"
        "attempt(lambda: open(f'/proc/{os.getppid()}/environ', 'rb').read())\n"
        "attempt(lambda: open('/proc/1/environ', 'rb').read())\n"
        "attempt(lambda: open(f'/proc/{os.getppid()}/cmdline', 'rb').read())\n",
    )
    assert result.stdout.count("BLOCKED") == 3, result.stdout


def test_parent_memory_is_unreadable(sandbox: SubprocessSandbox) -> None:
    require(sandbox, "privileges", "read_access")
    result = attack(
        sandbox,
        "import os, re\n"
        "def dump():\n"
        "    pid = os.getppid()\n"
        "    maps = open(f'/proc/{pid}/maps').read().splitlines()\n"
        "    start, end = (int(x, 16) for x in re.split('[- ]', maps[0])[:2])\n"
        "    with open(f'/proc/{pid}/mem', 'rb') as mem:\n"
        "        mem.seek(start)\n"
        "        return mem.read(end - start)\n"
        "attempt(dump)\n"
        "attempt(lambda: open(f'/proc/{os.getppid()}/mem', 'rb'))\n",
    )
    assert result.stdout.count("BLOCKED") == 2, result.stdout


def test_files_outside_the_allowed_paths_are_unreadable(
    sandbox: SubprocessSandbox, secret_file: Path
) -> None:
    require(sandbox, "read_access")
    result = attack(
        sandbox,
        f"import os\n"
        f"attempt(lambda: open({str(secret_file)!r}).read())\n"
        f"attempt(lambda: os.listdir({str(secret_file.parent)!r}))\n"
        f"attempt(lambda: os.listdir(os.path.expanduser('~root') + '/.ssh'))\n"
        f"attempt(lambda: os.listdir('/root'))\n"
        f"attempt(lambda: open('/etc/hostname').read())\n"
        f"attempt(lambda: os.listdir('/home'))\n",
    )
    assert result.stdout.count("BLOCKED") == 6, result.stdout


def test_writes_outside_scratch_fail(sandbox: SubprocessSandbox, tmp_path: Path) -> None:
    require(sandbox, "write_access")
    target = Path("/tmp") / f"fathom-escape-{uuid.uuid4().hex}"
    package = Path(fathom.__file__).parent / f"pwned_{uuid.uuid4().hex}.py"
    shm = Path("/dev/shm") / f"fathom-escape-{uuid.uuid4().hex}"
    escapes = (target, package, shm, Path(str(target) + "-dir"))
    try:
        result = attack(sandbox, _write_attack(target, package, shm))
    finally:  # never leave a file behind if a layer failed
        for path in escapes:
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
    assert result.stdout.count("BLOCKED") == 4, result.stdout
    assert "scratch ok 4" in result.stdout


def _write_attack(target: Path, package: Path, shm: Path) -> str:
    return (
        f"attempt(lambda: open({str(target)!r}, 'w').write('x'))\n"
        f"attempt(lambda: open({str(package)!r}, 'w').write('import os'))\n"
        f"attempt(lambda: open({str(shm)!r}, 'w').write('x'))\n"
        f"attempt(lambda: __import__('os').mkdir({str(target) + '-dir'!r}))\n"
        "with open('inside-scratch.txt', 'w') as f:\n"
        "    print('scratch ok', f.write('fine'))\n"
    )


def test_network_connections_fail(sandbox: SubprocessSandbox) -> None:
    require(sandbox, "network")
    listener = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port, udp_port = listener.getsockname()[1], udp.getsockname()[1]
    try:
        result = attack(
            sandbox,
            "import socket\n"
            f"attempt(lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2))\n"
            f"attempt(lambda: socket.create_connection(('localhost', {port}), timeout=2))\n"
            "attempt(lambda: socket.create_connection(('1.1.1.1', 443), timeout=2))\n"
            "def udp_send():\n"
            "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"    return s.sendto(b'leak', ('127.0.0.1', {udp_port}))\n"
            "attempt(udp_send)\n",
        )
        assert result.stdout.count("BLOCKED") == 4, result.stdout
        listener.settimeout(0.3)
        with pytest.raises(TimeoutError):
            listener.accept()
        udp.settimeout(0.3)
        with pytest.raises(TimeoutError):
            udp.recv(16)
    finally:
        listener.close()
        udp.close()


def test_unix_sockets_of_host_services_are_unreachable(
    sandbox: SubprocessSandbox, tmp_path: Path
) -> None:
    """A world-writable unix socket (like D-Bus or X11) that file permissions leave open."""
    require(sandbox, "network")
    directory = Path(tempfile.mkdtemp(prefix="fathom-service-"))
    directory.chmod(0o755)
    path = directory / "service.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        path.chmod(0o777)
        server.listen()
        result = attack(
            sandbox,
            "import socket\n"
            "def connect():\n"
            "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            f"    s.connect({str(path)!r})\n"
            "    return s.send(b'hello')\n"
            "attempt(connect)\n"
            "attempt(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).connect('\\0x'))\n",
        )
        assert result.stdout.count("BLOCKED") == 2, result.stdout
        server.settimeout(0.3)
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_fork_bomb_is_bounded_and_cleaned_up(fake_bridge: FakeBridge) -> None:
    sandbox = start_sandbox(fake_bridge, exec_timeout=2.0)
    try:
        require(sandbox, "process_limit", "privileges")
        worker = sandbox.pid
        assert worker is not None
        # Never bomb a host where the limit is not really in force inside the worker: it
        # must hold RLIMIT_NPROC and count only its own processes (own uid or user namespace).
        check = sandbox.execute("import resource\nprint(resource.getrlimit(resource.RLIMIT_NPROC))")
        assert check.stdout.strip() == "(128, 128)", check.stdout
        status = Path(f"/proc/{worker}/status").read_text()
        own_uid = status.split("Uid:")[1].split()[0] not in ("0", str(os.getuid()))
        userns = os.stat(f"/proc/{worker}/ns/user").st_ino
        own_userns = userns != os.stat("/proc/self/ns/user").st_ino
        assert own_uid or own_userns
        result = attack(
            sandbox,
            "import os\n"
            "while True:\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError:\n"
            "        pass\n",
        )
        assert result.error is not None and "Timeout" in result.error
        # RLIMIT_NPROC held the bomb to the process limit.
        assert len(session_processes(worker)) <= 128
    finally:
        sandbox.close()
    deadline = time.monotonic() + 5
    while session_processes(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert session_processes(worker) == []


def test_memory_fill_fails_inside(sandbox: SubprocessSandbox) -> None:
    require(sandbox, "memory_limit")
    result = attack(
        sandbox,
        "def fill():\n"
        "    hog = []\n"
        "    while True:\n"
        "        hog.append(bytearray(64 * 1024 * 1024))\n"
        "attempt(fill)\n"
        "attempt(lambda: bytearray(8 * 1024 ** 3))\n",
    )
    assert result.stdout.count("BLOCKED MemoryError") == 2, result.stdout
    assert not restarted(result)


def test_disk_fill_stops_at_the_file_size_limit(
    monkeypatch: pytest.MonkeyPatch, fake_bridge: FakeBridge
) -> None:
    real_prepare = subprocess_sandbox.prepare

    def small_files(*args: object, **kwargs: object) -> IsolationPlan:
        return real_prepare(*args, file_mb=4, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(subprocess_sandbox, "prepare", small_files)
    sandbox = start_sandbox(fake_bridge)
    try:
        require(sandbox, "file_size_limit")
        result = attack(
            sandbox,
            "def fill():\n"
            "    with open('big.bin', 'wb') as f:\n"
            "        for _ in range(64):\n"
            "            f.write(b'x' * 1024 * 1024)\n"
            "attempt(fill)\n"
            "import os\nprint('size', os.path.getsize('big.bin'))\n",
        )
        assert "BLOCKED OSError" in result.stdout and "File too large" in result.stdout
        assert "size 4194304" in result.stdout
    finally:
        sandbox.close()


def test_ctypes_cannot_escape(
    sandbox: SubprocessSandbox, secret_file: Path, tmp_path: Path
) -> None:
    require(sandbox, "privileges", "read_access", "no_new_privs")
    # Harmless targets even if a layer were broken: a seize that never stops the parent, a
    # bind mount between two empty dirs of this test.
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    result = attack(
        sandbox,
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('setuid', libc.setuid(0), os.getuid() != 0)\n"
        "print('ptrace', libc.ptrace(0x4206, os.getppid(), 0, 0))\n"  # PTRACE_SEIZE
        f"print('open', libc.open({str(secret_file).encode()!r}, 0))\n"
        "class Iov(ctypes.Structure):\n"
        "    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
        "buf = ctypes.create_string_buffer(64)\n"
        "local, remote = Iov(ctypes.addressof(buf), 64), Iov(0x400000, 64)\n"
        "print('vm_readv', libc.process_vm_readv(os.getppid(), ctypes.byref(local), 1,\n"
        "      ctypes.byref(remote), 1, 0))\n"
        "print('kill', libc.kill(os.getppid(), 0))\n"
        "print('unshare+mount', libc.unshare(0x10000000 | 0x20000),\n"
        f"      libc.mount({bytes(source)!r}, {bytes(target)!r}, None, 4096, None))\n",
    )
    out = result.stdout
    assert "setuid -1 True" in out
    for line in ("ptrace -1", "open -1", "vm_readv -1", "kill -1"):
        assert line in out, out
    assert out.rstrip().endswith("-1"), out  # mount refused even inside a new namespace


def test_subprocesses_inherit_the_sandbox(sandbox: SubprocessSandbox, secret_file: Path) -> None:
    require(sandbox, "read_access", "privileges")
    result = attack(
        sandbox,
        "import subprocess, sys\n"
        f"r = subprocess.run(['cat', {str(secret_file)!r}], capture_output=True, text=True)\n"
        "print('cat', r.returncode)\n"
        f"inner = {f'print(open({str(secret_file)!r}).read())'!r}\n"
        "r = subprocess.run([sys.executable, '-c', inner], capture_output=True, text=True)\n"
        "print('python', r.returncode)\n"
        "r = subprocess.run(['sh', '-c', 'env; cat /proc/$PPID/environ; cat /proc/1/environ'],\n"
        "                   capture_output=True, text=True)\n"
        "print(r.stdout)\n"
        "try:\n"
        "    r = subprocess.run(['su', '-c', 'id'], capture_output=True, text=True, timeout=5)\n"
        "    print('su root' if 'uid=0' in r.stdout else 'su refused')\n"
        "except OSError:\n"
        "    print('su refused')\n",
    )
    assert "cat 1" in result.stdout and "python 1" in result.stdout, result.stdout
    assert "su refused" in result.stdout
    assert API_KEY not in result.stdout


def test_forged_channel_messages_are_ignored(sandbox: SubprocessSandbox) -> None:
    result = attack(
        sandbox,
        "import json, os, sys\n"
        "w = int(sys.argv[-1])\n"  # the worker's write end of the channel
        "def forge(data):\n"
        "    line = data if isinstance(data, bytes) else (json.dumps(data) + '\\n').encode()\n"
        "    os.write(w, line)\n"
        "forge(b'not json at all\\n')\n"
        "forge(b'[1, 2, 3]\\n')\n"
        "forge(b'\\xff\\xfe garbage\\n')\n"
        "forge({'op': 'done', 'id': 'x', 'final': 'FORGED-FINAL'})\n"
        "forge({'op': 'done', 'id': 10 ** 9, 'final': 'FORGED-FINAL'})\n"
        "forge({'op': 'ready', 'pid': 1})\n"
        "forge({'op': 'failed', 'error': 'forged'})\n"
        "forge({'op': 'call', 'id': 'nope', 'fn': 'os.system', 'args': {'cmd': 'id'}})\n"
        "forge({'op': 'call', 'id': 5, 'fn': 'llm_query', 'args': 'not a dict'})\n"
        "print('forged')\n",
    )
    assert "forged" in result.stdout
    assert result.final is None and not restarted(result)
    again = sandbox.execute("print('still here')")
    assert again.final is None and again.stdout.strip() == "still here"
    assert not any(call[0] == "id" for call in sandbox_calls(sandbox))


def sandbox_calls(sandbox: SubprocessSandbox) -> list[tuple[str, str | None]]:
    bridge = sandbox._bridge
    assert isinstance(bridge, FakeBridge)
    return bridge.calls


def test_worker_runs_as_its_own_uid(sandbox: SubprocessSandbox) -> None:
    require(sandbox, "privileges")
    if os.geteuid() != 0:
        pytest.skip("a dedicated uid is for root; other users get a user namespace")
    result = attack(sandbox, "import os\nprint(os.getuid(), os.getgid(), os.getgroups())")
    uid, gid, groups = result.stdout.split(maxsplit=2)
    assert int(uid) != os.getuid() and int(uid) == int(gid) and groups.strip() == "[]"


def test_swapping_the_spilled_context_for_a_secret_does_not_leak_it(
    sandbox: SubprocessSandbox, secret_file: Path
) -> None:
    """The restarted worker loads the context as root before it drops privileges: REPL code
    must not be able to point that load at another file (symlink swap, then a crash)."""
    require(sandbox, "privileges")
    swap = attack(
        sandbox,
        "import os\n"
        "def swap():\n"
        "    spilled = [n for n in os.listdir('.') if n.startswith('fathom-context-')]\n"
        "    for name in spilled:\n"
        f"        os.symlink({str(secret_file)!r}, name + '.new')\n"
        "        os.replace(name + '.new', name)\n"
        "    return spilled\n"
        "attempt(swap)\n",
    )
    try:
        crash = sandbox.execute("import os\nos._exit(3)")
    except SandboxError:
        # Not root, so no sticky scratch: the swap worked, but the restarted worker (already
        # under Landlock) cannot read the symlink's target and refuses to start. No leak.
        assert os.geteuid() != 0
        return
    assert restarted(crash)
    after = attack(sandbox, "print(context)")
    assert after.stdout.strip() == "public context", (swap.stdout, after.stdout)


def test_code_planted_in_scratch_does_not_run_in_the_next_worker(
    sandbox: SubprocessSandbox,
) -> None:
    """The next worker starts in scratch as root: modules planted there must not load."""
    planted = "open('planted-ran', 'w').write('ran')\n"  # scratch is writable: a clear trace
    attack(
        sandbox,
        "for name in ('json', 'pickle', 'signal', 'threading', 'sitecustomize', 'fathom'):\n"
        f"    open(name + '.py', 'w').write({planted!r})\n",
    )
    assert restarted(sandbox.execute("import os\nos._exit(3)"))
    check = sandbox.execute("import json, os\nprint(json.__file__, os.path.exists('planted-ran'))")
    assert "fathom-sandbox" not in check.stdout and check.stdout.strip().endswith("False")
