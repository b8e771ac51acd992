"""What Popen runs in a new worker between fork and exec: its memory cgroup, namespaces,
rlimits, Landlock.

Starting them here, before the worker runs a line of Python, confines every thread and
child it ever has, and the context it loads as root cannot be swapped for another file.
Only plain syscalls run here (no imports, locks or threads): the parent may have threads.
"""

from __future__ import annotations

import resource
import signal
from collections.abc import Callable
from typing import Any

from fathom.sandbox import linux, view
from fathom.sandbox.isolation.cgroup import WorkerCgroups


def make_preexec(
    spec: dict[str, Any],
    *,
    limits: list[tuple[int, int]],
    flags: int,
    masks: list[tuple[str, list[str]]],
    strict: bool,
    quota: view.ScratchQuota | None,
    cgroups: WorkerCgroups | None = None,
    ipc_limits: tuple[int, int, int] | None = None,
) -> Callable[[], None]:
    """The preexec_fn for a worker with this `spec`.

    A step that fails raises only at `strict`; otherwise the worker's enter() finds what
    is missing and reports it.
    """
    confine = spec["level"] != "off" and linux.LINUX
    abi = spec.get("landlock_abi", 0)

    def preexec() -> None:
        # A write past RLIMIT_FSIZE then fails with EFBIG instead of killing the worker.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if confine:
            if cgroups is not None:  # first: still root, in the host's mount namespace
                _attempt(cgroups.join, strict)
            linux.set_no_new_privs()
            _attempt(lambda: _enter_namespaces(flags, masks, quota), strict)
            if ipc_limits:
                # In the new IPC namespace, before Landlock closes /proc/sys. Best effort:
                # without the caps the namespace still dies with the worker.
                _attempt(lambda: linux.limit_ipc(*ipc_limits), strict=False)
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

    return preexec


def _enter_namespaces(
    flags: int, masks: list[tuple[str, list[str]]], quota: view.ScratchQuota | None
) -> None:
    """Join the disk quota's mount namespace (it holds the masks), or make new namespaces."""
    if quota is not None and _joined(quota):
        rest = flags & (linux.CLONE_NEWNET | linux.CLONE_NEWIPC)  # the mount ns is joined
        if rest:
            linux.unshare(rest)
        return
    if flags:
        linux.unshare(flags)
    if masks:
        linux.mask_directories(masks)


def _attempt(step: Callable[[], None], strict: bool) -> None:
    """Run one step; a failure is fatal only at strict (enter() reports what is missing)."""
    try:
        step()
    except OSError:
        if strict:
            raise


def _joined(quota: view.ScratchQuota) -> bool:
    try:
        quota.enter()
    except OSError:
        return False  # enter() finds scratch is not the tmpfs (strict: IsolationError)
    return True
