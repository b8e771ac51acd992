"""A dollar budget on a model fathom has no price for: one clear warning, at the caller."""

from __future__ import annotations

import warnings

import fathom
from fathom.budget import Budget, Spend
from fathom.lm import ScriptedLM


def test_an_unpriced_model_under_a_usd_budget_warns_once_from_the_callers_line() -> None:
    root = ScriptedLM(["FINAL(1)"])
    root.name = "openai:no-such-model"
    rlm = fathom.RLM(root, sandbox="inprocess", budget=Budget(usd=1.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rlm.run("q", "c")
    assert len(caught) == 1
    assert caught[0].filename == __file__  # not asyncio's
    message = str(caught[0].message)
    assert "openai:no-such-model" in message and "set_price" in message


def test_a_budget_message_names_the_cli_flag_and_the_python_field() -> None:
    spend = Spend(Budget(seconds=5, calls=2))
    assert "--max-seconds or Budget(seconds=...)" in spend.describe_limit("seconds")
    assert "--" not in spend.describe_limit("calls")  # no flag for calls
