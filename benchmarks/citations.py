"""Citations and typed answers benchmark: what cite() and schema checks cost in the parent.

    python benchmarks/citations.py

cite() spans are checked and read in the parent, which holds the Context: an in-memory value
is read where it is, a file-backed one is decoded one item (file) at a time, the last one kept.
Each case runs in a fresh Python process, so its peak RSS is the case's own; the files are
freshly written, so they are in the page cache (this measures fathom, not the disk).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET_FIRST_S = 1.0  # first cite into a 100 MB file (decodes it)
TARGET_NEXT_MS = 1.0  # a later cite into the same item
# Validating a 1,000-item answer: it runs on the run's event loop once per FINAL.
TARGET_CHECK_MS = 100.0

_CITE = """
import json, random, sys, time
from fathom.answers import Citer
from fathom.context import Context
def rss_mb():  # resident now (not the peak: a file scan's mmap pages are gone by then)
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
kind, path = sys.argv[1], sys.argv[2]
if kind == "memory":
    ctx = Context(open(path).read())
else:
    ctx = Context.from_path(path)
loaded = rss_mb()
keys = ctx.metadata().keys if ctx.kind == "dict" else (None,)
citer = Citer(ctx)
t0 = time.perf_counter()
citer.cite(10, 80, keys[0])
first = time.perf_counter() - t0
rng = random.Random(7)
t0 = time.perf_counter()
for _ in range(100):
    start = rng.randrange(0, 90_000)
    citer.cite(start, start + 200, keys[0])
later = (time.perf_counter() - t0) / 100
t0 = time.perf_counter()
for key in keys[1:11]:
    citer.cite(10, 80, key)
other = (time.perf_counter() - t0) / len(keys[1:11]) * 1e3 if keys[1:11] else None
print(json.dumps({"first_s": first, "later_ms": later * 1e3, "other_ms": other,
                  "cite_mb": rss_mb() - loaded}))
"""


def _text(size: int) -> str:
    line = "Marta moved to Lisbon in May; the letters say so twice. 0123456789\n"
    return line * (size // len(line))


def _case(kind: str, path: Path) -> dict[str, float | None]:
    out = subprocess.run([sys.executable, "-c", _CITE, kind, str(path)], capture_output=True,
                         text=True, check=True)
    result: dict[str, float | None] = json.loads(out.stdout)
    return result


def _num(value: float | None) -> float:
    return 0.0 if value is None else value


def _check_ms() -> tuple[float, float]:
    """Validating a 1,000-item answer with a pydantic model and with a JSON-schema dict."""
    import time

    from pydantic import BaseModel

    from fathom.answers import AnswerSchema

    class Row(BaseModel):
        name: str
        year: int

    class Rows(BaseModel):
        rows: list[Row]

    answer = json.dumps({"rows": [{"name": f"n{i}", "year": 2000 + i % 20} for i in range(1000)]})
    timings = []
    for schema in (AnswerSchema(Rows), AnswerSchema(Rows.model_json_schema())):
        schema.check(answer)  # warm up
        t0 = time.perf_counter()
        for _ in range(10):
            assert schema.check(answer).ok
        timings.append((time.perf_counter() - t0) / 10 * 1e3)
    return timings[0], timings[1]


def main() -> None:
    """Print the table."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        big = root / "big.txt"
        big.write_text(_text(100 * 2**20))
        folder = root / "repo"
        folder.mkdir()
        for i in range(1000):
            (folder / f"file{i:04}.txt").write_text(_text(100 * 2**10))
        rows = [("100 MB file (str)", _case("file", big)),
                ("100 MB str in memory", _case("memory", big)),
                ("1,000 files of 100 KB (dict)", _case("file", folder))]
    print("| context | first cite | later cite, same item | cite into another item "
          "| parent memory for citing |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        other = "-" if r["other_ms"] is None else f"{r['other_ms']:.2f} ms"
        print(f"| {name} | {_num(r['first_s']) * 1e3:,.1f} ms | {_num(r['later_ms']):.3f} ms "
              f"| {other} | {max(0.0, _num(r['cite_mb'])):,.0f} MB |")
    pydantic_ms, jsonschema_ms = _check_ms()
    print()
    print("| schema check of a 1,000-item answer | time |")
    print("|---|---|")
    print(f"| pydantic model | {pydantic_ms:.1f} ms |")
    print(f"| JSON-schema dict (jsonschema) | {jsonschema_ms:.1f} ms |")
    worst_first = _num(rows[0][1]["first_s"])
    worst_next = max(_num(r["later_ms"]) for _, r in rows)
    ok = (worst_first <= TARGET_FIRST_S and worst_next <= TARGET_NEXT_MS
          and max(pydantic_ms, jsonschema_ms) <= TARGET_CHECK_MS)
    print(f"\ntargets: first cite into 100 MB <= {TARGET_FIRST_S} s, later cites <= "
          f"{TARGET_NEXT_MS} ms, a 1,000-item check <= {TARGET_CHECK_MS:.0f} ms: "
          f"{'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
