"""Context load benchmark: start time and peak RSS of parent and worker for big text files.

    python benchmarks/context_load.py                 # 10 MB, 100 MB, 1 GB of ASCII text
    python benchmarks/context_load.py --unicode 100M  # text with 2- and 3-byte characters

`measure(size_bytes)` is the function benchmarks/engine.py calls. Each side runs in a fresh
Python process, as in a real run: the parent builds `Context.from_path` + metadata + the
worker spec; the worker runs `load_spec`. Peak RSS is each process's ru_maxrss (VmHWM), so
file pages touched through mmap count. The file is freshly written, so it is in the page
cache: this measures fathom, not the disk.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_START_S = 5.0  # at 1 GB
TARGET_PEAK_MB = 2500.0  # parent + worker, at 1 GB
_BLOCK = 1 << 20
_BLOCKS = 8  # distinct blocks; the file repeats them in a seeded order

_PARENT = """
import json, resource, sys, time
t0 = time.perf_counter()
from fathom.context import Context
from fathom.prompts import describe_context
t1 = time.perf_counter()
ctx = Context.from_path(sys.argv[1])
prompt = describe_context(ctx.metadata())
spec = ctx.worker_spec(sys.argv[2])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "seconds": t2 - t1, "chars": ctx.metadata().total_chars,
                  "prompt_chars": len(prompt), "spec": spec,
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

_WORKER = """
import json, resource, sys, time
t0 = time.perf_counter()
from fathom.context import load_spec
t1 = time.perf_counter()
value = load_spec(json.loads(sys.argv[1]))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "seconds": t2 - t1, "chars": len(value),
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def generate(path: Path, size_bytes: int, *, unicode: bool = False, seed: int = 7) -> None:
    """Write `size_bytes` of seeded line-structured text, repeating a few generated blocks."""
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 10)))
        for _ in range(5000)
    ]
    if unicode:  # accented Latin (2 bytes) and CJK (3 bytes): a UCS-2 str in Python
        vocab += ["café", "naïve", "Zürich", "東京", "日本語", "データ"] * 200
    blocks = []
    for _ in range(_BLOCKS):
        words = rng.choices(vocab, k=_BLOCK // 5)
        lines = (" ".join(words[i : i + 12]) for i in range(0, len(words), 12))
        # "ignore" drops a character cut in two at the block's end
        blocks.append("\n".join(lines).encode()[:_BLOCK].decode("utf-8", "ignore").encode())
    with open(path, "wb") as out:
        written = 0
        while written < size_bytes:
            block = blocks[rng.randrange(_BLOCKS)]
            if written + len(block) > size_bytes:
                block = block[: size_bytes - written].decode("utf-8", "ignore").encode()
                out.write(block)
                break
            out.write(block)
            written += len(block)


def _run(code: str, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def measure(size_bytes: int, *, unicode: bool = False) -> dict[str, Any]:
    """Generate a text file of `size_bytes`, then time and size parent and worker loading it."""
    workdir = Path(tempfile.mkdtemp(prefix="fathom-bench-", dir="/tmp"))
    try:
        path = workdir / "context.txt"
        started = time.perf_counter()
        generate(path, size_bytes, unicode=unicode)
        generate_s = time.perf_counter() - started
        parent = _run(_PARENT, str(path), str(workdir / "scratch"))
        worker = _run(_WORKER, json.dumps(parent["spec"]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if parent["chars"] != worker["chars"]:
        raise RuntimeError(f"metadata: {parent['chars']} chars; worker: {worker['chars']}")
    parent_mb, worker_mb = parent["peak_kb"] / 1024, worker["peak_kb"] / 1024
    return {
        "size_bytes": size_bytes,
        "chars": worker["chars"],
        "generate_seconds": generate_s,
        "parent_seconds": parent["seconds"],
        "parent_import_seconds": parent["import_s"],
        "parent_peak_rss_mb": parent_mb,
        "worker_seconds": worker["seconds"],
        "worker_import_seconds": worker["import_s"],
        "worker_peak_rss_mb": worker_mb,
        "start_seconds": parent["seconds"] + worker["seconds"],
        "peak_rss_mb": parent_mb + worker_mb,
        "prompt_chars": parent["prompt_chars"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of `measure` results."""
    head = ("| size | parent: context + metadata | parent peak RSS | worker: load_spec "
            "| worker peak RSS | start (parent + worker) | peak RSS (sum) |")
    lines = [head, "|" + "---|" * 7]
    for row in rows:
        lines.append(
            f"| {_size(row['size_bytes'])} | {row['parent_seconds']:.2f} s "
            f"| {row['parent_peak_rss_mb']:.0f} MB | {row['worker_seconds']:.2f} s "
            f"| {row['worker_peak_rss_mb']:.0f} MB | {row['start_seconds']:.2f} s "
            f"| {row['peak_rss_mb']:.0f} MB |"
        )
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


def _parse_size(text: str) -> int:
    scales = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    unit = text[-1].upper()
    return int(float(text[:-1]) * scales[unit]) if unit in scales else int(text)


def main() -> None:
    """Print the table for the sizes given (default 10M 100M 1G)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", default=["10M", "100M", "1G"])
    parser.add_argument("--unicode", action="store_true", help="include 2- and 3-byte chars")
    args = parser.parse_args()
    rows = [measure(_parse_size(size), unicode=args.unicode) for size in args.sizes]
    print(table(rows))
    last = rows[-1]
    if last["size_bytes"] >= 1 << 30:
        ok = last["start_seconds"] <= TARGET_START_S and last["peak_rss_mb"] <= TARGET_PEAK_MB
        print(f"\n1 GB targets: start <= {TARGET_START_S:g} s, peak RSS <= {TARGET_PEAK_MB:g} MB:"
              f" {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
