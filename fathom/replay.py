"""Replaying a recorded run: the same code runs again, with model replies taken from its trace.

Every model call of the replay is answered by one ScriptedLM responder built from
the trace. The metered call path tells the responder which run is calling and in
what role (`fathom.calls.current_call`): a run's root turns are answered with the
recorded replies of the run it stands for (the root, or the child of the same parent
with the same query, in the order they started), and sub-calls by prompt. The code runs for
real in a sandbox, so the replay checks that a trajectory still leads to its answer.

Prompts, queries and answers are matched by the sha256 of the whole text, which the trace
keeps for the strings it cut (`Event.cut`); a model reply the trace cut cannot be replayed
and fails as a model error would.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fathom.answers import jsonable
from fathom.budget import Budget
from fathom.calls import Role, RunHandle, current_call
from fathom.context import Context
from fathom.errors import LMError, TraceError
from fathom.lm.base import Message
from fathom.lm.scripted import ScriptedLM
from fathom.sources import FilesSource, Source, TextFileSource
from fathom.trace import LMCall, RunEnd, RunStart, text_sha256


@dataclass(frozen=True)
class ReplayReport:
    """What a replay found: the recorded and replayed answers and whether they match."""

    trace_path: str
    matches: bool
    original_answer: str
    replayed_answer: str
    original_stop_reason: str
    replayed_stop_reason: str
    root_replies: int
    sub_replies: int
    unused_root_replies: int
    unmatched_prompts: list[str] = field(default_factory=list)
    error: str | None = None
    interrupted: bool = False  # the recorded run has no run_end: nothing to compare with

    @property
    def verdict(self) -> str:
        """MATCH, MISMATCH, or INTERRUPTED for a trace whose run never ended."""
        if self.interrupted:
            return "INTERRUPTED"
        return "MATCH" if self.matches else "MISMATCH"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (`fathom replay --json`)."""
        return {
            "trace_path": self.trace_path, "matches": self.matches,
            "original_answer": self.original_answer, "replayed_answer": self.replayed_answer,
            "original_stop_reason": self.original_stop_reason,
            "replayed_stop_reason": self.replayed_stop_reason,
            "root_replies": self.root_replies, "sub_replies": self.sub_replies,
            "unused_root_replies": self.unused_root_replies,
            "unmatched_prompts": self.unmatched_prompts, "error": self.error,
            "interrupted": self.interrupted, "verdict": self.verdict,
        }

    def summary(self) -> str:
        """A few lines for a terminal (answers as reprs, everything else through `safe_text`)."""
        from fathom.terminal import safe_text

        if self.interrupted:
            lines = [
                f"INTERRUPTED: the recorded run has no end (it was stopped or crashed), so "
                f"there is no answer to compare; replay of {self.trace_path}",
            ]
        else:
            lines = [
                f"{self.verdict}: replay of {self.trace_path}",
                f"  recorded answer: {self.original_answer!r} ({self.original_stop_reason})",
            ]
        lines += [
            f"  replayed answer: {self.replayed_answer!r} ({self.replayed_stop_reason})",
            f"  model replies used: {self.root_replies - self.unused_root_replies}/"
            f"{self.root_replies} root, {self.sub_replies} sub-call replies recorded",
        ]
        if self.unmatched_prompts:
            lines.append(f"  sub-call prompts with no recorded reply: {len(self.unmatched_prompts)}"
                         f" (first: {self.unmatched_prompts[0][:80]!r})")
        if self.error:
            lines.append(f"  error: {self.error}")
        return safe_text("\n".join(lines))


@dataclass(eq=False)
class _RecordedRun:
    run_id: str
    parent_run_id: str | None
    query_sha256: str
    replies: list[str | BaseException]
    cursor: int = 0
    claimed: bool = False


class TraceScript:
    """A ScriptedLM responder answering root calls and sub-calls from a trace's events.

    `sub_replies` maps the sha256 of a sub-call prompt to its recorded replies.
    """

    def __init__(self, runs: list[_RecordedRun], sub_replies: dict[str, list[str | BaseException]]):
        self.runs = runs
        self._sub = {p: deque(r) for p, r in sub_replies.items()}
        self._last_sub: dict[str, str | BaseException] = {}
        self._lock = threading.Lock()
        self._playing: dict[RunHandle, _RecordedRun] = {}
        self.unmatched: list[str] = []

    def __call__(self, messages: list[Message]) -> str:
        site = current_call()
        with self._lock:
            if site is None or site.role is Role.SUB:
                reply = self._sub_reply(messages)
            else:
                reply = self._root_reply(site.run)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def _sub_reply(self, messages: list[Message]) -> str | BaseException:
        prompt = messages[-1].get("content", "")
        key = text_sha256(prompt)
        queue = self._sub.get(key)
        if queue:
            # Identical prompts get their replies in recorded order, the last one repeated.
            self._last_sub[key] = queue.popleft()
            return self._last_sub[key]
        if key in self._last_sub:
            return self._last_sub[key]
        self.unmatched.append(prompt)
        return LMError("replay: the trace has no reply recorded for this sub-call prompt")

    def _root_reply(self, run: RunHandle) -> str | BaseException:
        recorded = self._recorded(run)
        if recorded is None:
            return LMError(f"replay: the trace has no run for the query {run.query[:80]!r}")
        if recorded.cursor >= len(recorded.replies):
            return LMError("replay: the trace has no more root replies for this run")
        recorded.cursor += 1
        return recorded.replies[recorded.cursor - 1]

    def _recorded(self, run: RunHandle) -> _RecordedRun | None:
        """The recorded run that the replayed `run` stands for, claimed on its first call."""
        if run in self._playing:
            return self._playing[run]
        parent = None if run.parent is None else self._recorded(run.parent)
        parent_id = None if parent is None else parent.run_id
        query = text_sha256(run.query) if parent_id is not None else ""
        found = next(
            (r for r in self.runs if not r.claimed and r.parent_run_id == parent_id
             and (parent_id is None or r.query_sha256 == query)),
            None,
        )
        if found is not None:
            found.claimed = True
            self._playing[run] = found
        return found

    @property
    def unused_root_replies(self) -> int:
        """Recorded root replies the replay never asked for."""
        return sum(len(r.replies) - r.cursor for r in self.runs)


def _reply_of(call: LMCall) -> str | BaseException:
    if call.error is None:
        if "response" in call.cut:
            chars = call.cut["response"].get("chars", "?")
            return LMError(f"replay: the trace cut this {chars}-character reply to its head and "
                           "tail, so it cannot be replayed")
        return call.response
    text = call.error.removeprefix("Error: ")
    return LMError(f"replayed failure: {text}")


@dataclass
class Recording:
    """What a trace holds for a replay."""

    root: RunStart
    end: RunEnd | None
    script: TraceScript
    sub_models: set[str]
    calls: int
    root_reply_count: int
    sub_reply_count: int


def load_recording(trace_path: str | Path) -> Recording:
    """Read a trace into the script that replays it."""
    from fathom.viewer import read_trace

    events = read_trace(Path(trace_path))
    starts = [e for e in events if isinstance(e, RunStart)]
    if not starts:
        raise TraceError(f"{trace_path} has no run_start event: it is empty or not a fathom trace.")
    root = next((s for s in starts if s.parent_run_id is None), starts[0])
    end = next((e for e in events if isinstance(e, RunEnd) and e.run_id == root.run_id), None)
    runs = {
        s.run_id: _RecordedRun(s.run_id, s.parent_run_id, s.sha256_of("query"), replies=[])
        for s in starts
    }
    subs: dict[str, list[str | BaseException]] = defaultdict(list)
    sub_models: set[str] = set()
    calls = 0
    for e in events:
        if not isinstance(e, LMCall):
            continue
        if e.refused:
            continue  # refused by the budget: never reached a model
        calls += 1
        if e.role == "root" and e.run_id in runs:
            runs[e.run_id].replies.append(_reply_of(e))
        elif e.role == "sub":
            subs[e.sha256_of("prompt")].append(_reply_of(e))
            sub_models.add(e.model)
    script = TraceScript(list(runs.values()), dict(subs))
    return Recording(
        root=root, end=end, script=script, sub_models=sub_models, calls=calls,
        root_reply_count=sum(len(r.replies) for r in runs.values()),
        sub_reply_count=sum(len(v) for v in subs.values()),
    )


def replay(trace_path: str | Path, *, context: Any = None, sandbox: str = "subprocess",
           trace: str | Path | None = None) -> ReplayReport:
    """Re-run the trajectory recorded in `trace_path` and compare the answers.

    `context` is the run's input; by default it is found from the trace (the source
    file it names, or the whole value when its preview holds all of it).
    """
    from fathom.rlm import RLM

    rec = load_recording(trace_path)
    config = rec.root.config
    root_lm = ScriptedLM(rec.script, name=rec.root.model or "replay:root")
    sub_name = rec.root.sub_model or root_lm.name
    sub_lm = root_lm if sub_name == root_lm.name else ScriptedLM(rec.script, name=sub_name)
    # llm_query(model=...) names seen in the trace must resolve to the script too.
    others: list[Any] = [ScriptedLM(rec.script, name=m) for m in rec.sub_models
                         if m not in (root_lm.name, sub_lm.name)]
    original_reason = rec.end.stop_reason if rec.end else "unfinished"
    # A run the budget stopped stops at the same call again: cap calls at what was made.
    budget = Budget(calls=rec.calls) if original_reason == "budget" else None
    rlm = RLM(
        model=root_lm, sub_model=sub_lm, sandbox=sandbox,
        max_iterations=int(config.get("max_iterations", 30)),
        max_depth=int(config.get("max_depth", 1)),
        max_concurrency=_concurrency(config.get("max_concurrency", 16)),
        output_limit=int(config.get("output_limit", 20_000)),
        compact_at=float(config.get("compact_at", 0.8)),
        sub_calls=bool(config.get("sub_calls", True)),
        exec_timeout=float(config.get("exec_timeout", 120.0)),
        max_message_mb=int(config.get("max_message_mb", 64)),
        max_batch=int(config.get("max_batch", 10_000)),
        budget=budget, trace=trace, allowed_models=others or None,
    )
    # A typed run is replayed against the JSON schema it recorded (so refusals recur).
    result = rlm.run(rec.root.query, context_of(rec.root, context), schema=rec.root.schema)
    original = rec.end.answer if rec.end else ""
    replayed = result.answer
    if not isinstance(replayed, str):  # a typed answer: compared as JSON values
        replayed = json.dumps(jsonable(replayed), ensure_ascii=False)
    same_answer = rec.end is not None and (
        text_sha256(replayed) == rec.end.sha256_of("answer")
        or ("answer" not in rec.end.cut and replayed.strip() == original.strip())
        or ("answer" not in rec.end.cut and _same_json(original, replayed))
    )
    return ReplayReport(
        trace_path=str(trace_path),
        matches=same_answer and result.stop_reason == original_reason,
        original_answer=original, replayed_answer=replayed,
        original_stop_reason=original_reason, replayed_stop_reason=result.stop_reason,
        root_replies=rec.root_reply_count, sub_replies=rec.sub_reply_count,
        unused_root_replies=rec.script.unused_root_replies,
        unmatched_prompts=list(rec.script.unmatched), error=result.error,
        interrupted=rec.end is None,
    )


def _same_json(a: str, b: str) -> bool:
    """Two answers that are the same JSON value (key order aside)."""
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return False


def context_of(start: RunStart, given: Any = None) -> Any:
    """The run's input: `given`, checked against the recorded one, or read again.

    The trace stores only metadata: a file-backed input's absolute paths and sha256
    (`inputs`), or for an older trace its source label.
    """
    inputs = start.context.get("inputs")
    if given is not None:
        given = Context.from_value(given)
        if isinstance(inputs, dict) and inputs.get("sha256"):
            _check_same_input(inputs, given)
        return given
    if isinstance(inputs, dict) and isinstance(inputs.get("files"), dict):
        return _recorded_input(start, inputs)
    return _context_from_label(start)


def _recorded_input(start: RunStart, inputs: dict[str, Any]) -> Context:
    """The files the run read, checked to hold the same bytes."""
    if inputs.get("stdin"):
        raise TraceError(
            "The run read standard input, which cannot be read again: pass the saved input "
            "(`fathom replay TRACE --context FILE`, or `replay(trace, context=...)`)."
        )
    files = {str(key): Path(path) for key, path in inputs["files"].items()}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise TraceError(
            f"The run's input {missing[0]} is not readable here"
            + (f" (nor {len(missing) - 1} other file(s))" if len(missing) > 1 else "")
            + "; replay needs the original input: run it where the files exist, or pass it "
            "(`fathom replay TRACE --context PATH`)."
        )
    label = start.context.get("source")
    encoding = inputs.get("encoding") if isinstance(inputs.get("encoding"), str) else None
    if list(files) == [""]:
        source: Source = TextFileSource(files[""], errors=str(inputs.get("errors", "strict")),
                                        label=label or str(files[""]), encoding=encoding)
    else:
        source = FilesSource(files, dict(start.context.get("skip_reasons") or {}),
                             label=label or "files", encoding=encoding)
    context = Context(source)
    _check_same_input(inputs, context)
    return context


def _check_same_input(inputs: dict[str, Any], context: Context) -> None:
    """TraceError when `context` is a file-backed input whose bytes differ from the recorded."""
    now = context.metadata().inputs
    recorded = inputs.get("sha256")
    if recorded and now is not None and now.get("sha256") != recorded:
        raise TraceError(
            "The input is not the one the run read (its sha256 differs from the trace's): "
            "the files changed since, or another input was given; replay needs the original."
        )


def _context_from_label(start: RunStart) -> Any:
    """An older trace's input: its source label, if it is a path that still exists."""
    meta = start.context
    source = meta.get("source")
    if source and Path(source).exists():
        return Path(source)
    preview = str(meta.get("preview", ""))
    kind = meta.get("kind")
    if kind == "str" and int(meta.get("total_chars", -1)) == len(preview):
        return preview  # a short text context is whole in its preview
    if kind in ("list", "dict"):
        try:
            value = json.loads(preview)  # a short JSON context, unless the preview was cut
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list | dict):
            return value
    raise TraceError(
        f"The trace records only the context's metadata and its source "
        f"({source or 'an in-memory value'}) is not readable here; replay needs the original "
        "input: run it where the file exists, or pass it (`fathom replay TRACE --context PATH`)."
    )


def _concurrency(value: Any) -> int | Literal["auto"]:
    """A recorded max_concurrency: "auto" (the adaptive default) or a whole number."""
    return "auto" if value == "auto" else int(value)
