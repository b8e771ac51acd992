"""`fathom.RLM`: the public entry point that configures and starts runs."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fathom.answers import AnswerSchema
from fathom.blocking import run_sync
from fathom.budget import Budget, Spend
from fathom.context import Context
from fathom.engine import Engine, Workspace
from fathom.errors import ConfigError
from fathom.lm.base import LM
from fathom.lm.router import ModelRouter
from fathom.result import Result
from fathom.sandbox import (
    ISOLATION_LEVELS,
    IsolationLevel,
    SandboxFactory,
    SandboxOptions,
    sandbox_names,
)
from fathom.session import Session
from fathom.trace import MAX_TRACE_BYTES, Event, EventSinks, TraceWriter
from fathom.tree import RunConfig, RunTree

EventHandler = Callable[[Event], None]


class RLM:
    """A Recursive Language Model: answers queries about a context of any size."""

    def __init__(
        self,
        model: str | LM | None = None,
        sub_model: str | LM | None = None,
        *,
        sandbox: str | SandboxFactory = "subprocess",
        max_iterations: int = 30,
        max_depth: int = 1,
        max_concurrency: int | Literal["auto"] = "auto",
        max_concurrency_cap: int = 512,
        exec_timeout: float = 120.0,
        budget: Budget | None = None,
        trace: str | Path | None = None,
        on_event: EventHandler | None = None,
        output_limit: int = 20_000,
        sandbox_isolation: IsolationLevel = "standard",
        memory_mb: int | None = 4096,
        cache: str | Path | None = None,
        allowed_models: list[str | LM] | None = None,
        compact_at: float = 0.8,
        max_message_mb: int = SandboxOptions.max_message_mb,
        max_batch: int = SandboxOptions.max_batch,
        trace_max_mb: float = MAX_TRACE_BYTES / 2**20,
        request_timeout: float = 300.0,
        context_window: int | None = None,
        max_output_tokens: int | None = None,
        sub_calls: bool = True,
    ) -> None:
        _check_concurrency(max_concurrency, max_concurrency_cap)
        _check_positive(max_iterations=max_iterations,
                        exec_timeout=exec_timeout, output_limit=output_limit,
                        max_message_mb=max_message_mb, max_batch=max_batch,
                        trace_max_mb=trace_max_mb, request_timeout=request_timeout,
                        **{k: v for k, v in (("context_window", context_window),
                                             ("max_output_tokens", max_output_tokens))
                           if v is not None})
        for name, count in (("max_message_mb", max_message_mb), ("max_batch", max_batch)):
            if not isinstance(count, int):
                raise ConfigError(f"{name}={count!r} is invalid: pass a whole number.")
        for name, value in (("model", model), ("sub_model", sub_model)):
            if value is not None and not isinstance(value, str) and not hasattr(value, "acomplete"):
                raise ConfigError(
                    f"{name}={value!r} is not a model: pass a spec string such as "
                    "'openai:gpt-5-mini' or 'local', or an object implementing fathom.lm.LM."
                )
        if budget is not None and not isinstance(budget, Budget):
            raise ConfigError(
                f"budget={budget!r} is invalid: pass fathom.Budget(usd=..., tokens=..., "
                "seconds=..., calls=...)."
            )
        if isinstance(allowed_models, str):
            raise ConfigError("allowed_models must be a list of model specs, not one string.")
        if isinstance(sandbox, str) and sandbox not in sandbox_names():
            raise ConfigError(
                f"Unknown sandbox {sandbox!r}: use one of {', '.join(sandbox_names())}, "
                "or pass a callable that returns a Sandbox."
            )
        if memory_mb is not None and memory_mb < 64:
            raise ConfigError(
                f"memory_mb={memory_mb} is too small for a Python worker: pass at least 64, "
                "or None for no limit."
            )
        if max_depth < 0:
            raise ConfigError(f"max_depth={max_depth} is invalid: pass 0 (no recursion) or more.")
        if context_window and max_output_tokens and max_output_tokens >= context_window:
            raise ConfigError(
                f"max_output_tokens={max_output_tokens} leaves no room for a prompt in "
                f"context_window={context_window}: pass a smaller share of the window."
            )
        if not 0 < compact_at <= 1:
            raise ConfigError(f"compact_at={compact_at} is invalid: pass a share in (0, 1].")
        if sandbox_isolation not in ISOLATION_LEVELS:
            raise ConfigError(
                f"sandbox_isolation={sandbox_isolation!r} is invalid: "
                f"use one of {', '.join(map(repr, ISOLATION_LEVELS))}."
            )
        self.model = model
        self.sub_model = sub_model
        self.budget = budget
        self.trace = Path(trace) if trace is not None else None
        self.trace_max_bytes = int(trace_max_mb * 2**20)
        self.on_event = on_event
        self.cache = cache
        self.allowed_models = allowed_models
        # Set on every model of the run that takes them (the OpenAI and Anthropic providers).
        self.model_options = {
            "request_timeout": request_timeout, "context_window": context_window,
            "max_output_tokens": max_output_tokens,
        }
        self.config = RunConfig(
            max_iterations=max_iterations,
            max_depth=max_depth,
            max_concurrency=max_concurrency,
            max_concurrency_cap=max_concurrency_cap,
            output_limit=output_limit,
            compact_at=compact_at,
            sub_calls=sub_calls,
            sandbox=sandbox,
            sandbox_options=SandboxOptions(
                exec_timeout=exec_timeout, memory_mb=memory_mb, isolation=sandbox_isolation,
                max_message_mb=max_message_mb, max_batch=max_batch,
            ),
        )

    def run(self, query: str, context: Any, *, schema: Any = None) -> Result:
        """Answer `query` about `context` (str, list, dict, Path or fathom.Context); with
        `schema` (a pydantic model class or a JSON-schema dict) the answer is validated."""
        return run_sync(lambda: self.arun(query, context, schema=schema))

    async def arun(self, query: str, context: Any, *, schema: Any = None) -> Result:
        """Async form of `run`."""
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("The query must be a non-empty string: pass the question to answer.")
        owned = not isinstance(context, Context)
        ctx = Context.from_value(context)
        try:
            router = self._router()
            self._check_prices(router)
            return await self._query(query, ctx, router=router, trace=self.trace,
                                     schema=schema)
        finally:
            if owned:
                ctx.close()

    async def _query(
        self, query: str, ctx: Context, *, router: ModelRouter, trace: Path | None,
        workspace: Workspace | None = None, schema: Any = None,
        on_event: EventHandler | None = None,
    ) -> Result:
        """One query on a loaded context: the path of `arun` and of every session question
        (which lends its live sandbox as `workspace`, and tallies usage with `on_event`)."""
        answer_schema = AnswerSchema.of(schema)  # a ConfigError before anything starts
        self._check_trace_is_not_input(ctx, trace)
        writer = TraceWriter(trace, max_bytes=self.trace_max_bytes) if trace is not None else None
        emit = EventSinks([s for s in (writer, self.on_event, on_event) if s is not None])
        engine = Engine if workspace is None else functools.partial(Engine, workspace=workspace)
        tree = RunTree(
            self.config, router, Spend(self.budget), emit, asyncio.get_running_loop(), engine
        )
        try:
            result = await tree.run(query, ctx, schema=answer_schema)
        finally:
            await tree.cancel_tasks()
            if writer is not None:
                writer.close()
        if writer is not None and writer.error is None:
            result = dataclasses.replace(result, trace_path=str(trace))
        return result

    def session(self, context: Any) -> Session:
        """Load `context` and start the sandbox once, to ask many questions in it (REPL
        variables persist between them): `with rlm.session(context) as s: s.ask(...)`."""
        return Session(self, context)

    def _router(self) -> ModelRouter:
        from fathom.lm import resolve

        wrap = self._cache_wrapper()
        model = self.model
        if model is None:
            from fathom.lm import default_model

            model = default_model()
        root = wrap(resolve(model))
        sub = root if self.sub_model is None else wrap(resolve(self.sub_model))
        return ModelRouter(root, sub, self.allowed_models, wrap)

    def _check_trace_is_not_input(self, ctx: Context, trace: Path | None) -> None:
        if trace is None:
            return
        target = trace.resolve()
        if any(path.resolve() == target for path in ctx.files()):
            raise ConfigError(
                f"The trace path {trace} is one of the input files; writing the trace "
                "would destroy it. Pass another trace path."
            )

    def _check_prices(self, router: ModelRouter) -> None:
        """Warn, once, when a dollar budget cannot see what a model costs."""
        if self.budget is None or self.budget.usd is None:
            return
        names = unpriced_models([router.root.name, router.sub.name])
        if names:
            warnings.warn(
                f"Budget(usd=...) cannot limit {' and '.join(names)}: not in fathom's price "
                "table, so its calls count as $0. Set a price with fathom.lm.pricing.set_price"
                "(model, input, output) (USD per million tokens), or add a tokens/calls limit.",
                stacklevel=_caller_stacklevel(),
            )

    def _cache_wrapper(self) -> Callable[[LM], LM]:
        configure = self._configure
        if self.cache is None:
            return configure
        from fathom.cache import CachedLM, ResponseCache

        store = ResponseCache(self.cache)
        return lambda lm: CachedLM(configure(lm), store)

    def _configure(self, lm: LM) -> LM:
        """`lm` with the run's request timeout, window and reply limit, if it takes them."""
        configure = getattr(lm, "configure", None)
        if callable(configure):
            configure(**self.model_options)
        return lm


def unpriced_models(names: list[str]) -> list[str]:
    """The paid models among `names` that fathom has no price for (so a usd limit misses them)."""
    from fathom.lm import pricing

    unpriced = []
    for name in dict.fromkeys(names):
        provider, _, model = name.partition(":")
        if provider in ("openai", "anthropic") and not pricing.is_priced(model or name):
            unpriced.append(name)
    return unpriced


def _caller_stacklevel() -> int:
    """The stacklevel of the first frame outside fathom and asyncio: the user's call."""
    skipped = (str(Path(__file__).parent), str(Path(asyncio.__file__).parent))
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(skipped):
        frame, level = frame.f_back, level + 1
    return level


def _check_concurrency(value: object, cap: object) -> None:
    """max_concurrency is "auto" or a whole number >= 1; the cap a whole number >= 1."""
    for name, given in (("max_concurrency", value), ("max_concurrency_cap", cap)):
        if given == "auto" and name == "max_concurrency":
            continue
        if not isinstance(given, int) or isinstance(given, bool) or given < 1:
            hint = '"auto" (adaptive, the default) or ' if name == "max_concurrency" else ""
            raise ConfigError(f"{name}={given!r} is invalid: pass {hint}a whole number >= 1.")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} is invalid: pass a number greater than 0.")
        if value <= 0:
            raise ConfigError(f"{name}={value} is invalid: pass a number greater than 0.")


__all__ = ["RLM", "Result"]
