"""The run tree: what a root run and every child started by rlm_query share, and how runs start.

One RunTree holds the settings, the model router, the budget, the metered call path
(with one concurrency limiter per model endpoint, which every run of the tree shares),
the event sink and clock, and the tasks to cancel. `RunTree.run` starts a run at any
depth (the root from `RLM.arun`, children from the bridge's `rlm_query`); the loop of
each run is made by the `engine` factory the tree was given, so this module does not
depend on the engine.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from fathom.answers import AnswerSchema
from fathom.budget import Spend
from fathom.calls import Meter, RunHandle
from fathom.context import Context
from fathom.lm.router import ModelRouter
from fathom.result import Result
from fathom.sandbox import SandboxFactory, SandboxOptions
from fathom.sandbox.isolation.layers import DISK_QUOTA_MB
from fathom.sources import SpillQuota, ValueSource
from fathom.trace import Clock, Event, SubRLMEnd, SubRLMStart


@dataclass(frozen=True)
class RunConfig:
    """The settings every run of a tree shares."""

    max_iterations: int = 30
    max_depth: int = 1
    max_concurrency: int | Literal["auto"] = "auto"
    max_concurrency_cap: int = 512
    output_limit: int = 20_000
    compact_at: float = 0.8
    sub_calls: bool = True  # False: REPL code gets no function that calls a model
    sandbox: str | SandboxFactory = "subprocess"
    sandbox_options: SandboxOptions = field(default_factory=SandboxOptions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the run_start event."""
        opts = self.sandbox_options
        return {
            "max_iterations": self.max_iterations,
            "max_depth": self.max_depth,
            "max_concurrency": self.max_concurrency,
            "max_concurrency_cap": self.max_concurrency_cap,
            "output_limit": self.output_limit,
            "compact_at": self.compact_at,
            "sub_calls": self.sub_calls,
            "sandbox": self.sandbox if isinstance(self.sandbox, str) else repr(self.sandbox),
            "exec_timeout": opts.exec_timeout,
            "memory_mb": opts.memory_mb,
            "isolation": opts.isolation,
            "max_message_mb": opts.max_message_mb,
            "max_batch": opts.max_batch,
        }


    @property
    def concurrency_bound(self) -> int:
        """The most calls that may ever be in flight to one endpoint: the fixed limit, or
        the cap of the adaptive one."""
        if isinstance(self.max_concurrency, int):
            return self.max_concurrency
        return self.max_concurrency_cap

    @property
    def child_runs(self) -> int:
        """Child runs live at once per depth (each holds a sandbox): the fixed limit, or
        AUTO_CHILD_RUNS; their model calls share the endpoints' limiters either way."""
        if isinstance(self.max_concurrency, int):
            return self.max_concurrency
        return AUTO_CHILD_RUNS


# Live child runs per depth under max_concurrency="auto": a child holds a sandbox (a worker
# process), which the model endpoint's limit says nothing about.
AUTO_CHILD_RUNS = 16


class RunLoop(Protocol):
    """One run's loop, as the tree drives it."""

    async def run(self, context: Context) -> Result:
        """Run to a FINAL, the iteration limit, the budget or an error."""
        ...


RunLoopFactory = Callable[["RunTree", RunHandle], RunLoop]


class RunTree:
    """State shared by a root run and all its children; starts each of them."""

    def __init__(
        self,
        config: RunConfig,
        router: ModelRouter,
        spend: Spend,
        emit: Callable[[Event], None],
        loop: asyncio.AbstractEventLoop,
        engine: RunLoopFactory,
    ) -> None:
        self.config = config
        self.router = router
        self.spend = spend
        self.emit = emit
        self.loop = loop
        self.clock = Clock()
        # One prompt-cache key per tree: its requests share prefixes (OpenAI routes on it).
        self.meter = Meter(
            spend, emit, self.clock, config.max_concurrency, config.max_concurrency_cap,
            cache_key=f"fathom-{uuid.uuid4().hex[:16]}",
        )
        self._engine = engine
        # Live child runs per depth. One semaphore per depth, not one shared: a parent holds
        # its slot while it waits for its own children, which draw from the next depth.
        self._child_slots: dict[int, asyncio.Semaphore] = {}
        # Sub-call and child-run tasks, so a cancelled run can cancel its whole tree.
        self.tasks: set[asyncio.Task[Any]] = set()
        # The files of children's in-memory contexts, on the host disk while they run.
        self.child_contexts = SpillQuota(DISK_QUOTA_MB * 2**20)

    async def run(
        self, query: str, context: Context, *, schema: AnswerSchema | None = None
    ) -> Result:
        """The root run; with `schema`, its answer must match it."""
        return await self._engine(self, RunHandle(query, schema=schema)).run(context)

    async def run_child(
        self, parent: RunHandle, prompt: str, context: Any, batch_id: str | None
    ) -> Result:
        """rlm_query: a child run at the next depth; its context defaults to the prompt."""
        child = RunHandle(prompt, depth=parent.depth + 1, parent=parent)
        child_context = self._child_context(prompt if context is None else context)
        try:
            async with self._slots(child.depth):
                self.event(
                    parent, SubRLMStart, child_run_id=child.run_id, prompt=prompt,
                    iteration=parent.iteration, batch_id=batch_id,
                )
                try:
                    result = await self._engine(self, child).run(child_context)
                except Exception as exc:
                    self.event(parent, SubRLMEnd, child_run_id=child.run_id,
                                stop_reason="error", error=str(exc))
                    raise
        finally:
            child_context.close()
        self.event(
            parent, SubRLMEnd, child_run_id=child.run_id, answer=result.answer,
            stop_reason=result.stop_reason, error=result.error,
        )
        return result

    def _child_context(self, value: Any) -> Context:
        """A child's context; a value's file counts against the tree's quota for them."""
        if isinstance(value, Context | os.PathLike):
            return Context.from_value(value)
        return Context(ValueSource(value, quota=self.child_contexts))

    def _slots(self, depth: int) -> asyncio.Semaphore:
        if depth not in self._child_slots:
            self._child_slots[depth] = asyncio.Semaphore(self.config.child_runs)
        return self._child_slots[depth]

    def event(self, run: RunHandle, cls: type[Event], **fields: Any) -> None:
        """Emit one event of `run`, stamped with the tree's clock."""
        self.emit(cls(run_id=run.run_id, depth=run.depth, t=self.clock.now(), **fields))

    async def cancel_tasks(self) -> None:
        """Cancel every sub-call and child run still going, and wait for their cleanup; the
        tree has ended, so its trace stops hearing of the shared concurrency limiters."""
        pending = [task for task in self.tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self.meter.close()
