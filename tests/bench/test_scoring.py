"""Scoring: normalisation, lists in any order, 0.75^|error|, F1 over pairs."""

from __future__ import annotations

import pytest

from fathom.bench import scoring


def test_exact_match_ignores_case_spaces_quotes_and_a_full_stop() -> None:
    assert scoring.exact_match('  "Brenmar Province". ', "brenmar province") == 1.0
    assert scoring.exact_match("Brenmar  Province", "Brenmar Province") == 1.0
    assert scoring.exact_match("It is Brenmar Province.", "Brenmar Province") == 0.0
    assert scoring.exact_match(None, "x") == 0.0


def test_lists_in_any_order_with_extras_costing() -> None:
    assert scoring.set_match("c, a, b", ["a", "b", "c"]) == 1.0
    assert scoring.set_match('["A", "B", "C"]', ["a", "b", "c"]) == 1.0
    assert scoring.set_match(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert scoring.set_match("a\nb and c", ["a", "b", "c"]) == 1.0
    assert scoring.set_match("a, b", ["a", "b", "c"]) == pytest.approx(2 / 3)
    assert scoring.set_match("a, b, c, x", ["a", "b", "c"]) == pytest.approx(3 / 4)
    assert scoring.set_match("", []) == 1.0


@pytest.mark.parametrize(("answer", "score"), [
    ("42", 1.0), (" 42. ", 1.0), ("1,042", 0.75**1000), (43, 0.75), ("40", 0.75**2),
    ("42.5", 0.75**0.5), ("forty-two", 0.0), ("about 42", 0.0), (True, 0.0),
])
def test_numeric_score_is_three_quarters_to_the_error(answer: object, score: float) -> None:
    assert scoring.numeric_score(answer, 42) == pytest.approx(score)


def test_pairs_f1_orders_each_pair_and_counts_each_once() -> None:
    expected = [[1, 2], [1, 3], [2, 3]]
    assert scoring.pairs_f1("(1, 2), (1, 3), (2, 3)", expected) == 1.0
    assert scoring.pairs_f1("(2, 1), (3, 1), (3, 2), (2, 1)", expected) == 1.0
    assert scoring.pairs_f1([[1, 2], (1, 3), [2, 3]], expected) == 1.0
    # one right of two given, one of three expected: P = 1/2, R = 1/3
    assert scoring.pairs_f1("(1, 2), (4, 5)", expected) == pytest.approx(0.4)
    assert scoring.pairs_f1("none", expected) == 0.0
    assert scoring.pairs_f1("none", []) == 1.0
    assert scoring.parse_pairs("(9, 10)") == {("9", "10")}  # ids compare as numbers
