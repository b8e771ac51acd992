"""The viewer shows a run's citations beside its answer, each with the code that found it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import fathom
from fathom.lm import ScriptedLM
from fathom.viewer import write

TEXT = "Notes.\nMarta moved to Lisbon in June.\nThe end.\n"


def cited_run(trace: Path) -> None:
    root = ScriptedLM([
        "```repl\nprint(len(context))\n```",
        "```repl\ni = context.find('Marta')\nquote = cite(i, context.find('.', i) + 1)\n"
        "FINAL('Lisbon')\n```",
    ])
    fathom.RLM(root, sandbox="inprocess", trace=trace).run("Where did Marta move?", TEXT)


@pytest.mark.browser
def test_citations_sit_beside_the_answer_with_their_code(page: Any, tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    cited_run(trace)
    page.goto(write(trace).resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    panel, answer = page.locator(".citations"), page.locator(".answer")
    assert "context:2" in panel.inner_text()
    assert "Marta moved to Lisbon in June." in panel.inner_text()
    assert panel.bounding_box()["x"] > answer.bounding_box()["x"]  # beside it, not under
    panel.locator(".node > .head").first.click()
    assert "quote = cite(i" in panel.locator(".block.code").first.inner_text()
    # In the tree, the block that cited lists what it cited.
    page.locator("#tree .node.iter > .head").nth(1).click()
    assert "Cited" in page.locator("#tree .node.iter").nth(1).inner_text()
    page.fill("#search", "in June")  # a citation's text is searchable
    page.wait_for_selector("#hits .hit")
    assert page.locator("#hits .hit").filter(has_text="citation").count() == 1
    assert page.errors == []


@pytest.mark.browser
def test_a_refused_typed_answer_shows_with_its_errors(page: Any, tmp_path: Path) -> None:
    trace = tmp_path / "typed.jsonl"
    root = ScriptedLM(["FINAL(Lisbon)", 'FINAL({"city": "Lisbon"})'])
    schema = {"type": "object", "required": ["city"]}
    fathom.RLM(root, sandbox="inprocess", trace=trace).run("Where?", TEXT, schema=schema)
    page.goto(write(trace).resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    page.locator("#tree .node.iter > .head").first.click()
    first = page.locator("#tree .node.iter").first.inner_text()
    assert "FINAL refused" in first and "is not of type 'object'" in first
    assert page.errors == []
