"""The RLM paper's Table 1, shipped as package data, matched to fathom's families and methods.

The figures are the paper's, on the paper's data (arXiv 2512.24601 v3, Table 1: GPT-5
root, GPT-5-mini sub-calls); fathom's families are modelled on those benchmarks but are
not them, so the figures are shown beside fathom's scores, never mixed with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

# fathom family -> the paper's benchmark it is modelled on.
BENCHMARKS = {
    "oolong": "OOLONG", "pairs": "OOLONG-Pairs", "multihop": "BrowseComp-Plus",
    "codeqa": "CodeQA",
}
# fathom method -> the paper's method.
METHODS = {
    "direct": "base model", "bm25": "CodeAct + BM25", "summarize": "summary agent",
    "repl": "RLM, no sub-calls", "rlm": "RLM, depth 1", "rlm2": "RLM, depth 2",
}


@dataclass(frozen=True)
class PaperFigure:
    """One cell of the paper's table: score in percent and mean cost per query (if given)."""

    benchmark: str
    method: str
    score: float
    usd: float | None


@cache
def table() -> dict[str, Any]:
    """The whole table with its source, as shipped in `fathom/bench/paper_table.json`."""
    text = resources.files("fathom.bench").joinpath("paper_table.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def citation() -> str:
    """One line naming where the figures come from."""
    src = table()["source"]
    return (f"{src['paper']}, arXiv {src['arxiv']} {src['version']}, {src['table']} "
            f"({src['setup']})")


def figure(family: str, method: str) -> PaperFigure | None:
    """The paper's figure for a fathom family and method, or None when it has no match."""
    benchmark, paper_method = BENCHMARKS.get(family), METHODS.get(method)
    if benchmark is None or paper_method is None:
        return None
    cell = table()["methods"][paper_method][benchmark]
    return PaperFigure(benchmark, paper_method, float(cell["score"]), cell["usd"])
