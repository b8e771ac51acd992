"""Runs keep going when REPL code misbehaves in the default subprocess sandbox."""

from __future__ import annotations

import pytest

import fathom
from fathom.lm import ScriptedLM
from fathom.lm.base import Message

pytestmark = pytest.mark.slow


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def last_user(messages: list[Message]) -> str:
    return [m for m in messages if m["role"] == "user"][-1]["content"]


@pytest.mark.parametrize(
    "crash",
    [
        "import os\nos._exit(3)",
        "import ctypes\nctypes.string_at(0)",
        "while True:\n    pass",
        "blob = []\nwhile True:\n    blob.append(bytearray(50_000_000))",
    ],
    ids=["os-exit", "segfault", "infinite-loop", "memory-bomb"],
)
def test_run_survives_crashing_code_and_keeps_state(crash: str) -> None:
    root = ScriptedLM([
        repl("kept = 'still here'\nprint(len(context))"),
        repl(crash),
        repl("FINAL(kept + ' ' + context[:5])"),
    ])
    rlm = fathom.RLM(root, sandbox="subprocess", exec_timeout=3, memory_mb=1024)
    result = rlm.run("q", "hello world")
    assert result.answer == "still here hello"
    assert result.stop_reason == "final"
    told = last_user(root.calls[2])
    assert "[sandbox]" in told or "MemoryError" in told


def test_parent_api_key_is_invisible_to_repl_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret-123")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-456")
    root = ScriptedLM([
        repl("import os\nprint(sorted(os.environ))\nprint(open('/proc/self/environ').read())"),
        repl("FINAL('done')"),
    ])
    fathom.RLM(root, sandbox="subprocess").run("q", "c")
    shown = last_user(root.calls[1])
    assert "sk-parent-secret-123" not in shown and "sk-ant-secret-456" not in shown
    assert "OPENAI_API_KEY" not in shown


def test_isolation_layers_are_in_the_trace(tmp_path: object) -> None:
    seen: list[object] = []
    fathom.RLM(ScriptedLM([repl("FINAL(1)")]), sandbox="subprocess", on_event=seen.append).run(
        "q", "c"
    )
    start = seen[0]
    assert type(start).__name__ == "RunStart"
    assert start.isolation.get("environment") == "active"  # type: ignore[attr-defined]
