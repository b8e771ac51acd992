"""The runner: one row per (task, size, seed, method), resume, the dollar budget, bad arguments."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fathom.bench import runner
from fathom.bench.executors import LocalExecutor
from fathom.bench.methods import Limits
from fathom.bench.results import RESULTS, read_rows
from fathom.errors import AuthenticationError, ConfigError, LMError
from fathom.lm import LM, ScriptedLM
from fathom.trace import read as read_trace
from tests.bench.fakes import Scripted, install, respond

ROW_FIELDS = {
    "task", "size", "seed", "method", "model", "score", "expected", "answer", "prompt_tokens",
    "output_tokens", "usd", "seconds", "iterations", "stop_reason", "trace",
}


@pytest.fixture(autouse=True)
def secret_family(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch)


def plan(methods: str = "direct,bm25,summarize,repl,rlm,rlm2", **models: float) -> runner.Plan:
    return runner.Plan.parse("secret", "2k,4k", 2, methods, Scripted(**models),
                             Limits(sandbox="inprocess", max_iterations=3))


def test_every_row_is_written_with_its_trace(tmp_path: Path) -> None:
    state = runner.run(plan(), tmp_path, LocalExecutor(), concurrency=2)
    rows = read_rows(tmp_path / RESULTS)
    assert state.done == len(rows) == 2 * 2 * 6 and state.skipped == 0
    for row in rows:
        assert row.keys() >= ROW_FIELDS
        assert row["score"] == 1.0, row
        assert row["stop_reason"] == "final" and row["prompt_tokens"] > 0
        events = read_trace(tmp_path / row["trace"])
        assert events[0].type == "run_start" and events[-1].type == "run_end"
    assert {r["method"] for r in rows} == {"direct", "bm25", "summarize", "repl", "rlm", "rlm2"}
    assert len({r["trace"] for r in rows}) == len(rows)


def test_direct_reports_truncation_to_the_window(tmp_path: Path) -> None:
    small = runner.Plan.parse("secret", "8k", 1, "direct", Scripted(context_window=2_000),
                              Limits(sandbox="inprocess"))
    runner.run(small, tmp_path, LocalExecutor())
    (row,) = read_rows(tmp_path / RESULTS)
    notes = row["notes"]
    assert notes["truncated"] is True and notes["kept_chars"] < 8_000 < notes["input_chars"]
    assert row["score"] == 0.0  # the needle sat in the half that was cut


def test_a_second_run_redoes_nothing_and_a_cut_last_line_is_redone(tmp_path: Path) -> None:
    first = runner.run(plan("direct,rlm"), tmp_path, LocalExecutor())
    again = runner.run(plan("direct,rlm"), tmp_path, LocalExecutor())
    assert again.skipped == again.total == first.done == 8 and again.done == 0
    # A run killed while writing leaves half a line: that row alone runs again.
    path = tmp_path / RESULTS
    data = path.read_bytes()
    path.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1] + b'{"task": "secr')
    resumed = runner.run(plan("direct,rlm"), tmp_path, LocalExecutor())
    assert resumed.skipped == 7 and resumed.done == 1
    lines = path.read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(line) for line in lines)


def test_max_usd_bounds_the_whole_run(tmp_path: Path) -> None:
    # Each row costs about $0.001 at $1 per million tokens (2k tokens of input).
    state = runner.run(plan("direct", usd_per_million=1.0), tmp_path, LocalExecutor(),
                       max_usd=0.0025)
    assert 0 < state.done < 4 and state.not_started == 4 - state.done
    assert state.usd <= 0.0025 * 1.5  # at most the last call in flight goes over
    resumed = runner.run(plan("direct", usd_per_million=1.0), tmp_path, LocalExecutor())
    assert resumed.done == 4 - state.done  # the rows left out run later


@pytest.mark.parametrize(
    ("tasks", "sizes", "methods", "named"),
    [("nope", "2k", "rlm", "niah"), ("secret", "2x", "rlm", "32k"),
     ("secret", "2k", "rlm3", "rlm2"), ("", "2k", "rlm", "--tasks")],
)
def test_bad_arguments_name_the_valid_values(tasks: str, sizes: str, methods: str,
                                             named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        runner.Plan.parse(tasks, sizes, 1, methods, Scripted())


@dataclass(frozen=True)
class Failing:
    """A ModelSource whose model raises `error` on every call."""

    error: Exception
    name: str = "failing"
    sub_name: str = "failing"

    def build(self, family: str, seed: int) -> tuple[LM, LM]:
        lm = ScriptedLM(lambda messages: (_ for _ in ()).throw(self.error), name=self.name)
        return lm, lm


@pytest.mark.parametrize("method", ["direct", "summarize", "rlm"])
def test_a_failing_model_is_the_rows_outcome(tmp_path: Path, method: str) -> None:
    failing = runner.Plan.parse("secret", "2k", 1, method, Failing(LMError("server down")),
                                Limits(sandbox="inprocess"))
    runner.run(failing, tmp_path, LocalExecutor())
    (row,) = read_rows(tmp_path / RESULTS)
    assert row["stop_reason"] == "error" and "server down" in row["error"]
    assert row["score"] == 0.0


@pytest.mark.parametrize("method", ["direct", "rlm"])
def test_a_rejected_key_stops_the_run(tmp_path: Path, method: str) -> None:
    rejected = runner.Plan.parse("secret", "2k", 2, method,
                                 Failing(AuthenticationError("key rejected: set OPENAI_API_KEY")),
                                 Limits(sandbox="inprocess"))
    with pytest.raises(AuthenticationError, match="key rejected"):
        runner.run(rejected, tmp_path, LocalExecutor())
    assert read_rows(tmp_path / RESULTS) == []  # no row of errors to redo later


@dataclass(frozen=True)
class SlowOnOddSeeds:
    """Scripted models that answer at once for even seeds and take a minute for odd ones."""

    name: str = "slow"
    sub_name: str = "slow"

    def build(self, family: str, seed: int) -> tuple[LM, LM]:
        lm = ScriptedLM(respond, name=self.name, latency=60.0 if seed % 2 else 0.0)
        return lm, lm


def test_an_interrupted_run_cancels_its_running_rows(tmp_path: Path) -> None:
    plan = runner.Plan.parse("secret", "2k", 2, "direct,rlm", SlowOnOddSeeds(),
                             Limits(sandbox="inprocess"))

    def interrupt(row: dict[str, object], state: runner.RunState) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the slow rows are running

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run(plan, tmp_path, LocalExecutor(), concurrency=4, on_row=interrupt)
    deadline = time.monotonic() + 10
    while any(t.name.startswith("fathom-bench") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a cancelled row is still running"
        time.sleep(0.1)
    assert time.monotonic() - started < 15
    assert len(read_rows(tmp_path / RESULTS)) == 1  # the row that finished is kept
