"""What this host lets a worker have: root or not, namespaces, Landlock, seccomp."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from functools import cache

from fathom.sandbox import linux


@dataclass(frozen=True)
class Host:
    """The isolation this host offers a worker (see probe_host)."""

    root: bool
    landlock_abi: int
    netns: bool  # root may unshare a network (and mount) namespace
    userns: bool  # an unprivileged user may unshare user+network namespaces
    seccomp: bool

    @property
    def namespaces(self) -> bool:
        """Whether a worker can get private namespaces (as root, or in a user namespace)."""
        return self.netns if self.root else self.userns


@cache
def probe_host() -> Host:
    """What this host allows, tried once per process."""
    root = os.geteuid() == 0
    if not sys.platform.startswith("linux"):
        return Host(root, 0, False, False, False)
    netns = root and _probe_unshare(linux.CLONE_NEWNET | linux.CLONE_NEWNS)
    userns = not root and _probe_unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNET)
    return Host(root, linux.landlock_abi(), netns, userns, linux.seccomp_supported())


def _probe_unshare(flags: int) -> bool:
    """Whether a child may enter new namespaces (tried in a throwaway /bin/true)."""
    true = "/bin/true" if os.path.exists("/bin/true") else "/usr/bin/true"
    try:
        subprocess.run([true], preexec_fn=lambda: linux.unshare(flags), check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return True
