"""The REPL functions as data: specs, stubs, and a new function as one table entry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import fathom
from fathom import repl_api
from fathom.lm import ScriptedLM
from fathom.repl_api import FunctionSpec, Param, ParamKind
from tests.test_engine import repl


def test_a_spec_reads_like_python_and_crosses_the_channel_intact() -> None:
    spec = repl_api.get("rlm_query_batched")
    assert spec is not None
    assert spec.spec.signature == "(prompts, contexts=None)"
    assert spec.spec.line.startswith("`rlm_query_batched(prompts, contexts=None) -> list[str]`")
    assert FunctionSpec.from_dict(spec.spec.to_dict()) == spec.spec


def test_params_prepare_arguments_as_the_parent_expects_them() -> None:
    assert Param("p", ParamKind.TEXT).prepare(42) == "42"
    assert Param("ps", ParamKind.TEXTS).prepare((1, "a")) == ["1", "a"]
    assert Param("ps", ParamKind.TEXTS).prepare("abc") == "abc"  # the handler says what is wrong
    assert Param("c").prepare({"k": [1]}) == {"k": [1]}


@pytest.fixture
def shout() -> Iterator[None]:
    """A throwaway REPL function registered for one test."""

    async def handler(host: Any, args: dict[str, Any]) -> str:
        return f"{args['text'].upper()}{args['suffix']}"

    repl_api.register(
        "shout", [Param("text", ParamKind.TEXT, required=True), Param("suffix", default="!")],
        "str", "say `text` louder.", handler,
    )
    yield
    repl_api.unregister("shout")


@pytest.mark.parametrize("sandbox", ["inprocess", "subprocess"])
def test_a_new_function_is_one_entry(shout: None, sandbox: str) -> None:
    root = ScriptedLM([
        repl("print(shout('hi'), shout(text=3, suffix='?'))\ntry:\n    shout()\n"
             "except TypeError as exc:\n    print('TypeError:', exc)"),
        repl("FINAL(shout('done'))"),
    ])
    result = fathom.RLM(root, sandbox=sandbox).run("q", "ctx")
    assert result.answer == "DONE!"
    system = root.calls[0][0]["content"]
    assert "- `shout(text, suffix='!') -> str`: say `text` louder." in system
    shown = root.calls[1][-1]["content"]
    assert "HI! 3?" in shown
    assert "TypeError: missing a required argument: 'text'" in shown


def test_the_prompt_lists_every_function_of_the_table() -> None:
    root = ScriptedLM([repl("FINAL(1)")])
    fathom.RLM(root, sandbox="inprocess").run("q", "ctx")
    system = root.calls[0][0]["content"]
    for function in repl_api.functions():
        assert f"`{function.spec.name}{function.spec.signature}" in system
