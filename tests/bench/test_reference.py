"""The paper's Table 1 as shipped, and how fathom's families and methods map onto it."""

from __future__ import annotations

import pytest

from fathom.bench import reference
from fathom.bench.methods import methods

# arXiv 2512.24601 v3, Table 1, as issue 9 quotes it: (score, mean usd) per benchmark.
TABLE_1 = {
    "base model": [(24.0, 0.13), (0.0, None), (44.0, 0.14), (0.1, 0.16)],
    "CodeAct + BM25": [(22.0, 0.06), (51.0, 0.71), (38.0, 0.61), (24.7, 0.75)],
    "summary agent": [(58.0, 1.31), (70.5, 0.57), (46.0, 0.13), (0.1, 0.13)],
    "RLM, no sub-calls": [(58.0, 0.18), (88.0, 0.44), (36.0, 0.37), (43.9, 0.69)],
    "RLM, depth 1": [(62.0, 0.11), (91.3, 0.99), (56.0, 0.43), (58.0, 0.33)],
    "RLM, depth 2": [(66.0, 0.15), (92.0, 0.55), (56.5, 1.10), (65.5, 0.33)],
}
BENCHMARKS = ["CodeQA", "BrowseComp-Plus", "OOLONG", "OOLONG-Pairs"]


def test_the_shipped_table_is_the_papers() -> None:
    data = reference.table()
    assert list(data["benchmarks"]) == BENCHMARKS
    for method, cells in TABLE_1.items():
        for benchmark, (score, usd) in zip(BENCHMARKS, cells, strict=True):
            assert data["methods"][method][benchmark] == {"score": score, "usd": usd}
    assert "arXiv 2512.24601 v3, Table 1" in reference.citation()
    assert "GPT-5-mini" in reference.citation()


def test_every_method_has_its_paper_counterpart() -> None:
    assert [reference.METHODS[m.name] for m in methods()] == list(TABLE_1)


@pytest.mark.parametrize(("family", "method", "score", "usd"), [
    ("oolong", "direct", 44.0, 0.14), ("pairs", "rlm2", 65.5, 0.33),
    ("multihop", "direct", 0.0, None), ("codeqa", "summarize", 58.0, 1.31),
])
def test_figure_matches_family_and_method(family: str, method: str, score: float,
                                          usd: float | None) -> None:
    figure = reference.figure(family, method)
    assert figure is not None and (figure.score, figure.usd) == (score, usd)


def test_families_the_paper_lacks_have_no_figure() -> None:
    assert reference.figure("niah", "rlm") is None
    assert reference.figure("vartrack", "direct") is None
