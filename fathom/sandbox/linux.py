"""Linux kernel security primitives through raw syscalls (ctypes): namespaces, mounts,
Landlock, seccomp and capabilities.

Used by fathom.sandbox.isolation, partly inside `preexec_fn` (after fork, before exec), so
everything here is plain syscalls: no imports, no locks, no threads at call time.
Every function raises OSError (with the errno) when the kernel refuses; on other systems
the module imports but every primitive raises OSError(ENOSYS).
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import stat
import sys
from typing import Any

LINUX = sys.platform.startswith("linux")


class _NoLinux:
    """Stands in for glibc elsewhere: every call fails as an unsupported syscall."""

    def __getattr__(self, name: str) -> object:
        def unsupported(*args: object) -> int:
            ctypes.set_errno(38)  # ENOSYS
            return -1

        return unsupported


_libc: Any = ctypes.CDLL(None, use_errno=True) if LINUX else _NoLinux()
if isinstance(_libc, ctypes.CDLL):
    _libc.syscall.restype = ctypes.c_long
    _libc.unshare.argtypes = [ctypes.c_int]
    _libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    _libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    _libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT = 1, 2, 4, 32
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MS_NOEXEC, _MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 8, 1024, 2048, 1 << 21
_ST_RELATIME = 4096  # statvfs f_flag bit (the other bits match their MS_* flags)

_PR_SET_DUMPABLE, _PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_SET_NO_NEW_PRIVS = 4, 24, 28, 38
# NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE and KEEP_CAPS off, each locked: uid 0 gains
# nothing from execve and can never get capabilities back.
_SECUREBITS_LOCKED_DOWN = 0xEF

# Landlock (include/uapi/linux/landlock.h); syscall numbers are the same on every arch.
_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446
_LL_VERSION_FLAG = 1
_LL_RULE_PATH_BENEATH = 1
LL_EXECUTE, LL_WRITE_FILE, LL_READ_FILE, LL_READ_DIR = 1, 2, 4, 8
_LL_REFER, _LL_TRUNCATE, _LL_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_LL_FILE_ONLY = LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | _LL_TRUNCATE | _LL_IOCTL_DEV
_LL_NET_TCP = 3  # BIND_TCP | CONNECT_TCP
_LL_SCOPES = 3  # ABSTRACT_UNIX_SOCKET | SIGNAL
LL_READ = LL_EXECUTE | LL_READ_FILE | LL_READ_DIR

# Syscalls the filter refuses (x86_64, aarch64 numbers): what a sandbox never needs and
# kernel exploits like to use.
_DENIED = {
    "socket": (41, 198), "ptrace": (101, 117), "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271), "keyctl": (250, 219), "add_key": (248, 217),
    "request_key": (249, 218), "bpf": (321, 280), "perf_event_open": (298, 241),
    "userfaultfd": (323, 282), "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40),
    "umount2": (166, 39), "pivot_root": (155, 41), "kexec_load": (246, 104),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
}  # fmt: skip
# Same number everywhere: io_uring (425-427), the new mount API (428-433, 442).
_SHARED_DENIED = (425, 426, 427, 428, 429, 430, 431, 432, 433, 442)
# arch -> (AUDIT_ARCH value, __NR_seccomp, __NR_clone)
_SECCOMP_ARCH = {"x86_64": (0xC000003E, 317, 56), "aarch64": (0xC00000B7, 277, 220)}
_NR_CLONE3 = 435
_CLONE_NEW_ANY = 0x7E020080  # every CLONE_NEW* flag: no new namespaces


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def unshare(flags: int) -> None:
    """Move this process into new namespaces (CLONE_NEW* flags)."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """Join the namespace behind `fd` (an open /proc/<pid>/ns/* file)."""
    _check(_libc.setns(fd, nstype), "setns")


def limit_ipc(shm_bytes: int, message_queues: int, host_ipcns: int) -> None:
    """In a fresh IPC namespace, cap its SysV shared memory at `shm_bytes` in all and its
    message queues at `message_queues` (these sysctls belong to the namespace).

    A segment outlives the process that made it and is not counted by RLIMIT_AS once
    detached: without this, the namespace could hold any amount of memory until it dies.
    Refuses (EPERM) while still in the host's IPC namespace `host_ipcns`.
    """
    if namespace_id("ipc") == host_ipcns:
        raise OSError(1, "refusing to change the host's IPC limits")
    pages = max(shm_bytes // os.sysconf("SC_PAGE_SIZE"), 1)
    for name, value in (("shmmax", shm_bytes), ("shmall", pages), ("msgmni", message_queues)):
        fd = os.open(f"/proc/sys/kernel/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)


def map_own_ids(uid: int, gid: int) -> None:
    """In a fresh user namespace, map `uid`/`gid` (ours outside) to themselves inside.

    Without a mapping, files created on a filesystem mounted in the namespace (a tmpfs)
    fail with EOVERFLOW.
    """
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def mask_directories(masks: list[tuple[str, list[str]]]) -> None:
    """In a fresh mount namespace, hide each directory behind an empty read-only tmpfs,
    then bind back only the listed paths beneath it."""
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    for top, keep in masks:
        # Open what we keep before the tmpfs hides it; bind from the fd afterwards.
        fds = [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in keep]
        _mount("tmpfs", top, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
        for path, fd in fds:
            parts = os.path.relpath(path, top).split(os.sep)
            current = top
            for part in parts[:-1]:
                current = os.path.join(current, part)
                if not os.path.isdir(current):
                    os.mkdir(current, 0o755)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.makedirs(path, 0o755, exist_ok=True)
            else:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
            _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
            os.close(fd)
        _mount(None, top, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def mount_scratch_quota(
    scratch: str, options: str, keep: list[str], host_mntns: int
) -> None:
    """In a fresh mount namespace, cover `scratch` with a size-limited tmpfs (`options`:
    size, nr_inodes, mode, uid, gid) and bind back the files in `keep` read-only.

    Refuses (EPERM) to mount anything while still in the host's mount namespace `host_mntns`.
    """
    if namespace_id("mnt") == host_mntns:
        raise OSError(1, "refusing to mount in the host's mount namespace")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    fds = [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in keep]
    _mount("tmpfs", scratch, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
    for path, fd in fds:
        # A mount point cannot be renamed, deleted or replaced (EBUSY), and the read-only
        # bind keeps the parent's file unwritable even for a worker of the same uid.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444))
        _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND)
        # A remount must keep the flags the source mount has locked (in a user namespace).
        found = os.statvfs(path).f_flag
        locked = found & (_MS_NOSUID | _MS_NODEV | _MS_NOEXEC | _MS_NOATIME | _MS_NODIRATIME)
        locked |= _MS_RELATIME if found & _ST_RELATIME else 0
        _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | locked)
        os.close(fd)


def set_no_new_privs() -> None:
    """execve can never grant privileges again (setuid binaries, file capabilities)."""
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")


def set_dumpable(dumpable: bool) -> None:
    """A non-dumpable process cannot be ptraced or read via /proc by its own uid."""
    _check(_libc.prctl(_PR_SET_DUMPABLE, int(dumpable), 0, 0, 0), "prctl(DUMPABLE)")


def drop_capabilities() -> None:
    """Give up every capability for good while keeping uid 0 (when no other uid works)."""
    _check(_libc.prctl(_PR_SET_SECUREBITS, _SECUREBITS_LOCKED_DOWN, 0, 0, 0), "securebits")
    for cap in range(64):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) < 0:
            break  # EINVAL past the last capability this kernel knows
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is missing or disabled."""
    version = _libc.syscall(_LL_CREATE, None, 0, _LL_VERSION_FLAG)
    return max(int(version), 0)


def landlock_restrict(read: list[str], write: list[str], abi: int, listable: list[str]) -> None:
    """Confine this thread (and its future children) to reading `read`, writing `write`,
    listing (not reading) `listable`, no TCP (ABI >= 4) and no signals or abstract sockets
    beyond its domain (ABI >= 6)."""
    handled = (1 << 13) - 1
    handled |= (_LL_REFER if abi >= 2 else 0) | (_LL_TRUNCATE if abi >= 3 else 0)
    handled |= _LL_IOCTL_DEV if abi >= 5 else 0
    attr = _RulesetAttr(handled, _LL_NET_TCP if abi >= 4 else 0, _LL_SCOPES if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _check(_libc.syscall(_LL_CREATE, ctypes.byref(attr), size, 0), "landlock_create")
    try:
        rules = [(p, LL_READ) for p in read] + [(p, handled) for p in write]
        rules += [(p, LL_READ_DIR) for p in listable]
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path that does not exist needs no rule
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    access &= _LL_FILE_ONLY
                rule = ctypes.byref(_PathBeneath(access & handled, fd))
                added = _libc.syscall(_LL_ADD_RULE, ruleset, _LL_RULE_PATH_BENEATH, rule, 0)
                _check(added, f"landlock_add_rule {path}")
            finally:
                os.close(fd)
        _check(_libc.syscall(_LL_RESTRICT, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def seccomp_supported() -> bool:
    """Whether install_syscall_filter knows this system and CPU architecture."""
    return LINUX and platform.machine() in _SECCOMP_ARCH


def install_syscall_filter() -> None:
    """Install a seccomp filter on every thread that refuses socket() for every address
    family (socketpair() still works), io_uring, ptrace and process_vm_*, new namespaces
    and mounts, bpf, perf events, keyrings, userfaultfd, kernel modules and foreign ABIs.

    clone3 answers ENOSYS (its flags are behind a pointer), so glibc falls back to clone,
    whose flags the filter can check.
    """
    machine = platform.machine()
    if not seccomp_supported():
        raise OSError(38, f"seccomp filter not written for {machine}")
    arch, nr_seccomp, nr_clone = _SECCOMP_ARCH[machine]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    deny, enosys, allow = 0x00050000 | 1, 0x00050000 | 38, 0x7FFF0000  # EPERM, ENOSYS
    column = 0 if machine == "x86_64" else 1
    denied = [numbers[column] for numbers in _DENIED.values()] + list(_SHARED_DENIED)
    # (code, jump-if-true label, jump-if-false label, k); labels resolve to offsets below.
    program: list[tuple[int, str | None, str | None, int]] = [
        (ld, None, None, 4),  # seccomp_data.arch
        (jeq, None, "deny", arch),
        (ld, None, None, 0),  # seccomp_data.nr
        (jge, "deny", None, 0x40000000),  # the x32 ABI
        *[(jeq, "deny", None, nr) for nr in denied],
        (jeq, "enosys", None, _NR_CLONE3),
        (jeq, None, "allow", nr_clone),
        (ld, None, None, 16),  # clone's flags (args[0], low half)
        (jset, "deny", "allow", _CLONE_NEW_ANY),
    ]
    labels = {"allow": len(program), "deny": len(program) + 1, "enosys": len(program) + 2}
    program += [(ret, None, None, allow), (ret, None, None, deny), (ret, None, None, enosys)]
    filters = (_SockFilter * len(program))(
        *[
            _SockFilter(code, labels[jt] - i - 1 if jt else 0, labels[jf] - i - 1 if jf else 0, k)
            for i, (code, jt, jf, k) in enumerate(program)
        ]
    )
    prog = _SockFprog(len(program), filters)
    set_no_new_privs()
    # SECCOMP_SET_MODE_FILTER with SECCOMP_FILTER_FLAG_TSYNC: every thread, not just this one.
    _check(_libc.syscall(nr_seccomp, 1, 1, ctypes.byref(prog)), "seccomp")


def namespace_id(kind: str) -> int:
    """Inode of this process's namespace of `kind` ("net", "mnt", "ipc", "user")."""
    return os.stat(f"/proc/self/ns/{kind}").st_ino


def kill_other_processes() -> None:
    """Kill every process this uid may signal except the caller (kill(-1) skips it)."""
    try:
        for _ in range(50):  # a fork bomb may fork between passes
            os.kill(-1, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing (left) to kill


def kill_uid(uid: int) -> None:
    """Kill every process running as `uid`, from a child that becomes `uid` (root only)."""
    pid = os.fork()
    if pid == 0:  # the child only makes syscalls, so forking a threaded parent is safe
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            kill_other_processes()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def count_processes(uid: int) -> int:
    """Tasks (processes and threads) of `uid`: what RLIMIT_NPROC counts."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                continue  # the process exited meanwhile
    return count
