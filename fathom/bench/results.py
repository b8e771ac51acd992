"""`results.jsonl`: one row a line, appended whole and flushed, read back tolerantly.

A run that is killed can leave at most one cut line at the end; reading skips it and
the next append first cuts it off, so a resumed run redoes that row and nothing else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS = "results.jsonl"


def row_key(row: dict[str, Any]) -> str:
    """What makes two rows the same row: task, size, seed, method and models."""
    return "/".join(
        str(row.get(field)) for field in ("task", "size", "seed", "method", "model", "sub_model")
    )


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every whole row of a results file, in order; a cut or unreadable line is skipped."""
    if not path.exists():
        return []
    rows = []
    with path.open("rb") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def latest_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The last row written for each key (a retried row replaces the earlier one)."""
    return {row_key(row): row for row in read_rows(path)}


class ResultsFile:
    """Appends rows to `DIR/results.jsonl`, each as one write of one whole line."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / RESULTS
        directory.mkdir(parents=True, exist_ok=True)
        self._cut_partial_line()

    def _cut_partial_line(self) -> None:
        """Drop an unfinished last line (a killed run's), so the next row starts a line."""
        if not self.path.exists():
            return
        with self.path.open("rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            end = size
            while end > 0:  # back, block by block, to the last newline
                start = max(0, end - 2**16)
                handle.seek(start)
                newline = handle.read(end - start).rfind(b"\n")
                if newline >= 0:
                    handle.truncate(start + newline + 1)
                    return
                end = start
            handle.truncate(0)

    def append(self, row: dict[str, Any]) -> None:
        """Write `row` as one line, in one O_APPEND write, and flush it to disk."""
        line = (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
