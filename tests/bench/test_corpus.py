"""The offline corpus: prose from the stdlib's docstrings, deterministic, never filler words."""

from __future__ import annotations

import collections
import random

from fathom.bench import corpus


def test_pool_is_prose_from_the_stdlib() -> None:
    pool = corpus.sentences()
    assert len(pool) > 2_000 and len(set(pool)) == len(pool)
    assert all(s[0].isupper() and s[-1] in ".!?" for s in pool)
    assert not any("magic number" in s or "VAR " in s for s in pool)


def test_text_is_deterministic_sized_and_varied() -> None:
    first = corpus.text(random.Random(1), 200_000)
    assert first == corpus.text(random.Random(1), 200_000)
    assert first != corpus.text(random.Random(2), 200_000)
    assert 180_000 <= len(first) <= 220_000
    words = collections.Counter(first.split())
    # Natural text: many distinct words, and no word dominates (as repeated filler would).
    assert len(words) > 3_000
    assert words.most_common(1)[0][1] < 0.08 * sum(words.values())
    assert "\n\n" in first
