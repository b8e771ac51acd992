"""Typed trace events, the JSONL writer that records them and the reader that loads them.

One JSON object per line, `"v": 1`. Every event has `type`, `run_id`, `depth`
and `t` (seconds since the root run started, monotonic). Child RLMs write to the
same trace with their own `run_id`, `parent_run_id` in their `run_start`, and
`depth + 1`. Lines are flushed as written so a trace can be read while a run
is still going.

REPL code decides how long prompts, outputs and answers are, so the writer bounds
what it records: a string longer than FIELD_MAX_CHARS keeps its head and tail (the
event's `cut` gives its length and the sha256 of the whole, which replay matches
on), and past the trace's size limit later events are dropped after one
`trace_truncated` note. Lines end in "\n" alone: U+2028, U+2029 and U+0085 are
written as escapes, and the reader splits on "\n" only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
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

# A longer string in an event is cut to its head and tail in the trace file.
FIELD_MAX_CHARS = 64 * 1024
# The default size limit of one trace file (RLM(trace_max_mb=...)).
MAX_TRACE_BYTES = 1024 * 2**20
# Characters a line of JSON may hold but other line readers split on (JavaScript, splitlines).
_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


@dataclass(frozen=True)
class Event:
    """Fields every event carries."""

    type: ClassVar[str] = "event"
    run_id: str
    depth: int
    t: float
    # Fields the trace cut to FIELD_MAX_CHARS: name -> {"chars": length, "sha256": of the whole}.
    cut: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with `v` and `type` first (and `cut` last, when a field was cut)."""
        data = {"v": TRACE_VERSION, "type": self.type, **dataclasses.asdict(self)}
        cut = data.pop("cut")
        if cut:
            data["cut"] = cut
        return data

    def sha256_of(self, name: str) -> str:
        """The sha256 of string field `name` as it was before the trace cut it, if it did."""
        recorded = self.cut.get(name) if isinstance(self.cut, dict) else None
        if isinstance(recorded, dict) and isinstance(recorded.get("sha256"), str):
            return str(recorded["sha256"])
        return text_sha256(str(getattr(self, name)))


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
    schema: dict[str, Any] | None = None  # the JSON schema the answer must match (schema=)


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
    cached_tokens: int = 0  # prompt tokens the provider read from its prompt cache


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
    batch_size: int | None = None  # how many calls the batch of `batch_id` makes in all


@dataclass(frozen=True)
class LMCallRetry(Event):
    """An attempt of a model call failed (timeout, 5xx, ...); attempt `attempt` of `attempts`
    starts after `delay` seconds, within the same `call_id`."""

    type: ClassVar[str] = "lm_call_retry"
    role: str = "root"
    model: str = ""
    iteration: int = 0
    call_id: str = ""
    attempt: int = 2
    attempts: int = 1
    reason: str = ""
    delay: float = 0.0


@dataclass(frozen=True)
class ConcurrencyEvent(Event):
    """The concurrency limit of a model endpoint changed (fathom.limiter): `reason` is
    "start", "grow", "throttled", "timeout" or "shared" (a run joined the limiter other runs
    of its event loop use); `in_flight` counts its calls (of every run) at the time."""

    type: ClassVar[str] = "concurrency"
    endpoint: str = ""
    limit: int = 0
    previous: int = 0
    reason: str = ""
    in_flight: int = 0


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
class AnswerRefused(Event):
    """A FINAL did not match the run's schema (schema=): refused, `errors` shown to the model."""

    type: ClassVar[str] = "answer_refused"
    iteration: int = 0
    answer: str = ""
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CitationEvent(Event):
    """REPL code cited a span of its run's context (cite()); the run's next `exec` event is
    the block that did. `source` is None for a str context, else the item's index or key."""

    type: ClassVar[str] = "citation"
    iteration: int = 0
    source: str | int | None = None
    start: int = 0
    end: int = 0
    line_start: int = 0
    line_end: int = 0
    text: str = ""


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


@dataclass(frozen=True)
class TraceTruncated(Event):
    """The trace reached its size limit: later events were dropped (the root's `run_end`
    is still written). Stamped with the first dropped event's run, depth and time."""

    type: ClassVar[str] = "trace_truncated"
    max_bytes: int = 0
    dropped_type: str = ""  # the type of that first dropped event


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RunStart, IterationEvent, LMCallStart, LMCall, LMCallRetry, ExecEvent, SubRLMStart,
        SubRLMEnd, FinalEvent, RunEnd, TraceTruncated, ConcurrencyEvent, CitationEvent,
        AnswerRefused,
    )
}

EventSink = Callable[[Event], None]


class TraceWriter:
    """Appends events to a JSONL file, one flushed line each; thread-safe.

    Long strings are cut (see FIELD_MAX_CHARS). Once the file would pass `max_bytes`, one
    `trace_truncated` note is written and later events are dropped, all but the root run's
    `run_end`; so the file stays within `max_bytes` plus those two lines. A path is written
    by one writer at a time in this process: a second writer for the same file is refused
    with ConfigError until the first is closed. A write that fails (a full disk, EIO) is
    reported once as a warning and ends the trace, never the run: `error` then says why.
    """

    _open: ClassVar[set[Path]] = set()
    _open_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str | Path, *, max_bytes: int | None = MAX_TRACE_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.truncated = False
        self.error: str | None = None
        self._written = 0
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
            self._file: IO[bytes] | None = self.path.open("wb")
        except OSError as exc:
            self._release()
            raise ConfigError(
                f"Cannot write the trace {self.path}: {exc.strerror or exc}; pass a writable path."
            ) from exc
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = encode_line(bounded(event.to_dict()))
        with self._lock:
            if self._file is None:
                return
            if self.truncated or (
                self.max_bytes is not None and self._written + len(line) > self.max_bytes
            ):
                if not self.truncated:
                    self.truncated = True
                    note = TraceTruncated(run_id=event.run_id, depth=event.depth, t=event.t,
                                          max_bytes=self.max_bytes or 0, dropped_type=event.type)
                    self._write(encode_line(note.to_dict()))
                if not (isinstance(event, RunEnd) and event.depth == 0):
                    return
            self._write(line)

    def _write(self, line: bytes) -> None:
        assert self._file is not None
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as exc:
            self._stop(exc)
            return
        self._written += len(line)

    def close(self) -> None:
        """Close the file; later events are dropped."""
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as exc:
                    self._file = None
                    self._stop(exc)
                    return
                self._file = None
                self._release()

    def _stop(self, exc: OSError) -> None:
        """The trace cannot be written: say so once, and drop it (the run goes on)."""
        self.error = f"Cannot write the trace {self.path}: {exc.strerror or exc}"
        logger.warning("fathom: %s; the run goes on without a trace.", self.error)
        if self._file is not None:
            with contextlib.suppress(OSError):  # the buffer still holds what failed
                self._file.close()
            self._file = None
        self._release()

    def _release(self) -> None:
        with self._open_lock:
            self._open.discard(self._key)


def text_sha256(text: str) -> str:
    """The hex sha256 of `text` as UTF-8 (lone surrogates included)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def cut_text(text: str, limit: int = FIELD_MAX_CHARS) -> str:
    """`text` within `limit` characters: its head and tail around a note of what was cut."""
    if len(text) <= limit:
        return text
    note = f"\n... [{len(text):,} characters; the trace keeps the first and last ones] ...\n"
    half = max(limit - len(note), 0) // 2
    return f"{text[:half]}{note}{text[len(text) - half:]}"


def bounded(data: dict[str, Any], limit: int = FIELD_MAX_CHARS) -> dict[str, Any]:
    """An event's dict with every string longer than `limit` cut (nested ones too); each
    cut top-level field is recorded in `cut` with its length and the sha256 of the whole."""
    cut = dict(data.get("cut") or {})
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, str) and len(value) > limit:
            cut[key] = {"chars": len(value), "sha256": text_sha256(value)}
            out[key] = cut_text(value, limit)
        else:
            out[key] = _bounded_value(value, limit)
    if cut:
        out["cut"] = cut
    return out


def _bounded_value(value: Any, limit: int, depth: int = 0) -> Any:
    if isinstance(value, str):
        return cut_text(value, limit)
    if depth > 8:  # events hold shallow metadata; deeper values are left as they are
        return value
    if isinstance(value, dict):
        return {cut_text(str(k), limit): _bounded_value(v, limit, depth + 1)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_bounded_value(v, limit, depth + 1) for v in value]
    return value


def encode_line(data: dict[str, Any]) -> bytes:
    """One JSONL line: UTF-8 JSON, with characters other readers break lines on escaped."""
    text = json.dumps(data, ensure_ascii=False, default=str)
    for char, escape in _LINE_BREAKS.items():
        if char in text:
            text = text.replace(char, escape)
    # A lone surrogate (from surrogateescape-decoded bytes) is written as a \udcff escape,
    # which JSON reads back as the same character, instead of failing the run.
    return text.encode("utf-8", "backslashreplace") + b"\n"


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
    fields = {k: v for k, v in data.items() if k in names}
    cut = fields.get("cut")
    if cut is not None:
        fields["cut"] = (
            {str(k): v for k, v in cut.items() if isinstance(v, dict)} if isinstance(cut, dict)
            else {}
        )
    return cls(**fields)


def iter_events(path: str | Path, *, partial: bool = True) -> Iterator[Event]:
    """Yield typed events from a JSONL trace, read line by line ("\n" ends a line, nothing else).

    With `partial` (the default) a last line cut off mid-write (a run still in
    progress) is skipped; any other malformed line raises TraceError with its number.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise TraceError(f"Cannot read trace {path}: {exc.strerror or exc}.") from exc
    with handle:
        for number, raw, last in _numbered_lines(handle):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TraceError(f"{path}:{number} is not UTF-8 text; is this a fathom trace?"
                                 ) from exc
            try:
                data = json.loads(line)
            except (ValueError, RecursionError) as exc:
                if partial and last:
                    return
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
                raise TraceError(
                    f"{path}:{number} is not valid JSON ({why}); is this a fathom trace?"
                ) from exc
            if not isinstance(data, dict):
                raise TraceError(f"{path}:{number} is not a JSON object; is this a fathom trace?")
            try:
                event = event_from_dict(data)
            except TraceError as exc:
                raise TraceError(f"{path}:{number}: {exc}") from None
            yield event


def _numbered_lines(handle: IO[bytes]) -> Iterator[tuple[int, bytes, bool]]:
    """(number, line, whether it is the last) for each line of a binary file."""
    previous: bytes | None = None
    number = 0
    try:
        for number, line in enumerate(handle, 1):  # a binary file splits on b"\n" alone
            if previous is not None:
                yield number - 1, previous, False
            previous = line
    except OSError as exc:
        raise TraceError(f"Cannot read trace {handle.name}: {exc.strerror or exc}.") from exc
    if previous is not None:
        yield number, previous, True


def read(path: str | Path) -> list[Event]:
    """Load a JSONL trace as a list of typed events."""
    return list(iter_events(path))
