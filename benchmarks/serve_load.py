"""Load on `fathom serve`'s app: 200 requests, 32 at a time, a scripted model with 50 ms latency.

    python benchmarks/serve_load.py                      # the three scenarios below
    python benchmarks/serve_load.py --requests 50        # quicker

Each scenario starts a fresh server process (uvicorn, the real app, the subprocess sandbox:
one worker per run) whose root model is a ScriptedLM answering after 50 ms; every run takes
two root turns and runs one code block. A scenario prints p50/p99 latency, errors (anything
but 200 and 429), 429s, and the server's RSS before the load and after it (target: growth
under 50 MB, no worker process left). `--max-runs 4 --max-queue 0` exceeds the cap on
purpose: the 429s are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

TARGET_RSS_GROWTH_MB = 50.0

_SERVER = """
import json, sys
import uvicorn
from fathom.lm import ScriptedLM
from fathom.server.app import create_app
from fathom.server.config import ServerConfig

FIND = "```repl\\nanswer = str(len(context))\\nprint(answer)\\n```"

def respond(messages):
    return "FINAL_VAR(answer)" if any(m["role"] == "assistant" for m in messages) else FIND

settings = json.loads(sys.argv[1])
config = ServerConfig(model=ScriptedLM(respond, latency=0.05), max_runs=settings["max_runs"],
                      max_queue=settings["max_queue"])
uvicorn.run(create_app(config), host="127.0.0.1", port=settings["port"], log_level="error",
            access_log=False)
"""


def rss_mb(pid: int) -> float:
    """Resident memory of `pid`, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def workers_of(pid: int) -> int:
    """Sandbox workers `pid` has alive."""
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        fields = stat.rpartition(")")[2].split()
        count += fields[0] != "Z" and int(fields[1]) == pid and b"fathom.sandbox.worker" in cmd
    return count


async def load(base: str, requests: int, concurrency: int) -> tuple[list[float], dict[int, int]]:
    """Send `requests` requests, `concurrency` at a time: latencies of 200s, count by status."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    body = {"model": "fathom", "messages": [{"role": "user", "content": "How long is it?"}],
            "context": "a line of the context\n" * 100}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        async def one() -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/chat/completions", json=body)
                    status = response.status_code
                    if status == 200 and response.json()["choices"][0]["message"][
                            "content"] != "2200":
                        status = 0  # a wrong answer is an error too
                except httpx.HTTPError:
                    status = -1
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(one() for _ in range(requests)))
    return latencies, statuses


def scenario(max_runs: int, max_queue: int, requests: int, concurrency: int) -> dict[str, Any]:
    """Run one server with these limits under the load; what it measured."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = json.dumps({"port": port, "max_runs": max_runs, "max_queue": max_queue})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, settings], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        asyncio.run(load(base, 4, 4))  # warm up: first imports, first workers
        before = rss_mb(proc.pid)
        started = time.perf_counter()
        latencies, statuses = asyncio.run(load(base, requests, concurrency))
        wall = time.perf_counter() - started
        time.sleep(0.5)  # the last runs' sandboxes close after their replies
        after = rss_mb(proc.pid)
        left = workers_of(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    latencies.sort()
    errors = sum(n for status, n in statuses.items() if status not in (200, 429))
    return {
        "limits": f"--max-runs {max_runs} --max-queue {max_queue}",
        "ok": statuses.get(200, 0), "errors": errors, "429": statuses.get(429, 0),
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies else float("nan"),
        "wall": wall, "rss_before": before, "rss_after": after, "workers_left": left,
    }


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    rows = [scenario(32, 0, args.requests, args.concurrency),
            scenario(4, 32, args.requests, args.concurrency),
            scenario(4, 0, args.requests, args.concurrency)]
    print(f"{args.requests} requests, {args.concurrency} concurrent, model latency 50 ms, "
          "subprocess sandbox")
    print("| server limits | 200 | errors | 429 | p50 (s) | p99 (s) | wall (s) | RSS before "
          "(MB) | RSS after (MB) | workers left |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['limits']} | {r['ok']} | {r['errors']} | {r['429']} | {r['p50']:.2f} | "
              f"{r['p99']:.2f} | {r['wall']:.1f} | {r['rss_before']:.0f} | "
              f"{r['rss_after']:.0f} | {r['workers_left']} |")
    growth = max(r["rss_after"] - r["rss_before"] for r in rows)
    print(f"\nlargest RSS growth {growth:.1f} MB (target < {TARGET_RSS_GROWTH_MB:.0f}); "
          f"errors {sum(r['errors'] for r in rows)} (target 0); workers left "
          f"{sum(r['workers_left'] for r in rows)} (target 0)")


if __name__ == "__main__":
    main()
