"""The root loop of one run: ask the model, run its code, show it the output, until FINAL.

A run tree (the root run and every child started by rlm_query) shares one RunTree:
budget, event sink, clock, event loop, model router and the sub-call semaphore.
Each run in the tree has its own Engine and its own sandbox.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fathom import prompts, protocol
from fathom.bridge import ModelRouter, SubCalls
from fathom.budget import Spend
from fathom.context import Context
from fathom.errors import BudgetExceeded, FathomError, LMError
from fathom.lm.base import Completion, Message
from fathom.result import Result, StopReason
from fathom.sandbox import SandboxFactory, SandboxOptions, create
from fathom.sandbox.base import ExecResult, Sandbox
from fathom.trace import (
    Clock,
    Event,
    ExecEvent,
    FinalEvent,
    IterationEvent,
    LMCall,
    LMCallStart,
    RunEnd,
    RunStart,
    SubRLMEnd,
    SubRLMStart,
)

T = TypeVar("T")

# Roughly how many characters a token holds, for judging how full a prompt is.
CHARS_PER_TOKEN = 4
# Root turns kept verbatim when the history is compacted.
KEEP_RECENT_TURNS = 4


@dataclass(frozen=True)
class RunConfig:
    """The settings every run of a tree shares."""

    max_iterations: int = 30
    max_depth: int = 1
    max_concurrency: int = 16
    output_limit: int = 20_000
    compact_at: float = 0.8
    sandbox: str | SandboxFactory = "subprocess"
    sandbox_options: SandboxOptions = field(default_factory=SandboxOptions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the run_start event."""
        opts = self.sandbox_options
        return {
            "max_iterations": self.max_iterations,
            "max_depth": self.max_depth,
            "max_concurrency": self.max_concurrency,
            "output_limit": self.output_limit,
            "compact_at": self.compact_at,
            "sandbox": self.sandbox if isinstance(self.sandbox, str) else repr(self.sandbox),
            "exec_timeout": opts.exec_timeout,
            "memory_mb": opts.memory_mb,
            "isolation": opts.isolation,
        }


class RunTree:
    """State shared by a root run and all its children."""

    def __init__(
        self,
        config: RunConfig,
        router: ModelRouter,
        spend: Spend,
        emit: Callable[[Event], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.config = config
        self.router = router
        self.spend = spend
        self.emit = emit
        self.loop = loop
        self.clock = Clock()
        self.llm_slots = asyncio.Semaphore(config.max_concurrency)
        # Sandbox calls block; each running (child) run needs a thread of its own, so the
        # pool is sized for deep, wide trees rather than for the CPU count.
        self.threads = ThreadPoolExecutor(max_workers=256, thread_name_prefix="fathom-run")

    async def within_budget(self, call: Awaitable[T]) -> T:
        """Await a model call, cut off with BudgetExceeded when the time budget runs out."""
        remaining = self.spend.remaining_seconds()
        if remaining is None:
            return await call
        try:
            return await asyncio.wait_for(call, timeout=remaining)
        except TimeoutError:
            raise BudgetExceeded(self.spend.describe_limit("seconds")) from None

    async def blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking sandbox call off the event loop."""
        return await self.loop.run_in_executor(self.threads, fn, *args)


class Engine:
    """One run at one depth: its own sandbox and message history."""

    def __init__(
        self, tree: RunTree, *, depth: int = 0, parent_run_id: str | None = None
    ) -> None:
        self.tree = tree
        self.depth = depth
        self.parent_run_id = parent_run_id
        self.run_id = uuid.uuid4().hex[:12]
        self.iteration = 0
        self._last_text = ""
        self._last_output = ""

    def _event(self, cls: type[Event], **fields: Any) -> None:
        self.tree.emit(cls(run_id=self.run_id, depth=self.depth, t=self.tree.clock.now(), **fields))

    async def run(self, query: str, context: Context) -> Result:
        """Run the loop to a FINAL, the iteration limit, the budget or an error."""
        started = time.monotonic()
        tree = self.tree
        sandbox: Sandbox | None = None
        answer, error = "", None
        reason: StopReason = "error"
        try:
            metadata = context.metadata()
            sandbox = create(tree.config.sandbox, tree.config.sandbox_options)
            bridge = SubCalls(
                tree, run_id=self.run_id, depth=self.depth,
                iteration=lambda: self.iteration, run_child=self._run_child,
            )
            await tree.blocking(sandbox.start, context, bridge)
            self._event(
                RunStart, query=query, context=metadata.to_dict(), model=tree.router.root.name,
                sub_model=tree.router.sub.name, config=tree.config.to_dict(),
                isolation=sandbox.isolation(), parent_run_id=self.parent_run_id,
                started_at=time.time(),
            )
            sub_window = tree.router.sub.context_window * CHARS_PER_TOKEN
            messages: list[Message] = [
                {"role": "system", "content": prompts.system_prompt(sub_window)},
                {"role": "user", "content": prompts.first_turn(query, metadata)},
            ]
            answer, reason = await self._loop(query, messages, sandbox)
        except BudgetExceeded:
            answer, reason = self._best_answer(), "budget"
        except FathomError as exc:
            answer, reason, error = self._best_answer(), "error", str(exc)
        finally:
            if sandbox is not None:
                await tree.blocking(sandbox.close)
        seconds = time.monotonic() - started
        usage = tree.spend.by_model()
        self._event(
            RunEnd, answer=answer, stop_reason=reason, iterations=self.iteration,
            usage={m: u.to_dict() for m, u in usage.items()}, seconds=seconds, error=error,
        )
        return Result(
            answer=answer, stop_reason=reason, iterations=self.iteration, usage=usage,
            run_id=self.run_id, seconds=seconds, error=error,
            budget_limit=(tree.spend.stopped_by or tree.spend.exhausted())
            if reason == "budget" else None,
        )

    async def _loop(
        self, query: str, messages: list[Message], sandbox: Sandbox
    ) -> tuple[str, StopReason]:
        config = self.tree.config
        while self.iteration < config.max_iterations:
            self.iteration += 1
            compacted = self._compact(messages)
            self._event(
                IterationEvent, iteration=self.iteration,
                prompt_chars=sum(len(m["content"]) for m in messages), compacted=compacted,
            )
            reply = await self._ask(messages)
            messages.append({"role": "assistant", "content": reply})
            self._last_text = protocol.strip_code(reply).strip() or self._last_text
            final, outputs = await self._execute_reply(reply, sandbox)
            if final is not None:
                return final
            if self.tree.spend.exhausted():
                return self._best_answer(), "budget"
            if outputs:
                messages.append({"role": "user", "content": prompts.next_turn(query, outputs)})
            else:
                messages.append({"role": "user", "content": prompts.NUDGE.format(query=query)})
        return await self._last_chance(query, messages), "max_iterations"

    async def _execute_reply(
        self, reply: str, sandbox: Sandbox
    ) -> tuple[tuple[str, StopReason] | None, list[str]]:
        """Run the reply's code blocks, then any FINAL written as text; return the final if any."""
        blocks = protocol.code_blocks(reply)
        outputs: list[str] = []
        share = max(1000, self.tree.config.output_limit // max(1, len(blocks)))
        for index, code in enumerate(blocks, 1):
            result = await self._execute(sandbox, code)
            if result.final is not None:
                return self._finish(result.final, "code"), outputs
            shown = protocol.truncate(_render(result), share)
            outputs.append(prompts.exec_report(index, len(blocks), shown))
        text_final = protocol.find_final(reply)
        if text_final is None:
            return None, outputs
        if text_final.kind == "answer":
            return self._finish(text_final.value, "text"), outputs
        result = await self._execute(sandbox, f"FINAL_VAR({text_final.value!r})")
        if result.final is not None:
            return self._finish(result.final, "text"), outputs
        outputs.append(f"FINAL_VAR({text_final.value}) failed:\n{_render(result)}")
        return None, outputs

    async def _execute(self, sandbox: Sandbox, code: str) -> ExecResult:
        timeout = self.tree.config.sandbox_options.exec_timeout
        remaining = self.tree.spend.remaining_seconds()
        if remaining is not None:
            if remaining <= 0:
                raise BudgetExceeded(self.tree.spend.describe_limit("seconds"))
            timeout = min(timeout, remaining)
        result: ExecResult = await self.tree.blocking(sandbox.execute, code, timeout)
        self._last_output = result.stdout or self._last_output
        self._event(
            ExecEvent, iteration=self.iteration, code=code, stdout=result.stdout,
            stderr=result.stderr, error=result.error, seconds=result.seconds,
            notice=result.notice,
        )
        return result

    def _finish(self, answer: str, source: str) -> tuple[str, StopReason]:
        self._event(FinalEvent, answer=answer, source=source, iteration=self.iteration)
        return answer, "final"

    async def _ask(self, messages: list[Message]) -> str:
        """One root call: budget reserved first, usage recorded, traced."""
        tree = self.tree
        tree.spend.reserve()
        lm = tree.router.root
        call_id = f"r{self.run_id}-{self.iteration}"
        self._event(
            LMCallStart, role="root", model=lm.name, iteration=self.iteration,
            prompt=messages[-1]["content"], call_id=call_id,
        )
        try:
            completion: Completion = await tree.within_budget(lm.acomplete(messages))
        except Exception as exc:
            self._event(
                LMCall, role="root", model=lm.name, iteration=self.iteration,
                prompt=messages[-1]["content"], error=f"{type(exc).__name__}: {exc}",
                call_id=call_id,
            )
            if isinstance(exc, FathomError):
                raise
            raise LMError(f"The root model {lm.name} failed: {type(exc).__name__}: {exc}") from exc
        tree.spend.record(completion.model or lm.name, completion.usage)
        self._event(
            LMCall, role="root", model=completion.model or lm.name, iteration=self.iteration,
            prompt=messages[-1]["content"], response=completion.text,
            prompt_tokens=completion.usage.prompt_tokens,
            completion_tokens=completion.usage.completion_tokens, seconds=completion.seconds,
            usd=completion.usage.usd, cached=completion.cached, call_id=call_id,
        )
        return completion.text

    async def _last_chance(self, query: str, messages: list[Message]) -> str:
        """Out of iterations: ask once for the best answer, without running code."""
        messages.append({"role": "user", "content": prompts.LAST_CHANCE.format(query=query)})
        try:
            reply = await self._ask(messages)
        except BudgetExceeded:
            return self._best_answer()
        final = protocol.find_final(reply)
        answer = final.value if final and final.kind == "answer" else protocol.strip_code(reply)
        answer = answer.strip() or self._best_answer()
        self._event(FinalEvent, answer=answer, source="forced", iteration=self.iteration)
        return answer

    def _best_answer(self) -> str:
        """With no FINAL: the last printed output, else the model's last words outside code."""
        return self._last_output.strip()[-2000:] or self._last_text

    def _compact(self, messages: list[Message]) -> bool:
        """Elide old turns once the history passes `compact_at` of the root model's window."""
        limit = self.tree.config.compact_at * self.tree.router.root.context_window * CHARS_PER_TOKEN
        size = sum(len(m["content"]) for m in messages)
        # messages: system, first user turn, then assistant/user pairs.
        old = messages[2 : len(messages) - KEEP_RECENT_TURNS]
        if size <= limit or len(old) < 2:
            return False
        digest = []
        for message in old:
            if message["role"] == "assistant":
                for code in protocol.code_blocks(message["content"]):
                    digest.append(protocol.truncate(code.strip(), 300))
        note = prompts.COMPACTED.format(turns=len(old), digest="\n---\n".join(digest) or "(none)")
        messages[2 : len(messages) - KEEP_RECENT_TURNS] = [
            {"role": "user", "content": note},
            {"role": "assistant", "content": "Understood; I will use SHOW_VARS() as needed."},
        ]
        return True

    async def _run_child(self, prompt: str, context: Any, batch_id: str | None) -> str:
        """rlm_query: a child run with its own sandbox; its context defaults to the prompt."""
        child = Engine(self.tree, depth=self.depth + 1, parent_run_id=self.run_id)
        self._event(
            SubRLMStart, child_run_id=child.run_id, prompt=prompt, iteration=self.iteration,
            batch_id=batch_id,
        )
        child_context: Context | None = None
        try:
            child_context = Context.from_value(prompt if context is None else context)
            result = await child.run(prompt, child_context)
        except Exception as exc:
            self._event(SubRLMEnd, child_run_id=child.run_id, stop_reason="error", error=str(exc))
            raise
        finally:
            if child_context is not None:
                child_context.close()
        self._event(
            SubRLMEnd, child_run_id=child.run_id, answer=result.answer,
            stop_reason=result.stop_reason, error=result.error,
        )
        if result.stop_reason == "error" and not result.answer:
            return f"Error: rlm_query failed: {result.error}"
        return result.answer


def _render(result: ExecResult) -> str:
    """Everything a block produced, as the model reads it."""
    parts = []
    if result.notice:
        parts.append(f"[sandbox] {result.notice}")
    if result.stdout:
        parts.append(result.stdout.rstrip("\n"))
    if result.stderr:
        parts.append(f"[stderr]\n{result.stderr.rstrip()}")
    if result.error:
        parts.append(result.error.rstrip())
    return "\n".join(parts)
