"""`summarize`: an agent that reads the input part by part, compacting what it keeps into notes."""

from __future__ import annotations

from pathlib import Path

from fathom.bench.methods.base import (
    ANSWER_FORMAT,
    Limits,
    MeteredRun,
    Outcome,
    chunk_text,
    context_text,
    room_for,
)
from fathom.bench.tasks.base import Task
from fathom.lm.base import LM
from fathom.lm.base import prompt_room as window_chars

# The notes may take this share of the window; each part of the input gets the rest.
NOTES_SHARE = 0.25

STEP = """\
You are reading a long input part by part to answer a query; you cannot see earlier \
parts again, only your notes about them.

Query: {query}

Your notes so far:
{notes}

Part {index} of {count}:
{part}

Write your updated notes: keep every fact, name, number and count from the notes and from \
this part that could help answer the query, merged and compact. Write only the notes."""

ANSWER = """\
You read a long input part by part and kept these notes about it:
{notes}

Query: {query}
{answer_format}"""


class Summarize:
    """The paper's summary agent: iterative compaction of the input into notes, then an answer."""

    name = "summarize"
    description = "an agent that reads the input part by part, compacting it into notes"

    async def run(self, task: Task, root: LM, sub: LM, limits: Limits, trace: Path) -> Outcome:
        """One call per part of the input, then one to answer from the notes."""
        notes_cap = int(window_chars(root) * NOTES_SHARE)
        frame = STEP.format(query=task.query, notes="", index=0, count=0, part="")
        part_size = max(1_000, room_for(root, frame) - notes_cap)
        parts = chunk_text(context_text(task.context), part_size)
        with MeteredRun(self.name, task, root, sub, limits, trace) as run:

            async def read() -> str:
                notes = "(none yet)"
                for index, part in enumerate(parts, 1):
                    run.step()
                    reply = await run.ask(STEP.format(query=task.query, notes=notes, index=index,
                                                      count=len(parts), part=part))
                    notes = reply.strip()[:notes_cap] or notes
                run.step()
                return await run.ask(ANSWER.format(notes=notes, query=task.query,
                                                   answer_format=ANSWER_FORMAT))

            return await run.conclude(read(), {"parts": len(parts)})
