"""The oracle scores 1.0 through the real engine and sandbox; random stays near chance."""

from __future__ import annotations

import statistics

import pytest

import fathom
from fathom.bench.policies import FAILED, oracle_models, oracle_sub_reply, random_models
from fathom.bench.tasks import Task, families, get_family
from fathom.errors import ConfigError
from fathom.lm.base import LM

FAMILIES = [f.name for f in families()]
# Seeds pick the variants (seed % number of variants), so these cover every variant.
SEEDS = {8_000: (0, 1, 2), 64_000: (3, 4)}
# Chance level of a random answer, as an upper bound over a few seeds: labels and
# comparisons of oolong can be guessed (1/6, 1/3); names, numbers and pairs cannot.
CHANCE = {"oolong": 0.5}


def _run(models: tuple[LM, LM], task: Task) -> fathom.Result:
    root, sub = models
    return fathom.RLM(model=root, sub_model=sub, max_depth=1).run(task.query, task.context)


@pytest.mark.parametrize("size", sorted(SEEDS))
@pytest.mark.parametrize("name", FAMILIES)
def test_oracle_scores_one_through_the_engine(name: str, size: int) -> None:
    family = get_family(name)
    for seed in SEEDS[size]:
        task = family.generate(size, seed)
        result = _run(oracle_models(name), task)
        assert result.stop_reason == "final", result.answer
        assert family.score(task, result.answer) == 1.0, (task.key(), result.answer, task.expected)
        sub_usage = [u for model, u in result.usage.items() if model == "oracle-sub"]
        assert sub_usage and sub_usage[0].calls >= 1 and sub_usage[0].prompt_tokens > 0


@pytest.mark.parametrize("name", FAMILIES)
def test_oracle_reads_with_code_when_the_repl_has_no_sub_calls(name: str) -> None:
    family = get_family(name)
    task = family.generate(8_000, 5)
    root, sub = oracle_models(name)
    result = fathom.RLM(model=root, sub_model=sub, max_depth=0, sub_calls=False).run(
        task.query, task.context)
    assert family.score(task, result.answer) == 1.0, (task.key(), result.answer, task.expected)
    assert set(result.usage) == {"oracle"}  # no sub-model call was made


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_oracle_scores_one_at_a_million_tokens(name: str) -> None:
    family = get_family(name)
    task = family.generate(1_000_000, 0)
    result = _run(oracle_models(name), task)
    assert family.score(task, result.answer) == 1.0, (task.key(), result.answer, task.expected)


@pytest.mark.parametrize("name", FAMILIES)
def test_random_stays_near_chance(name: str) -> None:
    family = get_family(name)
    scores = []
    for seed in range(6):
        task = family.generate(8_000, seed)
        result = _run(random_models(name, seed), task)
        assert result.stop_reason == "final"
        scores.append(family.score(task, result.answer))
    assert statistics.mean(scores) <= CHANCE.get(name, 0.05), scores


def test_random_is_reproducible_per_seed() -> None:
    task = get_family("niah").generate(8_000, 0)
    answers = {_run(random_models("niah", 3), task).answer for _ in range(2)}
    assert len(answers) == 1


def test_oracle_sub_reads_only_its_prompt() -> None:
    ask = "List every special magic number for amber-harbor in the text below, one per line."
    needle = "One of the special magic numbers for amber-harbor is: 1234567."
    assert oracle_sub_reply(f"{ask}\n\nSome prose. {needle} More prose.") == "1234567"
    assert oracle_sub_reply(f"{ask}\n\nSome prose without it.") == "NONE"
    assert "only answer" in oracle_sub_reply("What is the capital of France?")


def test_oracle_root_gives_up_instead_of_looping() -> None:
    root, _ = oracle_models("niah")
    messages = [{"role": "user", "content": "Query: special magic number for a-b mentioned"},
                {"role": "assistant", "content": "```repl\nboom()\n```"},
                {"role": "user", "content": "NameError: boom"}]
    assert FAILED in root.complete(messages).text  # type: ignore[attr-defined]


def test_unknown_family_has_no_policy() -> None:
    with pytest.raises(ConfigError, match="niah"):
        oracle_models("chess")
    with pytest.raises(ConfigError, match="niah"):
        random_models("chess", 0)
