"""`fathom.Session`: one loaded context and sandbox, many questions; save / load.

`rlm.session(context)` loads the context and starts the sandbox once. Each `ask` is
one RLM run (its own trace file, usage and citations) through the same path as
`RLM.arun`, in the session's live REPL: variables persist from one question to the
next, and `history` lists the earlier questions and answers. The model is told the
names, types and sizes of what is there, never the contents.

`save` writes the history and every REPL variable that can be pickled (cloudpickle,
in the sandbox) to one file, with a content hash of the context (not the context);
`Session.load` checks the hash and puts the variables back. The parent only moves the
pickled bytes: it never unpickles them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fathom import prompts
from fathom.blocking import run_sync
from fathom.bridge import offered_functions
from fathom.context import Context
from fathom.errors import ConfigError, ContextChanged, SandboxError, SessionError
from fathom.lm.base import Usage
from fathom.lm.router import ModelRouter
from fathom.repl_api import FunctionSpec
from fathom.result import Result
from fathom.sandbox import create
from fathom.sandbox.base import Bridge, Sandbox
from fathom.sandbox.state import Kind, Variables
from fathom.trace import Event, RunEnd
from fathom.tree import RunConfig

HISTORY = "history"  # the REPL variable listing the earlier questions and answers
MAGIC = b"FATHOM-SESSION 1\n"


class Runner(Protocol):
    """What a session needs of its `fathom.RLM`."""

    config: RunConfig
    trace: Path | None
    on_event: Callable[[Event], None] | None

    def _router(self) -> ModelRouter: ...

    def _check_prices(self, router: ModelRouter) -> None: ...

    async def _query(
        self, query: str, ctx: Context, *, router: ModelRouter, trace: Path | None,
        workspace: Session | None = None, on_event: Callable[[Event], None] | None = None,
    ) -> Result: ...


@dataclass(frozen=True)
class SaveReport:
    """What `Session.save` wrote: the variables saved, and those it could not save, with why."""

    path: str
    saved: list[str]
    unsaved: dict[str, str] = field(default_factory=dict)


class _Relay:
    """The Bridge the session's sandbox keeps: REPL calls go to the current question's run."""

    def __init__(self, functions: list[FunctionSpec]) -> None:
        self._functions = functions
        self.current: Bridge | None = None

    def functions(self) -> list[FunctionSpec]:
        return list(self._functions)

    def call(self, name: str, args: dict[str, Any]) -> Any:
        current = self.current
        if current is None:  # a thread of an earlier question's code, still calling
            return f"Error: {name}: no question of the session is running"
        return current.call(name, args)


class Session:
    """One context loaded in one sandbox; `ask` many questions, `save`, `Session.load`."""

    def __init__(self, rlm: Runner, context: Any) -> None:
        self.rlm = rlm
        self._owned = not isinstance(context, Context)
        self.context = Context.from_value(context)
        self.history: list[dict[str, Any]] = []  # {"question": ..., "answer": ...}
        self.results: list[Result] = []
        self._cancelled: list[dict[str, Usage]] = []  # what cancelled questions spent
        self.note = ""  # for the engine (Workspace): what the REPL holds, told to the model
        self._sandbox: Sandbox | None = None
        self._relay: _Relay | None = None
        self._router: ModelRouter | None = None
        self._asking = threading.Lock()
        self._asked = 0  # questions asked, answered or not: they number the traces
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> Session:
        """Load the context and start the sandbox (once; `with` does it for you)."""
        if self._sandbox is None:
            run_sync(self._start, name="fathom-session")
        return self

    async def _start(self) -> None:
        if self._sandbox is not None:
            return
        if self._closed:
            raise SessionError("This session was closed (its REPL state is gone): open a new "
                               "one with rlm.session(context), or Session.load a saved one.")
        router = self.rlm._router()
        self.rlm._check_prices(router)
        relay = _Relay(offered_functions(self.rlm.config, router.sub))
        config = self.rlm.config
        sandbox = create(config.sandbox, config.sandbox_options)
        try:
            await asyncio.to_thread(sandbox.start, self.context, relay)
        except BaseException:
            await asyncio.to_thread(sandbox.close)
            raise
        self._router, self._relay, self._sandbox = router, relay, sandbox
        await asyncio.to_thread(self._set_history)

    def close(self) -> None:
        """Stop the sandbox (the REPL state goes with it; `save` first to keep it)."""
        self._closed = True
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            sandbox.close()
        if self._owned:
            self.context.close()

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Session:
        await self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    # --- questions ------------------------------------------------------------------------
    def ask(self, query: str, *, trace: str | Path | None = None, **options: Any) -> Result:
        """Answer `query` in this session's REPL; `options` as for `RLM.run` (e.g. schema=).

        Its trace goes to `trace`, by default the RLM's trace path numbered by question
        (run.jsonl -> run.1.jsonl, run.2.jsonl, ...).
        """
        return run_sync(lambda: self.aask(query, trace=trace, **options))

    async def aask(self, query: str, *, trace: str | Path | None = None, **options: Any) -> Result:
        """Async form of `ask`."""
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("The query must be a non-empty string: pass the question to answer.")
        if not self._asking.acquire(blocking=False):
            raise ConfigError("This session is answering a question already: ask one at a time "
                              "(or open another session).")
        try:
            await self._start()
            assert self._router is not None
            self._asked = max(self._asked, len(self.history)) + 1  # cancelled ones count
            path = Path(trace) if trace is not None else self._numbered_trace()
            self.note = await asyncio.to_thread(self._describe)
            spent: dict[str, Usage] = {}
            try:
                result = await self.rlm._query(
                    query, self.context, router=self._router, trace=path, workspace=self,
                    on_event=functools.partial(_tally, spent), **options,
                )
            except asyncio.CancelledError:
                self._interrupt()  # the block still running in the worker: stop it too
                self._cancelled.append(spent)
                raise
            finally:
                if self._relay is not None:
                    self._relay.current = None
            self.results.append(result)
            self.history.append({"question": query, "answer": _plain(result.answer)})
            await asyncio.to_thread(self._set_history)
            return result
        finally:
            self._asking.release()

    def attach(self, bridge: Bridge) -> Sandbox:
        """The engine's side (Workspace): the live sandbox, its calls now going to `bridge`."""
        sandbox, relay = self._require()
        relay.current = bridge
        return sandbox

    @property
    def usage(self) -> dict[str, Usage]:
        """Usage per model, summed over every question asked in this session (cancelled ones
        included)."""
        total: dict[str, Usage] = {}
        for spent in [*(r.usage for r in self.results), *self._cancelled]:
            for model, usage in spent.items():
                total[model] = total.get(model, Usage()) + usage
        return total

    @property
    def total_usage(self) -> Usage:
        """Usage summed over every model and question."""
        return sum(self.usage.values(), Usage())

    def variables(self) -> dict[str, str]:
        """The REPL's variables: name -> type and size (what the model is told)."""
        sandbox, _ = self._require()
        listed = getattr(sandbox, "variables", None)
        found: dict[str, str] = listed() if callable(listed) else {}
        return {name: text for name, text in found.items() if name != "context"}

    # --- save / load ----------------------------------------------------------------------
    def save(self, path: str | Path) -> SaveReport:
        """Write the history and every variable that can be pickled to `path`; the others are
        listed in the report and a warning. The file holds a hash of the context, not it."""
        sandbox, _ = self._require()
        take = getattr(sandbox, "take_variables", None)
        if not callable(take):
            raise SessionError(f"The {sandbox.name} sandbox cannot save its variables: use "
                               "sandbox='subprocess' or 'inprocess' for sessions you save.")
        variables: Variables = take(frozenset({HISTORY}))
        header = {
            "format": 1,
            "context_sha256": content_hash(self.context),
            "context": {"kind": self.context.kind, "source": self.context.metadata().source},
            "history": self.history,
            "variables": [{"name": n, "kind": k, "size": len(d)}
                          for n, (k, d) in variables.saved.items()],
            "unsaved": variables.lost,
        }
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(MAGIC)
            handle.write(json.dumps(header, ensure_ascii=False).encode("utf-8", "surrogatepass"))
            handle.write(b"\n")
            for _, data in variables.saved.values():
                handle.write(data.encode("utf-8", "surrogatepass") if isinstance(data, str)
                             else data)
        os.replace(tmp, target)
        if variables.lost:
            warnings.warn(_unsaved_warning(variables.lost), stacklevel=2)
        return SaveReport(str(target), sorted(variables.saved), dict(variables.lost))

    @classmethod
    def load(cls, path: str | Path, rlm: Runner, context: Any) -> Session:
        """The session saved in `path`, started on `context` with its variables and history
        back. ContextChanged when `context` is not the one it was saved with."""
        header, variables = _read(Path(path))
        session = cls(rlm, context)
        try:
            if content_hash(session.context) != header.get("context_sha256"):
                raise ContextChanged(
                    f"The context is not the one the session {path} was saved with (its "
                    "content hash differs): pass that same context to Session.load, or start "
                    "a new session with rlm.session(context)."
                )
            session.history = [h for h in header.get("history") or [] if isinstance(h, dict)]
            session.start()
            sandbox, _ = session._require()
            put = getattr(sandbox, "put_variables", None)
            if not callable(put):
                raise SessionError(f"The {sandbox.name} sandbox cannot restore variables: use "
                                   "sandbox='subprocess' or 'inprocess'.")
            _, lost = put(variables)
        except BaseException:
            session.close()
            raise
        if lost:
            warnings.warn(_unsaved_warning(lost, restoring=True), stacklevel=2)
        return session

    # --- the REPL's side --------------------------------------------------------------------
    def _require(self) -> tuple[Sandbox, _Relay]:
        if self._sandbox is None or self._relay is None:
            raise SessionError("The session is not started, or was closed: use it in a `with` "
                               "block, or call start().")
        return self._sandbox, self._relay

    def _numbered_trace(self) -> Path | None:
        base = self.rlm.trace
        if base is None:
            return None
        return base.with_name(f"{base.stem}.{self._asked}{base.suffix}")

    def _describe(self) -> str:
        """The first turn's note on what earlier questions left (empty at a fresh start)."""
        try:
            found = self.variables()
        except SandboxError:  # the worker died between questions; the run restarts it
            found = {}
        if not self.history and set(found) <= {HISTORY}:
            return ""
        return prompts.session_state(found, len(self.history))

    def _set_history(self) -> None:
        """Put the session's history in the REPL as `history` (REPL code may have changed it)."""
        sandbox, _ = self._require()
        text = json.dumps(self.history, ensure_ascii=False)
        sandbox.execute(f"{HISTORY} = __import__('json').loads({text!r})")

    def _interrupt(self) -> None:
        interrupt = getattr(self._sandbox, "interrupt", None)
        if callable(interrupt):
            interrupt()


def content_hash(context: Context) -> str:
    """sha256 of the context's content: its files' bytes (with their keys), or its value."""
    inputs = context.metadata().inputs
    if inputs is not None and isinstance(inputs.get("sha256"), str):
        return f"files:{inputs['sha256']}"
    value = context.load()
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
    else:
        data = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return f"{context.kind}:{hashlib.sha256(data).hexdigest()}"


def _read(path: Path) -> tuple[dict[str, Any], Variables]:
    """A session file's header and variables (the pickles stay bytes: nothing is unpickled)."""
    try:
        with open(path, "rb") as handle:
            if handle.readline() != MAGIC:
                raise SessionError(f"{path} is not a fathom session file (written by "
                                   "Session.save): pass the file save wrote.")
            header = json.loads(handle.readline().decode("utf-8", "surrogatepass"))
            variables = Variables(lost=dict(header.get("unsaved") or {}))
            for entry in header.get("variables") or []:
                data = handle.read(int(entry["size"]))
                if len(data) != int(entry["size"]):
                    raise ValueError("the file is cut short")
                kind = str(entry["kind"])
                text = data if kind == Kind.PICKLE else data.decode("utf-8", "surrogatepass")
                variables.saved[str(entry["name"])] = (kind, text)
    except OSError as exc:
        raise SessionError(f"Cannot read the session file {path}: {exc.strerror}.") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SessionError(f"The session file {path} is damaged ({exc}); save the session "
                           "again.") from exc
    if not isinstance(header, dict):
        raise SessionError(f"The session file {path} is damaged; save the session again.")
    return header, variables


def _unsaved_warning(lost: dict[str, str], *, restoring: bool = False) -> str:
    listed = "; ".join(f"{name} ({why})" for name, why in sorted(lost.items()))
    if restoring:
        return f"Session.load could not restore {len(lost)} variable(s): {listed}"
    return (f"Session.save could not save {len(lost)} variable(s), which a loaded session "
            f"will not have: {listed}")


def _plain(answer: Any) -> Any:
    """An answer as JSON-like data for `history` (a typed answer becomes its dict)."""
    dump = getattr(answer, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    try:
        json.dumps(answer)
    except (TypeError, ValueError):
        return str(answer)
    return answer


def _tally(spent: dict[str, Usage], event: Event) -> None:
    """Keep what the root run spent, from its run_end (a cancelled run still sends one)."""
    if isinstance(event, RunEnd) and event.depth == 0:
        known = {f.name for f in dataclasses.fields(Usage)}
        spent.update({model: Usage(**{k: v for k, v in usage.items() if k in known})
                      for model, usage in event.usage.items()})


