"""The demo behind `fathom demo` / `make demo`: a needle in a seeded 1M-character haystack.

It builds a long document of filler text with one fact hidden at a random
position, runs a real RLM on it (the embedded model by default: offline, no
key) within a budget that keeps it under five minutes on two cores, and prints
the answer, whether it is right, the usage and where the trace went. The
embedded 135M model is a smoke test of the whole machinery: it cannot write good
REPL code, so expect a wrong answer from it; point the demo at a real model
(`--model openai:...` or FATHOM_MODEL) to see RLMs work.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from fathom.budget import Budget
from fathom.lm.base import LM
from fathom.result import Result
from fathom.terminal import safe_text
from fathom.trace import Event

QUERY = "What is the secret passphrase of the vault? Answer with the passphrase only."

_SUBJECTS = [
    "The harbour",
    "A merchant",
    "The council",
    "Our archivist",
    "The river",
    "A traveller",
    "The old mill",
    "The garrison",
    "A weaver",
    "The lighthouse",
]
_VERBS = [
    "recorded",
    "described",
    "ignored",
    "repaired",
    "counted",
    "visited",
    "measured",
    "forgot",
    "painted",
    "carried",
]
_OBJECTS = [
    "the grain ledgers",
    "a broken compass",
    "seven copper lamps",
    "the winter roads",
    "a list of ships",
    "the northern wall",
    "twelve sealed letters",
    "the salt tax",
    "a map of the marsh",
    "the bell tower",
]
_TAILS = ["before the spring fair.", "without telling anyone.", "in the third year.",
          "after a long dispute.", "for the second time.", "during the flood.",
          "as the records show.", "with little success.", "at the request of the guild.",
          "on a grey morning."]  # fmt: skip
_WORDS = ["amber", "falcon", "juniper", "quartz", "meridian", "cobalt", "saffron", "tundra"]


@dataclass(frozen=True)
class Haystack:
    """The demo document, the hidden fact and where it is."""

    text: str
    passphrase: str
    position: int


def build_haystack(seed: int = 7, chars: int = 1_200_000) -> Haystack:
    """A seeded document of at least `chars` characters with one passphrase hidden in it."""
    rng = random.Random(seed)
    passphrase = f"{rng.choice(_WORDS)}-{rng.choice(_WORDS)}-{rng.randrange(1000, 10000)}"
    needle = f"Note for the keepers: the secret passphrase of the vault is {passphrase}."
    parts: list[str] = []
    size = 0
    day = 0
    while size < chars:
        day += 1
        sentences = " ".join(
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
            f"{rng.choice(_TAILS)}"
            for _ in range(rng.randrange(3, 8))
        )
        paragraph = f"Day {day}. {sentences}\n"
        parts.append(paragraph)
        size += len(paragraph)
    # Hide the needle between two paragraphs, away from the edges a preview shows.
    index = rng.randrange(len(parts) // 10, len(parts) * 9 // 10)
    parts.insert(index, needle + "\n")
    position = sum(len(p) for p in parts[:index])
    return Haystack("".join(parts), passphrase, position)


def _usage_table(result: Result) -> list[str]:
    rows = [f"{'model':<32} {'calls':>6} {'prompt tok':>11} {'output tok':>11} {'usd':>10}"]
    items = [*result.usage.items(), ("total", result.total_usage)]
    for name, usage in items:
        rows.append(
            f"{name:<32} {usage.calls:>6} {usage.prompt_tokens:>11} "
            f"{usage.completion_tokens:>11} {usage.usd:>10.4f}"
        )
    return rows


def run_demo(
    model: str | LM | None = None,
    seed: int = 7,
    chars: int = 1_200_000,
    *,
    seconds: float = 240.0,
    max_iterations: int = 6,
    trace_dir: str | Path = ".fathom",
    sandbox: str = "subprocess",
    out: TextIO | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> Result:
    """Run the needle-in-a-haystack demo and print its report; returns the run's Result.

    `model` (a spec or an LM) defaults to $FATHOM_MODEL, else "local" (the
    embedded model), so the demo stays offline unless asked otherwise.
    `on_event` receives the run's trace events (the CLI draws progress from them).
    """
    from fathom.rlm import RLM  # imported here: fathom.rlm imports the whole engine

    stream = out if out is not None else sys.stdout
    spec = model or os.environ.get("FATHOM_MODEL") or "local"
    label = spec if isinstance(spec, str) else spec.name
    haystack = build_haystack(seed, chars)
    trace_root = Path(trace_dir)
    trace_root.mkdir(parents=True, exist_ok=True)
    trace = trace_root / f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
    print(
        f"fathom demo: {len(haystack.text):,} characters, a passphrase hidden at "
        f"character {haystack.position:,}; model {label}; budget {seconds:g} s, "
        f"{max_iterations} iterations.\ntrace:       {trace} (written as the run goes)",
        file=stream,
        flush=True,
    )
    rlm = RLM(
        model=spec,
        sandbox=sandbox,
        max_iterations=max_iterations,
        max_concurrency=4,
        exec_timeout=60,
        budget=Budget(usd=1.0, seconds=seconds),
        trace=trace,
        on_event=on_event,
    )
    result = rlm.run(QUERY, haystack.text)
    found = haystack.passphrase.lower() in result.answer.lower()
    lines = [
        f"answer:      {result.answer.strip()[:500] or '(none)'}",
        f"expected:    {haystack.passphrase}  ->  {'MATCH' if found else 'no match'}",
        f"stopped:     {result.stop_reason} after {result.iterations} iterations "
        f"in {result.seconds:.1f} s",
        *_usage_table(result),
        f"trace:       {result.trace_path}  (view it: fathom view {result.trace_path})",
    ]
    if result.error:
        lines.insert(3, f"error:       {result.error}")
    if label == "local" and not found:
        lines.append(
            "note:        the embedded 135M model is a smoke test and cannot write good REPL "
            "code; try --model openai:gpt-5-mini or any OpenAI-compatible server."
        )
    # A report for people: what the model wrote is shown, never acted on by the terminal.
    print(safe_text("\n".join(lines)), file=stream, flush=True)
    return result
