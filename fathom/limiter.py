"""Adaptive concurrency per model endpoint: how many calls a run tree sends at once.

Nobody knows their provider's limit in advance, so the limit is found the way TCP
finds a link's capacity. A `Limiter` starts at `START` calls in flight and grows while
calls succeed and their latency holds: slow start (one more slot per call let in, and a
request held `ADMITTED_AFTER` without a refusal counts as let in, up to `REACH` times the
most calls in flight seen let in) until the first sign of trouble, then additive
increase (about one slot per round trip). A 429, a 503, an
"overloaded" reply or a timeout cuts the limit to `BACKOFF` of the concurrency the
rejected request was sent at (to `STEEP_BACKOFF` when the last cut has seen no success
since), but never below half of it. A cut happens once per round of requests, not once
per rejected request, and a request rejected again at a fraction of the limit (a spent
per-minute bucket, not our concurrency) cuts nothing more. The limit never leaves
[1, cap]. A fixed limit (`RLM(max_concurrency=N)`) is the same object with adaptation off.

One limiter serves every call to one endpoint (provider, server, model) in a run
tree, root turns, sub-calls and child runs alike, so that children cannot multiply
the load. Adaptive limiters are shared further: every run tree of one event loop (the
runs `fathom serve` answers at once, a session's questions asked with `aask`) that calls
an endpoint with the same cap uses one limiter (`shared_limiter`), so concurrent runs
cannot multiply the load either, and a run starts at the limit the runs before it found.
Each tree subscribes to it for its trace's `concurrency` events while it runs; the
registry holds event loops weakly, so the limiters of an ended `asyncio.run` go with it.

The retry layer (`fathom.lm.retry`) reports each HTTP attempt to the limiter holding
its call (`attempt_observer`), and a call that waits to retry gives its slot back while
it waits.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

START = 32  # calls in flight before anything is known of the endpoint
BACKOFF = 0.95  # share of the rejected request's concurrency kept after a cut
# ...and after a cut that was not enough (rejected again before any success): the limit
# fell a long way (a provider tightening its limit), so it is looked for fast.
STEEP_BACKOFF = 0.5
# In slow start, a request the endpoint has held this long (or three times the longest it
# took to refuse one) without refusing it counts as let in: endpoints refuse at the door
# (429 comes back at once), so growth need not wait for whole replies, which can take
# seconds each. The first refusal ends slow start, and with it this guess.
ADMITTED_AFTER = 0.1
REACH = 1.5  # slow start's limit over the most calls in flight seen let in
LATENCY_TOLERANCE = 2.0  # recent latency this many times the long-run latency stops growth
_FAST, _SLOW = 0.2, 0.02  # weights of the recent and long-run latency averages


class LimitReason(StrEnum):
    """Why a limit changed, as `concurrency` trace events say it."""

    START = "start"
    GROW = "grow"  # calls succeeded at the old limit, latency held
    THROTTLED = "throttled"  # 429 / 503 / overloaded
    TIMEOUT = "timeout"
    SHARED = "shared"  # a run tree joined a limiter that other runs of its loop use


@dataclass(frozen=True)
class LimitChange:
    """A limiter's new limit, and why."""

    endpoint: str
    limit: int
    previous: int
    reason: LimitReason
    in_flight: int


@dataclass
class Ticket:
    """One call's hold on a slot: when it was sent and how many calls were in flight."""

    sequence: int
    in_flight: int  # counting itself
    held: bool = True
    reported: bool = False
    sent: float = field(default_factory=time.monotonic)
    admitted: bool = False  # counted as let in before its reply came (slow start)
    timer: asyncio.TimerHandle | None = None


class Limiter:
    """Caps the calls in flight to one endpoint; adaptive (AIMD) or fixed."""

    def __init__(
        self,
        endpoint: str,
        *,
        initial: int = START,
        cap: int = 512,
        adaptive: bool = True,
        on_change: Callable[[LimitChange], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.cap = cap
        self.adaptive = adaptive
        self.on_change = on_change
        self._listeners: list[Callable[[LimitChange], None]] = []  # run trees sharing it
        self._limit = float(max(1, min(initial, cap)))
        self._told = 0  # the limit last reported to `on_change`
        # Below this the limit doubles per round trip (slow start), above it grows by one
        # per round trip: the first cut (or rising latency) ends slow start for good.
        self._threshold = math.inf
        self._refused_in = 0.0  # the longest an endpoint took to refuse a request
        self._proven = 0  # the most calls in flight that one was let in at
        self._in_flight = 0
        self._numbers = itertools.count(1)
        self._cut_after = 0  # requests sent before the last cut do not cut again
        self._eased = True  # a call succeeded since the last cut
        self._fast: float | None = None
        self._slow: float | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self.last_success = time.monotonic()
        self.throttled = 0  # attempts rejected as throttled or overloaded
        self.attempts = 0

    @property
    def limit(self) -> int:
        """Calls that may be in flight now."""
        return int(self._limit + 1e-6)  # a round trip of 1/n steps makes a whole one

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now."""
        return self._in_flight

    # -- slots -------------------------------------------------------------------------
    async def acquire(self, *, priority: bool = False) -> Ticket:
        """Wait for a slot; `priority` takes one at once (a root turn never queues behind
        the sub-calls its own code started) but still counts in flight."""
        while not priority and self._in_flight >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # pass on the wake-up this waiter will not use
                raise
        self._in_flight += 1
        self.attempts += 1
        ticket = Ticket(next(self._numbers), self._in_flight)
        if self.adaptive and self._limit < self._threshold:
            wait = max(ADMITTED_AFTER, 3 * self._refused_in)
            ticket.timer = asyncio.get_running_loop().call_later(wait, self._admitted, ticket)
        return ticket

    def release(self, ticket: Ticket) -> None:
        """Give a slot back (once per acquire)."""
        if ticket.timer is not None:
            ticket.timer.cancel()
        if ticket.held:
            ticket.held = False
            self._in_flight -= 1
            self._wake()

    def _wake(self) -> None:
        free = self.limit - self._in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    # -- what attempts report --------------------------------------------------------------
    def _admitted(self, ticket: Ticket) -> None:
        """Slow start: `ticket` was not refused at the door, so one more may go."""
        if not ticket.held or ticket.reported or self._limit >= self._threshold:
            return
        ticket.admitted = True
        self._proven = max(self._proven, ticket.in_flight)
        if (self._in_flight + len(self._waiters)) * 2 >= self.limit:
            self._grow(1.0)

    def _grow(self, step: float) -> None:
        # Slow start reaches at most REACH times the concurrency calls were let in at, so
        # one burst cannot overshoot an unknown limit by much before its refusals are read.
        ceiling = float(self.cap)
        if self._limit < self._threshold:
            ceiling = min(ceiling, max(float(START), self._proven * REACH))
        if self._limit + step <= ceiling:
            self._set(self._limit + step, LimitReason.GROW)

    def succeeded(self, ticket: Ticket, seconds: float) -> None:
        """A call (or attempt) finished well after `seconds`: grow while latency holds."""
        if ticket.reported:
            return
        ticket.reported = True
        self.last_success = time.monotonic()
        self._eased = True
        if not self.adaptive:
            return
        self._fast = seconds if self._fast is None else self._fast + _FAST * (seconds - self._fast)
        self._slow = seconds if self._slow is None else self._slow + _SLOW * (seconds - self._slow)
        if self._fast > LATENCY_TOLERANCE * self._slow:
            self._threshold = self._limit  # queueing somewhere: stop doubling, do not grow
            return
        demand = max(ticket.in_flight, self._in_flight + len(self._waiters))
        if demand * 2 < self.limit or (ticket.admitted and self._limit < self._threshold):
            return  # no evidence for more, or this call's slot was already added
        self._proven = max(self._proven, ticket.in_flight)
        self._grow(1.0 if self._limit < self._threshold else 1.0 / self.limit)

    def overloaded(self, ticket: Ticket, reason: LimitReason = LimitReason.THROTTLED) -> None:
        """The endpoint rejected an attempt (429, 503, overloaded) or it timed out: cut once."""
        if ticket.reported:
            return
        ticket.reported = True
        self.throttled += 1
        self._refused_in = max(self._refused_in, time.monotonic() - ticket.sent)
        if not self.adaptive or ticket.sequence <= self._cut_after:
            return
        sent_at = min(self._limit, float(ticket.in_flight))
        if not self._eased and sent_at < self._limit * STEEP_BACKOFF:
            # Rejected again, but sent at a fraction of the limit: our concurrency does not
            # explain it (an empty per-minute bucket, others' traffic); Retry-After does.
            return
        self._cut_after = next(self._numbers)
        backoff = BACKOFF if self._eased else STEEP_BACKOFF
        # One cut at most halves the limit: a request can be rejected at a low count when
        # others sent after it reached the server first.
        cut = max(1.0, float(int(max(sent_at * backoff, self._limit * STEEP_BACKOFF))))
        self._threshold = cut
        self._eased = False
        self._set(cut, reason)

    def _set(self, limit: float, reason: LimitReason) -> None:
        previous = self.limit
        self._limit = limit
        if self.limit == previous:
            return
        self._wake()
        # Growth is told in steps of an eighth (or at the cap), cuts every time: a trace
        # of the limit's shape, not of every success.
        step = max(1, self._told // 8)
        if reason is not LimitReason.GROW:
            self._tell(reason, previous)
        elif self.limit >= min(self.cap, self._told + step):
            self._tell(reason, self._told)

    def _tell(self, reason: LimitReason, previous: int) -> None:
        self._told = self.limit
        change = LimitChange(self.endpoint, self.limit, previous, reason, self._in_flight)
        if self.on_change is not None:
            self.on_change(change)
        for listener in list(self._listeners):  # a listener may unsubscribe meanwhile
            listener(change)

    def announce(self) -> None:
        """Report the starting limit (a `concurrency` event with reason "start")."""
        self._tell(LimitReason.START, 0)

    def subscribe(self, listener: Callable[[LimitChange], None], *, fresh: bool) -> None:
        """Tell `listener` (one run tree) every change from now on, starting with the limit
        now: reason "start" for a new limiter, "shared" for one that other runs use."""
        self._listeners.append(listener)
        if fresh:
            self._told = self.limit
        reason = LimitReason.START if fresh else LimitReason.SHARED
        listener(LimitChange(self.endpoint, self.limit, 0, reason, self._in_flight))

    def unsubscribe(self, listener: Callable[[LimitChange], None]) -> None:
        """Stop telling `listener` (its run tree ended)."""
        if listener in self._listeners:
            self._listeners.remove(listener)


class Holder:
    """The slot of one model call, as the retry layer sees it: it reports each attempt's
    outcome and gives the slot back while the call waits to retry."""

    def __init__(self, limiter: Limiter, priority: bool) -> None:
        self.limiter = limiter
        self.priority = priority
        self.ticket: Ticket | None = None

    async def __aenter__(self) -> Holder:
        self.ticket = await self.limiter.acquire(priority=self.priority)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ticket is not None:
            self.limiter.release(self.ticket)

    def succeeded(self, seconds: float) -> None:
        """The attempt in flight got a reply after `seconds`."""
        if self.ticket is not None:
            self.limiter.succeeded(self.ticket, seconds)

    def overloaded(self, timeout: bool = False) -> None:
        """The attempt in flight was throttled, or timed out."""
        if self.ticket is not None:
            reason = LimitReason.TIMEOUT if timeout else LimitReason.THROTTLED
            self.limiter.overloaded(self.ticket, reason)

    @property
    def last_success(self) -> float:
        """When a call to this endpoint last succeeded (monotonic seconds)."""
        return self.limiter.last_success

    async def pause(self, seconds: float, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Wait `seconds` before a retry without holding the slot, then queue for one again."""
        if self.ticket is not None:
            self.limiter.release(self.ticket)
        await sleep(seconds)
        self.ticket = await self.limiter.acquire(priority=self.priority)


def endpoint_of(lm: Any) -> str:
    """The endpoint a model's calls go to: provider, server and model; wrappers looked through."""
    while getattr(lm, "endpoint", None) is None and getattr(lm, "lm", None) is not None:
        lm = lm.lm
    endpoint = getattr(lm, "endpoint", None)
    return str(endpoint) if endpoint else str(getattr(lm, "name", repr(lm)))


# Adaptive limiters shared by the run trees of one event loop, by (endpoint, cap). A
# limiter's futures and timers belong to its loop, so loops never share one; a loop that
# ends (and is collected) takes its limiters with it.
_shared: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, int], Limiter]
] = weakref.WeakKeyDictionary()


def shared_limiter(endpoint: str, cap: int) -> tuple[Limiter, bool]:
    """The adaptive limiter of `endpoint` shared in the running loop, and whether it is new."""
    by_key = _shared.setdefault(asyncio.get_running_loop(), {})
    limiter = by_key.get((endpoint, cap))
    if limiter is not None:
        return limiter, False
    limiter = by_key[(endpoint, cap)] = Limiter(endpoint, initial=min(START, cap), cap=cap)
    return limiter, True


def shared_limiters(loop: asyncio.AbstractEventLoop | None = None) -> list[Limiter]:
    """The shared limiters of `loop`, or of every live event loop (tests, diagnostics)."""
    loops = list(_shared.values()) if loop is None else [_shared.get(loop, {})]
    return [limiter for by_key in loops for limiter in by_key.values()]


class Limiters:
    """One limiter per endpoint, for one run tree: adaptive ones shared with the other
    trees of the running loop (`shared_limiter`), fixed ones the tree's own."""

    def __init__(
        self, max_concurrency: int | str, cap: int,
        on_change: Callable[[LimitChange], None] | None = None,
    ) -> None:
        self.adaptive = max_concurrency == "auto"
        self.initial = min(START, cap) if self.adaptive else int(max_concurrency)
        self.cap = cap if self.adaptive else int(max_concurrency)
        self.on_change = on_change
        self._by_endpoint: dict[str, Limiter] = {}

    def for_model(self, lm: Any) -> Limiter:
        """The limiter of `lm`'s endpoint, made on first use."""
        endpoint = endpoint_of(lm)
        limiter = self._by_endpoint.get(endpoint)
        if limiter is None:
            if not self.adaptive:  # a fixed limit never changes: nothing to tell
                limiter = Limiter(endpoint, initial=self.initial, cap=self.cap,
                                  adaptive=False, on_change=self.on_change)
                self._by_endpoint[endpoint] = limiter
                return limiter
            limiter, fresh = shared_limiter(endpoint, self.cap)
            self._by_endpoint[endpoint] = limiter
            if self.on_change is not None:
                limiter.subscribe(self.on_change, fresh=fresh)
        return limiter

    def close(self) -> None:
        """The tree ended: stop hearing of the shared limiters' changes."""
        if self.on_change is not None:
            for limiter in self._by_endpoint.values():
                limiter.unsubscribe(self.on_change)

    def all(self) -> list[Limiter]:
        """Every limiter made so far."""
        return list(self._by_endpoint.values())
