"""Parsing model replies: repl blocks, FINAL forms, truncation."""

from __future__ import annotations

from fathom.protocol import TextFinal, code_blocks, find_final, strip_code, truncate


def test_repl_blocks_in_order() -> None:
    reply = "Look:\n```repl\nx = 1\n```\nthen\n```repl\nprint(x)\n```\n"
    assert code_blocks(reply) == ["x = 1\n", "print(x)\n"]


def test_python_blocks_only_without_repl_blocks() -> None:
    assert code_blocks("```python\nprint(1)\n```") == ["print(1)\n"]
    assert code_blocks("```python\nprint(1)\n```\n```repl\nprint(2)\n```") == ["print(2)\n"]
    assert code_blocks("```text\nnot code\n```") == []


def test_final_text_forms() -> None:
    assert find_final("Done.\nFINAL(Paris)") == TextFinal("answer", "Paris")
    assert find_final('FINAL("Paris, France")') == TextFinal("answer", "Paris, France")
    assert find_final("FINAL(f(x) = (a))\n") == TextFinal("answer", "f(x) = (a)")
    assert find_final("FINAL_VAR(answer)") == TextFinal("variable", "answer")
    assert find_final("  FINAL_VAR('result')") == TextFinal("variable", "result")


def test_final_inside_code_is_not_text_final() -> None:
    assert find_final("```repl\nFINAL(x)\n```") is None
    assert find_final("I will call FINAL(x) later") is None


def test_multiline_final() -> None:
    assert find_final("FINAL(line one\nline two)") == TextFinal("answer", "line one\nline two")


def test_strip_code() -> None:
    assert strip_code("a\n```repl\nx\n```\nb").strip() == "a\n\nb"


def test_truncate_keeps_head_and_tail() -> None:
    text = "A" * 500 + "B" * 500
    short = truncate(text, 200)
    assert len(short) <= 200
    assert short.startswith("A") and short.endswith("B")
    assert "truncated" in short
    assert truncate("short", 200) == "short"


def test_crlf_replies_parse_like_unix_ones() -> None:
    reply = "Look\r\n```repl\r\nx = 1\r\n```\r\nFINAL(Paris)\r\n"
    assert code_blocks(reply) == ["x = 1\n"]
    assert find_final(reply) == TextFinal("answer", "Paris")


def test_unclosed_block_is_code_not_prose() -> None:
    reply = "```repl\nanswer = compute()\nFINAL(answer)"
    assert code_blocks(reply) == ["answer = compute()\nFINAL(answer)"]
    assert find_final(reply) is None


def test_backticks_inside_code_do_not_end_the_block() -> None:
    reply = '```repl\nfence = "```"\nFINAL(len(fence))\n```\n'
    assert code_blocks(reply) == ['fence = "```"\nFINAL(len(fence))\n']
    assert find_final(reply) is None


def test_final_stops_at_its_own_closing_parenthesis() -> None:
    assert find_final("FINAL(42)\nSource: the table (row 3)") == TextFinal("answer", "42")
    assert find_final("FINAL(a)\nFINAL_VAR(b)") == TextFinal("answer", "a")
    assert find_final('FINAL("a (b")') == TextFinal("answer", "a (b")
    assert find_final("FINAL(no close\nnext line") == TextFinal("answer", "no close")
