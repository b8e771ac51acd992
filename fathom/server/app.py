"""The OpenAI-compatible Starlette app: /v1/chat/completions, /v1/models, /health, /metrics.

A request passes through layers that each do one thing: the access log (one JSON
line per request), errors as OpenAI JSON, the bearer token, the body limit, the
parsing of the body, admission (a cap on runs and a bounded queue), and the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

import fathom
from fathom.errors import ConfigError, ContextError, FathomError, LMError
from fathom.server.config import ServerConfig
from fathom.server.errors import APIError
from fathom.server.metrics import Metrics
from fathom.server.paths import resolve_paths
from fathom.server.requests import ChatRequest, parse_body, run_budget
from fathom.server.runs import Runs, stop
from fathom.server.streaming import chunk, completion, last_chunks

logger = logging.getLogger("fathom.server")


def create_app(config: ServerConfig) -> AccessLog:
    """The ASGI app serving `config` (Starlette routes inside the access log)."""
    runs = Runs(config)
    api = _API(config, runs)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # Shutdown: uvicorn has waited up to the grace time for responses and cancelled the
        # rest; cancel their runs too, so every worker is gone before the server exits, and
        # give the cancelled requests a moment to finish (and log) before the loop stops.
        await runs.cancel_all()
        await asyncio.sleep(0.2)

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", api.chat, methods=["POST"]),
            Route("/v1/models", api.models, methods=["GET"]),
            Route("/health", api.health, methods=["GET"]),
            Route("/metrics", api.metrics, methods=["GET"]),
        ],
        exception_handlers={APIError: _api_error, HTTPException: _http_error,
                            Exception: _unexpected},
        lifespan=lifespan,
    )
    return AccessLog(app, runs.metrics)


class _API:
    """The route handlers, sharing the config and the runs."""

    def __init__(self, config: ServerConfig, runs: Runs) -> None:
        self.config = config
        self.runs = runs

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "runs_active": self.runs.active})

    async def metrics(self, request: Request) -> Response:
        return Response(self.runs.metrics.text(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    async def models(self, request: Request) -> Response:
        self._authorize(request)
        created = int(time.time())
        return JSONResponse({"object": "list", "data": [
            {"id": "fathom", "object": "model", "created": created, "owned_by": "fathom",
             "root_model": self.config.model_name}]})

    async def chat(self, request: Request) -> Response:
        self._authorize(request)
        chat = parse_body(await read_body(request, self.config.max_body))
        paths = (resolve_paths(chat.context_paths, self.config.allow_dirs)
                 if chat.context_paths else None)
        budget = run_budget(self.config.budget, chat)
        reply_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        request.scope.setdefault("state", {})["reply_id"] = reply_id
        if chat.stream:
            return self._stream(request, chat, paths, budget, reply_id)
        task = self.runs.start(chat.query, chat.context, paths, budget)
        result = await _until_done_or_gone(request, task)
        if result is None:  # the client left; nobody reads this
            request.scope["state"]["outcome"] = "cancelled"
            return Response(status_code=499)
        request.scope["state"].update(run_id=result.run_id, outcome=result.stop_reason)
        return JSONResponse(completion(reply_id, chat.model, result))

    def _stream(self, request: Request, chat: ChatRequest, paths: Any, budget: fathom.Budget,
                reply_id: str) -> Response:
        from sse_starlette import EventSourceResponse

        lines: asyncio.Queue[str] = asyncio.Queue()
        task = self.runs.start(chat.query, chat.context, paths, budget, lines.put_nowait)
        state = request.scope["state"]

        async def events() -> AsyncIterator[dict[str, str]]:
            def data(value: dict[str, Any]) -> dict[str, str]:
                return {"data": json.dumps(value)}

            try:
                yield data(chunk(reply_id, chat.model, {"role": "assistant", "content": ""}))
                while not task.done() or not lines.empty():
                    line = await _next_line(lines, task)
                    if line is not None:
                        yield data(chunk(reply_id, chat.model, {"reasoning_content": line}))
                try:
                    result = run_result(task)
                except APIError as exc:
                    state["outcome"] = "error"
                    yield data(exc.body())
                else:
                    state.update(run_id=result.run_id, outcome=result.stop_reason)
                    for part in last_chunks(reply_id, chat.model, result):
                        yield data(part)
                yield {"data": "[DONE]"}
            finally:
                if not task.done():
                    state["outcome"] = "cancelled"
                    # The client left or the server is stopping: the run ends now, and its
                    # worker with it, even though this generator is being cancelled.
                    with anyio.CancelScope(shield=True):
                        await stop(task)

        return EventSourceResponse(events(), ping=15, sep="\n",
                                   shutdown_grace_period=self.config.grace)

    def _authorize(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 key.encode()):
            raise APIError(401, "Missing or wrong API key: send `Authorization: Bearer KEY` "
                           "with the key the server was started with (--api-key or "
                           "FATHOM_SERVER_API_KEY).", code="invalid_api_key")


async def _next_line(lines: asyncio.Queue[str], task: asyncio.Task[Any]) -> str | None:
    """The next progress line, or None once the run has ended with nothing left to say."""
    if not lines.empty():
        return lines.get_nowait()
    getter = asyncio.ensure_future(lines.get())
    try:
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    return getter.result() if getter.done() and not getter.cancelled() else None


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes: by Content-Length, else as it streams."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        chunks.append(part)
    return b"".join(chunks)


def _too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than this server's limit of "
                    f"{limit / 2**20:g} MB (--max-body); send less context, or give "
                    "`context_paths` to files the server may read.", code="request_too_large")


def run_result(task: asyncio.Task[fathom.Result]) -> fathom.Result:
    """The Result of a finished run task, or the APIError its failure is answered with."""
    try:
        result = task.result()
    except (ContextError, ConfigError) as exc:
        raise APIError(400, str(exc), code="invalid_context") from exc
    except FathomError as exc:
        raise APIError(500, str(exc), code="run_failed") from exc
    if result.stop_reason == "error":
        kind = result.error_type
        model_failed = kind is not None and issubclass(kind, LMError)
        raise APIError(502 if model_failed else 500,
                       f"The run failed: {result.error or 'unknown error'}",
                       code="model_error" if model_failed else "run_failed")
    return result


async def _until_done_or_gone(request: Request,
                              task: asyncio.Task[fathom.Result]) -> fathom.Result | None:
    """The run's Result; None if the client disconnected first (the run is then cancelled)."""
    gone = asyncio.create_task(_disconnected(request.receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            await stop(task)
    if task.cancelled():
        return None
    return run_result(task)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    request.scope.setdefault("state", {})["error"] = exc.message
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"No route {request.url.path}: use /v1/chat/completions, /v1/models, "
                    "/health or /metrics.",
               405: f"{request.method} is not allowed on {request.url.path}."}.get(
        exc.status_code, str(exc.detail))
    return await _api_error(request, APIError(exc.status_code, message))


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("fathom serve: unexpected error on %s", request.url.path)
    return await _api_error(request, APIError(
        500, f"Internal error ({type(exc).__name__}); the server log has the details.",
        code="internal_error"))


class AccessLog:
    """ASGI middleware: one JSON log line per HTTP request, and the request counter."""

    def __init__(self, app: Starlette, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = [0]
        scope.setdefault("state", {})

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still going when the grace time is over; their
            # runs are cancelled already. Ending the task here, logged as cancelled, keeps
            # a traceback of the cancellation out of the server log. A reply not begun
            # yet says why, in the OpenAI format.
            scope["state"]["outcome"] = "cancelled"
            if not status[0]:
                error = APIError(503, "The server is shutting down and cancelled this run; "
                                 "send the request again.", code="shutting_down")
                with contextlib.suppress(Exception):
                    await JSONResponse(error.body(), 503)(scope, receive, send_status)
        finally:
            route = scope["path"] if scope["path"] in _ROUTES else "other"
            self.metrics.requests.labels(route, str(status[0])).inc()
            state = scope["state"]
            line = {"method": scope["method"], "path": scope["path"], "status": status[0],
                    "ms": round((time.monotonic() - started) * 1000, 1),
                    "client": (scope.get("client") or ("", 0))[0],
                    **{k: state[k] for k in ("run_id", "outcome", "error") if k in state}}
            logger.info(json.dumps(line))


_ROUTES = {"/v1/chat/completions", "/v1/models", "/health", "/metrics"}
