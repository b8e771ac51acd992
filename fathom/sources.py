"""Where a context's value comes from: three sources, each describing, loading and closing itself.

- ValueSource: a str, or a list/dict of JSON-like values, held in memory (validated once);
- TextFileSource: one text file (UTF-8, or the encoding named or marked by a BOM), a str the
  parent never decodes whole: one streaming pass gives the character and line counts, head
  and tail;
- FilesSource: several text files, a dict key -> text.

`worker_spec(scratch)` is the small JSON-able description a worker process loads with
`load_spec(spec)`, decoding each file once from mmap. Files are never copied; an in-memory
value is written to one file in `scratch`, at most once per source, and counted against a
SpillQuota when it has one (a run tree's child contexts share one).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import stat
import statistics
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from fathom.errors import ContextError
from fathom.jsonvalue import check_json, clip, json_len, unsupported, write_json
from fathom.textfile import (
    CHUNK,
    BinaryFileError,
    NotUTF8Error,
    TextScan,
    binary_file,
    decode_file,
    file_encoding,
    remove_files,
    scan_str,
    scan_text,
    sniff_binary,
    spill,
)

ContextKind = Literal["str", "list", "dict"]
Value = str | list[Any] | dict[str, Any]
PREVIEW_CHARS = 500  # head + tail shown to the root model, in characters
TAIL_CHARS = 100  # the part of PREVIEW_CHARS given to the end of a long text
FIRST_KEYS = 10
SPEC_VERSION = 1


@dataclass(frozen=True)
class ContextMetadata:
    """What the root model is told about the context: never more than PREVIEW_CHARS of it."""

    kind: ContextKind
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
    # What a replay needs to read the input again: see `file_inputs`. None for a value.
    inputs: dict[str, Any] | None = None

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
            "inputs": self.inputs,
        }


class Source(ABC):
    """One place a context's value comes from. `label` names it for the root model."""

    kind: ContextKind

    def __init__(self, label: str | None, owned: Iterable[Path] = ()) -> None:
        self.label = label
        self._owned = list(owned)  # temporary files removed by close()
        weakref.finalize(self, remove_files, self._owned)

    @abstractmethod
    def metadata(self) -> ContextMetadata:
        """Type, size, item-length summary, first keys and a short preview."""

    @abstractmethod
    def load(self) -> Value:
        """The value itself (decoded from disk each time, for a file-backed source)."""

    @abstractmethod
    def worker_spec(self, scratch: Path) -> dict[str, Any]:
        """What a worker loads with `load_spec`.

        `spec["paths"]` lists the files the worker must be able to read and `spec["bytes"]`
        their total size (the worker needs 1-4 bytes of memory per character, plus the file
        mapped while decoding).
        """

    def files(self) -> list[Path]:
        """The files read from disk (none for an in-memory value)."""
        return []

    @property
    def skipped(self) -> dict[str, str]:
        """Files left out (binary, not UTF-8, ...) -> why."""
        return {}

    def close(self) -> None:
        """Remove the temporary files this source wrote (a spilled value, spooled stdin)."""
        remove_files(self._owned)


class SpillQuota:
    """Bytes of spilled context files that may be on disk at once (thread-safe).

    A run tree's child contexts share one: the parent writes each before the child's
    sandbox (and its tmpfs disk quota) exists, on the host's disk.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.held = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> None:
        """Count `size` bytes in, or raise ContextError saying why they do not fit."""
        with self._lock:
            if self.held + size <= self.limit_bytes:
                self.held += size
                return
            held = self.held
        raise ContextError(
            f"This context takes {_mb(size)} on disk, but the child contexts of one run may "
            f"take {_mb(self.limit_bytes)} together (the sandbox disk quota) and {_mb(held)} "
            "are held by children still running: pass a smaller context (a slice, or only the "
            "part the child needs), or start fewer children at once."
        )

    def release(self, size: int) -> None:
        """Give back bytes counted in by `reserve` (the file is gone)."""
        with self._lock:
            self.held -= size


class ValueSource(Source):
    """A value held in memory; a worker gets it written to one file in its scratch.

    With a `quota`, the file is counted against it before it is written, and given back
    when the source closes.
    """

    def __init__(
        self, value: Value | tuple[Any, ...], label: str | None = None,
        quota: SpillQuota | None = None,
    ) -> None:  # fmt: skip
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, str | list | dict):
            raise ContextError(unsupported(value, "context"))
        if not isinstance(value, str):
            check_json(value)
        super().__init__(label)
        self.value: Value = value
        self.kind = _kind_of(value)
        self._spilled: Path | None = None
        self._lock = threading.Lock()
        self._quota = quota
        self._reserved = 0  # bytes of the spilled file counted against the quota

    def metadata(self) -> ContextMetadata:
        value = self.value
        if isinstance(value, str):
            return _text_metadata(scan_str(value, PREVIEW_CHARS, TAIL_CHARS), self.label)
        items = value.values() if isinstance(value, dict) else value
        lengths = [len(v) if isinstance(v, str) else json_len(v) for v in items]
        keys = tuple(itertools.islice(value, FIRST_KEYS)) if isinstance(value, dict) else ()
        return _items_metadata(self.kind, lengths, keys, clip(value, PREVIEW_CHARS, FIRST_KEYS),
                               self.label)

    def load(self) -> Value:
        return self.value

    def worker_spec(self, scratch: Path) -> dict[str, Any]:
        """Written at most once: again only if the file was deleted or replaced since."""
        with self._lock:
            if self._spilled is None or not _untouched(self._spilled):
                self._drop_spill()
                if self._quota is not None:
                    size = spilled_size(self.value)
                    self._quota.reserve(size)
                    self._reserved = size
                self._spilled = spill(self.value, Path(scratch))
                self._owned.append(self._spilled)
            spilled = self._spilled
        fmt = "text" if self.kind == "str" else "json"
        return {"v": SPEC_VERSION, "format": fmt, "kind": self.kind, "path": str(spilled),
                "errors": "surrogatepass", "paths": [str(spilled)],
                "bytes": spilled.stat().st_size}

    def close(self) -> None:
        with self._lock:
            super().close()
            self._spilled = None
            self._drop_spill()

    def _drop_spill(self) -> None:
        """Remove the spilled file (if any) and give its bytes back to the quota."""
        if self._spilled is not None:
            self._spilled.unlink(missing_ok=True)
            self._spilled = None
        if self._quota is not None and self._reserved:
            self._quota.release(self._reserved)
            self._reserved = 0


class _ByteCounter(io.RawIOBase):
    """A sink that only counts the bytes written to it."""

    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.size += len(data)
        return len(data)


def spilled_size(value: Value) -> int:
    """The bytes `spill` writes for `value`, counted without writing them."""
    if isinstance(value, str) and value.isascii():  # O(1): CPython knows
        return len(value)
    counter = _ByteCounter()
    out = io.TextIOWrapper(io.BufferedWriter(counter), encoding="utf-8", errors="surrogatepass",
                           newline="")  # fmt: skip
    if isinstance(value, str):
        for start in range(0, len(value), CHUNK):
            out.write(value[start : start + CHUNK])
    else:
        write_json(value, out)
    out.flush()
    return counter.size


class TextFileSource(Source):
    """One text file, a str: scanned once here, decoded only where it is used."""

    kind: ContextKind = "str"

    def __init__(self, path: Path, *, errors: str, label: str, owned: bool = False,
                 encoding: str | None = None) -> None:
        """`owned`: the file is ours to remove on close (spooled stdin). `encoding` None:
        the one a byte-order mark names, else UTF-8. BinaryFileError for NUL bytes."""
        self.encoding = file_encoding(path, encoding)
        if sniff_binary(path, self.encoding) == "binary":
            raise BinaryFileError(binary_file(label))
        self._scan = scan_text(path, errors, PREVIEW_CHARS, TAIL_CHARS, self.encoding)
        self.path = path.resolve()
        self.errors = errors
        super().__init__(label, owned=[path] if owned else [])

    def metadata(self) -> ContextMetadata:
        meta = _text_metadata(self._scan, self.label)
        return replace(meta, inputs=file_inputs(
            {"": self.path}, self.errors, bool(self._owned), self.encoding
        ))

    def load(self) -> Value:
        return load_spec(self._spec())

    def worker_spec(self, scratch: Path) -> dict[str, Any]:
        return self._spec()  # the worker reads the file in place: nothing goes to scratch

    def files(self) -> list[Path]:
        return [self.path]

    def _spec(self) -> dict[str, Any]:
        _require_existing(self.files())
        path = str(self.path)
        return {"v": SPEC_VERSION, "format": "text", "kind": "str", "path": path,
                "encoding": self.encoding, "errors": self.errors, "paths": [path],
                "bytes": self._scan.size}


class FilesSource(Source):
    """Text files as a dict key -> text; files that are binary or do not decode are skipped."""

    kind: ContextKind = "dict"

    def __init__(self, files: dict[str, Path], skipped: dict[str, str], *, label: str,
                 owned: Iterable[Path] = (), encoding: str | None = None) -> None:
        """ContextError when no file is text. `encoding` as for TextFileSource, per file."""
        self.encoding = encoding
        self.paths: dict[str, Path] = {}
        self._scans: dict[str, TextScan] = {}
        self.encodings: dict[str, str] = {}  # key -> encoding, for the files not in UTF-8
        left = dict(skipped)
        for key in sorted(files):
            file_enc = file_encoding(files[key], encoding)
            scan = _scan_member(files[key], file_enc)
            if isinstance(scan, str):
                left[key] = scan
            else:
                self.paths[key], self._scans[key] = files[key].resolve(), scan
                if file_enc != "utf-8":
                    self.encodings[key] = file_enc
        self._skipped = dict(sorted(left.items()))
        if not self.paths:
            shown = ", ".join(f"{k} ({v})" for k, v in list(self._skipped.items())[:10])
            raise ContextError(f"No text files found in {label}"
                               + (f"; skipped: {shown}" if shown else "")
                               + ". Pass text files (--include-ignored, or include_ignored="
                               "True, reads what .gitignore and the default skip list leave "
                               "out; --encoding names the files' encoding).")
        super().__init__(label, owned)

    @property
    def skipped(self) -> dict[str, str]:
        return dict(self._skipped)

    def metadata(self) -> ContextMetadata:
        keys = list(self.paths)
        lengths = [self._scans[key].chars for key in keys]
        heads = {key: self._scans[key].head[:PREVIEW_CHARS] for key in keys[:FIRST_KEYS]}
        meta = _items_metadata("dict", lengths, tuple(keys[:FIRST_KEYS]), heads, self.label,
                              self._skipped)
        return replace(meta, inputs=file_inputs(
            self.paths, "replace", bool(self._owned), self.encoding
        ))

    def load(self) -> Value:
        return load_spec(self._spec())

    def worker_spec(self, scratch: Path) -> dict[str, Any]:
        return self._spec()  # the worker reads the files in place: nothing goes to scratch

    def files(self) -> list[Path]:
        return list(self.paths.values())

    def _spec(self) -> dict[str, Any]:
        _require_existing(self.files())
        files = {key: str(path) for key, path in self.paths.items()}
        # "replace": each file was valid UTF-8 when scanned; one edited since still loads.
        return {"v": SPEC_VERSION, "format": "files", "kind": "dict", "files": files,
                "encodings": self.encodings, "errors": "replace",
                "paths": sorted(set(files.values())),
                "bytes": sum(scan.size for scan in self._scans.values())}


def load_spec(spec: dict[str, Any]) -> Value:
    """Load a context from a `worker_spec` (in the worker), one decode per file."""
    fmt, errors, encoding = spec.get("format"), spec.get("errors", "strict"), spec.get("encoding")
    if spec.get("v") != SPEC_VERSION or fmt not in ("text", "json", "files"):
        raise ContextError(f"Unknown context spec {spec!r}: the parent and the worker must run "
                           "the same fathom version.")
    if fmt == "files":
        encodings = spec.get("encodings", {})
        return {key: decode_file(Path(path), errors, encodings.get(key, "utf-8"))
                for key, path in spec["files"].items()}
    text = decode_file(Path(spec["path"]), errors, encoding or "utf-8")
    if fmt == "text":
        return text
    value = json.loads(text)
    del text  # the parsed value is what stays; let the JSON text go before the REPL starts
    return value


def file_inputs(
    files: dict[str, Path], errors: str, stdin: bool, encoding: str | None = None
) -> dict[str, Any]:
    """The trace's record of a file-backed input, enough for a replay to read it again.

    `files` maps each key to its absolute path ("" for a single text file), `stdin` says
    the input was spooled standard input (gone after the run), and `sha256` hashes the
    keys and the bytes, so a replay can tell the same input from another. `encoding` is the
    one the user named (None: UTF-8, or what a byte-order mark says), so it reads the same.
    """
    return {"files": {key: str(path) for key, path in files.items()}, "errors": errors,
            "encoding": encoding, "stdin": stdin, "sha256": files_sha256(files)}


def files_sha256(files: dict[str, Path]) -> str | None:
    """sha256 over each key and its file's bytes, in key order; None if a file is unreadable."""
    digest = hashlib.sha256()
    try:
        for key in sorted(files):
            digest.update(key.encode("utf-8", "surrogatepass") + b"\0")
            with open(files[key], "rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
            digest.update(b"\0")
    except OSError:
        return None
    return digest.hexdigest()


def _mb(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"


def _kind_of(value: Value) -> ContextKind:
    if isinstance(value, str):
        return "str"
    return "list" if isinstance(value, list) else "dict"


def _text_metadata(scan: TextScan, label: str | None) -> ContextMetadata:
    """A str's metadata; its preview is the whole text, or a head and tail sharing PREVIEW_CHARS."""
    head, tail = scan.head, ""
    if scan.chars > PREVIEW_CHARS:
        head, tail = scan.head[: PREVIEW_CHARS - TAIL_CHARS], scan.tail
    return ContextMetadata(kind="str", total_chars=scan.chars, items=1, preview=head, tail=tail,
                           lines=scan.lines, source=label)


def _items_metadata(kind: ContextKind, lengths: list[int], keys: tuple[str, ...], clipped: Any,
                    label: str | None, skipped: dict[str, str] | None = None) -> ContextMetadata:
    """A list's or dict's metadata from its item lengths and a clipped copy for the preview."""
    summary: dict[str, float] = {}
    preview = ""
    if lengths:
        summary = {"min": min(lengths), "median": statistics.median(lengths),
                   "max": max(lengths)}
        preview = json.dumps(clipped, ensure_ascii=False)[:PREVIEW_CHARS]
    skipped = skipped or {}
    return ContextMetadata(kind=kind, total_chars=sum(lengths), items=len(lengths),
                           item_lengths=summary, preview=preview, source=label, keys=keys,
                           skipped=tuple(skipped), skip_reasons=dict(skipped))


def _scan_member(path: Path, encoding: str) -> TextScan | str:
    """The scan of one file of a set, or why it is left out."""
    reason = sniff_binary(path, encoding)
    if reason is not None:
        return reason
    try:
        return scan_text(path, "strict", PREVIEW_CHARS, TAIL_CHARS, encoding)
    except NotUTF8Error:
        return "not UTF-8 text" if encoding == "utf-8" else f"not {encoding} text"
    except ContextError as exc:
        return f"unreadable: {exc}"


def _require_existing(paths: list[Path]) -> None:
    """Raise ContextError for a file gone since the scan (a closed Context's spooled stdin)."""
    for path in paths:
        if not path.exists():
            raise ContextError(
                f"The context file {path} no longer exists (was it deleted, or this "
                "Context closed?); build the Context again."
            )


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
