"""Scoring as the RLM paper scores: exact match, 0.75^|error| for numbers, F1 over pairs.

Answers are normalised before they are compared (case, surrounding whitespace,
quotes, brackets and a trailing full stop), and lists are compared as sets where a
task says "in any order". Nothing here digs a value out of a sentence: a query states
the format it wants, and an answer in another format does not score.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

_EDGE = " \t\r\n\"'`.,;:()[]{}<>"
_ITEM_SPLIT = re.compile(r"\s*(?:,|;|\n|\band\b)\s*")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_PAIR = re.compile(r"\(\s*['\"]?([\w-]+)['\"]?\s*,\s*['\"]?([\w-]+)['\"]?\s*\)")


def as_text(answer: Any) -> str:
    """The answer as text: strings as they are, other values as JSON (lists, numbers)."""
    if answer is None:
        return ""
    if isinstance(answer, str):
        return answer
    try:
        return json.dumps(answer)
    except (TypeError, ValueError):
        return str(answer)


def normalize(value: Any) -> str:
    """Lower case, whitespace collapsed, quotes, brackets and edge punctuation removed."""
    return " ".join(as_text(value).split()).strip(_EDGE).lower()


def items(answer: Any) -> list[str]:
    """An answer that is a list: a JSON/Python list, or items separated by commas,
    semicolons, new lines or "and"; each item normalised, empty ones dropped."""
    if isinstance(answer, list | tuple | set):
        raw = [as_text(a) for a in answer]
    else:
        raw = _ITEM_SPLIT.split(as_text(answer).strip().strip("[]()"))
    return [n for n in (normalize(r) for r in raw) if n]


def exact_match(answer: Any, expected: Any) -> float:
    """1.0 when the normalised answer equals the normalised expected value."""
    return float(normalize(answer) == normalize(expected))


def set_match(answer: Any, expected: Iterable[Any]) -> float:
    """Share of the expected items given, over the larger of the two lists (extra items cost).

    1.0 only for exactly the expected items in any order; "a, b" for ["a", "b", "c"]
    is 2/3, and "a, b, x, y" is 2/4.
    """
    want = {normalize(e) for e in expected}
    got = set(items(answer))
    if not want and not got:
        return 1.0
    return len(want & got) / max(len(want), len(got))


def parse_number(answer: Any) -> float | None:
    """The answer as a number when it is one (thousands separators allowed), else None."""
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        return float(answer)
    text = normalize(answer).replace(",", "").replace("_", "")
    return float(text) if _NUMBER.fullmatch(text) else None


def numeric_score(answer: Any, expected: float) -> float:
    """0.75 ** |answer - expected| for a number, as in OOLONG; 0.0 for anything else."""
    number = parse_number(answer)
    return 0.0 if number is None else 0.75 ** abs(number - expected)


def parse_pairs(answer: Any) -> set[tuple[str, str]]:
    """Every "(a, b)" in the answer, each ordered lower first (numerically for numbers)."""
    if isinstance(answer, list | tuple) and all(isinstance(p, list | tuple) for p in answer):
        found = [(as_text(p[0]), as_text(p[1])) for p in answer if len(p) == 2]
    else:
        found = _PAIR.findall(as_text(answer))
    return {_ordered(normalize(a), normalize(b)) for a, b in found}


def _id_order(item: str) -> tuple[int, int, str]:
    # Ids compare as numbers ("9" before "10"), other names as text.
    return (0, int(item), item) if item.isdigit() else (1, 0, item)


def _ordered(a: str, b: str) -> tuple[str, str]:
    return (a, b) if _id_order(a) <= _id_order(b) else (b, a)


def pairs_f1(answer: Any, expected: Iterable[Iterable[Any]]) -> float:
    """F1 of the answer's pairs against the expected pairs (1.0 when both are empty)."""
    want = {_ordered(*(normalize(x) for x in pair)) for pair in expected}
    got = parse_pairs(answer)
    if not want and not got:
        return 1.0
    hits = len(want & got)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(got), hits / len(want)
    return 2 * precision * recall / (precision + recall)
