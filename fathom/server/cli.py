"""The `fathom serve` and `fathom mcp` commands: parse options, build the server, run it.

Starlette, uvicorn and the mcp SDK are imported inside the commands, so `fathom ask`
never pays for them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from fathom.budget import Budget
from fathom.errors import FathomError
from fathom.sandbox import sandbox_names
from fathom.server.config import ServerConfig
from fathom.terminal import safe_text

F = TypeVar("F", bound=Callable[..., Any])


class _Concurrency(click.ParamType):
    """--max-concurrency: "auto" or a whole number >= 1."""

    name = "auto|N"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | Literal["auto"]:
        if value == "auto" or isinstance(value, int):
            return value
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            self.fail(f"{value!r} is neither 'auto' nor a whole number >= 1.", param, ctx)
        return number


def concurrency_options(command: F) -> F:
    """--max-concurrency and --max-concurrency-cap, of `ask`, `chat`, `serve` and `mcp`.

    Here rather than in fathom.cli, which imports this module (not the other way round).
    """
    command = click.option(
        "--max-concurrency-cap", type=click.IntRange(min=1), default=512, show_default=True,
        help="The most calls in flight that 'auto' may grow to.")(command)
    return click.option(
        "--max-concurrency", type=_Concurrency(), default="auto", show_default=True,
        help="Model calls in flight at once per model endpoint: 'auto' finds the provider's "
             "limit as it goes, one limit for all the runs of the process at once; a number "
             "fixes it for each run (and its children).")(command)


def run_options(command: F) -> F:
    """The options `serve` and `mcp` share: models, run limits, readable folders, traces."""
    options = [
        click.option("-m", "--model", default=None, metavar="SPEC",
                     help="Root model spec, e.g. openai:gpt-5-mini (default: $FATHOM_MODEL "
                          "or auto)."),
        click.option("--sub-model", default=None, metavar="SPEC",
                     help="Model for llm_query sub-calls (default: the root model)."),
        click.option("--sandbox", type=click.Choice(sandbox_names()), default="subprocess",
                     show_default=True, help="Where the REPL code of each run runs."),
        click.option("--max-iterations", type=click.IntRange(min=1), default=30,
                     show_default=True, help="Root iterations before a run must answer."),
        click.option("--max-depth", type=click.IntRange(min=0), default=1, show_default=True,
                     help="How deep rlm_query may recurse."),
        click.option("--max-usd", type=click.FloatRange(min=0), default=None,
                     help="Dollars one run may spend; requests can only lower it."),
        click.option("--max-seconds", type=click.FloatRange(min=0), default=None,
                     help="Seconds one run may take; requests can only lower it."),
        click.option("--max-tokens", type=click.IntRange(min=0), default=None,
                     help="Tokens one run may use; requests can only lower it."),
        click.option("--price", "prices", multiple=True, metavar="MODEL=IN,OUT",
                     help="USD per million input and output tokens of MODEL, for --max-usd "
                          "(repeatable), e.g. --price openai:my-model=0.25,2.00."),
        concurrency_options,
        click.option("--max-runs", type=click.IntRange(min=1), default=4, show_default=True,
                     help="Runs in progress at once."),
        click.option("--max-queue", type=click.IntRange(min=0), default=16, show_default=True,
                     help="Requests waiting for a run slot; beyond, 429 with Retry-After."),
        click.option("--allow-dir", "allow_dirs", multiple=True,
                     type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="A directory whose files requests may read as context "
                          "(repeatable); nothing else can be read."),
        click.option("--trace-dir", type=click.Path(file_okay=False, path_type=Path),
                     default=None, help="Write each run's trace (JSONL) in this directory."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def server_config(options: dict[str, Any], **extra: Any) -> ServerConfig:
    """The ServerConfig of the shared options (and `extra` fields); sets --price.

    Checked here, once, what every run would otherwise find (or warn about) on its own:
    a --max-usd that cannot see a model's price, a bad option for RLM.
    """
    import fathom
    from fathom.lm import default_model, pricing
    from fathom.rlm import unpriced_models

    for value in options["prices"]:
        try:
            model, inp, out = pricing.parse_price(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--price") from None
        pricing.set_price(model, inp, out)
    if options["max_usd"] is not None:
        root = options["model"] or default_model()
        unpriced = unpriced_models([root, options["sub_model"] or root])
        if unpriced:
            raise FathomError(
                f"--max-usd cannot limit {' and '.join(unpriced)}: fathom does not know its "
                f"price, so its calls would count as $0. Give it with --price MODEL=IN,OUT, or "
                "use --max-tokens instead.")
    budget = Budget(usd=options["max_usd"], seconds=options["max_seconds"],
                    tokens=options["max_tokens"])
    config = ServerConfig(
        model=options["model"], sub_model=options["sub_model"], budget=budget,
        max_runs=options["max_runs"], max_queue=options["max_queue"],
        allow_dirs=tuple(options["allow_dirs"]), trace_dir=options["trace_dir"],
        rlm_options={"sandbox": options["sandbox"], "max_iterations": options["max_iterations"],
                     "max_depth": options["max_depth"],
                     "max_concurrency": options["max_concurrency"],
                     "max_concurrency_cap": options["max_concurrency_cap"]},
        **extra,
    )
    fathom.RLM(model=config.model, sub_model=config.sub_model, budget=config.budget,
               **config.rlm_options)
    return config


def _fail(message: str) -> None:
    click.echo(f"fathom: error: {safe_text(message)}", err=True)
    sys.exit(2)


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("fathom.server")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@click.command()
@run_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on.")
@click.option("--api-key", envvar="FATHOM_SERVER_API_KEY", default=None, metavar="KEY",
              help="Require `Authorization: Bearer KEY` (also $FATHOM_SERVER_API_KEY).")
@click.option("--max-body", type=click.FloatRange(min=0, min_open=True), default=64,
              show_default=True, metavar="MB", help="Largest request body, in MB (else 413).")
@click.option("--grace", type=click.FloatRange(min=0), default=30, show_default=True,
              metavar="SECONDS",
              help="On SIGTERM, how long runs in progress may finish before they are cancelled.")
def serve(host: str, port: int, api_key: str | None, max_body: float, grace: float,
          **options: Any) -> None:
    """Serve an RLM as an OpenAI-compatible model: POST /v1/chat/completions.

    The last user message is the question; the context is the body's `context`
    field, else `context_paths` under an --allow-dir, else the earlier messages.

    \b
    fathom serve --model openai:gpt-5-mini --allow-dir ~/docs --max-usd 1
    curl localhost:8000/v1/chat/completions -d '{"model": "fathom",
      "messages": [{"role": "user", "content": "Who wrote it?"}],
      "context_paths": ["notes/*.md"]}'
    """
    import uvicorn

    from fathom.server.app import create_app

    try:
        config = server_config(options, api_key=api_key or None, grace=grace,
                               max_body=int(max_body * 2**20))
        app = create_app(config)
    except FathomError as exc:
        _fail(str(exc))
    _log_to_stderr()
    # uvicorn waits this long for responses on SIGTERM, then cancels them; the rest of the
    # grace time is for the cancelled runs to close their sandboxes.
    drain = max(grace - 1.0, grace / 2)
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, access_log=False, log_level="info", lifespan="on",
        timeout_graceful_shutdown=drain,  # type: ignore[arg-type]  # a float works (wait_for)
    ))
    server.run()


@click.command()
@run_options
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio",
              show_default=True, help="stdio for Claude Code/Desktop; http serves streamable "
                                      "HTTP at /mcp.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address (http only).")
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="Port (http only).")
def mcp(transport: str, host: str, port: int, **options: Any) -> None:
    """Run an MCP server whose tool `ask` answers a question about files or text.

    \b
    claude mcp add fathom -- fathom mcp --allow-dir ~/code --model openai:gpt-5-mini
    """
    from fathom.server.mcp import build_server

    try:
        server = build_server(server_config(options))
    except FathomError as exc:
        _fail(str(exc))
    # stdout carries the protocol: log lines go to stderr.
    _log_to_stderr()
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=port)


__all__ = ["mcp", "serve"]
