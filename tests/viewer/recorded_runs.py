"""Real traces for the CLI, viewer and replay tests: fathom.RLM runs on ScriptedLM.

The scripts are callables keyed on what each call asks, not lists, because the root
run, its children and the sub-calls of a batch reach the models concurrently.
"""

from __future__ import annotations

from pathlib import Path

import fathom
from fathom.errors import LMError
from fathom.lm import ScriptedLM
from fathom.lm.base import Message
from fathom.trace import EventSink

DIARY = "\n\n".join([
    "January. Marta lives in Porto and works at the harbour.",
    "March. Marta packs her things; the flat in Porto is sold.",
    "June. Marta moved to Lisbon and loves the trams.",
])
QUERY = "Which city did Marta move to?"
CHILD_QUERY = "Summarise where Marta lived, in one sentence."
GRANDCHILD_QUERY = "Which city is named last in this text?"

ROOT_REPLIES = [
    "First I look at the shape of the context.\n```repl\nparts = context.split('\\n\\n')\n"
    "print(len(parts), 'parts')\nprint(parts[0][:60])\n```",
    "I ask a sub-model about every part at once, and a child RLM for a summary.\n```repl\n"
    "answers = llm_query_batched([f'Where does Marta live? {p}' for p in parts])\n"
    "for a in answers:\n    print(a)\n"
    f"summary = rlm_query({CHILD_QUERY!r}, context=parts)\nprint(summary)\n```",
    "The last part and the summary agree.\nFINAL(Lisbon)",
]
CHILD_REPLIES = [
    "```repl\nlast = rlm_query("
    f"{GRANDCHILD_QUERY!r}, context=context[-1])\n"
    "note = llm_query('Say where Marta lived: ' + ' '.join(context))\n"
    "FINAL(note + ' Last city: ' + last)\n```",
]
GRANDCHILD_REPLIES = ["```repl\nFINAL(llm_query('Name the last city in: ' + context))\n```"]


def _root_script(messages: list[Message]) -> str:
    """Root-model replies for every run of the tree, chosen by its query and turn number."""
    first = messages[1]["content"] if len(messages) > 1 else ""
    turn = sum(1 for m in messages if m["role"] == "assistant")
    if f"Query: {GRANDCHILD_QUERY}" in first:
        script = GRANDCHILD_REPLIES
    elif f"Query: {CHILD_QUERY}" in first:
        script = CHILD_REPLIES
    else:
        script = ROOT_REPLIES
    return script[min(turn, len(script) - 1)]


def _sub_script(messages: list[Message]) -> str:
    prompt = messages[-1]["content"]
    if prompt.startswith("Where does Marta live?"):
        if "Lisbon" in prompt:
            return "Lisbon"
        return "Porto" if "Porto" in prompt else "not mentioned"
    if prompt.startswith("Say where Marta lived"):
        return "Marta lived in Porto, then moved to Lisbon."
    if prompt.startswith("Name the last city"):
        return "Lisbon"
    return "I do not know."


def models() -> tuple[ScriptedLM, ScriptedLM]:
    """The root and sub ScriptedLMs of the depth-2 run (priced and a little slow, so dollars
    and seconds show up in the viewer's timeline)."""
    root = ScriptedLM(_root_script, name="scripted:root", usd_per_million_tokens=2.0,
                      latency=0.04)
    sub = ScriptedLM(_sub_script, name="scripted:sub", usd_per_million_tokens=0.5, latency=0.02)
    return root, sub


def depth2_run(trace: Path, sandbox: str = "inprocess") -> fathom.Result:
    """A real run to depth 2 with llm_query_batched, rlm_query and llm_query; trace written."""
    root, sub = models()
    rlm = fathom.RLM(model=root, sub_model=sub, sandbox=sandbox, max_depth=2, trace=trace)
    return rlm.run(QUERY, DIARY)


def wide_run(trace: Path, prompts: int, sandbox: str = "inprocess") -> fathom.Result:
    """A real run whose code fans out `prompts` sub-calls (about 1 trace event each)."""
    replies = [
        f"```repl\nout = llm_query_batched([f'item {{i}}' for i in range({prompts})])\n"
        "print(len(out))\n```",
        "FINAL(done)",
    ]
    root = ScriptedLM(replies, name="scripted:root")
    sub = ScriptedLM(lambda m: "ok " + m[-1]["content"], name="scripted:sub")
    rlm = fathom.RLM(model=root, sub_model=sub, sandbox=sandbox, max_concurrency=64, trace=trace)
    return rlm.run("How many items?", "x" * 100)


def failing_run(trace: Path, on_event: EventSink | None = None) -> fathom.Result:
    """A run whose sub-calls partly fail and hit the budget: 5 calls, 1 failed, 1 refused.

    Its usage counts only the 3 calls that reached a model.
    """
    def sub(messages: list[Message]) -> str:
        if "bad" in messages[-1]["content"]:
            raise LMError("the provider is down")
        return "fine"

    code = "print(llm_query_batched(['good', 'bad', 'good 2', 'bad 2', 'late']))"
    root = ScriptedLM([f"```repl\n{code}\n```", "FINAL(done)"], name="scripted:root")
    return fathom.RLM(model=root, sub_model=ScriptedLM(sub, name="scripted:sub"),
                      sandbox="inprocess", trace=trace, budget=fathom.Budget(calls=4),
                      max_concurrency=1, on_event=on_event).run("q", "ctx")
