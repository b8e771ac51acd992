"""Limits on tokens, dollars, seconds and model calls, shared by a root run and its children."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from fathom.errors import BudgetExceeded, ConfigError
from fathom.lm.base import Usage

# The `fathom ask` option that sets each Budget field (calls has none).
CLI_FLAGS = {"usd": "--max-usd", "tokens": "--max-tokens", "seconds": "--max-seconds"}


@dataclass(frozen=True)
class Budget:
    """What one run (root, sub-calls and child RLMs together) may spend; None means no limit."""

    usd: float | None = None
    tokens: int | None = None
    seconds: float | None = None
    calls: int | None = None

    def __post_init__(self) -> None:
        for name in ("usd", "tokens", "seconds", "calls"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0
            ):
                raise ConfigError(
                    f"Budget({name}={value!r}) is invalid: "
                    "pass a number >= 0, or None for no limit."
                )

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain-JSON form for the trace."""
        return {
            "usd": self.usd, "tokens": self.tokens, "seconds": self.seconds, "calls": self.calls
        }


class Spend:
    """The running total of one run tree against its Budget; thread-safe.

    Model calls `reserve()` before they start (so no call begins once a limit is
    reached, and `calls` can never be overshot by concurrent sub-calls) and
    `record()` what they cost when they finish. A reservation carries an estimate of
    the call's tokens, counted (with dollars at the rate seen so far) until the call
    settles, so many concurrent calls cannot all start against the same headroom.
    """

    def __init__(self, budget: Budget | None = None) -> None:
        self.budget = budget or Budget()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._usage = Usage()
        self._by_model: dict[str, Usage] = {}
        self._reserved_calls = 0
        self._in_flight_tokens = 0
        self._stopped: str | None = None

    @property
    def usage(self) -> Usage:
        """Everything spent so far."""
        with self._lock:
            return self._usage

    @property
    def elapsed(self) -> float:
        """Seconds since the run began."""
        return time.monotonic() - self._started

    def remaining_seconds(self) -> float | None:
        """Seconds left before the time limit, or None without one."""
        if self.budget.seconds is None:
            return None
        return max(0.0, self.budget.seconds - self.elapsed)

    def exhausted(self) -> str | None:
        """Which limit has been reached ("usd", "tokens", "seconds", "calls"), or None."""
        with self._lock:
            return self._exhausted_locked()

    def _exhausted_locked(self) -> str | None:
        b, u = self.budget, self._usage
        rate = u.usd / u.total_tokens if u.total_tokens else 0.0
        if b.usd is not None and u.usd + self._in_flight_tokens * rate >= b.usd:
            return "usd"
        if b.tokens is not None and u.total_tokens + self._in_flight_tokens >= b.tokens:
            return "tokens"
        if b.seconds is not None and self.elapsed >= b.seconds:
            return "seconds"
        if b.calls is not None and self._reserved_calls >= b.calls:
            return "calls"
        return None

    def reserve(self, estimated_tokens: int = 0) -> None:
        """Claim one model call, or raise BudgetExceeded if a limit is already reached."""
        with self._lock:
            limit = self._exhausted_locked()
            if limit is not None:
                self._stopped = self._stopped or limit
                raise BudgetExceeded(self.describe_limit(limit))
            self._reserved_calls += 1
            self._in_flight_tokens += estimated_tokens

    def release(self, estimated_tokens: int) -> None:
        """Drop the estimate of a reserved call that failed without a usage."""
        with self._lock:
            self._in_flight_tokens = max(0, self._in_flight_tokens - estimated_tokens)

    def record(self, model: str, usage: Usage, estimated_tokens: int = 0) -> None:
        """Add what a finished call to `model` cost, replacing its reserved estimate."""
        with self._lock:
            self._in_flight_tokens = max(0, self._in_flight_tokens - estimated_tokens)
            self._usage = self._usage + usage
            self._by_model[model] = self._by_model.get(model, Usage()) + usage

    def by_model(self) -> dict[str, Usage]:
        """Spend so far, per model spec."""
        with self._lock:
            return dict(self._by_model)

    @property
    def stopped_by(self) -> str | None:
        """The limit that refused a call, once one has."""
        with self._lock:
            return self._stopped

    def describe_limit(self, limit: str) -> str:
        """A message naming the limit reached and how to raise it."""
        value = getattr(self.budget, limit)
        flag = CLI_FLAGS.get(limit)
        how = f"{flag} or Budget({limit}=...)" if flag else f"Budget({limit}=...)"
        return f"Budget reached: {limit} limit of {value} (raise {how} to let the run go further)."
