"""The report: aggregates per family x method x size, the paper's figures beside them, plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fathom.bench import report
from fathom.bench.results import ResultsFile
from fathom.errors import ConfigError


def _row(task: str, size: int, seed: int, method: str, score: float, usd: float) -> dict[str, Any]:
    return {"task": task, "size": size, "seed": seed, "method": method, "model": "m",
            "sub_model": "m", "score": score, "usd": usd, "seconds": 1.0, "prompt_tokens": 100,
            "output_tokens": 10, "stop_reason": "final"}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = ResultsFile(tmp_path)
    for size in (32_000, 1_000_000):
        for seed in range(2):
            out.append(_row("oolong", size, seed, "rlm", 1.0 if seed else 0.5, 0.02))
            out.append(_row("niah", size, seed, "direct", 0.0, 0.01))
    out.append(_row("niah", 32_000, 0, "direct", 1.0, 0.01))  # a retried row replaces the first
    return tmp_path


def test_report_has_means_the_papers_figures_and_plots(results: Path) -> None:
    path, aggregates = report.write(results)
    cells = {(a.family, a.method, a.size): a for a in aggregates}
    assert cells[("oolong", "rlm", 32_000)].score == 0.75
    assert cells[("oolong", "rlm", 32_000)].rows == 2
    assert cells[("niah", "direct", 32_000)].score == 0.5  # seed 0 retried: 1.0, seed 1: 0.0
    assert cells[("oolong", "rlm", 32_000)].paper_score == 56.0
    assert cells[("niah", "direct", 32_000)].paper_score is None  # the paper has no niah
    text = path.read_text()
    assert "| model | family | method | 32k | 1m | paper's figure (paper's data) |" in text
    assert ("| `m` | oolong | rlm | 75.0 $0.02 (n=2) | 75.0 $0.02 (n=2) "
            "| 56 $0.43 (OOLONG / RLM, depth 1) |") in text
    assert "| `m` | niah | direct | 50.0 $0.01 (n=2) | 0.0 $0.01 (n=2) |  |" in text
    assert "arXiv 2512.24601 v3, Table 1" in text and "paper's data" in text
    assert "| RLM, depth 2 | 66 $0.15 | 92 $0.55 | 56.5 $1.10 | 65.5 $0.33 |" in text
    for plot in (report.SCORE_PLOT, report.COST_PLOT):
        assert (results / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({plot})" in text


def test_json_aggregates_are_plain(results: Path) -> None:
    data = report.to_json(report.aggregate(report.load(results)))
    assert {"family", "method", "size", "score", "usd", "paper_score"} <= data[0].keys()


def test_an_empty_directory_says_to_run_first(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fathom bench run"):
        report.write(tmp_path)


@pytest.mark.parametrize(("tokens", "label"), [(32_000, "32k"), (1_000_000, "1m"),
                                               (16_000_000, "16m"), (1_500, "1.5k"), (999, "999")])
def test_size_labels(tokens: int, label: str) -> None:
    assert report.size_label(tokens) == label
