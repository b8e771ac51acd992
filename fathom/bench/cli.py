"""`fathom bench run | list | report`: parse options and call `fathom.bench`; nothing more.

Imports of the benchmark itself (families, Ray, matplotlib) happen inside the commands,
so `fathom ask` never pays for them.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from fathom.errors import ConfigError, FathomError
from fathom.terminal import safe_text

F = TypeVar("F", bound=Callable[..., Any])

RUN_HELP = """Run task families x sizes x seeds x methods and append a row per run to
OUTPUT/results.jsonl (traces under OUTPUT/traces/). Run the same command again to
resume: rows already written are skipped.

\b
Examples:
  fathom bench run --tasks niah,oolong --sizes 32k,1m --seeds 3 \\
      --methods direct,bm25,rlm --model openai:gpt-5 --sub-model openai:gpt-5-mini \\
      --max-usd 20 --concurrency 4 -o runs/gpt5
  fathom bench run --tasks niah --sizes 32k --methods rlm --model oracle -o runs/oracle
  fathom bench run ... --executor ray --ray-address ray://head:10001
  fathom bench report runs/gpt5

--model oracle and --model random are fathom's reference policies (see `fathom bench list`).
"""


def _errors(command: F) -> F:
    """Report fathom's errors as one line (exit 2 for bad usage, 1 otherwise)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FathomError as exc:
            click.echo(f"fathom: error: {safe_text(str(exc))}", err=True)
            sys.exit(2 if isinstance(exc, ConfigError) else 1)

    return wrapper  # type: ignore[return-value]


@click.group()
def bench() -> None:
    """Benchmark models and methods on long-context tasks with exact answers."""


@bench.command("list")
def list_() -> None:
    """Print the task families and the methods."""
    from fathom.bench.methods import methods
    from fathom.bench.tasks import families

    click.echo("Task families (--tasks):")
    for family in families():
        click.echo(f"  {family.name:<10} {family.description}")
    click.echo("\nMethods (--methods):")
    for method in methods():
        click.echo(f"  {method.name:<10} {method.description}")
    click.echo("\nReference policies (--model): oracle (writes the family's REPL code; should "
               "score 1.0), random (plausible random answers: chance level)")


def _price_option(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
                  ) -> list[tuple[str, float, float]]:
    from fathom.lm.pricing import parse_price  # the one parser of --price, shared with `ask`

    try:
        return [parse_price(value) for value in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--price") from None


@bench.command(help=RUN_HELP, no_args_is_help=True)
@click.option("--tasks", required=True, metavar="LIST", help="Families, e.g. niah,oolong.")
@click.option("--sizes", default="32k", show_default=True, metavar="LIST",
              help="Input sizes in tokens, e.g. 32k,1m,16m.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seeds per family and size (0, 1, ...).")
@click.option("--methods", default="direct,rlm", show_default=True, metavar="LIST",
              help="Methods, e.g. direct,bm25,summarize,repl,rlm,rlm2.")
@click.option("-m", "--model", default=None, metavar="SPEC",
              help="Root model spec, or oracle / random (default: $FATHOM_MODEL or auto).")
@click.option("--sub-model", default=None, metavar="SPEC",
              help="Model for sub-calls (default: the root model).")
@click.option("--max-usd", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Dollars the whole run may spend; rows start only while some are left.")
@click.option("--price", "prices", multiple=True, callback=_price_option, metavar="MODEL=IN,OUT",
              help="USD per million input and output tokens of MODEL (repeatable).")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rows running at once.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Run rows in threads here, or as Ray tasks.")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="Ray cluster to use (default: start one here).")
@click.option("--max-iterations", type=click.IntRange(min=1), default=30, show_default=True,
              help="Root iterations per RLM row.")
@click.option("--max-output-tokens", type=click.IntRange(min=16), default=None,
              metavar="TOKENS", help="Longest reply a model may write.")
@click.option("--context-window", type=click.IntRange(min=256), default=None, metavar="TOKENS",
              help="Treat the models' window as this many tokens (direct truncates to it).")
@click.option("--row-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Time limit of one row.")
@click.option("--sandbox", default="subprocess", show_default=True,
              help="Where RLM methods run REPL code (subprocess or inprocess).")
@click.option("--retry-errors", is_flag=True, help="Run again the rows that ended in an error.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for results.jsonl, traces/ and the report.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@_errors
def run(tasks: str, sizes: str, seeds: int, methods: str, model: str | None,
        sub_model: str | None, max_usd: float | None, prices: list[tuple[str, float, float]],
        concurrency: int, executor: str, ray_address: str | None, max_iterations: int,
        max_output_tokens: int | None, context_window: int | None, row_seconds: float | None,
        sandbox: str, retry_errors: bool, output: Path, quiet: bool) -> None:
    """`fathom bench run`."""
    from fathom.bench import executors, runner
    from fathom.bench.methods import Limits
    from fathom.bench.models import POLICIES, SpecModels
    from fathom.lm import default_model
    from fathom.sandbox import sandbox_names

    if sandbox not in sandbox_names():
        raise ConfigError(f"unknown sandbox {sandbox!r}: choose from {', '.join(sandbox_names())}")
    model = model or default_model()
    models = SpecModels(model, sub_model, max_output_tokens, context_window, tuple(prices))
    if max_usd is not None and model not in POLICIES:
        _check_priced(models)
    limits = Limits(seconds=row_seconds, max_iterations=max_iterations, sandbox=sandbox)
    plan = runner.Plan.parse(tasks, sizes, seeds, methods, models, limits)
    progress = _Progress(quiet)
    try:
        with progress:
            state = runner.run(
                plan, output, executors.create(executor, ray_address=ray_address),
                concurrency=concurrency, max_usd=max_usd, retry_errors=retry_errors,
                on_start=progress.start, on_row=progress.row,
            )
    except KeyboardInterrupt:
        click.echo(f"fathom: interrupted; the rows written are kept in {output}: run the same "
                   "command again to resume.", err=True)
        sys.exit(130)
    click.echo(f"{state.done} rows run (${state.usd:.4f}), {state.skipped} already done; "
               f"results in {output / 'results.jsonl'}", err=True)
    if state.not_started:
        click.echo(f"{state.not_started} rows not started: --max-usd is spent. Run again with "
                   "a higher --max-usd to do them.", err=True)
    click.echo(f"Report: fathom bench report {output}", err=True)


def _check_priced(models: Any) -> None:
    from fathom.lm import pricing
    from fathom.rlm import unpriced_models

    for name, inp, out in models.prices:
        pricing.set_price(name, inp, out)
    unpriced = unpriced_models([models.name, models.sub_name])
    if unpriced:
        example = " ".join(f"--price {name}=IN,OUT" for name in unpriced)
        raise ConfigError(
            f"--max-usd cannot limit {' and '.join(unpriced)}: fathom does not know its price, "
            f"so its calls would count as $0. Give it with {example} (USD per million input "
            "and output tokens)."
        )


class _Progress:
    """A rich progress bar on stderr, and one line per finished row."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.quiet = quiet
        # The console keeps today's stderr, and nothing is redirected: the in-process
        # sandbox swaps sys.stdout/sys.stderr while REPL code runs, and writing through
        # them from the refresh thread would wait on the console's own lock.
        self.bar = Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                            "{task.fields[usd]}", TimeElapsedColumn(),
                            console=Console(file=sys.stderr), disable=quiet,
                            redirect_stdout=False, redirect_stderr=False)
        self.task: Any = None

    def __enter__(self) -> _Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def start(self, state: Any) -> None:
        """The run is planned: show how many rows are left."""
        if state.skipped and not self.quiet:
            self.bar.console.print(f"{state.skipped} of {state.total} rows already done: "
                                   "skipped.")
        self.task = self.bar.add_task("bench", total=state.total - state.skipped, usd="$0")

    def row(self, row: dict[str, Any], state: Any) -> None:
        """A row finished."""
        from fathom.bench.report import size_label

        if not self.quiet:
            self.bar.console.print(
                f"{row['task']} {size_label(row['size'])} seed {row['seed']} {row['method']}: "
                f"score {row['score']:.2f}  ${row['usd']:.4f}  {row['seconds']:.1f}s  "
                f"{row['stop_reason']}", markup=False, highlight=False,
            )
        self.bar.update(self.task, completed=state.done, usd=f"${state.usd:.4f}")


@bench.command(no_args_is_help=True)
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the aggregates as JSON on stdout.")
@_errors
def report(directory: Path, as_json: bool) -> None:
    """Write DIRECTORY/report.md and its plots from DIRECTORY/results.jsonl."""
    from fathom.bench import report as reports

    path, aggregates = reports.write(directory)
    if as_json:
        click.echo(json.dumps(reports.to_json(aggregates), indent=2))
    click.echo(f"Wrote {path}, {directory / reports.SCORE_PLOT} and "
               f"{directory / reports.COST_PLOT}", err=True)
