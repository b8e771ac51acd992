"""`fathom bench report DIR`: mean score and cost per family x method x size, the paper's
figures beside them, and PNG plots (score against input size, cost per method)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from fathom.bench import reference
from fathom.bench.results import RESULTS, latest_rows
from fathom.errors import ConfigError

REPORT = "report.md"
SCORE_PLOT = "score_vs_size.png"
COST_PLOT = "cost_per_method.png"


@dataclass(frozen=True)
class Aggregate:
    """The rows of one model, family, method and size, averaged."""

    model: str
    family: str
    method: str
    size: int
    rows: int
    score: float  # mean, 0..1
    usd: float  # mean per row
    seconds: float  # mean per row
    prompt_tokens: float
    output_tokens: float
    errors: int  # rows that stopped with an error or at the budget
    paper_score: float | None = None  # the paper's figure for the matching cell, in percent
    paper_usd: float | None = None
    paper_cell: str | None = None  # "OOLONG / RLM, depth 1"


def size_label(tokens: int) -> str:
    """32000 -> "32k", 1000000 -> "1m"."""
    for unit, scale in (("m", 1_000_000), ("k", 1_000)):
        if tokens >= scale and tokens % (scale // 10) == 0:
            value = tokens / scale
            return f"{value:g}{unit}"
    return str(tokens)


def aggregate(rows: list[dict[str, Any]]) -> list[Aggregate]:
    """Means per (model, family, method, size), in a stable order."""
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(str(row["model"]), str(row["task"]), str(row["method"]), int(row["size"]))].append(
            row
        )
    out = []
    for (model, family, method, size), members in sorted(
        groups.items(), key=lambda item: (item[0][0], item[0][1], _method_rank(item[0][2]),
                                          item[0][3])
    ):
        paper = reference.figure(family, method)
        out.append(Aggregate(
            model, family, method, size, len(members),
            score=fmean(float(r.get("score") or 0.0) for r in members),
            usd=fmean(float(r.get("usd") or 0.0) for r in members),
            seconds=fmean(float(r.get("seconds") or 0.0) for r in members),
            prompt_tokens=fmean(float(r.get("prompt_tokens") or 0) for r in members),
            output_tokens=fmean(float(r.get("output_tokens") or 0) for r in members),
            errors=sum(r.get("stop_reason") in ("error", "budget") for r in members),
            paper_score=paper.score if paper else None,
            paper_usd=paper.usd if paper else None,
            paper_cell=f"{paper.benchmark} / {paper.method}" if paper else None,
        ))
    return out


def _method_rank(method: str) -> tuple[int, str]:
    """Methods in the paper's order (the methods fathom knows), then any other by name."""
    order = list(reference.METHODS)
    return (order.index(method) if method in order else len(order), method)


def load(directory: Path) -> list[dict[str, Any]]:
    """The latest row of each key in `directory/results.jsonl`; ConfigError if there are none."""
    rows = list(latest_rows(directory / RESULTS).values())
    if not rows:
        raise ConfigError(
            f"No results in {directory / RESULTS}: run `fathom bench run ... -o {directory}` first."
        )
    return rows


def write(directory: Path) -> tuple[Path, list[Aggregate]]:
    """Write report.md and its plots into `directory`; return the report's path and aggregates."""
    aggregates = aggregate(load(directory))
    plot_scores(aggregates, directory / SCORE_PLOT)
    plot_costs(aggregates, directory / COST_PLOT)
    path = directory / REPORT
    path.write_text(render(aggregates), encoding="utf-8")
    return path, aggregates


def to_json(aggregates: list[Aggregate]) -> list[dict[str, Any]]:
    """Plain-JSON aggregates (`fathom bench report --json`)."""
    return [asdict(a) for a in aggregates]


def _money(usd: float | None) -> str:
    if usd is None:
        return "n/a"
    if usd == 0:
        return "$0"
    return f"${usd:.4f}" if usd < 0.01 else f"${usd:.2f}"


def render(aggregates: list[Aggregate]) -> str:
    """The report as Markdown."""
    models = sorted({a.model for a in aggregates})
    sizes = sorted({a.size for a in aggregates})
    lines = [
        "# fathom bench report", "",
        f"{sum(a.rows for a in aggregates)} rows; model{'s' if len(models) > 1 else ''}: "
        + ", ".join(f"`{m}`" for m in models) + ". Each cell: mean score in percent, mean cost "
        "per row, and how many rows (seeds) it averages; rows that ended in an error or at the "
        "budget are counted as such.", "",
        "| model | family | method | " + " | ".join(size_label(s) for s in sizes)
        + " | paper's figure (paper's data) |",
        "|---|---|---|" + "---|" * len(sizes) + "---|",
    ]
    groups: dict[tuple[str, str, str], dict[int, Aggregate]] = defaultdict(dict)
    for a in aggregates:
        groups[(a.model, a.family, a.method)][a.size] = a
    for (model, family, method), by_size in groups.items():
        cells = [_cell(by_size[s]) if s in by_size else "" for s in sizes]
        first = next(iter(by_size.values()))
        paper = (f"{first.paper_score:g} {_money(first.paper_usd)} ({first.paper_cell})"
                 if first.paper_score is not None else "")
        lines.append(f"| `{model}` | {family} | {method} | " + " | ".join(cells) + f" | {paper} |")
    lines += [
        "", "The last column holds the paper's figures, not fathom's: "
        f"{reference.citation()}. They were measured on the paper's benchmarks, which fathom's "
        "families are modelled on but are not, so they show what a strong model reaches on "
        "similar tasks, not a score to compare digit for digit.", "",
        "## Plots", "",
        f"![score against input size]({SCORE_PLOT})", "",
        f"![cost per method]({COST_PLOT})", "",
        "## The paper's Table 1", "",
        f"{reference.citation()}; score in percent and mean cost per query.", "",
    ]
    lines += _paper_table()
    return "\n".join(lines) + "\n"


def _cell(a: Aggregate) -> str:
    errors = f", {a.errors} stopped" if a.errors else ""
    return f"{100 * a.score:.1f} {_money(a.usd)} (n={a.rows}{errors})"


def _paper_table() -> list[str]:
    data = reference.table()
    benchmarks = list(data["benchmarks"])
    lines = [
        "| method | " + " | ".join(f"{b} ({data['benchmarks'][b]})" for b in benchmarks) + " |",
        "|---|" + "---|" * len(benchmarks),
    ]
    for method, cells in data["methods"].items():
        shown = [
            f"{cells[b]['score']:g}" + (f" {_money(cells[b]['usd'])}" if cells[b]["usd"] else "")
            for b in benchmarks
        ]
        lines.append(f"| {method} | " + " | ".join(shown) + " |")
    return lines


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError("Plots need matplotlib: pip install 'fathom[bench]'.") from exc
    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def plot_scores(aggregates: list[Aggregate], path: Path) -> None:
    """One panel per family: mean score against input size, a line per method (and model)."""
    plt = _pyplot()
    families = sorted({a.family for a in aggregates})
    columns = min(3, len(families))
    rows = -(-len(families) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.4 * rows), squeeze=False)
    multi_model = len({a.model for a in aggregates}) > 1
    sizes = sorted({a.size for a in aggregates})
    panels = [ax for row in axes for ax in row]
    for ax in panels[len(families):]:
        ax.set_visible(False)
    for ax, family in zip(panels, families, strict=False):
        lines: dict[str, list[Aggregate]] = defaultdict(list)
        for a in aggregates:
            if a.family == family:
                lines[f"{a.method} ({a.model})" if multi_model else a.method].append(a)
        for label, points in lines.items():
            points.sort(key=lambda a: a.size)
            ax.plot([a.size for a in points], [100 * a.score for a in points], marker="o",
                    label=label)
        ax.set_xscale("log")
        ax.set_xticks(sizes, [size_label(s) for s in sizes])
        ax.minorticks_off()
        ax.set_title(family)
        ax.set_xlabel("input size (tokens)")
        ax.set_ylabel("score (%)")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
    panels[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_costs(aggregates: list[Aggregate], path: Path) -> None:
    """Mean cost per row of each method (in the paper's order), a bar per family and model."""
    plt = _pyplot()
    methods = sorted({a.method for a in aggregates}, key=_method_rank)
    multi_model = len({a.model for a in aggregates}) > 1
    groups = sorted({(a.family, a.model) for a in aggregates})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(methods) * len(groups)), 3.6))
    width = 0.8 / len(groups)
    for i, (family, model) in enumerate(groups):
        costs = []
        for method in methods:
            cells = [a for a in aggregates
                     if (a.family, a.model, a.method) == (family, model, method)]
            costs.append(fmean(a.usd for a in cells) if cells else 0.0)
        ax.bar([m + i * width for m in range(len(methods))], costs, width,
               label=f"{family} ({model})" if multi_model else family)
    ax.set_xticks([m + width * (len(groups) - 1) / 2 for m in range(len(methods))], methods)
    ax.set_ylabel("mean cost per row (USD)")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
