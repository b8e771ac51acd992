"""Viewer benchmarks: render time and page size, then load, expand and search in headless Chromium.

Run: .venv/bin/python benchmarks/viewer.py [--runs 3]
Traces come from real fathom.RLM runs on ScriptedLM whose code fans out N sub-calls
(about 2 trace events each): 5,000 prompts give 10,000+ events, 10,000 give 20,000+.
Each figure is the median of --runs runs. Without /usr/bin/chromium or Playwright the
browser rows are skipped and the render rows still print.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fathom
from fathom.lm import ScriptedLM
from fathom.viewer import render

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PROMPTS = (5000, 10_000)
PAGE = 100  # batch calls the viewer draws per "Show 100 more"
# Targets hold for the 10k-event trace; the 20k one shows how the times grow.
TARGETS = {"render": "<= 3 s", "load": "<= 5 s", "expand": "<= 3 s"}


def wide_trace(path: Path, prompts: int) -> int:
    """Write the trace of a real run fanning out `prompts` sub-calls; return its event count.

    The same run as tests/viewer/recorded_runs.wide_run, kept here so the benchmark
    does not import the test suite.
    """
    replies = [
        f"```repl\nout = llm_query_batched([f'item {{i}}' for i in range({prompts})])\n"
        "print(len(out))\n```",
        "FINAL(done)",
    ]
    root = ScriptedLM(replies, name="scripted:root")
    sub = ScriptedLM(lambda m: "ok " + m[-1]["content"], name="scripted:sub")
    rlm = fathom.RLM(model=root, sub_model=sub, sandbox="inprocess", max_concurrency=64,
                     trace=path)
    result = rlm.run("How many items?", "x" * 100)
    if result.answer != "done":
        raise SystemExit(f"the scripted run did not finish: {result.stop_reason} {result.error}")
    with path.open() as lines:
        return sum(1 for _ in lines)


def _median(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def time_render(trace: Path, runs: int) -> tuple[float, str]:
    """Median seconds of `fathom.viewer.render`, and the page it made."""
    pages: list[str] = []

    def once() -> float:
        started = time.perf_counter()
        pages.append(render(trace))
        return time.perf_counter() - started

    return _median(runs, once), pages[-1]


def _new_page(browser: Any) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return context, page, errors


def time_browser(browser: Any, html: Path, prompts: int) -> dict[str, float]:
    """Seconds to load the page, open the iteration and its batch (first page of calls drawn)
    and search once."""
    context, page, errors = _new_page(browser)
    try:
        started = time.perf_counter()
        page.goto(html.resolve().as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        load = time.perf_counter() - started

        started = time.perf_counter()
        iteration = page.locator("#tree .node.iter").first
        iteration.locator("> .head").click()
        batch = iteration.locator(".node.batch").first
        batch.locator("> .head").click()
        batch.locator(".node.call").nth(PAGE - 1).wait_for(state="attached")
        expand = time.perf_counter() - started
        head = batch.locator("> .head").inner_text()
        if f"× {prompts}" not in head or batch.locator(".node.call").count() != PAGE:
            raise SystemExit(f"the batch did not open as expected: {head!r}")

        # The last sub-call's prompt: the scan has to cross every event to find it.
        started = time.perf_counter()
        page.fill("#search", f"item {prompts - 1}")
        page.wait_for_selector("#hits .hit", timeout=60_000)
        search = time.perf_counter() - started
    finally:
        context.close()
    if errors:
        raise SystemExit(f"the viewer raised in the page: {errors[:3]}")
    return {"load": load, "expand": expand, "search": search}


def _browser_skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


def _print_table(rows: list[tuple[str, str, str]]) -> None:
    heads = ("benchmark", "result", "target")
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(3)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median shown)")
    args = parser.parse_args()
    skip = _browser_skip_reason()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cases: list[tuple[int, int, Path]] = []
        for prompts in PROMPTS:
            trace = Path(tmp) / f"wide-{prompts}.jsonl"
            events = wide_trace(trace, prompts)
            seconds, page = time_render(trace, args.runs)
            first = prompts == PROMPTS[0]
            rows.append((f"render, {events:,} events", f"{seconds:.2f} s",
                         TARGETS["render"] if first else ""))
            size = len(page.encode())
            rows.append((f"page size, {events:,} events", f"{size / 2**20:.1f} MB", ""))
            html = trace.with_suffix(".html")
            html.write_text(page, encoding="utf-8")
            cases.append((prompts, events, html))
        if skip is None:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                            args=ARGS)
                try:
                    for prompts, events, html in cases:
                        runs = [time_browser(browser, html, prompts) for _ in range(args.runs)]
                        first = prompts == PROMPTS[0]

                        def median(key: str, runs: list[dict[str, float]] = runs) -> str:
                            return f"{statistics.median(r[key] for r in runs):.2f} s"

                        rows.append((f"page load, {events:,} events", median("load"),
                                     TARGETS["load"] if first else ""))
                        rows.append((f"open iteration + {prompts:,}-call batch "
                                     f"({PAGE} calls drawn), {events:,} events", median("expand"),
                                     TARGETS["expand"] if first else ""))
                        rows.append((f"search (incl. 150 ms debounce), {events:,} events",
                                     median("search"), ""))
                finally:
                    browser.close()
    _print_table(rows)
    if skip is not None:
        print(f"\nbrowser rows skipped: {skip}")


if __name__ == "__main__":
    main()
