"""Which models answer a row: a spec pair, or a reference policy chosen per family.

Rows carry a `ModelSource`, not model objects, so a Ray worker builds its own models
(clients, the embedded model) where it runs; `--model oracle` and `--model random`
name the reference policies of `fathom.bench.policies`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fathom.errors import ConfigError
from fathom.lm.base import LM, Completion, Message

POLICIES = ("oracle", "random")


class ModelSource(Protocol):
    """Builds the (root, sub) models of one row where the row runs."""

    @property
    def name(self) -> str:
        """The root model as results name it."""
        ...

    @property
    def sub_name(self) -> str:
        """The sub model as results name it."""
        ...

    def build(self, family: str, seed: int) -> tuple[LM, LM]:
        """Fresh (root, sub) models for one task of `family`."""
        ...


@dataclass(frozen=True)
class SpecModels:
    """Models from spec strings (`openai:gpt-5`, `local`, ...), or a reference policy."""

    model: str
    sub_model: str | None = None
    max_output_tokens: int | None = None
    context_window: int | None = None  # tokens; at most the model's own window
    # (model, USD per million input tokens, per million output): set where the row runs.
    prices: tuple[tuple[str, float, float], ...] = ()

    @property
    def name(self) -> str:
        """The root model as results name it."""
        return self.model

    @property
    def sub_name(self) -> str:
        """The sub model as results name it (the root's when none is given)."""
        return self.sub_model or self.model

    def build(self, family: str, seed: int) -> tuple[LM, LM]:
        """Resolve the specs (a policy's models are made for the family and seed)."""
        if self.model in POLICIES:
            try:
                from fathom.bench import policies
            except ImportError as exc:
                raise ConfigError(
                    f"--model {self.model} needs fathom.bench.policies, which this install "
                    f"lacks ({exc}); reinstall fathom."
                ) from exc

            if self.model == "oracle":
                return policies.oracle_models(family)
            return policies.random_models(family, seed)
        from fathom.lm import pricing, resolve

        for name, inp, out in self.prices:
            pricing.set_price(name, inp, out)
        root = self._limited(resolve(self.model))
        sub = root if self.sub_model is None else self._limited(resolve(self.sub_model))
        return root, sub

    def _limited(self, lm: LM) -> LM:
        """`lm` with the window and reply limits: set on a model that takes them (the API
        providers), else applied by a wrapper (the embedded model)."""
        if self.max_output_tokens is None and self.context_window is None:
            return lm
        configure = getattr(lm, "configure", None)
        if callable(configure):
            configure(max_output_tokens=self.max_output_tokens, context_window=self.context_window)
            return lm
        return Limited(lm, self.max_output_tokens, self.context_window)


class Limited:
    """An LM seen through a smaller window, its replies capped (sent as `max_tokens`)."""

    def __init__(self, lm: LM, max_output_tokens: int | None, context_window: int | None
                 ) -> None:
        self.lm = lm
        self.name = lm.name
        self.context_window = min(context_window or lm.context_window, lm.context_window)
        self.max_output_tokens = max_output_tokens

    async def acomplete(self, messages: list[Message], **options: Any) -> Completion:
        """The wrapped model's reply, at most `max_output_tokens` long."""
        if self.max_output_tokens is not None:
            options.setdefault("max_tokens", self.max_output_tokens)
        return await self.lm.acomplete(messages, **options)
