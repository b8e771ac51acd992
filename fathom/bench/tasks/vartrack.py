"""RULER's variable tracking: follow chains of assignments spread over long prose.

"VAR QXBTR = 48213." starts a chain, "VAR MLKPA = VAR QXBTR." extends it; the query asks
for every variable that ends up holding a value. Distractor chains hold other values,
and every statement comes after the one it refers to.
"""

from __future__ import annotations

import itertools
import random
import string
from dataclasses import dataclass
from typing import Any

from fathom.bench import corpus, scoring
from fathom.bench.tasks.base import Task, target_chars, task_rng

CHAINS = 3  # the asked-for chain and two distractors
HOPS = 4  # assignments after the first, per chain
_NAME_LETTERS = string.ascii_uppercase


def chain_statements(names: list[str], value: str) -> list[str]:
    """The statements of one chain: the value, then each variable bound to the one before."""
    first = [f"VAR {names[0]} = {value}."]
    return first + [f"VAR {b} = VAR {a}." for a, b in itertools.pairwise(names)]


def _names(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        names.add("".join(rng.choices(_NAME_LETTERS, k=5)))
    return rng.sample(sorted(names), count)


@dataclass(frozen=True)
class Vartrack:
    """The `vartrack` family."""

    name: str = "vartrack"
    description: str = "variable tracking (RULER): list every variable bound to a value via chains"

    def generate(self, size: int, seed: int) -> Task:
        """About `size` tokens of prose with the chains' statements spread through it."""
        rng = task_rng(self.name, size, seed)
        names = _names(rng, CHAINS * (HOPS + 1))
        values = [str(v) for v in rng.sample(range(10_000, 100_000), CHAINS)]
        chains = [names[i * (HOPS + 1) : (i + 1) * (HOPS + 1)] for i in range(CHAINS)]
        statements = [chain_statements(c, v) for c, v in zip(chains, values, strict=True)]
        haystack = corpus.sentences_for(rng, target_chars(size) - 30 * len(names))
        # Each chain gets sorted positions, so its statements read in order; chains interleave.
        # Inserting from the back, later statements first, keeps ties in chain order.
        order = itertools.count()
        slots: list[tuple[int, int, str]] = []
        for chain in statements:
            positions = sorted(rng.randrange(len(haystack) + 1) for _ in chain)
            slots.extend((p, next(order), s) for p, s in zip(positions, chain, strict=True))
        for position, _, statement in sorted(slots, reverse=True):
            haystack.insert(position, statement)
        query = (
            f"Find every variable that is assigned the value {values[0]}, directly or through "
            "other variables. Answer with the variable names only, separated by commas, "
            "in any order."
        )
        context = corpus.paragraphs(haystack)
        return Task(self.name, size, seed, "", query, context, sorted(chains[0]))

    def score(self, task: Task, answer: Any) -> float:
        """Share of the chain's variables named (extra names cost), in any order."""
        return scoring.set_match(answer, task.expected)


FAMILY = Vartrack()
