"""BrowseComp-Plus-style multi-hop questions over many documents about fictional entities.

Each document is about one company, person or city, its facts set in prose. A question
chains two or three facts held by different documents (a company's founder, where that
person was born, which province that city lies in), among near misses: companies with
the same stem, people with nearly the same name, and people who merely moved to a city.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from fathom.bench import corpus, scoring
from fathom.bench.tasks.base import Task, target_chars, task_rng

VARIANTS = ("founder_birthplace", "founder_province", "headquarters_province")
MAX_DOCUMENTS = 5_000
TOKENS_PER_DOCUMENT = 500  # below MAX_DOCUMENTS, documents grow in number, then in length

FOUNDED = "{company} was founded by {person}."
HEADQUARTERS = "{company} has its headquarters in {city}."
BORN = "{person} was born in {city}."
MOVED = "Later in life {person} moved to {city}."
LIES_IN = "{city} lies in {province}."

_SYLLABLES = ("al", "bren", "cor", "dal", "ev", "fin", "gar", "hal", "ith", "jor", "kel", "lun",
              "mar", "nev", "or", "pra", "quen", "ros", "sal", "tor", "ul", "val", "wen", "yl",
              "zor")
_SUFFIXES = ("Works", "Holdings", "Instruments", "Foundry", "Press", "Mills", "Labs", "Freight")


@dataclass
class _World:
    """Entities with their facts; every name is unique."""

    rng: random.Random
    used: set[str] = field(default_factory=set)
    docs: dict[str, list[str]] = field(default_factory=dict)  # title -> fact sentences

    def word(self) -> str:
        return "".join(self.rng.choices(_SYLLABLES, k=self.rng.randint(2, 3))).capitalize()

    def unique(self, make: Any) -> str:
        while (name := make()) in self.used:
            pass
        self.used.add(name)
        return name

    def person(self, like: str | None = None) -> str:
        if like is None:
            return self.unique(lambda: f"{self.word()} {self.word()}")
        first, last = like.split(" ", 1)
        # A near miss: the same first name, the surname changed in its ending only.
        return self.unique(lambda: f"{first} {last[:-2]}{self.rng.choice(_SYLLABLES)}")

    def company(self, stem: str | None = None) -> str:
        return self.unique(lambda: f"{stem or self.word()} {self.rng.choice(_SUFFIXES)}")

    def city(self) -> str:
        return self.unique(self.word)

    def province(self) -> str:
        return self.unique(lambda: f"{self.word()} Province")

    def add(self, title: str, *facts: str) -> None:
        self.docs.setdefault(title, []).extend(facts)

    def person_doc(self, person: str, born: str, moved: str | None = None) -> None:
        facts = [BORN.format(person=person, city=born)]
        if moved:
            facts.append(MOVED.format(person=person, city=moved))
        self.add(person, *facts)

    def company_doc(self, company: str, founder: str, city: str) -> None:
        self.add(company, FOUNDED.format(company=company, person=founder),
                 HEADQUARTERS.format(company=company, city=city))

    def city_doc(self, city: str, province: str) -> None:
        self.add(city, LIES_IN.format(city=city, province=province))


def _chain(world: _World, variant: str) -> tuple[str, str]:
    """Plant the asked-for chain and its near misses; return (question, answer)."""
    provinces = [world.province() for _ in range(4)]
    born, moved, headquarters, near_city = (world.city() for _ in range(4))
    for city, province in zip((born, moved, headquarters, near_city), provinces, strict=True):
        world.city_doc(city, province)
    founder = world.person()
    company = world.company()
    world.company_doc(company, founder, headquarters)
    world.person_doc(founder, born, moved)
    # Near misses: a sister company with the same stem, founded by a near namesake who
    # was born elsewhere.
    namesake = world.person(like=founder)
    world.person_doc(namesake, near_city, born)
    world.company_doc(world.company(stem=company.split(" ")[0]), namesake, near_city)
    if variant == "founder_birthplace":
        return f"In which city was the founder of {company} born?", born
    if variant == "founder_province":
        return (f"In which province lies the city where the founder of {company} was born?",
                provinces[0])
    return f"In which province does {company} have its headquarters?", provinces[2]


def _background(world: _World, count: int) -> None:
    """Unrelated companies, people and cities with facts of the same shapes."""
    rng = world.rng
    cities = [world.city() for _ in range(max(3, count // 3))]
    for city in cities[: count // 3]:
        world.city_doc(city, world.province())
    while len(world.docs) < count:
        founder = world.person()
        world.person_doc(founder, rng.choice(cities), rng.choice(cities) if rng.random() < 0.3
                         else None)
        if len(world.docs) < count:
            world.company_doc(world.company(), founder, rng.choice(cities))


@dataclass(frozen=True)
class Multihop:
    """The `multihop` family."""

    name: str = "multihop"
    description: str = "multi-hop QA (BrowseComp-Plus): chain 2-3 facts across many documents"

    def generate(self, size: int, seed: int, *, variant: str | None = None) -> Task:
        """About `size` tokens of documents (a list of str) and one chained question."""
        variant = variant or VARIANTS[seed % len(VARIANTS)]
        rng = task_rng(self.name, size, seed, variant)
        world = _World(rng)
        question, answer = _chain(world, variant)
        _background(world, min(MAX_DOCUMENTS, max(12, size // TOKENS_PER_DOCUMENT)))
        titles = list(world.docs)
        rng.shuffle(titles)
        body = max(200, target_chars(size) // len(titles))
        documents = [_document(rng, title, world.docs[title], body) for title in titles]
        query = (f"The context is a list of documents about companies, people and places. "
                 f"{question} Answer with the name only.")
        return Task(self.name, size, seed, variant, query, documents, answer)

    def score(self, task: Task, answer: Any) -> float:
        """Exact match of the name."""
        return scoring.exact_match(answer, task.expected)


def _document(rng: random.Random, title: str, facts: list[str], chars: int) -> str:
    sentences = corpus.sentences_for(rng, chars - len(title) - sum(map(len, facts)))
    for fact in facts:
        sentences.insert(rng.randrange(len(sentences) + 1), fact)
    return f"Title: {title}\n\n{corpus.paragraphs(sentences)}"


FAMILY = Multihop()
