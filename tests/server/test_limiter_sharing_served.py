"""Served runs share each endpoint's adaptive limiter; `serve` takes the concurrency options."""

from __future__ import annotations

from pathlib import Path

import openai
from click.testing import CliRunner

from fathom import trace
from fathom.server.cli import serve, server_config
from fathom.server.config import ServerConfig
from fathom.trace import ConcurrencyEvent
from tests.server.conftest import scripted, serving


def test_a_served_run_joins_the_limiter_the_runs_before_it_used(tmp_path: Path) -> None:
    config = ServerConfig(model=scripted(), trace_dir=tmp_path,
                          rlm_options={"sandbox": "inprocess"})
    with serving(config) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=60)
        for _ in range(2):
            client.chat.completions.create(
                model="fathom", messages=[{"role": "user", "content": "What is the code?"}],
                extra_body={"context": "the code is 7"})
    traces = list(tmp_path.glob("*.jsonl"))
    assert len(traces) == 2
    firsts = [next(e for e in trace.read(path) if isinstance(e, ConcurrencyEvent))
              for path in traces]
    assert sorted(e.reason for e in firsts) == ["shared", "start"]  # one limiter, in one loop
    assert {e.endpoint for e in firsts} == {"scripted"}


def test_serve_passes_the_concurrency_options_to_every_run() -> None:
    assert "--max-concurrency-cap" in CliRunner().invoke(serve, ["--help"]).output
    ctx = serve.make_context("serve", ["--max-concurrency", "5", "--max-concurrency-cap", "9"])
    options = {k: v for k, v in ctx.params.items()
               if k not in ("host", "port", "api_key", "max_body", "grace")}
    config = server_config(options)
    assert config.rlm_options["max_concurrency"] == 5
    assert config.rlm_options["max_concurrency_cap"] == 9
    bad = CliRunner().invoke(serve, ["--max-concurrency", "fast"])
    assert bad.exit_code == 2 and "neither 'auto'" in bad.output
