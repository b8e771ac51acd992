"""fathom.progress as an on_event sink: plain lines, the live panel, thread safety, quiet."""

from __future__ import annotations

import io
import threading
from pathlib import Path

from rich.console import Console

import fathom
from fathom.lm import ScriptedLM
from fathom.progress import Progress, call_counts, shorten_code
from fathom.trace import LMCall, LMCallStart, read
from tests.viewer.recorded_runs import DIARY, QUERY, failing_run, models


def test_plain_lines_follow_a_real_depth2_run() -> None:
    stream = io.StringIO()
    progress = Progress("plain", stream=stream)
    root, sub = models()
    result = fathom.RLM(model=root, sub_model=sub, sandbox="inprocess", max_depth=2,
                        on_event=progress).run(QUERY, DIARY)
    progress.summary(result)
    text = stream.getvalue()
    assert "run started: model scripted:root, context str of 164 chars" in text
    assert "iteration 3" in text
    assert "    child RLM started (depth 2): Which city is named last" in text  # indented by depth
    assert "code ran in" in text and "sub-calls so far 5 done, 0 failed" in text
    assert "run ended: final after 3 iteration(s)" in text
    assert "scripted:sub: 5 calls" in text  # the summary, per model
    assert "\x1b" not in text


def test_live_panel_shows_iteration_code_calls_and_cost() -> None:
    progress = Progress("live", stream=io.StringIO())
    root, sub = models()
    fathom.RLM(model=root, sub_model=sub, sandbox="inprocess", max_depth=2,
               on_event=progress).run(QUERY, DIARY)
    progress(LMCallStart(run_id="x", depth=1, t=0.0, role="sub", call_id="c-open"))
    console = Console(file=io.StringIO(), width=100, record=True, color_system=None)
    console.print(progress.render())
    panel = " ".join(console.export_text().split())  # column widths vary with the labels
    assert "fathom · scripted:root" in panel
    assert "iteration 3 / 30" in panel
    assert "1 in flight, 5 done, 0 failed" in panel
    assert "child RLMs 0 running, 2 done" in panel
    assert "FINAL(llm_query('Name the last city in: ' + context))" in panel  # the code last run
    assert "$0.00" in panel


def test_events_from_many_threads_are_all_counted() -> None:
    progress = Progress("plain", stream=io.StringIO())
    per_thread, threads = 2000, 8

    def feed(n: int) -> None:
        for i in range(per_thread):
            call = f"{n}-{i}"
            progress(LMCallStart(run_id="r", depth=0, t=0.0, role="sub", call_id=call))
            error = "Error: x" if i % 10 == 0 else None
            progress(LMCall(run_id="r", depth=0, t=0.0, role="sub", call_id=call, prompt_tokens=3,
                            completion_tokens=1, usd=0.001, error=error))

    workers = [threading.Thread(target=feed, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    state = progress.state
    assert state.sub_done == per_thread * threads
    assert state.sub_failed == per_thread * threads // 10
    assert state.sub_in_flight == 0
    assert state.prompt_tokens == 3 * per_thread * threads
    assert abs(state.usd - 0.001 * per_thread * threads) < 1e-6


def test_quiet_writes_nothing(tmp_path: Path) -> None:
    stream = io.StringIO()
    progress = Progress("quiet", stream=stream)
    root = ScriptedLM(["FINAL(ok)"])
    with progress.running():
        result = fathom.RLM(model=root, sandbox="inprocess", on_event=progress).run("q", "c")
    progress.summary(result)
    assert stream.getvalue() == ""


def test_auto_mode_is_plain_off_a_terminal() -> None:
    assert Progress("auto", stream=io.StringIO()).mode == "plain"


def test_shorten_code_keeps_the_head_and_says_what_was_cut() -> None:
    code = "\n".join(f"line_{i} = {'x' * 200}" for i in range(20))
    short = shorten_code(code, lines=3, width=40)
    rows = short.splitlines()
    assert len(rows) == 4 and rows[-1] == "# … 17 more lines"
    assert all(len(r) <= 40 for r in rows[:3])


def test_the_last_chance_answer_is_not_shown_as_code_to_run() -> None:
    stream = io.StringIO()
    root = fathom.lm.ScriptedLM(["```repl\nx = 1\n```", "```repl\nFINAL(x)\n```"])
    fathom.RLM(root, sandbox="inprocess", max_iterations=1,
               on_event=Progress("plain", stream=stream)).run("q", "c")
    text = stream.getvalue()
    assert "model gave its last answer" in text
    assert text.count("running 1 code block(s)") == 1


def test_panel_shows_the_runs_max_depth_not_the_deepest_seen() -> None:
    progress = Progress("live", stream=io.StringIO())
    fathom.RLM(model=ScriptedLM(["FINAL(x)"]), sandbox="inprocess",
               on_event=progress).run("q", "ctx")  # max_depth defaults to 1
    console = Console(file=io.StringIO(), width=100, record=True, color_system=None)
    console.print(progress.render())
    assert "depth 0 (max 1)" in console.export_text()


def test_summary_counts_calls_by_the_rule_the_viewer_uses(tmp_path: Path) -> None:
    stream = io.StringIO()
    progress = Progress("plain", stream=stream)
    trace = tmp_path / "run.jsonl"
    result = failing_run(trace, on_event=progress)
    assert result.total_usage.calls == 3  # usage counts only the calls that reached a model
    progress.summary(result)
    counts = call_counts(read(trace))
    assert (counts.calls, counts.failed, counts.refused) == (5, 1, 1)
    assert f"total: {counts}," in stream.getvalue()
    assert "total: 5 calls (1 failed, 1 refused)" in stream.getvalue()


def test_table_summary_has_failed_and_refused_columns(tmp_path: Path) -> None:
    stream = io.StringIO()
    progress = Progress("live", stream=stream)
    result = failing_run(tmp_path / "run.jsonl", on_event=progress)
    progress.summary(result)
    text = stream.getvalue()
    assert "refused" in text and "failed" in text


def test_panel_shows_a_batch_with_its_total() -> None:
    progress = Progress("live", stream=io.StringIO())
    calls = [f"c{i}" for i in range(208)]
    for call in calls:
        progress(LMCallStart(run_id="r", depth=0, t=0.0, role="sub", call_id=call,
                             batch_id="r-b1", batch_size=672))
    for call in calls[:192]:
        progress(LMCall(run_id="r", depth=0, t=0.0, role="sub", call_id=call, batch_id="r-b1"))
    console = Console(file=io.StringIO(), width=120, record=True, color_system=None)
    console.print(progress.render())
    panel = " ".join(console.export_text().split())
    assert "16 in flight, 192 done, 0 failed; batch 192/672 done" in panel


def test_a_real_batch_carries_its_size_on_every_call_start() -> None:
    events: list[object] = []
    root = ScriptedLM(["```repl\nr = llm_query_batched(['a', 'b', 'c'])\nFINAL(len(r))\n```"])
    fathom.RLM(model=root, sandbox="inprocess", on_event=events.append).run("q", "c")
    starts = [e for e in events if isinstance(e, LMCallStart) and e.role == "sub"]
    assert len(starts) == 3 and {(e.batch_size, e.batch_id) for e in starts} == {
        (3, starts[0].batch_id)
    }


def test_panel_shows_the_concurrency_limit_and_plain_lines_tell_its_cuts() -> None:
    from fathom.trace import ConcurrencyEvent

    stream = io.StringIO()
    progress = Progress("plain", stream=stream)
    for previous, limit, reason in [(0, 32, "start"), (32, 64, "grow"), (64, 44, "throttled")]:
        progress(ConcurrencyEvent(run_id="r", depth=0, t=0.0, endpoint="openai:h:m",
                                  limit=limit, previous=previous, reason=reason, in_flight=49))
    assert stream.getvalue().count("concurrency") == 1  # growth is shown, not logged
    assert "concurrency 64 -> 44 (throttled, 49 in flight)" in stream.getvalue()
    console = Console(file=io.StringIO(), width=100, record=True, color_system=None)
    console.print(progress.render())
    assert "concurrency 44" in " ".join(console.export_text().split())
