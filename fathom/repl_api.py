"""The REPL functions that call the parent, described once, as data.

Each entry names a function, its parameters, what it returns, the line that
documents it (to REPL code and in the system prompt) and its parent-side handler.
The sandboxes make their stubs from the specs (the subprocess worker receives them
over the channel, so it never needs this table), the bridge dispatches to the
handlers, and the prompt lists the functions. Adding a function is one `register`.

`FINAL`, `FINAL_VAR`, `SHOW_VARS` and `print` are not here: they act on the REPL
itself, never on the parent.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from fathom.errors import CallRefused

__all__ = [
    "Batch", "CallRefused", "FunctionSpec", "Handler", "Param", "ParamKind", "ReplFunction",
    "ReplHost", "functions", "get", "register", "unregister",
]


class ParamKind(StrEnum):
    """How REPL code's argument is prepared before it crosses to the parent."""

    VALUE = "value"  # sent as given (must be JSON-like to leave the subprocess worker)
    TEXT = "text"  # str(value): prompts may be any object
    TEXTS = "texts"  # [str(v) for v in value] when value is a list or tuple


@dataclass(frozen=True)
class Param:
    """One parameter of a REPL function; without a default it is required."""

    name: str
    kind: ParamKind = ParamKind.VALUE
    required: bool = False
    default: Any = None  # JSON-like: it crosses to the worker

    def prepare(self, value: Any) -> Any:
        """The argument as it is sent to the parent."""
        if self.kind is ParamKind.TEXT:
            return value if isinstance(value, str) else str(value)
        if self.kind is ParamKind.TEXTS and isinstance(value, list | tuple):
            return [v if isinstance(v, str) else str(v) for v in value]
        return value


@dataclass(frozen=True)
class FunctionSpec:
    """What a sandbox needs to offer a REPL function: its name, parameters and doc."""

    name: str
    params: tuple[Param, ...]
    returns: str
    doc: str

    @property
    def signature(self) -> str:
        """The call signature as the model reads it, e.g. `(prompt, model=None)`."""
        parts = [p.name if p.required else f"{p.name}={p.default!r}" for p in self.params]
        return f"({', '.join(parts)})"

    @property
    def line(self) -> str:
        """How the system prompt lists the function."""
        return f"`{self.name}{self.signature} -> {self.returns}`: {self.doc}"

    def render(self, **values: str) -> FunctionSpec:
        """This spec with `{name}` placeholders in its doc filled for one run."""
        doc = self.doc
        for key, value in values.items():
            doc = doc.replace("{" + key + "}", value)
        return replace(self, doc=doc)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as sent to the subprocess worker."""
        return {
            "name": self.name, "returns": self.returns, "doc": self.doc,
            "params": [
                {"name": p.name, "kind": p.kind.value, "required": p.required,
                 "default": p.default}
                for p in self.params
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FunctionSpec:
        """The spec `to_dict` wrote."""
        params = tuple(
            Param(str(p["name"]), ParamKind(p["kind"]), bool(p["required"]), p.get("default"))
            for p in data["params"]
        )
        return cls(str(data["name"]), params, str(data["returns"]), str(data["doc"]))


@dataclass(frozen=True)
class Batch:
    """The calls of one batched REPL call: their shared id, and how many there are."""

    id: str
    size: int


class ReplHost(Protocol):
    """What a handler may ask of the run whose REPL called it (the bridge provides it)."""

    concurrency: int  # calls of this run that may wait on models at once (max_concurrency)

    def batch(self, size: int) -> Batch:
        """A fresh batch tying together the `size` calls of one batched function."""
        ...

    async def llm_query(self, prompt: str, model: str | None, batch: Batch | None) -> str:
        """One metered sub-call; BudgetExceeded if the budget refuses it."""
        ...

    async def rlm_query(self, prompt: str, context: Any, batch: Batch | None) -> str:
        """A child run (a sub-call at the depth limit); BudgetExceeded at the budget."""
        ...

    async def cite(self, start: Any, end: Any, source: Any) -> str:
        """Record context span `source`[start:end] as evidence of this run and return its
        text; CallRefused when the span is not in the context."""
        ...


Handler = Callable[[ReplHost, dict[str, Any]], Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class ReplFunction:
    """A REPL function: its spec, and the coroutine that answers it in the parent."""

    spec: FunctionSpec
    handler: Handler
    calls_models: bool = False  # a run with sub_calls=False does not offer it


_FUNCTIONS: dict[str, ReplFunction] = {}


def register(
    name: str, params: list[Param], returns: str, doc: str, handler: Handler,
    *, calls_models: bool = False,
) -> ReplFunction:
    """Add (or replace) a REPL function; every later run offers it (a model-calling one only
    where sub-calls are on)."""
    function = ReplFunction(
        FunctionSpec(name, tuple(params), returns, doc), handler, calls_models
    )
    _FUNCTIONS[name] = function
    return function


def unregister(name: str) -> None:
    """Remove a REPL function (tests, plugins that switch one off)."""
    _FUNCTIONS.pop(name, None)


def functions() -> list[ReplFunction]:
    """Every REPL function, in the order they were registered."""
    return list(_FUNCTIONS.values())


def get(name: str) -> ReplFunction | None:
    """The REPL function called `name`, if there is one."""
    return _FUNCTIONS.get(name)


def check_batch(spec: FunctionSpec, args: dict[str, Any], max_batch: int) -> None:
    """Refuse (CallRefused) a call with more than `max_batch` prompts in one list argument."""
    for param in spec.params:
        value = args.get(param.name)
        if param.kind is ParamKind.TEXTS and isinstance(value, list) and len(value) > max_batch:
            raise CallRefused(
                f"{spec.name} got {len(value):,} {param.name}, over the limit of {max_batch:,} "
                f"per call: split them into calls of at most {max_batch:,}."
            )


# --- the built-in functions ------------------------------------------------------------
def _model(args: dict[str, Any]) -> str | None:
    model = args.get("model")
    return model if isinstance(model, str) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


async def _fan_out(host: ReplHost, calls: Iterator[Coroutine[Any, Any, str]]) -> list[str]:
    """Answers in order, with a window of twice the run's concurrency in flight.

    Calls are made as the window frees, so a huge batch never holds more than the window
    (its tasks, its trace events). After a failure (a budget refusal) no further call
    starts: the rest of the batch is not attempted, and the failure is raised once the
    calls in flight have settled.
    """
    # Imported here: the sandbox worker imports this module for the specs, and importing
    # asyncio there would add tens of milliseconds to every worker start.
    import asyncio

    window = max(1, 2 * host.concurrency)
    results: list[str] = []
    running: dict[asyncio.Future[str], int] = {}
    failure: BaseException | None = None
    numbered = enumerate(calls)
    try:
        while True:
            while failure is None and len(running) < window:
                index, call = next(numbered, (-1, None))
                if call is None:
                    break
                running[asyncio.ensure_future(call)] = index
                results.append("")
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                index = running.pop(task)
                error = asyncio.CancelledError() if task.cancelled() else task.exception()
                if error is None:
                    results[index] = str(task.result())
                elif failure is None:
                    failure = error
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    if failure is not None:
        raise failure
    return results


async def _llm_query(host: ReplHost, args: dict[str, Any]) -> str:
    return await host.llm_query(_text(args.get("prompt", "")), _model(args), None)


async def _llm_query_batched(host: ReplHost, args: dict[str, Any]) -> list[str]:
    prompts = args.get("prompts")
    if not isinstance(prompts, list):
        return [f"Error: llm_query_batched needs a list, got {type(prompts).__name__}"]
    batch, model = host.batch(len(prompts)), _model(args)
    return await _fan_out(host, (host.llm_query(_text(p), model, batch) for p in prompts))


async def _rlm_query(host: ReplHost, args: dict[str, Any]) -> str:
    return await host.rlm_query(_text(args.get("prompt", "")), args.get("context"), None)


async def _rlm_query_batched(host: ReplHost, args: dict[str, Any]) -> list[str]:
    prompts, contexts = args.get("prompts"), args.get("contexts")
    if not isinstance(prompts, list):
        return [f"Error: rlm_query_batched needs a list, got {type(prompts).__name__}"]
    if contexts is None:
        contexts = [None] * len(prompts)
    if not isinstance(contexts, list) or len(contexts) != len(prompts):
        count = len(contexts) if isinstance(contexts, list) else type(contexts).__name__
        return [
            f"Error: rlm_query_batched got {len(prompts)} prompts but {count} contexts"
        ] * len(prompts)
    batch = host.batch(len(prompts))
    return await _fan_out(
        host, (host.rlm_query(_text(p), c, batch) for p, c in zip(prompts, contexts, strict=True))
    )


async def _cite(host: ReplHost, args: dict[str, Any]) -> str:
    return await host.cite(args.get("start"), args.get("end"), args.get("source"))


_PROMPT = Param("prompt", ParamKind.TEXT, required=True)
_PROMPTS = Param("prompts", ParamKind.TEXTS, required=True)
_MODEL = Param("model")

register(
    "llm_query", [_PROMPT, _MODEL], "str",
    "ask a language model one question. It can read far more text than you see here "
    "(around {sub_window} characters), so give it whole chunks of the context together "
    "with a precise question.",
    _llm_query, calls_models=True,
)
register(
    "llm_query_batched", [_PROMPTS, _MODEL], "list[str]",
    "many llm_query calls run concurrently; answers come back in the order of the "
    "prompts. Prefer it to a loop.",
    _llm_query_batched, calls_models=True,
)
register(
    "rlm_query", [_PROMPT, Param("context")], "str",
    "a recursive sub-call: a new RLM with its own REPL whose `context` is the one you "
    "pass (or the prompt itself). Use it for sub-problems that are themselves too big "
    "for one llm_query.",
    _rlm_query, calls_models=True,
)
register(
    "rlm_query_batched", [_PROMPTS, Param("contexts")], "list[str]",
    "many rlm_query calls concurrently.",
    _rlm_query_batched, calls_models=True,
)
register(
    "cite", [Param("start", required=True), Param("end", required=True), Param("source")], "str",
    "record context[start:end] (for a list or dict context: context[source][start:end]) as "
    "evidence for your answer, and return that text. Offsets count characters, as str.find "
    "gives them; cite the exact spans your answer rests on.",
    _cite,
)
