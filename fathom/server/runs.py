"""The runs of a server: admission (a cap and a bounded queue), one RLM per run, cleanup.

Shared by the HTTP app and the MCP server. Each run is an asyncio task around
`RLM.arun`; cancelling the task cancels the run, whose engine closes its sandbox
(killing the worker) before the task ends.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fathom
from fathom.budget import Budget
from fathom.server.config import ServerConfig
from fathom.server.errors import APIError
from fathom.server.metrics import Metrics
from fathom.server.streaming import ProgressText
from fathom.trace import Event

Progress = Callable[[str], None]


class Runs:
    """Starts runs within the operator's limits and tracks them until they end."""

    def __init__(self, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._admitted = 0  # running plus queued
        self._slots: asyncio.Semaphore | None = None  # made on the serving loop
        self._tasks: set[asyncio.Task[fathom.Result]] = set()
        self._recent: list[float] = []  # latest run durations, for Retry-After

    def _admit(self) -> None:
        """Take a place (running or queued) for one run, or refuse with 429 when all are taken.

        Synchronous, so no other request can pass between the check and the count.
        """
        limit = self.config.max_runs + self.config.max_queue
        if self._admitted >= limit:
            self.metrics.runs.labels("rejected").inc()
            raise APIError(
                429, f"The server is at its limit of {self.config.max_runs} runs in progress "
                f"and {self.config.max_queue} waiting; retry after the Retry-After seconds.",
                code="too_many_runs", headers={"Retry-After": str(self.retry_after())})
        self._admitted += 1

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about one recent run's duration."""
        if not self._recent:
            return 1
        return max(1, math.ceil(sum(self._recent) / len(self._recent)))

    def start(self, query: str, context: Any, paths: Sequence[Path] | None, budget: Budget,
              progress: Progress | None = None) -> asyncio.Task[fathom.Result]:
        """Start one run as a task, which waits for a free slot first; 429 when none is left.

        `paths` (checked by `resolve_paths`) are read as the context when given.
        """
        self._admit()
        task = asyncio.create_task(self._run(query, context, paths, budget, progress))
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[fathom.Result]) -> None:
        # A done callback, not a `finally` in the task: a task cancelled before its first
        # step never runs its body, and its place must still be given back.
        self._tasks.discard(task)
        self._admitted -= 1

    async def _run(self, query: str, context: Any, paths: Sequence[Path] | None,
                   budget: Budget, progress: Progress | None) -> fathom.Result:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_runs)
        self.metrics.queued.inc()
        queued = True
        try:
            async with self._slots:
                self.metrics.queued.dec()
                queued = False
                return await self._run_now(query, context, paths, budget, progress)
        finally:
            if queued:
                self.metrics.queued.dec()

    async def _run_now(self, query: str, context: Any, paths: Sequence[Path] | None,
                       budget: Budget, progress: Progress | None) -> fathom.Result:
        self.metrics.in_progress.inc()
        started = time.monotonic()
        try:
            if paths is not None:
                context = await asyncio.to_thread(fathom.Context.from_paths, list(paths))
            result = await self._rlm(budget, progress).arun(query, context)
        except asyncio.CancelledError:
            self.metrics.runs.labels("cancelled").inc()
            raise
        except Exception:
            self.metrics.runs.labels("failed").inc()
            raise
        finally:
            self.metrics.in_progress.dec()
        seconds = time.monotonic() - started
        self.metrics.finished(result, seconds)
        self._recent = [*self._recent[-19:], seconds]
        return result

    def _rlm(self, budget: Budget, progress: Progress | None) -> fathom.RLM:
        config, texts = self.config, ProgressText()
        loop = asyncio.get_running_loop()
        lock = threading.Lock()

        def on_event(event: Event) -> None:
            # Called from the run's sub-call threads too: count under a lock, and hand the
            # text to the loop.
            with lock:
                before = texts.sub_calls
                line = texts.line(event)
                self.metrics.sub_calls.inc(texts.sub_calls - before)
            if line is not None and progress is not None:
                loop.call_soon_threadsafe(progress, line)

        trace = None
        if config.trace_dir is not None:
            trace = config.trace_dir / f"serve-{time.strftime('%Y%m%d-%H%M%S')}-" \
                                       f"{uuid.uuid4().hex[:8]}.jsonl"
        return fathom.RLM(model=config.model, sub_model=config.sub_model, budget=budget,
                          trace=trace, on_event=on_event, **config.rlm_options)

    @property
    def active(self) -> int:
        """Runs running or queued now."""
        return sum(not task.done() for task in self._tasks)

    async def cancel_all(self, timeout: float = 10.0) -> None:
        """Cancel every run still going and wait (up to `timeout`) for their cleanup."""
        pending = [task for task in self._tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=timeout)


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has cleaned up (its sandbox closed)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
