"""The worker's side: the fallbacks it adds and the layers it finds missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fathom.sandbox import linux
from fathom.sandbox.isolation import LayerStatus, layers_from_text

from .conftest import run_child

ENTER = (
    "import json, sys\n"
    "from fathom.sandbox.isolation import layers_to_text\n"
    "from fathom.sandbox.isolation.worker_side import enter\n"
)


def test_audit_hook_fallback_blocks_python_sockets(tmp_path: Path) -> None:
    spec = {"level": "standard", "scratch": str(tmp_path)}  # no namespace, no seccomp
    result = run_child(
        ENTER + f"enter({spec!r})\n"
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
        "except PermissionError as exc:\n"
        "    print('blocked:', exc)\n"
    )
    assert "blocked: network access is disabled" in result.stdout, result.stderr


def test_layers_the_worker_cannot_confirm_are_reported_unavailable(tmp_path: Path) -> None:
    """A plan that expected namespaces, entered by a process that has none of them."""
    if not linux.LINUX:
        pytest.skip("namespaces are Linux only")
    planned = {"privileges": "active (dedicated uid 1, no capabilities)", "network": "active"}
    spec = {
        "level": "standard",
        "scratch": str(tmp_path),
        "parent_mntns": linux.namespace_id("mnt"),  # still the host's: the mount ns failed
        "layers": planned,
    }
    result = run_child(ENTER + f"print(json.dumps(layers_to_text(enter({spec!r}))))\n")
    assert result.returncode == 0, result.stderr
    layers = layers_from_text(json.loads(result.stdout.splitlines()[-1]))
    assert layers["privileges"].status is LayerStatus.UNAVAILABLE
    assert "mount namespace" in layers["privileges"].detail
    assert layers["process_limit"].status is LayerStatus.UNAVAILABLE
    assert layers["network"].status is LayerStatus.UNAVAILABLE  # neither namespace nor seccomp
