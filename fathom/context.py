"""Loading the input of a run as `context`, and the metadata the root model sees instead of it.

A Context holds one of three sources:
- an in-memory value: a str, or a list/dict of JSON-like values (validated once);
- one UTF-8 text file (a path, or stdin spooled to a temporary file): the parent never decodes
  it whole; one streaming pass gives the character and line counts, head and tail;
- several text files (a directory, globs, several paths): a dict key -> text.

`worker_spec(scratch)` is the small JSON-able description a worker process loads with
`load_spec(spec)`, decoding each file once from mmap. Files are never copied; an in-memory
value is written to one file in `scratch`, at most once per Context.
"""

from __future__ import annotations

import glob
import json
import os
import stat
import statistics
import sys
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from fathom.errors import ContextError
from fathom.jsonvalue import check_json, clip, json_len, unsupported
from fathom.textfile import (
    NotUTF8Error,
    TextScan,
    collect_dir,
    decode_file,
    remove_files,
    require_file,
    scan_str,
    scan_text,
    sniff_binary,
    spill,
    spool,
)

ContextKind = Literal["str", "list", "dict"]
PREVIEW_CHARS = 500  # head + tail shown to the root model, in characters
TAIL_CHARS = 100  # the part of PREVIEW_CHARS given to the end of a long text
FIRST_KEYS = 10
SPEC_VERSION = 1
_ERRORS = ("strict", "replace")


@dataclass(frozen=True)
class ContextMetadata:
    """What the root model is told about the context: never more than PREVIEW_CHARS of it."""

    kind: str
    total_chars: int
    items: int
    item_lengths: dict[str, float] = field(default_factory=dict)  # min / median / max chars
    preview: str = ""  # the start of the content (a JSON rendering for list/dict)
    source: str | None = None
    skipped: tuple[str, ...] = ()  # files left out of a directory or path list
    tail: str = ""  # the end of a str longer than PREVIEW_CHARS
    lines: int | None = None  # for a str
    keys: tuple[str, ...] = ()  # the first keys of a dict
    skip_reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the trace."""
        return {
            "kind": self.kind,
            "total_chars": self.total_chars,
            "items": self.items,
            "item_lengths": self.item_lengths,
            "preview": self.preview,
            "tail": self.tail,
            "lines": self.lines,
            "keys": list(self.keys),
            "source": self.source,
            "skipped": list(self.skipped),
            "skip_reasons": self.skip_reasons,
        }

    def describe(self) -> str:
        """The text for the root prompt: type, sizes, first keys, preview, skipped files."""
        if self.kind == "str":
            size = f"{self.total_chars:,} characters"
            if self.lines is not None:
                size += f" in {self.lines:,} line{'s' if self.lines != 1 else ''}"
            out = [f"Type: str ({size})"]
        else:
            what = "dict (key -> value)" if self.kind == "dict" else "list"
            out = [f"Type: {what} with {self.items:,} items, {self.total_chars:,} characters"
                   " in total"]
            if self.item_lengths:
                lengths = self.item_lengths
                out.append(
                    f"Item lengths in characters: min {lengths['min']:,.0f}, "
                    f"median {lengths['median']:,.0f}, max {lengths['max']:,.0f}"
                )
        if self.keys:
            more = self.items - len(self.keys)
            out.append("First keys: " + ", ".join(repr(k) for k in self.keys)
                       + (f" (and {more:,} more)" if more > 0 else ""))
        if self.source:
            out.append(f"Source: {self.source}")
        if self.tail:
            out.append(f"First {len(self.preview)} characters:\n{self.preview}")
            out.append(f"Last {len(self.tail)} characters:\n{self.tail}")
        elif self.preview:
            whole = self.kind == "str" and len(self.preview) == self.total_chars
            label = "The whole text" if whole else f"Preview (first {len(self.preview)} characters)"
            out.append(f"{label}:\n{self.preview}")
        if self.skipped:
            shown = [f"{p} ({self.skip_reasons.get(p, 'skipped')})" for p in self.skipped[:20]]
            more = len(self.skipped) - len(shown)
            out.append(f"Skipped {len(self.skipped)} files (not in the context): "
                       + ", ".join(shown) + (f" and {more} more" if more else ""))
        return "\n".join(out)


class Context:
    """The input of a run: loaded at most once, described by metadata."""

    def __init__(self, value: str | list[Any] | dict[str, Any], *, source: str | None = None):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, str | list | dict):
            raise ContextError(unsupported(value, "context"))
        if not isinstance(value, str):
            check_json(value)
        self.source = source
        self._kind: ContextKind = _kind_of(value)
        self._value: Any = value
        self._loaded = True
        self._text_file: Path | None = None  # a file-backed str
        self._files: dict[str, Path] | None = None  # a file-backed dict key -> text
        self._scans: dict[str, TextScan] = {}
        self._errors = "strict"
        self._skipped: dict[str, str] = {}
        self._meta: ContextMetadata | None = None
        self._spilled: Path | None = None
        self._owned: list[Path] = []  # temporary files removed by close()
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, remove_files, self._owned)

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def from_value(cls, value: Any) -> Context:
        """Wrap any supported input: str, list, dict, pathlib.Path or Context."""
        if isinstance(value, Context):
            return value
        if isinstance(value, os.PathLike):
            return cls.from_path(Path(value))
        return cls(value)

    @classmethod
    def from_text(cls, text: str, *, source: str | None = None) -> Context:
        """A str context held in memory."""
        if not isinstance(text, str):
            raise ContextError(unsupported(text, "text"))
        return cls(text, source=source)

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
            return cls._from_files(files, skipped, source=f"directory {path}")
        require_file(path)
        return cls._from_text_file(path, errors=errors, source=str(path))

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
        files: dict[str, Path] = {}
        skipped: dict[str, str] = {}
        owned: list[Path] = []
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
        ctx = cls._from_files(files, skipped, source=", ".join(os.fspath(i) for i in items))
        ctx._owned.extend(owned)
        return ctx

    @classmethod
    def from_stdin(cls, stream: IO[bytes] | None = None, *, errors: str = "strict") -> Context:
        """Standard input (or `stream`) as a str, spooled to a temporary file, not to memory."""
        _check_errors(errors)
        spooled = spool(stream if stream is not None else sys.stdin.buffer)
        try:
            ctx = cls._from_text_file(spooled, errors=errors, source="<stdin>")
        except ContextError:
            spooled.unlink(missing_ok=True)
            raise
        ctx._owned.append(spooled)
        return ctx

    @classmethod
    def _from_text_file(cls, path: Path, *, errors: str, source: str) -> Context:
        ctx = cls("", source=source)
        ctx._loaded, ctx._value = False, None
        ctx._text_file, ctx._errors = path.resolve(), errors
        ctx._scans[""] = scan_text(path, errors, PREVIEW_CHARS, TAIL_CHARS)
        return ctx

    @classmethod
    def _from_files(
        cls, files: dict[str, Path], skipped: dict[str, str], *, source: str
    ) -> Context:
        ctx = cls({}, source=source)
        ctx._loaded, ctx._value = False, None
        ctx._files, ctx._errors = {}, "replace"
        for key in sorted(files):
            reason = sniff_binary(files[key])
            if reason is None:
                try:
                    ctx._scans[key] = scan_text(files[key], "strict", PREVIEW_CHARS, TAIL_CHARS)
                except NotUTF8Error:
                    reason = "not UTF-8 text"
                except ContextError as exc:
                    reason = f"unreadable: {exc}"
            if reason is None:
                ctx._files[key] = files[key].resolve()
            else:
                skipped[key] = reason
        ctx._skipped = dict(sorted(skipped.items()))
        if not ctx._files:
            left = ", ".join(f"{k} ({v})" for k, v in list(ctx._skipped.items())[:10])
            raise ContextError(f"No UTF-8 text files found in {source}"
                               + (f"; skipped: {left}" if left else "")
                               + ". Pass text files, or convert the files to UTF-8.")
        return ctx

    # -- use ------------------------------------------------------------------------------
    @property
    def kind(self) -> ContextKind:
        """"str", "list" or "dict"."""
        return self._kind

    @property
    def skipped(self) -> tuple[str, ...]:
        """Files of a directory or path list that were left out (binary, not UTF-8, ...)."""
        return tuple(self._skipped)

    def metadata(self) -> ContextMetadata:
        """Type, size, item-length summary, first keys and a short preview (computed once)."""
        if self._meta is None:
            self._meta = self._compute_metadata()
        return self._meta

    def load(self) -> str | list[Any] | dict[str, Any]:
        """The value itself, decoded at most once (for an in-process sandbox)."""
        with self._lock:
            if not self._loaded:
                self._value = load_spec(self._file_spec())
                self._loaded = True
            return self._value

    def worker_spec(self, scratch: str | os.PathLike[str]) -> dict[str, Any]:
        """A JSON-able description a worker loads with `load_spec`; files are never copied.

        `spec["paths"]` lists the files the worker must be able to read and `spec["bytes"]`
        their total size (the worker needs 1-4 bytes of memory per character, plus the file
        mapped while decoding).
        """
        if self._text_file is not None or self._files is not None:
            return self._file_spec()
        with self._lock:
            if self._spilled is None or not _untouched(self._spilled):
                self._spilled = spill(self._value, Path(scratch))
                self._owned.append(self._spilled)
            spilled = self._spilled
        fmt = "text" if self._kind == "str" else "json"
        return {"v": SPEC_VERSION, "format": fmt, "kind": self._kind, "path": str(spilled),
                "errors": "surrogatepass", "paths": [str(spilled)],
                "bytes": spilled.stat().st_size}

    def close(self) -> None:
        """Remove the temporary files this Context wrote (a spilled value, spooled stdin)."""
        with self._lock:
            remove_files(self._owned)
            self._spilled = None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        meta = self.metadata()
        return f"<Context {meta.kind}, {meta.total_chars:,} chars, source={meta.source!r}>"

    def files(self) -> list[Path]:
        """The files this context reads from disk (none for an in-memory value)."""
        if self._text_file is not None:
            return [self._text_file]
        return list(self._files.values()) if self._files is not None else []

    def _file_spec(self) -> dict[str, Any]:
        for source in self.files():
            if not source.exists():
                raise ContextError(
                    f"The context file {source} no longer exists (was it deleted, or this "
                    "Context closed?); build the Context again."
                )
        if self._text_file is not None:
            path = str(self._text_file)
            return {"v": SPEC_VERSION, "format": "text", "kind": "str", "path": path,
                    "errors": self._errors, "paths": [path], "bytes": self._scans[""].size}
        if self._files is not None:
            files = {key: str(path) for key, path in self._files.items()}
            return {"v": SPEC_VERSION, "format": "files", "kind": "dict", "files": files,
                    "errors": self._errors, "paths": sorted(set(files.values())),
                    "bytes": sum(self._scans[key].size for key in files)}
        raise ContextError("This Context holds an in-memory value, not files.")

    def _compute_metadata(self) -> ContextMetadata:
        common: dict[str, Any] = {"kind": self._kind, "source": self.source}
        if self._kind == "str":
            if self._text_file is not None:
                scan = self._scans[""]
            else:
                scan = scan_str(self._value, PREVIEW_CHARS, TAIL_CHARS)
            head, tail = _split_preview(scan)
            return ContextMetadata(total_chars=scan.chars, items=1, preview=head, tail=tail,
                                   lines=scan.lines, **common)
        if self._files is not None:
            lengths = [self._scans[key].chars for key in self._files]
            keys = list(self._files)
            clipped: Any = {k: self._scans[k].head[:PREVIEW_CHARS] for k in keys[:FIRST_KEYS]}
            common["skipped"] = tuple(self._skipped)
            common["skip_reasons"] = dict(self._skipped)
        else:
            value = self._value
            items = list(value.values()) if isinstance(value, dict) else value
            lengths = [len(v) if isinstance(v, str) else json_len(v) for v in items]
            keys = list(value) if isinstance(value, dict) else []
            clipped = clip(value, PREVIEW_CHARS, FIRST_KEYS)
        preview = json.dumps(clipped, ensure_ascii=False)[:PREVIEW_CHARS] if lengths else ""
        summary: dict[str, float] = {}
        if lengths:
            summary = {"min": min(lengths), "median": statistics.median(lengths),
                       "max": max(lengths)}
        return ContextMetadata(total_chars=sum(lengths), items=len(lengths), item_lengths=summary,
                               preview=preview, keys=tuple(keys[:FIRST_KEYS]), **common)


def load_spec(spec: dict[str, Any]) -> str | list[Any] | dict[str, Any]:
    """Load a context from `Context.worker_spec` output (in the worker), one decode per file."""
    fmt, errors = spec.get("format"), spec.get("errors", "strict")
    if spec.get("v") != SPEC_VERSION or fmt not in ("text", "json", "files"):
        raise ContextError(f"Unknown context spec {spec!r}: the parent and the worker must run "
                           "the same fathom version.")
    if fmt == "files":
        return {key: decode_file(Path(path), errors) for key, path in spec["files"].items()}
    text = decode_file(Path(spec["path"]), errors)
    if fmt == "text":
        return text
    value = json.loads(text)
    del text  # the parsed value is what stays; let the JSON text go before the REPL starts
    return value


def _kind_of(value: str | list[Any] | dict[str, Any]) -> ContextKind:
    if isinstance(value, str):
        return "str"
    return "list" if isinstance(value, list) else "dict"


def _split_preview(scan: TextScan) -> tuple[str, str]:
    """Head and tail sharing PREVIEW_CHARS; the whole text when it fits."""
    if scan.chars <= PREVIEW_CHARS:
        return scan.head, ""
    return scan.head[: PREVIEW_CHARS - TAIL_CHARS], scan.tail


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _check_errors(errors: str) -> None:
    if errors not in _ERRORS:
        raise ContextError(f"errors={errors!r} is not supported: use 'strict' or 'replace'.")


def _untouched(path: Path) -> bool:
    """Whether a file we spilled is still ours: a regular file we own, with one link.

    Sandbox code can write in scratch; if it replaced the spill with a symlink or a hard
    link to a secret, the next worker would load that secret as `context`.
    """
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and info.st_nlink == 1

