"""`repl`, `rlm` and `rlm2`: fathom's RLM without sub-calls, with LM sub-calls, with RLM ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fathom.bench.methods.base import FATAL, Limits, Outcome
from fathom.bench.tasks.base import Task
from fathom.lm.base import LM
from fathom.rlm import RLM


@dataclass(frozen=True)
class Recursive:
    """An RLM run. The paper's depth counts levels of calls below the root, so its depth 1
    (sub-calls are plain LMs) is fathom's max_depth=0 and its depth 2 is max_depth=1."""

    name: str
    description: str
    max_depth: int
    sub_calls: bool = True

    async def run(self, task: Task, root: LM, sub: LM, limits: Limits, trace: Path) -> Outcome:
        """Run fathom's RLM on the task; its trace is the RLM's own."""
        rlm = RLM(
            model=root, sub_model=sub, sandbox=limits.sandbox, max_depth=self.max_depth,
            sub_calls=self.sub_calls, max_iterations=limits.max_iterations,
            budget=limits.budget(), trace=trace,
        )
        result = await rlm.arun(task.query, task.context)
        if result.error_type is not None and issubclass(result.error_type, FATAL):
            raise result.error_type(result.error or result.error_type.__name__)
        return Outcome(result.answer, result.total_usage, result.seconds, result.iterations,
                       result.stop_reason, result.error,
                       {"answer_source": result.answer_source})


REPL = Recursive("repl", "an RLM whose REPL has no sub-calls (code only)", 0, sub_calls=False)
RLM1 = Recursive("rlm", "an RLM whose sub-calls are LM calls (the paper's depth 1)", 0)
RLM2 = Recursive("rlm2", "an RLM whose sub-calls are RLMs (the paper's depth 2)", 1)
