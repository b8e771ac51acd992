"""Sessions: one context and sandbox, many questions; REPL state, history, save and load.

Through the subprocess sandbox (the default), with ScriptedLM playing the root model.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path

import pytest

import fathom
from fathom.lm import ScriptedLM
from fathom.lm.base import Message
from fathom.trace import LMCall


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def first_user(messages: list[Message]) -> str:
    return next(m for m in messages if m["role"] == "user")["content"]


def test_variables_and_history_persist_between_questions(tmp_path: Path) -> None:
    root = ScriptedLM([
        repl("index = {w: i for i, w in enumerate(context.split())}\nFINAL(len(index))"),
        repl("FINAL(f\"{index['gamma']} after {history[0]['question']!r}\")"),
    ])
    rlm = fathom.RLM(root, trace=tmp_path / "run.jsonl")
    with rlm.session("alpha beta gamma") as s:
        first = s.ask("How many words?")
        second = s.ask("Where is gamma?")
    assert first.answer == "3"
    assert second.answer == "2 after 'How many words?'"
    assert s.history == [{"question": "How many words?", "answer": "3"},
                         {"question": "Where is gamma?", "answer": second.answer}]
    # The second question is told what exists, never the contents.
    told = first_user(root.calls[1])
    assert "- index: dict, 3 keys" in told and "`history`" in told
    assert "alpha': 0" not in told
    assert "continues a session" not in first_user(root.calls[0])
    # One trace and one usage per question; the session sums them.
    assert (first.trace_path, second.trace_path) == (str(tmp_path / "run.1.jsonl"),
                                                     str(tmp_path / "run.2.jsonl"))
    assert s.total_usage.calls == first.total_usage.calls + second.total_usage.calls == 2


def test_a_trace_per_ask_and_options_reach_the_run(tmp_path: Path) -> None:
    rlm = fathom.RLM(ScriptedLM([repl("FINAL('x')")]))
    with rlm.session("text") as s:
        result = s.ask("q", trace=tmp_path / "mine.jsonl")
        with pytest.raises(TypeError):
            s.ask("q", no_such_option=1)
    assert result.trace_path == str(tmp_path / "mine.jsonl")
    assert json.loads((tmp_path / "mine.jsonl").read_text().splitlines()[0])["type"]


def test_a_second_question_on_100_mb_does_not_reload_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker loads the context when the session starts; questions never load it again."""
    big = tmp_path / "big.txt"
    with big.open("wb") as out:
        for _ in range(100):
            out.write(b"the quick brown fox jumps over the lazy dog.\n" * (2**20 // 45 + 1))
    context = fathom.Context.from_path(big)
    loads: list[Path] = []
    spec = context.worker_spec
    monkeypatch.setattr(context, "worker_spec", lambda scratch: loads.append(scratch) or
                        spec(scratch))
    rlm = fathom.RLM(ScriptedLM([repl("import os\nFINAL(f'{os.getpid()} {len(context)}')")] * 2))
    with rlm.session(context) as s:
        at_start = len(loads)
        first, second = s.ask("pid?").answer, s.ask("pid again?").answer
        assert len(loads) == at_start  # neither question started a worker or loaded again
    assert first == second and int(first.split()[1]) >= 100 * 2**20
    context.close()


def test_save_load_and_ask_again(tmp_path: Path) -> None:
    root = ScriptedLM([
        repl("import re\ncount = len(re.findall('a', context))\n"
             "def twice(n):\n    return 2 * n + len(context) * 0\n"
             "square = lambda n: n * n\nFINAL(count)"),
        repl("FINAL(f'{twice(count)} {square(count)} {re.sub(\"a\", \"o\", context)} "
             "{history[0][\"answer\"]}')"),
    ])
    rlm = fathom.RLM(root)
    with rlm.session("banana") as s:
        assert s.ask("How many a?").answer == "3"
        report = s.save(tmp_path / "s.fathom")
    assert report.saved == ["count", "re", "square", "twice"] and report.unsaved == {}
    # The file has a hash of the context, not the context.
    assert b"banana" not in (tmp_path / "s.fathom").read_bytes()
    with fathom.Session.load(tmp_path / "s.fathom", rlm, "banana") as again:
        assert again.history == [{"question": "How many a?", "answer": "3"}]
        assert again.ask("And now?").answer == "6 9 bonono 3"
    assert "`history` is a list of the 1 earlier" in first_user(root.calls[1])


def test_a_changed_context_is_refused(tmp_path: Path) -> None:
    rlm = fathom.RLM(ScriptedLM([repl("kept = 1\nFINAL('ok')")]))
    with rlm.session({"a.txt": "one"}) as s:
        s.ask("q")
        s.save(tmp_path / "s.fathom")
    with pytest.raises(fathom.ContextChanged, match="pass that same context"):
        fathom.Session.load(tmp_path / "s.fathom", rlm, {"a.txt": "two"})
    (tmp_path / "other").write_text("hello\n")
    with pytest.raises(fathom.SessionError, match="not a fathom session file"):
        fathom.Session.load(tmp_path / "other", rlm, "x")


def test_a_file_context_is_hashed_by_content(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("first version\n")
    rlm = fathom.RLM(ScriptedLM([repl("FINAL('ok')")]))
    with rlm.session(source) as s:
        s.save(tmp_path / "s.fathom")
    fathom.Session.load(tmp_path / "s.fathom", rlm, source).close()
    source.write_text("second version\n")
    with pytest.raises(fathom.ContextChanged):
        fathom.Session.load(tmp_path / "s.fathom", rlm, source)


def test_unpicklable_variables_are_listed_not_lost_silently(tmp_path: Path) -> None:
    rlm = fathom.RLM(ScriptedLM([
        repl("import threading\nlock = threading.Lock()\nkept = [1, 2]\nFINAL('ok')"),
        repl("FINAL(f\"{kept} {'lock' in globals()}\")"),
    ]))
    with rlm.session("text") as s:
        s.ask("q")
        with pytest.warns(UserWarning, match="could not save 1 variable.*lock"):
            report = s.save(tmp_path / "s.fathom")
    assert "lock" in report.unsaved and "pickle" in report.unsaved["lock"]
    assert "kept" in report.saved
    with pytest.warns(UserWarning, match="could not restore 1 variable.*lock"):
        again = fathom.Session.load(tmp_path / "s.fathom", rlm, "text")
    with again:
        assert again.ask("q2").answer == "[1, 2] False"


def test_the_in_process_sandbox_saves_too(tmp_path: Path) -> None:
    rlm = fathom.RLM(ScriptedLM([repl("kept = {'a': 1}\nFINAL('ok')"), repl("FINAL(kept['a'])")]),
                     sandbox="inprocess")
    with rlm.session("text") as s:
        s.ask("q")
        s.save(tmp_path / "s.fathom")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fathom.Session.load(tmp_path / "s.fathom", rlm, "text") as again:
            assert again.ask("q2").answer == "1"


def test_a_session_is_used_only_while_open() -> None:
    rlm = fathom.RLM(ScriptedLM([repl("FINAL('ok')")]))
    session = rlm.session("text")
    session.close()
    with pytest.raises(fathom.SessionError, match="not started"):
        session.save("never")
    with pytest.raises(fathom.SessionError, match="was closed"):
        session.ask("q")
    with pytest.raises(fathom.ConfigError, match="non-empty"):
        rlm.session("text").ask("  ")


def test_typed_answers_and_citations_are_per_question() -> None:
    pydantic = pytest.importorskip("pydantic")
    City = pydantic.create_model("City", name=(str, ...))
    root = ScriptedLM([
        repl("i = context.index('Lisbon')\nFINAL({'name': cite(i, i + 6)})"),
        repl("FINAL(history[0]['answer']['name'] + ' again')"),
    ])
    with fathom.RLM(root).session("Marta moved to Lisbon.") as s:
        typed = s.ask("Where?", schema=City)
        plain = s.ask("Again?")
    assert typed.answer == City(name="Lisbon") and [c.text for c in typed.citations] == ["Lisbon"]
    assert plain.answer == "Lisbon again" and plain.citations == ()
    assert s.history[0]["answer"] == {"name": "Lisbon"}  # the typed answer, as JSON-like data


def test_async_with_and_aask() -> None:
    rlm = fathom.RLM(ScriptedLM([repl("n = 41\nFINAL(n)"), repl("FINAL(n + 1)")]))

    async def chat() -> list[str]:
        async with rlm.session("text") as s:
            return [(await s.aask("q1")).answer, (await s.aask("q2")).answer]

    assert asyncio.run(chat()) == ["41", "42"]


def test_child_runs_get_sandboxes_of_their_own() -> None:
    def respond(messages: list[Message]) -> str:
        first = messages[1]["content"]
        if "Query: child" in first:
            return repl("FINAL(f\"{len(context)} {'secret' in globals()}\")")
        return repl("secret = 1\nFINAL(rlm_query('child', context='abc'))")

    with fathom.RLM(ScriptedLM(respond)).session("text") as s:
        assert s.ask("q1").answer == "3 False"
        assert s.variables()["secret"] == "int = 1"


def test_a_variable_larger_than_one_channel_message_is_saved_in_chunks(tmp_path: Path) -> None:
    rlm = fathom.RLM(ScriptedLM([
        repl("blob = bytes(range(256)) * 12_000\nFINAL(len(blob))"),  # 3 MB, 1 MB messages
        repl("FINAL(blob == bytes(range(256)) * 12_000)"),
    ]), max_message_mb=1)
    with rlm.session("text") as s:
        assert s.ask("q1").answer == "3072000"
        s.save(tmp_path / "s.fathom")
    assert (tmp_path / "s.fathom").stat().st_size > 3_072_000
    with fathom.Session.load(tmp_path / "s.fathom", rlm, "text") as again:
        assert again.ask("q2").answer == "True"


def test_a_cancelled_question_stops_its_block_and_still_counts() -> None:
    def respond(messages: list[Message]) -> str:
        if "Query: spin" in messages[1]["content"]:
            return repl("import time\nwhile True:\n    time.sleep(0.05)")
        return repl("FINAL('after')")

    rlm = fathom.RLM(ScriptedLM(respond), exec_timeout=60)

    async def scenario() -> tuple[str, int, float]:
        replied = asyncio.Event()
        rlm.on_event = lambda event: replied.set() if isinstance(event, LMCall) else None
        async with rlm.session("text") as s:
            spinning = asyncio.ensure_future(s.aask("spin"))
            await replied.wait()
            await asyncio.sleep(0.3)  # the block is running in the worker now
            spinning.cancel()
            with pytest.raises(asyncio.CancelledError):
                await spinning
            started = asyncio.get_running_loop().time()
            answer = (await s.aask("next")).answer  # not kept waiting for the 60 s timeout
            waited = asyncio.get_running_loop().time() - started
            return answer, s.total_usage.calls, waited

    answer, calls, waited = asyncio.run(scenario())
    assert answer == "after" and calls == 2 and waited < 30
