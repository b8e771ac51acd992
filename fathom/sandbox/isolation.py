"""Protection layers for the subprocess worker (FIRST DRAFT: owned by the security work).

Contract used by subprocess.py / worker.py:
  plan = prepare(level, scratch=..., readable=[...], memory_mb=...)   # in the parent
  Popen(plan.argv_prefix + [python, "-m", "fathom.sandbox.worker", ...],
        env=plan.env, preexec_fn=plan.preexec, cwd=scratch)
  enter(plan.worker_spec)          # in the worker, after loading context, before user code
  plan.layers                      # name -> "active" | "off" | "unavailable: why"
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Variables a Python worker needs; everything else (API keys, tokens) is dropped.
_SAFE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED")


@dataclass(frozen=True)
class IsolationPlan:
    """How to start and confine one worker process."""

    level: str
    env: dict[str, str]
    argv_prefix: list[str] = field(default_factory=list)
    preexec: Callable[[], None] | None = None
    worker_spec: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, str] = field(default_factory=dict)


def scrubbed_env(scratch: Path) -> dict[str, str]:
    """An environment with no secrets: only locale/path variables, HOME set to scratch."""
    env = {k: v for k, v in os.environ.items() if k in _SAFE_ENV}
    env["HOME"] = str(scratch)
    env["TMPDIR"] = str(scratch)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # The worker imports fathom from wherever this process found it.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def prepare(
    level: str, *, scratch: Path, readable: list[Path], memory_mb: int | None
) -> IsolationPlan:
    """Decide the layers for one worker at `level` ("strict", "standard", "off")."""
    layers = {"environment": "active"}

    def preexec() -> None:
        if memory_mb:
            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    if memory_mb:
        layers["memory_limit"] = "active"
    return IsolationPlan(
        level=level,
        env=scrubbed_env(scratch),
        preexec=preexec,
        worker_spec={"level": level, "scratch": str(scratch)},
        layers=layers,
    )


def enter(spec: dict[str, Any]) -> None:
    """Apply in-process layers inside the worker before any user code runs."""
