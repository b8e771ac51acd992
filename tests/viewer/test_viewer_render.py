"""The viewer page as a file: self-contained, safe to embed any trace text, whole on big traces.

How fast big traces render is measured by benchmarks/viewer.py, not here.
"""

from __future__ import annotations

import json
import re
import webbrowser
from pathlib import Path

import pytest
from click.testing import CliRunner

from fathom.cli import main
from fathom.errors import TraceError
from fathom.trace import LMCall, RunStart, TraceWriter
from fathom.viewer import MAX_FIELD_CHARS, render, write
from tests.viewer.recorded_runs import depth2_run, wide_run


def _embedded(page: str) -> dict:
    pattern = r'<script id="fathom-trace" type="application/json">(.*?)</script>'
    data = re.search(pattern, page, re.S)
    assert data is not None
    return json.loads(data.group(1))


def test_page_is_self_contained(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    depth2_run(trace)
    page = render(trace)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing to fetch
    assert "<link" not in page and "<script src" not in page and "@import" not in page
    assert "fetch(" not in page and "XMLHttpRequest" not in page
    events = _embedded(page)["events"]
    assert len(events) == len(trace.read_text().splitlines())
    types = {e["type"] for e in events}
    assert types >= {"run_start", "lm_call", "exec", "subrlm_start", "run_end"}


def test_trace_text_cannot_break_out_of_the_page(tmp_path: Path) -> None:
    trace = tmp_path / "evil.jsonl"
    writer = TraceWriter(trace)
    evil = "</script><script>alert(1)</script><!-- & -->"
    writer(RunStart(run_id="r", depth=0, t=0.0, query=evil))
    writer(LMCall(run_id="r", depth=0, t=0.1, role="root", response=evil, iteration=1))
    writer.close()
    page = render(trace)
    assert page.count("</script>") == 3  # the data element's and the two of the code
    assert _embedded(page)["events"][1]["response"] == evil  # and the text survives intact
    assert "<title>fathom: &lt;/script&gt;" in page


def test_huge_fields_are_cut_in_the_page_not_in_the_trace(tmp_path: Path) -> None:
    # Written as a trace from before fathom cut long fields itself (or by another tool).
    trace = tmp_path / "big.jsonl"
    events = [RunStart(run_id="r", depth=0, t=0.0, query="q"),
              LMCall(run_id="r", depth=0, t=0.1, role="sub", prompt="x" * (MAX_FIELD_CHARS * 3))]
    trace.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in events))
    prompt = _embedded(render(trace))["events"][1]["prompt"]
    assert len(prompt) < MAX_FIELD_CHARS + 200
    assert "characters cut by the viewer" in prompt


def test_partial_trace_renders_and_skips_a_half_written_line(tmp_path: Path) -> None:
    full = tmp_path / "run.jsonl"
    depth2_run(full)
    lines = full.read_text().splitlines(keepends=True)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(lines[:10]) + lines[10][:25])
    assert len(_embedded(render(partial))["events"]) == 10


def test_missing_trace_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="does not exist"):
        render(tmp_path / "nope.jsonl")


def test_ten_thousand_event_trace_renders_every_event(tmp_path: Path) -> None:
    trace = tmp_path / "wide.jsonl"
    wide_run(trace, prompts=5000)
    lines = trace.read_text().splitlines()
    assert len(lines) >= 10_000
    events = _embedded(write(trace).read_text())["events"]
    assert len(events) == len(lines)
    calls = [e for e in events if e["type"] == "lm_call" and e["role"] == "sub"]
    assert len(calls) == 5000
    assert {e["prompt"] for e in calls} == {f"item {i}" for i in range(5000)}


def test_one_bad_line_is_skipped_and_reported(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    depth2_run(trace)
    lines = trace.read_text().splitlines(keepends=True)
    trace.write_text("".join(lines[:3]) + "{not json\n" + "".join(lines[3:]))
    data = _embedded(render(trace))
    assert len(data["events"]) == len(lines)
    assert data["problems"] == [f"{trace}:4: not valid JSON (Expecting property name enclosed in "
                                "double quotes)"]


@pytest.mark.parametrize("content", ["", "\n\n", "hello world\nnot a trace\n", '{"a": 1}\n'])
def test_an_empty_or_garbage_file_is_refused_clearly(tmp_path: Path, content: str) -> None:
    trace = tmp_path / "run.jsonl"
    trace.write_text(content)
    with pytest.raises(TraceError, match="holds no fathom events"):
        render(trace)
    out = CliRunner().invoke(main, ["view", str(trace)])
    assert out.exit_code == 2
    assert "holds no fathom events" in out.output and "not a fathom trace" in out.output
    assert not trace.with_suffix(".html").exists()


def test_view_open_says_when_no_browser_opens(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    trace = tmp_path / "run.jsonl"
    depth2_run(trace)
    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    out = CliRunner().invoke(main, ["view", str(trace), "--open"])
    assert out.exit_code == 0
    assert "no browser could be opened" in out.output
    assert trace.with_suffix(".html").exists()
