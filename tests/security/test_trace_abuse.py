"""Abuse of the trace by REPL code (real subprocess sandbox at `standard`): huge refused prompts,
an endless stream of events, and line separators in output. The trace stays bounded, readable by
`fathom.trace.read`, the viewer and replay, and replay still matches what it cut."""

from __future__ import annotations

import json
from pathlib import Path

import fathom
from fathom.lm import ScriptedLM
from fathom.replay import replay
from fathom.trace import (
    FIELD_MAX_CHARS,
    ExecEvent,
    FinalEvent,
    LMCall,
    RunEnd,
    RunStart,
    TraceTruncated,
    read,
    text_sha256,
)
from fathom.viewer import render


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def _embedded(page: str) -> list[dict[str, object]]:
    """The events the viewer page carries."""
    data = json.loads(page.split('type="application/json">')[1].split("</script>")[0])
    events: list[dict[str, object]] = data["events"]
    return events


def test_refused_huge_prompts_cannot_grow_the_trace(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    code = (
        "big = 'p' * (4 * 2**20)\n"
        "for _ in range(20):\n"
        "    try:\n"
        "        llm_query(big)\n"
        "    except Exception as exc:\n"
        "        last = type(exc).__name__\n"
        "print(last)"
    )
    # A window that fits the prompt: the budget, not the window check, refuses these calls.
    sub = ScriptedLM(lambda m: "never", context_window=10_000_000)
    rlm = fathom.RLM(ScriptedLM([repl(code)]), sub_model=sub,
                     budget=fathom.Budget(calls=1), trace=trace)
    assert rlm.run("Refuse me.", "context").stop_reason == "budget"
    assert trace.stat().st_size < 3 * 2**20  # 20 x 4 MB prompts were refused
    refused = [e for e in read(trace) if isinstance(e, LMCall) and e.refused]
    assert len(refused) == 20
    for event in refused:
        assert len(event.prompt) <= FIELD_MAX_CHARS
        assert event.prompt.startswith("ppp") and event.prompt.endswith("ppp")
        assert event.cut["prompt"] == {"chars": 4 * 2**20, "sha256": text_sha256("p" * 4 * 2**20)}
        assert event.sha256_of("prompt") == text_sha256("p" * 4 * 2**20)


def test_a_trace_past_trace_max_mb_is_cut_with_one_note(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    code = (
        "for i in range(3000):\n"
        "    try:\n"
        "        llm_query(f'{i} ' + 'q' * 1000)\n"
        "    except Exception:\n"
        "        pass\n"
        "print('looped')"
    )
    rlm = fathom.RLM(ScriptedLM([repl(code)]), sub_model=ScriptedLM(lambda m: "never"),
                     budget=fathom.Budget(calls=1), trace=trace, trace_max_mb=0.25)
    result = rlm.run("Flood the trace.", "context")
    assert result.stop_reason == "budget"
    assert trace.stat().st_size < 0.25 * 2**20 + 64 * 1024  # the limit, the note, the run_end
    events = read(trace)
    notes = [e for e in events if isinstance(e, TraceTruncated)]
    assert len(notes) == 1 and notes[0].max_bytes == int(0.25 * 2**20)
    assert isinstance(events[-1], RunEnd) and events[-1].stop_reason == "budget"
    embedded = _embedded(render(trace))  # the viewer gets the note (and draws a banner for it)
    assert [e["type"] for e in embedded].count("trace_truncated") == 1
    assert replay(trace).replayed_stop_reason == "budget"


def test_line_separators_in_output_keep_the_trace_readable(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    text = "a\u2028b\u2029c\x85d\x0be\x1cf"
    rlm = fathom.RLM(ScriptedLM([repl(f"print({text!r})\nFINAL({text!r})")]), trace=trace)
    assert rlm.run("Print separators.", "context").answer == text
    raw = trace.read_bytes()
    for char in "\u2028\u2029\x85":
        assert char.encode() not in raw  # escaped, so no JSONL reader splits a line on them
    assert len(raw.splitlines()) == len(raw.decode().splitlines()) == raw.count(b"\n")
    events = read(trace)
    (run,) = [e for e in events if isinstance(e, ExecEvent)]
    assert run.stdout == text + "\n"
    assert [e.answer for e in events if isinstance(e, FinalEvent)] == [text]
    assert text + "\n" in [e.get("stdout") for e in _embedded(render(trace))]
    assert replay(trace).matches


def test_replay_matches_prompts_queries_and_answers_the_trace_cut(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    code = (
        "big = 'w' * 100_000\n"
        "a = llm_query(big + ' sub')\n"
        "b = rlm_query(big + ' child')\n"
        "FINAL(a + b + big)"
    )
    root = ScriptedLM([repl(code), repl("FINAL('from the child')")], name="scripted:root")
    sub = ScriptedLM(lambda m: f"sub saw {len(m[-1]['content'])}", name="scripted:sub")
    result = fathom.RLM(root, sub_model=sub, max_depth=1, trace=trace).run("Go deep.", "ctx")
    assert result.answer == "sub saw 100004" + "from the child" + "w" * 100_000
    events = read(trace)
    assert any("prompt" in e.cut for e in events if isinstance(e, LMCall))
    assert any("query" in e.cut for e in events if isinstance(e, RunStart))
    assert any("answer" in e.cut for e in events if isinstance(e, RunEnd))
    report = replay(trace)
    assert report.matches, report.summary()
    assert report.unmatched_prompts == [] and report.unused_root_replies == 0
