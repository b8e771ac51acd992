"""The viewer shows the concurrency limit over time and the tokens read from prompt caches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fathom.trace import ConcurrencyEvent, LMCall, RunEnd, RunStart, TraceWriter
from fathom.viewer import write

pytestmark = pytest.mark.browser


def test_concurrency_limit_and_cached_tokens_are_shown(page: Any, tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    writer = TraceWriter(trace)
    writer(RunStart(run_id="r", depth=0, t=0.0, query="q"))
    endpoint = "openai:api.openai.com:gpt-5-mini"
    for t, (previous, limit, reason) in enumerate([(0, 32, "start"), (32, 64, "grow"),
                                                   (64, 44, "throttled")]):
        writer(ConcurrencyEvent(run_id="r", depth=0, t=t * 0.5, endpoint=endpoint, limit=limit,
                                previous=previous, reason=reason, in_flight=limit))
    writer(LMCall(run_id="r", depth=0, t=1.0, role="root", model="openai:gpt-5-mini",
                  iteration=1, prompt_tokens=5000, completion_tokens=10, cached_tokens=4096,
                  seconds=0.5, call_id="r-1"))
    writer(RunEnd(run_id="r", depth=0, t=2.0, answer="a", stop_reason="final"))
    writer.close()
    page.goto(write(trace).resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    assert page.locator("[data-stat=cached-tokens] b").inner_text() == "4096"
    assert "concurrency limit" in page.locator(".legend").inner_text()
    assert page.errors == []
