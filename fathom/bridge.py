"""The parent's side of the REPL functions: every sub-call is made, limited and traced here.

Sandbox threads call the synchronous Bridge methods; the work runs as coroutines on the
run's event loop, so `llm_query_batched` fans out with asyncio under one semaphore
shared by the whole run tree. Nothing here raises into REPL code: failures come back as
"Error: ..." strings, and the trace records them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from fathom.errors import BudgetExceeded, ConfigError
from fathom.lm import pricing
from fathom.lm.base import LM, Message
from fathom.sandbox.base import BUDGET_STOP
from fathom.trace import LMCall, LMCallStart

if TYPE_CHECKING:
    from fathom.engine import RunTree

T = TypeVar("T")
ChildRunner = Callable[[str, Any, str | None], Awaitable[str]]

_call_ids = itertools.count(1)
# Characters of a prompt carried by lm_call_start (the full prompt is in lm_call).
START_PROMPT_CHARS = 1000


class ModelRouter:
    """Which LM answers a call: the root model, the sub model, or an allowed spec by name."""

    def __init__(self, root: LM, sub: LM, allowed: list[str | LM] | None, wrap: Callable[[LM], LM]):
        self.root = root
        self.sub = sub
        self._wrap = wrap
        self._by_name: dict[str, LM] = {root.name: root, sub.name: sub}
        self._allowed: set[str] | None = None
        if allowed is not None:
            self._allowed = {root.name, sub.name}
            for entry in allowed:
                if isinstance(entry, str):
                    self._allowed.add(entry)
                else:
                    self._allowed.add(entry.name)
                    self._by_name[entry.name] = wrap(entry)

    def get(self, spec: str | None) -> LM:
        """The LM for `llm_query(model=spec)`; ConfigError if the user did not allow it."""
        if spec is None:
            return self.sub
        if spec in self._by_name:
            return self._by_name[spec]
        if self._allowed is None or spec not in self._allowed:
            allowed = sorted(self._allowed or {self.root.name, self.sub.name})
            raise ConfigError(
                f"model {spec!r} is not allowed in this run; use one of {allowed} "
                "(the user can allow more with RLM(allowed_models=[...]))."
            )
        from fathom.lm import resolve

        lm = self._wrap(resolve(spec))
        self._by_name[spec] = lm
        return lm


class SubCalls:
    """The Bridge one run hands its sandbox."""

    def __init__(
        self,
        tree: RunTree,
        *,
        run_id: str,
        depth: int,
        iteration: Callable[[], int],
        run_child: ChildRunner,
    ) -> None:
        self.tree = tree
        self.run_id = run_id
        self.depth = depth
        self._iteration = iteration
        self._run_child = run_child

    # Synchronous entry points, called from sandbox threads.
    def llm_query(self, prompt: str, model: str | None = None) -> str:
        """One sub-call to a model."""
        return self._wait(self.allm_query(prompt, model))

    def llm_query_batched(self, prompts: list[str], model: str | None = None) -> list[str]:
        """Many sub-calls, concurrently, answers in prompt order."""
        if not isinstance(prompts, list | tuple):
            return [f"Error: llm_query_batched needs a list, got {type(prompts).__name__}"]
        return self._wait(self.allm_query_batched(list(prompts), model))

    def rlm_query(self, prompt: str, context: Any = None) -> str:
        """A child RLM (or llm_query once max_depth is reached)."""
        return self._wait(self.arlm_query(prompt, context))

    def rlm_query_batched(
        self, prompts: list[str], contexts: list[Any] | None = None
    ) -> list[str]:
        """Many child RLMs, concurrently, answers in prompt order."""
        if not isinstance(prompts, list | tuple):
            return [f"Error: rlm_query_batched needs a list, got {type(prompts).__name__}"]
        if contexts is not None and len(contexts) != len(prompts):
            return [
                f"Error: rlm_query_batched got {len(prompts)} prompts but {len(contexts)} contexts"
            ] * len(prompts)
        batch = f"b{next(_call_ids)}"
        ctxs = list(contexts) if contexts is not None else [None] * len(prompts)
        coros = [self.arlm_query(p, c, batch) for p, c in zip(prompts, ctxs, strict=True)]
        return self._wait(_gather(coros))

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

    # The work, on the run's event loop.
    async def allm_query_batched(self, prompts: list[str], model: str | None = None) -> list[str]:
        """Concurrent sub-calls sharing one batch id in the trace."""
        batch = f"b{next(_call_ids)}"
        return await _gather([self.allm_query(p, model, batch) for p in prompts])

    async def allm_query(
        self, prompt: Any, model: str | None = None, batch_id: str | None = None
    ) -> str:
        """One sub-call: allowed model, budget reserved, concurrency slot, traced."""
        prompt = prompt if isinstance(prompt, str) else str(prompt)
        call_id = f"c{next(_call_ids)}"
        name = model or self.tree.router.sub.name
        estimate = pricing.estimate_tokens(prompt)
        reserved = False
        try:
            lm = self.tree.router.get(model)
            name = lm.name
            async with self.tree.llm_slots:
                self.tree.spend.reserve(estimate)
                reserved = True
                self.tree.emit(
                    LMCallStart(
                        run_id=self.run_id, depth=self.depth, t=self.tree.clock.now(),
                        role="sub", model=lm.name, iteration=self._iteration(),
                        prompt=prompt[:START_PROMPT_CHARS], call_id=call_id, batch_id=batch_id,
                    )
                )
                messages: list[Message] = [{"role": "user", "content": prompt}]
                completion = await self.tree.within_budget(lm.acomplete(messages))
        except BudgetExceeded as exc:
            if reserved:
                self.tree.spend.release(estimate)
            return self._failed(call_id, batch_id, name, prompt, f"{BUDGET_STOP}: {exc}")
        except Exception as exc:  # a failing sub-call must not kill the run
            if reserved:
                self.tree.spend.release(estimate)
            error = f"Error: {type(exc).__name__}: {exc}"
            return self._failed(call_id, batch_id, name, prompt, error)
        except BaseException:
            if reserved:
                self.tree.spend.release(estimate)
            raise
        self.tree.spend.record(completion.model or name, completion.usage, estimate)
        self.tree.emit(
            LMCall(
                run_id=self.run_id, depth=self.depth, t=self.tree.clock.now(), role="sub",
                model=completion.model or name, iteration=self._iteration(), prompt=prompt,
                response=completion.text, prompt_tokens=completion.usage.prompt_tokens,
                completion_tokens=completion.usage.completion_tokens, seconds=completion.seconds,
                usd=completion.usage.usd, cached=completion.cached, call_id=call_id,
                batch_id=batch_id,
            )
        )
        return completion.text

    async def arlm_query(
        self, prompt: Any, context: Any = None, batch_id: str | None = None
    ) -> str:
        """A child RLM at depth+1, or a plain sub-call at the depth limit."""
        prompt = prompt if isinstance(prompt, str) else str(prompt)
        if self.depth + 1 > self.tree.config.max_depth:
            return await self.allm_query(prompt, None, batch_id)
        try:
            return await self._run_child(prompt, context, batch_id)
        except Exception as exc:  # the child's own failure is traced by it; the parent goes on
            return f"Error: rlm_query failed: {type(exc).__name__}: {exc}"

    def _failed(
        self, call_id: str, batch_id: str | None, model: str, prompt: str, error: str
    ) -> str:
        self.tree.emit(
            LMCall(
                run_id=self.run_id, depth=self.depth, t=self.tree.clock.now(), role="sub",
                model=model, iteration=self._iteration(), prompt=prompt, error=error,
                call_id=call_id, batch_id=batch_id,
            )
        )
        return error


async def _gather(coros: list[Coroutine[Any, Any, str]]) -> list[str]:
    return list(await asyncio.gather(*coros))
