"""Protection layers for the subprocess worker, and which ones this host can give.

How subprocess.py and worker.py use it:
  plan = prepare(level, scratch=..., readable=[...], memory_mb=...)  # plan.py, in the parent
  Popen([python, "-P", "-c", BOOT, ...], env=plan.env, preexec_fn=plan.preexec, cwd=scratch)
  layers = enter(plan.worker_spec)  # worker_side.py, in the worker, before user code
  plan.cleanup()                    # in the parent once the worker is gone (restart, close)
  plan.close()                      # in the parent once no worker of this plan starts again
  plan.layers                       # name -> Layer (layers.py), as planned

Namespaces, the mount view and Landlock start in plan.preexec (preexec.py), between fork
and exec, so every thread of the worker is confined; enter() then drops root, adds the
fallbacks, and checks that what preexec did is really in force. The plan asks host.py
what this host allows; `fathom doctor` shows what a probe worker gets (report.py).
Layers, each where the OS allows (Linux; elsewhere only the environment and the rlimits):
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

# Only the values both sides share are imported here: the worker imports this package
# before its isolation is in force, and needs none of the parent's modules.
from fathom.sandbox.isolation.layers import (
    LAYERS,
    Layer,
    LayerStatus,
    layers_from_text,
    layers_to_text,
)

__all__ = ["LAYERS", "Layer", "LayerStatus", "layers_from_text", "layers_to_text"]
