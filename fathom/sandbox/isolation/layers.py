"""Protection layers as values, and the text form they take in traces and on the channel.

The text form is `{"name": "active" | "active (how)" | "off" | "unavailable: why"}`: what
`RunStart.isolation` records and what a worker reports. `layers_to_text` and
`layers_from_text` are the only places that convert between the two.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

# A sandbox's disk quota (its scratch tmpfs), and what the files of a run tree's child
# contexts may take on the host disk together.
DISK_QUOTA_MB = 1024

# Every layer a plan lists, in the order `fathom doctor` shows them.
LAYERS = (
    "environment",
    "memory_limit",
    "memory_cgroup",
    "cpu_limit",
    "open_files_limit",
    "file_size_limit",
    "disk_quota",
    "process_limit",
    "network",
    "ipc",
    "read_access",
    "write_access",
    "privileges",
    "no_new_privs",
    "syscall_filter",
)


class LayerStatus(enum.Enum):
    ACTIVE = "active"
    OFF = "off"  # not asked for (isolation "off", or no memory limit)
    UNAVAILABLE = "unavailable"  # asked for, but this host or worker cannot give it


@dataclass(frozen=True)
class Layer:
    """One protection layer; `detail` says how it holds, or why it does not."""

    name: str
    status: LayerStatus
    detail: str = ""

    @classmethod
    def active(cls, name: str, detail: str = "") -> Layer:
        return cls(name, LayerStatus.ACTIVE, detail)

    @classmethod
    def off(cls, name: str) -> Layer:
        return cls(name, LayerStatus.OFF)

    @classmethod
    def unavailable(cls, name: str, why: str) -> Layer:
        return cls(name, LayerStatus.UNAVAILABLE, why)

    @property
    def is_active(self) -> bool:
        return self.status is LayerStatus.ACTIVE

    @property
    def text(self) -> str:
        """The status in text form: "active (how)", "off" or "unavailable: why"."""
        if not self.detail:
            return self.status.value
        if self.status is LayerStatus.UNAVAILABLE:
            return f"{self.status.value}: {self.detail}"
        return f"{self.status.value} ({self.detail})"

    @classmethod
    def parse(cls, name: str, text: str) -> Layer:
        """The layer `text` describes; text of no known form counts as unavailable."""
        for status in LayerStatus:
            word = status.value
            if text == word:
                return cls(name, status)
            if status is LayerStatus.UNAVAILABLE and text.startswith(f"{word}: "):
                return cls(name, status, text[len(word) + 2 :])
            if text.startswith(f"{word} (") and text.endswith(")"):
                return cls(name, status, text[len(word) + 2 : -1])
        return cls(name, LayerStatus.UNAVAILABLE, text)


def layers_to_text(layers: Mapping[str, Layer]) -> dict[str, str]:
    """The text form of `layers` (a trace's `isolation` field, a worker's report)."""
    return {name: layer.text for name, layer in layers.items()}


def layers_from_text(found: Mapping[str, str]) -> dict[str, Layer]:
    """Layers back from their text form (as read from a trace or a worker)."""
    return {name: Layer.parse(name, text) for name, text in found.items()}


def network_layer(netns: bool, seccomp: bool) -> Layer:
    """The network layer given what holds: a network namespace, a socket() filter, both."""
    parts = ["own network namespace"] * netns + ["socket() refused by seccomp"] * seccomp
    if not parts:
        return Layer.unavailable("network", "only an audit hook blocks Python sockets (weak)")
    return Layer.active("network", "; ".join(parts))
