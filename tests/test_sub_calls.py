"""RLM(sub_calls=False): REPL code gets no model-calling function, and the prompt says so."""

from __future__ import annotations

import fathom
from fathom.lm import ScriptedLM
from fathom.prompts import NO_SUB_CALLS

ROOT = [
    "```repl\ntry:\n    llm_query('hi')\nexcept NameError as exc:\n    print('no:', exc)\n```",
    "```repl\nFINAL(str(len(context)))\n```",
]


def test_a_run_without_sub_calls_offers_no_model_calls() -> None:
    root = ScriptedLM(ROOT, name="root")
    sub = ScriptedLM(["never"], name="sub")
    result = fathom.RLM(model=root, sub_model=sub, sandbox="inprocess", sub_calls=False).run(
        "How long is it?", "x" * 42
    )
    assert result.answer == "42" and result.stop_reason == "final"
    system = root.calls[0][0]["content"]
    assert "llm_query" not in system and "rlm_query" not in system
    assert system.endswith(NO_SUB_CALLS)
    assert "no: name 'llm_query' is not defined" in root.calls[1][-1]["content"]
    assert sub.calls == []


def test_sub_calls_are_on_by_default() -> None:
    root = ScriptedLM(["```repl\nFINAL(llm_query('hi'))\n```"], name="root")
    result = fathom.RLM(model=root, sub_model=ScriptedLM(["hello"]), sandbox="inprocess").run(
        "q", "ctx"
    )
    assert result.answer == "hello"
    assert NO_SUB_CALLS not in root.calls[0][0]["content"]
