"""OOLONG-Pairs: every pair of users whose questions meet conditions on their categories.

Most users ask one or two questions; a few planted users meet the condition and a few
near misses fall one question (or one date) short. Scored by F1 over the pairs.
"""

from __future__ import annotations

import datetime
import itertools
import random
from dataclasses import dataclass
from typing import Any

from fathom.bench import scoring
from fathom.bench.tasks import records
from fathom.bench.tasks.base import Task, task_rng
from fathom.bench.tasks.records import LABELS, Label

VARIANTS = ("atleast", "two_labels", "dated")
NEAR_MISSES = 4
# Users outside the plant ask at most this many questions, fewer than any condition needs.
BACKGROUND_MAX = 2

# (user, day, label): one record before it is written out.
Record = tuple[int, int, Label]

_PREAMBLE = (
    "The context lists records, one per line, each with a date, a user id and a question. "
    + records.LABEL_GUIDE
)


@dataclass(frozen=True)
class _Plan:
    condition: str
    # Labels (and whether each must be dated in `year` or later) of a qualifying
    # user's questions, and of a near miss's.
    hit: list[tuple[Label, bool]]
    miss: list[tuple[Label, bool]]
    year: int


def _plan(rng: random.Random, variant: str) -> _Plan:
    x, y = rng.sample(LABELS, 2)
    year = rng.randint(2021, 2024)
    if variant == "atleast":
        return _Plan(f"has at least 3 questions of category {x.value}",
                     [(x, False)] * 3, [(x, False)] * 2 + [(y, False)], year)
    if variant == "two_labels":
        return _Plan(f"has at least 2 questions of category {x.value} and at least 2 of "
                     f"category {y.value}", [(x, False)] * 2 + [(y, False)] * 2,
                     [(x, False)] * 2 + [(y, False)], year)
    return _Plan(f"has at least 3 questions of category {x.value} asked in {year} or later",
                 [(x, True)] * 3, [(x, True)] * 2, year)


def _new_year(year: int) -> int:
    return datetime.date(year, 1, 1).toordinal()


def _day(rng: random.Random, year: int, dated: bool) -> int:
    # A dated question falls in `year` or later; an undated one may fall anywhere.
    return rng.randint(_new_year(year) if dated else records.FIRST_DAY, records.LAST_DAY)


def _planted(rng: random.Random, plan: _Plan, users: list[int], hits: int) -> list[Record]:
    out: list[Record] = []
    for index, user in enumerate(users):
        wanted = plan.hit if index < hits else plan.miss
        for label, dated in wanted:
            out.append((user, _day(rng, plan.year, dated), label))
        # Near misses also get questions of the right category before the year, and
        # everyone gets a question or two of other categories.
        if index >= hits and any(dated for _, dated in wanted):
            early = rng.randint(records.FIRST_DAY, _new_year(plan.year) - 1)
            out.append((user, early, wanted[0][0]))
        others = [lb for lb in LABELS if lb not in {lb for lb, _ in plan.hit}]
        out.extend((user, records.random_day(rng), rng.choice(others))
                   for _ in range(rng.randint(0, 2)))
    return out


@dataclass(frozen=True)
class Pairs:
    """The `pairs` family."""

    name: str = "pairs"
    description: str = "pairwise aggregation (OOLONG-Pairs): every pair of users meeting conditions"

    def generate(self, size: int, seed: int, *, variant: str | None = None) -> Task:
        """About `size` tokens of records; the answer is every pair of qualifying users."""
        variant = variant or VARIANTS[seed % len(VARIANTS)]
        rng = task_rng(self.name, size, seed, variant)
        plan = _plan(rng, variant)
        hits = rng.randint(4, 7)
        count = records.record_count(size)
        # Background users ask 1.5 questions on average; enough of them for every record.
        background_users = count * 2 // 3 + 1
        ids = records.user_ids(rng, hits + NEAR_MISSES + background_users)
        rows = _planted(rng, plan, ids[: hits + NEAR_MISSES], hits)
        background = ids[hits + NEAR_MISSES :]
        per_user = itertools.chain.from_iterable(
            [u] * rng.randint(1, BACKGROUND_MAX) for u in background)
        for user in itertools.islice(per_user, max(0, count - len(rows))):
            rows.append((user, records.random_day(rng), rng.choice(LABELS)))
        rng.shuffle(rows)
        lines = [records.format_record(rng, u, d, lb) for u, d, lb in rows]
        qualifying = sorted(ids[:hits])
        query = (
            f"{_PREAMBLE}\n\nList every pair of user ids where each of the two users "
            f"{plan.condition}. "
            "Write each pair once, lower id first, in parentheses and separated by commas, "
            "for example: (100001, 100002), (100001, 100003). Answer with the pairs only."
        )
        expected = [list(p) for p in itertools.combinations(qualifying, 2)]
        return Task(self.name, size, seed, variant, query, "\n".join(lines), expected)

    def score(self, task: Task, answer: Any) -> float:
        """F1 of the answer's pairs against the qualifying pairs."""
        return scoring.pairs_f1(answer, task.expected)


FAMILY = Pairs()
