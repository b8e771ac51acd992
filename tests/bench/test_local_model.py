"""A smoke run of `direct` and `rlm` on the embedded model at 32k, report included.

Scores are not asserted: the 135M model is tiny. The run is bounded (a 1k-token window,
32-token replies, one iteration, a time limit per row) so it stays short.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fathom.bench.results import RESULTS, read_rows
from fathom.cli import main
from tests.lm.conftest import bundled_weights

pytestmark = pytest.mark.llamacpp


def test_direct_and_rlm_run_on_the_local_model(tmp_path: Path) -> None:
    bundled_weights()  # skip (or fail in CI) without llama.cpp and the weights
    runner = CliRunner()
    result = runner.invoke(main, [
        "bench", "run", "--tasks", "niah", "--sizes", "32k", "--methods", "direct,rlm",
        "--model", "local", "--max-iterations", "1", "--max-output-tokens", "32",
        "--context-window", "1024", "--row-seconds", "30", "--sandbox", "inprocess",
        "-o", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / RESULTS)
    assert [r["method"] for r in rows] == ["direct", "rlm"]
    direct = rows[0]
    assert direct["notes"]["truncated"] is True  # 32k tokens into a 1k window
    for row in rows:
        assert row["model"] == "local" and 0.0 <= row["score"] <= 1.0
        assert row["stop_reason"] in ("final", "max_iterations", "budget", "error")
        assert (tmp_path / row["trace"]).stat().st_size > 0
    report = runner.invoke(main, ["bench", "report", str(tmp_path)])
    assert report.exit_code == 0, report.output
    text = (tmp_path / "report.md").read_text()
    assert "| model | family | method | 32k |" in text
    for method in ("direct", "rlm"):
        line = next(line for line in text.splitlines() if f"| `local` | niah | {method} |" in line)
        assert "(n=1" in line
