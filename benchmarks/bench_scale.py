"""Task generation at scale: time and peak memory of every bench family at 16M tokens.

    python benchmarks/bench_scale.py                       # every family at 16m
    python benchmarks/bench_scale.py --sizes 1m,16m --families niah,codeqa

Each generation runs in a fresh Python process, as a bench run's first task would: the
time includes reading the stdlib corpus (or the code index, for codeqa), and peak RSS is
that process's ru_maxrss, interpreter included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

TARGET_SECONDS = 60.0
TARGET_PEAK_GB = 3.0

_CHILD = """
import json, resource, sys, time
from fathom.bench.tasks import get_family
family = get_family(sys.argv[1])
t0 = time.perf_counter()
task = family.generate(int(sys.argv[2]), int(sys.argv[3]))
seconds = time.perf_counter() - t0
context = task.context
if isinstance(context, dict):
    chars, items = sum(len(k) + len(v) for k, v in context.items()), len(context)
elif isinstance(context, list):
    chars, items = sum(map(len, context)), len(context)
else:
    chars, items = len(context), 1
print(json.dumps({"seconds": seconds, "chars": chars, "items": items, "variant": task.variant,
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def measure(family: str, size: int, seed: int = 0) -> dict[str, Any]:
    """Generate one task in a fresh process; its seconds, peak RSS (GB) and input size."""
    out = subprocess.run([sys.executable, "-c", _CHILD, family, str(size), str(seed)],
                         check=True, capture_output=True, text=True)
    row: dict[str, Any] = json.loads(out.stdout)
    row["peak_gb"] = row.pop("peak_kb") / 2**20
    return row


def main() -> None:
    """Print the table of every family at every size."""
    from fathom.bench.tasks import families, parse_size
    from fathom.lm.pricing import CHARS_PER_TOKEN

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16m", help="comma-separated sizes (default 16m)")
    parser.add_argument("--families", default=",".join(f.name for f in families()))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"| family | size | variant | input (M tokens) | items | seconds | peak RSS (GB) | "
          f"target (<= {TARGET_SECONDS:.0f} s, <= {TARGET_PEAK_GB:.0f} GB) |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    missed = False
    for text in args.sizes.split(","):
        for name in args.families.split(","):
            row = measure(name, parse_size(text), args.seed)
            ok = row["seconds"] <= TARGET_SECONDS and row["peak_gb"] <= TARGET_PEAK_GB
            missed |= not ok
            print(f"| {name} | {text} | {row['variant'] or '-'} | "
                  f"{row['chars'] / CHARS_PER_TOKEN / 1e6:.2f} | {row['items']:,} | "
                  f"{row['seconds']:.1f} | {row['peak_gb']:.2f} | {'ok' if ok else 'MISSED'} |",
                  flush=True)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
