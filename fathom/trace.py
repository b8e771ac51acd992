"""Typed trace events, the JSONL writer that records them and the reader that loads them.

One JSON object per line, `"v": 1`. Every event has `type`, `run_id`, `depth`
and `t` (seconds since the root run started, monotonic). Child RLMs write to the
same trace with their own `run_id`, `parent_run_id` in their `run_start`, and
`depth + 1`. Lines are flushed as written so a trace can be read while a run
is still going.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

from fathom.errors import ConfigError, TraceError

TRACE_VERSION = 1
logger = logging.getLogger("fathom")


@dataclass(frozen=True)
class Event:
    """Fields every event carries."""

    type: ClassVar[str] = "event"
    run_id: str
    depth: int
    t: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with `v` and `type` first."""
        return {"v": TRACE_VERSION, "type": self.type, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class RunStart(Event):
    """A run (root or child) began."""

    type: ClassVar[str] = "run_start"
    query: str = ""
    context: dict[str, Any] = field(default_factory=dict)  # metadata, never the content
    model: str = ""
    sub_model: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    isolation: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None
    started_at: float = 0.0  # wall clock, seconds since the epoch


@dataclass(frozen=True)
class IterationEvent(Event):
    """A root iteration began; `prompt_chars` is the size of the history sent."""

    type: ClassVar[str] = "iteration"
    iteration: int = 0
    prompt_chars: int = 0
    compacted: bool = False


@dataclass(frozen=True)
class LMCall(Event):
    """One model call. `prompt` is the last user message (root) or the sub-call prompt."""

    type: ClassVar[str] = "lm_call"
    role: str = "root"  # "root" | "sub"
    model: str = ""
    iteration: int = 0
    prompt: str = ""
    response: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    usd: float = 0.0
    cached: bool = False
    error: str | None = None
    call_id: str = ""
    batch_id: str | None = None  # shared by the calls of one llm_query_batched
    last_chance: bool = False  # the root's one answer-now call at max_iterations
    refused: bool = False  # the budget refused or cut off the call (`error` says which limit)


@dataclass(frozen=True)
class LMCallStart(Event):
    """A model call began; the `lm_call` with the same `call_id` ends it (in flight until then)."""

    type: ClassVar[str] = "lm_call_start"
    role: str = "root"
    model: str = ""
    iteration: int = 0
    prompt: str = ""
    call_id: str = ""
    batch_id: str | None = None
    last_chance: bool = False


@dataclass(frozen=True)
class ExecEvent(Event):
    """One code block ran in the sandbox."""

    type: ClassVar[str] = "exec"
    iteration: int = 0
    code: str = ""
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    seconds: float = 0.0
    notice: str | None = None


@dataclass(frozen=True)
class SubRLMStart(Event):
    """A child RLM was started by rlm_query; its own events carry `child_run_id`."""

    type: ClassVar[str] = "subrlm_start"
    child_run_id: str = ""
    prompt: str = ""
    iteration: int = 0
    batch_id: str | None = None


@dataclass(frozen=True)
class SubRLMEnd(Event):
    """A child RLM finished."""

    type: ClassVar[str] = "subrlm_end"
    child_run_id: str = ""
    answer: str = ""
    stop_reason: str = ""
    error: str | None = None


@dataclass(frozen=True)
class FinalEvent(Event):
    """The run has its answer. `source`: "code", "text" or "forced"."""

    type: ClassVar[str] = "final"
    answer: str = ""
    source: str = "code"
    iteration: int = 0


@dataclass(frozen=True)
class RunEnd(Event):
    """A run ended; `usage` maps model -> Usage.to_dict()."""

    type: ClassVar[str] = "run_end"
    answer: str = ""
    stop_reason: str = ""
    iterations: int = 0
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RunStart, IterationEvent, LMCallStart, LMCall, ExecEvent, SubRLMStart, SubRLMEnd,
        FinalEvent, RunEnd,
    )
}

EventSink = Callable[[Event], None]


class TraceWriter:
    """Appends events to a JSONL file, one flushed line each; thread-safe.

    A path is written by one writer at a time in this process: a second writer for the
    same file is refused with ConfigError until the first is closed.
    """

    _open: ClassVar[set[Path]] = set()
    _open_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._key = self.path.resolve()
        with self._open_lock:
            if self._key in self._open:
                raise ConfigError(
                    f"Another run is writing the trace {self.path}; give each concurrent run "
                    "its own trace path (e.g. RLM(trace=f'run-{n}.jsonl'))."
                )
            self._open.add(self._key)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Lone surrogates (from surrogateescape-decoded bytes) are written as \\udcff
            # escapes, which JSON reads back as the same character, instead of failing the run.
            self._file: IO[str] | None = self.path.open(
                "w", encoding="utf-8", errors="backslashreplace"
            )
        except OSError as exc:
            self._release()
            raise ConfigError(
                f"Cannot write the trace {self.path}: {exc.strerror or exc}; pass a writable path."
            ) from exc
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), ensure_ascii=False, default=str)
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        """Close the file; later events are dropped."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
                self._release()

    def _release(self) -> None:
        with self._open_lock:
            self._open.discard(self._key)


class EventSinks:
    """Delivers events to every sink; a sink that raises is reported once and dropped,
    so a buggy callback never ends a run or cuts its trace short."""

    def __init__(self, sinks: list[EventSink]) -> None:
        self._sinks = sinks
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        for sink in list(self._sinks):
            try:
                sink(event)
            except Exception as exc:
                with self._lock:
                    if sink in self._sinks:
                        self._sinks.remove(sink)
                logger.warning("on_event handler %r raised %s: %s; it gets no more events",
                               sink, type(exc).__name__, exc)


class Clock:
    """Monotonic seconds since a run tree began; shared by a root run and its children."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self._origin = time.monotonic()

    def now(self) -> float:
        """Seconds since the root run started."""
        return round(time.monotonic() - self._origin, 6)


def event_from_dict(data: dict[str, Any]) -> Event:
    """Build the typed event for one decoded JSON object; unknown fields are ignored."""
    cls = EVENT_TYPES.get(str(data.get("type")))
    if cls is None:
        raise TraceError(f"Unknown trace event type {data.get('type')!r}.")
    names = {f.name for f in dataclasses.fields(cls)}
    missing = [k for k in ("run_id", "depth", "t") if k not in data]
    if missing:
        raise TraceError(
            f"Trace event {data.get('type')!r} lacks {', '.join(missing)}; is this a fathom trace?"
        )
    return cls(**{k: v for k, v in data.items() if k in names})


def iter_events(path: str | Path, *, partial: bool = True) -> Iterator[Event]:
    """Yield typed events from a JSONL trace.

    With `partial` (the default) a last line cut off mid-write (a run still in
    progress) is skipped; any other malformed line raises TraceError with its number.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TraceError(f"Cannot read trace {path}: {exc.strerror or exc}.") from exc
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path} is not UTF-8 text; is this a fathom trace?") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            if partial and number == len(lines):
                return
            raise TraceError(
                f"{path}:{number} is not valid JSON ({exc.msg}); is this a fathom trace?"
            ) from exc
        if not isinstance(data, dict):
            raise TraceError(f"{path}:{number} is not a JSON object; is this a fathom trace?")
        try:
            event = event_from_dict(data)
        except TraceError as exc:
            raise TraceError(f"{path}:{number}: {exc}") from None
        yield event


def read(path: str | Path) -> list[Event]:
    """Load a JSONL trace as a list of typed events."""
    return list(iter_events(path))
