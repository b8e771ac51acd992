"""What a sandbox worker sees of the filesystem: where Python lives, what it may read and
write, and which closed directories must be masked so a dedicated uid can reach Python."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

# Read-only places besides Python itself: system libraries (for ctypes and subprocesses),
# the dynamic loader's cache, time zone data, and of /proc only the worker's own entry
# (other processes' command lines can hold secrets).
SYSTEM_READ = (
    "/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc/ld.so.cache",
    "/etc/localtime", "/proc/self", "/proc/meminfo", "/proc/cpuinfo",
    "/sys/devices/system/cpu", "/dev/urandom", "/dev/random", "/dev/zero",
)  # fmt: skip
SYSTEM_WRITE = ("/dev/null",)


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
