"""Task families: deterministic per seed, answer keys re-derived independently from the text."""

from __future__ import annotations

import re

import pytest

from fathom.bench.tasks import families, get_family, parse_size
from fathom.bench.tasks.base import Family, Task
from fathom.errors import ConfigError
from fathom.lm.pricing import CHARS_PER_TOKEN

SIZES = (8_000, 64_000)


def test_parse_size_reads_k_and_m() -> None:
    assert parse_size("32k") == 32_000
    assert parse_size("1m") == 1_000_000
    assert parse_size(" 16M ") == 16_000_000
    assert parse_size("8000") == 8_000
    assert parse_size("1.5k") == 1_500


@pytest.mark.parametrize("bad", ["", "k", "12x", "-3k", "0", "lots"])
def test_parse_size_refuses_bad_text(bad: str) -> None:
    with pytest.raises(ConfigError, match="32k"):
        parse_size(bad)


def test_unknown_family_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="niah"):
        get_family("haystack")


def test_every_family_is_registered_and_described() -> None:
    names = [f.name for f in families()]
    assert names[:1] == ["niah"]
    for family in families():
        assert isinstance(family, Family)
        assert family.description and "\n" not in family.description
        assert get_family(family.name) is family


def _size_chars(task: Task) -> int:
    context = task.context
    if isinstance(context, str):
        return len(context)
    if isinstance(context, dict):
        return sum(len(k) + len(v) for k, v in context.items())
    return sum(len(str(item)) for item in context)


@pytest.mark.parametrize("name", [f.name for f in families()])
def test_generation_is_deterministic_and_sized(name: str) -> None:
    family = get_family(name)
    first, again = family.generate(8_000, 1), family.generate(8_000, 1)
    other = family.generate(8_000, 2)
    assert first == again
    assert (first.context, first.expected) != (other.context, other.expected)
    assert first.key().startswith(f"{name}/8000/1")
    chars = _size_chars(first)
    assert 0.5 * 8_000 * CHARS_PER_TOKEN <= chars <= 1.5 * 8_000 * CHARS_PER_TOKEN
    assert family.score(first, first.expected if not isinstance(first.expected, list) else
                        ", ".join(map(str, first.expected))) >= 0.0


# -- niah ---------------------------------------------------------------------------------

NEEDLE_RE = re.compile(r"One of the special magic numbers for ([\w-]+) is: (\d+)\.")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", ["single", "multikey", "multivalue"])
def test_niah_key_matches_the_needles_in_the_text(size: int, variant: str) -> None:
    family = get_family("niah")
    task = family.generate(size, 7, variant=variant)  # type: ignore[call-arg]
    key = re.search(r"numbers? for ([\w-]+) mentioned", task.query)
    assert key
    found = NEEDLE_RE.findall(task.context)
    assert sorted(v for k, v in found if k == key.group(1)) == task.expected
    assert len({k for k, _ in found}) == (4 if variant == "multikey" else 1)
    assert family.score(task, ", ".join(reversed(task.expected))) == 1.0


def test_niah_depth_places_the_needle() -> None:
    family = get_family("niah")
    for depth in (0.0, 0.5, 1.0):
        task = family.generate(16_000, 3, variant="single", depth=depth)  # type: ignore[call-arg]
        at = task.context.index("special magic number") / len(task.context)
        assert abs(at - depth) < 0.05


def test_niah_scoring_is_exact() -> None:
    family = get_family("niah")
    task = family.generate(8_000, 0, variant="single")  # type: ignore[call-arg]
    value = task.expected[0]
    assert family.score(task, f" {value}. ") == 1.0
    assert family.score(task, f"The number is {value}") == 0.0
    assert family.score(task, str(int(value) + 1)) == 0.0
