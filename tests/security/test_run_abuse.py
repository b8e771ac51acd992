"""Abuse through a whole run (fathom.RLM, real subprocess sandbox at `standard`): sub-calls to
models the user did not allow, forged over the raw channel too, and an endless sub-call loop."""

from __future__ import annotations

import time

import pytest

import fathom
from fathom.lm import ScriptedLM
from fathom.trace import Event, LMCall
from tests.fake_servers import ScriptedOpenAIServer


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


FORGE_CALL = """
import json, os, sys
w = int(sys.argv[-1])
request = {"op": "call", "id": 424242, "fn": "llm_query",
           "args": {"prompt": "forged", "model": "openai:evil-model"}}
os.write(w, (json.dumps(request) + "\\n").encode())
print("direct:", llm_query("asked directly", model="openai:evil-model"))
"""


def test_models_the_user_did_not_allow_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Event] = []
    with ScriptedOpenAIServer(["the evil model answered"]) as server:
        # A real, reachable provider for the refused spec: any request would show up here.
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        rlm = fathom.RLM(
            ScriptedLM([repl(FORGE_CALL), repl("FINAL('done')")]),
            on_event=events.append,
            sandbox_isolation="standard",
        )
        result = rlm.run("Summarise the context.", "some context")
        time.sleep(0.2)  # a forged call answered late would still reach the server by now
        assert server.requests == []
    assert result.answer == "done" and result.stop_reason == "final"
    refused = [e for e in events if isinstance(e, LMCall) and e.model == "openai:evil-model"]
    assert {e.prompt for e in refused} == {"forged", "asked directly"}
    assert all(e.error and "not allowed" in e.error for e in refused)


def test_endless_sub_call_loop_is_stopped_by_the_call_budget() -> None:
    sub = ScriptedLM(lambda messages: "more")
    loop = "n = 0\nwhile True:\n    llm_query('again')\n    n += 1"
    rlm = fathom.RLM(
        ScriptedLM([repl(loop), repl("FINAL(n)")]),
        sub_model=sub,
        budget=fathom.Budget(calls=20),
        exec_timeout=60,
    )
    started = time.monotonic()
    result = rlm.run("Loop forever.", "context")
    assert time.monotonic() - started < 30  # stopped by the budget, not by the timeout
    assert result.stop_reason == "budget"
    assert result.total_usage.calls <= 20
