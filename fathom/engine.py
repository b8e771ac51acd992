"""The root loop of one run: ask the model, run its code, show it the output, until FINAL.

A run tree (the root run and every child started by rlm_query) shares one RunTree:
budget, event sink, clock, event loop, model router and the sub-call semaphore.
Each run in the tree has its own Engine and its own sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fathom import prompts, protocol
from fathom.bridge import START_PROMPT_CHARS, ModelRouter, SubCalls
from fathom.budget import Spend
from fathom.context import Context
from fathom.errors import BudgetExceeded, FathomError, LMError
from fathom.lm import pricing
from fathom.lm.base import Completion, Message
from fathom.result import Result, StopReason
from fathom.sandbox import SandboxFactory, SandboxOptions, create
from fathom.sandbox.base import BUDGET_STOP, ExecResult, Sandbox
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
        # Live child runs per depth. One semaphore per depth, not one shared: a parent holds
        # its slot while it waits for its own children, which draw from the next depth.
        self._child_slots: dict[int, asyncio.Semaphore] = {}
        # Sub-call and child-run tasks, so a cancelled run can cancel its whole tree.
        self.tasks: set[asyncio.Task[Any]] = set()

    def child_slots(self, depth: int) -> asyncio.Semaphore:
        """The semaphore bounding live child runs at `depth`."""
        if depth not in self._child_slots:
            self._child_slots[depth] = asyncio.Semaphore(self.config.max_concurrency)
        return self._child_slots[depth]

    async def cancel_tasks(self) -> None:
        """Cancel every sub-call and child run still going, and wait for their cleanup."""
        pending = [task for task in self.tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def within_budget(self, call: Awaitable[T]) -> T:
        """Await a model call, cut off with BudgetExceeded when the time budget runs out."""
        remaining = self.spend.remaining_seconds()
        if remaining is None:
            return await call
        try:
            return await asyncio.wait_for(call, timeout=remaining)
        except TimeoutError:
            raise BudgetExceeded(self.spend.describe_limit("seconds")) from None


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
        self._digest: list[str] = []
        self._placeholders: set[int] = set()
        self._elided = 0
        # This run's sandbox calls are sequential: one thread of its own, so a wide tree
        # of waiting parents can never starve its children of threads.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fathom-d{depth}")

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.tree.loop.run_in_executor(self._thread, fn, *args)

    def _event(self, cls: type[Event], **fields: Any) -> None:
        self.tree.emit(cls(run_id=self.run_id, depth=self.depth, t=self.tree.clock.now(), **fields))

    async def run(self, query: str, context: Context) -> Result:
        """Run the loop to a FINAL, the iteration limit, the budget or an error."""
        started = time.monotonic()
        tree = self.tree
        sandbox: Sandbox | None = None
        answer, error, error_type = "", None, None
        reason: StopReason = "error"
        try:
            metadata = context.metadata()
            sandbox = create(tree.config.sandbox, tree.config.sandbox_options)
            bridge = SubCalls(
                tree, run_id=self.run_id, depth=self.depth,
                iteration=lambda: self.iteration, run_child=self._run_child,
            )
            await self._blocking(sandbox.start, context, bridge)
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
            error_type = type(exc).__name__
        except asyncio.CancelledError:
            self._end(started, self._best_answer(), "error", "cancelled")
            raise
        except Exception as exc:  # a bug or an unexpected library error: end, and say why
            answer, reason = self._best_answer(), "error"
            error, error_type = f"{type(exc).__name__}: {exc}", type(exc).__name__
        finally:
            if sandbox is not None:
                # Not on this run's own thread: a cancelled block may still be running there.
                await asyncio.to_thread(sandbox.close)
            self._thread.shutdown(wait=False)
        return self._end(started, answer, reason, error, error_type)

    def _end(
        self, started: float, answer: str, reason: StopReason, error: str | None,
        error_type: str | None = None,
    ) -> Result:
        seconds = time.monotonic() - started
        spend = self.tree.spend
        usage = spend.by_model()
        self._event(
            RunEnd, answer=answer, stop_reason=reason, iterations=self.iteration,
            usage={m: u.to_dict() for m, u in usage.items()}, seconds=seconds, error=error,
        )
        return Result(
            answer=answer, stop_reason=reason, iterations=self.iteration, usage=usage,
            run_id=self.run_id, seconds=seconds, error=error,
            budget_limit=(spend.stopped_by or spend.exhausted()) if reason == "budget" else None,
            error_type=error_type,
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
        return await self._last_chance(query, messages, sandbox), "max_iterations"

    async def _execute_reply(
        self, reply: str, sandbox: Sandbox
    ) -> tuple[tuple[str, StopReason] | None, list[str]]:
        """Run the reply's code blocks, then any FINAL written as text; return the final if any."""
        blocks = protocol.code_blocks(reply)
        outputs: list[str] = []
        share = max(200, self.tree.config.output_limit // max(1, len(blocks)))
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
        result: ExecResult = await self._blocking(sandbox.execute, code, timeout)
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

    async def _ask(self, messages: list[Message], *, last: bool = False) -> str:
        """One root call: budget reserved first, usage recorded, traced."""
        tree = self.tree
        estimate = pricing.estimate_prompt_tokens(messages)
        lm = tree.router.root
        call_id = f"r{self.run_id}-{self.iteration}" + ("-last" if last else "")
        prompt = messages[-1]["content"]
        # Children's root calls share the sub-call slots, so max_concurrency bounds the
        # whole tree; the root's own calls never wait behind its sub-calls.
        slot = tree.llm_slots if self.depth > 0 else contextlib.nullcontext()
        async with slot:
            tree.spend.reserve(estimate)
            self._event(
                LMCallStart, role="root", model=lm.name, iteration=self.iteration,
                prompt=prompt[:START_PROMPT_CHARS], call_id=call_id, last_chance=last,
            )
            try:
                completion: Completion = await tree.within_budget(lm.acomplete(messages))
            except BaseException as exc:
                tree.spend.release(estimate)
                self._event(
                    LMCall, role="root", model=lm.name, iteration=self.iteration, prompt=prompt,
                    error=f"{type(exc).__name__}: {exc}", call_id=call_id, last_chance=last,
                )
                if isinstance(exc, FathomError) or not isinstance(exc, Exception):
                    raise
                raise LMError(
                    f"The root model {lm.name} failed: {type(exc).__name__}: {exc}"
                ) from exc
        tree.spend.record(completion.model or lm.name, completion.usage, estimate)
        self._event(
            LMCall, role="root", model=completion.model or lm.name, iteration=self.iteration,
            prompt=prompt, response=completion.text,
            prompt_tokens=completion.usage.prompt_tokens,
            completion_tokens=completion.usage.completion_tokens, seconds=completion.seconds,
            usd=completion.usage.usd, cached=completion.cached, call_id=call_id,
            last_chance=last,
        )
        return completion.text

    async def _last_chance(self, query: str, messages: list[Message], sandbox: Sandbox) -> str:
        """Out of iterations: ask once for the best answer (a FINAL_VAR still resolves)."""
        messages.append({"role": "user", "content": prompts.LAST_CHANCE.format(query=query)})
        try:
            reply = await self._ask(messages, last=True)
            final, _ = await self._execute_reply(reply, sandbox)
        except BudgetExceeded:
            return self._best_answer()
        if final is not None:
            return final[0]
        answer = protocol.strip_code(reply).strip() or self._best_answer()
        self._event(FinalEvent, answer=answer, source="forced", iteration=self.iteration)
        return answer

    def _best_answer(self) -> str:
        """With no FINAL: the last printed output, else the model's last words outside code."""
        return self._last_output.strip()[-2000:] or self._last_text

    def _compact(self, messages: list[Message]) -> bool:
        """Elide old turns once the history passes `compact_at` of the root model's window."""
        limit = self.tree.config.compact_at * self.tree.router.root.context_window * CHARS_PER_TOKEN
        size = sum(len(m["content"]) for m in messages)
        # messages: system, first user turn, then assistant/user pairs; `old` starts with an
        # assistant turn and ends with a user turn, so the replacement keeps roles alternating.
        old = messages[2 : len(messages) - KEEP_RECENT_TURNS]
        if size <= limit or len(old) < 2:
            return False
        fresh = [m for m in old if id(m) not in self._placeholders]
        for message in fresh:
            if message["role"] == "assistant":
                for code in protocol.code_blocks(message["content"]):
                    self._digest.append(protocol.truncate(code.strip(), 300))
        self._elided += len(fresh)
        # Older digests go first when the note itself grows too long.
        digest = "\n---\n".join(self._digest)[-int(limit // 4) :] or "(none)"
        note = prompts.COMPACTED.format(turns=self._elided, digest=digest)
        placeholder: list[Message] = [
            {"role": "assistant", "content": "(earlier turns elided)"},
            {"role": "user", "content": note},
        ]
        self._placeholders = {id(m) for m in placeholder}
        messages[2 : len(messages) - KEEP_RECENT_TURNS] = placeholder
        return True

    async def _run_child(self, prompt: str, context: Any, batch_id: str | None) -> str:
        """rlm_query: a child run with its own sandbox; its context defaults to the prompt."""
        child_context = Context.from_value(prompt if context is None else context)
        child = Engine(self.tree, depth=self.depth + 1, parent_run_id=self.run_id)
        try:
            async with self.tree.child_slots(child.depth):
                self._event(
                    SubRLMStart, child_run_id=child.run_id, prompt=prompt,
                    iteration=self.iteration, batch_id=batch_id,
                )
                try:
                    result = await child.run(prompt, child_context)
                except Exception as exc:
                    self._event(
                        SubRLMEnd, child_run_id=child.run_id, stop_reason="error", error=str(exc)
                    )
                    raise
        finally:
            child_context.close()
        self._event(
            SubRLMEnd, child_run_id=child.run_id, answer=result.answer,
            stop_reason=result.stop_reason, error=result.error,
        )
        if result.stop_reason == "budget":
            return f"{BUDGET_STOP}: the child run stopped at the budget ({result.answer[:200]})"
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
