"""A tiny task family and scripted models, so the runner is tested without real models."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

from fathom.bench import tasks
from fathom.bench.tasks.base import Task
from fathom.lm import ScriptedLM
from fathom.lm.base import LM, Message

FILLER = "The quick brown fox jumps over the lazy dog near the river bank. "
NEEDLE = re.compile(r"The secret number is (\d+)\.")


@dataclass(frozen=True)
class Secret:
    """One secret number in filler text: the answer is the number."""

    name: str = "secret"
    description: str = "one secret number in filler text"

    def generate(self, size: int, seed: int) -> Task:
        """About `size` tokens of filler with the needle in the middle."""
        half = FILLER * max(1, size * 4 // len(FILLER) // 2)
        number = str(1000 + seed * 7919 % 9000)
        text = f"{half}\nThe secret number is {number}.\n{half}"
        return Task(self.name, size, seed, "", "What is the secret number?", text, number)

    def score(self, task: Task, answer: Any) -> float:
        """Exact match."""
        return 1.0 if str(answer).strip() == task.expected else 0.0


def respond(messages: list[Message]) -> str:
    """A model that reads the needle wherever it is shown one, and writes REPL code otherwise."""
    if "```repl" in messages[0]["content"]:  # an RLM's system prompt
        return ("```repl\nimport re\n"
                "FINAL(re.search(r'The secret number is (\\d+)', context).group(1))\n```")
    prompt = messages[-1]["content"]
    found = NEEDLE.search(prompt) or re.search(r"secret: (\d+)", prompt)  # or in its notes
    if "Write your updated notes" in prompt:
        return f"secret: {found.group(1)}" if found else "(nothing yet)"
    number = found.group(1) if found else "unknown"
    return f"Reading it, the answer is clear.\nFINAL({number})"


@dataclass(frozen=True)
class Scripted:
    """A ModelSource of scripted models that cost `usd_per_million` per million tokens."""

    usd_per_million: float = 0.0
    context_window: int = 128_000
    name: str = "scripted"
    sub_name: str = "scripted"

    def build(self, family: str, seed: int) -> tuple[LM, LM]:
        """Fresh scripted models for one row."""
        lm = ScriptedLM(respond, name=self.name, context_window=self.context_window,
                        usd_per_million_tokens=self.usd_per_million)
        return lm, lm


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the `secret` family and the `benchfake:` provider for one test only, so other
    tests (and other processes) see the real registries."""
    from fathom import lm

    monkeypatch.setitem(tasks._registry._entries, "secret", Secret())
    monkeypatch.setitem(lm._PROVIDERS._entries, "benchfake",
                        lambda name: ScriptedLM(respond, name=f"benchfake:{name}"))
