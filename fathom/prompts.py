"""The prompts of the RLM protocol: the system prompt, the first turn and the turns after it."""

from __future__ import annotations

import json
from typing import Any

from fathom.context import ContextMetadata
from fathom.repl_api import FunctionSpec

SYSTEM_PROMPT = """\
You answer a query about a context that is too large to read at once. The context is \
NOT in this conversation: it is stored in the variable `context` of a persistent Python \
REPL, and you work on it by writing code.

To run code, write it in a fenced block tagged repl:
```repl
print(len(context))
print(context[:1000])
```
Every repl block in your reply runs in order; you then see its printed output (long \
output is truncated, so print summaries and slices, not everything). Variables persist \
between turns.

Functions available in the REPL:
{functions}
- `SHOW_VARS()`: list the variables you have created.
- `FINAL(answer)`: finish with `answer`. `FINAL_VAR(name)`: finish with the value of the \
variable called `name` (pass its name as a string).

Work step by step: look at the structure of the context, split it into chunks, use \
sub-calls to read the chunks, keep intermediate results in variables, check them, and \
build the answer. Do not guess what the context says: read it through code. When you are \
done, call FINAL(...) or FINAL_VAR("...") in a repl block, or write FINAL(your answer) \
on its own line outside a code block.

Cite your evidence: before you finish, call cite(start, end) (with source= for a list or \
dict context) on each span of the context that your answer rests on, with offsets your \
code found (str.find, re.search(...).start()). The citations are shown with your answer.\
"""

FIRST_TURN = """\
The context is loaded in the REPL variable `context`. What you can know about it without \
reading it:
{metadata}

Query: {query}

You have not looked at the context yet. Start by exploring it with code; do not answer \
before you have read the parts that matter."""

NEXT_TURN = """\
{outputs}

Continue with the query: {query}
Write more repl code, or finish with FINAL(answer) / FINAL_VAR("name")."""

NUDGE = """\
Your reply had no ```repl``` code block and no FINAL. Write code in a ```repl``` block to \
work on `context`, or finish with FINAL(answer) / FINAL_VAR("name").
Query: {query}"""

LAST_CHANCE = """\
You have no iterations left. Reply now with your best final answer to the query, on one \
line, as FINAL(answer). Do not write code.
Query: {query}"""

COMPACTED = """\
[{turns} earlier turns were removed to keep this conversation short. Everything they \
computed is still in the REPL: call SHOW_VARS() to list the variables. Code they ran, \
shortened:]
{digest}"""


NO_SUB_CALLS = """

This run has no sub-calls: no language model can be called from the REPL, so ignore the \
advice above to use them. Read the context with code alone (slicing, searching, regular \
expressions, parsing, counting) and with your own reading of what you print."""


def system_prompt(functions: list[FunctionSpec], *, sub_calls: bool = True) -> str:
    """The system prompt, listing the REPL functions this run offers."""
    listed = "\n".join(f"- {spec.line}" for spec in functions)
    return SYSTEM_PROMPT.format(functions=listed) + ("" if sub_calls else NO_SUB_CALLS)


ANSWER_SCHEMA = """\
Your final answer must be a JSON value that matches this JSON schema:
{schema}
Build it in the REPL (a dict, say) and finish with FINAL_VAR("name"), or with \
FINAL(<the JSON text>). An answer that does not match is refused, and you are shown why."""


def answer_schema(schema: dict[str, Any]) -> str:
    """The part of the first turn that shows a typed run's schema."""
    # One line: a schema of many fields costs fewer tokens, and models read it as well.
    return ANSWER_SCHEMA.format(schema=json.dumps(schema, ensure_ascii=False))


def first_turn(query: str, metadata: ContextMetadata) -> str:
    """The first user message: the query and the context's metadata, never its content."""
    return FIRST_TURN.format(metadata=describe_context(metadata), query=query)


def describe_context(metadata: ContextMetadata) -> str:
    """The context as the root model sees it: type, sizes, first keys, preview, skipped files."""
    if metadata.kind == "str":
        size = f"{metadata.total_chars:,} characters"
        if metadata.lines is not None:
            size += f" in {metadata.lines:,} line{'s' if metadata.lines != 1 else ''}"
        out = [f"Type: str ({size})"]
    else:
        what = "dict (key -> value)" if metadata.kind == "dict" else "list"
        out = [f"Type: {what} with {metadata.items:,} items, {metadata.total_chars:,} "
               "characters in total"]
        if metadata.item_lengths:
            lengths = metadata.item_lengths
            out.append(f"Item lengths in characters: min {lengths['min']:,.0f}, "
                       f"median {lengths['median']:,.0f}, max {lengths['max']:,.0f}")
    if metadata.keys:
        more = metadata.items - len(metadata.keys)
        out.append("First keys: " + ", ".join(repr(k) for k in metadata.keys)
                   + (f" (and {more:,} more)" if more > 0 else ""))
    if metadata.source:
        out.append(f"Source: {metadata.source}")
    if metadata.tail:
        out.append(f"First {len(metadata.preview)} characters:\n{metadata.preview}")
        out.append(f"Last {len(metadata.tail)} characters:\n{metadata.tail}")
    elif metadata.preview:
        whole = metadata.kind == "str" and len(metadata.preview) == metadata.total_chars
        label = "The whole text" if whole else f"Preview (first {len(metadata.preview)} characters)"
        out.append(f"{label}:\n{metadata.preview}")
    if metadata.skipped:
        shown = [f"{p} ({metadata.skip_reasons.get(p, 'skipped')})" for p in metadata.skipped[:20]]
        more = len(metadata.skipped) - len(shown)
        out.append(f"Skipped {len(metadata.skipped)} files (not in the context): "
                   + ", ".join(shown) + (f" and {more} more" if more else ""))
    return "\n".join(out)


def next_turn(query: str, outputs: list[str]) -> str:
    """The user message carrying the output of the code blocks just run."""
    return NEXT_TURN.format(outputs="\n\n".join(outputs), query=query)


def exec_report(index: int, count: int, output: str) -> str:
    """How one block's output is shown to the model."""
    label = f"Output of repl block {index} of {count}" if count > 1 else "Output of your repl block"
    return f"{label}:\n{output if output.strip() else '(no output)'}"


SESSION_STATE = """\
This query continues a session: the REPL still holds what earlier queries left in it. \
Reuse it where it helps (an index built before need not be built again); the values are \
not shown here, only their names, types and sizes:
{variables}
`history` is a list of the {count} earlier queries of this session and their answers, \
each a dict with the keys "question" and "answer"."""


def session_state(variables: dict[str, str], count: int) -> str:
    """What a session's earlier queries left in the REPL, for the first turn: names, types
    and sizes of the variables, never their contents."""
    listed = "\n".join(f"- {name}: {text}" for name, text in variables.items()) or "(none)"
    return SESSION_STATE.format(variables=listed, count=count)
