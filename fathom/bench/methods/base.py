"""What every method shares: its limits, its outcome, and model calls through fathom's meter.

A method answers one generated task with a root and a sub model. The RLM methods run
`fathom.RLM`; the others (direct, bm25, summarize) make their calls through
`MeteredRun`, which takes the same metered path as an RLM's calls (budget, trace
events, usage), so every row has a real trace and real usage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fathom import protocol
from fathom.bench.tasks.base import Task
from fathom.budget import Budget, Spend
from fathom.calls import CallSite, Meter, Role, RunHandle
from fathom.context import Context
from fathom.errors import (
    AuthenticationError,
    BudgetExceeded,
    ConfigError,
    FathomError,
    ProviderUnavailable,
)
from fathom.lm.base import LM, Message, Usage, prompt_room
from fathom.result import StopReason
from fathom.trace import Clock, FinalEvent, IterationEvent, RunEnd, RunStart, TraceWriter

# Errors the user must fix (a bad setting, a missing or rejected key, a missing package):
# they stop the whole run instead of being written as a failed row, again and again.
FATAL: tuple[type[FathomError], ...] = (ConfigError, AuthenticationError, ProviderUnavailable)

# Asked of every non-RLM method, so its answer is read the way an RLM's FINAL is.
ANSWER_FORMAT = (
    "Give your final answer on the last line, as FINAL(answer), in the form the query asks for."
)


@dataclass(frozen=True)
class Limits:
    """What one row may use: its share of the run's dollars, time, turns and reply size."""

    usd: float | None = None
    seconds: float | None = None
    max_iterations: int = 30
    max_output_tokens: int | None = None
    sandbox: str = "subprocess"

    def budget(self) -> Budget:
        """The fathom Budget of one row."""
        return Budget(usd=self.usd, seconds=self.seconds)


@dataclass(frozen=True)
class Outcome:
    """What a method returns for one task."""

    answer: str
    usage: Usage
    seconds: float
    iterations: int
    stop_reason: StopReason
    error: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # method-specific, e.g. truncation


class Method(Protocol):
    """A way to answer a task: `fathom bench run --methods NAME`."""

    @property
    def name(self) -> str:
        """What `--methods` calls it."""
        ...

    @property
    def description(self) -> str:
        """One line for `fathom bench list`."""
        ...

    async def run(self, task: Task, root: LM, sub: LM, limits: Limits, trace: Path) -> Outcome:
        """Answer `task` with these models within `limits`, writing a trace to `trace`."""
        ...


def context_text(value: Any) -> str:
    """The task's input as one text, for methods that read text rather than run code."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n\n".join(f"### {key}\n{_item_text(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return "\n".join(_item_text(item) for item in value)
    return _item_text(value)


def _item_text(item: Any) -> str:
    return item if isinstance(item, str) else json.dumps(item, ensure_ascii=False, default=str)


def chunk_text(text: str, size: int) -> list[str]:
    """`text` in pieces of at most `size` characters, cut at line ends where there is one."""
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            newline = text.rfind("\n", start + size // 2, end)
            end = newline + 1 if newline >= 0 else end
        chunks.append(text[start:end])
        start = end
    return chunks


def read_answer(reply: str) -> str:
    """The FINAL(...) of a reply, else its text outside code blocks."""
    final = protocol.find_final(reply)
    if final is not None and final.kind == "answer":
        return final.value
    return protocol.strip_code(reply).strip()


def room_for(lm: LM, *texts: str) -> int:
    """Characters left in `lm`'s prompt once `texts` are in it (with a margin for framing)."""
    return max(0, int(prompt_room(lm) * 0.9) - sum(len(t) for t in texts))


class MeteredRun:
    """One traced run of a non-RLM method: each step is an iteration of metered calls.

    The trace has the events of an RLM run (run_start, iteration, lm_call, final,
    run_end), so `fathom view` draws it and its usage is what the models reported.
    """

    def __init__(self, method: str, task: Task, root: LM, sub: LM, limits: Limits,
                 trace: Path) -> None:
        self.method, self.task, self.root, self.sub = method, task, root, sub
        self.spend = Spend(limits.budget())
        self.clock = Clock()
        self.writer = TraceWriter(trace)
        self.meter = Meter(self.spend, self.writer, self.clock, max_concurrency=4)
        self.handle = RunHandle(task.query)
        self.started = time.monotonic()

    def __enter__(self) -> MeteredRun:
        with Context.from_value(self.task.context) as ctx:
            metadata = ctx.metadata().to_dict()
        self._emit(RunStart, query=self.task.query, context=metadata, model=self.root.name,
                   sub_model=self.sub.name, config={"method": self.method},
                   started_at=time.time())
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.close()

    def _emit(self, cls: type, **fields: Any) -> None:
        self.writer(cls(run_id=self.handle.run_id, depth=0, t=self.clock.now(), **fields))

    def step(self) -> None:
        """Begin the next iteration (one read, one summary step)."""
        self.handle.iteration += 1
        self._emit(IterationEvent, iteration=self.handle.iteration)

    async def ask(self, prompt: str) -> str:
        """One metered call of the root model; BudgetExceeded when the budget refuses it."""
        messages: list[Message] = [{"role": "user", "content": prompt}]
        site = CallSite(self.handle, Role.ROOT, self.handle.call_id())
        completion = await self.meter.call(self.root, messages, site)
        return completion.text

    async def conclude(self, work: Awaitable[str], notes: dict[str, Any] | None = None
                       ) -> Outcome:
        """Await the method's calls (`work` gives the last reply) and end the run with its
        answer, or at the budget, or with the error that stopped it (FATAL ones are raised)."""
        try:
            reply = await work
        except BudgetExceeded:
            return self.finish("", "budget", notes=notes)
        except FATAL:
            raise
        except FathomError as exc:
            return self.finish("", "error", str(exc), notes)
        return self.finish(read_answer(reply), "final", notes=notes)

    def finish(self, answer: str, stop_reason: StopReason, error: str | None = None,
               notes: dict[str, Any] | None = None) -> Outcome:
        """Trace the end of the run and return its outcome."""
        seconds = time.monotonic() - self.started
        if stop_reason == "final":
            self._emit(FinalEvent, answer=answer, source="text", iteration=self.handle.iteration)
        usage = self.spend.by_model()
        self._emit(RunEnd, answer=answer, stop_reason=stop_reason,
                   iterations=self.handle.iteration,
                   usage={m: u.to_dict() for m, u in usage.items()}, seconds=seconds, error=error)
        return Outcome(answer, self.spend.usage, seconds, self.handle.iteration, stop_reason,
                       error, notes or {})
