"""Parsing a chat-completions body into query, context and limits."""

from __future__ import annotations

import json

import pytest

from fathom.server.errors import APIError
from fathom.server.requests import parse_body


def body(**fields: object) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "q?"}], **fields}).encode()


def test_the_last_user_message_is_the_query_and_text_parts_are_joined() -> None:
    chat = parse_body(json.dumps({"messages": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "Which "},
                                     {"type": "text", "text": "city?"}]},
    ]}).encode())
    assert chat.query == "Which city?"
    assert chat.context == "first\n\nok"  # the earlier messages, in order


def test_context_comes_before_paths_and_paths_before_messages() -> None:
    assert parse_body(body(context=[1, 2], context_paths=["a"])).context == [1, 2]
    chat = parse_body(body(context_paths="notes/*.md"))
    assert chat.context is None and chat.context_paths == ("notes/*.md",)


def test_limits_and_flags() -> None:
    chat = parse_body(body(context="x", stream=True, max_completion_tokens=50, model="m"))
    assert chat.stream and chat.max_tokens == 50 and chat.model == "m"


@pytest.mark.parametrize("fields", [
    {"context": "x", "stream": "yes"},
    {"context": "x", "max_tokens": 0},
    {"context": "x", "budget": {"dollars": 1}},
    {"context_paths": []},
    {"context_paths": [3]},
])
def test_bad_fields_are_400_naming_the_field(fields: dict[str, object]) -> None:
    with pytest.raises(APIError) as caught:
        parse_body(body(**fields))
    assert caught.value.status == 400 and caught.value.param


def test_a_message_without_a_role_is_named() -> None:
    with pytest.raises(APIError) as caught:
        parse_body(b'{"messages": [{"content": "hi"}]}')
    assert caught.value.param == "messages[0]"
