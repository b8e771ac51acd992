"""The input of a run as `context`: a value, paths, globs or stdin, made into one source.

The sources (an in-memory value, one text file, a set of files), the metadata the root model
sees instead of the value and `load_spec`, which a worker loads the value with, are in
fathom.sources.
"""

from __future__ import annotations

import glob
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from fathom.errors import ContextError
from fathom.jsonvalue import unsupported
from fathom.sources import (
    PREVIEW_CHARS,
    ContextKind,
    ContextMetadata,
    FilesSource,
    Source,
    TextFileSource,
    Value,
    ValueSource,
    load_spec,
)
from fathom.textfile import collect_dir, remove_files, require_file, spool

__all__ = ["PREVIEW_CHARS", "Context", "ContextKind", "ContextMetadata", "load_spec"]
_ERRORS = ("strict", "replace")


class Context:
    """The input of a run: one source, loaded at most once, described by metadata."""

    def __init__(self, value: Source | Value) -> None:
        """`Context(value)` holds a value in memory; the from_* constructors read files."""
        self._source = value if isinstance(value, Source) else ValueSource(value)
        self._value: Value | None = None
        self._meta: ContextMetadata | None = None
        self._lock = threading.Lock()

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def from_value(cls, value: Any) -> Context:
        """Wrap any supported input: str, list, dict, pathlib.Path or Context."""
        if isinstance(value, Context):
            return value
        if isinstance(value, os.PathLike):
            return cls.from_path(Path(value))
        return cls(ValueSource(value))

    @classmethod
    def from_text(cls, text: str, *, source: str | None = None) -> Context:
        """A str context held in memory; `source` names where it came from."""
        if not isinstance(text, str):
            raise ContextError(unsupported(text, "text"))
        return cls(ValueSource(text, label=source))

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, errors: str = "strict") -> Context:
        """A file becomes its text; a directory a dict relative path -> text.

        `errors="strict"` rejects a file that is not valid UTF-8; `errors="replace"` reads it
        anyway with U+FFFD for the bad bytes. Files of a directory that are binary or not
        UTF-8 are skipped and listed in `metadata().skipped`.
        """
        _check_errors(errors)
        path = Path(path).expanduser()
        if path.is_dir():
            files, skipped = collect_dir(path, prefix="")
            return cls(FilesSource(files, skipped, label=f"directory {path}"))
        require_file(path)
        return cls(TextFileSource(path, errors=errors, label=str(path)))

    @classmethod
    def from_paths(
        cls, items: Iterable[str | os.PathLike[str]], *, errors: str = "strict"
    ) -> Context:
        """CLI inputs: one file -> str; "-" -> stdin text; several, a directory or globs -> dict."""
        items = [items] if isinstance(items, str | os.PathLike) else list(items)
        if not items:
            raise ContextError("No context given: pass a file, a directory, a glob or '-'.")
        if len(items) == 1 and os.fspath(items[0]) == "-":
            return cls.from_stdin(errors=errors)
        only = os.fspath(items[0])
        if len(items) == 1 and (not _is_glob(only) or Path(only).expanduser().exists()):
            return cls.from_path(items[0], errors=errors)
        if sum(os.fspath(item) == "-" for item in items) > 1:
            raise ContextError("'-' (standard input) can be given only once: it is read once.")
        owned: list[Path] = []  # spooled stdin
        try:
            files, skipped = _gather(items, owned)
            label = ", ".join(os.fspath(item) for item in items)
            return cls(FilesSource(files, skipped, label=label, owned=owned))
        except ContextError:
            remove_files(owned)
            raise

    @classmethod
    def from_stdin(cls, stream: IO[bytes] | None = None, *, errors: str = "strict") -> Context:
        """Standard input (or `stream`) as a str, spooled to a temporary file, not to memory."""
        _check_errors(errors)
        spooled = spool(stream if stream is not None else sys.stdin.buffer)
        try:
            return cls(TextFileSource(spooled, errors=errors, label="<stdin>", owned=True))
        except ContextError:
            spooled.unlink(missing_ok=True)
            raise

    # -- use ------------------------------------------------------------------------------
    @property
    def kind(self) -> ContextKind:
        """"str", "list" or "dict"."""
        return self._source.kind

    @property
    def skipped(self) -> tuple[str, ...]:
        """Files of a directory or path list that were left out (binary, not UTF-8, ...)."""
        return tuple(self._source.skipped)

    def metadata(self) -> ContextMetadata:
        """Type, size, item-length summary, first keys and a short preview (computed once)."""
        if self._meta is None:
            self._meta = self._source.metadata()
        return self._meta

    def load(self) -> Value:
        """The value itself, decoded at most once (for an in-process sandbox)."""
        with self._lock:
            if self._value is None:
                self._value = self._source.load()
            return self._value

    def worker_spec(self, scratch: str | os.PathLike[str]) -> dict[str, Any]:
        """A JSON-able description a worker loads with `load_spec`; files are never copied.

        `spec["paths"]` lists the files the worker must be able to read and `spec["bytes"]`
        their total size. An in-memory value is written to one file in `scratch`, at most once.
        """
        return self._source.worker_spec(Path(scratch))

    def files(self) -> list[Path]:
        """The files this context reads from disk (none for an in-memory value)."""
        return self._source.files()

    def close(self) -> None:
        """Remove the temporary files this Context wrote (a spilled value, spooled stdin)."""
        self._source.close()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        meta = self.metadata()
        return f"<Context {meta.kind}, {meta.total_chars:,} chars, source={meta.source!r}>"


def _gather(
    items: list[str | os.PathLike[str]], owned: list[Path]
) -> tuple[dict[str, Path], dict[str, str]]:
    """Paths, directories and globs -> key -> file, and the files left out -> why.

    "-" is standard input, spooled to a file appended to `owned`.
    """
    files: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for item in items:
        text = os.fspath(item)
        if text == "-":
            owned.append(spool(sys.stdin.buffer))
            files["<stdin>"] = owned[-1]
            continue
        matches = [text]
        if _is_glob(text) and not Path(text).exists():
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                raise ContextError(f"The pattern {text!r} matched no files; check it "
                                   "(use ** to match files in subdirectories).")
        for match in matches:
            path, key = Path(match).expanduser(), Path(os.path.normpath(match)).as_posix()
            if path.is_dir():
                found, left = collect_dir(path, prefix=key + "/")
                files.update(found)
                skipped.update(left)
            else:
                require_file(path)
                files[key] = path
    return files, skipped


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _check_errors(errors: str) -> None:
    if errors not in _ERRORS:
        raise ContextError(f"errors={errors!r} is not supported: use 'strict' or 'replace'.")
