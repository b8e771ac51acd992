"""Protection layers for the subprocess worker, and which ones this host can give.

Contract used by subprocess.py / worker.py:
  plan = prepare(level, scratch=..., readable=[...], memory_mb=...)   # in the parent
  Popen(plan.argv_prefix + [python, "-m", "fathom.sandbox.worker", ...],
        env=plan.env, preexec_fn=plan.preexec, cwd=scratch, pass_fds=...)
  layers = enter(plan.worker_spec)  # in the worker, after loading the context, before user code
  plan.cleanup()                    # in the parent once the worker is gone (restart, close)
  plan.close()                      # in the parent once no worker of this plan starts again
  plan.layers                       # name -> "active..." | "off" | "unavailable: why"

Namespaces, the mount view and Landlock start in plan.preexec, between fork and exec, so
every thread of the worker is confined; enter() then drops root, adds the fallbacks, and
checks that what preexec did is really in force. Layers, each where the OS allows (Linux;
elsewhere only the environment and the rlimits):
  environment       no secrets: a short allow-list of variables, HOME and TMPDIR = scratch
  *_limit           rlimits: address space, CPU seconds, open files, file size, processes
  disk_quota        scratch is a size-limited tmpfs (disk_mb, default 1 GB) in a mount
                    namespace all workers of one sandbox share, so many files cannot fill
                    the host disk and the crash-recovery snapshot survives a restart
  network           own network namespace (root: unshare; others: with a user namespace)
                    and a seccomp filter refusing socket() (no unix sockets to host services
                    either); with neither, only an audit hook on Python sockets (weak)
  read_access       Landlock: reads limited to Python, fathom, the context and scratch
  write_access      Landlock: scratch is the only writable place
  privileges        as root: a dedicated uid per scratch dir (so RLIMIT_NPROC, kill and
                    ptrace rules separate the worker from everything else); directories it
                    cannot traverse (a 0700 /root holding pyenv) are hidden behind a tmpfs in
                    a mount namespace that shows only Python, the context and scratch
  no_new_privs      setuid binaries and file capabilities cannot raise privileges
  syscall_filter    seccomp (x86_64, aarch64): no sockets, ptrace, new namespaces, mounts,
                    bpf, perf events, keyrings, io_uring or kernel modules
"""

from __future__ import annotations

import json
import os
import platform
import pwd
import resource
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from fathom.errors import ConfigError, IsolationError
from fathom.sandbox import linux, view

LEVELS = ("strict", "standard", "off")
LAYERS = (
    "environment",
    "memory_limit",
    "cpu_limit",
    "open_files_limit",
    "file_size_limit",
    "disk_quota",
    "process_limit",
    "network",
    "read_access",
    "write_access",
    "privileges",
    "no_new_privs",
    "syscall_filter",
)
# Variables a Python worker needs; everything else (API keys, tokens) is dropped.
_SAFE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED", "PYTHONUTF8")
_SECCOMP_ACTIVE = "active (seccomp: no sockets, ptrace, namespaces, mounts, bpf, io_uring)"
_UID_BASE = 0x60000000  # far above login uids and the usual subuid ranges
_MIB = 1024 * 1024
_FIXES = {
    "network": "run as root, or enable unprivileged user namespaces "
    "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0)",
    "read_access": "use Linux >= 5.13 with Landlock enabled (boot with lsm=...,landlock)",
    "write_access": "use Linux >= 5.13 with Landlock enabled (boot with lsm=...,landlock)",
    "privileges": "install Python where other users can read it (not under a 0700 home), "
    "or allow mount namespaces (CAP_SYS_ADMIN) so fathom can expose it to the worker",
    "disk_quota": "run as root, or enable unprivileged user namespaces "
    "(sysctl user.max_user_namespaces > 0) so scratch can be a size-limited tmpfs",
    "process_limit": "run as root (a dedicated uid) or enable unprivileged user namespaces",
    "syscall_filter": "run on Linux on x86_64 or aarch64",
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
    close: Callable[[], None] = field(default=lambda: None)


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


def prepare(
    level: str,
    *,
    scratch: Path,
    readable: list[Path],
    memory_mb: int | None,
    cpu_seconds: int = 3600,
    file_mb: int = 1024,
    disk_mb: int = 1024,
    open_files: int = 1024,
    processes: int = 128,
) -> IsolationPlan:
    """Decide the layers for one worker at `level` ("strict", "standard", "off").

    `strict` raises IsolationError naming what to install or enable when a layer is missing.
    `disk_mb` caps everything the worker writes in scratch together (file_mb: one file).
    """
    if level not in LEVELS:
        raise ConfigError(f"Unknown isolation level {level!r}: use one of {', '.join(LEVELS)}.")
    scratch = Path(scratch).resolve()
    layers = dict.fromkeys(LAYERS, "off")
    layers["environment"] = "active"
    limits: list[tuple[int, int]] = []
    if memory_mb:
        limits.append((resource.RLIMIT_AS, memory_mb * _MIB))
        layers["memory_limit"] = f"active ({memory_mb} MB of address space)"
    spec: dict[str, Any] = {"level": level, "scratch": str(scratch), "layers": layers}
    if level == "off":
        preexec = _preexec(limits, 0, [], spec)
        return IsolationPlan(level, scrubbed_env(scratch), [], preexec, spec, layers)

    host = _host()
    limits += [
        (resource.RLIMIT_CPU, cpu_seconds),
        (resource.RLIMIT_NOFILE, open_files),
        (resource.RLIMIT_FSIZE, file_mb * _MIB),
    ]
    layers["cpu_limit"] = f"active ({cpu_seconds} CPU seconds per worker)"
    layers["open_files_limit"] = f"active ({open_files} descriptors)"
    layers["file_size_limit"] = f"active ({file_mb} MB per file)"
    layers["no_new_privs"] = "active" if linux.LINUX else "unavailable: not Linux"
    flags, masks, uid = 0, [], None
    readable_real = [os.path.realpath(p) for p in readable]
    if host.root:
        found = view.masks([*view.python_paths(), str(scratch)], readable_real)
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
            # Owned by us, writable through the group, sticky: the worker adds its own files
            # but cannot rename or delete ours (the spilled context it loads before the uid
            # switch would otherwise be swappable for a symlink to any file).
            os.chown(scratch, os.geteuid(), uid)
            os.chmod(scratch, 0o1770)
            spec["uid"] = uid
            limits.append((resource.RLIMIT_NPROC, processes))
            layers["privileges"] = f"active (dedicated uid {uid}, no capabilities)"
            layers["process_limit"] = f"active ({processes} processes and threads)"
            flags |= linux.CLONE_NEWNS if masks else 0
        if host.netns:
            flags |= linux.CLONE_NEWNET
    elif host.userns:
        flags |= linux.CLONE_NEWUSER | linux.CLONE_NEWNET
        # In a fresh user namespace RLIMIT_NPROC counts only the worker's own processes.
        limits.append((resource.RLIMIT_NPROC, processes))
        layers["privileges"] = "active (not root; user namespace)"
        layers["process_limit"] = f"active ({processes} processes and threads)"
    else:
        limits.append((resource.RLIMIT_NPROC, linux.count_processes(os.getuid()) + processes))
        layers["privileges"] = "active (not root)"
        layers["process_limit"] = f"active ({processes} more than your processes now)"
    if flags & linux.CLONE_NEWNET:
        spec["parent_netns"] = linux.namespace_id("net")
    # socket() refused for every family (socketpair still works): also no unix sockets to
    # host services (D-Bus, an ssh-agent, X11) that a network namespace leaves reachable.
    spec["seccomp"] = host.seccomp
    layers["network"] = _network_layer(bool(flags & linux.CLONE_NEWNET), host.seccomp)
    layers["syscall_filter"] = _SECCOMP_ACTIVE if host.seccomp else (
        f"unavailable: no seccomp filter for {platform.system()} on {platform.machine()}"
    )
    if masks:
        spec["parent_mntns"] = linux.namespace_id("mnt")
    quota, layers["disk_quota"] = view.scratch_quota(
        str(scratch),
        disk_mb,
        possible=host.netns if host.root else host.userns,
        # As root the dedicated uid writes through the group, as in the host scratch dir.
        group=uid if uid is not None else os.getegid(),
        readable=readable_real,
        masks=masks,
        userns=not host.root,
    )
    if quota is not None:
        spec["disk_mb"] = disk_mb
    if host.landlock_abi:
        spec["landlock_abi"] = host.landlock_abi
        spec["read"] = view.outermost([*view.python_paths(), *readable_real, *view.SYSTEM_READ])
        spec["write"] = [str(scratch), *view.SYSTEM_WRITE]
        # A source checkout on PYTHONPATH: its directory must be listable to import fathom.
        spec["list"] = [str(Path(__file__).resolve().parents[2])]
        abi = host.landlock_abi
        layers["read_access"] = f"active (Landlock ABI {abi}: Python, fathom, context)"
        layers["write_access"] = f"active (Landlock ABI {abi}: scratch only)"
    else:
        why = "unavailable: the kernel has no Landlock (Linux >= 5.13 with lsm=landlock)"
        layers["read_access"] = layers["write_access"] = why
    if level == "strict":
        try:
            _require_all(layers)
        except IsolationError:
            if quota is not None:
                quota.close()
            raise

    def cleanup() -> None:
        if uid is not None:
            linux.kill_uid(uid)
        if quota is not None and not scratch.exists():
            quota.close()  # the sandbox is gone (its owner never called plan.close())

    return IsolationPlan(
        level=level,
        env=scrubbed_env(scratch),
        preexec=_preexec(limits, flags, masks, spec, strict=level == "strict", quota=quota),
        worker_spec=spec,
        layers=layers,
        cleanup=cleanup,
        close=quota.close if quota is not None else (lambda: None),
    )


def _network_layer(netns: bool, seccomp: bool) -> str:
    parts = ["own network namespace"] * netns + ["socket() refused by seccomp"] * seccomp
    if not parts:
        return "unavailable: only an audit hook blocks Python sockets (weak)"
    return f"active ({'; '.join(parts)})"


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
    spec: dict[str, Any],
    *,
    strict: bool = False,
    quota: view.ScratchQuota | None = None,
) -> Callable[[], None]:
    """The function Popen runs in the child between fork and exec (plain syscalls only).

    Landlock starts here, before the worker runs a line of Python: every thread it ever
    has is confined, and the context it loads as root cannot be swapped for another file.
    """
    abi = spec.get("landlock_abi", 0)

    def preexec() -> None:
        # A write past RLIMIT_FSIZE then fails with EFBIG instead of killing the worker.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        confine = spec.get("level", "off") != "off" and linux.LINUX
        if confine:
            linux.set_no_new_privs()
            try:
                joined = False
                if quota is not None:
                    try:
                        quota.enter()  # its namespace already holds the masks
                        joined = True
                    except OSError:
                        pass  # enter() finds scratch is not the tmpfs (strict: IsolationError)
                if joined:
                    if flags & linux.CLONE_NEWNET:
                        linux.unshare(linux.CLONE_NEWNET)
                else:
                    if flags:
                        linux.unshare(flags)
                    if masks:
                        linux.mask_directories(masks)
            except OSError:
                if strict:
                    raise
                # enter() sees the missing namespaces and reports them (and keeps uid 0).
        # After unshare: a new user namespace records the creator's RLIMIT_NPROC as the cap
        # for all of the user's processes, which a low limit set earlier would break.
        for which, value in limits:
            resource.setrlimit(which, (value, value))
        if confine and abi:
            try:
                linux.landlock_restrict(spec["read"], spec["write"], abi, spec.get("list", []))
            except OSError:
                if strict:
                    raise
                # enter() finds the worker unconfined and tries again.

    return preexec


def kill_strays(spec: dict[str, Any]) -> None:
    """In the worker: kill the processes REPL code left running (a fork bomb after a timeout).

    Does nothing unless the worker runs as its own dedicated uid, where that cannot touch
    anything outside the sandbox.
    """
    uid = spec.get("uid")
    if uid is not None and os.getuid() == uid:
        linux.kill_other_processes()


def _landlocked() -> bool:
    """Whether Landlock already confines this process: "/" is listable by everyone else."""
    try:
        os.listdir("/")
    except PermissionError:
        return True
    return False


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

    if linux.LINUX:
        linux.set_no_new_privs()
    scratch, uid = spec["scratch"], spec.get("uid")
    netns = "parent_netns" in spec and linux.namespace_id("net") != spec["parent_netns"]
    if "parent_netns" in spec and not netns:
        failed.append("network: could not create a network namespace")
    if "parent_mntns" in spec and linux.namespace_id("mnt") == spec["parent_mntns"]:
        lost("privileges", "could not create the mount namespace that exposes Python")
        lost("process_limit", "RLIMIT_NPROC does not apply to uid 0")
        uid, spec = None, {**spec, "drop_capabilities": True}
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        # Leftovers of a previous worker under this uid (where Landlock's signal scope lets us;
        # plan.cleanup() in the parent covers the rest).
        linux.kill_other_processes()
    elif spec.get("drop_capabilities"):
        linux.drop_capabilities()
    os.chdir(scratch)
    disk_mb = spec.get("disk_mb")
    if disk_mb:
        found = os.statvfs(scratch)
        if found.f_blocks * found.f_frsize != disk_mb * _MIB:
            lost("disk_quota", "scratch is not the size-limited tmpfs (the worker could not "
                 "join its mount namespace; was plan.close() called?)")  # fmt: skip
    abi = spec.get("landlock_abi", 0)
    if abi and not _landlocked():
        threads = len(os.listdir("/proc/self/task"))
        try:
            if threads > 1:
                raise OSError(f"{threads} threads exist; call enter() before starting threads")
            linux.landlock_restrict(spec["read"], spec["write"], abi, spec.get("list", []))
        except OSError as exc:
            lost("read_access", f"Landlock failed: {exc}")
            lost("write_access", f"Landlock failed: {exc}")
    seccomp = False
    if spec.get("seccomp"):
        try:
            linux.install_syscall_filter()
            seccomp = True
        except OSError as exc:
            lost("syscall_filter", f"seccomp failed: {exc}")
    if "layers" in spec:  # a spec from prepare(): say what really holds
        layers["network"] = _network_layer(netns, seccomp)
    if not (netns or seccomp):
        sys.addaudithook(_audit_block_sockets)
    if linux.LINUX:
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
            plan.close()
        if proc.returncode != 0 or not proc.stdout.strip():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {**plan.layers, "worker": f"unavailable: probe worker failed: {tail}"}
        layers: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
        return layers
