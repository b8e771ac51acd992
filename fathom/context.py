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
from fathom.textfile import check_encoding, collect_dir, remove_files, require_file, spool

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
        """Wrap any supported input: str, list, dict, pathlib.Path or Context.

        An empty str is a ContextError (a run on it could only guess); an empty list or dict
        is a value like any other.
        """
        if isinstance(value, Context):
            return value
        if isinstance(value, os.PathLike):
            return cls.from_path(Path(value))
        if isinstance(value, str) and not value:
            raise ContextError("The context is an empty str: pass the text to ask about.")
        return cls(ValueSource(value))

    @classmethod
    def from_text(cls, text: str, *, source: str | None = None) -> Context:
        """A str context held in memory; `source` names where it came from."""
        if not isinstance(text, str):
            raise ContextError(unsupported(text, "text"))
        return cls(ValueSource(text, label=source))

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, errors: str = "strict",
                  encoding: str | None = None, include_ignored: bool = False) -> Context:
        """A file becomes its text; a directory a dict relative path -> text.

        Files are read as `encoding`, by default the one a byte-order mark names (UTF-8,
        UTF-16, UTF-32), else UTF-8. `errors="strict"` rejects a file that does not decode;
        `errors="replace"` reads it anyway with U+FFFD for the bad bytes. Files of a directory
        that are binary or do not decode are skipped and listed in `metadata().skipped`, and
        so are what its .gitignore files ignore and folders such as .venv or node_modules
        (textfile.SKIPPED_DIRS), unless `include_ignored`. An empty file, or a directory
        without text, is a ContextError.
        """
        _check_errors(errors)
        encoding = check_encoding(encoding)
        path = Path(path).expanduser()
        if path.is_dir():
            files, skipped = collect_dir(path, prefix="", include_ignored=include_ignored)
            source: Source = FilesSource(files, skipped, label=f"directory {path}",
                                         encoding=encoding)
        else:
            require_file(path)
            source = TextFileSource(path, errors=errors, label=str(path), encoding=encoding)
        return _with_text(cls(source))

    @classmethod
    def from_paths(
        cls, items: Iterable[str | os.PathLike[str]], *, errors: str = "strict",
        encoding: str | None = None, include_ignored: bool = False,
    ) -> Context:
        """CLI inputs: one file -> str; "-" -> stdin text; several, a directory or globs -> dict.

        `errors`, `encoding` and `include_ignored` as for `from_path`.
        """
        items = [items] if isinstance(items, str | os.PathLike) else list(items)
        if not items:
            raise ContextError("No context given: pass a file, a directory, a glob or '-'.")
        if len(items) == 1 and os.fspath(items[0]) == "-":
            return cls.from_stdin(errors=errors, encoding=encoding)
        only = os.fspath(items[0])
        if len(items) == 1 and (not _is_glob(only) or Path(only).expanduser().exists()):
            return cls.from_path(items[0], errors=errors, encoding=encoding,
                                 include_ignored=include_ignored)
        if sum(os.fspath(item) == "-" for item in items) > 1:
            raise ContextError("'-' (standard input) can be given only once: it is read once.")
        _check_errors(errors)
        encoding = check_encoding(encoding)
        owned: list[Path] = []  # spooled stdin
        try:
            files, skipped = _gather(items, owned, include_ignored)
            label = ", ".join(os.fspath(item) for item in items)
            source = FilesSource(files, skipped, label=label, owned=owned, encoding=encoding)
        except ContextError:
            remove_files(owned)
            raise
        return _with_text(cls(source))

    @classmethod
    def from_stdin(cls, stream: IO[bytes] | None = None, *, errors: str = "strict",
                   encoding: str | None = None) -> Context:
        """Standard input (or `stream`) as a str, spooled to a temporary file, not to memory.

        Empty input is a ContextError; `errors` and `encoding` as for `from_path`.
        """
        _check_errors(errors)
        encoding = check_encoding(encoding)
        spooled = spool(stream if stream is not None else sys.stdin.buffer)
        try:
            source = TextFileSource(spooled, errors=errors, label="<stdin>", owned=True,
                                    encoding=encoding)
        except ContextError:
            spooled.unlink(missing_ok=True)
            raise
        return _with_text(cls(source))

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
    items: list[str | os.PathLike[str]], owned: list[Path], include_ignored: bool
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
                found, left = collect_dir(path, prefix=key + "/",
                                          include_ignored=include_ignored)
                files.update(found)
                skipped.update(left)
            else:
                require_file(path)
                files[key] = path
    return files, skipped


def _with_text(context: Context) -> Context:
    """`context`, or ContextError (closing it) when there is no character to ask about."""
    meta = context.metadata()
    if meta.total_chars:
        return context
    context.close()
    if meta.source == "<stdin>":
        raise ContextError("Standard input is empty: pipe text in (cat notes.md | fathom ask - "
                           "...) and check that the command before the pipe printed it, or "
                           "pass a file instead of '-'.")
    if meta.kind == "str":
        raise ContextError(f"Context file {meta.source} is empty: pass a file with text in it.")
    raise ContextError(f"The {meta.items} text file(s) of {meta.source} are all empty: pass "
                       "files with text in them.")


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _check_errors(errors: str) -> None:
    if errors not in _ERRORS:
        raise ContextError(f"errors={errors!r} is not supported: use 'strict' or 'replace'.")
