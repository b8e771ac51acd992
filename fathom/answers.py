"""Typed answers and citations.

A typed answer: `RLM.run(..., schema=X)`, where X is a pydantic model class (or any type
pydantic validates) or a JSON-schema dict, makes the run's FINAL answer a value that must
match X. The engine checks each FINAL with `AnswerSchema.check`; an invalid one is refused
and the errors are shown to the model as its next turn's output.

A citation: REPL code calls `cite(start, end, source=None)` to record a span of its context
as evidence. The parent holds the Context, so the span is checked and its text and line
numbers are read here, never trusted from the worker.
"""

from __future__ import annotations

import ast
import json
import tempfile
import threading
from dataclasses import asdict, dataclass
from typing import Any

from fathom.context import Context, load_spec
from fathom.errors import CallRefused, ConfigError

# Errors shown to the model for one refused answer; the rest are counted, not listed.
MAX_SHOWN_ERRORS = 20
# The longest span one cite() records: evidence is the lines an answer rests on, and every
# citation travels through the channel, the Result and the trace.
MAX_CITATION_CHARS = 20_000


# --- typed answers ------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """What `AnswerSchema.check` made of one candidate answer."""

    value: Any  # the validated value (a pydantic instance, a dict, ...) when `errors` is empty
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """The candidate matches the schema."""
        return not self.errors


class AnswerSchema:
    """The shape a run's answer must have: a pydantic type or a JSON-schema dict."""

    def __init__(self, spec: Any) -> None:
        """ConfigError when `spec` is neither a type pydantic validates nor a valid JSON schema."""
        self.spec = spec
        if isinstance(spec, dict):
            self._validator = _json_schema_validator(spec)
            self.json_schema: dict[str, Any] = spec
            self._adapter = None
        else:
            from pydantic import TypeAdapter
            from pydantic.errors import PydanticUserError

            try:
                self._adapter = TypeAdapter(spec)
                self.json_schema = self._adapter.json_schema()
            except (PydanticUserError, TypeError, ValueError) as exc:
                raise ConfigError(
                    f"schema={spec!r} is not a schema fathom can check ({exc}): pass a pydantic "
                    "model class or a JSON-schema dict."
                ) from exc

    @classmethod
    def of(cls, spec: Any) -> AnswerSchema | None:
        """`spec` as an AnswerSchema (None for no schema); ConfigError if it is not one."""
        return spec if spec is None or isinstance(spec, AnswerSchema) else cls(spec)

    @property
    def name(self) -> str:
        """A short name for messages: the model class's name, or the schema's title."""
        if self._adapter is not None:
            return str(getattr(self.spec, "__name__", self.spec))
        return str(self.json_schema.get("title") or "the JSON schema")

    def check(self, text: str) -> Verdict:
        """Validate a FINAL answer given as text (JSON, a Python literal, or plain text)."""
        parsed = parse_answer(text)
        verdict = self._validate(parsed)
        if not verdict.ok and parsed is not text:
            # FINAL("42") for a string schema: the text itself may be the answer.
            as_text = self._validate(text)
            if as_text.ok:
                return as_text
        return verdict

    def dumps(self, value: Any) -> str:
        """The validated value as JSON text: the trace's and the CLI's form of the answer."""
        if self._adapter is not None:
            return self._adapter.dump_json(value).decode("utf-8")
        return json.dumps(value, ensure_ascii=False)

    def _validate(self, value: Any) -> Verdict:
        if self._adapter is not None:
            from pydantic import ValidationError

            try:
                return Verdict(self._adapter.validate_python(value))
            except ValidationError as exc:
                return Verdict(value, tuple(
                    f"{_path(error['loc'])}: {error['msg']}" for error in exc.errors()
                ))
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(map(str, e.path)))
        return Verdict(value, tuple(f"{_path(e.absolute_path)}: {e.message}" for e in errors))


def parse_answer(text: str) -> Any:
    """A FINAL's text as a value: JSON, else a Python dict/list literal, else the text."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    if stripped[:1] in ("{", "["):
        try:
            return ast.literal_eval(stripped)  # FINAL({'a': 1}) written as text
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return text


def refusal(schema: AnswerSchema, errors: tuple[str, ...]) -> str:
    """The model's next-turn output for an answer the schema refused."""
    shown = [f"- {error}" for error in errors[:MAX_SHOWN_ERRORS]]
    if len(errors) > MAX_SHOWN_ERRORS:
        shown.append(f"- ... and {len(errors) - MAX_SHOWN_ERRORS} more errors")
    return (
        f"Your final answer was refused: it does not match {schema.name}.\n"
        + "\n".join(shown)
        + "\nFix the value and finish again with FINAL_VAR(\"name\") of a dict, or FINAL("
        "JSON text)."
    )


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data (a pydantic instance becomes its dict)."""
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value, fallback=str)


def _json_schema_validator(schema: dict[str, Any]) -> Any:
    try:
        from jsonschema import validators
        from jsonschema.exceptions import SchemaError
    except ImportError:
        raise ConfigError(
            "A JSON-schema dict needs the jsonschema package: pip install jsonschema, or pass "
            "a pydantic model class as schema=."
        ) from None
    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(f"schema is not a valid JSON schema: {exc.message}.") from None
    return cls(schema)


def _path(location: Any) -> str:
    parts = [str(part) for part in location]
    return ".".join(parts) if parts else "(the answer)"


# --- citations ----------------------------------------------------------------------------
ItemKey = str | int | None  # None: a str context; an index of a list, a key of a dict


@dataclass(frozen=True)
class Citation:
    """A span of the context an answer rests on: `text` is item[start:end], lines 1-based."""

    source: ItemKey
    start: int
    end: int
    line_start: int
    line_end: int
    text: str

    def location(self, name: str = "context") -> str:
        """Where the span is, as `path:line` (a dict key), `name[3]:line` or `name:line`."""
        lines = (f"{self.line_start}" if self.line_start == self.line_end
                 else f"{self.line_start}-{self.line_end}")
        if isinstance(self.source, str):
            return f"{self.source}:{lines}"
        if isinstance(self.source, int):
            return f"{name}[{self.source}]:{lines}"
        return f"{name}:{lines}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (Result.to_dict, the trace)."""
        return asdict(self)


class Citer:
    """Checks cite() spans against a run's context and makes Citations; thread-safe.

    An in-memory context is read as it is; a file-backed one is decoded here one item (file)
    at a time, the last one kept, so citing never loads a whole directory into the parent.
    """

    def __init__(self, context: Context) -> None:
        self.context = context
        self._lock = threading.Lock()
        self._cached: tuple[ItemKey, str] | None = None

    def cite(self, start: Any, end: Any, source: Any = None) -> Citation:
        """The Citation of item `source`[start:end]; CallRefused, raised in the REPL, if the
        span is not one of the context's text."""
        text = self._item(source)
        for name, value in (("start", start), ("end", end)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise CallRefused(f"cite: {name} must be a whole number (a character offset), "
                                  f"got {type(value).__name__}.")
        where = _describe(source)
        if not 0 <= start < end <= len(text):
            raise CallRefused(
                f"cite: the span {start}:{end} is outside {where}, which has {len(text):,} "
                "characters: pass 0 <= start < end <= len(text), offsets as str.find gives them."
            )
        if end - start > MAX_CITATION_CHARS:
            raise CallRefused(
                f"cite: the span {start}:{end} has {end - start:,} characters, over the limit "
                f"of {MAX_CITATION_CHARS:,}: cite the lines the answer rests on, in several "
                "cites if need be."
            )
        line_start = text.count("\n", 0, start) + 1
        line_end = line_start + text.count("\n", start, end - 1)
        return Citation(source, start, end, line_start, line_end, text[start:end])

    def _item(self, source: Any) -> str:
        """The text that `source` names in the context; CallRefused when there is none."""
        kind = self.context.kind
        if kind == "str" and source is not None:
            raise CallRefused(f"cite: context is a str, so there is no source {source!r}: "
                              "call cite(start, end) with offsets into context.")
        if kind == "list" and (
            not isinstance(source, int) or isinstance(source, bool) or source < 0
        ):
            raise CallRefused("cite: context is a list: pass source=the index of the item "
                              f"(0 to {self.context.metadata().items - 1}), got {source!r}.")
        if kind == "dict" and not isinstance(source, str):
            raise CallRefused(f"cite: context is a dict: pass source=the key of the item "
                              f"(e.g. a file path), got {source!r}.")
        with self._lock:
            if self._cached is not None and self._cached[0] == source:
                return self._cached[1]
            text = self._load(source)
            self._cached = (source, text)
            return text

    def _load(self, source: ItemKey) -> str:
        if not self.context.files():  # an in-memory value: read it where it is
            item: Any = self.context.load()
            try:
                if source is not None:
                    item = item[source]
            except (IndexError, KeyError):
                raise CallRefused(self._unknown(source)) from None
        else:
            # File sources write nothing to scratch: the spec names the files in place.
            spec = self.context.worker_spec(tempfile.gettempdir())
            if spec["format"] == "files":
                if source not in spec["files"]:
                    raise CallRefused(self._unknown(source))
                spec = {**spec, "files": {source: spec["files"][source]}}
                item = load_spec(spec)[source]  # type: ignore[index]
            else:
                item = load_spec(spec)
        if not isinstance(item, str):
            raise CallRefused(f"cite: {_describe(source)} is a {type(item).__name__}, not text: "
                              "cite spans of str items.")
        return item

    def _unknown(self, source: ItemKey) -> str:
        meta = self.context.metadata()
        if isinstance(source, int):
            return (f"cite: there is no item {source} in context, a list of {meta.items:,} "
                    f"items: pass an index from 0 to {meta.items - 1}.")
        shown = ", ".join(repr(k) for k in meta.keys[:5])
        return (f"cite: there is no key {source!r} in context: pass one of its keys "
                f"({shown}{', ...' if meta.items > 5 else ''}).")


def _describe(source: ItemKey) -> str:
    return "context" if source is None else f"context[{source!r}]"
