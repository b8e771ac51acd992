"""Memory cgroups: a worker and every process it starts under one memory limit.

RLIMIT_AS limits each process on its own; a cgroup limits them together. Each worker gets a
cgroup of its own, made and joined between fork and exec (so no child of it escapes), under
the cgroup this process runs in, and removed, with whatever still runs in it, once the worker
is gone. One per worker rather than one per sandbox: scratch is a tmpfs whose pages count
against the cgroup of the process that wrote them, so a sandbox-wide cgroup holding a full
scratch would leave every restarted worker with no memory to start in.

cgroup v2 needs the memory controller already enabled in the subtree_control of this
process's cgroup (fathom never enables controllers or moves processes); hybrid hosts offer
the cgroup v1 memory hierarchy instead. Either must be writable (root, or a delegated tree).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import time
import weakref
from dataclasses import dataclass
from functools import cache

_MOUNTINFO = "/proc/self/mountinfo"
_OWN_CGROUPS = "/proc/self/cgroup"


@dataclass(frozen=True)
class CgroupHost:
    """Where this host lets fathom make memory cgroups (`parent`), or why not (`missing`)."""

    parent: str = ""
    version: int = 0  # 2, or 1 for the legacy memory hierarchy
    swap_file: str = ""  # the file that keeps a cgroup from swapping, when swap is accounted
    missing: str = "not probed"

    @property
    def available(self) -> bool:
        return bool(self.parent)

    @property
    def limit_file(self) -> str:
        return "memory.max" if self.version == 2 else "memory.limit_in_bytes"


@cache
def probe_cgroups() -> CgroupHost:
    """Where workers' memory cgroups can go on this host, tried once per process."""
    if not os.path.exists(_OWN_CGROUPS):
        return CgroupHost(missing="no cgroups (not Linux, or /proc is not mounted)")
    try:
        mounts = _cgroup_mounts()
        own = _own_cgroups()
    except OSError as exc:
        return CgroupHost(missing=f"cannot read this process's cgroups ({exc})")
    reasons = []
    for version in (2, 1):
        found = _parent_for(version, mounts, own)
        if isinstance(found, CgroupHost):
            return found
        reasons.append(found)
    return CgroupHost(missing="; ".join(reasons))


def _cgroup_mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root inside the hierarchy, fstype, super options) of cgroup mounts."""
    found = []
    with open(_MOUNTINFO) as lines:
        for line in lines:
            fields = line.split()
            dash = fields.index("-")
            fstype = fields[dash + 1]
            if fstype in ("cgroup", "cgroup2"):
                options = set(fields[dash + 3].split(",")) if len(fields) > dash + 3 else set()
                found.append((_unescape(fields[4]), _unescape(fields[3]), fstype, options))
    return found


def _own_cgroups() -> dict[str, str]:
    """Controller ("" for cgroup v2) -> this process's cgroup path in that hierarchy."""
    own = {}
    with open(_OWN_CGROUPS) as lines:
        for line in lines:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path
    return own


def _parent_for(
    version: int, mounts: list[tuple[str, str, str, set[str]]], own: dict[str, str]
) -> CgroupHost | str:
    """Our cgroup in hierarchy `version`, if children with a memory limit can be made there."""
    key, fstype = ("", "cgroup2") if version == 2 else ("memory", "cgroup")
    mount = next((m for m in mounts if m[2] == fstype and (version == 2 or "memory" in m[3])),
                 None)  # fmt: skip
    if mount is None or key not in own:
        return f"no cgroup v{version} memory hierarchy"
    point, root, _, _ = mount
    path = own[key]
    if path != root and not path.startswith(root.rstrip("/") + "/"):
        return f"this process's cgroup v{version} is outside the mounted tree"
    parent = os.path.normpath(os.path.join(point, os.path.relpath(path, root)))
    if version == 2 and "memory" not in _subtree_controllers(parent):
        return (f"the memory controller is not enabled for child cgroups of {parent} "
                "(cgroup.subtree_control)")  # fmt: skip
    return _try(CgroupHost(parent, version, missing=""))


def _try(host: CgroupHost) -> CgroupHost | str:
    """Make and remove one cgroup under `host.parent`: the only sure test of the rights."""
    probe = os.path.join(host.parent, f"fathom-probe-{os.getpid()}")
    try:
        os.mkdir(probe)
    except OSError as exc:
        return f"cannot create a cgroup in {host.parent} ({exc.strerror})"
    try:
        if not os.path.exists(os.path.join(probe, host.limit_file)):
            return f"cgroups in {host.parent} have no {host.limit_file}"
        swap = "memory.swap.max" if host.version == 2 else "memory.memsw.limit_in_bytes"
        swap = swap if os.path.exists(os.path.join(probe, swap)) else ""
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(probe)
    return CgroupHost(host.parent, host.version, swap, missing="")


class WorkerCgroups:
    """The memory cgroups of one plan's workers: each worker joins a fresh one in preexec.

    `remove()` kills what runs in them and deletes them; call it once a worker is gone. A
    finalizer does it too when the plan is dropped or the interpreter exits.
    """

    def __init__(self, host: CgroupHost, limit_bytes: int) -> None:
        self.host = host
        # Named for this process, so a later plan can remove what a killed one left.
        self.prefix = f"fathom-{os.getpid()}-{secrets.token_hex(4)}-"
        _remove_orphans(host.parent)
        settings = [(host.limit_file, limit_bytes)]
        if host.swap_file:
            # v1 counts memory plus swap, so the same number means no swap; v2 counts swap alone.
            settings.append((host.swap_file, limit_bytes if host.version == 1 else 0))
        self._settings = [(name, str(value).encode()) for name, value in settings]
        self._finalizer = weakref.finalize(self, _remove_all, host.parent, self.prefix)

    def join(self) -> None:
        """Make this process's cgroup, set its limit and move in (plain syscalls: preexec)."""
        path = f"{self.host.parent}/{self.prefix}{os.getpid()}"
        # Existing: a worker of this plan with the same pid that was never cleaned up.
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755)
        # v1 moves the calling thread, the only one between fork and exec, without the
        # global lock cgroup.procs takes (a wait of an RCU grace period, ~10 ms, per start).
        join = "tasks" if self.host.version == 1 else "cgroup.procs"
        for name, value in [*self._settings, (join, b"0")]:
            _write(f"{path}/{name}", value)

    def remove(self) -> None:
        """Kill every process left in this plan's cgroups and delete them."""
        _remove_all(self.host.parent, self.prefix)

    def close(self) -> None:
        """Remove the cgroups for good (the plan starts no more workers)."""
        self._finalizer()


def member_of(prefix: str, version: int) -> bool:
    """Whether this process runs in the cgroup `prefix` + its pid (checked in the worker)."""
    key = "" if version == 2 else "memory"
    try:
        path = _own_cgroups().get(key, "")
    except OSError:
        return False
    return path.rsplit("/", 1)[-1] == f"{prefix}{os.getpid()}"


def _remove_orphans(parent: str) -> None:
    """Remove the cgroups of fathom processes that died without removing them (SIGKILL)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            owner = name.split("-")[1] if name.startswith("fathom-") else ""
            if owner.isdigit() and not _alive(int(owner)):
                _kill_and_remove(os.path.join(parent, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _remove_all(parent: str, prefix: str) -> None:
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        _kill_and_remove(os.path.join(parent, name))


def _kill_and_remove(path: str, attempts: int = 200) -> None:
    """SIGKILL everything in the cgroup at `path` until it can be removed (about 2 s at most).

    cgroup.kill (v2, Linux >= 5.14) takes forks racing the kill; elsewhere the loop does.
    """
    with contextlib.suppress(OSError):
        _write(os.path.join(path, "cgroup.kill"), b"1")
    for _ in range(attempts):
        try:
            pids = _words(os.path.join(path, "cgroup.procs"))
        except OSError:
            return  # already gone
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return
        time.sleep(0.01)


def _write(path: str, value: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value)
    finally:
        os.close(fd)


def _words(path: str) -> list[str]:
    with open(path) as handle:
        return handle.read().split()


def _subtree_controllers(parent: str) -> list[str]:
    try:
        return _words(os.path.join(parent, "cgroup.subtree_control"))
    except OSError:
        return []


def _unescape(field: str) -> str:
    """A mountinfo path field, whose spaces and the like are octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
