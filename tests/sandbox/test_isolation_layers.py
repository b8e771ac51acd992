"""Layer values and their text form (the trace's `isolation` field, a worker's report)."""

from __future__ import annotations

from fathom.sandbox.isolation import Layer, LayerStatus, layers_from_text, layers_to_text

# As RunStart.isolation records them, in traces old and new.
TRACE_FORM = {
    "environment": "active",
    "memory_limit": "active (4096 MB of address space)",
    "read_access": "active (Landlock ABI 4: Python, fathom, context)",
    "cpu_limit": "off",
    "network": "unavailable: only an audit hook blocks Python sockets (weak)",
    "disk_quota": "unavailable: could not mount a tmpfs over scratch ([Errno 1] refused)",
}


def test_trace_form_reads_as_layers_and_writes_back_unchanged() -> None:
    layers = layers_from_text(TRACE_FORM)
    assert layers["environment"] == Layer("environment", LayerStatus.ACTIVE)
    assert layers["read_access"].detail == "Landlock ABI 4: Python, fathom, context"
    assert layers["cpu_limit"].status is LayerStatus.OFF
    assert layers["disk_quota"] == Layer.unavailable(
        "disk_quota", "could not mount a tmpfs over scratch ([Errno 1] refused)"
    )
    assert layers_to_text(layers) == TRACE_FORM
    assert list(layers_to_text(layers)) == list(TRACE_FORM)  # order kept


def test_text_of_no_known_form_never_counts_as_active() -> None:
    layers = layers_from_text({"process": "activated", "worker": "unknown: probe failed"})
    assert layers["process"] == Layer.unavailable("process", "activated")
    assert layers["worker"].status is LayerStatus.UNAVAILABLE


def test_layer_text() -> None:
    assert Layer.active("network", "own network namespace").text == "active (own network namespace)"
    assert Layer.off("disk_quota").text == "off"
    assert Layer.unavailable("network", "weak").text == "unavailable: weak"
