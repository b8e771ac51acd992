"""The demo: a seeded haystack, a real RLM run on it and the report it prints."""

from __future__ import annotations

import io
import json
from pathlib import Path

from fathom.demo import QUERY, build_haystack, run_demo
from fathom.lm import ScriptedLM

FIND_IT = """Let me search the context for the fact.
```repl
import re
match = re.search(r"passphrase of the vault is ([a-z]+-[a-z]+-[0-9]+)", context)
print(match.start(), len(context))
FINAL(match.group(1))
```"""


def test_haystack_is_seeded_long_and_hides_one_fact() -> None:
    first, again, other = build_haystack(7), build_haystack(7), build_haystack(8)
    assert first == again and first.passphrase != other.passphrase
    assert len(first.text) >= 1_000_000
    assert first.text.count(first.passphrase) == 1
    assert first.text.index(first.passphrase) > first.position
    assert first.passphrase not in first.text[:500] + first.text[-500:]  # not in the preview


def test_run_demo_with_a_scripted_model_finds_the_fact(tmp_path: Path) -> None:
    lm = ScriptedLM([FIND_IT])
    out = io.StringIO()
    result = run_demo(lm, seed=3, chars=200_000, trace_dir=tmp_path, out=out)
    expected = build_haystack(3, 200_000).passphrase
    assert result.stop_reason == "final" and result.answer == expected
    report = out.getvalue()
    assert "MATCH" in report and expected in report and "scripted" in report
    assert result.trace_path is not None and Path(result.trace_path).parent == tmp_path
    events = [json.loads(line) for line in Path(result.trace_path).read_text().splitlines()]
    assert events[0]["type"] == "run_start" and events[0]["query"] == QUERY
    assert lm.calls[0][-1]["content"].count(expected) == 0  # the root never saw the text


def test_run_demo_reports_a_miss(tmp_path: Path) -> None:
    out = io.StringIO()
    result = run_demo(ScriptedLM(["FINAL(no idea)"]), chars=50_000, trace_dir=tmp_path, out=out)
    assert result.answer == "no idea"
    assert "no match" in out.getvalue()


def test_run_demo_passes_events_to_on_event(tmp_path: Path) -> None:
    seen: list[str] = []
    run_demo(
        ScriptedLM(["FINAL(x)"]),
        chars=20_000,
        trace_dir=tmp_path,
        out=io.StringIO(),
        on_event=lambda event: seen.append(event.type),
    )
    assert seen[0] == "run_start" and seen[-1] == "run_end"


def test_run_demo_says_where_its_trace_goes_before_the_run(tmp_path: Path) -> None:
    out = io.StringIO()
    printed_before: list[str] = []

    def first_event(event: object) -> None:
        printed_before.append(out.getvalue())

    run_demo(ScriptedLM(["FINAL(no idea)"]), chars=50_000, trace_dir=tmp_path, out=out,
             on_event=first_event)
    assert f"trace:       {tmp_path}" in printed_before[0]
