"""OOLONG-style aggregation: count, rank and compare question categories over many records.

The context is thousands of record lines (date, user, question); every query needs the
category of every question in range, which is only known by reading each one.
"""

from __future__ import annotations

import collections
import datetime
import random
from dataclasses import dataclass
from typing import Any

from fathom.bench import scoring
from fathom.bench.tasks import records
from fathom.bench.tasks.base import Task, task_rng
from fathom.bench.tasks.records import LABELS, Label

VARIANTS = ("count", "most", "least", "count_since", "compare")
COMPARISONS = ("more", "fewer", "same")

_PREAMBLE = (
    "The context lists records, one per line, each with a date, a user id and a question. "
    + records.LABEL_GUIDE
)


def _label_weights(rng: random.Random) -> list[float]:
    # Distinct, uneven weights so the most and least frequent labels are clear at any size.
    return [0.5 + i + rng.random() * 0.5 for i in rng.sample(range(len(LABELS)), len(LABELS))]


def _untie(rng: random.Random, labels: list[Label]) -> None:
    """Relabel records until no two labels share a count (the ranking queries need that)."""
    while True:
        counts = collections.Counter(labels)
        holders: dict[int, list[Label]] = collections.defaultdict(list)
        for label in LABELS:
            holders[counts[label]].append(label)
        tied = next((group for group in holders.values() if len(group) > 1), None)
        if tied is None:
            return
        # Move one record of another label to the first tied one (its count may be 0).
        index = rng.choice([i for i, label in enumerate(labels) if label is not tied[0]])
        labels[index] = tied[0]


@dataclass(frozen=True)
class Oolong:
    """The `oolong` family."""

    name: str = "oolong"
    description: str = "aggregation (OOLONG): count, rank and compare the categories of questions"

    def generate(self, size: int, seed: int, *, variant: str | None = None) -> Task:
        """About `size` tokens of records and one aggregate question about their categories."""
        variant = variant or VARIANTS[seed % len(VARIANTS)]
        rng = task_rng(self.name, size, seed, variant)
        count = records.record_count(size)
        labels = rng.choices(LABELS, weights=_label_weights(rng), k=count)
        _untie(rng, labels)
        days = [records.random_day(rng) for _ in range(count)]
        users = records.user_ids(rng, max(1, count // 3))
        lines = [records.format_record(rng, rng.choice(users), d, lb)
                 for d, lb in zip(days, labels, strict=True)]
        question, expected = self._question(rng, variant, labels, days)
        return Task(self.name, size, seed, variant, f"{_PREAMBLE}\n\n{question}",
                    "\n".join(lines), expected)

    def _question(
        self, rng: random.Random, variant: str, labels: list[Label], days: list[int],
    ) -> tuple[str, Any]:
        counts = collections.Counter(labels)
        label = rng.choice(LABELS)
        if variant == "count":
            return (f"How many of the questions are of category {label.value}? "
                    "Answer with a number only."), counts[label]
        if variant in ("most", "least"):
            ranked = sorted(LABELS, key=lambda lb: counts[lb])
            pick = ranked[-1] if variant == "most" else ranked[0]
            word = "most" if variant == "most" else "least"
            names = ", ".join(lb.value for lb in LABELS)
            return (f"Which category of question is the {word} frequent? Answer with the "
                    f"category name only, one of: {names}."), pick.value
        cut = rng.randint(records.FIRST_DAY + 200, records.LAST_DAY - 200)
        when = datetime.date.fromordinal(cut).strftime("%B %d, %Y")
        if variant == "count_since":
            since = sum(1 for d, lb in zip(days, labels, strict=True) if d >= cut and lb is label)
            return (f"How many questions of category {label.value} were asked on or after "
                    f"{when}? Answer with a number only."), since
        other = rng.choice([lb for lb in LABELS if lb is not label])
        before = collections.Counter(lb for d, lb in zip(days, labels, strict=True) if d < cut)
        a, b = before[label], before[other]
        verdict = COMPARISONS[0] if a > b else COMPARISONS[1] if a < b else COMPARISONS[2]
        return (f"Among the questions asked before {when}, are there more, fewer or the same "
                f"number of questions of category {label.value} as of category {other.value}? "
                "Answer with one word: more, fewer or same."), verdict

    def score(self, task: Task, answer: Any) -> float:
        """0.75 ** |error| for counts, as in OOLONG; exact match for labels and comparisons."""
        if isinstance(task.expected, int):
            return scoring.numeric_score(answer, task.expected)
        return scoring.exact_match(answer, task.expected)


FAMILY = Oolong()
