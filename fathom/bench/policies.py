"""Reference policies: `oracle` (always right, through the real engine) and `random` (chance).

The oracle proves that a family's answer can be read from its text, that the engine and
sandbox carry it, and that the scoring accepts it. Its root writes real REPL code for
the family (split `context`, `llm_query_batched` over the pieces, aggregate, `FINAL`);
its sub-model answers only from the text of its own prompt, by parsing it like a
careful reader would: it never sees the generator's state or the answer key. In a REPL
without sub-calls (the bench's `repl` method) the root's code does that reading itself.
Methods that never run code (`direct`, `bm25`, `summarize`) get no answer from it.
The random policy answers in the right format with random values, and scores near chance.
"""

from __future__ import annotations

import datetime
import itertools
import random
import re
import string
from collections.abc import Callable

from fathom.bench.tasks import codeqa
from fathom.errors import ConfigError
from fathom.lm.base import LM, Message
from fathom.lm.scripted import ScriptedLM

# Prompt sizes of the oracle's sub-calls; far inside its window, so a run at any size
# makes ~N/100K sub-calls, as a real model's root would.
CHUNK_CHARS = 400_000
ROOT_WINDOW = SUB_WINDOW = 272_000
FILE_MARK = "##### FILE: "
FAILED = "the oracle's code failed"

# -- the sub-model: reads its prompt ----------------------------------------------------------

# Question categories from the way a question asks (TREC coarse); order matters: the
# first rule that matches wins.
_CATEGORY_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("abbreviation", re.compile(r"\bstand for\b|\babbreviation\b|\bacronym\b|\bshort for\b")),
    ("human", re.compile(r"^(?:who|whom|whose)\b", re.I)),
    ("location", re.compile(r"^(?:where\b|in which (?:country|city|valley|region)\b|"
                            r"what (?:city|country|continent)\b)", re.I)),
    ("numeric", re.compile(r"^(?:how (?:many|much|far|long|old)\b|when\b|what year\b)", re.I)),
    ("description", re.compile(r"^(?:why\b|how (?:does|do|did|can|is)\b|describe\b|"
                               r"what is the (?:meaning|difference)\b)", re.I)),
)
_RECORD = re.compile(r"^Date: (\w{3} \d{2}, \d{4}) \|\| User: (\d+) \|\| Instance: (.*)$", re.M)


def classify(question: str) -> str:
    """The TREC-coarse category of a question, judged from how it asks."""
    for label, rule in _CATEGORY_RULES:
        if rule.search(question.strip()):
            return label
    return "entity"


def _read_records(text: str) -> str:
    rows = []
    for day, user, question in _RECORD.findall(text):
        iso = datetime.datetime.strptime(day, "%b %d, %Y").date().isoformat()
        rows.append(f"{user}\t{iso}\t{classify(question)}")
    return "\n".join(rows) or "NONE"


def _lines_or_none(found: list[str]) -> str:
    return "\n".join(found) or "NONE"


def _files(text: str) -> dict[str, str]:
    parts = text.split("\n" + FILE_MARK)
    files = {}
    for part in parts:
        head, _, source = part.removeprefix(FILE_MARK).partition("\n")
        if head:
            files[head] = source
    return files


def _code_answer(kind: str, name: str, text: str) -> str:
    found: list[str] = []
    for path, source in _files(text).items():
        if name not in source:
            continue
        tree = codeqa.parse(source)
        if tree is None:
            continue
        if kind == "constant":
            found += [path] if name in codeqa.module_constants(tree) else []
        else:
            find = codeqa.callers if kind == "callers" else codeqa.subclasses
            found += [f"{path}:{qual}" for qual in sorted(find(tree, name))]
    return _lines_or_none(found)


def _fact(pattern: str) -> Callable[[re.Match[str], str], str]:
    def read(ask: re.Match[str], text: str) -> str:
        subject = re.escape(ask.group(1))
        found = re.search(r"(?<!\w)" + pattern.format(subject=subject), text)
        return found.group(1) if found else "NONE"
    return read


_NAME = r"([A-Z][a-z]+(?: [A-Z][a-z]+)?)"
# What the sub-model can be asked (the first paragraph of its prompt), and how it reads
# the rest of the prompt to answer.
_SKILLS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str], str], str]], ...] = (
    (re.compile(r"List every special magic number for ([\w-]+) "),
     lambda ask, text: _lines_or_none(re.findall(
         rf"special magic numbers for {re.escape(ask.group(1))} is: (\d+)\.", text))),
    (re.compile(r"List every VAR statement"),
     lambda ask, text: _lines_or_none(re.findall(r"VAR \w+ = (?:VAR \w+|\d+)\.", text))),
    (re.compile(r"Classify the question of every record"), lambda ask, text: _read_records(text)),
    (re.compile(r"Who founded (.+?)\?"), _fact(r"{subject} was founded by " + _NAME + r"\.")),
    (re.compile(r"In which city was (.+?) born\?"),
     _fact(r"{subject} was born in " + _NAME + r"\.")),
    (re.compile(r"In which province does (.+?) lie\?"),
     _fact(r"{subject} lies in ([A-Z][a-z]+ Province)\.")),
    (re.compile(r"In which city does (.+?) have its headquarters\?"),
     _fact(r"{subject} has its headquarters in " + _NAME + r"\.")),
    (re.compile(r"List the (callers|subclasses|constant) (?:of|named) `(\w+)`"),
     lambda ask, text: _code_answer(ask.group(1), ask.group(2), text)),
)


def oracle_sub_reply(prompt: str) -> str:
    """The oracle sub-model's answer: what the text after the first paragraph says."""
    instruction, _, text = prompt.partition("\n\n")
    for pattern, read in _SKILLS:
        ask = pattern.search(instruction)
        if ask:
            return read(ask, text)
    return "I can only answer the oracle's own questions about the text I am given."


def _last_user(messages: list[Message]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


# -- the root: writes REPL code for the family --------------------------------------------------

_PRELUDE = f'''\
import datetime, itertools, re
from collections import Counter, defaultdict

def text_chunks(text, size={CHUNK_CHARS}):
    """Pieces of at most `size` characters, cut at line ends."""
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind("\\n", start, end)
            end = cut + 1 if cut > start else end
        pieces.append(text[start:end])
        start = end
    return pieces

def group(items, size={CHUNK_CHARS}):
    """Texts joined into pieces of about `size` characters."""
    pieces, current = [], ""
    for item in items:
        if current and len(current) + len(item) > size:
            pieces.append(current)
            current = ""
        current += item
    return pieces + ([current] if current else [])

try:
    llm_query_batched
except NameError:
    # A REPL without sub-calls (the repl method): read every piece with code instead.
    from fathom.bench.policies import oracle_sub_reply
    def llm_query_batched(prompts):
        return [oracle_sub_reply(p) for p in prompts]

def ask_all(instruction, pieces):
    """The sub-model's reply lines over every piece, NONE dropped."""
    replies = llm_query_batched([instruction + "\\n\\n" + p for p in pieces])
    return [line.strip() for r in replies for line in r.splitlines()
            if line.strip() and line.strip() != "NONE"]
'''

_RECORDS = '''
rows = [line.split("\\t") for line in ask_all(
    "Classify the question of every record in the text below. Reply with one line per "
    "record: the user id, the date as YYYY-MM-DD and the category, separated by tabs.",
    text_chunks(context))]
rows = [(user, datetime.date.fromisoformat(day), label) for user, day, label in rows]
print(len(rows), "records classified")
'''


def _search(pattern: str, query: str) -> re.Match[str]:
    found = re.search(pattern, query)
    if not found:
        raise ConfigError(f"the oracle does not know this query: {query[:200]!r}")
    return found


def _niah_code(query: str) -> str:
    key = _search(r"numbers? for ([\w-]+) mentioned", query).group(1)
    return f'''
values = sorted(set(ask_all(
    "List every special magic number for {key} in the text below, one per line, or NONE.",
    text_chunks(context))))
FINAL(", ".join(values))
'''


def _vartrack_code(query: str) -> str:
    value = _search(r"assigned the value (\d+)", query).group(1)
    return f'''
statements = ask_all("List every VAR statement in the text below, in order, one per line.",
                     text_chunks(context))
holders = set()
for line in statements:
    name, source = re.fullmatch(r"VAR (\\w+) = (.+)\\.", line).groups()
    if source == "{value}" or source.removeprefix("VAR ") in holders:
        holders.add(name)
FINAL(", ".join(sorted(holders)))
'''


def _oolong_code(query: str) -> str:
    def day(text: str) -> str:
        return repr(datetime.datetime.strptime(text, "%B %d, %Y").date().isoformat())

    if found := re.search(r"How many of the questions are of category (\w+)\?", query):
        answer = f"sum(1 for _, _, label in rows if label == {found.group(1)!r})"
    elif found := re.search(r"category of question is the (most|least) frequent", query):
        # Every category named in the query counts, including one that no record has.
        names = _search(r"one of: ([\w, ]+)\.", query).group(1).split(", ")
        pick = "max" if found.group(1) == "most" else "min"
        answer = (f"(lambda c: {pick}({names!r}, key=lambda label: c[label]))("
                  "Counter(label for _, _, label in rows))")
    elif found := re.search(r"questions of category (\w+) were asked on or after (.+?)\?", query):
        answer = (f"sum(1 for _, d, label in rows if label == {found.group(1)!r} and "
                  f"d >= datetime.date.fromisoformat({day(found.group(2))}))")
    else:
        found = _search(r"asked before (.+?), are there more, fewer or the same number of "
                        r"questions of category (\w+) as of category (\w+)\?", query)
        answer = (f"(lambda c: 'more' if c[{found.group(2)!r}] > c[{found.group(3)!r}] else "
                  f"'fewer' if c[{found.group(2)!r}] < c[{found.group(3)!r}] else 'same')("
                  f"Counter(label for _, d, label in rows "
                  f"if d < datetime.date.fromisoformat({day(found.group(1))})))")
    return _RECORDS + f"answer = {answer}\nFINAL(str(answer))\n"


def _pairs_code(query: str) -> str:
    if found := re.search(r"at least (\d+) questions of category (\w+) and at least (\d+) of "
                          r"category (\w+)", query):
        n, x, m, y = found.groups()
        test = f"c[{x!r}] >= {n} and c[{y!r}] >= {m}"
        counted = "label"
    elif found := re.search(r"at least (\d+) questions of category (\w+) asked in (\d{4}) or "
                            r"later", query):
        n, x, year = found.groups()
        test, counted = f"c[{x!r}] >= {n}", f"label if d.year >= {year} else None"
    else:
        n, x = _search(r"at least (\d+) questions of category (\w+)", query).groups()
        test, counted = f"c[{x!r}] >= {n}", "label"
    return _RECORDS + f'''
per_user = defaultdict(Counter)
for user, d, label in rows:
    per_user[int(user)][{counted}] += 1
qualifying = sorted(user for user, c in per_user.items() if {test})
print(len(qualifying), "users qualify")
FINAL(", ".join(f"({{a}}, {{b}})" for a, b in itertools.combinations(qualifying, 2)))
'''


_MULTIHOP_STEPS = {
    "In which city was the founder of": ("Who founded {}?", "In which city was {} born?"),
    "In which province lies the city where the founder of": (
        "Who founded {}?", "In which city was {} born?", "In which province does {} lie?"),
    "have its headquarters": (
        "In which city does {} have its headquarters?", "In which province does {} lie?"),
}


def _multihop_code(query: str) -> str:
    subject = _search(r"(?:founder of|does) (.+?)(?: born| was born| have its)", query).group(1)
    steps = next(s for lead, s in _MULTIHOP_STEPS.items() if lead in query)
    return f'''
pieces = group([document + "\\n\\n" for document in context])
answer = {subject!r}
for question in {steps!r}:
    found = sorted(set(ask_all(question.format(answer) +
                               " Reply with the name only, or NONE if the text below does not say.",
                               pieces)))
    print(question.format(answer), "->", found)
    answer = found[0]
FINAL(answer)
'''


def _codeqa_code(query: str) -> str:
    if found := re.search(r"Which functions and methods call `(\w+)`", query):
        kind, name = "callers", found.group(1)
    elif found := re.search(r"derive directly from a class named `(\w+)`", query):
        kind, name = "subclasses", found.group(1)
    else:
        kind, name = "constant", _search(r"module-level constant `(\w+)`", query).group(1)
    how = {"callers": "path:QualifiedName of each def calling it",
           "subclasses": "path:QualifiedName of each class deriving from it",
           "constant": "path of the file assigning it at module level"}[kind]
    return f'''
pieces = group(["\\n{FILE_MARK}" + path + "\\n" + source for path, source in context.items()])
found = sorted(set(ask_all("List the {kind} {"of" if kind != "constant" else "named"} `{name}` \
in the files below: the {how}, one per line, or NONE.", pieces)))
FINAL(", ".join(found))
'''


_ORACLE_CODE: dict[str, Callable[[str], str]] = {
    "niah": _niah_code, "vartrack": _vartrack_code, "oolong": _oolong_code,
    "pairs": _pairs_code, "multihop": _multihop_code, "codeqa": _codeqa_code,
}


def _family_policy(table: dict[str, Callable[[str], str]], family: str) -> Callable[[str], str]:
    if family not in table:
        raise ConfigError(f"no reference policy for family {family!r}: "
                          f"choose from {', '.join(table)}")
    return table[family]


def oracle_models(family: str) -> tuple[LM, LM]:
    """(root, sub) of the oracle for `family`: REPL code by the root, reading by the sub."""
    write = _family_policy(_ORACLE_CODE, family)

    def root(messages: list[Message]) -> str:
        if any(m["role"] == "assistant" for m in messages):
            # The code ends with FINAL; a second turn means it failed: say so, don't loop.
            return f"FINAL({FAILED})"
        query = "\n".join(m["content"] for m in messages if m["role"] == "user")
        return f"```repl\n{_PRELUDE}{write(query)}```"

    return (ScriptedLM(root, name="oracle", context_window=ROOT_WINDOW),
            ScriptedLM(lambda m: oracle_sub_reply(_last_user(m)), name="oracle-sub",
                       context_window=SUB_WINDOW))


# -- the random policy ------------------------------------------------------------------------

_LABELS = ("abbreviation", "entity", "description", "human", "location", "numeric")


def _random_answer(family: str, query: str, rng: random.Random) -> str:
    def digits(n: int) -> str:
        return str(rng.randrange(10 ** (n - 1), 10**n))

    def word() -> str:
        return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 9))).capitalize()

    if family == "niah":
        return ", ".join(digits(7) for _ in range(4 if "all the special" in query else 1))
    if family == "vartrack":
        return ", ".join("".join(rng.choices(string.ascii_uppercase, k=5)) for _ in range(5))
    if family == "oolong":
        if "How many" in query:
            return str(rng.randrange(0, 1000))
        if "more, fewer or the same" in query:
            return rng.choice(("more", "fewer", "same"))
        return rng.choice(_LABELS)
    if family == "pairs":
        ids = sorted(int(digits(6)) for _ in range(rng.randint(3, 7)))
        return ", ".join(f"({a}, {b})" for a, b in itertools.pairwise(ids))
    if family == "multihop":
        return word() + (" Province" if "province" in query else "")
    if family == "codeqa":
        path = f"{word().lower()}/{word().lower()}.py"
        return path if "constant" in query else f"{path}:{word()}.{word().lower()}"
    raise ConfigError(f"no reference policy for family {family!r}: "
                      f"choose from {', '.join(_ORACLE_CODE)}")


def random_models(family: str, seed: int) -> tuple[LM, LM]:
    """(root, sub) that answer in the family's format with random values (chance level)."""
    _family_policy(_ORACLE_CODE, family)
    rng = random.Random(f"fathom.bench.random/{family}/{seed}")

    def root(messages: list[Message]) -> str:
        query = "\n".join(m["content"] for m in messages if m["role"] == "user")
        return f"```repl\nFINAL({_random_answer(family, query, rng)!r})\n```"

    def sub(messages: list[Message]) -> str:
        return " ".join(rng.choices(_LABELS, k=3))

    return (ScriptedLM(root, name="random", context_window=ROOT_WINDOW),
            ScriptedLM(sub, name="random-sub", context_window=SUB_WINDOW))
