"""Records of users asking short questions, as in OOLONG's trec-coarse split (oolong, pairs).

A record is one line, "Date: Mar 03, 2023 || User: 482137 || Instance: <question>". The
question's category (six, like TREC's coarse classes) is never written down: questions
come from templates per category with natural cues ("Who ...", "Where ...", "stand
for"), so a reader can judge it, but only by reading the question.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from enum import StrEnum

from fathom.bench.tasks.base import target_chars


class Label(StrEnum):
    """The six question categories (TREC coarse)."""

    ABBREVIATION = "abbreviation"
    ENTITY = "entity"
    DESCRIPTION = "description"
    HUMAN = "human"
    LOCATION = "location"
    NUMERIC = "numeric"


LABELS = tuple(Label)
LABEL_GUIDE = (
    "Each question belongs to exactly one of six categories, as in TREC's coarse classes: "
    "abbreviation (asks what an abbreviation stands for, or for the abbreviation of a name), "
    "entity (asks for a thing: an animal, a color, an instrument, a kind or type of something), "
    "description (asks for an explanation, a reason, a meaning or a difference), "
    "human (asks who someone is or was), location (asks where something is) and "
    "numeric (asks for a number, a count, a distance, an age or a date). The category is not "
    "written in the records: judge it from the question."
)

FIRST_DAY = datetime.date(2020, 1, 1).toordinal()
LAST_DAY = datetime.date(2024, 12, 31).toordinal()
# A record line is about this long; used to size the record count to the input size.
MEAN_RECORD_CHARS = 88

_SYLLABLES = ("bar", "cel", "dor", "fen", "gal", "hol", "ist", "jun", "kar", "lom", "mir",
              "nod", "ost", "pel", "quin", "ras", "sol", "tam", "ul", "ven", "wes", "yor", "zan")
_THINGS = ("lighthouse", "compass", "telescope", "printing press", "steam engine", "sewing machine",
           "barometer", "bicycle", "typewriter", "windmill", "pocket watch", "kaleidoscope")
_ANIMALS = ("otter", "heron", "badger", "lynx", "falcon", "tortoise", "salamander", "marmot",
            "ibex", "pelican", "weasel", "moose")
_FIELDS = ("Botany", "Maritime Trade", "Glassmaking", "Mountain Rescue", "Beekeeping",
           "Cartography", "Weaving", "Rail Transport", "Astronomy", "Pottery")
_WORDS = ("serendipity", "ephemeral", "quixotic", "laconic", "mellifluous", "sonder",
          "petrichor", "halcyon", "lucid", "wistful", "ineffable", "susurrus")
_FOODS = ("bread", "cheese", "soup", "pastry", "noodles", "jam", "cider", "dumplings", "tea")
_UNITS = ("dozen", "gross", "score", "fortnight", "leap year", "century", "deck of cards")


def _name(rng: random.Random) -> str:
    return "".join(rng.choices(_SYLLABLES, k=rng.randint(2, 3))).capitalize()


def _abbr(rng: random.Random) -> str:
    return "".join(rng.choices("ABCDEFGHIJKLMNOPRSTUVW", k=rng.randint(2, 4)))


def _year(rng: random.Random) -> int:
    return rng.randint(1650, 1990)


def _c(seq: tuple[str, ...]) -> Callable[[random.Random], str]:
    return lambda rng: rng.choice(seq)


Template = Callable[[random.Random], str]

# Several templates per category, each with fillers from small lists, so questions
# vary in wording and the cue is the way the question asks, not a fixed sentence.
TEMPLATES: dict[Label, tuple[Template, ...]] = {
    Label.ABBREVIATION: (
        lambda r: f"What does {_abbr(r)} stand for?",
        lambda r: f"What is the abbreviation for the International Society of {_c(_FIELDS)(r)}?",
        lambda r: f"What is {_abbr(r)} short for in {_c(_FIELDS)(r).lower()}?",
        lambda r: f"What is the full form of the acronym {_abbr(r)}?",
    ),
    Label.ENTITY: (
        lambda r: f"What kind of animal is a {_name(r).lower()}?",
        lambda r: f"Which breed of {_c(_ANIMALS)(r)} has the thickest coat?",
        lambda r: f"What color is the flag of {_name(r)}?",
        lambda r: f"What instrument did {_name(r)} {_name(r)} play?",
        lambda r: f"What type of flour is used to make {_c(_FOODS)(r)}?",
        lambda r: f"Name a fruit that grows in {_name(r)}.",
    ),
    Label.DESCRIPTION: (
        lambda r: f"Why do {_c(_ANIMALS)(r)}s migrate in autumn?",
        lambda r: f"How does a {_c(_THINGS)(r)} work?",
        lambda r: f"What is the meaning of the word {_c(_WORDS)(r)}?",
        lambda r: f"What is the difference between a {_c(_THINGS)(r)} and a {_c(_THINGS)(r)}?",
        lambda r: f"Describe the process of making {_c(_FOODS)(r)}.",
    ),
    Label.HUMAN: (
        lambda r: f"Who invented the {_c(_THINGS)(r)}?",
        lambda r: f"Who was the first person to cross {_name(r)} on foot?",
        lambda r: f"Who wrote the novel The {_name(r)} Letters?",
        lambda r: f"Who founded the city of {_name(r)}?",
        lambda r: f"Who was the mayor of {_name(r)} in {_year(r)}?",
    ),
    Label.LOCATION: (
        lambda r: f"Where is the {_name(r)} lighthouse located?",
        lambda r: f"In which country is the river {_name(r)} found?",
        lambda r: f"What city hosted the {_c(_FIELDS)(r)} fair in {_year(r)}?",
        lambda r: f"Where did the first {_c(_ANIMALS)(r)} sanctuary open?",
        lambda r: f"In which valley does {_name(r)} lie?",
    ),
    Label.NUMERIC: (
        lambda r: f"How many days are there in a {_c(_UNITS)(r)}?",
        lambda r: f"When was the {_c(_THINGS)(r)} first patented?",
        lambda r: f"What year did the {_name(r)} treaty take effect?",
        lambda r: f"How far is {_name(r)} from {_name(r)}?",
        lambda r: f"How much does an adult {_c(_ANIMALS)(r)} weigh?",
        lambda r: f"How old is the {_name(r)} bridge?",
    ),
}


def question(rng: random.Random, label: Label) -> str:
    """A question of category `label`."""
    return rng.choice(TEMPLATES[label])(rng)


def format_date(ordinal: int) -> str:
    """A day as the records write it: "Mar 03, 2023"."""
    return datetime.date.fromordinal(ordinal).strftime("%b %d, %Y")


def format_record(rng: random.Random, user: int, day: int, label: Label) -> str:
    """One record line, its question drawn for `label`."""
    return f"Date: {format_date(day)} || User: {user} || Instance: {question(rng, label)}"


def record_count(size: int) -> int:
    """How many records fill about `size` tokens."""
    return max(20, target_chars(size) // MEAN_RECORD_CHARS)


def random_day(rng: random.Random) -> int:
    """A day between FIRST_DAY and LAST_DAY."""
    return rng.randint(FIRST_DAY, LAST_DAY)


def user_ids(rng: random.Random, count: int) -> list[int]:
    """`count` distinct six-digit user ids."""
    return rng.sample(range(100_000, 1_000_000), count)
