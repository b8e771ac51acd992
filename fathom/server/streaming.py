"""Run progress as text, and the OpenAI objects a reply is made of (completion and chunks)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fathom.progress import shorten_code
from fathom.protocol import code_blocks
from fathom.result import Result
from fathom.trace import Event, ExecEvent, IterationEvent, LMCall, SubRLMEnd, SubRLMStart

# Why the run stopped, as OpenAI's finish_reason: only a FINAL is a natural stop.
FINISH_REASONS = {"final": "stop", "max_iterations": "length", "budget": "length"}


# Seconds between two lines counting sub-calls while a block makes many.
SUB_CALL_EVERY = 1.0


@dataclass
class ProgressText:
    """Turns a run's events into short progress lines: iterations, code run, sub-call counts."""

    sub_calls: int = 0
    sub_failed: int = 0
    _counted_at: float = 0.0

    def line(self, event: Event) -> str | None:
        """The line `event` adds to the progress, or None for events not shown."""
        indent = "  " * event.depth
        if isinstance(event, IterationEvent):
            return f"{indent}iteration {event.iteration}\n"
        if isinstance(event, LMCall):
            if event.role == "sub":
                self.sub_calls += 1
                self.sub_failed += bool(event.error)
                now = time.monotonic()
                if now - self._counted_at < SUB_CALL_EVERY:
                    return None
                self._counted_at = now
                return f"{indent}sub-calls: {self._sub_text()}\n"
            code = code_blocks(event.response) if not event.error else []
            if code:
                shown = "\n".join(shorten_code(block) for block in code)
                return f"{indent}running:\n```python\n{shown}\n```\n"
            return None
        if isinstance(event, ExecEvent):
            error = f" error: {event.error.splitlines()[-1]}" if event.error else ""
            return f"{indent}ran in {event.seconds:.1f}s{error}; sub-calls so far: " \
                   f"{self._sub_text()}\n"
        if isinstance(event, SubRLMStart):
            return f"{indent}child RLM started\n"
        if isinstance(event, SubRLMEnd):
            return f"{indent}child RLM ended ({event.stop_reason})\n"
        return None

    def _sub_text(self) -> str:
        failed = f", {self.sub_failed} failed" if self.sub_failed else ""
        return f"{self.sub_calls} done{failed}"


def usage_of(result: Result) -> dict[str, int]:
    """The OpenAI `usage` object of a run: every model call of its tree summed."""
    total = result.total_usage
    return {"prompt_tokens": total.prompt_tokens, "completion_tokens": total.completion_tokens,
            "total_tokens": total.total_tokens}


def fathom_of(result: Result) -> dict[str, Any]:
    """The `fathom` object of a reply: why the run stopped and what it cost."""
    return {"stop_reason": result.stop_reason, "iterations": result.iterations,
            "usd": round(result.total_usage.usd, 8), "trace_id": result.run_id,
            "trace_path": result.trace_path, "answer_source": result.answer_source,
            "budget_limit": result.budget_limit, "seconds": round(result.seconds, 3)}


def completion(reply_id: str, model: str, result: Result) -> dict[str, Any]:
    """A `chat.completion` object for a finished run."""
    return {
        "id": reply_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer},
                     "finish_reason": FINISH_REASONS.get(result.stop_reason, "stop")}],
        "usage": usage_of(result), "fathom": fathom_of(result),
    }


def chunk(reply_id: str, model: str, delta: dict[str, Any],
          finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    """A `chat.completion.chunk` object with one delta."""
    return {"id": reply_id, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "delta": delta,
                                         "finish_reason": finish_reason}], **extra}


def last_chunks(reply_id: str, model: str, result: Result) -> list[dict[str, Any]]:
    """The answer, then the closing chunk with finish_reason, usage and the fathom object."""
    finish = FINISH_REASONS.get(result.stop_reason, "stop")
    return [chunk(reply_id, model, {"content": result.answer}),
            chunk(reply_id, model, {}, finish, usage=usage_of(result),
                  fathom=fathom_of(result))]
