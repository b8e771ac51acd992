"""The parent's side: which layers a worker gets on this host, and how to start it.

`prepare` decides one layer group at a time (rlimits, identity, network, disk quota, file
access); each step records its layers, rlimits and what the worker's `enter` must do.
"""

from __future__ import annotations

import os
import platform
import pwd
import resource
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fathom.errors import ConfigError, IsolationError
from fathom.sandbox import ISOLATION_LEVELS, IsolationLevel, linux, view
from fathom.sandbox.isolation.cgroup import CgroupHost, WorkerCgroups, probe_cgroups
from fathom.sandbox.isolation.host import Host, probe_host
from fathom.sandbox.isolation.layers import (
    DISK_QUOTA_MB,
    LAYERS,
    Layer,
    LayerStatus,
    layers_to_text,
    network_layer,
)
from fathom.sandbox.isolation.preexec import make_preexec

# Variables a Python worker needs; everything else (API keys, tokens) is dropped.
_SAFE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED", "PYTHONUTF8")
_SECCOMP = "seccomp: no sockets, ptrace, namespaces, mounts, bpf, io_uring"
_UID_BASE = 0x60000000  # far above login uids and the usual subuid ranges
_MIB = 1024 * 1024
_LANDLOCK_FIX = "use Linux >= 5.13 with Landlock enabled (boot with lsm=...,landlock)"
_NAMESPACES_FIX = ("run as root, or enable unprivileged user namespaces "
                   "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0)")
_MESSAGE_QUEUES = 64  # SysV message queues in a worker's IPC namespace (16 KB each by default)
_FIXES = {
    "network": _NAMESPACES_FIX,
    "ipc": _NAMESPACES_FIX,
    "memory_cgroup": "run as root where /sys/fs/cgroup is writable: cgroup v2 with the memory "
    "controller enabled in the cgroup.subtree_control of fathom's cgroup, or the cgroup v1 "
    "memory hierarchy (in a container: a private cgroup namespace, mounted read-write)",
    "read_access": _LANDLOCK_FIX,
    "write_access": _LANDLOCK_FIX,
    "privileges": "install Python where other users can read it (not under a 0700 home), "
    "or allow mount namespaces (CAP_SYS_ADMIN) so fathom can expose it to the worker",
    "disk_quota": "run as root, or enable unprivileged user namespaces "
    "(sysctl user.max_user_namespaces > 0) so scratch can be a size-limited tmpfs",
    "process_limit": "run as root (a dedicated uid) or enable unprivileged user namespaces",
    "syscall_filter": "run on Linux on x86_64 or aarch64",
}


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class IsolationPlan:
    """How to start and confine one worker process (reuse it for restarts)."""

    level: IsolationLevel
    env: dict[str, str]
    preexec: Callable[[], None]
    worker_spec: dict[str, Any]  # JSON for the worker's enter()
    layers: dict[str, Layer]
    cleanup: Callable[[], None] = _nothing  # once a worker is gone (restart, close)
    close: Callable[[], None] = _nothing  # once no worker of this plan starts again


def scrubbed_env(scratch: Path) -> dict[str, str]:
    """An environment with no secrets: only locale/path variables, HOME set to scratch."""
    env = {k: v for k, v in os.environ.items() if k in _SAFE_ENV}
    env["HOME"] = str(scratch)
    env["TMPDIR"] = str(scratch)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # glibc reserves 128 MB of address space per thread arena; RLIMIT_AS counts it.
    env["MALLOC_ARENA_MAX"] = "2"
    # The worker imports fathom from wherever this process found it.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _sandbox_uid(scratch: Path) -> int:
    """A uid no account and no process uses; the plan keeps it, so restarts own scratch.

    A closed sandbox whose scratch inode is reused may leave zombies of its uid that init
    has not reaped yet: they would count against the next worker's RLIMIT_NPROC.
    """
    st = os.stat(scratch)
    uid = _UID_BASE + (st.st_ino * 2654435761 ^ st.st_dev) % (1 << 24)
    while _uid_taken(uid):
        uid += 1
    return uid


def _uid_taken(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return linux.count_processes(uid) > 0
    return True


@dataclass
class _Draft:
    """A plan being decided: each step adds layers, rlimits and settings for the worker."""

    level: IsolationLevel
    scratch: Path
    readable: list[str]  # real paths
    layers: dict[str, Layer] = field(default_factory=lambda: {n: Layer.off(n) for n in LAYERS})
    spec: dict[str, Any] = field(default_factory=dict)  # what enter() needs besides layers
    limits: list[tuple[int, int]] = field(default_factory=list)
    flags: int = 0  # the namespaces preexec unshares
    masks: list[tuple[str, list[str]]] = field(default_factory=list)
    uid: int | None = None  # a dedicated sandbox uid (root only)
    quota: view.ScratchQuota | None = None
    cgroups: WorkerCgroups | None = None
    ipc_limits: tuple[int, int, int] | None = None  # linux.limit_ipc's arguments

    def add(self, layer: Layer) -> None:
        self.layers[layer.name] = layer

    def limit(self, which: int, value: int, layer: Layer) -> None:
        self.limits.append((which, value))
        self.add(layer)

    def plan(self) -> IsolationPlan:
        spec = {"level": self.level, "scratch": str(self.scratch), **self.spec,
                "layers": layers_to_text(self.layers)}  # fmt: skip
        uid, quota, cgroups, scratch = self.uid, self.quota, self.cgroups, self.scratch

        def cleanup() -> None:
            if uid is not None:
                linux.kill_uid(uid)
            if cgroups is not None:
                cgroups.remove()  # and whatever still runs in them (setsid'd, or uid 0)
            if quota is not None and not scratch.exists():
                quota.close()  # the sandbox is gone (its owner never called plan.close())

        preexec = make_preexec(
            spec, limits=self.limits, flags=self.flags, masks=self.masks,
            strict=self.level == "strict", quota=quota, cgroups=cgroups,
            ipc_limits=self.ipc_limits,
        )  # fmt: skip
        return IsolationPlan(
            level=self.level,
            env=scrubbed_env(scratch),
            preexec=preexec,
            worker_spec=spec,
            layers=dict(self.layers),
            cleanup=cleanup,
            close=self.close,
        )

    def close(self) -> None:
        """Free the scratch tmpfs and the memory cgroups (no worker starts again)."""
        if self.quota is not None:
            self.quota.close()
        if self.cgroups is not None:
            self.cgroups.close()


def prepare(
    level: IsolationLevel,
    *,
    scratch: Path,
    readable: list[Path],
    memory_mb: int | None,
    address_space_mb: int | None = None,
    cpu_seconds: int = 3600,
    file_mb: int = 1024,
    disk_mb: int = DISK_QUOTA_MB,
    open_files: int = 1024,
    processes: int = 128,
) -> IsolationPlan:
    """Decide the layers for one worker at `level` ("strict", "standard", "off").

    `strict` raises IsolationError naming what to install or enable when a layer is missing.
    `memory_mb` caps the memory of the worker and every process it starts together (a
    cgroup, where the host allows one) and the address space of each (RLIMIT_AS; or
    `address_space_mb`, which a worker may need more of: thread stacks are reserved whole).
    `disk_mb` caps everything the worker writes in scratch together (file_mb: one file).
    """
    if level not in ISOLATION_LEVELS:
        levels = ", ".join(ISOLATION_LEVELS)
        raise ConfigError(f"Unknown isolation level {level!r}: use one of {levels}.")
    draft = _Draft(level, Path(scratch).resolve(), [os.path.realpath(p) for p in readable])
    draft.add(Layer.active("environment"))
    space = max(memory_mb or 0, address_space_mb or 0)
    if memory_mb:
        memory = Layer.active("memory_limit", f"{space} MB of address space")
        draft.limit(resource.RLIMIT_AS, space * _MIB, memory)
    if level != "off":
        host = probe_host()
        _limit_resources(draft, cpu_seconds=cpu_seconds, open_files=open_files, file_mb=file_mb)
        _limit_memory(draft, probe_cgroups(), memory_mb)
        _choose_identity(draft, host, processes)
        _cut_network(draft, host)
        _separate_ipc(draft, host, memory_mb)
        _limit_disk(draft, host, disk_mb)
        _restrict_files(draft, host)
    if level == "strict":
        try:
            _require_all(draft.layers)
        except IsolationError:
            draft.close()
            raise
    if memory_mb:
        _warn_per_process_only(draft.layers["memory_cgroup"], memory_mb, space)
    return draft.plan()


def _limit_resources(draft: _Draft, *, cpu_seconds: int, open_files: int, file_mb: int) -> None:
    cpu = Layer.active("cpu_limit", f"{cpu_seconds} CPU seconds per worker")
    draft.limit(resource.RLIMIT_CPU, cpu_seconds, cpu)
    files = Layer.active("open_files_limit", f"{open_files} descriptors")
    draft.limit(resource.RLIMIT_NOFILE, open_files, files)
    size = Layer.active("file_size_limit", f"{file_mb} MB per file")
    draft.limit(resource.RLIMIT_FSIZE, file_mb * _MIB, size)


def _limit_memory(draft: _Draft, cgroups: CgroupHost, memory_mb: int | None) -> None:
    """A memory cgroup per worker, so its processes share `memory_mb` (no swap)."""
    if not memory_mb:
        return
    if not cgroups.available:
        draft.add(Layer.unavailable("memory_cgroup", cgroups.missing))
        return
    draft.cgroups = WorkerCgroups(cgroups, memory_mb * _MIB)
    draft.spec["memory_cgroup"] = draft.cgroups.prefix
    draft.spec["cgroup_version"] = cgroups.version
    how = f"cgroup v{cgroups.version}: {memory_mb} MB for the worker and its processes together"
    draft.add(Layer.active("memory_cgroup", how + ", no swap"))


def _warn_per_process_only(cgroup: Layer, memory_mb: int, space: int) -> None:
    """Say so when memory_mb cannot hold as asked: per process only, or raised."""
    if cgroup.is_active:
        return  # the cgroup holds memory_mb; the address space is only a per-process guard
    parts = []
    if cgroup.status is LayerStatus.UNAVAILABLE:
        parts.append(f"no memory cgroup on this host ({cgroup.detail}), so memory_mb="
                     f"{memory_mb} limits each process of the sandbox, not all together")
    if space > memory_mb:
        parts.append(f"each process may use {space} MB of address space, not the "
                     f"{memory_mb} MB asked: a worker needs that much to start and load "
                     "its context")
    if parts:
        warnings.warn("fathom sandbox: " + "; ".join(parts) + ".", RuntimeWarning, stacklevel=3)


def _choose_identity(draft: _Draft, host: Host, processes: int) -> None:
    """Who the worker runs as, and the process limit that follows from it."""
    if linux.LINUX:
        draft.add(Layer.active("no_new_privs"))
    else:
        draft.add(Layer.unavailable("no_new_privs", "not Linux"))
    if host.root:
        _as_root(draft, host, processes)
    elif host.userns:
        draft.flags |= linux.CLONE_NEWUSER
        # In a fresh user namespace RLIMIT_NPROC counts only the worker's own processes.
        nproc = Layer.active("process_limit", f"{processes} processes and threads")
        draft.limit(resource.RLIMIT_NPROC, processes, nproc)
        draft.add(Layer.active("privileges", "not root; user namespace"))
    else:
        nproc = Layer.active("process_limit", f"{processes} more than your processes now")
        draft.limit(resource.RLIMIT_NPROC, linux.count_processes(os.getuid()) + processes, nproc)
        draft.add(Layer.active("privileges", "not root"))


def _as_root(draft: _Draft, host: Host, processes: int) -> None:
    """A dedicated uid where it can reach Python; else uid 0 with every capability dropped."""
    masks = view.masks([*view.python_paths(), str(draft.scratch)], draft.readable)
    if masks is None or (masks and not host.netns):
        draft.spec["drop_capabilities"] = True
        draft.add(Layer.unavailable(
            "privileges", "Python is not reachable by an unprivileged uid; the worker stays "
            "uid 0 with every capability dropped",
        ))  # fmt: skip
        draft.add(Layer.unavailable("process_limit", "RLIMIT_NPROC does not apply to uid 0"))
        return
    uid = _sandbox_uid(draft.scratch)
    # Owned by us, writable through the group, sticky: the worker adds its own files but
    # cannot rename or delete ours (the spilled context it loads before the uid switch
    # would otherwise be swappable for a symlink to any file).
    os.chown(draft.scratch, os.geteuid(), uid)
    os.chmod(draft.scratch, 0o1770)
    draft.uid = draft.spec["uid"] = uid
    nproc = Layer.active("process_limit", f"{processes} processes and threads")
    draft.limit(resource.RLIMIT_NPROC, processes, nproc)
    draft.add(Layer.active("privileges", f"dedicated uid {uid}, no capabilities"))
    if masks:
        draft.masks = masks
        draft.flags |= linux.CLONE_NEWNS
        draft.spec["parent_mntns"] = linux.namespace_id("mnt")


def _cut_network(draft: _Draft, host: Host) -> None:
    """A network namespace where the host allows one, and the seccomp syscall filter."""
    if host.namespaces:
        draft.flags |= linux.CLONE_NEWNET
        draft.spec["parent_netns"] = linux.namespace_id("net")
    # socket() refused for every family (socketpair still works): also no unix sockets to
    # host services (D-Bus, an ssh-agent, X11) that a network namespace leaves reachable.
    draft.spec["seccomp"] = host.seccomp
    draft.add(network_layer(host.namespaces, host.seccomp))
    if host.seccomp:
        draft.add(Layer.active("syscall_filter", _SECCOMP))
    else:
        why = f"no seccomp filter for {platform.system()} on {platform.machine()}"
        draft.add(Layer.unavailable("syscall_filter", why))


def _separate_ipc(draft: _Draft, host: Host, memory_mb: int | None) -> None:
    """An IPC namespace: no host shared memory or queues, and the worker's die with it."""
    if not host.namespaces:
        why = "an IPC namespace needs root or user namespaces"
        draft.add(Layer.unavailable("ipc", why))
        return
    draft.flags |= linux.CLONE_NEWIPC
    draft.spec["parent_ipcns"] = host_ipcns = linux.namespace_id("ipc")
    if not memory_mb:
        draft.add(Layer.active("ipc", "own IPC namespace"))
        return
    draft.ipc_limits = (memory_mb * _MIB, _MESSAGE_QUEUES, host_ipcns)
    draft.add(Layer.active("ipc", f"own IPC namespace, SysV shared memory <= {memory_mb} MB"))


def _limit_disk(draft: _Draft, host: Host, disk_mb: int) -> None:
    """Scratch as a size-limited tmpfs in a mount namespace all workers of the plan share."""
    draft.quota, layer = view.scratch_quota(
        str(draft.scratch),
        disk_mb,
        possible=host.namespaces,
        # As root the dedicated uid writes through the group, as in the host scratch dir.
        group=draft.uid if draft.uid is not None else os.getegid(),
        readable=draft.readable,
        masks=draft.masks,
        userns=not host.root,
    )
    draft.add(layer)
    if draft.quota is not None:
        draft.spec["disk_mb"] = disk_mb


def _restrict_files(draft: _Draft, host: Host) -> None:
    """Landlock: reads limited to Python, fathom and the context; writes to scratch."""
    abi = host.landlock_abi
    if not abi:
        why = "the kernel has no Landlock (Linux >= 5.13 with lsm=landlock)"
        draft.add(Layer.unavailable("read_access", why))
        draft.add(Layer.unavailable("write_access", why))
        return
    draft.spec["landlock_abi"] = abi
    draft.spec["read"] = view.outermost([*view.python_paths(), *draft.readable, *view.SYSTEM_READ])
    draft.spec["write"] = [str(draft.scratch), *view.SYSTEM_WRITE]
    # A source checkout on PYTHONPATH: its directory must be listable to import fathom.
    draft.spec["list"] = [str(Path(__file__).resolve().parents[3])]
    draft.add(Layer.active("read_access", f"Landlock ABI {abi}: Python, fathom, context"))
    draft.add(Layer.active("write_access", f"Landlock ABI {abi}: scratch only"))


def _require_all(layers: Mapping[str, Layer]) -> None:
    """Strict: every layer asked for must be available (a layer that is off was not)."""
    missing = [
        f"{layer.name} ({layer.text}); to fix: {_FIXES.get(layer.name, 'see fathom doctor')}"
        for layer in layers.values()
        if layer.status is LayerStatus.UNAVAILABLE
    ]
    if missing:
        raise IsolationError(
            "Strict isolation needs layers this host lacks: " + "; ".join(missing)
            + ". Or use sandbox_isolation='standard' to run with what is available."
        )
