"""The non-RLM methods: what BM25 retrieves, how the summary agent carries notes, input text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fathom.bench import runner
from fathom.bench.executors import LocalExecutor
from fathom.bench.methods import Limits
from fathom.bench.methods.base import chunk_text, context_text, read_answer
from fathom.bench.results import RESULTS, read_rows
from fathom.trace import read as read_trace
from tests.bench.fakes import Scripted, install


@pytest.fixture(autouse=True)
def secret_family(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch)


def one_row(tmp_path: Path, method: str, size: str, **models: int) -> dict[str, Any]:
    plan = runner.Plan.parse("secret", size, 1, method, Scripted(**models), Limits())
    runner.run(plan, tmp_path, LocalExecutor())
    (row,) = read_rows(tmp_path / RESULTS)
    return row


def test_bm25_reads_the_chunks_that_match_the_query(tmp_path: Path) -> None:
    row = one_row(tmp_path, "bm25", "64k")
    notes = row["notes"]
    assert notes["retrieved"] == 20 and notes["chunks"] >= 64
    assert row["score"] == 1.0  # the needle's chunk was among the 20 read
    assert row["calls"] == 1


def test_summarize_carries_what_it_read_in_notes_across_parts(tmp_path: Path) -> None:
    row = one_row(tmp_path, "summarize", "16k", context_window=4_000)
    parts = row["notes"]["parts"]
    assert parts > 4 and row["calls"] == parts + 1 and row["iterations"] == parts + 1
    assert row["score"] == 1.0  # the number, seen in one part, survived to the answer
    events = read_trace(tmp_path / str(row["trace"]))
    assert sum(e.type == "lm_call" for e in events) == parts + 1


def test_context_text_reads_every_kind_of_input() -> None:
    assert context_text("plain") == "plain"
    assert context_text({"a.py": "x = 1", "b.py": "y = 2"}) == "### a.py\nx = 1\n\n### b.py\ny = 2"
    assert context_text(["one", {"k": 2}]) == 'one\n{"k": 2}'


def test_chunks_cover_the_text_and_end_at_lines() -> None:
    text = "".join(f"line {i}\n" for i in range(1000))
    chunks = chunk_text(text, 100)
    assert "".join(chunks) == text
    assert all(len(c) <= 100 and c.endswith("\n") for c in chunks)
    assert chunk_text("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]


def test_the_answer_is_the_final_or_the_words_outside_code() -> None:
    assert read_answer("Thinking...\nFINAL(42)") == "42"
    assert read_answer("It is 42.\n```python\nprint(1)\n```") == "It is 42."
