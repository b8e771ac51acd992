"""The LM contract: `acomplete` is all a model writes; the blocking form is derived."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fathom.lm import LM, BaseLM, Completion, Message, ScriptedLM, complete_sync

ASK = [{"role": "user", "content": "Where is the key?"}]


class Echo:
    """A third-party model: the three members of the protocol and nothing else."""

    name = "echo"
    context_window = 1000

    async def acomplete(self, messages: list[Message], **options: Any) -> Completion:
        await asyncio.sleep(0)
        return Completion(messages[-1]["content"], self.name)


def test_a_model_needs_only_name_window_and_acomplete() -> None:
    assert isinstance(Echo(), LM)
    assert complete_sync(Echo(), ASK).text == "Where is the key?"


def test_base_lm_derives_complete_from_acomplete() -> None:
    lm = ScriptedLM(["under the mat"])
    completion = lm.complete(ASK)
    assert completion.text == "under the mat" and completion.usage.calls == 1
    assert lm.calls == [ASK]


def test_blocking_form_works_inside_a_running_event_loop() -> None:
    lm = ScriptedLM(["one", "two"], latency=0.01)

    async def caller() -> list[str]:
        # A sync call from the loop's own thread, as a notebook cell or a responder makes.
        first = lm.complete(ASK).text
        second = complete_sync(lm, ASK).text
        return [first, second]

    assert asyncio.run(caller()) == ["one", "two"]


def test_blocking_form_raises_the_models_error() -> None:
    lm = ScriptedLM([ValueError("scripted failure")])
    with pytest.raises(ValueError, match="scripted failure"):
        lm.complete(ASK)


def test_a_provider_must_write_acomplete() -> None:
    class Forgetful(BaseLM):
        name = "forgetful"
        context_window = 10

    with pytest.raises(TypeError, match="acomplete"):
        Forgetful()  # type: ignore[abstract]
