"""Speed of the embedded model on this machine, and the wall time of `fathom demo`.

Prints a markdown table: prompt processing and generation in tokens per second
(median of a few runs, KV cache cleared before each so no prefix is reused),
the model load time and the demo's wall time. `--no-demo` skips the demo run.

    .venv/bin/python benchmarks/local_model.py [--runs 3] [--no-demo]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time

from fathom.demo import run_demo
from fathom.lm.local import LocalLM

PROMPT_WORDS = 700  # about 1,000 tokens: the size of a first root prompt
GENERATE = 128


def _prompt_speed(llama: object, text: str) -> tuple[float, int]:
    llama.reset()  # type: ignore[attr-defined]
    start = time.perf_counter()
    out = llama.create_completion(text, max_tokens=1, temperature=0)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - start
    tokens = int(out["usage"]["prompt_tokens"])
    return tokens / seconds, tokens


def _generation_speed(llama: object) -> tuple[float, int]:
    llama.reset()  # type: ignore[attr-defined]
    eos = llama.token_eos()  # type: ignore[attr-defined]
    start = time.perf_counter()
    out = llama.create_completion(  # type: ignore[attr-defined]
        "Once upon a time", max_tokens=GENERATE, temperature=0, logit_bias={eos: -1e9}
    )
    seconds = time.perf_counter() - start
    tokens = int(out["usage"]["completion_tokens"])
    return tokens / seconds, tokens


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-demo", action="store_true", help="skip the demo run")
    args = parser.parse_args()

    start = time.perf_counter()
    lm = LocalLM()
    load = time.perf_counter() - start
    llama = lm._loaded.llama  # the benchmark measures llama.cpp itself, without chat framing
    text = " ".join(f"word{i % 97}" for i in range(PROMPT_WORDS))
    prompt_runs = [_prompt_speed(llama, text) for _ in range(args.runs)]
    gen_runs = [_generation_speed(llama) for _ in range(args.runs)]

    rows = [
        ("model", f"{lm.path.name} (window {lm.context_window} tokens)"),
        ("threads", str(os.cpu_count())),
        ("load time", f"{load:.2f} s"),
        (
            f"prompt processing ({prompt_runs[0][1]} tokens)",
            f"{statistics.median(r[0] for r in prompt_runs):,.0f} tokens/s",
        ),
        (
            f"generation ({gen_runs[0][1]} tokens)",
            f"{statistics.median(r[0] for r in gen_runs):,.0f} tokens/s",
        ),
    ]
    if not args.no_demo:
        with tempfile.TemporaryDirectory() as traces:
            start = time.perf_counter()
            result = run_demo(trace_dir=traces, out=io.StringIO())
            wall = time.perf_counter() - start
        rows.append(
            (
                "fathom demo wall time",
                f"{wall:.1f} s ({result.iterations} iterations, stop: {result.stop_reason}, "
                f"{result.total_usage.calls} model calls)",
            )
        )
    print("| embedded model (llama.cpp) | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
