"""What `fathom bench run` itself costs: time per row outside the model, Ray's overhead, resume.

    python benchmarks/bench_runner.py            # all cases
    python benchmarks/bench_runner.py --no-ray   # skip the Ray case (Ray startup dominates it)

Rows use zero-latency models (a scripted one for `direct`, the oracle policy for the RLM
methods), so the time is fathom's: task generation, the method's machinery (prompt
building, BM25, sandbox start and REPL code), scoring, the trace and the results file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fathom.bench import runner
from fathom.bench.executors import LocalExecutor, RayExecutor
from fathom.bench.methods import Limits
from fathom.bench.models import SpecModels
from fathom.bench.results import RESULTS, ResultsFile, latest_rows
from fathom.lm import ScriptedLM
from fathom.lm.base import LM

TARGET_OVERHEAD_S = 1.0  # per row, outside the model, at 32k tokens
TARGET_RESUME_S = 2.0  # reading 100,000 rows to find what is done


@dataclass(frozen=True)
class Echo:
    """Zero-latency models that answer at once (this module is sent to Ray by value)."""

    name: str = "echo"
    sub_name: str = "echo"

    def build(self, family: str, seed: int) -> tuple[LM, LM]:
        lm = ScriptedLM(lambda messages: "FINAL(0)", name="echo")
        return lm, lm


def timed_run(plan: runner.Plan, executor: runner.Executor, concurrency: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        state = runner.run(plan, Path(out), executor, concurrency=concurrency)
        return state.done, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    families = "niah,oolong,multihop,codeqa"
    rows: list[tuple[str, str, str]] = []
    cases = [
        ("direct, bm25, summarize (scripted)", "direct,bm25,summarize", Echo(), "subprocess"),
        ("repl, rlm (oracle), subprocess sandbox", "repl,rlm", SpecModels("oracle"), "subprocess"),
        ("repl, rlm (oracle), inprocess sandbox", "repl,rlm", SpecModels("oracle"), "inprocess"),
    ]
    for label, methods, models, sandbox in cases:
        plan = runner.Plan.parse(families, "32k", args.seeds, methods, models,
                                 Limits(sandbox=sandbox))
        done, seconds = timed_run(plan, LocalExecutor(), 1)
        per_row = seconds / done
        verdict = "ok" if per_row <= TARGET_OVERHEAD_S else "MISSED"
        rows.append((f"local, {label}: {done} rows at 32k", f"{per_row:.2f} s/row",
                     f"<= {TARGET_OVERHEAD_S:.0f} s/row: {verdict}"))
    if not args.no_ray:
        plan = runner.Plan.parse(families, "32k", args.seeds, "repl,rlm", SpecModels("oracle"),
                                 Limits(sandbox="subprocess"))
        start = time.perf_counter()
        executor = RayExecutor(num_cpus=2)
        started = time.perf_counter() - start
        done, seconds = timed_run(plan, executor, 2)
        rows.append(("ray.init(num_cpus=2), local cluster", f"{started:.1f} s", "once per run"))
        rows.append((f"ray, repl, rlm (oracle), 2 at a time: {done} rows", f"{seconds / done:.2f} "
                     "s/row", "includes each worker's first import of fathom"))
    with tempfile.TemporaryDirectory() as out:
        results = ResultsFile(Path(out))
        row = {"task": "niah", "size": 32000, "seed": 0, "method": "rlm", "model": "m",
               "sub_model": "m", "score": 1.0, "answer": "x" * 200, "expected": ["1234567"],
               "usd": 0.01, "seconds": 1.0, "stop_reason": "final", "trace": "traces/t.jsonl"}
        with (Path(out) / RESULTS).open("w") as handle:  # written in bulk: appends are synced
            for seed in range(100_000):
                handle.write(json.dumps({**row, "seed": seed}) + "\n")
        start = time.perf_counter()
        done_rows = latest_rows(results.path)
        seconds = time.perf_counter() - start
        verdict = "ok" if seconds <= TARGET_RESUME_S else "MISSED"
        rows.append((f"resume: read {len(done_rows):,} done rows", f"{seconds:.2f} s",
                     f"<= {TARGET_RESUME_S:.0f} s: {verdict}"))
        start = time.perf_counter()
        for seed in range(200):
            results.append({**row, "seed": 100_000 + seed})
        append_ms = (time.perf_counter() - start) / 200 * 1000
        rows.append(("append one row (one write, fsync)", f"{append_ms:.2f} ms", ""))
    width = max(len(r[0]) for r in rows)
    print(f"| {'case':<{width}} | result | target |")
    print(f"|{'-' * (width + 2)}|---:|---|")
    for case, result, target in rows:
        print(f"| {case:<{width}} | {result} | {target} |")


if __name__ == "__main__":
    main()
