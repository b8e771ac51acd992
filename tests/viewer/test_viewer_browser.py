"""The viewer in a real headless Chromium: a depth-2 run, expanding sub-calls, big traces.

Load and expand times of big traces are measured by benchmarks/viewer.py, not here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from fathom.progress import call_counts
from fathom.trace import LMCallStart, RunEnd, RunStart, TraceWriter, read
from fathom.viewer import write
from tests.viewer.recorded_runs import depth2_run, failing_run, wide_run

DOCS = Path(__file__).resolve().parents[2] / "docs"
pytestmark = pytest.mark.browser


def _open(page: Any, html: Path) -> None:
    page.goto(html.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)


def test_depth2_run_tree_expands_and_shows_subcalls(page: Any, tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    result = depth2_run(trace)
    assert result.answer == "Lisbon"
    _open(page, write(trace, tmp_path / "run.html"))

    assert page.locator(".answer").inner_text() == "Lisbon"
    assert "child RLMs (max depth 2)" in page.locator(".stats").inner_text()
    assert page.locator("canvas#gantt").is_visible()
    root = page.locator("#tree > .node.run")
    assert root.get_attribute("class").count("open") == 1  # the root run starts open

    # Iteration 2: the batched sub-calls and the child RLM.
    iteration = root.locator(".node.iter").nth(1)
    iteration.locator("> .head").click()
    body = iteration.locator("> .body")
    assert "llm_query_batched" in body.locator(".code").first.inner_text()
    assert body.locator(".tok-bi", has_text="llm_query_batched").count() >= 1  # highlighted
    batch = body.locator(".node.batch").first
    assert "llm_query_batched × 3" in batch.locator("> .head").inner_text()
    batch.locator("> .head").click()
    call = batch.locator(".node.call").nth(2)
    call.locator("> .head").click()
    text = call.locator("> .body").inner_text()
    assert "June. Marta moved to Lisbon" in text  # the prompt
    assert "Lisbon" in text.split("Reply", 1)[1]  # and the reply

    # The child RLM (depth 1) and, inside it, the grandchild (depth 2).
    child = body.locator(".node.run.depth1").first
    child.locator("> .head").click()
    child.locator(".node.iter").first.locator("> .head").click()
    grandchild = child.locator(".node.run.depth2").first
    assert "Which city is named last" in grandchild.locator("> .head").inner_text()
    grandchild.locator("> .head").click()
    grandchild.locator(".node.iter").first.locator("> .head").click()
    assert "Name the last city in" in grandchild.inner_text()

    assert page.errors == []
    assert all(url.startswith(("file:", "data:", "about:")) for url in page.requests)
    DOCS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 1000})
    iteration.scroll_into_view_if_needed()
    height = min(2000, page.evaluate("document.body.scrollHeight"))
    page.screenshot(path=str(DOCS / "viewer.png"), full_page=True,
                    clip={"x": 0, "y": 0, "width": 1280, "height": height})


def test_timeline_click_opens_the_call(page: Any, tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    depth2_run(trace)
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    call = next(e for e in events
                if e["type"] == "lm_call" and e["depth"] == 2 and e["role"] == "sub")
    span = max(e["t"] for e in events)
    _open(page, write(trace))
    box = page.locator("canvas#gantt").bounding_box()
    lanes = len({(e["depth"], e["role"]) for e in events if e["type"] == "lm_call"})
    # The canvas maps t to pad + (width - pad - 10) * t / span (pad 44); lanes are 16 px high.
    start = max(0.0, call["t"] - call["seconds"])
    x = box["x"] + 44 + (box["width"] - 54) * start / span + 0.5
    page.mouse.click(x, box["y"] + (lanes - 1) * 16 + 8)
    opened = page.locator(".node.call.open")
    assert opened.count() == 1
    assert "Name the last city in" in opened.first.inner_text()
    assert opened.first.is_visible()


def test_highlighter_marks_python_tokens(page: Any, tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    depth2_run(trace)
    _open(page, write(trace))
    html = page.evaluate(
        "fathomHighlight('def f(x):\\n    return len(x) + 1  # note\\ns = \"<b>\"')"
    )
    assert '<span class="tok-kw">def</span>' in html
    assert '<span class="tok-fn">f</span>' in html
    assert '<span class="tok-bi">len</span>' in html
    assert '<span class="tok-num">1</span>' in html
    assert '<span class="tok-com"># note</span>' in html
    assert '<span class="tok-str">&quot;&lt;b&gt;&quot;</span>' in html  # escaped, never raw HTML


def test_partial_trace_shows_what_is_there(page: Any, tmp_path: Path) -> None:
    full = tmp_path / "run.jsonl"
    depth2_run(full)
    lines = full.read_text().splitlines(keepends=True)
    # Cut just after the child RLM's sub-call started, mid-way through the next line.
    cut = next(i for i, line in enumerate(lines)
               if '"lm_call_start"' in line and '"depth": 1' in line and '"role": "sub"' in line)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(lines[: cut + 1]) + lines[cut + 1][: len(lines[cut + 1]) // 2])
    _open(page, write(partial))
    assert "still being written" in page.locator(".banner").first.inner_text()
    assert page.locator(".answer").inner_text() == "(not answered yet)"
    root_iter = page.locator("#tree .node.iter").nth(1)
    root_iter.locator("> .head").click()
    child = root_iter.locator(".node.run.depth1").first
    assert "running" in child.locator("> .head").inner_text()
    child.locator("> .head").click()
    child_iter = child.locator(".node.iter").first
    assert "1 in flight" in child_iter.locator("> .head").inner_text()
    child_iter.locator("> .head").click()
    assert "Say where Marta lived" in child_iter.locator("> .body").inner_text()
    assert page.errors == []


def test_ten_thousand_event_trace_opens_and_draws_batch_calls_a_page_at_a_time(
    page: Any, tmp_path: Path
) -> None:
    trace = tmp_path / "wide.jsonl"
    wide_run(trace, prompts=5000)
    assert sum(1 for _ in trace.open()) >= 10_000
    _open(page, write(trace))
    iteration = page.locator("#tree .node.iter").first
    iteration.locator("> .head").click()
    batch = iteration.locator(".node.batch").first
    assert "× 5000" in batch.locator("> .head").inner_text()
    assert batch.locator(".node.call").count() == 0  # nothing drawn before the batch opens
    batch.locator("> .head").click()
    assert batch.locator(".node.call").count() == 100  # drawn a page at a time
    batch.locator("button", has_text="Show 100 more").click()
    calls = batch.locator(".node.call")
    assert calls.count() == 200
    calls.nth(150).locator("> .head").click()  # a call of the second page opens like any other
    assert "ok item " in calls.nth(150).locator("> .body").inner_text()
    # Search scans all events, so the last sub-call is found too.
    page.fill("#search", "item 4999")
    page.wait_for_selector("#hits .hit")
    assert page.locator("#hits .hit").count() == 1
    assert page.errors == []


def test_search_finds_a_deep_sub_call_and_opens_it(page: Any, tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    depth2_run(trace)
    _open(page, write(trace))
    page.fill("#search", "name the last city")
    page.wait_for_selector("#hits .hit")
    hits = page.locator("#hits .hit")
    assert "depth 2" in hits.first.inner_text()
    hits.filter(has_text="prompt:").first.click()  # the sub-call, not the code that made it
    opened = page.locator(".node.call.open")
    assert opened.count() == 1 and opened.first.is_visible()
    assert "Name the last city in" in opened.first.inner_text()


def test_call_counts_agree_with_the_cli(page: Any, tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    failing_run(trace)
    counts = call_counts(read(trace))
    assert (counts.calls, counts.failed, counts.refused) == (5, 1, 1)
    _open(page, write(trace))
    assert page.locator("[data-stat=calls] b").inner_text() == str(counts.calls)
    assert (page.locator("[data-stat=failed-refused] b").inner_text()
            == f"{counts.failed} / {counts.refused}")
    assert page.errors == []


def test_a_failed_runs_error_comes_before_its_answer(page: Any, tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    writer = TraceWriter(trace)
    writer(RunStart(run_id="r", depth=0, t=0.0, query="q"))
    writer(RunEnd(run_id="r", depth=0, t=1.0, answer="partial guess", stop_reason="error",
                  error="LMError: the provider is down"))
    writer.close()
    _open(page, write(trace))
    error, answer = page.locator("#run-error"), page.locator(".answer")
    assert "the provider is down" in error.inner_text()
    assert error.bounding_box()["y"] < answer.bounding_box()["y"]


def test_a_stuck_call_shows_how_long_it_has_waited(page: Any, tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    writer = TraceWriter(trace)
    writer(RunStart(run_id="r", depth=0, t=0.0, query="q"))
    writer(LMCallStart(run_id="r", depth=0, t=2.0, role="sub", call_id="c1", iteration=1,
                       prompt="stuck prompt"))
    writer(RunEnd(run_id="r", depth=0, t=95.0, stop_reason="error", error="killed"))
    writer.close()
    _open(page, write(trace))
    page.locator("#tree .node.iter > .head").first.click()
    assert "waiting 93.0 s" in page.locator(".node.call.inflight").first.inner_text()
    assert page.errors == []


def test_a_call_stuck_in_a_live_run_waits_until_the_page_was_made(page: Any,
                                                                 tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    writer = TraceWriter(trace)
    writer(RunStart(run_id="r", depth=0, t=0.0, query="q", started_at=time.time() - 300))
    writer(LMCallStart(run_id="r", depth=0, t=2.0, role="sub", call_id="c1", iteration=1))
    writer.close()  # no run_end: the run is still going, its last event long ago
    _open(page, write(trace))
    page.locator("#tree .node.iter > .head").first.click()
    assert "waiting 4m5" in page.locator(".node.call.inflight").first.inner_text()  # ~298 s
