"""Task families: deterministic per seed, answer keys re-derived independently from the text."""

from __future__ import annotations

import ast
import collections
import datetime
import hashlib
import itertools
import json
import os
import random
import re
import subprocess
import sys
from typing import Any

import pytest

from fathom.bench.policies import classify
from fathom.bench.tasks import families, get_family, parse_size, records
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


# -- vartrack -----------------------------------------------------------------------------

VAR_RE = re.compile(r"VAR (\w+) = (VAR (\w+)|\d+)\.")


@pytest.mark.parametrize("size", SIZES)
def test_vartrack_key_follows_the_chains_in_the_text(size: int) -> None:
    family = get_family("vartrack")
    task = family.generate(size, 5)
    value = re.search(r"assigned the value (\d+)", task.query)
    assert value
    bound: set[str] = set()
    defined: set[str] = set()
    for name, source, ref in VAR_RE.findall(task.context):
        assert ref == "" or ref in defined  # every statement comes after the one it names
        defined.add(name)
        if source == value.group(1) or ref in bound:
            bound.add(name)
    assert sorted(bound) == task.expected and len(bound) == 5
    assert family.score(task, " , ".join(task.expected[::-1])) == 1.0
    assert family.score(task, ", ".join(task.expected[:4])) == 0.8


# -- oolong and pairs ---------------------------------------------------------------------

RECORD_RE = re.compile(r"^Date: (\w{3} \d{2}, \d{4}) \|\| User: (\d+) \|\| Instance: (.+)$")


def _records(task: Task) -> list[tuple[int, datetime.date, str]]:
    rows = []
    for line in task.context.splitlines():
        found = RECORD_RE.match(line)
        assert found, line
        day = datetime.datetime.strptime(found.group(1), "%b %d, %Y").date()
        rows.append((int(found.group(2)), day, classify(found.group(3))))
    return rows


def test_every_question_template_is_judged_by_its_wording() -> None:
    rng = random.Random(0)
    for label in records.LABELS:
        for _ in range(200):
            question = records.question(rng, label)
            assert classify(question) == label.value, question


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", ["count", "most", "least", "count_since", "compare"])
def test_oolong_key_recounted_from_the_records(size: int, variant: str) -> None:
    family = get_family("oolong")
    task = family.generate(size, 11, variant=variant)  # type: ignore[call-arg]
    rows = _records(task)
    assert 0.8 * records.record_count(size) <= len(rows) <= 1.2 * records.record_count(size)
    counts = collections.Counter(label for _, _, label in rows)
    label = re.search(r"of category (\w+)", task.query)
    if variant == "count":
        assert label and task.expected == counts[label.group(1)]
    elif variant in ("most", "least"):
        ranked = sorted(records.LABELS, key=lambda lb: counts[lb.value])
        assert len({counts[lb.value] for lb in records.LABELS}) == 6  # no ties
        assert task.expected == (ranked[-1] if variant == "most" else ranked[0]).value
    elif variant == "count_since":
        when = re.search(r"on or after (.+?)\?", task.query)
        assert label and when
        since = datetime.datetime.strptime(when.group(1), "%B %d, %Y").date()
        assert task.expected == sum(1 for _, d, lb in rows if lb == label.group(1) and d >= since)
    else:
        asked = re.search(r"before (\w+ \d{2}, \d{4}), .* category (\w+) as of category (\w+)\?",
                          task.query)
        assert asked
        cut = datetime.datetime.strptime(asked.group(1), "%B %d, %Y").date()
        before = collections.Counter(lb for _, d, lb in rows if d < cut)
        a, b = before[asked.group(2)], before[asked.group(3)]
        assert task.expected == ("more" if a > b else "fewer" if a < b else "same")


def test_oolong_scores_counts_by_distance() -> None:
    family = get_family("oolong")
    task = family.generate(8_000, 0, variant="count")  # type: ignore[call-arg]
    assert family.score(task, str(task.expected)) == 1.0
    assert family.score(task, str(task.expected + 2)) == pytest.approx(0.75**2)
    assert family.score(task, "about forty") == 0.0


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", ["atleast", "two_labels", "dated"])
def test_pairs_key_recounted_from_the_records(size: int, variant: str) -> None:
    family = get_family("pairs")
    task = family.generate(size, 4, variant=variant)  # type: ignore[call-arg]
    rows = _records(task)
    per_user: dict[int, list[tuple[datetime.date, str]]] = collections.defaultdict(list)
    for user, day, label in rows:
        per_user[user].append((day, label))
    need = [(int(n), lb) for n, lb in re.findall(r"at least (\d+) (?:questions )?of category (\w+)",
                                                    task.query)]
    year = re.search(r"asked in (\d{4}) or later", task.query)

    def meets(items: list[tuple[datetime.date, str]]) -> bool:
        kept = [lb for d, lb in items if not year or d.year >= int(year.group(1))]
        return all(kept.count(lb) >= n for n, lb in need)

    qualifying = sorted(u for u, items in per_user.items() if meets(items))
    assert [list(p) for p in itertools.combinations(qualifying, 2)] == task.expected
    assert len(qualifying) >= 4
    # Near misses: users one question (or one date) short of the condition.
    near = [u for u, items in per_user.items() if not meets(items) and len(items) >= 3]
    assert near
    pairs = ", ".join(f"({b}, {a})" for a, b in task.expected)  # either order within a pair
    assert family.score(task, pairs) == 1.0
    assert 0.0 < family.score(task, pairs.split("), ")[0] + ")") < 0.5


# -- multihop -----------------------------------------------------------------------------

FACT_RES = {
    "founder": r"(?<!\w){} was founded by ([A-Z][a-z]+ [A-Z][a-z]+)\.",
    "born": r"(?<!\w){} was born in ([A-Z][a-z]+)\.",
    "lies": r"(?<!\w){} lies in ([A-Z][a-z]+ Province)\.",
    "hq": r"(?<!\w){} has its headquarters in ([A-Z][a-z]+)\.",
}


def _fact(documents: list[str], kind: str, subject: str) -> str:
    found = [m for d in documents for m in re.findall(FACT_RES[kind].format(re.escape(subject)), d)]
    assert len(found) == 1, (kind, subject, found)
    return str(found[0])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "variant", ["founder_birthplace", "founder_province", "headquarters_province"])
def test_multihop_key_follows_facts_across_documents(size: int, variant: str) -> None:
    family = get_family("multihop")
    task = family.generate(size, 2, variant=variant)  # type: ignore[call-arg]
    docs = task.context
    assert isinstance(docs, list) and len(docs) >= 12
    company = re.search(r"(?:founder of|does) (.+?) (?:was born|born|have its)", task.query)
    assert company
    if variant == "headquarters_province":
        hops = ["hq", "lies"]
    else:
        hops = ["founder", "born"] + (["lies"] if variant == "founder_province" else [])
    answer = company.group(1)
    holders = []
    for kind in hops:
        holders.append(next(i for i, d in enumerate(docs)
                            if re.search(FACT_RES[kind].format(re.escape(answer)), d)))
        answer = _fact(docs, kind, answer)
    assert answer == task.expected
    assert len(set(holders)) == len(hops)  # every hop is in another document
    # A near-miss company with the same stem, founded by someone else.
    stem = company.group(1).split(" ")[0]
    assert len(re.findall(rf"(?<!\w){stem} \w+ was founded by", "\n".join(docs))) >= 2
    assert family.score(task, f" {task.expected.upper()}.") == 1.0


# -- codeqa -------------------------------------------------------------------------------


class _Calls(ast.NodeVisitor):
    """Recount of callers with a visitor and an explicit stack of scopes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.scopes: list[tuple[str, bool]] = []  # (name, is a def)
        self.found: set[str] = set()

    def _scope(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scopes.append((node.name, not isinstance(node, ast.ClassDef)))
        self.generic_visit(node)
        self.scopes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scope(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scope(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scope(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = getattr(func, "id", None) or getattr(func, "attr", None)
        if called == self.name and self.scopes and self.scopes[-1][1]:
            self.found.add(".".join(n for n, _ in self.scopes))
        self.generic_visit(node)


def _recount(task: Task) -> Any:
    kind = task.variant
    name = re.search(r"`(\w+)`", task.query)
    assert name
    found: list[str] = []
    for path, source in task.context.items():
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        if kind == "callers":
            visitor = _Calls(name.group(1))
            visitor.visit(tree)
            found += [f"{path}:{q}" for q in visitor.found]
        elif kind == "subclasses":
            found += [f"{path}:{q}" for q in _class_names(tree, name.group(1))]
        elif name.group(1) in _top_level_assigned(tree):
            found.append(path)
    return sorted(found) if kind != "constant" else found


def _class_names(tree: ast.Module, base: str) -> list[str]:
    out = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
           and any(ast.unparse(b).split(".")[-1] == base for b in node.bases)]
    # Qualified names from the parents of each class.
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    names = []
    for cls in out:
        parts, node = [cls.name], parents.get(cls)
        while node is not None and not isinstance(node, ast.Module):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                parts.append(node.name)
            node = parents.get(node)
        names.append(".".join(reversed(parts)))
    return names


def _top_level_assigned(tree: ast.Module) -> set[str]:
    skip = {id(n) for d in ast.walk(tree)
            if isinstance(d, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            for n in ast.walk(d)}
    return {t.id for n in ast.walk(tree) if id(n) not in skip
            and isinstance(n, ast.Assign | ast.AnnAssign)
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
            if isinstance(t, ast.Name)}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", ["callers", "subclasses", "constant"])
def test_codeqa_key_recounted_from_the_sources(size: int, variant: str) -> None:
    family = get_family("codeqa")
    task = family.generate(size, 6, variant=variant)  # type: ignore[call-arg]
    assert isinstance(task.context, dict)
    assert all(path.endswith(".py") for path in task.context)
    recount = _recount(task)
    if variant == "constant":
        assert recount == [task.expected]
    else:
        assert recount == task.expected and 1 <= len(recount) <= 20
    answer = task.expected if variant == "constant" else ",\n".join(task.expected)
    assert family.score(task, answer) == 1.0


def test_tasks_are_the_same_in_another_process() -> None:
    """Resume and Ray workers regenerate tasks elsewhere: no dependence on hash order."""
    code = (
        "import hashlib, json, sys\n"
        "from fathom.bench.tasks import families\n"
        "tasks = [f.generate(8000, 3) for f in families()]\n"
        "print(hashlib.sha256(json.dumps([[t.query, t.context, t.expected] for t in tasks],"
        " sort_keys=True).encode()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    tasks = [f.generate(8000, 3) for f in families()]
    here = json.dumps([[t.query, t.context, t.expected] for t in tasks], sort_keys=True)
    assert out.stdout.strip() == hashlib.sha256(here.encode()).hexdigest()
