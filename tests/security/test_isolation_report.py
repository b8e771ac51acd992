"""`fathom doctor`'s report: a probe worker started and confined like a real one."""

from __future__ import annotations

import pytest

from fathom.sandbox.isolation import LAYERS, LayerStatus
from fathom.sandbox.isolation.report import report
from tests.conftest import skip_or_fail

from .conftest import BARE_HOST


def test_doctor_report_lists_every_layer() -> None:
    layers = report()
    assert set(LAYERS) <= set(layers)
    assert all(name == layer.name for name, layer in layers.items())
    missing = [layer.text for layer in layers.values() if layer.status is not LayerStatus.ACTIVE]
    if missing:
        skip_or_fail(f"not every layer is active on this host: {missing}")


def test_a_level_this_host_cannot_give_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("fathom.sandbox.isolation.plan.probe_host", lambda: BARE_HOST)
    layers = report("strict")
    assert list(layers) == ["level"]
    assert layers["level"].status is LayerStatus.UNAVAILABLE
    assert "Strict isolation needs layers this host lacks" in layers["level"].detail
