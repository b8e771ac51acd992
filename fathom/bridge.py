"""The parent's side of the REPL functions: calls from sandbox code, dispatched from `repl_api`.

A sandbox calls `SubCalls.call(name, args)` from its own threads; the handler named in
the table runs as a coroutine on the run tree's event loop, so `llm_query_batched`
fans out with asyncio. Model calls go through the tree's one metered path; child runs
are started by the tree. A model failure comes back to REPL code as an "Error: ..."
string so the code keeps going; a budget refusal is raised as BudgetExceeded, so a
runaway loop stops, and a call over a limit (too many prompts) as CallRefused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from fathom import repl_api
from fathom.answers import Citer
from fathom.calls import CallSite, Role, RunHandle
from fathom.context import Context
from fathom.errors import BudgetExceeded, ConfigError
from fathom.lm.base import LM, Message, prompt_room
from fathom.repl_api import Batch, CallRefused, FunctionSpec
from fathom.trace import CitationEvent
from fathom.tree import RunConfig, RunTree

T = TypeVar("T")


def offered_functions(config: RunConfig, sub: LM) -> list[FunctionSpec]:
    """The REPL functions a run with `config` offers, docs filled in for its sub-model."""
    room = prompt_room(sub)
    return [
        f.spec.render(sub_window=f"{room:,}") for f in repl_api.functions()
        if config.sub_calls or not f.calls_models
    ]


class SubCalls:
    """The Bridge one run hands its sandbox, and the ReplHost its handlers act on."""

    def __init__(self, tree: RunTree, run: RunHandle, context: Context | None = None) -> None:
        self.tree = tree
        self.run = run
        self._citer = Citer(context) if context is not None else None  # cite() reads it
        self.concurrency = tree.config.concurrency_bound
        self.max_batch = tree.config.sandbox_options.max_batch
        self._specs = offered_functions(tree.config, tree.router.sub)
        self._offered = {spec.name for spec in self._specs}

    # --- the Bridge, called from sandbox threads ------------------------------------------
    def functions(self) -> list[FunctionSpec]:
        """The REPL functions this run offers, docs filled in for its models."""
        return list(self._specs)

    def call(self, name: str, args: dict[str, Any]) -> Any:
        """Run the handler of REPL function `name`; BudgetExceeded when the budget refuses,
        CallRefused when the call is over a limit (`max_batch`)."""
        function = repl_api.get(name)
        if function is None or name not in self._offered:
            return f"Error: there is no REPL function {name!r} in this run"
        repl_api.check_batch(function.spec, args, self.max_batch)
        try:
            return self._wait(function.handler(self, args))
        except (BudgetExceeded, CallRefused):
            raise
        except Exception as exc:  # a handler bug must not end the REPL code's run
            return f"Error: {name} failed: {type(exc).__name__}: {exc}"

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(self._tracked(coro), self.tree.loop).result()

    async def _tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` as a task the run tree can cancel when the run is cancelled."""
        task = asyncio.current_task()
        if task is not None:
            self.tree.tasks.add(task)
        try:
            return await coro
        finally:
            if task is not None:
                self.tree.tasks.discard(task)

    # --- the ReplHost, on the tree's event loop ---------------------------------------------
    def batch(self, size: int) -> Batch:
        """A fresh batch of this run, of `size` calls."""
        return Batch(self.run.batch_id(), size)

    async def llm_query(self, prompt: str, model: str | None, batch: Batch | None) -> str:
        """One metered sub-call; a failure is returned as text, a budget refusal raised, and a
        prompt too long for the model's window refused (CallRefused) so the code can split it."""
        site = CallSite(
            self.run, Role.SUB, self.run.call_id(),
            batch_id=batch.id if batch else None, batch_size=batch.size if batch else None,
        )
        messages: list[Message] = [{"role": "user", "content": prompt}]
        try:
            lm = self.tree.router.get(model)
        except ConfigError as exc:
            error = f"Error: {type(exc).__name__}: {exc}"
            self.tree.meter.refuse(site, model or "", prompt, error)
            return error
        room = prompt_room(lm)
        if len(prompt) > room:
            refusal = (
                f"the prompt has {len(prompt):,} characters but {lm.name} takes at most about "
                f"{room:,} (its context window less its reply): split it into parts that fit"
            )
            self.tree.meter.refuse(site, lm.name, prompt, f"CallRefused: {refusal}")
            raise CallRefused(refusal)
        try:
            completion = await self.tree.meter.call(lm, messages, site)
        except BudgetExceeded:
            raise
        except Exception as exc:
            return f"Error: {type(exc).__name__}: {exc}"
        return completion.text

    async def cite(self, start: Any, end: Any, source: Any) -> str:
        """Record a span of this run's context as evidence (on its RunHandle, so per run) and
        return its text; CallRefused when the span is not in the context."""
        if self._citer is None:
            raise CallRefused("cite: this run has no context to cite.")
        citation = await asyncio.to_thread(self._citer.cite, start, end, source)
        self.run.citations.append(citation)
        self.tree.event(self.run, CitationEvent, iteration=self.run.iteration,
                        **citation.to_dict())
        return citation.text

    async def rlm_query(self, prompt: str, context: Any, batch: Batch | None) -> str:
        """A child run at depth+1, or a plain sub-call at the depth limit."""
        if self.run.depth + 1 > self.tree.config.max_depth:
            return await self.llm_query(prompt, None, batch)
        try:
            result = await self.tree.run_child(
                self.run, prompt, context, batch.id if batch else None
            )
        except Exception as exc:  # the child's own failure is traced by it; the parent goes on
            return f"Error: rlm_query failed: {type(exc).__name__}: {exc}"
        if result.stop_reason == "budget":
            raise BudgetExceeded(
                f"the child run stopped at the budget ({result.answer[:200]})"
            )
        if result.stop_reason == "error" and not result.answer:
            return f"Error: rlm_query failed: {result.error}"
        return result.answer
