"""A REPL's variables taken out and put back (fathom.sandbox.state), and their channel form."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from fathom.sandbox.repl import REPL_MODULE, Repl
from fathom.sandbox.state import Assembler, Kind, Variables, put, take, to_messages


def test_take_then_put_rebuilds_variables_in_a_new_repl(
    bridge: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in the worker, the REPL is registered as a module (undone after the test).
    monkeypatch.setitem(sys.modules, REPL_MODULE, sys.modules.get(REPL_MODULE))
    old = Repl("the context", bridge, register=True)
    old.execute(
        "import json\n"
        "counts = {'a': 1}\n"
        "def size():\n    return len(context)\n"
        "class Box:\n    pass\n"
        "double = lambda n: 2 * n\n"
        "import threading\nlock = threading.Lock()\n"
        "history = ['kept by the session itself']\n"
    )
    taken = take(old, frozenset({"history"}))
    assert {name: kind for name, (kind, _) in taken.saved.items()} == {
        "json": Kind.MODULE, "counts": Kind.PICKLE, "size": Kind.SOURCE, "Box": Kind.SOURCE,
        "double": Kind.PICKLE, "threading": Kind.MODULE,
    }
    assert list(taken.lost) == ["lock"] and "pickle" in taken.lost["lock"]

    new = Repl("the context", bridge, register=True)
    restored, lost = put(new, taken)
    assert restored == sorted(taken.saved) and list(lost) == ["lock"]
    out = new.execute("print(counts, size(), double(4), json.dumps(1), Box.__name__)")
    assert out.stdout == "{'a': 1} 11 8 1 Box\n"


def test_what_fails_to_rebuild_is_lost_with_why(bridge: Any) -> None:
    repl = Repl("c", bridge)
    broken = Variables(saved={"gone": (Kind.MODULE, "no_such_module_here"),
                              "bad": (Kind.PICKLE, b"not a pickle")})
    restored, lost = put(repl, broken)
    assert restored == [] and set(lost) == {"gone", "bad"}
    assert "ModuleNotFoundError" in lost["gone"]


def test_variables_cross_the_channel_in_chunks() -> None:
    sent = Variables(saved={"blob": (Kind.PICKLE, bytes(range(256)) * 40),
                            "f": (Kind.SOURCE, "def f():\n    return 'é'\n"),
                            "empty": (Kind.PICKLE, b"")})
    messages = list(to_messages(sent, 7, chunk=1000))
    assert len([m for m in messages if m["name"] == "blob"]) == 11
    assembler = Assembler()
    for message in messages:
        assembler.add(message)
    assert assembler.variables.saved == sent.saved


@pytest.mark.parametrize("message", [
    {"op": "var", "name": 3, "kind": "pickle", "data": ""},
    {"op": "var", "name": "x", "kind": "exec", "data": ""},
    {"op": "var", "name": "x", "kind": "pickle", "data": "not base64!"},
])
def test_a_malformed_var_message_is_refused(message: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Assembler().add(message)


def test_what_a_save_collects_is_bounded() -> None:
    assembler = Assembler(limit=1500)
    messages = list(to_messages(Variables(saved={"big": (Kind.PICKLE, b"x" * 2000)}), 1, 1000))
    assembler.add(messages[0])
    with pytest.raises(ValueError, match="more than a session saves"):
        assembler.add(messages[1])
