"""Model providers behind one `LM` protocol, resolved from spec strings.

A spec is "provider:model" ("openai:gpt-5-mini", "anthropic:claude-sonnet-4-5",
"local", "local:/path/model.gguf"). Providers are looked up in a registry so a
new one is a single module plus one `register_provider` call; built-in ones are
imported lazily so an unused SDK is never loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from fathom.errors import ConfigError
from fathom.lm.base import LM, BaseLM, Completion, Message, Usage, complete_sync, split_spec
from fathom.lm.scripted import ScriptedLM
from fathom.registry import Registry

ProviderFactory = Callable[[str], LM]

_PROVIDERS = Registry[ProviderFactory](
    {
        "openai": "fathom.lm.openai:from_spec",
        "anthropic": "fathom.lm.anthropic:from_spec",
        "local": "fathom.lm.local:from_spec",
    }
)


def register_provider(prefix: str, factory: ProviderFactory) -> None:
    """Make `prefix:MODEL` specs resolve through `factory(model_part)`."""
    _PROVIDERS.register(prefix.lower(), factory)


def providers() -> list[str]:
    """Names of every registered provider prefix."""
    return _PROVIDERS.names()


def resolve(spec: str | LM) -> LM:
    """Return an LM for a spec string, or the LM itself when one is given."""
    if not isinstance(spec, str):
        return spec
    provider, model = split_spec(spec)
    try:
        factory = _PROVIDERS.get(provider)
    except KeyError:
        known = ", ".join(f"'{p}:MODEL'" for p in providers())
        raise ConfigError(f"Unknown model spec {spec!r}: use one of {known}.") from None
    except ImportError as exc:
        raise ConfigError(
            f"Provider {provider!r} could not be loaded ({exc}); "
            "reinstall fathom with its dependencies."
        ) from exc
    return factory(model)


def default_model() -> str:
    """The model used when none is given: $FATHOM_MODEL, else OpenAI if keyed, else local.

    "openai:gpt-5-mini" is picked when OPENAI_API_KEY is set, and "local" (the
    embedded SmolLM2-135M, offline) otherwise.
    """
    chosen = os.environ.get("FATHOM_MODEL", "").strip()
    if chosen:
        return chosen
    if os.environ.get("OPENAI_API_KEY"):
        return "openai:gpt-5-mini"
    return "local"


__all__ = [
    "LM",
    "BaseLM",
    "Completion",
    "Message",
    "ScriptedLM",
    "Usage",
    "complete_sync",
    "default_model",
    "providers",
    "register_provider",
    "resolve",
]
