"""`fathom.RLM`: the public entry point that configures and starts runs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fathom.bridge import ModelRouter
from fathom.budget import Budget, Spend
from fathom.context import Context
from fathom.engine import Engine, RunConfig, RunTree
from fathom.errors import ConfigError
from fathom.lm.base import LM
from fathom.result import Result
from fathom.sandbox import IsolationLevel, SandboxFactory, SandboxOptions
from fathom.trace import Event, TraceWriter

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
        max_concurrency: int = 16,
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
    ) -> None:
        _check_positive(max_iterations=max_iterations, max_concurrency=max_concurrency,
                        exec_timeout=exec_timeout, output_limit=output_limit)
        if max_depth < 0:
            raise ConfigError(f"max_depth={max_depth} is invalid: pass 0 (no recursion) or more.")
        if not 0 < compact_at <= 1:
            raise ConfigError(f"compact_at={compact_at} is invalid: pass a share in (0, 1].")
        if sandbox_isolation not in ("strict", "standard", "off"):
            raise ConfigError(
                f"sandbox_isolation={sandbox_isolation!r} is invalid: "
                "use 'strict', 'standard' or 'off'."
            )
        self.model = model
        self.sub_model = sub_model
        self.budget = budget
        self.trace = Path(trace) if trace is not None else None
        self.on_event = on_event
        self.cache = cache
        self.allowed_models = allowed_models
        self.config = RunConfig(
            max_iterations=max_iterations,
            max_depth=max_depth,
            max_concurrency=max_concurrency,
            output_limit=output_limit,
            compact_at=compact_at,
            sandbox=sandbox,
            sandbox_options=SandboxOptions(
                exec_timeout=exec_timeout, memory_mb=memory_mb, isolation=sandbox_isolation
            ),
        )

    def run(self, query: str, context: Any) -> Result:
        """Answer `query` about `context` (str, list, dict, Path or fathom.Context)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(query, context))
        # Called from inside an event loop (a notebook, say): run on a loop of our own.
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = asyncio.run(self.arun(query, context))
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=target, name="fathom-run")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        result: Result = box["result"]
        return result

    async def arun(self, query: str, context: Any) -> Result:
        """Async form of `run`."""
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("The query must be a non-empty string: pass the question to answer.")
        owned = not isinstance(context, Context)
        ctx = Context.from_value(context)
        router = self._router()
        writer = TraceWriter(self.trace) if self.trace is not None else None
        sinks = [s for s in (writer, self.on_event) if s is not None]

        def emit(event: Event) -> None:
            for sink in sinks:
                sink(event)

        tree = RunTree(self.config, router, Spend(self.budget), emit, asyncio.get_running_loop())
        try:
            result = await Engine(tree).run(query, ctx)
        finally:
            tree.threads.shutdown(wait=False)
            if writer is not None:
                writer.close()
            if owned:
                ctx.close()
        if self.trace is not None:
            result = _with_trace(result, str(self.trace))
        return result

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

    def _cache_wrapper(self) -> Callable[[LM], LM]:
        if self.cache is None:
            return lambda lm: lm
        from fathom.cache import CachedLM, ResponseCache

        store = ResponseCache(self.cache)
        return lambda lm: CachedLM(lm, store)


def _with_trace(result: Result, path: str) -> Result:
    from dataclasses import replace

    return replace(result, trace_path=path)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ConfigError(f"{name}={value} is invalid: pass a number greater than 0.")


__all__ = ["RLM", "Result"]
