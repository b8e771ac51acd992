"""`fathom doctor`'s view of the layers: what a probe worker, confined like a real one, gets."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from fathom.errors import IsolationError
from fathom.sandbox import IsolationLevel
from fathom.sandbox.isolation.layers import Layer, layers_from_text
from fathom.sandbox.isolation.plan import prepare

_PROBE = (
    "import json, sys\n"
    "from fathom.sandbox.isolation.layers import layers_to_text\n"
    "from fathom.sandbox.isolation.worker_side import enter\n"
    "print(json.dumps(layers_to_text(enter(json.loads(sys.argv[1])))))\n"
)


def report(level: IsolationLevel = "standard") -> dict[str, Layer]:
    """The layers a worker at `level` really gets on this host (starts a probe worker)."""
    with tempfile.TemporaryDirectory(prefix="fathom-doctor-") as tmp:
        try:
            with warnings.catch_warnings():  # what a warning would say, the layers show
                warnings.simplefilter("ignore", RuntimeWarning)
                plan = prepare(level, scratch=Path(tmp), readable=[], memory_mb=4096)
        except IsolationError as exc:
            return {"level": Layer.unavailable("level", str(exc))}
        try:
            probe = subprocess.run(
                [sys.executable, "-c", _PROBE, json.dumps(plan.worker_spec)],
                env=plan.env, preexec_fn=plan.preexec, cwd=tmp,
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
        finally:
            plan.cleanup()
            plan.close()
    if probe.returncode != 0 or not probe.stdout.strip():
        tail = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        failed = Layer.unavailable("worker", f"probe worker failed: {tail}")
        return {**plan.layers, "worker": failed}
    return layers_from_text(json.loads(probe.stdout.strip().splitlines()[-1]))
