"""The one metered model call: every call of a run tree, of every role, goes through `Meter.call`.

Root turns, sub-calls, the last-chance turn and the root turns of child runs all take
the same path, in the manner of httpx's layered `send`: a concurrency slot, a budget
reservation, an `lm_call_start` event, the call cut off by the time budget, then the
usage recorded (or the reservation released) and an `lm_call` event. Call ids follow
one scheme, `{run_id}-{n}`, numbered per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from fathom.budget import Spend
from fathom.errors import BudgetExceeded
from fathom.lm import pricing
from fathom.lm.base import LM, Completion, Message
from fathom.lm.retry import RetryNotice, retry_listener
from fathom.trace import Clock, Event, LMCall, LMCallRetry, LMCallStart

if TYPE_CHECKING:
    from fathom.answers import AnswerSchema, Citation

T = TypeVar("T")

# Characters of a prompt carried by lm_call_start (the full prompt is in lm_call).
START_PROMPT_CHARS = 1000


class Role(StrEnum):
    """Who makes a model call: a run's own loop, or REPL code through llm_query."""

    ROOT = "root"
    SUB = "sub"


@dataclass(eq=False)
class RunHandle:
    """One run of a tree as its model calls see it: identity, position and call numbering."""

    query: str
    depth: int = 0
    parent: RunHandle | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    iteration: int = 0
    schema: AnswerSchema | None = None  # what this run's answer must match (schema=)
    citations: list[Citation] = field(default_factory=list)  # cite() spans, in order
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    @property
    def parent_run_id(self) -> str | None:
        """The run_id of the run whose rlm_query started this one."""
        return None if self.parent is None else self.parent.run_id

    def call_id(self) -> str:
        """A fresh id for one model call of this run."""
        return f"{self.run_id}-{next(self._numbers)}"

    def batch_id(self) -> str:
        """A fresh id shared by the calls of one batched REPL call."""
        return f"{self.run_id}-b{next(self._numbers)}"


@dataclass(frozen=True)
class CallSite:
    """Where a model call comes from; what the trace and the replay need to know of it."""

    run: RunHandle
    role: Role
    call_id: str
    batch_id: str | None = None
    last_chance: bool = False
    batch_size: int | None = None


_current: contextvars.ContextVar[CallSite | None] = contextvars.ContextVar(
    "fathom_call_site", default=None
)


def current_call() -> CallSite | None:
    """The call site of the model call in progress (inside `LM.acomplete`), if any."""
    return _current.get()


class Meter:
    """Budget, concurrency slots and trace events around `LM.acomplete`, for one run tree."""

    def __init__(
        self, spend: Spend, emit: Callable[[Event], None], clock: Clock, max_concurrency: int
    ) -> None:
        self.spend = spend
        self.emit = emit
        self.clock = clock
        self.slots = asyncio.Semaphore(max_concurrency)

    async def call(
        self, lm: LM, messages: list[Message], site: CallSite
    ) -> Completion:
        """One model call; raises BudgetExceeded when the budget refuses or cuts it off."""
        prompt = messages[-1]["content"] if messages else ""
        estimate = pricing.estimate_prompt_tokens(messages)
        async with self._slot(site):
            self._event(site, LMCallStart, model=lm.name, prompt=prompt[:START_PROMPT_CHARS])
            try:
                self.spend.reserve(estimate)
            except BudgetExceeded as exc:
                self._event(site, LMCall, model=lm.name, prompt=prompt,
                            error=f"BudgetExceeded: {exc}", refused=True)
                raise
            token = _current.set(site)
            heard = retry_listener.set(lambda notice: self._retried(site, lm.name, notice))
            try:
                completion = await self.within_budget(lm.acomplete(messages))
            except BaseException as exc:
                self.spend.release(estimate)
                self._event(site, LMCall, model=lm.name, prompt=prompt,
                            error=f"{type(exc).__name__}: {exc}",
                            refused=isinstance(exc, BudgetExceeded))
                raise
            finally:
                retry_listener.reset(heard)
                _current.reset(token)
        model = completion.model or lm.name
        self.spend.record(model, completion.usage, estimate)
        self._event(
            site, LMCall, model=model, prompt=prompt, response=completion.text,
            prompt_tokens=completion.usage.prompt_tokens,
            completion_tokens=completion.usage.completion_tokens, seconds=completion.seconds,
            usd=completion.usage.usd, cached=completion.cached,
        )
        return completion

    def refuse(self, site: CallSite, model: str, prompt: str, error: str) -> None:
        """Trace a call refused before it reached a model (e.g. a model the user did not allow)."""
        self._event(site, LMCallStart, model=model, prompt=prompt[:START_PROMPT_CHARS])
        self._event(site, LMCall, model=model, prompt=prompt, error=error)

    def _retried(self, site: CallSite, model: str, notice: RetryNotice) -> None:
        self._event(site, LMCallRetry, model=model, attempt=notice.attempt,
                    attempts=notice.attempts, reason=notice.reason, delay=notice.delay)

    def _slot(self, site: CallSite) -> contextlib.AbstractAsyncContextManager[object]:
        # Every call shares the tree's slots, so max_concurrency bounds the whole tree; but the
        # top run's own turns never wait behind the sub-calls its code started.
        if site.role is Role.ROOT and site.run.depth == 0:
            return contextlib.nullcontext()
        return self.slots

    def _event(
        self, site: CallSite, cls: type[LMCall | LMCallStart | LMCallRetry], **fields: object
    ) -> None:
        run = site.run
        if cls is not LMCallRetry:
            fields.update(batch_id=site.batch_id, last_chance=site.last_chance)
        if cls is LMCallStart:
            fields.update(batch_size=site.batch_size)
        self.emit(cls(
            run_id=run.run_id, depth=run.depth, t=self.clock.now(), role=site.role.value,
            iteration=run.iteration, call_id=site.call_id, **fields,  # type: ignore[arg-type]
        ))

    async def within_budget(self, call: Awaitable[T]) -> T:
        """Await `call`, cut off with BudgetExceeded when the time budget runs out."""
        remaining = self.spend.remaining_seconds()
        if remaining is None:
            return await call
        try:
            return await asyncio.wait_for(call, timeout=remaining)
        except TimeoutError:
            raise BudgetExceeded(self.spend.describe_limit("seconds")) from None
