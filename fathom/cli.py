"""The `fathom` command: a thin layer that parses options and calls the library.

Answers and requested output go to stdout; progress, summaries and errors go to
stderr, so `fathom ask ... > answer.txt` and pipes work; stdout holds only an answer.
Exit codes (EXIT_*): 0 answered with FINAL, 1 the run failed, 2 bad usage or unreadable
input, 3 stopped by a budget, 4 a forced answer at --max-iterations, 128+N killed by signal N.

Text from a model, the sandbox or the input is escaped (`fathom.terminal`) in
everything meant for a person: progress, errors, reports, and the answer when
stdout is a terminal. An answer sent to a file or a pipe is the exact text, and
`--json` escapes the same characters the JSON way, which keeps the value.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, Literal, NoReturn

import click

import fathom
from fathom.answers import jsonable
from fathom.errors import (
    AuthenticationError,
    ConfigError,
    ContextError,
    FathomError,
    ProviderUnavailable,
    SessionError,
    TraceError,
)
from fathom.sandbox import ISOLATION_LEVELS, IsolationLevel, sandbox_names
from fathom.server.cli import concurrency_options
from fathom.terminal import is_terminal, safe_json, safe_text

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET, EXIT_FORCED = 0, 1, 2, 3, 4

ASK_HELP = """Answer QUESTION about the files, directories or globs in PATH... .

PATH may be a file (its text becomes `context`), a directory or several paths
(a dict of relative path -> text; binary files are skipped and listed), a glob
in quotes, or - to read standard input. The answer goes to stdout; progress goes
to stderr.

\b
Examples:
  fathom ask novel.txt -q "Which city did Marta move to?"
  fathom ask src/ -q "Where is the retry policy?" --model anthropic:claude-sonnet-4-5
  fathom ask 'logs/*.log' -q "When did the first 500 error happen?" --max-usd 0.50
  cat report.md | fathom ask - -q "Summarise the risks" --quiet > risks.txt
  fathom ask data.json -q "How many users?" --json | jq .answer
  fathom ask contracts/ -q "Parties and dates?" --schema parties.schema.json
  fathom ask big.txt -q "..." --trace run.jsonl && fathom view run.jsonl --open

\b
Models: openai:MODEL (honours OPENAI_BASE_URL, so vLLM, Ollama, llama.cpp and
LM Studio work), anthropic:MODEL, local, local:/path/model.gguf. Default:
$FATHOM_MODEL, else openai:gpt-5-mini if OPENAI_API_KEY is set, else local.

\b
Exit codes:
  0    answered: the model gave its answer with FINAL
  1    the run failed (or no answer matched --schema)
  2    bad usage or unreadable input
  3    stopped by a budget (--max-usd, --max-seconds, --max-tokens); stdout has no
       answer (--json keeps the best-effort text, answer_source "best_effort")
  4    no FINAL within --max-iterations: stdout has the model's forced last reply
  130  interrupted (Ctrl-C); 143 SIGTERM, 129 SIGHUP: the run is cancelled and cleaned up
"""


def _version() -> str:
    return getattr(fathom, "__version__", "unknown")



def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"fathom: error: {safe_text(message)}", err=True)
    sys.exit(code)


def _echo_answer(answer: str) -> None:
    """The answer on stdout: escaped for a terminal, the exact text for a file or a pipe."""
    text = safe_text(answer) if is_terminal(sys.stdout) else answer
    try:
        click.echo(text, color=True)  # color=True: else click strips ANSI codes off a file
    except UnicodeEncodeError:
        # Lone surrogates (a str from JSON may hold them) have no encoding: escape only those.
        encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        click.echo(text.encode(encoding, "backslashreplace").decode(encoding), color=True)


def _echo_json(value: dict[str, Any]) -> None:
    click.echo(safe_json(json.dumps(value, indent=2, ensure_ascii=False)))


_USAGE_CLASSES = (ConfigError, ContextError, AuthenticationError, ProviderUnavailable, TraceError,
                  SessionError)


def _exit_code_for(error: BaseException | type[BaseException] | None) -> int:
    """Errors the user fixes by changing the command or the input are usage errors (2)."""
    kind = error if isinstance(error, type) else type(error)
    return EXIT_USAGE if issubclass(kind, _USAGE_CLASSES) else EXIT_FAILED


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(_version(), "-V", "--version", prog_name="fathom",
                      message="%(prog)s %(version)s")
def main() -> None:
    """fathom: Recursive Language Models for inputs far larger than any context window.

    A root model answers your question by writing Python that runs in a sandboxed
    REPL holding the input as `context`, calling models on the parts that matter.

    \b
    fathom ask book.txt -q "Who is the narrator's sister?"
    fathom view run.jsonl --open      # look at what a run did
    fathom demo                       # a run on the embedded model, no key needed
    fathom doctor                     # what this machine supports
    """


@main.command(help=ASK_HELP, no_args_is_help=True)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("-q", "--question", "--query", "question", required=True,
              help="The question to answer about the input.")
@click.option("-m", "--model", default=None, metavar="SPEC",
              help="Root model spec, e.g. openai:gpt-5-mini (default: $FATHOM_MODEL or auto).")
@click.option("--sub-model", default=None, metavar="SPEC",
              help="Model for llm_query sub-calls (default: the root model).")
@click.option("--context-window", type=click.IntRange(min=256), default=None, metavar="TOKENS",
              help="The models' context window (default: what the server reports, else the "
                   "model's known window, else 128k).")
@click.option("--max-output-tokens", type=click.IntRange(min=16), default=None, metavar="TOKENS",
              help="Longest reply a model may write (default: min(4096, window/4); 32k for "
                   "reasoning models).")
@click.option("--request-timeout", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True, metavar="SECONDS",
              help="Seconds to wait for one model reply before retrying it.")
@click.option("--sandbox", type=click.Choice(sandbox_names()), default="subprocess",
              show_default=True, help="Where the REPL code runs; inprocess has no isolation.")
@click.option("--isolation", type=click.Choice(ISOLATION_LEVELS), default="standard",
              show_default=True,
              help="Subprocess sandbox protection; strict fails if a layer is missing "
                   "(see `fathom doctor`).")
@click.option("--max-iterations", type=click.IntRange(min=1), default=30, show_default=True,
              help="Root iterations before the model must answer.")
@click.option("--max-depth", type=click.IntRange(min=0), default=1, show_default=True,
              help="How deep rlm_query may recurse (0: no child RLMs).")
@click.option("--max-usd", type=click.FloatRange(min=0), default=None,
              help="Stop when this many dollars are spent (root, sub-calls and children).")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds.")
@click.option("--max-tokens", type=click.IntRange(min=0), default=None,
              help="Stop after this many tokens in total.")
@click.option("--price", "prices", multiple=True, callback=lambda _c, _p, v: _parse_prices(v),
              metavar="MODEL=IN,OUT",
              help="USD per million input and output tokens of MODEL, for --max-usd and the "
                   "summary (repeatable), e.g. --price openai:my-model=0.25,2.00.")
@concurrency_options
@click.option("--trace", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the run's events to this JSONL file (see `fathom view`).")
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SQLite file caching model replies; reruns of the same calls are free.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the whole Result as JSON on stdout instead of the answer.")
@click.option("--schema", "schema_file", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
              default=None, metavar="FILE.json",
              help="A JSON schema the answer must match; the answer is printed as JSON.")
@click.option("--quiet", is_flag=True, help="No progress or summary on stderr.")
@click.option("--encoding", default=None, metavar="NAME",
              help="Encoding of the input files, e.g. latin-1, cp1252, utf-16 (default: the "
                   "one a byte-order mark names, else UTF-8).")
@click.option("--encoding-errors", type=click.Choice(["strict", "replace"]), default="strict",
              show_default=True,
              help="What bytes that do not decode do: strict refuses the file, replace "
                   "reads them as U+FFFD.")
@click.option("--include-ignored", is_flag=True,
              help="Also read what .gitignore files ignore and folders skipped by default "
                   "(.venv, node_modules, __pycache__, build, ...).")
def ask(
    paths: tuple[str, ...], question: str, model: str | None, sub_model: str | None,
    context_window: int | None, max_output_tokens: int | None, request_timeout: float,
    sandbox: str, isolation: IsolationLevel, max_iterations: int, max_depth: int,
    max_usd: float | None, max_seconds: float | None, max_tokens: int | None,
    prices: list[tuple[str, float, float]], max_concurrency: int | Literal["auto"],
    max_concurrency_cap: int,
    trace: Path | None, cache: Path | None, as_json: bool, schema_file: Path | None,
    quiet: bool, encoding: str | None, encoding_errors: str, include_ignored: bool,
) -> None:
    from fathom.progress import Progress

    if not question.strip():
        _fail("the question is empty: pass it with -q \"...\"", EXIT_USAGE)
    _cancel_on_signals()
    _set_prices(prices, max_usd, model, sub_model)
    schema = _read_schema(schema_file) if schema_file is not None else None
    context = _read_context(paths, encoding, encoding_errors, include_ignored, quiet)
    # Citations of a single file or stdin are named by it, not as "context".
    cited_as = {"-": "<stdin>"}.get(paths[0], paths[0]) if context.kind == "str" else "context"
    budget = None
    if max_usd is not None or max_seconds is not None or max_tokens is not None:
        budget = fathom.Budget(usd=max_usd, seconds=max_seconds, tokens=max_tokens)
    progress = Progress("quiet" if quiet else "auto")
    try:
        rlm = fathom.RLM(
            model=model, sub_model=sub_model, sandbox=sandbox, sandbox_isolation=isolation,
            context_window=context_window, max_output_tokens=max_output_tokens,
            request_timeout=request_timeout,
            max_iterations=max_iterations, max_concurrency=max_concurrency,
            max_concurrency_cap=max_concurrency_cap,
            max_depth=max_depth, budget=budget, trace=trace, cache=cache,
            on_event=None if quiet else progress,
        )
        with progress.running():
            result = rlm.run(question, context, schema=schema)
    except FathomError as exc:
        _fail(str(exc), _exit_code_for(exc))
    except KeyboardInterrupt:
        signum = _signals_received[-1] if _signals_received else signal.SIGINT
        _fail("interrupted" if signum == signal.SIGINT else
              f"stopped by {signal.Signals(signum).name}", 128 + signum)
    finally:
        _close(context)
    progress.summary(result)  # never raises: the answer below always gets out
    _finish(result, as_json=as_json, quiet=quiet, cited_as=cited_as)


def _read_context(paths: tuple[str, ...], encoding: str | None, errors: str,
                  include_ignored: bool, quiet: bool) -> fathom.Context:
    """The input of `ask`, with what was left out listed on stderr; a usage error if empty."""
    if "-" in paths and is_terminal(sys.stdin) and not quiet:
        click.echo("fathom: reading standard input; end it with Ctrl-D (Ctrl-Z Enter on "
                   "Windows)", err=True)
    try:
        context = fathom.Context.from_paths(list(paths), errors=errors, encoding=encoding,
                                            include_ignored=include_ignored)
        skipped = context.metadata().skip_reasons
    except FathomError as exc:
        _fail(str(exc), _exit_code_for(exc))
    if not quiet:
        # A left-out folder is one entry, "name/", its reason saying how many files it holds.
        folders = {key: why for key, why in skipped.items() if key.endswith("/")}
        files = {key: why for key, why in skipped.items() if key not in folders}
        for kind, entries, hint in (("folder(s)", folders, "; --include-ignored reads them"),
                                    ("file(s)", files, "")):
            if entries:
                shown = ", ".join(f"{key} ({why})" for key, why in list(entries.items())[:10])
                more = f" and {len(entries) - 10} more" if len(entries) > 10 else ""
                click.echo(safe_text(f"fathom: skipped {len(entries)} {kind}: {shown}{more}"
                                     f"{hint}"), err=True)
    return context


def _read_schema(path: Path) -> dict[str, Any]:
    """--schema FILE.json: a JSON object, else a usage error saying what is wrong."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        _fail(f"--schema {path}: cannot read a JSON schema from it ({exc}): pass a .json file "
              'holding one JSON object, e.g. {"type": "object", "properties": {...}}', EXIT_USAGE)
    if not isinstance(schema, dict):
        _fail(f"--schema {path} holds a {type(schema).__name__}, not a JSON object: a JSON "
              "schema is an object.", EXIT_USAGE)
    return schema


def _echo_citations(result: fathom.Result, name: str) -> None:
    """The spans the answer rests on, under it (on stderr: stdout holds only the answer)."""
    if not result.citations:
        return
    click.echo(f"fathom: the answer cites {len(result.citations)} span(s) of the input:", err=True)
    for citation in result.citations:
        text = " ".join(citation.text.split())
        text = text if len(text) <= 160 else text[:157] + "..."
        click.echo(safe_text(f'  {citation.location(name)}  "{text}"'), err=True)


def _finish(result: fathom.Result, *, as_json: bool, quiet: bool,
            cited_as: str = "context") -> NoReturn:
    """Print the answer (only one the model gave: FINAL or forced) and exit with its code."""
    given = result.answer_source in ("final", "forced") and result.stop_reason != "invalid_answer"
    if as_json:
        _echo_json(result.to_dict())
    elif given:
        # A typed answer (--schema) is printed as JSON.
        _echo_answer(result.answer if isinstance(result.answer, str)
                     else json.dumps(jsonable(result.answer), indent=2, ensure_ascii=False))
        if not quiet:
            _echo_citations(result, cited_as)
    if result.stop_reason == "invalid_answer":
        if not as_json:
            _fail(f"no answer matched --schema in {result.iterations} iterations; --json shows "
                  "the last one refused (raise --max-iterations?)", EXIT_FAILED)
        sys.exit(EXIT_FAILED)
    if result.stop_reason == "budget":
        limit = f" ({result.budget_limit})" if result.budget_limit else ""
        if not quiet:
            said = "no answer was reached" + (
                " (--json shows the best-effort text so far)" if result.answer else "")
            click.echo(f"fathom: stopped by the budget{limit}; {said}", err=True)
        sys.exit(EXIT_BUDGET)
    if result.stop_reason == "error" or not given:
        # A key the provider rejected mid-run is as much the user's to fix as a missing one.
        code = _exit_code_for(result.error_type)
        if not as_json:
            hint = " (raise --max-iterations?)" if result.stop_reason == "max_iterations" else ""
            _fail(result.error or
                  f"the run ended ({result.stop_reason}) without an answer{hint}", code)
        sys.exit(code)
    if result.answer_source == "forced":
        # Said even with --quiet: this answer is not one the model chose to give.
        click.echo(f"fathom: no FINAL after {result.iterations} iterations; the answer is the "
                   "model's forced last reply (raise --max-iterations?)", err=True)
        sys.exit(EXIT_FORCED)
    sys.exit(EXIT_OK)


_signals_received: list[int] = []


def _cancel_on_signals() -> None:
    """SIGTERM and SIGHUP take Ctrl-C's path: the run is cancelled, cleans up and ends
    its trace; `ask` then exits 128 + the signal's number."""

    def cancel(signum: int, frame: FrameType | None) -> None:
        _signals_received.append(signum)
        on_interrupt = signal.getsignal(signal.SIGINT)  # asyncio's while a run is going
        if not callable(on_interrupt):
            raise KeyboardInterrupt
        on_interrupt(signal.SIGINT, frame)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, cancel)


def _parse_prices(values: tuple[str, ...]) -> list[tuple[str, float, float]]:
    from fathom.lm.pricing import parse_price

    try:
        return [parse_price(value) for value in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--price") from None


def _set_prices(prices: list[tuple[str, float, float]], max_usd: float | None,
                model: str | None, sub_model: str | None) -> None:
    """Register --price; refuse --max-usd for a model whose price is unknown (it would be $0)."""
    from fathom.lm import default_model, pricing
    from fathom.rlm import unpriced_models

    for name, inp, out in prices:
        pricing.set_price(name, inp, out)
    if max_usd is None:
        return
    try:
        root = model or default_model()
    except FathomError as exc:
        _fail(str(exc), _exit_code_for(exc))
    unpriced = unpriced_models([root, sub_model or root])
    if unpriced:
        example = " ".join(f"--price {name}=IN,OUT" for name in unpriced)
        _fail(f"--max-usd cannot limit {' and '.join(unpriced)}: fathom does not know its "
              f"price, so its calls would count as $0. Give it with {example} (USD per "
              "million input and output tokens), or use --max-tokens instead.", EXIT_USAGE)


def _close(context: Any) -> None:
    close = getattr(context, "close", None)
    if callable(close):
        close()


@main.command()
@click.option("-m", "--model", default=None, metavar="SPEC",
              help="Model to run the demo on (default: the embedded local model).")
def demo(model: str | None) -> None:
    """Find a passphrase hidden in a generated 1.2M-character document, and report.

    \b
    fathom demo                        # embedded model: offline, no key
    fathom demo --model openai:gpt-5-mini
    """
    from fathom.demo import run_demo
    from fathom.progress import Progress

    progress = Progress("auto")
    options: dict[str, Any] = {}
    if "on_event" in inspect.signature(run_demo).parameters:
        options["on_event"] = progress
    try:
        with progress.running():
            result = run_demo(model=model, **options)  # prints its own report on stdout
    except FathomError as exc:
        _fail(str(exc), _exit_code_for(exc))
    # A wrong answer is still a finished demo (the embedded model is a smoke test).
    sys.exit(EXIT_FAILED if result.stop_reason == "error" else EXIT_OK)


@main.command(no_args_is_help=True)
@click.argument("trace", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the page (default: TRACE with .html).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
def view(trace: Path, output: Path | None, open_browser: bool) -> None:
    """Draw TRACE (a JSONL trace) as one self-contained HTML page.

    The page works offline from file://, shows the run as a tree (iterations,
    code, output, sub-calls, child RLMs) with a timeline of tokens, dollars and
    seconds. A trace still being written shows what it holds so far.

    \b
    fathom view run.jsonl --open
    fathom view run.jsonl -o report.html
    """
    from fathom.viewer import open_page, write_page

    try:
        target, problems = write_page(trace, output)
    except FathomError as exc:
        _fail(str(exc), _exit_code_for(exc))
    except OSError as exc:
        _fail(f"cannot write {output or trace.with_suffix('.html')}: {exc.strerror}", EXIT_USAGE)
    click.echo(str(target))
    for problem in problems:
        click.echo(safe_text(f"fathom: skipped a line of the trace: {problem}"), err=True)
    if open_browser and not open_page(target):
        click.echo(safe_text(f"fathom: no browser could be opened here; open {target} yourself "
                             "(or copy it to a machine with one)"), err=True)


@main.command(no_args_is_help=True)
@click.argument("trace", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sandbox", type=click.Choice(sandbox_names()), default="subprocess",
              show_default=True, help="Where the recorded code runs again.")
@click.option("-c", "--context", "context_paths", multiple=True, metavar="PATH",
              help="The run's input, when the trace's source file is not readable here "
                   "(repeatable; same forms as `fathom ask`).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def replay(trace: Path, sandbox: str, context_paths: tuple[str, ...], as_json: bool) -> None:
    """Re-run TRACE with the model replies it recorded and check the answer matches.

    Root replies are played back in order and sub-call replies by prompt; the
    code runs again for real. Exit 0 when the answer matches, 1 when it differs.

    \b
    fathom replay run.jsonl
    fathom replay run.jsonl --context novel.txt --sandbox inprocess
    """
    from fathom.replay import replay as run_replay

    try:
        context = fathom.Context.from_paths(list(context_paths)) if context_paths else None
        report = run_replay(trace, context=context, sandbox=sandbox)
    except FathomError as exc:
        _fail(str(exc), _exit_code_for(exc))
    if as_json:
        _echo_json(report.to_dict())
    else:
        click.echo(report.summary())
    sys.exit(EXIT_OK if report.matches else EXIT_FAILED)


@main.command()
@click.option("--isolation", type=click.Choice(ISOLATION_LEVELS), default="standard",
              show_default=True, help="The isolation level to probe.")
def doctor(isolation: IsolationLevel) -> None:
    """Show what this machine offers fathom: Python, models, sandbox protection layers.

    The layers come from starting a real probe worker at the chosen isolation level.
    """
    from fathom.lm import default_model, providers

    rows: list[tuple[str, str]] = [
        ("fathom", _version()),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", platform.platform()),
        ("providers", ", ".join(providers())),
    ]
    try:
        rows.append(("default model", default_model()))
    except FathomError as exc:
        rows.append(("default model", f"none: {exc}"))
    for var in ("FATHOM_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"):
        value = os.environ.get(var)
        shown = "not set" if not value else (value if var in ("FATHOM_MODEL", "OPENAI_BASE_URL")
                                             else "set")
        rows.append((var, shown))
    from fathom.sandbox.isolation.report import report

    # A probe worker confined like a real one: what really holds, or why it does not.
    layers = report(isolation)
    width = max(len(name) for name in [*(row[0] for row in rows), *layers])
    # Environment values and the probe worker's reports are not ours: shown as text only.
    for name, value in rows:
        click.echo(f"{name:<{width}}  {safe_text(value)}")
    click.echo("")
    click.echo(f"sandbox protection layers (subprocess sandbox, isolation={isolation}):")
    for layer in layers.values():
        click.echo(f"  {safe_text(layer.name):<{width}}  {safe_text(layer.text)}")


CHAT_HELP = """Ask questions about PATH... in a loop at a prompt; the input is loaded once.

Every question runs in the same sandbox REPL: what the model built for one (an
index, a parsed table) is there for the next, and `history` lists the questions
and answers so far. Each question shows its live progress; Ctrl-C cancels the
question being answered, Ctrl-D leaves. PATH is read as by `fathom ask`;
--trace writes one trace per question (run.jsonl -> run.1.jsonl, run.2.jsonl) and
the budget options limit each question.

\b
Examples:
  fathom chat src/ --model anthropic:claude-sonnet-4-5
  fathom chat logs/ --save logs.session       # written after every answer
  fathom chat logs/ --resume logs.session --save logs.session
"""

# `fathom ask`'s options that mean the same in a chat, where each question is one run.
CHAT_OPTIONS = frozenset({
    "model", "sub_model", "context_window", "max_output_tokens", "request_timeout", "sandbox",
    "isolation", "max_iterations", "max_depth", "max_usd", "max_seconds", "max_tokens",
    "prices", "max_concurrency", "trace", "cache", "quiet", "encoding", "encoding_errors",
    "include_ignored", "max_concurrency_cap",
})


@main.command(help=CHAT_HELP, no_args_is_help=True)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--save", "save_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the session (history and REPL variables) to FILE "
                                 "after every answer.")
@click.option("--resume", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Start from a session written by --save; PATH must be the same input.")
def chat(paths: tuple[str, ...], save_path: Path | None, resume: Path | None,
         **options: Any) -> None:
    from fathom.chat import Chat, enable_line_editing, leave_on_signals

    if "-" in paths:
        _fail("fathom chat reads its questions from standard input: pass the input as files, "
              "not '-'", EXIT_USAGE)
    leave_on_signals()
    _set_prices(options["prices"], options["max_usd"], options["model"], options["sub_model"])
    context = _read_context(paths, options["encoding"], options["encoding_errors"],
                            options["include_ignored"], options["quiet"])
    budget = None
    if any(options[k] is not None for k in ("max_usd", "max_seconds", "max_tokens")):
        budget = fathom.Budget(usd=options["max_usd"], seconds=options["max_seconds"],
                               tokens=options["max_tokens"])
    try:
        rlm = fathom.RLM(
            model=options["model"], sub_model=options["sub_model"], sandbox=options["sandbox"],
            sandbox_isolation=options["isolation"], context_window=options["context_window"],
            max_output_tokens=options["max_output_tokens"],
            request_timeout=options["request_timeout"],
            max_iterations=options["max_iterations"], max_depth=options["max_depth"],
            max_concurrency=options["max_concurrency"],
            max_concurrency_cap=options["max_concurrency_cap"], budget=budget,
            trace=options["trace"],
            cache=options["cache"],
        )
        session = fathom.Session.load(resume, rlm, context) if resume else rlm.session(context)
        with session:
            enable_line_editing()
            Chat(session, save=save_path, progress="quiet" if options["quiet"] else "auto").run()
    except FathomError as exc:
        _fail(str(exc), _exit_code_for(exc))
    except KeyboardInterrupt:  # while the input loads or the sandbox starts
        _fail("interrupted", 128 + signal.SIGINT)
    finally:
        _close(context)


chat.params.extend(p for p in ask.params if p.name in CHAT_OPTIONS)


from fathom.server.cli import mcp, serve  # noqa: E402  (their heavy imports are lazy)

main.add_command(serve)
main.add_command(mcp)

from fathom.bench.cli import bench  # noqa: E402  (its heavy imports are lazy)

main.add_command(bench)

if __name__ == "__main__":
    main()
