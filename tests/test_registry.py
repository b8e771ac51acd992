"""Registry: named factories, built-ins imported on first use and kept."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from fathom.registry import Registry

Factory = Callable[..., object]


def test_a_builtin_is_imported_on_first_get_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    registry = Registry[Factory]({"hls": "colorsys:rgb_to_hls"})
    assert "colorsys" not in sys.modules  # nothing imported until asked for
    factory = registry.get("hls")
    assert "colorsys" in sys.modules
    assert factory(1.0, 0.0, 0.0) == (0.0, 0.5, 1.0)
    monkeypatch.delitem(sys.modules, "colorsys")
    assert registry.get("hls") is factory  # kept: not looked up again
    assert "colorsys" not in sys.modules


def test_registered_factories_replace_and_add() -> None:
    registry = Registry[Factory]({"a": "colorsys:rgb_to_hls"})
    registry.register("b", dict)
    registry.register("a", list)
    assert registry.names() == ["a", "b"]
    assert registry.get("a") is list and registry.get("b") is dict


def test_unknown_name_is_a_key_error_naming_the_known_ones() -> None:
    registry = Registry[Factory]({"b": "colorsys:rgb_to_hls", "a": "colorsys:hls_to_rgb"})
    with pytest.raises(KeyError, match=r"'c'.*known: a, b"):
        registry.get("c")


def test_a_builtin_that_cannot_be_imported_raises_import_error() -> None:
    registry = Registry[Factory]({"gone": "fathom_no_such_module:factory"})
    with pytest.raises(ImportError):
        registry.get("gone")
    assert registry.names() == ["gone"]  # still listed; a later get tries again
