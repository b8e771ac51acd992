"""What a sandbox worker sees of the filesystem: where Python lives, what it may read and
write, which closed directories must be masked so a dedicated uid can reach Python, and
the size-limited tmpfs its scratch dir really is."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import weakref
from collections.abc import Iterable
from pathlib import Path

from fathom.sandbox import linux
from fathom.sandbox.isolation.layers import Layer

# Read-only places besides Python itself: system libraries (for ctypes and subprocesses),
# the dynamic loader's cache, time zone data, and of /proc only the worker's own entry
# (other processes' command lines can hold secrets).
SYSTEM_READ = (
    "/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc/ld.so.cache",
    "/etc/localtime", "/proc/self", "/proc/meminfo", "/proc/cpuinfo",
    "/sys/devices/system/cpu", "/dev/urandom", "/dev/random", "/dev/zero",
)  # fmt: skip
SYSTEM_WRITE = ("/dev/null",)
# Empty files cost memory that size= does not count: cap them too (ENOSPC like the bytes).
QUOTA_INODES = 65536


def python_paths() -> list[str]:
    """Where the worker's Python, its libraries and fathom live (real paths)."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    executable = sys.executable
    candidates |= {os.path.dirname(executable), os.path.dirname(os.path.realpath(executable))}
    candidates |= {v for k, v in sysconfig.get_paths().items() if k.endswith(("stdlib", "lib"))}
    candidates |= {p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p)}
    candidates.add(str(Path(__file__).resolve().parents[1]))  # the fathom package
    return outermost(os.path.realpath(p) for p in candidates if p and os.path.exists(p))


def outermost(paths: Iterable[str]) -> list[str]:
    """Sorted unique paths without those already inside another one."""
    result: list[str] = []
    for path in sorted(set(paths)):
        if not any(path == p or path.startswith(p.rstrip("/") + "/") for p in result):
            result.append(path)
    return result


def closed_ancestor(path: str) -> str | None:
    """The outermost directory above `path` that other users cannot traverse."""
    parts = Path(path).parts
    for i in range(1, len(parts)):
        directory = str(Path(*parts[:i]))
        with contextlib.suppress(OSError):
            if not os.stat(directory).st_mode & stat.S_IXOTH:
                return directory
    return None


def masks(python: list[str], extra: list[str]) -> list[tuple[str, list[str]]] | None:
    """Directories to hide and re-expose so a dedicated uid reaches Python (None: impossible)."""
    tops = {top for p in python if (top := closed_ancestor(p))}
    if "/" in tops:
        return None
    masks = []
    for top in sorted(tops):
        inside = [p for p in python + extra if p.startswith(top + "/")]
        masks.append((top, outermost(inside)))
    return masks


def scratch_quota(
    scratch: str,
    disk_mb: int,
    *,
    possible: bool,
    group: int,
    readable: list[str],
    masks: list[tuple[str, list[str]]],
    userns: bool,
) -> tuple[ScratchQuota | None, Layer]:
    """The tmpfs every worker of one plan gets as scratch, and the disk_quota layer.

    `possible`: this host lets us create the mount namespace (root, or a user namespace).
    """
    if not possible:
        why = "a tmpfs scratch needs a private mount namespace (root, or user namespaces)"
        return None, Layer.unavailable("disk_quota", why)
    inside = scratch.rstrip("/") + "/"
    try:
        quota = ScratchQuota.create(
            scratch,
            size_mb=disk_mb,
            owner=os.geteuid(),
            group=group,
            keep=[p for p in readable if p.startswith(inside)],
            masks=masks,
            userns=userns,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        why = f"could not mount a tmpfs over scratch ({exc})"
        return None, Layer.unavailable("disk_quota", why)
    return quota, Layer.active("disk_quota", f"{disk_mb} MB tmpfs scratch, {QUOTA_INODES} files")


class ScratchQuota:
    """A size-limited tmpfs over the scratch dir, in a mount namespace of its own.

    A short-lived helper process builds the namespace; the parent keeps it alive through
    descriptors to it, and every worker of one sandbox joins it (setns) between fork and
    exec. So restarted workers find the files (and the crash-recovery snapshot) of the one
    before, while the host's mount table never changes and the host disk never fills.
    """

    def __init__(self, mnt_fd: int, user_fd: int | None):
        self.mnt_fd = mnt_fd
        self.user_fd = user_fd
        fds = [mnt_fd] if user_fd is None else [user_fd, mnt_fd]
        # Closing the last descriptor frees the namespace and the tmpfs with it.
        self.close = weakref.finalize(self, _close_all, fds)

    @classmethod
    def create(
        cls,
        scratch: str,
        *,
        size_mb: int,
        owner: int,
        group: int,
        keep: list[str],
        masks: list[tuple[str, list[str]]],
        userns: bool,
    ) -> ScratchQuota:
        """Build the namespace (masks first, then the tmpfs); OSError says why it failed.

        `keep`: the parent's files in scratch (a spilled context) shown read-only inside.
        """
        options = f"size={size_mb}m,nr_inodes={QUOTA_INODES},mode=1770,uid={owner},gid={group}"
        host_mntns, uid, gid = linux.namespace_id("mnt"), os.getuid(), os.getgid()

        def setup() -> None:  # in the helper, between fork and exec
            try:
                linux.unshare(linux.CLONE_NEWNS | (linux.CLONE_NEWUSER if userns else 0))
                if userns:
                    linux.map_own_ids(uid, gid)
                if masks:
                    linux.mask_directories(masks)
                linux.mount_scratch_quota(scratch, options, keep, host_mntns)
                os.write(1, b"ok\n")
            except OSError as exc:
                os.write(1, f"{exc}\n".encode())

        cat = shutil.which("cat", path="/bin:/usr/bin")
        if cat is None:
            raise OSError(2, "no cat program to hold the mount namespace")
        helper = subprocess.Popen(
            [cat], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            preexec_fn=setup, env={}, cwd="/",
        )  # fmt: skip
        fds: list[int] = []
        try:
            # The helper sits in `cat` until its stdin closes: open its namespaces first.
            for kind in ["user", "mnt"] if userns else ["mnt"]:
                fds.append(os.open(f"/proc/{helper.pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            _close_all(fds)
            raise
        finally:
            out, _ = helper.communicate(timeout=30)
        said = out.decode(errors="replace").strip()
        if said != "ok":
            _close_all(fds)
            raise OSError(1, said or f"the helper exited with code {helper.returncode}")
        return cls(fds[-1], fds[0] if userns else None)

    def enter(self) -> None:
        """Join the namespace (in a worker, between fork and exec: plain syscalls only)."""
        if not self.close.alive:  # closed: the descriptor numbers may now be someone else's
            raise OSError(9, "the scratch quota was closed")
        if self.user_fd is not None:
            linux.setns(self.user_fd, linux.CLONE_NEWUSER)
        linux.setns(self.mnt_fd, linux.CLONE_NEWNS)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
