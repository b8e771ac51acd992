"""Engine benchmarks: iteration overhead, sub-call fan-out, start time and peak RSS by context size.

Run: .venv/bin/python benchmarks/engine.py [--quick]
Each context-size case runs in a fresh process so peak RSS is its own.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fathom
from fathom.lm import ScriptedLM

TARGETS = {
    "overhead_ms": 5.0,
    "fanout_s": 2.5,
    "start_1gb_s": 5.0,
    "rss_1gb_gb": 2.5,
}


def iteration_overhead(sandbox: str, iterations: int = 200) -> float:
    """Median milliseconds per root iteration with a zero-latency scripted model."""
    stamps: list[float] = []

    def respond(messages: list[dict[str, str]]) -> str:
        stamps.append(time.perf_counter())
        if len(stamps) > iterations:
            return "```repl\nFINAL(x)\n```"
        return "```repl\nx = 1\n```"

    rlm = fathom.RLM(ScriptedLM(respond), sandbox=sandbox, max_iterations=iterations + 5)
    rlm.run("benchmark", "context")
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.median(gaps) * 1000


def fanout(calls: int = 1000, latency: float = 0.1, concurrency: int = 64) -> float:
    """Wall seconds of `calls` llm_query_batched sub-calls with `latency` each."""
    root = ScriptedLM([f"```repl\nr = llm_query_batched(['p'] * {calls})\nFINAL(len(r))\n```"])
    sub = ScriptedLM(lambda m: "a", name="sub", latency=latency)
    seconds: dict[str, float] = {}

    def on_event(event: object) -> None:
        if type(event).__name__ == "ExecEvent":
            seconds["exec"] = event.seconds  # type: ignore[attr-defined]

    result = fathom.RLM(root, sub, sandbox="subprocess", max_concurrency=concurrency,
                        on_event=on_event).run("q", "c")
    assert result.answer == str(calls), result
    return seconds["exec"]


def _write_text(path: Path, size: int) -> None:
    line = "line {}: the quick brown fox jumps over the lazy dog.\n"
    block = "".join(line.format(i) for i in range(4096))
    data = block.encode()
    with path.open("wb") as out:
        written = 0
        while written < size:
            chunk = data[: size - written]
            out.write(chunk)
            written += len(chunk)


_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import fathom
from fathom.lm import ScriptedLM
first = {}
def respond(messages):
    first.setdefault("t", time.perf_counter())
    return "```repl\nFINAL(len(context))\n```"
start = time.perf_counter()
result = fathom.RLM(ScriptedLM(respond), sandbox="subprocess").run("q", Path(sys.argv[1]))
parent_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
worker_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"start": first["t"] - start, "answer": result.answer,
                  "rss_gb": (parent_kb + worker_kb) / 1024 / 1024}))
"""


def context_start(size: int) -> dict[str, float]:
    """Run start time (until the first root call) and peak RSS, parent plus worker."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "context.txt"
        _write_text(path, size)
        out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True,
                             text=True, check=True, env=os.environ.copy())
    data: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 1 GB context")
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    for sandbox in ("inprocess", "subprocess"):
        ms = iteration_overhead(sandbox)
        target = f"<= {TARGETS['overhead_ms']} ms" if sandbox == "subprocess" else ""
        rows.append((f"overhead per root iteration ({sandbox})", f"{ms:.2f} ms", target))
    rows.append(("1,000 sub-calls, 100 ms each, concurrency 64", f"{fanout():.2f} s",
                 f"<= {TARGETS['fanout_s']} s"))
    sizes = [("10 MB", 10 * 2**20), ("100 MB", 100 * 2**20)]
    if not args.quick:
        sizes.append(("1 GB", 2**30))
    for label, size in sizes:
        data = context_start(size)
        big = label == "1 GB"
        rows.append((f"run start, {label} text context", f"{data['start']:.2f} s",
                     f"<= {TARGETS['start_1gb_s']} s" if big else ""))
        rows.append((f"peak RSS parent+worker, {label}", f"{data['rss_gb']:.2f} GB",
                     f"<= {TARGETS['rss_1gb_gb']} GB" if big else ""))
    width = max(len(r[0]) for r in rows)
    print(f"| {'benchmark':<{width}} | {'result':>9} | target |")
    print(f"|{'-' * (width + 2)}|{'-' * 10}:|--------|")
    for name, value, target in rows:
        print(f"| {name:<{width}} | {value:>9} | {target} |")


if __name__ == "__main__":
    main()
