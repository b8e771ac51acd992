"""The worker's side: apply the in-process layers before user code, check the rest hold.

Imported by the worker before its isolation is in force (and before any thread starts),
so it imports only the Linux primitives and the layer values.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from fathom.errors import IsolationError
from fathom.sandbox import linux
from fathom.sandbox.isolation import cgroup
from fathom.sandbox.isolation.layers import Layer, layers_from_text, network_layer

_MIB = 1024 * 1024


@dataclass
class _InForce:
    """The layers really in force, and what could not be applied (fatal at strict)."""

    layers: dict[str, Layer]
    failed: list[str] = field(default_factory=list)

    def lost(self, name: str, why: str) -> None:
        self.layers[name] = Layer.unavailable(name, why)
        self.failed.append(f"{name}: {why}")


def enter(spec: dict[str, Any]) -> dict[str, Layer]:
    """Apply the in-process layers inside the worker; returns the layers really in force.

    Raises IsolationError at `strict` when one cannot be applied.
    """
    found = _InForce(layers_from_text(spec.get("layers") or {}))
    if spec.get("level", "off") == "off":
        return found.layers
    if linux.LINUX:
        linux.set_no_new_privs()
    netns = "parent_netns" in spec and linux.namespace_id("net") != spec["parent_netns"]
    if "parent_netns" in spec and not netns:
        found.failed.append("network: could not create a network namespace")
    if "parent_ipcns" in spec and linux.namespace_id("ipc") == spec["parent_ipcns"]:
        found.lost("ipc", "could not create an IPC namespace")
    _check_memory_cgroup(spec, found)
    _switch_user(spec, found)
    os.chdir(spec["scratch"])
    _check_disk_quota(spec, found)
    _restrict_files(spec, found)
    seccomp = _filter_syscalls(spec, found)
    if "layers" in spec:  # a spec from prepare(): say what really holds
        found.layers["network"] = network_layer(netns, seccomp)
    if not (netns or seccomp):
        sys.addaudithook(_audit_block_sockets)
    if linux.LINUX:
        linux.set_dumpable(False)
    if found.failed and spec.get("level") == "strict":
        raise IsolationError("Strict isolation could not be applied: " + "; ".join(found.failed))
    return found.layers


def kill_strays(spec: dict[str, Any]) -> None:
    """Kill the processes REPL code left running (a fork bomb after a timeout).

    Does nothing unless the worker runs as its own dedicated uid, where that cannot touch
    anything outside the sandbox.
    """
    uid = spec.get("uid")
    if uid is not None and os.getuid() == uid:
        linux.kill_other_processes()


def _switch_user(spec: dict[str, Any], found: _InForce) -> None:
    """Become the dedicated uid, or stay uid 0 without capabilities when that is the plan."""
    uid, drop = spec.get("uid"), spec.get("drop_capabilities", False)
    if "parent_mntns" in spec and linux.namespace_id("mnt") == spec["parent_mntns"]:
        found.lost("privileges", "could not create the mount namespace that exposes Python")
        found.lost("process_limit", "RLIMIT_NPROC does not apply to uid 0")
        uid, drop = None, True
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        # Leftovers of a previous worker under this uid (where Landlock's signal scope lets us;
        # plan.cleanup() in the parent covers the rest).
        linux.kill_other_processes()
    elif drop:
        linux.drop_capabilities()


def _check_memory_cgroup(spec: dict[str, Any], found: _InForce) -> None:
    prefix = spec.get("memory_cgroup")
    if prefix and not cgroup.member_of(prefix, spec.get("cgroup_version", 2)):
        found.lost("memory_cgroup", "the worker could not join its memory cgroup; memory_mb "
                   "limits each process alone")  # fmt: skip


def _check_disk_quota(spec: dict[str, Any], found: _InForce) -> None:
    disk_mb = spec.get("disk_mb")
    if not disk_mb:
        return
    scratch = os.statvfs(spec["scratch"])
    if scratch.f_blocks * scratch.f_frsize != disk_mb * _MIB:
        found.lost("disk_quota", "scratch is not the size-limited tmpfs (the worker could not "
                   "join its mount namespace; was plan.close() called?)")  # fmt: skip


def _restrict_files(spec: dict[str, Any], found: _InForce) -> None:
    """Landlock, unless preexec already started it (as it should have)."""
    abi = spec.get("landlock_abi", 0)
    if not abi or _landlocked():
        return
    threads = len(os.listdir("/proc/self/task"))
    try:
        if threads > 1:
            raise OSError(f"{threads} threads exist; call enter() before starting threads")
        linux.landlock_restrict(spec["read"], spec["write"], abi, spec.get("list", []))
    except OSError as exc:
        found.lost("read_access", f"Landlock failed: {exc}")
        found.lost("write_access", f"Landlock failed: {exc}")


def _filter_syscalls(spec: dict[str, Any], found: _InForce) -> bool:
    """Install the seccomp filter the plan asks for; whether it is in force."""
    if not spec.get("seccomp"):
        return False
    try:
        linux.install_syscall_filter()
    except OSError as exc:
        found.lost("syscall_filter", f"seccomp failed: {exc}")
        return False
    return True


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
