"""The one metered model call: every call of a run tree, of every role, goes through `Meter.call`.

Root turns, sub-calls, the last-chance turn and the root turns of child runs all take
the same path, in the manner of httpx's layered `send`: a slot from the endpoint's
concurrency limiter (fathom.limiter), a budget reservation, an `lm_call_start` event,
the call cut off by the time budget, then the usage recorded (or the reservation
released) and an `lm_call` event. Call ids follow one scheme, `{run_id}-{n}`,
numbered per run.

A provider error that no wait can cure (a spent quota, or throttling past the time
the run may wait) aborts the whole tree: every later call raises it at once, and
the engine ends each run with it after the code block in progress.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from fathom.budget import Spend
from fathom.errors import BudgetExceeded, FathomError, RateLimitError
from fathom.limiter import Holder, LimitChange, Limiters
from fathom.lm import pricing
from fathom.lm.base import LM, Completion, Message, prompt_cache_key
from fathom.lm.retry import RetryNotice, attempt_observer, retry_listener
from fathom.trace import Clock, ConcurrencyEvent, Event, LMCall, LMCallRetry, LMCallStart

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


def _top(run: RunHandle) -> RunHandle:
    """The root run of `run`'s tree."""
    while run.parent is not None:
        run = run.parent
    return run


_current: contextvars.ContextVar[CallSite | None] = contextvars.ContextVar(
    "fathom_call_site", default=None
)


def current_call() -> CallSite | None:
    """The call site of the model call in progress (inside `LM.acomplete`), if any."""
    return _current.get()


class Meter:
    """Budget, concurrency limits and trace events around `LM.acomplete`, for one run tree."""

    def __init__(
        self, spend: Spend, emit: Callable[[Event], None], clock: Clock,
        max_concurrency: int | str = "auto", max_concurrency_cap: int = 512,
        cache_key: str | None = None,
    ) -> None:
        self.spend = spend
        self.emit = emit
        self.clock = clock
        self.limiters = Limiters(max_concurrency, max_concurrency_cap, self._limit_changed)
        self.cache_key = cache_key  # the tree's prompt_cache_key
        self.fatal: FathomError | None = None  # set once an error ends the whole tree
        self._last_site: CallSite | None = None
        self._root: RunHandle | None = None  # the tree's top run, once it has called

    async def call(
        self, lm: LM, messages: list[Message], site: CallSite
    ) -> Completion:
        """One model call; raises BudgetExceeded when the budget refuses or cuts it off."""
        prompt = messages[-1]["content"] if messages else ""
        estimate = pricing.estimate_prompt_tokens(messages)
        self._raise_if_aborted(site, lm.name, prompt)
        self._last_site = site
        if self._root is None:
            self._root = _top(site.run)
        holder = self._holder(lm, site)
        async with holder:
            self._event(site, LMCallStart, model=lm.name, prompt=prompt[:START_PROMPT_CHARS])
            try:
                self.spend.reserve(estimate)
            except BudgetExceeded as exc:
                self._event(site, LMCall, model=lm.name, prompt=prompt,
                            error=f"BudgetExceeded: {exc}", refused=True)
                raise
            tokens = (_current.set(site), attempt_observer.set(holder),
                      prompt_cache_key.set(self.cache_key))
            heard = retry_listener.set(lambda notice: self._retried(site, lm.name, notice))
            try:
                completion = await self.within_budget(lm.acomplete(messages))
            except BaseException as exc:
                self.spend.release(estimate)
                if isinstance(exc, RateLimitError) and self.fatal is None:
                    self.fatal = exc  # no wait helps: the tree ends with it
                self._event(site, LMCall, model=lm.name, prompt=prompt,
                            error=f"{type(exc).__name__}: {exc}",
                            refused=isinstance(exc, BudgetExceeded))
                raise
            finally:
                retry_listener.reset(heard)
                prompt_cache_key.reset(tokens[2])
                attempt_observer.reset(tokens[1])
                _current.reset(tokens[0])
            # Models that do their own retrying (or none) are heard here, once per call; a
            # response-cache hit never reached the endpoint and says nothing of it.
            if not completion.cached:
                holder.succeeded(completion.seconds)
        model = completion.model or lm.name
        self.spend.record(model, completion.usage, estimate)
        self._event(
            site, LMCall, model=model, prompt=prompt, response=completion.text,
            prompt_tokens=completion.usage.prompt_tokens,
            completion_tokens=completion.usage.completion_tokens, seconds=completion.seconds,
            usd=completion.usage.usd, cached=completion.cached,
            cached_tokens=completion.usage.cached_tokens,
        )
        return completion

    def aborted(self) -> FathomError | None:
        """The error that ended the tree (a fresh copy, to raise), or None."""
        fatal = self.fatal
        return None if fatal is None else type(fatal)(str(fatal))

    def _raise_if_aborted(self, site: CallSite, model: str, prompt: str) -> None:
        error = self.aborted()
        if error is not None:
            self.refuse(site, model, prompt, f"{type(error).__name__}: {error}")
            raise error

    def _holder(self, lm: LM, site: CallSite) -> Holder:
        # Every call to an endpoint shares its limiter, so the limit bounds the whole tree;
        # but the top run's own turns never wait behind the sub-calls its code started.
        priority = site.role is Role.ROOT and site.run.depth == 0
        return Holder(self.limiters.for_model(lm), priority)

    def close(self) -> None:
        """The tree ended: its trace hears no more of the limiters other trees still use."""
        self.limiters.close()

    def _limit_changed(self, change: LimitChange) -> None:
        # An adaptive limiter is shared by the trees of the loop: the call that changed it
        # may be another tree's, whose run this trace does not know.
        site = _current.get()
        if site is None or _top(site.run) is not self._root:
            site = self._last_site
        run_id, depth = (site.run.run_id, site.run.depth) if site else ("", 0)
        self.emit(ConcurrencyEvent(
            run_id=run_id, depth=depth, t=self.clock.now(), endpoint=change.endpoint,
            limit=change.limit, previous=change.previous, reason=change.reason.value,
            in_flight=change.in_flight,
        ))

    def refuse(self, site: CallSite, model: str, prompt: str, error: str) -> None:
        """Trace a call refused before it reached a model (e.g. a model the user did not allow)."""
        self._event(site, LMCallStart, model=model, prompt=prompt[:START_PROMPT_CHARS])
        self._event(site, LMCall, model=model, prompt=prompt, error=error)

    def _retried(self, site: CallSite, model: str, notice: RetryNotice) -> None:
        self._event(site, LMCallRetry, model=model, attempt=notice.attempt,
                    attempts=notice.attempts, reason=notice.reason, delay=notice.delay)

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
