"""The kernel primitives on their own, in a throwaway child process."""

from __future__ import annotations

import pytest

from fathom.sandbox import linux

from .conftest import run_child


def test_syscall_filter_refuses_sockets_namespaces_and_ptrace_but_not_threads() -> None:
    if not linux.seccomp_supported():
        pytest.skip("no seccomp filter for this system or CPU architecture")
    result = run_child(
        "import ctypes, os, socket, subprocess, threading\n"
        "from fathom.sandbox import linux\n"
        "linux.install_syscall_filter()\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def refused(value):\n"
        "    return 'refused' if value == -1 else f'ALLOWED {value}'\n"
        "for family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.AF_NETLINK):\n"
        "    try:\n"
        "        socket.socket(family, socket.SOCK_STREAM)\n"
        "        print('ALLOWED socket')\n"
        "    except PermissionError:\n"
        "        print('refused')\n"
        "print(refused(libc.unshare(0x10000000)))\n"  # CLONE_NEWUSER
        "print(refused(libc.ptrace(0x4206, os.getppid(), 0, 0)))\n"  # PTRACE_SEIZE
        "print(refused(libc.syscall(425, 8, 0)))\n"  # io_uring_setup
        "a, b = socket.socketpair()\n"  # what asyncio and friends need still works
        "thread = threading.Thread(target=print, args=('thread ok',))\n"
        "thread.start()\n"
        "thread.join()\n"
        "print('subprocess ok' if subprocess.run(['true']).returncode == 0 else 'broken')\n"
    )
    lines = result.stdout.split("\n")
    assert lines[:7] == ["refused"] * 7, (result.stdout, result.stderr)
    assert lines[7:9] == ["thread ok", "subprocess ok"], (result.stdout, result.stderr)
