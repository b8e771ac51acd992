"""The cost of isolation: worker start time and per-execution overhead of each sandbox.

Prints a markdown table for `inprocess`, `subprocess` at isolation "off" and at
"standard" (targets: standard adds <= 50 ms to start and <= 1 ms per execution over
off), then the layers "standard" got on this host, then the time the parent takes to
receive one 1, 10 and 100 MB message from a worker's channel (target: linear in size).

    .venv/bin/python benchmarks/sandbox.py [--starts 10] [--execs 300]
"""

from __future__ import annotations

import argparse
import select
import statistics
import subprocess
import sys
import time
from typing import Any

from fathom import repl_api
from fathom.context import Context
from fathom.repl_api import FunctionSpec
from fathom.sandbox import Sandbox, SandboxOptions
from fathom.sandbox.channel import Channel
from fathom.sandbox.inprocess import InProcessSandbox
from fathom.sandbox.subprocess import SubprocessSandbox


class _NullBridge:
    """No model behind the REPL functions: the benchmark only runs `x = 1`."""

    def functions(self) -> list[FunctionSpec]:
        return [function.spec for function in repl_api.functions()]

    def call(self, name: str, args: dict[str, Any]) -> Any:
        return ""


def _build(kind: str) -> Sandbox:
    if kind == "inprocess":
        return InProcessSandbox(SandboxOptions())
    return SubprocessSandbox(SandboxOptions(isolation=kind))  # type: ignore[arg-type]


def time_start(kind: str, context: Context) -> float:
    """Seconds from start() until the sandbox has run its first block."""
    sandbox = _build(kind)
    began = time.perf_counter()
    sandbox.start(context, _NullBridge())
    sandbox.execute("pass")  # started means able to run code
    seconds = time.perf_counter() - began
    sandbox.close()
    return seconds


def time_execs(kind: str, context: Context, execs: int) -> tuple[float, dict[str, str]]:
    """Median seconds of one `x = 1` block, and the sandbox's isolation layers."""
    sandbox = _build(kind)
    sandbox.start(context, _NullBridge())
    times = []
    for _ in range(execs):
        began = time.perf_counter()
        sandbox.execute("x = 1")
        times.append(time.perf_counter() - began)
    layers = sandbox.isolation()
    sandbox.close()
    return statistics.median(times), layers


# A worker stand-in: writes one call message whose prompt is argv[1] MB, as fast as the pipe takes.
_SENDER = (
    "import sys; size = int(sys.argv[1]) * 2**20; sys.stdout.buffer.write("
    "b'{\"op\":\"call\",\"id\":1,\"fn\":\"llm_query\",\"args\":{\"prompt\":\"' "
    "+ b'x' * size + b'\"}}\\n')"
)


def time_receive(megabytes: int) -> float:
    """Seconds the parent's Channel takes to receive and decode one message of that size,
    from its first byte (the sender is another process, as the worker is)."""
    sender = subprocess.Popen(
        [sys.executable, "-c", _SENDER, str(megabytes)], stdout=subprocess.PIPE
    )
    assert sender.stdout is not None
    channel = Channel(sender.stdout.fileno(), sender.stdout.fileno(),
                      max_bytes=(megabytes + 1) * 2**20)
    select.select([sender.stdout], [], [])  # the clock starts at the first byte, not at launch
    began = time.perf_counter()
    message = channel.recv(timeout=300)
    seconds = time.perf_counter() - began
    assert message is not None and len(message["args"]["prompt"]) == megabytes * 2**20
    sender.wait()
    sender.stdout.close()
    return seconds


def print_channel_table(repeats: int = 3) -> None:
    """Receive time of one message of 1, 10 and 100 MB (median of `repeats`)."""
    print("| message from the worker | receive and decode (ms, median) | ms per MB |")
    print("|---|---:|---:|")
    for megabytes in (1, 10, 100):
        seconds = statistics.median(time_receive(megabytes) for _ in range(repeats))
        print(f"| {megabytes} MB | {seconds * 1000:.1f} | {seconds * 1000 / megabytes:.2f} |")


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10, help="worker starts to time")
    parser.add_argument("--execs", type=int, default=300, help="executions of `x = 1` to time")
    args = parser.parse_args()
    rows = {
        "inprocess": "inprocess",
        "subprocess, isolation off": "off",
        "subprocess, isolation standard": "standard",
    }
    context = Context.from_value("benchmark context " * 1000)
    starts: dict[str, list[float]] = {kind: [] for kind in rows.values()}
    for _ in range(args.starts):  # interleaved, so load from other processes hits all alike
        for kind in rows.values():
            starts[kind].append(time_start(kind, context))
    results: dict[str, tuple[float, float, dict[str, str]]] = {}
    for label, kind in rows.items():
        per_exec, layers = time_execs(kind, context, args.execs)
        results[label] = (statistics.median(starts[kind]) * 1000, per_exec * 1000, layers)
    off_start, off_exec, _ = results["subprocess, isolation off"]
    print("| sandbox | start (ms, median) | per execution of `x = 1` (ms, median) |")
    print("|---|---:|---:|")
    for label, (start, per_exec, _) in results.items():
        print(f"| {label} | {start:.1f} | {per_exec:.3f} |")
    std_start, std_exec, layers = results["subprocess, isolation standard"]
    print(
        f"\nstandard over off: start {std_start - off_start:+.1f} ms (target <= 50), "
        f"per execution {std_exec - off_exec:+.3f} ms (target <= 1)"
    )
    print("\nlayers at standard on this host:")
    for name, value in layers.items():
        print(f"  {name:18} {value}")
    print()
    print_channel_table()


if __name__ == "__main__":
    main()
