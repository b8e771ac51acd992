"""RULER's needle in a haystack: find the special magic numbers of a key in long prose.

Variants: `single` (one needle), `multikey` (the needle among needles of distractor
keys) and `multivalue` (several needles of the one key, every value wanted). Needles
sit at a configurable depth (0.0 = start, 1.0 = end), spread around it when there are
several.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from fathom.bench import corpus, scoring
from fathom.bench.tasks.base import Task, target_chars, task_rng
from fathom.errors import ConfigError

NEEDLE = "One of the special magic numbers for {key} is: {value}."
VARIANTS = ("single", "multikey", "multivalue")
DISTRACTOR_KEYS = 3
VALUES_PER_KEY = 4

_ADJECTIVES = (
    "amber", "brisk", "calm", "dusty", "eager", "faded", "gentle", "hollow", "icy", "jolly",
    "keen", "lucid", "mellow", "nimble", "ochre", "plucky", "quiet", "rustic", "silver",
    "tidy", "upbeat", "vivid", "wary", "young", "zesty", "bold", "crisp", "deft", "fuzzy",
    "grand",
)
_NOUNS = (
    "harbor", "lantern", "meadow", "orchard", "pebble", "quarry", "river", "saddle", "thicket",
    "upland", "valley", "willow", "yarrow", "anchor", "beacon", "canyon", "dune", "ember",
    "fjord", "grove", "hamlet", "island", "juniper", "kettle", "ledge", "marsh", "nook",
    "outpost", "prairie", "ridge",
)


def make_keys(rng: random.Random, count: int) -> list[str]:
    """`count` distinct keys like "amber-harbor"."""
    keys: list[str] = []
    while len(keys) < count:
        key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
        if key not in keys:
            keys.append(key)
    return keys


def make_values(rng: random.Random, count: int) -> list[str]:
    """`count` distinct seven-digit numbers as text."""
    return [str(v) for v in rng.sample(range(1_000_000, 10_000_000), count)]


def place(rng: random.Random, haystack: list[str], needles: list[str], depth: float) -> None:
    """Insert the needles into the list of sentences around `depth` (0..1), in place."""
    n = len(haystack)
    spread = 0.0 if len(needles) == 1 else min(depth, 1 - depth, 0.2)
    for needle in needles:
        at = depth + rng.uniform(-spread, spread)
        haystack.insert(round(min(max(at, 0.0), 1.0) * n), needle)


@dataclass(frozen=True)
class Niah:
    """The `niah` family."""

    name: str = "niah"
    description: str = "needle in a haystack (RULER): find the magic numbers of a key in prose"

    def generate(
        self, size: int, seed: int, *, variant: str | None = None, depth: float | None = None,
    ) -> Task:
        """A haystack of about `size` tokens; the variant defaults by seed, the depth at random."""
        variant = variant or VARIANTS[seed % len(VARIANTS)]
        if variant not in VARIANTS:
            raise ConfigError(f"niah has no variant {variant!r}: choose from {', '.join(VARIANTS)}")
        rng = task_rng(self.name, size, seed, variant)
        depth = rng.random() if depth is None else depth
        if not 0.0 <= depth <= 1.0:
            raise ConfigError(f"needle depth must be between 0.0 and 1.0, not {depth}")
        keys = make_keys(rng, 1 + (DISTRACTOR_KEYS if variant == "multikey" else 0))
        key = keys[0]
        count = VALUES_PER_KEY if variant == "multivalue" else 1
        values = make_values(rng, count + len(keys) - 1)
        needles = [NEEDLE.format(key=key, value=v) for v in values[:count]]
        distractors = zip(keys[1:], values[count:], strict=True)
        needles += [NEEDLE.format(key=k, value=v) for k, v in distractors]
        rng.shuffle(needles)
        haystack = corpus.sentences_for(rng, target_chars(size) - sum(map(len, needles)))
        place(rng, haystack, needles, depth)
        if count == 1:
            query = (f"What is the special magic number for {key} mentioned in the text? "
                     "Answer with the number only.")
        else:
            query = (f"What are all the special magic numbers for {key} mentioned in the text? "
                     "Answer with the numbers only, separated by commas, in any order.")
        return Task(self.name, size, seed, variant, query, corpus.paragraphs(haystack),
                    sorted(values[:count]))

    def score(self, task: Task, answer: Any) -> float:
        """Exact match of the value; for several values, the share found (extras cost)."""
        if len(task.expected) == 1:
            return scoring.exact_match(answer, task.expected[0])
        return scoring.set_match(answer, task.expected)


FAMILY = Niah()
