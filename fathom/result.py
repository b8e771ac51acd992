"""What a run returns: the answer, why it stopped, and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from fathom.answers import Citation, jsonable
from fathom.lm.base import Usage

# "invalid_answer": a schema was given and no answer the model gave matched it.
StopReason = Literal["final", "max_iterations", "budget", "invalid_answer", "error"]
# Where `answer` came from: the model's FINAL, its one forced reply at max_iterations, or,
# with neither, the engine's best effort (the last printed output or the model's last words).
AnswerSource = Literal["final", "forced", "best_effort"]


@dataclass(frozen=True)
class Result:
    """The outcome of `RLM.run`."""

    # The text, or with `schema=` the validated value (a pydantic instance, a dict); with
    # stop_reason "invalid_answer" the last refused candidate, as text.
    answer: Any
    stop_reason: StopReason
    iterations: int
    usage: dict[str, Usage] = field(default_factory=dict)
    trace_path: str | None = None
    run_id: str = ""
    seconds: float = 0.0
    error: str | None = None
    budget_limit: str | None = None  # which Budget field stopped the run, when one did
    error_type: type[Exception] | None = None  # the exception class behind `error`
    answer_source: AnswerSource | None = None  # None when there is no answer at all
    citations: tuple[Citation, ...] = ()  # the spans of the context cite() recorded, in order

    @property
    def total_usage(self) -> Usage:
        """Usage summed over every model."""
        return sum(self.usage.values(), Usage())

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (the CLI's `--json`)."""
        return {
            "answer": jsonable(self.answer),
            "stop_reason": self.stop_reason,
            "iterations": self.iterations,
            "usage": {model: u.to_dict() for model, u in self.usage.items()},
            "total_usage": self.total_usage.to_dict(),
            "trace_path": self.trace_path,
            "run_id": self.run_id,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "budget_limit": self.budget_limit,
            "error_type": self.error_type.__name__ if self.error_type else None,
            "answer_source": self.answer_source,
            "citations": [citation.to_dict() for citation in self.citations],
        }
