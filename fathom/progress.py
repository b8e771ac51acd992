"""Live progress of a run on stderr, driven only by trace events (an `on_event` sink).

On a terminal it draws a rich panel (iteration and depth, the code being run,
sub-calls in flight / done / failed, tokens, dollars, elapsed time) and a summary
table at the end; elsewhere (a pipe, a CI log) it writes plain lines with no
escape codes. Events arrive from sub-call threads, so every update takes a lock.

Model and sandbox text (code, output, errors, queries, answers) is shown as text:
passed through `safe_text` and never parsed as rich markup. Drawing is best effort:
a display that breaks says so once and stops, and the run and its answer go on.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TextIO

from fathom.answers import Citation
from fathom.protocol import code_blocks
from fathom.terminal import is_terminal, safe_text
from fathom.trace import (
    AnswerRefused,
    CitationEvent,
    ConcurrencyEvent,
    Event,
    ExecEvent,
    FinalEvent,
    IterationEvent,
    LMCall,
    LMCallRetry,
    LMCallStart,
    RunEnd,
    RunStart,
    SubRLMEnd,
    SubRLMStart,
)

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
    from rich.live import Live

    from fathom.lm.base import Usage
    from fathom.result import Result

Mode = Literal["auto", "live", "plain", "quiet"]
CODE_LINES = 8  # lines of the running code shown live


def _tokens(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else str(n)


def _usd(x: float) -> str:
    return f"${x:.4f}" if x < 1 else f"${x:.2f}"


def _attempt(attempt: int, attempts: int) -> str:
    """"2/5", or "2" for a throttled call, which retries as long as the time budget allows."""
    return f"{attempt}/{attempts}" if attempts else f"{attempt}, throttled"


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shorten_code(code: str, lines: int = CODE_LINES, width: int = 100) -> str:
    """The first `lines` lines of `code`, each cut to `width`, saying how many were left out."""
    rows = code.strip("\n").splitlines() or [""]
    shown = [r if len(r) <= width else r[: width - 1] + "…" for r in rows[:lines]]
    if len(rows) > lines:
        shown.append(f"# … {len(rows) - lines} more lines")
    return "\n".join(shown)


@dataclass
class CallCounts:
    """Model calls, counted by the one rule the CLI and the viewer (viewer.js `addCall`) share.

    Every `lm_call` event is a call, whether it reached a model or not; of them, `refused`
    ones the budget refused or cut off, and `failed` ones ended in another error. (A
    Result's usage counts only the calls that reached a model.)
    """

    calls: int = 0
    failed: int = 0
    refused: int = 0

    def add(self, call: LMCall) -> None:
        """Count one finished call."""
        self.calls += 1
        if call.refused:
            self.refused += 1
        elif call.error:
            self.failed += 1

    def __str__(self) -> str:
        return f"{self.calls} calls ({self.failed} failed, {self.refused} refused)"


def call_counts(events: Iterable[Event]) -> CallCounts:
    """The calls of a trace's events, by the rule of `CallCounts`."""
    counts = CallCounts()
    for event in events:
        if isinstance(event, LMCall):
            counts.add(event)
    return counts


@dataclass
class ProgressState:
    """Everything the display shows, updated from events."""

    started: float = field(default_factory=time.monotonic)
    model: str = ""
    max_iterations: int | None = None
    iteration: int = 0
    depth: int = 0
    max_depth: int | None = None  # the run's limit (config), not the deepest seen
    code: str = ""
    code_depth: int = 0
    root_calls: int = 0
    sub_done: int = 0
    sub_failed: int = 0
    sub_started: set[str] = field(default_factory=set)
    batches: dict[str, list[int]] = field(default_factory=dict)  # open batch -> [size, done]
    children_running: int = 0
    children_done: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    last_error: str = ""
    pending: dict[str, list[str]] = field(default_factory=dict)  # run_id -> blocks not yet run
    waiting_depth: int | None = None  # a root call is in flight at this depth
    waiting_model: str = ""  # ...on this model
    waiting_since: float = 0.0  # time.monotonic() when it started
    waiting_attempt: tuple[int, int] | None = None  # (attempt, attempts) once it is retried
    counts: dict[str, CallCounts] = field(default_factory=dict)  # model -> its calls
    limits: dict[str, int] = field(default_factory=dict)  # endpoint -> its concurrency limit
    finished: bool = False

    def waiting_text(self) -> str:
        """What the root call in flight is waiting on: " for MODEL (42 s, attempt 2/5)"."""
        detail = f"{time.monotonic() - self.waiting_since:.0f} s"
        if self.waiting_attempt is not None:
            detail += f", attempt {_attempt(*self.waiting_attempt)}"
        if self.waiting_depth:
            detail += f", depth {self.waiting_depth}"
        return f" for {self.waiting_model} ({detail})"

    def batch_text(self) -> str:
        """The open batches' progress: "; batch 192/672 done" (empty with none open)."""
        if not self.batches:
            return ""
        size = sum(b[0] for b in self.batches.values())
        done = sum(b[1] for b in self.batches.values())
        return f"; batch {done:,}/{size:,} done"

    @property
    def sub_in_flight(self) -> int:
        """Sub-calls started (lm_call_start) and not yet finished."""
        return len(self.sub_started)

    @property
    def elapsed(self) -> float:
        """Seconds since the display started."""
        return time.monotonic() - self.started


class Progress:
    """An `on_event` sink that shows a run's progress on stderr; use as a context manager."""

    def __init__(self, mode: Mode = "auto", stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "live" if is_terminal(self.stream) else "plain"
        self.mode = mode
        self.state = ProgressState()
        self._lock = threading.Lock()
        self._console: Console | None = None
        self._live: Live | None = None
        self.failure: str | None = None  # why the display broke, if it did
        self._failure_told = False

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Begin drawing (live mode starts rich's refresh thread)."""
        if self.mode != "live" or self._live is not None:
            return
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=self.stream, force_terminal=True, highlight=False)
        self._live = Live(
            _Renderable(self), console=self._console, refresh_per_second=8, transient=True,
            redirect_stdout=False, redirect_stderr=False,
        )
        self._live.start()

    def stop(self) -> None:
        """Stop drawing; the live panel is cleared from the terminal. Never raises."""
        live, self._live = self._live, None
        if live is None:
            return
        try:
            live.stop()
        except Exception as exc:
            self._broke(exc)
        self._tell_failure()

    @contextmanager
    def running(self) -> Iterator[Progress]:
        """`with progress.running():` draws for the duration of the block."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    # --- the sink ----------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """Record one event (thread-safe); plain mode prints a line for the notable ones."""
        if self.mode == "quiet":
            return
        with self._lock:
            line = self._apply(event)
            if line is not None and self.mode == "plain":
                self.stream.write(f"[fathom {self.state.elapsed:6.1f}s] {safe_text(line)}\n")
                self.stream.flush()

    def _apply(self, e: Event) -> str | None:
        s = self.state
        s.depth = e.depth
        pad = "  " * e.depth
        if isinstance(e, RunStart):
            if e.depth == 0:
                s.model = e.model
                s.max_iterations = e.config.get("max_iterations")
                s.max_depth = e.config.get("max_depth")
                kind = e.context.get("kind", "?")
                chars = e.context.get("total_chars", 0)
                return f"run started: model {e.model}, context {kind} of {chars:,} chars"
            return f"{pad}child RLM started (depth {e.depth}): {_short(e.query, 80)}"
        if isinstance(e, IterationEvent):
            if e.depth == 0:
                s.iteration = e.iteration
            return f"{pad}iteration {e.iteration}" + (" (history compacted)" if e.compacted else "")
        if isinstance(e, LMCall):
            s.prompt_tokens += e.prompt_tokens
            s.completion_tokens += e.completion_tokens
            s.usd += e.usd
            s.counts.setdefault(e.model, CallCounts()).add(e)
            if e.role == "root":
                s.root_calls += 1
                s.waiting_depth = None
                blocks = code_blocks(e.response)
                s.pending[e.run_id] = list(blocks)
                if blocks:
                    s.code, s.code_depth = blocks[0], e.depth
                if e.error:
                    s.last_error = e.error
                    return f"{pad}model call failed: {_short(e.error, 120)}"
                if e.last_chance:
                    return (f"{pad}model gave its last answer ({e.completion_tokens} tok, "
                            f"{e.seconds:.1f}s)")
                return (f"{pad}model replied ({e.completion_tokens} tok, {e.seconds:.1f}s)"
                        + (f", running {len(blocks)} code block(s)" if blocks else ""))
            s.sub_started.discard(e.call_id)
            s.sub_done += 1
            batch = s.batches.get(e.batch_id or "")
            if batch is not None:
                batch[1] += 1
                if batch[1] >= batch[0]:
                    del s.batches[e.batch_id or ""]
            if e.error:
                s.sub_failed += 1
                s.last_error = e.error
            return None  # thousands of sub-calls: summarised at the exec that made them
        if isinstance(e, LMCallStart):
            if e.role == "sub":
                s.sub_started.add(e.call_id)
                if e.batch_id and e.batch_size:
                    s.batches.setdefault(e.batch_id, [e.batch_size, 0])
            else:
                s.waiting_depth, s.waiting_model = e.depth, e.model
                s.waiting_since, s.waiting_attempt = time.monotonic(), None
            return None
        if isinstance(e, LMCallRetry):
            if e.role == "root":
                s.waiting_attempt = (e.attempt, e.attempts)
            return (f"{pad}{e.role} call to {e.model} failed ({_short(e.reason, 100)}); "
                    f"attempt {_attempt(e.attempt, e.attempts)} in {e.delay:.1f}s")
        if isinstance(e, ConcurrencyEvent):
            s.limits[e.endpoint] = e.limit
            if e.reason in ("start", "grow", "shared"):
                return None  # the panel shows the limit; lines tell only the cuts
            return (f"{pad}{e.endpoint}: concurrency {e.previous} -> {e.limit} ({e.reason}, "
                    f"{e.in_flight} in flight)")
        if isinstance(e, ExecEvent):
            queue = s.pending.get(e.run_id)
            if queue:
                queue.pop(0)
                if queue:  # the reply's next block runs now
                    s.code, s.code_depth = queue[0], e.depth
            status = "error" if e.error else "ok"
            if e.error:
                # The traceback's last line; split on "\n" only, so a lone "\r" is shown, not
                # taken for a line end.
                s.last_error = e.error.strip().split("\n")[-1] if e.error.strip() else e.error
            extra = f" ({_short(s.last_error, 100)})" if e.error else ""
            return (f"{pad}code ran in {e.seconds:.2f}s: {status}{extra}; sub-calls so far "
                    f"{s.sub_done} done, {s.sub_failed} failed")
        if isinstance(e, SubRLMStart):
            s.children_running += 1
            return None  # the child's own run_start says it
        if isinstance(e, SubRLMEnd):
            s.children_running = max(0, s.children_running - 1)
            s.children_done += 1
            return None
        if isinstance(e, FinalEvent):
            return f"{pad}final answer ({e.source})" if e.depth == 0 else None
        if isinstance(e, AnswerRefused):
            first = _short(e.errors[0], 80) if e.errors else ""
            return f"{pad}answer refused by the schema ({len(e.errors)} error(s)): {first}"
        if isinstance(e, CitationEvent):
            where = Citation(e.source, e.start, e.end, e.line_start, e.line_end, e.text).location()
            return f"{pad}cited {where}: {_short(e.text, 60)}"
        if isinstance(e, RunEnd):
            if e.depth == 0:
                s.finished = True
                return (f"run ended: {e.stop_reason} after {e.iterations} iteration(s), "
                        f"{_tokens(s.prompt_tokens + s.completion_tokens)} tok, {_usd(s.usd)}")
            return f"{pad}child RLM ended: {e.stop_reason}, {_short(e.answer, 80)}"
        return None

    # --- drawing --------------------------------------------------------------------
    def render(self) -> RenderableType:
        """The live panel for the current state."""
        from rich.console import Group
        from rich.panel import Panel
        from rich.syntax import Syntax
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            s = self.state
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold")
            grid.add_column()
            limit = f" / {s.max_iterations}" if s.max_iterations else ""
            depth = f"depth {s.depth}" + (f" (max {s.max_depth})" if s.max_depth is not None
                                          else "")
            grid.add_row("iteration", Text(f"{s.iteration}{limit}   {depth}"))
            if s.waiting_depth is not None:
                grid.add_row("model", Text.assemble(("waiting", "yellow"),
                                                    safe_text(s.waiting_text())))
            flight = f"{s.sub_in_flight} in flight, " if s.sub_in_flight else ""
            failed = (f"{s.sub_failed} failed", "red" if s.sub_failed else "")
            grid.add_row("sub-calls", Text.assemble(f"{flight}{s.sub_done} done, ", failed,
                                                    s.batch_text()))
            if s.limits:
                grid.add_row("concurrency", Text(safe_text(", ".join(
                    f"{limit}" + (f" ({_short(endpoint, 40)})" if len(s.limits) > 1 else "")
                    for endpoint, limit in s.limits.items()))))
            if s.children_running or s.children_done:
                grid.add_row("child RLMs",
                              Text(f"{s.children_running} running, {s.children_done} done"))
            tokens = f"{_tokens(s.prompt_tokens)} in, {_tokens(s.completion_tokens)} out"
            grid.add_row("tokens", Text(tokens))
            grid.add_row("cost", Text(_usd(s.usd)))
            grid.add_row("elapsed", Text(f"{s.elapsed:.1f}s"))
            if s.last_error:
                grid.add_row("last error", Text(safe_text(_short(s.last_error, 90)), style="red"))
            parts: list[Any] = [grid]
            if s.code:
                title = "code" + (f" (depth {s.code_depth})" if s.code_depth else "")
                code = Syntax(safe_text(shorten_code(s.code)), "python", theme="ansi_dark",
                              word_wrap=False)
                parts.append(Panel(code, title=title, title_align="left", border_style="dim"))
            heading = Text(safe_text(f"fathom · {s.model or 'starting'}"))
        return Panel(Group(*parts), title=heading, title_align="left", border_style="blue")

    def summary(self, result: Result) -> None:
        """Write the end-of-run table (per model usage, totals, stop reason) to stderr.

        Never raises: the answer is printed after it, and a broken display must not lose it.
        """
        if self.mode == "quiet":
            return
        try:
            if self.mode == "plain":
                self._plain_summary(result)
            else:
                self._table_summary(result)
        except Exception as exc:
            self._broke(exc)
        self._tell_failure()

    def _call_rows(self, result: Result) -> tuple[list[tuple[str, CallCounts, Usage]], CallCounts]:
        """Per model: its calls (`CallCounts`, from the events seen) and usage; and the total.

        Without events (a Progress that was not the run's on_event) the usage's count stands in.
        """
        from fathom.lm.base import Usage

        seen = self.state.counts
        rows = []
        for model in sorted(set(result.usage) | set(seen)):
            usage = result.usage.get(model, Usage())
            rows.append((model, seen.get(model) or CallCounts(calls=usage.calls), usage))
        total = CallCounts()
        for _, counts, _ in rows:
            total.calls += counts.calls
            total.failed += counts.failed
            total.refused += counts.refused
        return rows, total

    def _plain_summary(self, result: Result) -> None:
        total = result.total_usage
        rows, calls = self._call_rows(result)
        lines = [f"{result.stop_reason} after {result.iterations} iteration(s) in "
                 f"{result.seconds:.1f}s"]
        lines += [f"  {model}: {counts}, {u.prompt_tokens} in ({u.cached_tokens} cached) / "
                  f"{u.completion_tokens} out tok, {_usd(u.usd)}" for model, counts, u in rows]
        lines.append(f"  total: {calls}, {total.prompt_tokens} in ({total.cached_tokens} cached)"
                     f" / {total.completion_tokens} out tok, {_usd(total.usd)}")
        if result.trace_path:
            lines.append(f"trace: {result.trace_path} (fathom view {result.trace_path})")
        self.stream.write("".join(f"[fathom] {safe_text(line)}\n" for line in lines))
        self.stream.flush()

    def _table_summary(self, result: Result) -> None:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        total = result.total_usage
        rows, calls = self._call_rows(result)
        console = self._console or Console(file=self.stream, force_terminal=True, highlight=False)
        table = Table(title=f"{result.stop_reason} after {result.iterations} iteration(s) in "
                            f"{result.seconds:.1f}s", title_justify="left", show_footer=True)
        table.add_column("model", footer="total")
        table.add_column("calls", justify="right", footer=str(calls.calls))
        table.add_column("failed", justify="right", footer=str(calls.failed))
        table.add_column("refused", justify="right", footer=str(calls.refused))
        table.add_column("tokens in", justify="right", footer=f"{total.prompt_tokens:,}")
        # Of the tokens in, those read from the provider's prompt cache (billed cheaper); the
        # column is left out when no provider reported any, so model names keep their room.
        show_cached = total.cached_tokens > 0
        if show_cached:
            table.add_column("cached", justify="right", footer=f"{total.cached_tokens:,}")
        table.add_column("tokens out", justify="right", footer=f"{total.completion_tokens:,}")
        table.add_column("cost", justify="right", footer=_usd(total.usd))
        for model, counts, u in rows:
            cells: list[Text | str] = [Text(safe_text(model)), str(counts.calls),
                                       str(counts.failed), str(counts.refused),
                                       f"{u.prompt_tokens:,}"]
            if show_cached:
                cells.append(f"{u.cached_tokens:,}")
            table.add_row(*cells, f"{u.completion_tokens:,}", _usd(u.usd))
        console.print(table)
        if result.trace_path:
            path = safe_text(result.trace_path)
            console.print(Text.assemble(f"trace: {path}  (open it with ",
                                        (f"fathom view {path} --open", "bold"), ")"))

    # --- a broken display -------------------------------------------------------------
    def _broke(self, exc: Exception) -> None:
        """Remember the first display failure; it is told once the display is down."""
        if self.failure is None:
            self.failure = f"{type(exc).__name__}: {exc}"

    def _tell_failure(self) -> None:
        if self.failure is None or self._failure_told:
            return
        self._failure_told = True
        # When the stream itself is what broke there is nowhere left to say so.
        with suppress(Exception):
            self.stream.write(safe_text(f"fathom: the progress display failed ({self.failure}); "
                                        "the run went on without it") + "\n")
            self.stream.flush()


class _Renderable:
    """Lets rich's refresh thread ask the Progress for a fresh panel each frame.

    The panel is rendered here, inside a guard: a frame that fails becomes one line
    saying so, instead of an exception in rich's refresh thread or in `Live.stop`.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        try:
            lines = console.render_lines(self.progress.render(), options, pad=False,
                                         new_lines=True)
        except Exception as exc:
            self.progress._broke(exc)
            yield Text(safe_text(f"fathom: the progress display failed ({self.progress.failure})"))
            return
        for line in lines:
            yield from line
