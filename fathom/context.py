"""Loading the input as `context`, and the metadata the root model sees instead of it.

FIRST DRAFT (interface is the contract; the context owner improves internals):
  Context.from_value(value) -> Context       str | list | dict | Path | Context
  ctx.kind                                    "str" | "list" | "dict"
  ctx.load() -> str | list | dict             the value, for an in-process sandbox
  ctx.to_file() -> (Path, "text" | "json")    a file holding it; written at most once
  ctx.metadata() -> ContextMetadata           what the root prompt describes
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fathom.errors import ContextError

ContextKind = Literal["str", "list", "dict"]
FileFormat = Literal["text", "json"]
PREVIEW_CHARS = 500


@dataclass(frozen=True)
class ContextMetadata:
    """What the root model is told about the context (never the content itself)."""

    kind: str
    total_chars: int
    items: int
    item_lengths: dict[str, float] = field(default_factory=dict)
    preview: str = ""
    source: str | None = None
    skipped: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the trace."""
        return {
            "kind": self.kind,
            "total_chars": self.total_chars,
            "items": self.items,
            "item_lengths": self.item_lengths,
            "preview": self.preview,
            "source": self.source,
            "skipped": list(self.skipped),
        }


class Context:
    """The input of a run, loaded once and described by metadata."""

    def __init__(self, value: str | list[Any] | dict[str, Any], *, source: str | None = None):
        if not isinstance(value, str | list | dict):
            raise ContextError(
                f"Context of type {type(value).__name__} is not supported: pass a str, "
                "a list or dict of JSON-like values, a pathlib.Path, or a fathom.Context."
            )
        self._value = value
        self.source = source
        self.skipped: tuple[str, ...] = ()
        self._file: tuple[Path, FileFormat] | None = None

    @property
    def kind(self) -> ContextKind:
        """"str", "list" or "dict"."""
        if isinstance(self._value, str):
            return "str"
        return "list" if isinstance(self._value, list) else "dict"

    @classmethod
    def from_value(cls, value: Any) -> Context:
        """Wrap any supported input as a Context."""
        if isinstance(value, Context):
            return value
        if isinstance(value, Path):
            return cls.from_path(value)
        return cls(value)

    @classmethod
    def from_path(cls, path: Path) -> Context:
        """A file becomes its text; a directory a dict of relative path -> text."""
        if path.is_dir():
            files: dict[str, str] = {}
            skipped: list[str] = []
            for item in sorted(p for p in path.rglob("*") if p.is_file()):
                rel = str(item.relative_to(path))
                try:
                    files[rel] = item.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError):
                    skipped.append(rel)
            ctx = cls(files, source=str(path))
            ctx.skipped = tuple(skipped)
            return ctx
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ContextError(f"Context file {path} does not exist; check the path.") from exc
        except UnicodeDecodeError as exc:
            raise ContextError(f"Context file {path} is not UTF-8 text ({exc.reason}).") from exc
        except OSError as exc:
            raise ContextError(f"Cannot read context file {path}: {exc.strerror}.") from exc
        return cls(text, source=str(path))

    def load(self) -> str | list[Any] | dict[str, Any]:
        """The context value itself."""
        return self._value

    def to_file(self) -> tuple[Path, FileFormat]:
        """A file holding the whole context, for a worker process to load itself."""
        if self._file is None:
            fmt: FileFormat = "text" if self.kind == "str" else "json"
            handle = tempfile.NamedTemporaryFile(
                "w", suffix=".txt" if fmt == "text" else ".json", delete=False, encoding="utf-8"
            )
            with handle:
                if isinstance(self._value, str):
                    handle.write(self._value)
                else:
                    json.dump(self._value, handle, ensure_ascii=False)
            self._file = (Path(handle.name), fmt)
        return self._file

    def metadata(self) -> ContextMetadata:
        """Type, size, item-length summary and a short preview."""
        value = self._value
        if isinstance(value, str):
            lengths = [len(value)]
            preview = value[:PREVIEW_CHARS]
        else:
            items = list(value.values()) if isinstance(value, dict) else value
            lengths = [len(v) if isinstance(v, str) else len(json.dumps(v)) for v in items]
            preview = json.dumps(value, ensure_ascii=False)[:PREVIEW_CHARS] if lengths else ""
        summary = (
            {"min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths)}
            if lengths
            else {}
        )
        return ContextMetadata(
            kind=self.kind,
            total_chars=sum(lengths),
            items=len(lengths),
            item_lengths=summary,
            preview=preview,
            source=self.source,
            skipped=self.skipped,
        )
