"""Fixtures for the red-team suite: a real SubprocessSandbox at `standard` isolation, a
parent holding secrets (an API key in its environment, a world-readable secret file), and
helpers to run an attack and check that the sandbox and the parent are unharmed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fathom import repl_api
from fathom.context import Context
from fathom.errors import IsolationError
from fathom.repl_api import FunctionSpec
from fathom.sandbox import SandboxOptions
from fathom.sandbox.base import ExecResult
from fathom.sandbox.isolation import LayerStatus, layers_from_text
from fathom.sandbox.isolation.host import Host
from fathom.sandbox.isolation.plan import IsolationPlan
from fathom.sandbox.subprocess import SubprocessSandbox
from tests.conftest import skip_or_fail

API_KEY = "sk-fathom-redteam-0123456789"
SECRET = "TOPSECRET-7f3a9c"
# A host that offers nothing beyond rlimits: what every missing layer looks like.
BARE_HOST = Host(root=False, landlock_abi=0, netns=False, userns=False, seccomp=False)

# Defined in the sandbox before each attack: runs one action and prints what happened.
PRELUDE = '''
def attempt(action):
    try:
        result = action()
    except BaseException as exc:
        print("BLOCKED", type(exc).__name__, exc)
    else:
        print("LEAKED", repr(result)[:300])
'''


@pytest.fixture
def secret_file() -> Iterator[Path]:
    """A secret any local user could read: only the sandbox's own layers keep it out."""
    directory = Path(tempfile.mkdtemp(prefix="fathom-redteam-"))
    directory.chmod(0o755)
    path = directory / "secret.txt"
    path.write_text(SECRET)
    path.chmod(0o644)
    yield path
    shutil.rmtree(directory, ignore_errors=True)


class FakeBridge:
    """Answers every model call with an echo and records it (the parent side of the REPL)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def functions(self) -> list[FunctionSpec]:
        return [function.spec for function in repl_api.functions()]

    def call(self, name: str, args: dict[str, Any]) -> Any:
        return getattr(self, name)(**args)

    def llm_query(self, prompt: str, model: str | None = None) -> str:
        self.calls.append((prompt, model))
        return f"answer to {prompt}"

    def llm_query_batched(self, prompts: list[str], model: str | None = None) -> list[str]:
        return [self.llm_query(p, model) for p in prompts]

    def rlm_query(self, prompt: str, context: object = None) -> str:
        return self.llm_query(prompt)

    def rlm_query_batched(
        self, prompts: list[str], contexts: list[object] | None = None
    ) -> list[str]:
        return [self.llm_query(p) for p in prompts]


@pytest.fixture
def fake_bridge() -> FakeBridge:
    return FakeBridge()


def start_sandbox(bridge: FakeBridge, **options: object) -> SubprocessSandbox:
    """A started sandbox at standard isolation with the attack prelude defined."""
    settings: dict[str, object] = {"isolation": "standard", "memory_mb": 512, "exec_timeout": 30.0}
    settings.update(options)
    sandbox = SubprocessSandbox(SandboxOptions(**settings))  # type: ignore[arg-type]
    sandbox.start(Context.from_value("public context"), bridge)
    result = sandbox.execute(PRELUDE)
    assert result.error is None, result.error
    return sandbox


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as mounts:
        return sorted(line.split()[4] for line in mounts)


@pytest.fixture(autouse=True)
def host_mounts_unchanged() -> Iterator[None]:
    """No attack and no layer may change the host's mount table (tmpfs only in namespaces)."""
    if not os.path.exists("/proc/self/mountinfo"):
        yield
        return
    before = _mount_points()
    yield
    assert _mount_points() == before


@pytest.fixture(autouse=True)
def parent_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent holds an API key in its environment whenever a worker starts."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)


@pytest.fixture(params=["standard", "strict"])
def level(request: pytest.FixtureRequest) -> str:
    """Attacks run at the default isolation and at `strict` (which refuses a missing layer)."""
    return str(request.param)


@pytest.fixture
def sandbox(fake_bridge: FakeBridge, level: str) -> Iterator[SubprocessSandbox]:
    """A started sandbox at `level`, closed after the test."""
    try:
        box = start_sandbox(fake_bridge, isolation=level)
    except IsolationError as exc:
        skip_or_fail(f"strict isolation is not available on this host: {exc}")
    yield box
    box.close()


def require(sandbox: SubprocessSandbox, *layers: str) -> None:
    """Skip (locally) or fail (CI) when this host cannot give a layer the attack needs."""
    found = layers_from_text(sandbox.isolation())
    missing = [
        f"{name}: {found[name].text if name in found else 'not reported'}"
        for name in layers
        if name not in found or found[name].status is not LayerStatus.ACTIVE
    ]
    if missing:
        skip_or_fail("isolation layers unavailable here: " + "; ".join(missing))


def restarted(result: ExecResult) -> bool:
    """The block's notice tells the model its worker was replaced."""
    return "The worker was restarted" in (result.notice or "")


def run_child(code: str, plan: IsolationPlan | None = None) -> subprocess.CompletedProcess[str]:
    """Run Python code in a fresh process, started with `plan` when given."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=None if plan is None else plan.env,
        preexec_fn=None if plan is None else plan.preexec,
        capture_output=True,
        text=True,
        timeout=60,
    )


def attack(sandbox: SubprocessSandbox, code: str, timeout: float | None = None) -> ExecResult:
    """Run attack code; it must not leak and the sandbox must keep working afterwards."""
    result = sandbox.execute(code, timeout=timeout)
    assert "SyntaxError" not in (result.error or ""), result.error  # the attack must really run
    text = f"{result.stdout}{result.stderr}{result.error or ''}{result.final or ''}"
    assert SECRET not in text and API_KEY not in text, text
    assert "LEAKED" not in result.stdout, result.stdout
    assert_healthy(sandbox)
    return result


def assert_healthy(sandbox: SubprocessSandbox) -> None:
    """The next block runs normally and the parent still holds its secrets."""
    after = sandbox.execute("print(6 * 7, len(context))")
    assert after.error is None, after.error
    assert after.stdout.strip() == "42 14", after.stdout
    assert os.environ.get("OPENAI_API_KEY") == API_KEY


def session_processes(session: int) -> list[int]:
    """Pids of live (not zombie) processes in `session` (a worker starts its own)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
        if fields[0] != "Z" and int(fields[3]) == session:
            found.append(int(entry))
    return found
