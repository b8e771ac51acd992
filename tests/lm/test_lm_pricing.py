"""Price table: lookups by family, overrides, unknown models and cached-input pricing."""

from __future__ import annotations

import pytest

from fathom.lm import pricing


def test_known_models_and_their_snapshots_and_router_names() -> None:
    assert pricing.price_for("gpt-5-mini") == pricing.Price(0.25, 2.00, 0.025)
    assert pricing.price_for("gpt-5-mini-2025-08-07") == pricing.price_for("gpt-5-mini")
    assert pricing.price_for("openai/gpt-6-luna") == pricing.price_for("gpt-6-luna")
    assert pricing.price_for("openai:gpt-6-luna") == pricing.price_for("gpt-6-luna")
    assert pricing.price_for("claude-sonnet-4-5-20250929") == pricing.price_for("claude-sonnet-4-5")
    assert pricing.price_for("gpt-4o-mini-2024-07-18") == pricing.Price(0.15, 0.60, 0.075)


def test_cost_counts_cached_input_at_its_own_rate() -> None:
    # 1M prompt tokens of which 400k cached, 100k output, on gpt-5-mini.
    usd = pricing.cost("gpt-5-mini", 1_000_000, 100_000, cached_tokens=400_000)
    assert usd == pytest.approx(0.6 * 0.25 + 0.4 * 0.025 + 0.1 * 2.00)


def test_unknown_models_cost_nothing_and_say_so() -> None:
    assert pricing.price_for("my-finetune") is None
    assert not pricing.is_priced("my-finetune")
    assert pricing.cost("my-finetune", 10_000, 10_000) == 0.0


def test_local_models_are_free_and_priced() -> None:
    assert pricing.is_priced("local") and pricing.is_priced("local:/m/x.gguf")
    assert pricing.cost("local", 10**6, 10**6) == 0.0


def test_set_price_overrides_and_adds() -> None:
    pricing.set_price("my-finetune-v2", input=1.0, output=3.0)
    pricing.set_price("gpt-5-nano", input=9.0, output=9.0, cached_input=1.0)
    try:
        assert pricing.cost("my-finetune-v2", 1_000_000, 1_000_000) == pytest.approx(4.0)
        assert pricing.price_for("gpt-5-nano-2025-08-07") == pricing.Price(9.0, 9.0, 1.0)
        assert "my-finetune-v2" in pricing.known_models()
    finally:
        pricing._overrides.clear()
    assert pricing.price_for("gpt-5-nano") == pricing.Price(0.05, 0.40, 0.005)


def test_token_estimate_is_four_characters_a_token() -> None:
    assert pricing.estimate_tokens("") == 0
    assert pricing.estimate_tokens("abcd" * 10) == 10
    assert pricing.estimate_prompt_tokens([{"role": "user", "content": "abcd"}]) == 1 + 4 + 2
