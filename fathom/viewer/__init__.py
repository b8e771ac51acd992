"""The trajectory viewer: one self-contained HTML file drawn from a JSONL trace.

The page embeds the trace's events as JSON plus inline CSS and JS (no network,
works from file://). The JS builds only the headers of the run tree up front and
each node's body on first expand, so traces of tens of thousands of events open
at once. A trace still being written renders what it holds so far.
"""

from __future__ import annotations

import html
import json
import time
import webbrowser
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from fathom.errors import TraceError
from fathom.trace import Event, event_from_dict, iter_events

# Longer strings are cut in the page (the trace keeps them) so a page stays loadable.
MAX_FIELD_CHARS = 200_000


def _asset(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("fathom")
    except Exception:  # not installed (running from a checkout): the page works all the same
        return "dev"


def _cap(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
        cut = len(value) - MAX_FIELD_CHARS
        marker = f"\n... [{cut} characters cut by the viewer] ...\n"
        return value[: MAX_FIELD_CHARS // 2] + marker + value[-MAX_FIELD_CHARS // 2 :]
    return value


def _script_json(data: Any) -> str:
    """JSON safe to place inside <script>: no `<`, `>` or `&` can end the element early, and
    no U+2028/U+2029 line separator (a line break to older JavaScript)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def load_events(trace_path: str | Path) -> list[dict[str, Any]]:
    """The trace's events as plain dicts (unreadable lines skipped: see `scan_trace`)."""
    return _page_events(scan_trace(Path(trace_path))[0])


def _page_events(events: list[Event]) -> list[dict[str, Any]]:
    return [{k: _cap(v) for k, v in event.to_dict().items()} for event in events]


def scan_trace(path: Path) -> tuple[list[Event], list[str]]:
    """The events of each readable line, and what was wrong with each other line.

    One bad line (a crash mid-write, a stray edit) leaves the rest of the run readable; a
    last line cut off mid-write (a run still going) is skipped silently. TraceError when
    nothing in the file is a fathom event: it is empty, or not a trace.
    """
    if not path.is_file():
        raise TraceError(f"Trace {path} does not exist; pass the file given to --trace / trace=.")
    events: list[Event] = []
    problems: list[str] = []
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"Cannot read trace {path}: {exc.strerror or exc}.") from exc
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line.decode("utf-8"))
            if not isinstance(data, dict):
                raise TraceError("not a JSON object")
            events.append(event_from_dict(data))
        except (ValueError, RecursionError, TraceError, TypeError) as exc:
            if number == len(lines):  # no newline after it: still being written
                continue
            problems.append(f"{path}:{number}: {_why(exc)}")
    if not events:
        shown = f" ({problems[0]})" if problems else ""
        raise TraceError(f"{path} holds no fathom events{shown}: it is empty or not a fathom "
                         "trace (the file given to --trace / trace=).")
    return events, problems


def _why(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg})"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, TypeError):
        return "an event lacking required fields"
    return str(exc) if isinstance(exc, TraceError) else type(exc).__name__


def read_trace(path: Path) -> list[Event]:
    """`fathom.trace.iter_events`, with a line missing required fields reported as TraceError."""
    events: list[Event] = []
    try:
        for event in iter_events(path):
            events.append(event)
    except TypeError as exc:  # a JSON object lacking run_id/depth/t
        raise TraceError(
            f"{path}:{len(events) + 1}: an event lacks required fields ({exc}); "
            "is this a fathom trace?"
        ) from exc
    return events


def render(trace_path: str | Path) -> str:
    """The HTML page for one trace, as a string."""
    return _render(*scan_trace(Path(trace_path)), Path(trace_path))


def _render(typed: list[Event], problems: list[str], path: Path) -> str:
    events = _page_events(typed)
    query = next((e.get("query", "") for e in events if e["type"] == "run_start"), "")
    title = "fathom: " + (query[:80] if query else path.name)
    page = Template(_asset("template.html"))
    return page.substitute(
        VERSION=html.escape(_version()),
        TITLE=html.escape(title),
        CSS=_asset("viewer.css"),
        HIGHLIGHT_JS=_asset("highlight.js"),
        JS=_asset("viewer.js"),
        DATA=_script_json({"source": str(path), "events": events, "problems": problems,
                           "rendered_at": time.time()}),
    )


def write(
    trace_path: str | Path, out: str | Path | None = None, *, open_browser: bool = False
) -> Path:
    """Render `trace_path` to `out` (default: the trace's name with .html) and return that path."""
    target, _ = write_page(trace_path, out)
    if open_browser:
        open_page(target)
    return target


def write_page(trace_path: str | Path, out: str | Path | None = None) -> tuple[Path, list[str]]:
    """Like `write`, and also the trace's lines that were skipped, each saying why."""
    trace = Path(trace_path)
    target = Path(out) if out is not None else trace.with_suffix(".html")
    events, problems = scan_trace(trace)
    target.write_text(_render(events, problems, trace), encoding="utf-8")
    return target, problems


def open_page(page: Path) -> bool:
    """Open `page` in a browser; False when none could be opened (no display, no browser)."""
    try:
        return bool(webbrowser.open(page.resolve().as_uri()))
    except webbrowser.Error:
        return False


__all__ = ["MAX_FIELD_CHARS", "load_events", "open_page", "read_trace", "render", "scan_trace",
           "write", "write_page"]
