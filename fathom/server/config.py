"""What the operator set for a server: models, limits and what requests may read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fathom.budget import Budget
from fathom.errors import ConfigError
from fathom.lm.base import LM

DEFAULT_MAX_BODY = 64 * 2**20


@dataclass(frozen=True)
class ServerConfig:
    """Settings of `fathom serve` and `fathom mcp`; requests may only lower `budget`.

    `model` and `sub_model` are spec strings or LM objects (tests pass ScriptedLM);
    `rlm_options` are passed on to every `fathom.RLM` (sandbox, max_iterations, ...).
    """

    model: str | LM | None = None
    sub_model: str | LM | None = None
    budget: Budget = field(default_factory=Budget)
    max_runs: int = 4
    max_queue: int = 16
    max_body: int = DEFAULT_MAX_BODY
    api_key: str | None = None
    allow_dirs: tuple[Path, ...] = ()
    trace_dir: Path | None = None
    grace: float = 30.0
    rlm_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_runs < 1:
            raise ConfigError(f"max_runs={self.max_runs} is invalid: allow at least 1 run.")
        if self.max_queue < 0:
            raise ConfigError(f"max_queue={self.max_queue} is invalid: pass 0 or more.")
        if self.max_body < 1:
            raise ConfigError(f"max_body={self.max_body} is invalid: pass a size in bytes.")
        for folder in self.allow_dirs:
            if not Path(folder).is_dir():
                raise ConfigError(f"--allow-dir {folder} is not a directory: pass one that "
                                  "exists.")

    @property
    def model_name(self) -> str:
        """The root model's spec, as /v1/models and replies name it."""
        model = self.model
        if model is None:
            return "default"
        return model if isinstance(model, str) else str(getattr(model, "name", "model"))
