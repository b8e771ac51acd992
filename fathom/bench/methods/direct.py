"""`direct`: the base model reads the input itself, cut to what fits in its window."""

from __future__ import annotations

from pathlib import Path

from fathom.bench.methods.base import (
    ANSWER_FORMAT,
    Limits,
    MeteredRun,
    Outcome,
    context_text,
    room_for,
)
from fathom.bench.tasks.base import Task
from fathom.lm.base import LM

PROMPT = """\
Read the input below and answer the query.

<input>
{text}
</input>

Query: {query}
{answer_format}"""


class Direct:
    """The paper's base model: one call with as much of the input as the window takes."""

    name = "direct"
    description = "one call with the input, truncated to the model's window (the base model)"

    async def run(self, task: Task, root: LM, sub: LM, limits: Limits, trace: Path) -> Outcome:
        """Answer with one call; the row notes how much of the input was cut."""
        text = context_text(task.context)
        frame = PROMPT.format(text="", query=task.query, answer_format=ANSWER_FORMAT)
        kept = text[: room_for(root, frame)]
        notes = {"input_chars": len(text), "kept_chars": len(kept),
                 "truncated": len(kept) < len(text)}
        with MeteredRun(self.name, task, root, sub, limits, trace) as run:
            run.step()
            prompt = PROMPT.format(text=kept, query=task.query, answer_format=ANSWER_FORMAT)
            return await run.conclude(run.ask(prompt), notes)
