"""Prices of models in USD per million tokens, for cost accounting and dollar budgets.

The table holds list prices of the current OpenAI and Anthropic models and
typical hosted prices of common open models (which vary by host: set your own
with `set_price`). Names match exactly first, then by the longest known prefix,
so dated snapshots ("gpt-4o-2024-08-06", "claude-sonnet-4-5-20250929") and
router prefixes ("openai/gpt-5-mini") find their family. A model that is not in
the table costs 0 and `is_priced` says so, so a dollar budget on it cannot be
trusted. Local models are free.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# Characters per token when a count must be estimated (servers without usage,
# budget reservations, context windows in characters). It is OpenAI's rule of
# thumb for English; code and other languages run higher, so estimates are rough.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Price:
    """USD per million tokens; `cached_input` applies to prompt-cache hits and
    `cache_write` to tokens written to the cache (None: the input rate)."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


# (input, output, cached input), standard tier, short-context rates (OpenAI bills
# more above 272K input tokens; Haiku 5.5 above 100K). Sources: OpenAI's and
# Anthropic's pricing pages as of November 2026. Update here when they change.
_TABLE: dict[str, Price] = {
    # OpenAI
    "gpt-6.2-astra": Price(8.00, 40.00, 0.80),
    "gpt-6.2-sol": Price(2.00, 10.00, 0.20),
    "gpt-6.1-sol": Price(2.00, 10.00, 0.10),
    "gpt-6.1-terra": Price(1.00, 5.00, 0.05),
    "gpt-6-astra": Price(10.00, 50.00, 1.00),
    "gpt-6-sol": Price(2.00, 10.00, 0.20),
    "gpt-6-luna": Price(0.10, 0.50, 0.01),
    "gpt-5.6-sol": Price(4.00, 20.00, 0.40),
    "gpt-5.6-terra": Price(2.00, 12.00, 0.20),
    "gpt-5.6-luna": Price(0.20, 1.20, 0.02),
    "gpt-5.5": Price(5.00, 30.00, 0.50),
    "gpt-5.5-pro": Price(30.00, 180.00),
    "gpt-5.4": Price(2.50, 15.00, 0.25),
    "gpt-5.4-mini": Price(0.75, 4.50, 0.075),
    "gpt-5.4-nano": Price(0.20, 1.25, 0.02),
    "gpt-5.4-pro": Price(30.00, 180.00),
    "gpt-5.2": Price(1.75, 14.00, 0.175),
    "gpt-5.1": Price(1.25, 10.00, 0.125),
    "gpt-5": Price(1.25, 10.00, 0.125),
    "gpt-5-mini": Price(0.25, 2.00, 0.025),
    "gpt-5-nano": Price(0.05, 0.40, 0.005),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "o3": Price(2.00, 8.00, 0.50),
    "o4-mini": Price(1.10, 4.40, 0.275),
    # Anthropic (cached input = cache-read price)
    "claude-fable-5-1": Price(10.00, 50.00, 0.25),
    "claude-mythos-5-1": Price(10.00, 50.00, 0.25),
    "claude-fable-5": Price(10.00, 50.00, 1.00),
    "claude-mythos-5": Price(10.00, 50.00, 1.00),
    "claude-opus-5-5": Price(4.00, 20.00, 0.20),
    "claude-opus-5": Price(5.00, 25.00, 0.50),
    "claude-opus-4-8": Price(5.00, 25.00, 0.50),
    "claude-opus-4-7": Price(5.00, 25.00, 0.50),
    "claude-opus-4-6": Price(5.00, 25.00, 0.50),
    "claude-opus-4-5": Price(5.00, 25.00, 0.50),
    "claude-opus-4-1": Price(15.00, 75.00, 1.50),
    "claude-opus-4": Price(15.00, 75.00, 1.50),
    "claude-sonnet-5-5": Price(2.00, 10.00, 0.10),
    "claude-sonnet-5": Price(2.00, 10.00, 0.20),
    "claude-sonnet-4-6": Price(3.00, 15.00, 0.30),
    "claude-sonnet-4-5": Price(3.00, 15.00, 0.30),
    "claude-sonnet-4": Price(3.00, 15.00, 0.30),
    "claude-haiku-5-5": Price(0.10, 0.50, 0.01),
    "claude-haiku-4-5": Price(1.00, 5.00, 0.10),
    "claude-3-5-haiku": Price(0.80, 4.00, 0.08),
    # Open models: typical hosted prices (they vary by host; self-hosted costs your hardware).
    "gpt-oss-120b": Price(0.15, 0.60),
    "gpt-oss-20b": Price(0.05, 0.20),
    "deepseek-chat": Price(0.28, 0.42, 0.028),
    "deepseek-reasoner": Price(0.28, 0.42, 0.028),
    "qwen3-coder": Price(0.40, 1.60),
    "qwen3-235b-a22b": Price(0.20, 0.60),
    "llama-3.3-70b": Price(0.60, 0.60),
    "llama-3.1-8b": Price(0.05, 0.08),
    "kimi-k2": Price(0.60, 2.50, 0.15),
}

# Anthropic bills a write to its (5-minute) prompt cache at 1.25 times the input rate.
ANTHROPIC_CACHE_WRITE = 1.25
_TABLE.update({
    name: Price(p.input, p.output, p.cached_input, p.input * ANTHROPIC_CACHE_WRITE)
    for name, p in _TABLE.items() if name.startswith("claude-")
})

FREE = Price(0.0, 0.0, 0.0)
_overrides: dict[str, Price] = {}
_lock = threading.Lock()


def _normalise(model: str) -> str:
    # "openai:gpt-5", "openai/gpt-5" (OpenRouter) and "GPT-5" all mean gpt-5.
    name = model.strip().lower()
    prefix, sep, rest = name.partition(":")
    if sep and prefix in ("openai", "anthropic"):
        name = rest
    return name.rsplit("/", 1)[-1]


def set_price(
    model: str, input: float, output: float, cached_input: float | None = None,
    cache_write: float | None = None,
) -> None:
    """Set or replace the USD-per-million-token price of `model` (and its dated snapshots)."""
    with _lock:
        _overrides[_normalise(model)] = Price(input, output, cached_input, cache_write)


def parse_price(text: str) -> tuple[str, float, float]:
    """(model, input, output) from "MODEL=IN,OUT" (USD per million tokens), as `--price` takes
    it; ValueError saying the form otherwise."""
    model, _, pair = text.rpartition("=")
    try:
        inp, out = (float(part) for part in pair.split(","))
        if not model or inp < 0 or out < 0:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"{text!r}: write MODEL=IN,OUT, USD per million input and output tokens "
            "(e.g. openai:my-model=0.25,2.00)"
        ) from None
    return model, inp, out


def price_for(model: str) -> Price | None:
    """The price of `model`, or None when neither the table nor `set_price` knows it."""
    if model == "local" or model.startswith("local:"):
        return FREE
    with _lock:
        overrides = dict(_overrides)
    found = lookup(overrides, model)
    return found if found is not None else lookup(_TABLE, model)


def lookup(table: Mapping[str, T], model: str) -> T | None:
    """`table[model]` by exact name, else by the longest name that is a dash-prefix of it."""
    name = _normalise(model)
    if name in table:
        return table[name]
    # Longest prefix wins, so "gpt-5-mini-2025-08-07" is gpt-5-mini, not gpt-5.
    matches = [k for k in table if name.startswith(k + "-") or name.startswith(k + "@")]
    return table[max(matches, key=len)] if matches else None


def is_priced(model: str) -> bool:
    """Whether `model` has a known price (False means its cost is counted as 0)."""
    return price_for(model) is not None


def cost(
    model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float:
    """USD of one call; `prompt_tokens` includes the cache reads (`cached_tokens`) and
    writes (`cache_write_tokens`), each billed at its own rate. Unknown models cost 0."""
    price = price_for(model)
    if price is None:
        return 0.0
    cached = min(cached_tokens, prompt_tokens)
    written = min(cache_write_tokens, prompt_tokens - cached)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    write_rate = price.input if price.cache_write is None else price.cache_write
    usd = (prompt_tokens - cached - written) * price.input + cached * cached_rate
    usd += written * write_rate
    return (usd + completion_tokens * price.output) / 1e6


def known_models() -> list[str]:
    """Every model name with a price, overrides included."""
    with _lock:
        return sorted(set(_TABLE) | set(_overrides))


def estimate_tokens(text: str) -> int:
    """Token estimate for servers that report no usage, rounded up (see CHARS_PER_TOKEN)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """Token estimate of a chat prompt: the text plus ~4 tokens of framing per message."""
    # One pass over the lengths: called for every root turn, on a history that keeps growing.
    chars = sum(len(m.get("content", "")) for m in messages)
    return -(-chars // CHARS_PER_TOKEN) + 4 * len(messages) + 2
