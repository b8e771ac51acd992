"""What a worker gets between fork and exec, before it runs a line of Python."""

from __future__ import annotations

import json
from pathlib import Path

from fathom.sandbox.isolation.host import probe_host
from fathom.sandbox.isolation.plan import prepare
from tests.conftest import skip_or_fail

from .conftest import run_child


def test_threads_started_before_enter_are_confined_too(tmp_path: Path) -> None:
    """Landlock starts between fork and exec, so no thread of the worker escapes it."""
    if not probe_host().landlock_abi:
        skip_or_fail("Landlock is unavailable on this host")
    plan = prepare("strict", scratch=tmp_path, readable=[], memory_mb=512)
    result = run_child(
        "import json, os, threading\n"
        "seen = []\n"
        "def peek():\n"
        "    try:\n"
        "        seen.append(os.listdir('/'))\n"
        "    except PermissionError:\n"
        "        seen.append('denied')\n"
        "thread = threading.Thread(target=peek)\n"
        "thread.start()\n"
        "thread.join()\n"
        "from fathom.sandbox.isolation.worker_side import enter\n"
        f"enter(json.loads({json.dumps(plan.worker_spec)!r}))\n"
        "print(seen)\n",
        plan,
    )
    plan.cleanup()
    assert result.stdout.strip() == "['denied']", result.stderr
