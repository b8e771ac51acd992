"""Replaying recorded traces with ScriptedLM: the same answer back, and mismatches found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fathom
from fathom.errors import LMError, TraceError
from fathom.lm import ScriptedLM
from fathom.lm.base import Message
from fathom.replay import load_recording, replay
from tests.viewer.recorded_runs import DIARY, depth2_run


def test_depth2_run_replays_to_the_same_answer(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    depth2_run(trace)
    again = tmp_path / "again.jsonl"
    report = replay(trace, sandbox="inprocess", trace=again)
    assert report.matches, report.summary()
    assert report.replayed_answer == "Lisbon"
    assert report.root_replies == 5 and report.unused_root_replies == 0
    assert report.sub_replies == 5 and report.unmatched_prompts == []
    # The replay made the same calls: same sub-call prompts and replies, same run shape.
    def calls(path: Path) -> list[tuple[int, str, str, str]]:
        events = [json.loads(line) for line in path.read_text().splitlines()]
        return sorted((e["depth"], e["role"], e["prompt"], e["response"])
                      for e in events if e["type"] == "lm_call")
    assert calls(again) == calls(trace)


def test_replay_in_the_subprocess_sandbox(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    depth2_run(trace)
    assert replay(trace).matches  # the default sandbox: code runs in a worker process


def test_a_changed_reply_is_reported_as_a_mismatch(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    depth2_run(trace)
    trace.write_text(trace.read_text().replace("FINAL(Lisbon)", "FINAL(Porto)"))
    report = replay(trace, sandbox="inprocess")
    assert not report.matches
    assert report.original_answer == "Lisbon" and report.replayed_answer == "Porto"
    assert report.summary().startswith("MISMATCH")


def test_failed_sub_calls_fail_again_in_the_replay(tmp_path: Path) -> None:
    def sub(messages: list[Message]) -> str:
        if "bad" in messages[-1]["content"]:
            raise LMError("the provider is down")
        return "fine"

    root = ScriptedLM([
        "```repl\nr = llm_query_batched(['good', 'bad'])\n"
        "FINAL(' / '.join(x if x == 'fine' else 'failed' for x in r))\n```"
    ], name="scripted:root")
    trace = tmp_path / "run.jsonl"
    result = fathom.RLM(model=root, sub_model=ScriptedLM(sub, name="scripted:sub"),
                        sandbox="inprocess", trace=trace).run("q", "ctx")
    assert result.answer == "fine / failed"
    report = replay(trace, sandbox="inprocess")
    assert report.matches, report.summary()


def test_budget_stopped_run_stops_at_the_same_place(tmp_path: Path) -> None:
    root = ScriptedLM(["```repl\nprint(llm_query('a'))\nprint(llm_query('b'))\n```",
                       "FINAL(too late)"], name="scripted:root")
    trace = tmp_path / "run.jsonl"
    result = fathom.RLM(model=root, sub_model=ScriptedLM(["x", "y"], name="scripted:sub"),
                        sandbox="inprocess", trace=trace,
                        budget=fathom.Budget(calls=2)).run("q", "ctx")
    assert result.stop_reason == "budget"
    report = replay(trace, sandbox="inprocess")
    assert report.replayed_stop_reason == "budget"
    assert report.matches, report.summary()


def test_context_from_a_file_is_read_again_or_must_be_given(tmp_path: Path) -> None:
    source = tmp_path / "diary.txt"
    source.write_text(DIARY * 20)  # longer than the 500-character preview
    root = ScriptedLM(["```repl\nFINAL(str(context.count('Lisbon')))\n```"], name="scripted:root")
    trace = tmp_path / "run.jsonl"
    fathom.RLM(model=root, sandbox="inprocess", trace=trace).run("How often?", source)
    assert replay(trace, sandbox="inprocess").replayed_answer == "20"
    moved = tmp_path / "moved.txt"
    source.rename(moved)
    with pytest.raises(TraceError, match="--context"):
        replay(trace, sandbox="inprocess")
    assert replay(trace, sandbox="inprocess", context=moved).matches


def test_recording_keys_sub_replies_by_prompt(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    depth2_run(trace)
    script = load_recording(trace).script
    assert script([{"role": "user", "content": "Name the last city in: June. Marta moved to "
                    "Lisbon and loves the trams."}]) == "Lisbon"
    with pytest.raises(LMError, match="no reply recorded"):
        script([{"role": "user", "content": "never asked"}])


def test_not_a_trace(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TraceError, match="no run_start"):
        replay(empty)


def test_sub_call_prompts_longer_than_the_trace_keeps_are_matched_by_hash(tmp_path: Path) -> None:
    long_prompt = "chunk " * 30_000  # 180,000 characters: the trace keeps its head and tail
    root = ScriptedLM(["```repl\nFINAL(llm_query('chunk ' * 30_000) + llm_query('short'))\n```"],
                      name="scripted:root")
    sub = ScriptedLM(lambda m: str(len(m[-1]["content"])), name="scripted:sub")
    trace = tmp_path / "run.jsonl"
    fathom.RLM(model=root, sub_model=sub, sandbox="inprocess", trace=trace).run("q", "ctx")
    script = load_recording(trace).script
    assert script([{"role": "user", "content": long_prompt}]) == "180000"
    with pytest.raises(LMError, match="no reply recorded"):  # the cut text is not the prompt
        script([{"role": "user", "content": long_prompt[:-1]}])
    assert replay(trace, sandbox="inprocess").matches


def test_a_model_reply_the_trace_cut_fails_the_replay_clearly(tmp_path: Path) -> None:
    code = "x = 1  # " + "c" * 70_000 + "\nFINAL('done')"
    root = ScriptedLM([f"```repl\n{code}\n```"], name="scripted:root")
    trace = tmp_path / "run.jsonl"
    assert fathom.RLM(model=root, sandbox="inprocess", trace=trace).run("q", "ctx").answer == "done"
    report = replay(trace, sandbox="inprocess")
    assert not report.matches
    assert report.error is not None and "the trace cut this" in report.error


def _count_run(trace: Path, context: object) -> str:
    """Record a run answering with len(context) and the count of 'Lisbon' in it."""
    code = ("text = context if isinstance(context, str) else ''.join(context.values())\n"
            "FINAL(f\"{len(context)} {text.count('Lisbon')}\")")
    root = ScriptedLM([f"```repl\n{code}\n```"], name="scripted:root")
    return fathom.RLM(model=root, sandbox="inprocess", trace=trace).run("How often?",
                                                                         context).answer


def _diaries(folder: Path) -> Path:
    folder.mkdir()
    for name in ("a.txt", "b.txt", "c.md"):
        (folder / name).write_text(DIARY * 3)
    return folder


def test_a_directory_input_is_read_again(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    folder = _diaries(tmp_path / "notes")
    assert _count_run(trace, fathom.Context.from_paths([str(folder)])) == "3 9"
    report = replay(trace, sandbox="inprocess")
    assert report.matches, report.summary()


def test_a_glob_input_is_read_again(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    folder = _diaries(tmp_path / "notes")
    assert _count_run(trace, fathom.Context.from_paths([str(folder / "*.txt")])) == "2 6"
    (folder / "d.txt").write_text(DIARY)  # the pattern would match more files today
    report = replay(trace, sandbox="inprocess")
    assert report.matches and report.replayed_answer == "2 6", report.summary()


def test_a_relative_path_is_resolved_when_recorded(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    trace = tmp_path / "run.jsonl"
    _diaries(tmp_path / "notes")
    monkeypatch.chdir(tmp_path / "notes")
    _count_run(trace, fathom.Context.from_paths(["a.txt"]))
    monkeypatch.chdir(tmp_path)  # "a.txt" names nothing here
    assert replay(trace, sandbox="inprocess").matches


def test_stdin_must_be_given_again_and_is_checked(tmp_path: Path) -> None:
    import io

    trace = tmp_path / "run.jsonl"
    with fathom.Context.from_stdin(io.BytesIO((DIARY * 20).encode())) as context:
        assert _count_run(trace, context).endswith(" 20")
    with pytest.raises(TraceError, match=r"standard input.*--context FILE"):
        replay(trace, sandbox="inprocess")
    saved = tmp_path / "saved.txt"
    saved.write_text(DIARY * 20)
    assert replay(trace, sandbox="inprocess", context=saved).matches
    saved.write_text(DIARY * 19)
    with pytest.raises(TraceError, match="not the one the run read"):
        replay(trace, sandbox="inprocess", context=saved)


def test_a_changed_input_is_refused(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    folder = _diaries(tmp_path / "notes")
    _count_run(trace, fathom.Context.from_paths([str(folder)]))
    (folder / "a.txt").write_text("changed")
    with pytest.raises(TraceError, match="sha256 differs"):
        replay(trace, sandbox="inprocess")


def test_cli_replays_a_directory_run(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fathom.cli import main

    trace = tmp_path / "run.jsonl"
    folder = _diaries(tmp_path / "notes")
    _count_run(trace, fathom.Context.from_paths([str(folder)]))
    out = CliRunner().invoke(main, ["replay", str(trace), "--sandbox", "inprocess"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("MATCH")


def test_an_interrupted_trace_is_reported_as_interrupted(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    depth2_run(trace)
    lines = trace.read_text().splitlines(keepends=True)
    last_end = max(i for i, line in enumerate(lines) if '"type": "run_end"' in line)
    trace.write_text("".join(lines[:last_end]))  # the root's run_end is the last one
    report = replay(trace, sandbox="inprocess")
    assert report.interrupted and not report.matches
    assert report.verdict == "INTERRUPTED"
    assert report.summary().startswith("INTERRUPTED: the recorded run has no end")
    assert "Lisbon" in report.summary()  # how far the replay got


@pytest.mark.parametrize("many", [False, True], ids=["file", "folder"])
def test_an_input_read_in_a_named_encoding_is_read_the_same_way_again(
    tmp_path: Path, many: bool
) -> None:
    trace = tmp_path / "run.jsonl"
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_bytes("Café in Lisbon. Lisbon again.".encode("latin-1"))
    target = folder if many else folder / "a.txt"
    context = fathom.Context.from_paths([str(target)], encoding="latin-1")
    code = ("text = context if isinstance(context, str) else ''.join(context.values())\n"
            "FINAL(text[:4])")
    root = ScriptedLM([f"```repl\n{code}\n```"], name="scripted:root")
    answer = fathom.RLM(model=root, sandbox="inprocess", trace=trace).run("q", context).answer
    assert answer == "Café"
    report = replay(trace, sandbox="inprocess")
    assert report.matches and report.replayed_answer == "Café", report.summary()
