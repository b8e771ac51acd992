"""The trace file: what TraceWriter writes, what the reader accepts and refuses, the clock."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

import fathom
from fathom.errors import ConfigError, TraceError
from fathom.lm import ScriptedLM
from fathom.trace import (
    EVENT_TYPES,
    FIELD_MAX_CHARS,
    TRACE_VERSION,
    Clock,
    Event,
    EventSinks,
    ExecEvent,
    IterationEvent,
    LMCall,
    RunEnd,
    RunStart,
    TraceTruncated,
    TraceWriter,
    cut_text,
    event_from_dict,
    iter_events,
    read,
    text_sha256,
)


def _line(type_: str = "iteration", **fields: object) -> str:
    return json.dumps({"v": 1, "type": type_, "run_id": "r", "depth": 0, "t": 0.0, **fields})


def _write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _refused(trace: Path, message: str) -> AbstractContextManager[pytest.ExceptionInfo[TraceError]]:
    """Expect a TraceError naming `path:line` and what is wrong there."""
    return pytest.raises(TraceError, match=re.escape(f"{trace}:{message}"))


# --- TraceWriter ---


def test_each_event_is_one_flushed_line_readable_while_the_run_goes_on(tmp_path: Path) -> None:
    trace = tmp_path / "deep" / "run.jsonl"  # missing folders are made
    writer = TraceWriter(trace)
    writer(RunStart(run_id="r", depth=0, t=0.0, query="q", model="m"))
    writer(LMCall(run_id="r", depth=0, t=0.5, prompt="line one\nline two", response="ok"))
    lines = trace.read_text(encoding="utf-8").splitlines()  # before close
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert list(first)[:2] == ["v", "type"]
    assert first["v"] == TRACE_VERSION and first["type"] == "run_start"
    assert [type(e) for e in read(trace)] == [RunStart, LMCall]
    assert read(trace)[1].prompt == "line one\nline two"  # type: ignore[attr-defined]
    writer.close()


def test_lone_surrogates_are_written_and_read_back(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    writer = TraceWriter(trace)
    writer(ExecEvent(run_id="r", depth=0, t=0.0, stdout="ab\udcffcd", code="print('é')"))
    writer.close()
    trace.read_bytes().decode("utf-8")  # the file itself is valid UTF-8
    (event,) = read(trace)
    assert isinstance(event, ExecEvent)
    assert event.stdout == "ab\udcffcd" and event.code == "print('é')"


def test_events_after_close_are_dropped(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    writer = TraceWriter(trace)
    writer(RunStart(run_id="r", depth=0, t=0.0))
    writer.close()
    writer(RunEnd(run_id="r", depth=0, t=1.0))
    writer.close()  # a second close is harmless
    assert [type(e) for e in read(trace)] == [RunStart]


def test_many_threads_write_whole_lines(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    writer = TraceWriter(trace)
    threads, per_thread = 8, 200

    def write(worker: int) -> None:
        for i in range(per_thread):
            writer(LMCall(run_id=f"w{worker}", depth=0, t=0.0, call_id=str(i), prompt="x" * 5000))

    pool = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    writer.close()
    lines = trace.read_text(encoding="utf-8").splitlines()
    assert len(lines) == threads * per_thread
    seen = {(data["run_id"], data["call_id"]) for data in map(json.loads, lines)}
    assert len(seen) == threads * per_thread


def test_long_strings_keep_head_tail_length_and_hash(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    prompt = "head" + "m" * (3 * FIELD_MAX_CHARS) + "tail"
    writer = TraceWriter(trace)
    writer(LMCall(run_id="r", depth=0, t=0.0, role="sub", prompt=prompt, response="short"))
    writer(RunStart(run_id="r", depth=0, t=0.0, context={"keys": ["k" * (2 * FIELD_MAX_CHARS)]}))
    writer.close()
    call, start = read(trace)
    assert isinstance(call, LMCall) and isinstance(start, RunStart)
    assert len(call.prompt) <= FIELD_MAX_CHARS
    assert call.prompt.startswith("headmmm") and call.prompt.endswith("mmmtail")
    assert f"[{len(prompt):,} characters" in call.prompt
    assert call.response == "short" and set(call.cut) == {"prompt"}
    assert call.cut["prompt"] == {"chars": len(prompt), "sha256": text_sha256(prompt)}
    assert call.sha256_of("prompt") == text_sha256(prompt)
    assert call.sha256_of("response") == text_sha256("short")  # not cut: hashed as it is
    assert len(start.context["keys"][0]) <= FIELD_MAX_CHARS  # nested strings are cut too
    assert start.cut == {}


def test_cut_text_is_within_its_limit_and_idempotent() -> None:
    assert cut_text("short", 500) == "short"
    for size in (501, 1000, 10_000):
        once = cut_text("x" * size, 500)
        assert len(once) <= 500 and cut_text(once, 500) == once


def test_line_breaks_other_than_newline_are_written_escaped_and_read_back(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    text = "a\u2028b\u2029c\x85d\re\x0bf\x0cg\x1c\x1d\x1e"
    written = [ExecEvent(run_id="r", depth=0, t=0.0, stdout=text, code=text),
               ExecEvent(run_id="r", depth=0, t=1.0, stdout="after")]
    writer = TraceWriter(trace)
    for event in written:
        writer(event)
    writer.close()
    raw = trace.read_text(encoding="utf-8")
    assert raw.splitlines() == raw.split("\n")[:-1]  # no line splits anywhere but at "\n"
    assert read(trace) == written


def test_a_trace_with_raw_line_separators_inside_strings_is_read(tmp_path: Path) -> None:
    """Older writers put U+2028 and friends raw in the file; only "\n" ends a line."""
    line = json.dumps({"v": 1, "type": "exec", "run_id": "r", "depth": 0, "t": 0.0,
                       "stdout": "x\u2028y\u2029z\x85w"}, ensure_ascii=False)
    trace = _write_lines(tmp_path / "run.jsonl", _line("run_start"), line, _line("iteration"))
    events = read(trace)
    assert [type(e) for e in events] == [RunStart, ExecEvent, IterationEvent]
    assert events[1].stdout == "x\u2028y\u2029z\x85w"  # type: ignore[attr-defined]


def test_past_max_bytes_one_note_is_written_and_only_the_root_end_after_it(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "run.jsonl"
    writer = TraceWriter(trace, max_bytes=20_000)
    writer(RunStart(run_id="r", depth=0, t=0.0, query="q"))
    for i in range(100):
        writer(LMCall(run_id="c", depth=1, t=float(i), role="sub", prompt="p" * 1000))
    writer(RunEnd(run_id="c", depth=1, t=100.0, stop_reason="final"))  # a child's: dropped
    writer(RunEnd(run_id="r", depth=0, t=101.0, stop_reason="final", answer="a"))
    writer(IterationEvent(run_id="r", depth=0, t=102.0))  # after the end: dropped
    writer.close()
    assert writer.truncated
    events = read(trace)
    kinds = [type(e) for e in events]
    assert kinds[0] is RunStart and kinds[-2:] == [TraceTruncated, RunEnd]
    assert kinds.count(TraceTruncated) == 1 and kinds.count(RunEnd) == 1
    note = events[-2]
    assert isinstance(note, TraceTruncated) and note.max_bytes == 20_000
    assert note.dropped_type == "lm_call" and note.run_id == "c"
    written = trace.read_bytes().splitlines(keepends=True)
    assert sum(map(len, written[:-2])) <= 20_000


def test_a_malformed_cut_record_is_ignored(tmp_path: Path) -> None:
    trace = _write_lines(tmp_path / "run.jsonl", _line("lm_call", cut="nonsense"),
                         _line("lm_call", cut={"prompt": 3, "response": {"chars": 9}}))
    first, second = read(trace)
    assert first.cut == {} and second.cut == {"response": {"chars": 9}}


def test_a_deeply_nested_line_is_a_trace_error(tmp_path: Path) -> None:
    trace = _write_lines(tmp_path / "run.jsonl", _line(), "[" * 100_000, _line())
    with _refused(trace, "2 is not valid JSON (RecursionError)"):
        read(trace)


# --- reading ---


def test_a_last_line_cut_mid_write_is_skipped(tmp_path: Path) -> None:
    whole = _line("run_start")
    trace = tmp_path / "run.jsonl"
    trace.write_text(whole + "\n\n" + _line("iteration")[:20], encoding="utf-8")
    assert [type(e) for e in read(trace)] == [RunStart]
    with _refused(trace, "3 is not valid JSON"):
        list(iter_events(trace, partial=False))


def test_a_malformed_middle_line_names_its_place(tmp_path: Path) -> None:
    trace = _write_lines(tmp_path / "run.jsonl", _line(), "{not json", _line())
    with _refused(trace, "2 is not valid JSON"):
        read(trace)


def test_a_line_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    trace = _write_lines(tmp_path / "run.jsonl", _line(), "[1, 2]")
    with _refused(trace, "2 is not a JSON object"):
        read(trace)


def test_an_unknown_event_type_is_refused(tmp_path: Path) -> None:
    trace = _write_lines(tmp_path / "run.jsonl", _line("teleport"))
    with _refused(trace, "1: Unknown trace event type 'teleport'"):
        read(trace)


@pytest.mark.parametrize("field", ["run_id", "depth", "t"])
def test_an_event_without_a_common_field_is_refused(tmp_path: Path, field: str) -> None:
    data = json.loads(_line("exec"))
    del data[field]
    trace = _write_lines(tmp_path / "run.jsonl", json.dumps(data))
    with _refused(trace, f"1: Trace event 'exec' lacks {field}"):
        read(trace)


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    trace = _write_lines(tmp_path / "run.jsonl", _line("final", answer="42", added_later=[1]))
    (event,) = read(trace)
    assert event == event_from_dict(json.loads(_line("final", answer="42")))
    assert not hasattr(event, "added_later")


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    trace.write_bytes(_line().encode() + b"\n\xff\xfe\x00binary\n")
    with pytest.raises(TraceError, match="is not UTF-8 text"):
        read(trace)


def test_a_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="Cannot read trace"):
        read(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("cls", list(EVENT_TYPES.values()), ids=list(EVENT_TYPES))
def test_every_event_type_round_trips_through_json(cls: type[Event]) -> None:
    event = cls(run_id="r", depth=2, t=1.25)
    data = json.loads(json.dumps(event.to_dict()))
    assert data["type"] == cls.type and EVENT_TYPES[cls.type] is cls
    # `cut` is written only when the trace cut a field.
    assert set(data) == {"v", "type"} | {f.name for f in dataclasses.fields(cls)} - {"cut"}
    assert event_from_dict(data) == event


# --- Clock ---


def test_clock_starts_near_zero_and_never_goes_back() -> None:
    before = time.time()
    clock = Clock()
    assert before <= clock.started_at <= time.time()
    readings = [clock.now() for _ in range(1000)]
    assert 0.0 <= readings[0] < 1.0
    assert readings == sorted(readings)
    time.sleep(0.01)
    assert clock.now() >= readings[-1] + 0.01


# --- sinks and one writer per file ------------------------------------------------------
def test_a_second_writer_for_the_same_file_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.jsonl"
    first = TraceWriter(path)
    with pytest.raises(ConfigError, match="Another run is writing"):
        TraceWriter(tmp_path / "." / "t.jsonl")
    first.close()
    TraceWriter(path).close()


def test_an_unwritable_trace_path_is_a_config_error_and_frees_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="Cannot write the trace"):
        TraceWriter(blocker / "t.jsonl")
    blocker.unlink()
    TraceWriter(blocker / "t.jsonl").close()


def test_a_sink_that_raises_is_dropped_and_the_others_keep_getting_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise ValueError("bug in a callback")

    sinks = EventSinks([broken, seen.append])
    for t in range(3):
        sinks(IterationEvent(run_id="r", depth=0, t=float(t)))
    assert len(seen) == 3
    assert sum("bug in a callback" in r.getMessage() for r in caplog.records) == 1


needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")


@needs_dev_full
def test_a_write_that_fails_is_reported_once_and_ends_the_trace_not_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = TraceWriter("/dev/full")  # opens, but every write fails with ENOSPC
    for t in range(3):
        writer(IterationEvent(run_id="r", depth=0, t=float(t)))
    writer(RunEnd(run_id="r", depth=0, t=3.0))
    writer.close()  # the unflushed buffer does not raise either
    assert writer.error == "Cannot write the trace /dev/full: No space left on device"
    assert [r.getMessage() for r in caplog.records] == [
        "fathom: Cannot write the trace /dev/full: No space left on device; "
        "the run goes on without a trace."
    ]
    TraceWriter("/dev/full").close()  # the path is free again


@needs_dev_full
def test_a_run_whose_trace_fails_still_answers_without_a_trace_path() -> None:
    result = fathom.RLM(ScriptedLM(["FINAL(42)"]), sandbox="inprocess", trace="/dev/full").run(
        "q", "c")
    assert (result.answer, result.stop_reason, result.trace_path) == ("42", "final", None)
