"""The trajectory viewer: one self-contained HTML file drawn from a JSONL trace.

The page embeds the trace's events as JSON plus inline CSS and JS (no network,
works from file://). The JS builds only the headers of the run tree up front and
each node's body on first expand, so traces of tens of thousands of events open
at once. A trace still being written renders what it holds so far.
"""

from __future__ import annotations

import html
import json
import webbrowser
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from fathom.errors import TraceError
from fathom.trace import Event, iter_events

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
    """The trace's events as plain dicts (a last line cut off mid-write is skipped)."""
    path = Path(trace_path)
    if not path.is_file():
        raise TraceError(f"Trace {path} does not exist; pass the file given to --trace / trace=.")
    return [{k: _cap(v) for k, v in event.to_dict().items()} for event in read_trace(path)]


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
    path = Path(trace_path)
    events = load_events(path)
    query = next((e.get("query", "") for e in events if e["type"] == "run_start"), "")
    title = "fathom: " + (query[:80] if query else path.name)
    page = Template(_asset("template.html"))
    return page.substitute(
        VERSION=html.escape(_version()),
        TITLE=html.escape(title),
        CSS=_asset("viewer.css"),
        HIGHLIGHT_JS=_asset("highlight.js"),
        JS=_asset("viewer.js"),
        DATA=_script_json({"source": str(path), "events": events}),
    )


def write(
    trace_path: str | Path, out: str | Path | None = None, *, open_browser: bool = False
) -> Path:
    """Render `trace_path` to `out` (default: the trace's name with .html) and return that path."""
    trace = Path(trace_path)
    target = Path(out) if out is not None else trace.with_suffix(".html")
    target.write_text(render(trace), encoding="utf-8")
    if open_browser:
        webbrowser.open(target.resolve().as_uri())
    return target


__all__ = ["MAX_FIELD_CHARS", "load_events", "read_trace", "render", "write"]
