"""One run's loop: ask the model, run its code, show it the output, until FINAL.

Each run of a tree (the root and every child started by rlm_query) has its own
Engine, sandbox and message history; what they share lives in the RunTree, and every
model call goes through the tree's metered path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from fathom import answers, prompts, protocol
from fathom.bridge import SubCalls
from fathom.calls import CallSite, Role, RunHandle
from fathom.context import Context
from fathom.errors import BudgetExceeded, FathomError, LMError
from fathom.lm.base import Message, prompt_room
from fathom.result import AnswerSource, Result, StopReason
from fathom.sandbox import create
from fathom.sandbox.base import Bridge, ExecResult, Sandbox
from fathom.trace import (
    AnswerRefused,
    Event,
    ExecEvent,
    FinalEvent,
    IterationEvent,
    RunEnd,
    RunStart,
)
from fathom.tree import RunTree

# Root turns kept verbatim when the history is compacted.
KEEP_RECENT_TURNS = 4
_NO_VALUE = object()  # no validated typed answer (None may be a valid one)


class Workspace(Protocol):
    """A session's started sandbox, lent to the root run of one question; it outlives the run."""

    note: str  # what earlier questions left in the REPL, told in the first turn

    def attach(self, bridge: Bridge) -> Sandbox:
        """The sandbox, its REPL calls now answered by `bridge` (this run's)."""
        ...


class Engine:
    """One run at one depth: its own sandbox (or a session's) and message history."""

    def __init__(
        self, tree: RunTree, handle: RunHandle, workspace: Workspace | None = None
    ) -> None:
        self.tree = tree
        self.handle = handle
        # Only a session's root run works in its sandbox; child runs start their own.
        self.workspace = workspace if handle.depth == 0 else None
        self._last_text = ""
        self._last_output = ""
        self._source: AnswerSource | None = None  # set with an answer the model gave
        # With a schema: the validated answer, and the last candidate it refused (with why,
        # and where it came from), kept for stop reason "invalid_answer".
        self._typed: Any = _NO_VALUE
        self._candidate: tuple[str, AnswerSource] | None = None
        self._refusal = ""
        self._digest: list[str] = []
        self._placeholders: set[int] = set()
        self._elided = 0
        # This run's sandbox calls are sequential: one thread of its own, so a wide tree
        # of waiting parents can never starve its children of threads.
        self._thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"fathom-d{handle.depth}"
        )

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.tree.loop.run_in_executor(self._thread, fn, *args)

    def _event(self, cls: type[Event], **fields: Any) -> None:
        self.tree.event(self.handle, cls, **fields)

    async def run(self, context: Context) -> Result:
        """Run the loop to a FINAL, the iteration limit, the budget or an error."""
        started = time.monotonic()
        tree, query, schema = self.tree, self.handle.query, self.handle.schema
        sandbox: Sandbox | None = None  # this run's own, closed at its end
        answer, error = "", None
        error_type: type[Exception] | None = None
        reason: StopReason = "error"
        try:
            metadata = context.metadata()
            bridge = SubCalls(tree, self.handle, context)
            if self.workspace is None:
                sandbox = repl = create(tree.config.sandbox, tree.config.sandbox_options)
                await self._blocking(sandbox.start, context, bridge)
            else:
                repl = self.workspace.attach(bridge)
            self._event(
                RunStart, query=query, context=metadata.to_dict(), model=tree.router.root.name,
                sub_model=tree.router.sub.name, config=tree.config.to_dict(),
                isolation=repl.isolation(), parent_run_id=self.handle.parent_run_id,
                started_at=time.time(), schema=schema.json_schema if schema else None,
            )
            messages: list[Message] = [
                {"role": "system", "content": prompts.system_prompt(
                    bridge.functions(), sub_calls=tree.config.sub_calls)},
                {"role": "user", "content": prompts.first_turn(query, metadata)},
            ]
            if schema is not None:
                messages[1]["content"] += "\n\n" + prompts.answer_schema(schema.json_schema)
            if self.workspace is not None and self.workspace.note:
                messages[1]["content"] += "\n\n" + self.workspace.note
            answer, reason = await self._loop(query, messages, repl)
        except BudgetExceeded:
            answer, reason = self._best_answer(), "budget"
        except FathomError as exc:
            answer, reason, error = self._best_answer(), "error", str(exc)
            error_type = type(exc)
        except asyncio.CancelledError:
            self._end(started, self._best_answer(), "error", "cancelled")
            raise
        except Exception as exc:  # a bug or an unexpected library error: end, and say why
            answer, reason = self._best_answer(), "error"
            error, error_type = f"{type(exc).__name__}: {exc}", type(exc)
        finally:
            if sandbox is not None:
                # Not on this run's own thread: a cancelled block may still be running there.
                await asyncio.to_thread(sandbox.close)
            self._thread.shutdown(wait=False)
        return self._end(started, answer, reason, error, error_type)

    def _end(
        self, started: float, answer: str, reason: StopReason, error: str | None,
        error_type: type[Exception] | None = None,
    ) -> Result:
        seconds = time.monotonic() - started
        spend = self.tree.spend
        usage = spend.by_model()
        self._event(
            RunEnd, answer=answer, stop_reason=reason, iterations=self.handle.iteration,
            usage={m: u.to_dict() for m, u in usage.items()}, seconds=seconds, error=error,
        )
        typed = self._typed is not _NO_VALUE and reason in ("final", "max_iterations")
        return Result(
            answer=self._typed if typed else answer,
            stop_reason=reason, iterations=self.handle.iteration, usage=usage,
            run_id=self.handle.run_id, seconds=seconds, error=error,
            budget_limit=(spend.stopped_by or spend.exhausted()) if reason == "budget" else None,
            error_type=error_type,
            answer_source=self._answer_source(answer, reason),
            citations=tuple(self.handle.citations),
        )

    def _answer_source(self, answer: str, reason: StopReason) -> AnswerSource | None:
        if reason == "invalid_answer" and self._candidate is not None:
            return self._candidate[1]
        return (self._source or "best_effort") if answer else None

    async def _loop(
        self, query: str, messages: list[Message], sandbox: Sandbox
    ) -> tuple[str, StopReason]:
        config = self.tree.config
        while self.handle.iteration < config.max_iterations:
            self.handle.iteration += 1
            compacted = self._compact(messages)
            self._event(
                IterationEvent, iteration=self.handle.iteration,
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
        answer = await self._last_chance(query, messages, sandbox)
        if self._candidate is not None and self._typed is _NO_VALUE:
            return self._candidate[0], "invalid_answer"
        return answer, "max_iterations"

    async def _execute_reply(
        self, reply: str, sandbox: Sandbox
    ) -> tuple[tuple[str, StopReason] | None, list[str]]:
        """Run the reply's code blocks, then any FINAL written as text; return the final if any."""
        blocks = protocol.code_blocks(reply)
        outputs: list[str] = []
        # A small window cannot take the usual output: a turn's output gets a quarter of it.
        limit = min(self.tree.config.output_limit, prompt_room(self.tree.router.root) // 4)
        share = max(200, limit // max(1, len(blocks)))
        for index, code in enumerate(blocks, 1):
            result = await self._execute(sandbox, code)
            final = None if result.final is None else self._finish(result.final, "code")
            if final is not None:
                return final, outputs
            shown = protocol.truncate(_render(result), share)
            outputs.append(prompts.exec_report(index, len(blocks), shown))
            if result.final is not None:  # refused by the schema: the model sees why
                outputs.append(self._refusal)
                return None, outputs
        text_final = protocol.find_final(reply)
        if text_final is None:
            return None, outputs
        if text_final.kind == "answer":
            final = self._finish(text_final.value, "text")
            return final, outputs if final else [*outputs, self._refusal]
        result = await self._execute(sandbox, f"FINAL_VAR({text_final.value!r})")
        if result.final is not None:
            final = self._finish(result.final, "text")
            return final, outputs if final else [*outputs, self._refusal]
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
        # A spent quota ends the whole tree: what this block made of its failed calls is
        # neither an answer nor output to answer with.
        aborted = self.tree.meter.aborted()
        if aborted is None:
            self._last_output = result.stdout or self._last_output
        self._event(
            ExecEvent, iteration=self.handle.iteration, code=code, stdout=result.stdout,
            stderr=result.stderr, error=result.error, seconds=result.seconds,
            notice=result.notice,
        )
        if aborted is not None:
            raise aborted
        return result

    def _finish(self, answer: str, source: str) -> tuple[str, StopReason] | None:
        """The run's answer; None when the schema refuses it (`_refusal` then says why)."""
        schema = self.handle.schema
        if schema is not None:
            verdict = schema.check(answer)
            if not verdict.ok:
                self._candidate = (answer, "forced" if source == "forced" else "final")
                self._refusal = answers.refusal(schema, verdict.errors)
                self._event(AnswerRefused, iteration=self.handle.iteration, answer=answer,
                            errors=list(verdict.errors))
                return None
            self._typed = verdict.value
            answer = schema.dumps(verdict.value)
        self._event(FinalEvent, answer=answer, source=source, iteration=self.handle.iteration)
        self._source = "final"
        return answer, "final"

    async def _ask(self, messages: list[Message], *, last: bool = False) -> str:
        """One root turn through the tree's metered path."""
        lm = self.tree.router.root
        site = CallSite(self.handle, Role.ROOT, self.handle.call_id(), last_chance=last)
        try:
            completion = await self.tree.meter.call(lm, messages, site)
        except FathomError:
            raise
        except Exception as exc:
            raise LMError(f"The root model {lm.name} failed: {type(exc).__name__}: {exc}") from exc
        return completion.text

    async def _last_chance(self, query: str, messages: list[Message], sandbox: Sandbox) -> str:
        """Out of iterations: ask once for the best answer (a FINAL_VAR still resolves)."""
        messages.append({"role": "user", "content": prompts.LAST_CHANCE.format(query=query)})
        refused = self._candidate
        try:
            reply = await self._ask(messages, last=True)
            final, _ = await self._execute_reply(reply, sandbox)
        except BudgetExceeded:
            return self._best_answer()
        if final is not None:
            self._source = "forced"  # a FINAL, but one the model was made to give
            return final[0]
        # A FINAL_VAR that did not resolve, or a FINAL the schema refused: no forced answer.
        if protocol.find_final(reply) is not None or self._candidate is not refused:
            return self._best_answer()
        answer = protocol.strip_code(reply).strip()
        if not answer:
            return self._best_answer()
        final = self._finish(answer, "forced")
        self._source = "forced"
        return final[0] if final else self._best_answer()

    def _best_answer(self) -> str:
        """With no FINAL: the last printed output, else the model's last words outside code."""
        return self._last_output.strip()[-2000:] or self._last_text

    def _compact(self, messages: list[Message]) -> bool:
        """Elide old turns once the history passes `compact_at` of the root model's window
        (less the reply's share), so every prompt fits.

        What stays is never rewritten, so the providers' prefix caches keep hitting: the
        elided turns become a note after the notes of earlier compactions (all of them are
        folded into one only when they pass a quarter of the room), and enough turns go at
        once, down to half the limit, that the next compaction is many turns away.
        """
        limit = self.tree.config.compact_at * prompt_room(self.tree.router.root)
        size = sum(len(m["content"]) for m in messages)
        if size <= limit:
            return False
        # The last turns are kept verbatim, unless they alone take half the room.
        keep = KEEP_RECENT_TURNS
        if sum(len(m["content"]) for m in messages[-keep:]) > limit / 2:
            keep = 2
        # messages: system, first user turn, the notes of earlier compactions, then
        # assistant/user pairs; whole pairs go, so roles keep alternating.
        start = 2
        while start < len(messages) and id(messages[start]) in self._placeholders:
            start += 1
        fold = sum(len(m["content"]) for m in messages[2:start]) > limit / 4
        if fold:
            start = 2
        stop, end = start, len(messages) - keep
        while stop + 2 <= end and (size > limit / 2 or stop == start):
            size -= len(messages[stop]["content"]) + len(messages[stop + 1]["content"])
            stop += 2
        if stop == start:
            return False
        digests = [
            protocol.truncate(code.strip(), 300)
            for message in messages[start:stop]
            if message["role"] == "assistant" and id(message) not in self._placeholders
            for code in protocol.code_blocks(message["content"])
        ]
        fresh = sum(1 for m in messages[start:stop] if id(m) not in self._placeholders)
        self._digest.extend(digests)
        self._elided += fresh
        # Older digests go first when a note grows too long.
        shown, turns = (self._digest, self._elided) if fold or start == 2 else (digests, fresh)
        digest = "\n---\n".join(shown)[-int(limit // 4) :] or "(none)"
        placeholder: list[Message] = [
            {"role": "assistant", "content": "(earlier turns elided)"},
            {"role": "user", "content": prompts.COMPACTED.format(turns=turns, digest=digest)},
        ]
        if fold:
            self._placeholders = set()
        self._placeholders |= {id(m) for m in placeholder}
        messages[start:stop] = placeholder
        return True


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
