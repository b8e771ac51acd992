"""Protection layers for the subprocess worker, and which ones this host can give.

Contract used by subprocess.py / worker.py:
  plan = prepare(level, scratch=..., readable=[...], memory_mb=...)   # in the parent
  Popen(plan.argv_prefix + [python, "-m", "fathom.sandbox.worker", ...],
        env=plan.env, preexec_fn=plan.preexec, cwd=scratch, pass_fds=...)
  layers = enter(plan.worker_spec)  # in the worker, after loading the context, before user
                                    # code, while the worker is still single-threaded
  plan.cleanup()                    # in the parent once the worker is gone (restart, close)
  plan.layers                       # name -> "active" | "off" | "unavailable: why"

Layers, each used where the OS allows (Linux; elsewhere only the first six):
  environment       no secrets: a short allow-list of variables, HOME and TMPDIR = scratch
  *_limit           rlimits: address space, CPU seconds, open files, file size, processes
  network           new network namespace (root: unshare; others: with a user namespace),
                    else a seccomp filter on socket(), else only an audit hook (weak)
  read_access       Landlock: reads limited to Python, fathom, the context and scratch
  write_access      Landlock: scratch is the only writable place
  privileges        as root: a dedicated uid per scratch dir (so RLIMIT_NPROC, kill and
                    ptrace rules separate the worker from everything else)
  no_new_privs      setuid binaries and file capabilities cannot raise privileges
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import resource
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from fathom.errors import ConfigError, IsolationError
from fathom.sandbox import linux

LEVELS = ("strict", "standard", "off")
LAYERS = (
    "environment",
    "memory_limit",
    "cpu_limit",
    "open_files_limit",
    "file_size_limit",
    "process_limit",
    "network",
    "read_access",
    "write_access",
    "privileges",
    "no_new_privs",
)
# Variables a Python worker needs; everything else (API keys, tokens) is dropped.
_SAFE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED", "PYTHONUTF8")
# Read-only places besides Python itself: system libraries (for ctypes and subprocesses),
# the dynamic loader's cache, time zone data, and of /proc only the worker's own entry
# (other processes' command lines can hold secrets).
_SYSTEM_READ = (
    "/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc/ld.so.cache",
    "/etc/localtime", "/proc/self", "/proc/meminfo", "/proc/cpuinfo",
    "/sys/devices/system/cpu", "/dev/urandom", "/dev/random", "/dev/zero",
)  # fmt: skip
_SYSTEM_WRITE = ("/dev/null",)
_UID_BASE = 0x60000000  # far above login uids and the usual subuid ranges
_MIB = 1024 * 1024
_FIXES = {
    "network": "run as root, or enable unprivileged user namespaces "
    "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0)",
    "read_access": "use Linux >= 5.13 with Landlock enabled (boot with lsm=...,landlock)",
    "write_access": "use Linux >= 5.13 with Landlock enabled (boot with lsm=...,landlock)",
    "privileges": "install Python where other users can read it (not under a 0700 home), "
    "or allow mount namespaces (CAP_SYS_ADMIN) so fathom can expose it to the worker",
    "process_limit": "run as root (a dedicated uid) or enable unprivileged user namespaces",
}


@dataclass(frozen=True)
class IsolationPlan:
    """How to start and confine one worker process (reuse it for restarts)."""

    level: str
    env: dict[str, str]
    argv_prefix: list[str] = field(default_factory=list)
    preexec: Callable[[], None] | None = None
    worker_spec: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, str] = field(default_factory=dict)
    cleanup: Callable[[], None] = field(default=lambda: None)


@dataclass(frozen=True)
class _Host:
    root: bool
    landlock_abi: int
    netns: bool  # root may unshare a network (and mount) namespace
    userns: bool  # an unprivileged user may unshare user+network namespaces
    seccomp: bool


def scrubbed_env(scratch: Path) -> dict[str, str]:
    """An environment with no secrets: only locale/path variables, HOME set to scratch."""
    env = {k: v for k, v in os.environ.items() if k in _SAFE_ENV}
    env["HOME"] = str(scratch)
    env["TMPDIR"] = str(scratch)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # The worker imports fathom from wherever this process found it.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _probe_unshare(flags: int) -> bool:
    """Whether a child may enter new namespaces (tried once in a throwaway /bin/true)."""
    true = "/bin/true" if os.path.exists("/bin/true") else "/usr/bin/true"
    try:
        subprocess.run([true], preexec_fn=lambda: linux.unshare(flags), check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@cache
def _host() -> _Host:
    if not sys.platform.startswith("linux"):
        return _Host(os.geteuid() == 0, 0, False, False, False)
    root = os.geteuid() == 0
    netns = root and _probe_unshare(linux.CLONE_NEWNET | linux.CLONE_NEWNS)
    userns = not root and _probe_unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNET)
    return _Host(root, linux.landlock_abi(), netns, userns, linux.seccomp_supported())


def _python_paths() -> list[str]:
    """Where the worker's Python, its libraries and fathom live (real paths)."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    candidates |= {os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))}
    candidates |= {v for k, v in sysconfig.get_paths().items() if k.endswith(("stdlib", "lib"))}
    candidates |= {p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p)}
    candidates.add(str(Path(__file__).resolve().parents[1]))  # the fathom package
    return _outermost(os.path.realpath(p) for p in candidates if p and os.path.exists(p))


def _outermost(paths: Any) -> list[str]:
    """Sorted unique paths without those already inside another one."""
    result: list[str] = []
    for path in sorted(set(paths)):
        if not any(path == p or path.startswith(p.rstrip("/") + "/") for p in result):
            result.append(path)
    return result


def _closed_ancestor(path: str) -> str | None:
    """The outermost directory above `path` that other users cannot traverse."""
    parts = Path(path).parts
    for i in range(1, len(parts)):
        directory = str(Path(*parts[:i]))
        with contextlib.suppress(OSError):
            if not os.stat(directory).st_mode & stat.S_IXOTH:
                return directory
    return None


def _masks(python: list[str], extra: list[str]) -> list[tuple[str, list[str]]] | None:
    """Directories to hide and re-expose so a dedicated uid reaches Python (None: impossible)."""
    tops = {top for p in python if (top := _closed_ancestor(p))}
    if "/" in tops:
        return None
    masks = []
    for top in sorted(tops):
        inside = [p for p in python + extra if p.startswith(top + "/")]
        masks.append((top, _outermost(inside)))
    return masks


def _sandbox_uid(scratch: Path) -> int:
    """A uid no account uses, fixed per scratch dir so restarts keep owning its files."""
    st = os.stat(scratch)
    uid = _UID_BASE + (st.st_ino * 2654435761 ^ st.st_dev) % (1 << 24)
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


def _user_process_count() -> int:
    """Processes and threads of this uid (what RLIMIT_NPROC counts)."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
    return count


def prepare(
    level: str,
    *,
    scratch: Path,
    readable: list[Path],
    memory_mb: int | None,
    cpu_seconds: int = 3600,
    file_mb: int = 1024,
    open_files: int = 1024,
    processes: int = 128,
) -> IsolationPlan:
    """Decide the layers for one worker at `level` ("strict", "standard", "off").

    `strict` raises IsolationError naming what to install or enable when a layer is missing.
    """
    if level not in LEVELS:
        raise ConfigError(f"Unknown isolation level {level!r}: use one of {', '.join(LEVELS)}.")
    scratch = Path(scratch).resolve()
    layers = dict.fromkeys(LAYERS, "off")
    layers["environment"] = "active"
    limits: list[tuple[int, int]] = []
    if memory_mb:
        limits.append((resource.RLIMIT_AS, memory_mb * _MIB))
        layers["memory_limit"] = "active"
    spec: dict[str, Any] = {"level": level, "scratch": str(scratch)}
    if level == "off":
        return IsolationPlan(level, scrubbed_env(scratch), [], _preexec(limits, 0, []), spec, layers)

    host = _host()
    limits += [
        (resource.RLIMIT_CPU, cpu_seconds),
        (resource.RLIMIT_NOFILE, open_files),
        (resource.RLIMIT_FSIZE, file_mb * _MIB),
    ]
    layers.update(cpu_limit="active", open_files_limit="active", file_size_limit="active")
    layers["no_new_privs"] = "active"
    flags, masks, uid = 0, [], None
    readable_real = [os.path.realpath(p) for p in readable]
    if host.root:
        found = _masks([*_python_paths(), str(scratch)], readable_real)
        if found is None or (found and not host.netns):
            spec["drop_capabilities"] = True
            layers["privileges"] = (
                "unavailable: Python is not reachable by an unprivileged uid; the worker "
                "stays uid 0 with every capability dropped"
            )
            layers["process_limit"] = "unavailable: RLIMIT_NPROC does not apply to uid 0"
        else:
            masks = found
            uid = _sandbox_uid(scratch)
            os.chown(scratch, uid, uid)
            os.chmod(scratch, 0o700)
            spec["uid"] = uid
            limits.append((resource.RLIMIT_NPROC, processes))
            layers["privileges"] = layers["process_limit"] = "active"
            flags |= linux.CLONE_NEWNS if masks else 0
        if host.netns:
            flags |= linux.CLONE_NEWNET
    elif host.userns:
        flags |= linux.CLONE_NEWUSER | linux.CLONE_NEWNET
        # In a fresh user namespace RLIMIT_NPROC counts only the worker's own processes.
        limits.append((resource.RLIMIT_NPROC, processes))
        layers["privileges"] = layers["process_limit"] = "active"
    else:
        limits.append((resource.RLIMIT_NPROC, _user_process_count() + processes))
        layers["privileges"] = "active"
        layers["process_limit"] = "active"
    if flags & linux.CLONE_NEWNET:
        layers["network"] = "active"
        spec["parent_netns"] = linux.namespace_id("net")
    elif host.seccomp:
        layers["network"] = "active (seccomp filter on socket(); no network namespace)"
        spec["network_fallback"] = "seccomp"
    else:
        layers["network"] = "unavailable: only an audit hook blocks Python sockets (weak)"
        spec["network_fallback"] = "audit"
    if masks:
        spec["parent_mntns"] = linux.namespace_id("mnt")
    if host.landlock_abi:
        spec["landlock_abi"] = host.landlock_abi
        spec["read"] = _outermost([*_python_paths(), *readable_real, *_SYSTEM_READ])
        spec["write"] = [str(scratch), *_SYSTEM_WRITE]
        layers["read_access"] = layers["write_access"] = "active"
    else:
        why = "unavailable: the kernel has no Landlock (Linux >= 5.13 with lsm=landlock)"
        layers["read_access"] = layers["write_access"] = why
    spec["layers"] = layers
    if level == "strict":
        _require_all(layers)
    return IsolationPlan(
        level=level,
        env=scrubbed_env(scratch),
        preexec=_preexec(limits, flags, masks, strict=level == "strict"),
        worker_spec=spec,
        layers=layers,
        cleanup=(lambda: kill_uid(uid)) if uid is not None else (lambda: None),
    )


def _require_all(layers: dict[str, str]) -> None:
    missing = [
        f"{name} ({value}); to fix: {_FIXES.get(name, 'see fathom doctor')}"
        for name, value in layers.items()
        if not value.startswith("active") and not (name == "memory_limit" and value == "off")
    ]
    if missing:
        raise IsolationError(
            "Strict isolation needs layers this host lacks: " + "; ".join(missing)
            + ". Or use sandbox_isolation='standard' to run with what is available."
        )


def _preexec(
    limits: list[tuple[int, int]],
    flags: int,
    masks: list[tuple[str, list[str]]],
    *,
    strict: bool = False,
) -> Callable[[], None]:
    """The function Popen runs in the child between fork and exec (plain syscalls only)."""

    def preexec() -> None:
        # A write past RLIMIT_FSIZE then fails with EFBIG instead of killing the worker.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        for which, value in limits:
            resource.setrlimit(which, (value, value))
        if not flags:
            return
        linux.set_no_new_privs()
        try:
            linux.unshare(flags)
            if masks:
                linux.mask_directories(masks)
        except OSError:
            if strict:
                raise
            # enter() sees the missing namespaces and reports them (and keeps uid 0).

    return preexec


def kill_uid(uid: int) -> None:
    """Kill every process running as `uid` (what user code left behind: fork bombs,
    daemonized children). The sandbox uid is never shared, so nothing else is touched."""
    pid = os.fork()
    if pid == 0:  # the child only makes syscalls, so forking a threaded parent is safe
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for _ in range(50):  # a bomb may fork between passes
                os.kill(-1, signal.SIGKILL)
        except BaseException:
            os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)


def _kill_others() -> None:
    """Kill every process this uid can signal except the caller (kill(-1) skips it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        for _ in range(50):  # a fork bomb may fork between passes
            os.kill(-1, signal.SIGKILL)


def kill_strays(spec: dict[str, Any]) -> None:
    """In the worker: kill the processes REPL code left running (a fork bomb after a timeout).

    Does nothing unless the worker runs as its own dedicated uid, where that cannot touch
    anything outside the sandbox.
    """
    uid = spec.get("uid")
    if uid is not None and os.getuid() == uid:
        _kill_others()


def _audit_block_sockets(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.__new__" and len(args) > 1 and args[1] not in (1, -1):  # AF_UNIX
        raise PermissionError("network access is disabled in the fathom sandbox")


def enter(spec: dict[str, Any]) -> dict[str, str]:
    """Apply the in-process layers inside the worker; returns the layers really in force.

    Raises IsolationError at `strict` when one cannot be applied.
    """
    layers = dict(spec.get("layers") or {})
    if spec.get("level", "off") == "off":
        return layers
    failed: list[str] = []

    def lost(name: str, why: str) -> None:
        layers[name] = f"unavailable: {why}"
        failed.append(f"{name}: {why}")

    linux.set_no_new_privs()
    scratch, uid = spec["scratch"], spec.get("uid")
    network_fallback = spec.get("network_fallback")
    if "parent_netns" in spec and linux.namespace_id("net") == spec["parent_netns"]:
        lost("network", "could not create a network namespace")
        network_fallback = "seccomp" if linux.seccomp_supported() else "audit"
    if "parent_mntns" in spec and linux.namespace_id("mnt") == spec["parent_mntns"]:
        lost("privileges", "could not create the mount namespace that exposes Python")
        lost("process_limit", "RLIMIT_NPROC does not apply to uid 0")
        uid, spec = None, {**spec, "drop_capabilities": True}
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        _kill_others()  # leftovers of a previous worker under this uid
    elif spec.get("drop_capabilities"):
        linux.drop_capabilities()
    os.chdir(scratch)
    abi = spec.get("landlock_abi", 0)
    if abi:
        threads = len(os.listdir("/proc/self/task"))
        try:
            if threads > 1:
                raise OSError(f"{threads} threads exist; call enter() before starting threads")
            linux.landlock_restrict(spec["read"], spec["write"], abi)
        except OSError as exc:
            lost("read_access", f"Landlock failed: {exc}")
            lost("write_access", f"Landlock failed: {exc}")
    if network_fallback == "seccomp":
        try:
            linux.block_inet_sockets()
            layers["network"] = "active (seccomp filter on socket(); no network namespace)"
        except OSError as exc:
            lost("network", f"seccomp failed ({exc}); only an audit hook blocks sockets")
            network_fallback = "audit"
    if network_fallback == "audit":
        sys.addaudithook(_audit_block_sockets)
    linux.set_dumpable(False)
    if failed and spec.get("level") == "strict":
        raise IsolationError("Strict isolation could not be applied: " + "; ".join(failed))
    return layers


_PROBE = (
    "import json, sys\n"
    "from fathom.sandbox.isolation import enter\n"
    "print(json.dumps(enter(json.loads(sys.argv[1]))))\n"
)


def report(level: str = "standard") -> dict[str, str]:
    """The layers a worker at `level` really gets on this host (starts a probe worker).

    For `fathom doctor`: name -> "active...", "off" or "unavailable: why".
    """
    with tempfile.TemporaryDirectory(prefix="fathom-doctor-") as tmp:
        try:
            plan = prepare(level, scratch=Path(tmp), readable=[], memory_mb=4096)
        except IsolationError as exc:
            return {"level": f"unavailable: {exc}"}
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _PROBE, json.dumps(plan.worker_spec)],
                env=plan.env, preexec_fn=plan.preexec, cwd=tmp,
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
        finally:
            plan.cleanup()
        if proc.returncode != 0 or not proc.stdout.strip():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {**plan.layers, "worker": f"unavailable: probe worker failed: {tail}"}
        layers: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
        return layers
