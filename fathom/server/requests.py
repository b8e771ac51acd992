"""A chat-completions body, checked and turned into what a run needs: query, context, budget."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fathom.budget import Budget
from fathom.errors import ConfigError
from fathom.server.errors import bad_request

BUDGET_FIELDS = ("usd", "tokens", "seconds", "calls")


@dataclass(frozen=True)
class ChatRequest:
    """What one request asks: the query, where its context comes from, and its limits.

    Exactly one of `context` (a value as `RLM.run` takes) and `context_paths` is set.
    """

    query: str
    context: Any
    context_paths: tuple[str, ...] | None
    stream: bool
    model: str
    max_tokens: int | None
    budget: dict[str, float]


def parse_body(raw: bytes) -> ChatRequest:
    """Parse and check a POST /v1/chat/completions body; APIError 400 says what is wrong."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"The request body is not valid JSON ({exc}); send a JSON "
                          "object with `messages`.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object with `messages`.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("`messages` is missing or empty: send a list of chat messages "
                          "ending with the user's question.", "messages")
    texts = [_message_text(m, n) for n, m in enumerate(messages)]
    users = [n for n, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        raise bad_request("No message has role `user`: the last user message is the question.",
                          "messages")
    last = users[-1]
    query = texts[last].strip()
    if not query:
        raise bad_request("The last user message is empty: put the question in it.", "messages")
    context, paths = _context_of(body, texts, last)
    return ChatRequest(
        query=query, context=context, context_paths=paths, stream=_flag(body, "stream"),
        model=str(body.get("model") or "fathom"), max_tokens=_max_tokens(body),
        budget=_budget(body.get("budget")),
    )


def _message_text(message: Any, n: int) -> str:
    """A message's text: `content` as a string, or its text parts."""
    param = f"messages[{n}]"
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise bad_request(f"{param} must be an object with `role` and `content`.", param)
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts):
            return "".join(parts)  # type: ignore[arg-type]
    raise bad_request(f"{param}.content must be a string or a list of text parts.",
                      f"{param}.content")


def _context_of(body: dict[str, Any], texts: list[str],
                last: int) -> tuple[Any, tuple[str, ...] | None]:
    """`context`, else `context_paths`, else the earlier messages' text (joined)."""
    if body.get("context") is not None:
        context = body["context"]
        if not isinstance(context, str | list | dict):
            raise bad_request("`context` must be a string, a list or an object.", "context")
        return context, None
    paths = body.get("context_paths")
    if paths is not None:
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not paths or not all(
                isinstance(p, str) and p for p in paths):
            raise bad_request("`context_paths` must be a non-empty list of paths or globs.",
                              "context_paths")
        return None, tuple(paths)
    earlier = "\n\n".join(t for n, t in enumerate(texts) if n != last and t.strip())
    if not earlier:
        raise bad_request("No context: send `context` (extra body field), `context_paths`, or "
                          "the text to read as earlier messages.", "context")
    return earlier, None


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool) and value is not None:
        raise bad_request(f"`{name}` must be true or false.", name)
    return bool(value)


def _max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad_request(f"`{name}` must be a whole number of at least 1.", name)
        return value
    return None


def _budget(value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - set(BUDGET_FIELDS):
        raise bad_request(f"`budget` must be an object with some of {', '.join(BUDGET_FIELDS)}.",
                          "budget")
    for name, limit in value.items():
        if not isinstance(limit, int | float) or isinstance(limit, bool) or limit < 0:
            raise bad_request(f"`budget.{name}` must be a number >= 0.", f"budget.{name}")
    return {k: v for k, v in value.items() if v is not None}


def run_budget(operator: Budget, request: ChatRequest) -> Budget:
    """The operator's budget, lowered (never raised) by the request's `budget` and `max_tokens`."""
    asked: dict[str, float] = dict(request.budget)
    if request.max_tokens is not None:
        asked["tokens"] = min(asked.get("tokens", request.max_tokens), request.max_tokens)
    limits: dict[str, Any] = {}
    for name in BUDGET_FIELDS:
        mine, theirs = getattr(operator, name), asked.get(name)
        limits[name] = theirs if mine is None else mine if theirs is None else min(mine, theirs)
    for name in ("tokens", "calls"):
        if limits[name] is not None:
            limits[name] = int(limits[name])
    try:
        return Budget(**limits)
    except ConfigError as exc:
        raise bad_request(str(exc), "budget") from None
