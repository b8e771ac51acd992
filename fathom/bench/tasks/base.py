"""The task value every family generates, and the protocol a family implements."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fathom.lm.pricing import CHARS_PER_TOKEN


@dataclass(frozen=True)
class Task:
    """One generated problem: the query, the input to read and its exact answer.

    `size` is the target input size in tokens (CHARS_PER_TOKEN characters each);
    `context` is what `RLM.run` accepts (str, list or dict); `expected` is plain JSON.
    """

    family: str
    size: int
    seed: int
    variant: str
    query: str
    context: Any = field(repr=False)
    expected: Any

    def key(self) -> str:
        """Stable id "family/size/seed[/variant]", used to resume a run."""
        base = f"{self.family}/{self.size}/{self.seed}"
        return f"{base}/{self.variant}" if self.variant else base


@runtime_checkable
class Family(Protocol):
    """A seeded generator of tasks with exact answers, and their scoring."""

    name: str
    description: str

    def generate(self, size: int, seed: int) -> Task:
        """The task of this size (tokens) and seed; the same arguments give the same task."""
        ...

    def score(self, task: Task, answer: Any) -> float:
        """How right `answer` (the model's final answer) is, from 0.0 to 1.0."""
        ...


def target_chars(size: int) -> int:
    """Characters of input for a size in tokens."""
    return size * CHARS_PER_TOKEN


def task_rng(family: str, size: int, seed: int, variant: str = "") -> random.Random:
    """The random stream of one task: independent per family, size, seed and variant.

    Seeding with a string hashes it (SHA-512), so streams are stable across runs and
    Python versions, unlike `hash()`.
    """
    return random.Random(f"fathom.bench/{family}/{size}/{seed}/{variant}")
