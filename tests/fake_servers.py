"""Loopback HTTP servers that speak the OpenAI and Anthropic APIs with scripted replies.

They let tests drive the real `openai` and `anthropic` SDKs (and everything built on
them) over real HTTP without a key or a network. Both bind 127.0.0.1 on a free port,
serve from a background thread and are used as context managers:

    with ScriptedOpenAIServer(["hello"], fail_first=[429]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        ...
        assert len(server.requests) == 2   # the 429 attempt and the retry

`replies` is a list of reply texts used in order, or a callable `messages -> str`
(it receives the request's `messages` list). `fail_first=[429, 500]` answers the
first requests with those statuses (429 and 503 carry `Retry-After`) before any
reply is used; with `quota_exhausted=True` a 429 says `insufficient_quota`.
`.requests` holds the parsed JSON body of every request to the completion
endpoint, failed attempts included; `.headers` the matching headers.

Throughput: `max_in_flight=48` answers 429 + `Retry-After` to any request beyond 48
being served at once (set the attribute during a run to change the limit);
`.rejected` counts those, `.peak` the most served at once. `prefix_cache=True`
reports as cached the prompt tokens a request shares with an earlier one (OpenAI's
`prompt_tokens_details.cached_tokens`, Anthropic's `cache_read_input_tokens`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Replies = Sequence[str] | Callable[[list[dict[str, Any]]], str]


def common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of `a` and `b` (what a prefix cache can reuse)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _estimate_tokens(text: str) -> int:
    return len(text) // 4 + 1


class _Server(ThreadingHTTPServer):
    # Hundreds of sub-calls connect at once: the default backlog of 5 would drop some.
    request_queue_size = 1024
    daemon_threads = True


def _text_of(content: Any) -> str:
    """Plain text of a message content: a str or a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


class _ScriptedServer:
    """Shared machinery: the thread, the script, failure injection and recording."""

    path = "/"

    def __init__(
        self,
        replies: Replies,
        fail_first: Sequence[int] = (),
        *,
        retry_after: str = "0",
        api_key: str | None = None,
        usage: bool = True,
        delay: float = 0.0,
        model: str = "scripted-model",
        slow_first: int | None = None,
        null_replies: int = 0,
        malformed: bool = False,
        n_ctx: int | None = None,
        max_in_flight: int | None = None,
        quota_exhausted: bool = False,
        prefix_cache: bool = False,
    ) -> None:
        self._replies: list[str] | None = None if callable(replies) else list(replies)
        self._responder = replies if callable(replies) else None
        self._failures = list(fail_first)
        self.retry_after = retry_after
        self.api_key = api_key  # when set, other keys get 401
        self.usage = usage  # False: omit `usage`, as some servers do
        self.delay = delay  # seconds to wait before answering (timeout tests)
        self.slow_first = slow_first  # when set, only the first N requests wait `delay`
        self.model = model
        self.null_replies = null_replies  # the first N replies have `content: null` (OpenAI)
        self.malformed = malformed  # replies are cut-off JSON
        self.n_ctx = n_ctx  # when set, GET /props answers as llama.cpp's server does
        self.max_in_flight = max_in_flight  # beyond it: 429 + Retry-After
        self.quota_exhausted = quota_exhausted  # 429s say insufficient_quota
        self.prefix_cache = prefix_cache
        self.in_flight = 0
        self.peak = 0
        self.rejected = 0
        self._prompts: list[str] = []  # what the prefix cache holds
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._index = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> _ScriptedServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server._handle_post(self)

            def do_GET(self) -> None:
                server._handle_get(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        """The port the server listens on (after entering the context)."""
        assert self._httpd is not None, "use the server as a context manager first"
        return int(self._httpd.server_address[1])

    @property
    def calls(self) -> int:
        """Number of successful replies served so far."""
        return self._index

    # -- request handling --------------------------------------------------------
    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: dict[str, Any],
        extra: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _handle_get(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path.rstrip("/").endswith("/models"):
            self._send(handler, 200, {"object": "list", "data": [{"id": self.model}]})
        elif handler.path.rstrip("/") == "/props" and self.n_ctx is not None:
            self._send(handler, 200, {"default_generation_settings": {"n_ctx": self.n_ctx}})
        else:
            self._send(handler, 404, self.error_body(404, f"no route {handler.path}"))

    def _handle_post(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path.split("?")[0].rstrip("/") != self.path:
            self._send(handler, 404, self.error_body(404, f"no route {handler.path}"))
            return
        length = int(handler.headers.get("Content-Length") or 0)
        try:
            body = json.loads(handler.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._send(handler, 400, self.error_body(400, "body is not JSON"))
            return
        with self._lock:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in handler.headers.items()})
        if self.api_key is not None and self._key_of(handler) != self.api_key:
            self._send(handler, 401, self.error_body(401, "Incorrect API key provided."))
            return
        with self._lock:
            status = self._failures.pop(0) if self._failures else None
            over = self.max_in_flight is not None and self.in_flight >= self.max_in_flight
            if status is None and over:
                status = 429
                self.rejected += 1
            elif status is None:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
        if status is not None:
            extra = {"Retry-After": self.retry_after} if status in (429, 503) else {}
            body_ = self.error_body(status, f"scripted failure {status}")
            if status == 429 and self.quota_exhausted:
                body_ = self.quota_body()
            self._send(handler, status, body_, extra)
            return
        try:
            self._reply(handler, body)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _reply(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        with self._lock:
            slow = self.slow_first is None or len(self.requests) <= self.slow_first
        if self.delay and slow:
            time.sleep(self.delay)
        if self.malformed:
            data = b'{"id": "chatcmpl-1", "choices": [{'
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        messages = body.get("messages") or []
        try:
            text = self._next_reply(messages)
        except LookupError as exc:
            # 400 so no client retries it: the test script is simply too short.
            self._send(handler, 400, self.error_body(400, str(exc)))
            return
        prompt_text = _text_of(body.get("system"))
        prompt_text += "".join(_text_of(m.get("content")) for m in messages)
        self._send(handler, 200, self.reply_body(body, text, prompt_text))

    def cached_tokens(self, prompt_text: str) -> int:
        """Tokens of `prompt_text` a prefix cache holds: its longest common prefix with an
        earlier prompt, in whole blocks of 128 tokens from 1024 on (as OpenAI counts)."""
        if not self.prefix_cache:
            return 0
        with self._lock:
            shared = max((common_prefix(p, prompt_text) for p in self._prompts), default=0)
            self._prompts.append(prompt_text)
        tokens = shared // 4
        return tokens // 128 * 128 if tokens >= 1024 else 0

    def quota_body(self) -> dict[str, Any]:
        """The error of an account whose quota is used up."""
        raise NotImplementedError

    def _next_reply(self, messages: list[dict[str, Any]]) -> str:
        with self._lock:
            if self._responder is not None:
                text = self._responder(messages)
            else:
                assert self._replies is not None
                if self._index >= len(self._replies):
                    raise LookupError(
                        f"{type(self).__name__} ran out of replies after {self._index}"
                    )
                text = self._replies[self._index]
            self._index += 1
        return text

    @staticmethod
    def error_body(status: int, message: str) -> dict[str, Any]:
        """The JSON of an error reply."""
        raise NotImplementedError

    def _key_of(self, handler: BaseHTTPRequestHandler) -> str:
        raise NotImplementedError

    def reply_body(self, body: dict[str, Any], text: str, prompt_text: str) -> dict[str, Any]:
        """The JSON of a successful reply."""
        raise NotImplementedError


class ScriptedOpenAIServer(_ScriptedServer):
    """OpenAI chat completions (`POST /v1/chat/completions`) with scripted replies."""

    path = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        """The URL to give `openai.OpenAI(base_url=...)`; it ends in /v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ScriptedOpenAIServer:
        super().__enter__()
        return self

    @staticmethod
    def error_body(status: int, message: str) -> dict[str, Any]:
        """An OpenAI-style error object."""
        kinds = {401: "invalid_request_error", 429: "rate_limit_exceeded"}
        kind = kinds.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}

    def _key_of(self, handler: BaseHTTPRequestHandler) -> str:
        return (handler.headers.get("Authorization") or "").removeprefix("Bearer ").strip()

    def quota_body(self) -> dict[str, Any]:
        """OpenAI's 429 for an account out of credit."""
        message = "You exceeded your current quota, please check your plan and billing details."
        return {"error": {"message": message, "type": "insufficient_quota", "param": None,
                          "code": "insufficient_quota"}}

    def reply_body(self, body: dict[str, Any], text: str, prompt_text: str) -> dict[str, Any]:
        """A chat.completion object."""
        reply: dict[str, Any] = {
            "id": f"chatcmpl-{self._index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self._content(text)},
                    "finish_reason": "stop",
                }
            ],
        }
        if self.usage:
            prompt, completion = _estimate_tokens(prompt_text), _estimate_tokens(text)
            reply["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            if self.prefix_cache:
                cached = min(prompt, self.cached_tokens(prompt_text))
                reply["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}
        return reply


    def _content(self, text: str) -> str | None:
        with self._lock:
            if self.null_replies > 0:
                self.null_replies -= 1
                return None
        return text


class ScriptedAnthropicServer(_ScriptedServer):
    """Anthropic Messages API (`POST /v1/messages`) with scripted replies.

    `.base_url` has no /v1: the anthropic SDK adds it.
    """

    path = "/v1/messages"

    @property
    def base_url(self) -> str:
        """The URL to give `anthropic.Anthropic(base_url=...)`."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ScriptedAnthropicServer:
        super().__enter__()
        return self

    @staticmethod
    def error_body(status: int, message: str) -> dict[str, Any]:
        """An Anthropic-style error object."""
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            404: "not_found_error",
            429: "rate_limit_error",
            529: "overloaded_error",
        }.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def quota_body(self) -> dict[str, Any]:
        """Anthropic's error for an account out of credit."""
        return self.error_body(
            400, "Your credit balance is too low to access the Anthropic API."
        )

    def _key_of(self, handler: BaseHTTPRequestHandler) -> str:
        # The SDK sends `x-api-key`, or `Authorization: Bearer` in newer versions.
        bearer = (handler.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        return (handler.headers.get("x-api-key") or bearer).strip()

    def reply_body(self, body: dict[str, Any], text: str, prompt_text: str) -> dict[str, Any]:
        """A Messages API `message` object."""
        reply: dict[str, Any] = {
            "id": f"msg_{self._index}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model") or self.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
        }
        # The Messages API always reports usage; `usage=False` still sends zeros.
        prompt, completion = _estimate_tokens(prompt_text), _estimate_tokens(text)
        if not self.usage:
            prompt = completion = 0
        cached = min(prompt, self.cached_tokens(prompt_text))
        # input_tokens excludes the cache: what was read, and what was written (the rest
        # of a marked prefix; here, the whole prompt when it carries a breakpoint).
        marked = "cache_control" in json.dumps(body)
        written = prompt - cached if marked and self.prefix_cache else 0
        reply["usage"] = {"input_tokens": prompt - cached - written, "output_tokens": completion,
                          "cache_read_input_tokens": cached,
                          "cache_creation_input_tokens": written}
        return reply
