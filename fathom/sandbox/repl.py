"""The REPL both sandboxes run: namespace, FINAL / FINAL_VAR, output capture, tracebacks.

One `Repl` holds one persistent namespace (a real module, `__repl__`, so classes and
functions defined in it can be pickled by reference) with `context` and the REPL
functions bound to a Bridge: the engine's own in the in-process sandbox, a channel
proxy in the worker.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import json
import sys
import threading
import traceback
import types
from collections import deque
from dataclasses import dataclass
from typing import Any

from fathom.repl_api import FunctionSpec
from fathom.sandbox.base import Bridge
from fathom.sandbox.output import Capture, install_routers, router_for
from fathom.syntax import AST_LOCK

REPL_MODULE = "__repl__"
REPL_FILENAME = "<repl>"
# The REPL's own functions; those that call the parent come from the Bridge's specs.
LOCAL_FUNCTIONS = ("SHOW_VARS", "FINAL", "FINAL_VAR", "print")
_DUNDERS = frozenset({"__builtins__", "__name__", "__doc__", "__loader__", "__spec__",
                      "__package__"})


_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"


class ExecInterrupted(BaseException):
    """Raised into a running block to stop it (timeout); user `except Exception` cannot eat it."""


class _FinalSignal(BaseException):
    """Stops the rest of a block once FINAL / FINAL_VAR has set the answer."""


@dataclass
class Outcome:
    """What one block did, before a sandbox adds timing and notices."""

    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    final: str | None = None
    interrupted: bool = False
    out_of_memory: bool = False


def answer_text(value: Any) -> str:
    """A FINAL value as text: a dict or list (or a pydantic instance) as JSON, so a typed
    answer crosses the channel as data the parent can validate, not as a Python repr."""
    if isinstance(value, str):
        return value
    dump = getattr(value, "model_dump", None)
    if isinstance(value, dict | list | tuple) or (callable(dump) and not isinstance(value, type)):
        try:
            data = dump(mode="json") if callable(dump) else value
            return json.dumps(data, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            pass  # not JSON-like (a set inside, a custom object): its str() as before
    return str(value)


def summarize(value: Any) -> str:
    """A short type-and-size description of a value, as SHOW_VARS prints it."""
    kind = type(value).__name__
    if isinstance(value, types.ModuleType):
        return "module"
    if isinstance(value, str | bytes | bytearray):
        unit = "chars" if isinstance(value, str) else "bytes"
        return f"{kind}, {len(value):,} {unit}"
    if isinstance(value, dict):
        return f"dict, {len(value):,} keys"
    if isinstance(value, list | tuple | set | frozenset | deque):
        return f"{kind}, {len(value):,} items"
    if isinstance(value, type):
        return "class"
    if callable(value):
        return "function" if isinstance(value, types.FunctionType) else kind
    if isinstance(value, int | float | bool | complex) or value is None:
        text = repr(value)
        return f"{kind} = {text}" if len(text) <= 40 else kind
    return kind


class Repl:
    """A persistent namespace that runs code blocks like an interactive interpreter."""

    def __init__(
        self, context: Any, bridge: Bridge, *, output_limit: int = 1_000_000, register: bool = False
    ):
        self.bridge = bridge
        self.output_limit = output_limit
        self.module = types.ModuleType(REPL_MODULE, "The fathom REPL namespace.")
        if register:
            # Lets pickle find classes/functions defined in REPL code by reference (worker).
            sys.modules[REPL_MODULE] = self.module
        self.namespace: dict[str, Any] = self.module.__dict__
        self.namespace["__builtins__"] = builtins
        self.namespace["context"] = context
        self.context = context
        # Source of each top-level def/class, so a restarted worker can define them again.
        self.definitions: dict[str, str] = {}
        # Timeout text the sandbox sets before it interrupts a block.
        self.timeout_message: str | None = None
        self._code_lines: dict[types.CodeType, list[str]] = {}
        self._capture: Capture | None = None
        self._final: str | None = None
        self._notes: list[str] = []
        self._lock = threading.Lock()
        self._hidden: set[str] = set(_DUNDERS) | set(LOCAL_FUNCTIONS)
        for spec in bridge.functions():
            self.namespace[spec.name] = make_stub(spec, bridge)
            self._hidden.add(spec.name)
        self._bind()
        _quiet_final_in_threads()

    # --- the REPL functions ------------------------------------------------------------
    def _bind(self) -> None:
        def FINAL(answer: Any) -> None:  # the paper's names
            """Finish the run with `answer` (the rest of this block does not run)."""
            self._final = answer_text(answer)
            raise _FinalSignal

        def FINAL_VAR(name: Any) -> None:
            """Finish the run with the value of the variable called `name`."""
            if not isinstance(name, str):
                self._final = answer_text(name)
                raise _FinalSignal
            key = name.strip().strip("\"'")
            if key in self.namespace and key not in self._hidden:
                self._final = answer_text(self.namespace[key])
                raise _FinalSignal
            known = ", ".join(sorted(self.user_names())) or "none"
            self._notes.append(
                f"FINAL_VAR: no variable named {key!r} (variables: {known}). Assign the answer "
                "to a variable first, or call FINAL(answer) with the value."
            )

        def SHOW_VARS() -> None:
            """Print the REPL's variables with their types and sizes."""
            summary = self.variables()
            lines = [f"{name}: {text}" for name, text in summary.items()] or ["(no variables)"]
            print_("\n".join(lines))

        def print_(*args: Any, sep: str | None = " ", end: str | None = "\n",
                   file: Any = None, flush: bool = False) -> None:
            # Bound to this REPL, so prints from threads the code starts are captured too.
            capture = self._capture
            if capture is not None and (file is None or file is sys.stdout or file is sys.stderr):
                stream = capture.stderr if file is sys.stderr else capture.stdout
                sep = " " if sep is None else sep
                end = "\n" if end is None else end
                stream.write(sep.join(str(a) for a in args) + end)
                return
            builtins.print(*args, sep=sep, end=end, file=file, flush=flush)

        for fn in (FINAL, FINAL_VAR, SHOW_VARS):
            self.namespace[fn.__name__] = fn
        self.namespace["print"] = print_

    # --- running code ------------------------------------------------------------------
    def execute(self, code: str, *, all_threads: bool = False) -> Outcome:
        """Run one block; its output is captured, FINAL is reported, errors never escape."""
        with self._lock:  # one block at a time per namespace
            return self._execute(code, all_threads)

    def _execute(self, code: str, all_threads: bool) -> Outcome:
        self._final = None
        self._notes = []
        self.timeout_message = None
        capture = Capture(self.output_limit)
        install_routers()
        self._capture = capture
        router_for(capture, None if all_threads else threading.get_ident())
        error: str | None = None
        interrupted = out_of_memory = False
        try:
            body, last = self._compile(code)
            if body is not None:
                exec(body, self.namespace)
            if last is not None:
                value = eval(last, self.namespace)
                if value is not None:
                    capture.stdout.write(_echo(value, self.output_limit) + "\n")
        except _FinalSignal:
            pass
        except (KeyboardInterrupt, ExecInterrupted) as exc:
            interrupted = True
            error = self.format_error(exc, self.timeout_message)
        except SyntaxError as exc:
            error = "".join(traceback.format_exception_only(type(exc), exc))
        except BaseException as exc:  # SystemExit too: REPL code must not end us
            out_of_memory = isinstance(exc, MemoryError)
            error = self.format_error(exc)
        finally:
            router_for(None, None if all_threads else threading.get_ident())
            self._capture = None
        if self._notes:
            error = "\n".join([*self._notes, *([error] if error else [])])
        return Outcome(
            stdout=capture.stdout.text(),
            stderr=capture.stderr.text(),
            error=error,
            final=self._final,
            interrupted=interrupted,
            out_of_memory=out_of_memory,
        )

    def define(self, source: str) -> None:
        """Run the source of a saved def/class again (crash recovery), outside any capture."""
        body, _ = self._compile(source)
        if body is not None:
            exec(body, self.namespace)

    def _compile(self, code: str) -> tuple[types.CodeType | None, types.CodeType | None]:
        """Compile a block; a trailing expression is compiled apart so its value is echoed."""
        # One AST at a time per process (see fathom.syntax): concurrent in-process runs.
        with AST_LOCK:
            return self._compile_locked(code)

    def _compile_locked(
        self, code: str
    ) -> tuple[types.CodeType | None, types.CodeType | None]:
        tree = ast.parse(code, REPL_FILENAME, "exec")
        lines = code.splitlines()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                start = min([d.lineno for d in node.decorator_list] + [node.lineno])
                self.definitions[node.name] = "\n".join(lines[start - 1 : node.end_lineno])
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            expr = ast.Expression(tree.body.pop().value)  # type: ignore[attr-defined]
            last = compile(expr, REPL_FILENAME, "eval")
            self._remember(last, lines)
        body = compile(tree, REPL_FILENAME, "exec") if tree.body else None
        if body is not None:
            self._remember(body, lines)
        return body, last

    def _remember(self, code: types.CodeType, lines: list[str]) -> None:
        # Tracebacks show source lines from the block each frame came from, even for
        # functions defined in an earlier block.
        self._code_lines[code] = lines
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self._remember(const, lines)

    def format_error(self, exc: BaseException, replace: str | None = None) -> str:
        """A traceback limited to REPL frames; `replace` stands in for the exception line."""
        return "".join(self._format_chain(exc, replace, set()))

    def _format_chain(self, exc: BaseException, replace: str | None, seen: set[int]) -> list[str]:
        seen.add(id(exc))
        parts: list[str] = []
        cause, context = exc.__cause__, exc.__context__
        if cause is not None and id(cause) not in seen:
            parts += self._format_chain(cause, None, seen)
            parts.append(f"\n{_CAUSE}\n\n")
        elif context is not None and not exc.__suppress_context__ and id(context) not in seen:
            parts += self._format_chain(context, None, seen)
            parts.append(f"\n{_CONTEXT}\n\n")
        frames = []
        tb = exc.__traceback__
        while tb is not None:
            co = tb.tb_frame.f_code
            if co.co_filename == REPL_FILENAME:
                lines = self._code_lines.get(co, [])
                lineno = tb.tb_lineno
                line = lines[lineno - 1] if 0 < lineno <= len(lines) else ""
                frames.append(traceback.FrameSummary(
                    REPL_FILENAME, lineno, co.co_name, lookup_line=False, line=line))
            tb = tb.tb_next
        if frames:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.StackSummary.from_list(frames).format())
        if replace is not None:
            parts.append(replace.rstrip("\n") + "\n")
        else:
            parts.extend(traceback.format_exception_only(type(exc), exc))
        return parts

    # --- inspection --------------------------------------------------------------------
    def user_names(self) -> list[str]:
        """Names of user variables (context included, REPL functions and dunders not)."""
        return [
            n for n in self.namespace
            if n not in self._hidden and not (n.startswith("__") and n.endswith("__"))
        ]

    def variables(self) -> dict[str, str]:
        """User variables: name -> short type and size summary."""
        return {name: summarize(self.namespace[name]) for name in self.user_names()}


def _quiet_final_in_threads() -> None:
    """FINAL called in a thread the block started ends that thread without a traceback."""
    previous = threading.excepthook
    if getattr(previous, "_fathom", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not None and issubclass(args.exc_type, _FinalSignal):
            return
        previous(args)

    hook._fathom = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _echo(value: Any, limit: int) -> str:
    """The repr a REPL prints; a huge str or bytes (say, `context`) is cut before repr copies it."""
    if isinstance(value, str | bytes) and len(value) > limit:
        half = max((limit - 80) // 2, 1)  # leaves room for the marker within the limit
        dropped = len(value) - 2 * half
        return f"{value[:half]!r} ... [{dropped:,} characters not shown] ... {value[-half:]!r}"
    return repr(value)


def make_stub(spec: FunctionSpec, bridge: Bridge) -> Any:
    """The REPL-side function for `spec`: checks the call like Python, then asks the bridge."""
    signature = inspect.Signature([
        inspect.Parameter(
            p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=inspect.Parameter.empty if p.required else p.default,
        )
        for p in spec.params
    ])
    params = {p.name: p for p in spec.params}

    def stub(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        prepared = {name: params[name].prepare(v) for name, v in bound.arguments.items()}
        return bridge.call(spec.name, prepared)

    stub.__name__ = stub.__qualname__ = spec.name
    stub.__doc__ = spec.doc
    stub.__signature__ = signature  # type: ignore[attr-defined]
    return stub
