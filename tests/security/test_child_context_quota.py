"""Child contexts on the host disk: the parent writes each in-memory child context to a file
before the child's sandbox (and its tmpfs quota) exists, so a run tree's child contexts
share one budget, the sandbox disk quota: one that would pass it is refused (rlm_query
returns "Error: ..." naming the quota) and a child's bytes come back when it ends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import fathom
from fathom.errors import ContextError
from fathom.lm import ScriptedLM
from fathom.lm.base import Completion, Message
from fathom.sources import SpillQuota, ValueSource, spilled_size
from fathom.textfile import spill

MB = 2**20


def repl(code: str) -> str:
    return f"```repl\n{code}\n```\n"


@pytest.mark.parametrize(
    "value",
    ["plain ascii", "é, ü and 漢字", "lone \udc80 surrogate", ["a", {"b": "ü"}, 3.5, None],
     {"k": "v" * 5000, "n": [1, 2, 3]}, ""],
)
def test_the_counted_size_is_what_spill_writes(value: Any, tmp_path: Path) -> None:
    assert spilled_size(value) == spill(value, tmp_path).stat().st_size


def test_a_context_past_the_quota_is_refused_before_it_is_written(tmp_path: Path) -> None:
    quota = SpillQuota(3 * MB)
    first = ValueSource("a" * (2 * MB), quota=quota)
    spec = first.worker_spec(tmp_path)
    assert quota.held == spec["bytes"] == 2 * MB
    second = ValueSource(["b" * MB, "c" * MB], quota=quota)
    with pytest.raises(ContextError, match=r"take 3\.0 MB together \(the sandbox disk quota\)"):
        second.worker_spec(tmp_path)
    assert len(list(tmp_path.iterdir())) == 1  # nothing of the refused one reached the disk
    first.close()
    assert quota.held == 0 and not list(tmp_path.iterdir())
    second.worker_spec(tmp_path)  # the bytes came back: it fits now
    second.close()
    assert quota.held == 0


def test_one_context_bigger_than_the_whole_quota_is_refused(tmp_path: Path) -> None:
    source = ValueSource("x" * (2 * MB), quota=SpillQuota(MB))
    with pytest.raises(ContextError, match=r"takes 2\.0 MB on disk"):
        source.worker_spec(tmp_path)
    source.close()


def test_a_rewritten_spill_is_counted_once(tmp_path: Path) -> None:
    """Sandbox code deleted the file: the next worker start writes it again, same budget."""
    quota = SpillQuota(MB)
    source = ValueSource("y" * 1000, quota=quota)
    Path(source.worker_spec(tmp_path)["path"]).unlink()
    source.worker_spec(tmp_path)
    assert quota.held == 1000 and len(list(tmp_path.iterdir())) == 1
    source.close()
    assert quota.held == 0


class _Children(ScriptedLM):
    """The root's script, then children that answer their context's length after a pause
    (so concurrent children hold their contexts at the same time)."""

    def __init__(self, root: list[str]) -> None:
        super().__init__(self._reply)
        self._root = iter(root)

    def _reply(self, messages: list[Message]) -> str:
        if "Query: child" in messages[1]["content"]:
            return repl("FINAL(str(len(context)))")
        return next(self._root)

    async def acomplete(self, messages: list[Message], **options: Any) -> Completion:
        if "Query: child" in messages[1]["content"]:
            await asyncio.sleep(0.8)
        return await super().acomplete(messages, **options)


@pytest.fixture
def quotas(monkeypatch: pytest.MonkeyPatch) -> list[SpillQuota]:
    """Every run tree's child-context quota, scaled down to 4 MB, with its peak recorded."""
    made: list[SpillQuota] = []

    class Recorded(SpillQuota):
        def __init__(self, limit_bytes: int) -> None:
            super().__init__(limit_bytes)
            self.peak = 0
            made.append(self)

        def reserve(self, size: int) -> None:
            super().reserve(size)
            self.peak = max(self.peak, self.held)

    monkeypatch.setattr("fathom.tree.DISK_QUOTA_MB", 4)
    monkeypatch.setattr("fathom.tree.SpillQuota", Recorded)
    return made


def test_concurrent_children_share_the_quota_and_give_it_back(quotas: list[Any]) -> None:
    lm = _Children([
        # Six children of 1 MB at once: four fit in 4 MB, two are refused.
        repl("r = rlm_query_batched(['child'] * 6, [str(i) * (1 << 20) for i in range(6)])\n"
             "print(sorted(x[:300] for x in r))"),
        # One at a time, each gives its bytes back: all fit.
        repl("print([rlm_query('child', 'z' * (3 << 20)) for _ in range(2)])"),
        repl("FINAL('done')"),
    ])
    seen: list[object] = []
    result = fathom.RLM(lm, sandbox="subprocess", max_depth=1, on_event=seen.append,
                        memory_mb=1024).run("top", "root context")  # fmt: skip
    assert result.answer == "done", result
    outputs = [e.stdout for e in seen if type(e).__name__ == "ExecEvent" and e.depth == 0]
    batch, one_by_one = outputs[0], outputs[1]
    assert batch.count(str(MB)) == 4, batch
    refusal = "Error: rlm_query failed: This context takes 1.0 MB on disk, but the child "
    assert batch.count(refusal) == 2, batch
    assert batch.count("may take 4.0 MB together (the sandbox disk quota)") == 2, batch
    assert one_by_one.strip() == str([str(3 * MB)] * 2), one_by_one
    (quota,) = quotas
    assert quota.held == 0 and 3 * MB <= quota.peak <= 4 * MB
