"""`fathom bench run`: every (task, size, seed, method) row, resumable, within one dollar budget.

The runner plans the rows, skips those `results.jsonl` already holds, hands the rest
to an executor (threads here, or Ray tasks) and appends each finished row. A row is
described by a small `RowSpec`; the task itself is generated where the row runs, so a
64 MB context never crosses to a Ray worker. `--max-usd` bounds the whole run: each
row starts with a share of what is left, and no row starts once it is spent.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from fathom.bench.methods import Limits, Outcome, get_method
from fathom.bench.models import ModelSource
from fathom.bench.results import ResultsFile, latest_rows, row_key
from fathom.bench.tasks import get_family, parse_size
from fathom.errors import ConfigError
from fathom.lm.base import Usage

T = TypeVar("T")

# Fields that differ between two runs of the same row (left out when rows are compared).
TIMING_FIELDS = ("seconds", "generate_seconds")
# A row is not started with less than this many dollars of its own: it could not finish.
MIN_ROW_USD = 1e-6
# Generators are CPU-bound (threads would not speed them up) and build shared caches on
# first use: one at a time per process.
_GENERATING = threading.Lock()


@dataclass(frozen=True)
class RowSpec:
    """One row to run: small and picklable (the task is generated where it runs)."""

    family: str
    size: int
    seed: int
    method: str
    models: ModelSource
    limits: Limits = field(default_factory=Limits)

    @property
    def key(self) -> str:
        """The row's identity in results.jsonl."""
        return row_key({"task": self.family, "size": self.size, "seed": self.seed,
                        "method": self.method, "model": self.models.name,
                        "sub_model": self.models.sub_name})

    @property
    def trace(self) -> str:
        """The trace file of the row, relative to the output directory."""
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:8]
        model = re.sub(r"[^A-Za-z0-9._-]+", "_", self.models.name)[-40:]
        return f"traces/{self.family}-{self.size}-s{self.seed}-{self.method}-{model}-{digest}.jsonl"


@dataclass(frozen=True)
class Plan:
    """The grid of a run: families x sizes x seeds x methods, for one pair of models."""

    families: tuple[str, ...]
    sizes: tuple[int, ...]
    seeds: int
    methods: tuple[str, ...]
    models: ModelSource
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def parse(cls, tasks: str, sizes: str, seeds: int, methods: str, models: ModelSource,
              limits: Limits | None = None) -> Plan:
        """A plan from the CLI's comma lists; ConfigError naming the valid values."""
        names = _names(tasks, "--tasks")
        for name in names:
            get_family(name)
        chosen = _names(methods, "--methods")
        for name in chosen:
            get_method(name)
        if seeds < 1:
            raise ConfigError(f"--seeds {seeds} is invalid: pass how many seeds, 1 or more.")
        return cls(tuple(n.lower() for n in names),
                   tuple(parse_size(s) for s in _names(sizes, "--sizes")), seeds,
                   tuple(m.lower() for m in chosen), models, limits or Limits())

    def rows(self) -> list[RowSpec]:
        """Every row, smaller sizes first, so early results cover every family and method."""
        return [
            RowSpec(family, size, seed, method, self.models, self.limits)
            for size, family, seed, method in itertools.product(
                self.sizes, self.families, range(self.seeds), self.methods)
        ]


def _names(text: str, option: str) -> list[str]:
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise ConfigError(f"{option} is empty: pass a comma-separated list.")
    return names


def run_row(spec: RowSpec, trace: Path, stop: threading.Event | None = None) -> dict[str, Any]:
    """Generate the row's task, answer it with its method, score it: the row of results.jsonl.

    Errors the user must fix (a bad model spec, a missing key) are raised; a model or
    sandbox failing during the row is the row's outcome (stop_reason "error"). Setting
    `stop` cancels the row (CancelledError), its sandbox and model calls cleaned up.
    """
    family = get_family(spec.family)
    started = time.monotonic()
    with _GENERATING:
        task = family.generate(spec.size, spec.seed)
    generated = time.monotonic() - started
    root, sub = spec.models.build(spec.family, spec.seed)
    trace.parent.mkdir(parents=True, exist_ok=True)
    outcome: Outcome = asyncio.run(
        _cancelled_by(stop, get_method(spec.method).run(task, root, sub, spec.limits, trace))
    )
    notes = dict(outcome.notes)
    try:
        score = float(family.score(task, outcome.answer))
    except Exception as exc:  # a scorer that cannot read an answer scores it 0, and says why
        score, notes["score_error"] = 0.0, f"{type(exc).__name__}: {exc}"
    usage: Usage = outcome.usage
    return {
        "task": spec.family, "variant": task.variant, "size": spec.size, "seed": spec.seed,
        "method": spec.method, "model": spec.models.name, "sub_model": spec.models.sub_name,
        "score": score, "expected": task.expected, "answer": outcome.answer,
        "prompt_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
        "calls": usage.calls, "usd": round(usage.usd, 8), "seconds": round(outcome.seconds, 3),
        "generate_seconds": round(generated, 3), "iterations": outcome.iterations,
        "stop_reason": outcome.stop_reason, "error": outcome.error, "notes": notes,
        "trace": spec.trace, "query": task.query,
    }


async def _cancelled_by(stop: threading.Event | None, work: Coroutine[Any, Any, T]) -> T:
    """Await `work`, cancelling it once `stop` is set (checked five times a second)."""
    task = asyncio.ensure_future(work)
    while stop is not None and not task.done():
        if stop.is_set():
            task.cancel()
        await asyncio.wait({task}, timeout=0.2)
    return await task


@dataclass
class RunState:
    """How far a run has got; passed to the progress callback after every row."""

    total: int
    skipped: int
    done: int = 0
    usd: float = 0.0
    not_started: int = 0  # rows left out once --max-usd was spent
    rows: list[dict[str, Any]] = field(default_factory=list)


RowCallback = Callable[[dict[str, Any], RunState], None]


class Executor:
    """Runs rows and yields each finished row; pulls the next row only when a slot is free."""

    def map(self, rows: Iterator[RowSpec], out_dir: Path, concurrency: int
            ) -> Iterator[dict[str, Any]]:
        """Rows' results in the order they finish."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor started."""


def run(plan: Plan, out_dir: Path, executor: Executor, *, concurrency: int = 1,
        max_usd: float | None = None, retry_errors: bool = False,
        on_row: RowCallback | None = None, on_start: Callable[[RunState], None] | None = None,
        ) -> RunState:
    """Run the plan's rows that `out_dir/results.jsonl` lacks; return what happened."""
    if concurrency < 1:
        raise ConfigError(f"--concurrency {concurrency} is invalid: pass 1 or more.")
    if max_usd is not None and max_usd <= 0:
        raise ConfigError(f"--max-usd {max_usd} is invalid: pass a positive amount.")
    results = ResultsFile(out_dir)
    done = latest_rows(results.path)
    rows = plan.rows()
    todo = [r for r in rows if r.key not in done
            or (retry_errors and done[r.key].get("stop_reason") == "error")]
    state = RunState(total=len(rows), skipped=len(rows) - len(todo))
    if on_start is not None:
        on_start(state)
    allot = _Allotment(max_usd, concurrency)
    try:
        for row in executor.map(allot.rows(todo), out_dir, concurrency):
            allot.settle(row)
            results.append(row)
            state.done += 1
            state.usd += float(row.get("usd") or 0.0)
            state.rows.append(row)
            if on_row is not None:
                on_row(row, state)
    finally:
        executor.close()
    state.not_started = len(todo) - state.done
    return state


class _Allotment:
    """Shares --max-usd among rows: a row starts with its share of what no row has claimed,
    and only while that share covers what such rows (same family, size, method) have cost."""

    def __init__(self, max_usd: float | None, concurrency: int) -> None:
        self.max_usd = max_usd
        self.concurrency = concurrency
        self.spent = 0.0
        self.claims: dict[str, float] = {}
        self.costs: dict[tuple[str, int, str], list[float]] = {}

    def rows(self, todo: list[RowSpec]) -> Iterator[RowSpec]:
        """The rows to start, each with its dollar limit; stops when the budget is spent."""
        for spec in todo:
            if self.max_usd is None:
                yield spec
                continue
            free = self.max_usd - self.spent - sum(self.claims.values())
            share = free / max(1, self.concurrency - len(self.claims))
            seen = self.costs.get((spec.family, spec.size, spec.method))
            # Fathom's budget refuses a call only once spent, so a row started with less than
            # its likely cost would overshoot: stop here instead.
            if share < MIN_ROW_USD or (seen and share < sum(seen) / len(seen)):
                return
            self.claims[spec.key] = share
            yield replace(spec, limits=replace(spec.limits, usd=share))

    def settle(self, row: dict[str, Any]) -> None:
        """A row finished: its claim becomes what it spent."""
        self.claims.pop(row_key(row), None)
        usd = float(row.get("usd") or 0.0)
        self.spent += usd
        kind = (str(row["task"]), int(row["size"]), str(row["method"]))
        self.costs.setdefault(kind, []).append(usd)
