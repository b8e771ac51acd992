"""Text files read without holding them twice: streaming scans, mmap decoding, dir walks.

Used by fathom.sources. The parent process only ever scans files in 1 MiB chunks (so its
memory does not grow with the file); the process that needs the text decodes each file once,
straight from an mmap of it.
"""

from __future__ import annotations

import codecs
import errno
import fnmatch
import mmap
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pathspec

from fathom.errors import ContextError
from fathom.jsonvalue import write_json

CHUNK = 1 << 20  # 1 MiB: cache-friendly for the incremental UTF-8 decoder
SNIFF_BYTES = 8192  # read to tell a binary file (NUL byte) from text
# Version-control stores: never read, not even listed.
VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", ".jj"})
# Folders nobody means to ask about (environments, caches, build output): skipped and listed,
# unless include_ignored. Names or fnmatch patterns.
SKIPPED_DIRS = (".venv", "venv", "node_modules", "__pycache__", ".tox", ".nox", ".mypy_cache",
                ".pytest_cache", ".ruff_cache", ".hypothesis", "dist", "build", "*.egg-info",
                ".eggs", ".idea", ".vscode")
# Byte-order marks, longest first (the UTF-32 LE mark starts like the UTF-16 LE one).
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"))
_UTF8 = frozenset({"utf-8", "utf-8-sig"})  # byte-level counting and tail seeking hold
_CONTINUATION = bytes(range(0x80, 0xC0))


class NotUTF8Error(ContextError):
    """A file does not decode in its encoding (a directory skips it; a single file is an error)."""


class BinaryFileError(ContextError):
    """A file holds NUL bytes near its start: binary data, not text."""


@dataclass(frozen=True)
class TextScan:
    """What one streaming pass over a UTF-8 text found."""

    chars: int
    lines: int
    size: int  # bytes
    head: str  # up to head_chars characters from the start
    tail: str  # up to tail_chars characters from the end, "" when the text is short


def check_encoding(encoding: str | None) -> str | None:
    """The codec's canonical name (None: detect from a BOM, else UTF-8), or ContextError."""
    if encoding is None:
        return None
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ContextError(f"Unknown encoding {encoding!r}: use a Python codec name such as "
                           "utf-8, latin-1, cp1252 or utf-16.") from None


def file_encoding(path: Path, encoding: str | None) -> str:
    """`encoding` if given, else the one a byte-order mark names, else UTF-8."""
    if encoding is not None:
        return encoding
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
    except OSError:
        return "utf-8"  # the scan reports why it cannot read the file
    return next((name for bom, name in BOMS if start.startswith(bom)), "utf-8")


def sniff_binary(path: Path, encoding: str = "utf-8") -> str | None:
    """"binary" when the start of the file holds a NUL byte (as git decides), else None.

    An encoding where text has NUL bytes (UTF-16, UTF-32) is never binary by this test.
    """
    if not _ascii_compatible(encoding):
        return None
    try:
        with open(path, "rb") as handle:
            return "binary" if b"\0" in handle.read(SNIFF_BYTES) else None
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def scan_text(path: Path, errors: str, head_chars: int, tail_chars: int,
              encoding: str = "utf-8") -> TextScan:
    """Count characters and lines of a text file in 1 MiB chunks, validating as it goes.

    For UTF-8, pure-ASCII chunks are counted by their length; others go through an
    incremental decoder whose output is dropped at once, so memory stays at a few MiB for
    any size.
    """
    if encoding not in _UTF8:
        return _scan_decoded(path, errors, head_chars, tail_chars, encoding)
    decoder = codecs.getincrementaldecoder(encoding)(errors)
    buffer = bytearray(CHUNK)
    chars = newlines = offset = pending = 0
    last = b""
    try:
        with open(path, "rb") as handle:
            while count := handle.readinto(buffer):
                chunk = buffer if count == CHUNK else buffer[:count]
                newlines += chunk.count(b"\n")
                pending = len(decoder.getstate()[0])
                if not pending and offset and chunk.isascii():
                    chars += count
                else:
                    chars += len(decoder.decode(chunk))
                offset += count
                last = bytes(chunk[-1:])
            pending = len(decoder.getstate()[0])
            chars += len(decoder.decode(b"", final=True))
            handle.seek(0)
            head = handle.read(head_chars * 4)  # 4 bytes is the longest UTF-8 character
            end = b""
            if offset > head_chars:
                handle.seek(max(0, offset - tail_chars * 4))
                end = handle.read().lstrip(_CONTINUATION)  # start on a character boundary
    except UnicodeDecodeError as exc:
        raise NotUTF8Error(not_utf8(path, offset - pending + exc.start, exc.reason,
                                    encoding)) from exc
    except OSError as exc:
        raise ContextError(f"Cannot read context file {path}: {exc.strerror}.") from exc
    lines = newlines + (1 if last and last != b"\n" else 0)
    head_text = codecs.getincrementaldecoder(encoding)("replace").decode(head)[:head_chars]
    tail_text = end.decode("utf-8", "replace")[-tail_chars:] if tail_chars and end else ""
    return TextScan(chars, lines, offset, head_text, tail_text)


def _scan_decoded(path: Path, errors: str, head_chars: int, tail_chars: int,
                  encoding: str) -> TextScan:
    """scan_text for any other encoding: every chunk is decoded (and dropped but its ends)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors)
    buffer = bytearray(CHUNK)
    chars = newlines = offset = 0
    head = tail = ""
    try:
        with open(path, "rb") as handle:
            while True:
                count = handle.readinto(buffer)
                text = decoder.decode(buffer[:count], final=not count)
                chars += len(text)
                newlines += text.count("\n")
                if len(head) < head_chars:
                    head += text[: head_chars - len(head)]
                tail = (tail + text)[-tail_chars:] if tail_chars else ""
                offset += count
                if not count:
                    break
    except UnicodeDecodeError as exc:
        raise NotUTF8Error(not_utf8(path, offset + exc.start, exc.reason, encoding)) from exc
    except OSError as exc:
        raise ContextError(f"Cannot read context file {path}: {exc.strerror}.") from exc
    lines = newlines + (1 if tail and not tail.endswith("\n") else 0)
    return TextScan(chars, lines, offset, head, tail if chars > head_chars else "")


def scan_str(text: str, head_chars: int, tail_chars: int) -> TextScan:
    """The same summary for a str already in memory."""
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    tail = text[-tail_chars:] if len(text) > head_chars and tail_chars else ""
    return TextScan(len(text), lines, len(text), text[:head_chars], tail)


def decode_file(path: Path, errors: str, encoding: str = "utf-8") -> str:
    """The text of a file, decoded straight from an mmap (no bytes copy in between)."""
    size = 0
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < CHUNK:
                return handle.read().decode(encoding, errors)
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                if hasattr(mapped, "madvise"):
                    mapped.madvise(mmap.MADV_SEQUENTIAL)
                return str(mapped, encoding, errors)
    except UnicodeDecodeError as exc:
        raise NotUTF8Error(not_utf8(path, exc.start, exc.reason, encoding)) from exc
    except MemoryError:
        raise ContextError(_no_memory(path, size)) from None
    except OSError as exc:
        if exc.errno == errno.ENOMEM:  # the mmap itself did not fit
            raise ContextError(_no_memory(path, size)) from None
        raise ContextError(f"Cannot read context file {path}: {exc.strerror}.") from exc


def collect_dir(root: Path, prefix: str, *, include_ignored: bool = False,
                ) -> tuple[dict[str, Path], dict[str, str]]:
    """Regular files under `root` as prefix + relative path -> path, and what was left out, why.

    VCS directories are never read. Unless `include_ignored`, what `.gitignore` files (at
    `root` and below, and `.git/info/exclude`) ignore is left out, and so are the SKIPPED_DIRS;
    a left-out folder is listed once, as "name/", with its file count. Symlinked directories
    are not entered; a symlinked file is read only when it points inside `root`, so a link
    cannot pull in files from elsewhere.
    """
    real_root = root.resolve()
    files: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    rules = _IgnoreRules(root)

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename or root)
        skipped[prefix + _rel(where, root)] = f"unreadable: {exc.strerror}"

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        here = Path(dirpath)
        if not include_ignored:
            rules.read(here)
        keep = []
        for name in sorted(dirnames):
            if name in VCS_DIRS:
                continue
            rel = _rel(here / name, root)
            why = None if include_ignored else rules.why_dir(name, rel)
            if (here / name).is_symlink():
                skipped[prefix + rel] = "symlinked directory, not followed"
            elif why is not None:
                count = _count_files(here / name)
                skipped[f"{prefix}{rel}/"] = f"{why}, {count:,} file{'' if count == 1 else 's'}"
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            path = here / name
            rel = _rel(path, root)
            key = prefix + rel
            if not include_ignored and rules.ignores(rel, is_dir=False):
                skipped[key] = "ignored by .gitignore"
                continue
            try:
                if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                    skipped[key] = "symlink to outside the directory"
                    continue
                mode = path.stat().st_mode
            except (OSError, RuntimeError):  # RuntimeError: a symlink loop
                skipped[key] = "broken symlink"
                continue
            # FIFOs and devices would block or never end.
            if stat.S_ISREG(mode):
                files[key] = path
            else:
                skipped[key] = "not a regular file"
    return files, skipped


class _IgnoreRules:
    """The .gitignore files met on a walk, each applying below its own folder, as git does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []  # (folder "a/b/" or "", spec)
        self._add("", root / ".git" / "info" / "exclude")

    def read(self, folder: Path) -> None:
        rel = _rel(folder, self.root)
        self._add("" if rel == "." else rel + "/", folder / ".gitignore")

    def why_dir(self, name: str, rel: str) -> str | None:
        """Why the folder at `rel` is left out, or None."""
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in SKIPPED_DIRS):
            return "skipped by default"
        return "ignored by .gitignore" if self.ignores(rel, is_dir=True) else None

    def ignores(self, rel: str, *, is_dir: bool) -> bool:
        """Whether the deepest .gitignore rule that matches `rel` ignores it (git's order)."""
        ignored = False
        for base, spec in self.specs:
            if not rel.startswith(base):
                continue
            result = spec.check_file(rel[len(base):] + ("/" if is_dir else ""))
            if result.include is not None:
                ignored = result.include
        return ignored

    def _add(self, base: str, path: Path) -> None:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return
        self.specs.append((base, pathspec.GitIgnoreSpec.from_lines(lines)))


def _count_files(folder: Path) -> int:
    """Files under `folder`, counted without stat calls (a .venv holds tens of thousands)."""
    return sum(len(names) for _, _, names in os.walk(folder))


def require_file(path: Path) -> None:
    """Raise ContextError unless `path` is an existing regular file."""
    if not path.exists():
        raise ContextError(f"Context path {path} does not exist; check the path (relative "
                           f"paths start from {Path.cwd()}).")
    if not path.is_file():
        raise ContextError(f"Context path {path} is not a regular file or directory; pass a "
                           "text file, a directory, or '-' to read standard input.")


def spool(stream: IO[bytes]) -> Path:
    """Copy a byte stream (stdin) to a temporary file in bounded memory."""
    fd, name = tempfile.mkstemp(prefix="fathom-stdin-", suffix=".txt")
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(stream, out, CHUNK)
    return Path(name)


def not_utf8(path: Path, offset: int, reason: str, encoding: str = "utf-8") -> str:
    """The message for a file that does not decode, saying where and what to do."""
    name = "UTF-8" if encoding in _UTF8 else encoding
    return (f"Context file {path} is not {name} text ({reason} at byte {offset:,}): name its "
            "encoding (--encoding latin-1, or encoding='latin-1', cp1252, utf-16, ...), "
            "convert it (e.g. iconv -f latin1 -t utf-8), or read it anyway with U+FFFD for "
            "the bad bytes (--encoding-errors replace, or errors='replace').")


def binary_file(name: str) -> str:
    """The message for a single file that holds NUL bytes."""
    return (f"Context {name} is binary (it has NUL bytes in its first "
            f"{SNIFF_BYTES:,} bytes), not text: pass a text file, or name its encoding if it "
            "is UTF-16 or UTF-32 without a byte-order mark (--encoding utf-16-le, or "
            "encoding='utf-16-le').")


def _ascii_compatible(encoding: str) -> bool:
    try:
        return "a\n".encode(encoding) == b"a\n"
    except (LookupError, UnicodeError):
        return False


def _no_memory(path: Path, size: int) -> str:
    return (f"Not enough memory to load {path} ({size:,} bytes): a Python str takes 1 byte per "
            "character for ASCII, 2 for most other text and 4 with emoji, and decoding needs "
            "the file mapped as well. Raise the sandbox memory limit (RLM(memory_mb=...)) or "
            "split the input into several files.")


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def spill(value: object, directory: Path) -> Path:
    """Write a value to one new file in `directory`: a str as text, anything else as JSON."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".txt" if isinstance(value, str) else ".json"
    fd, name = tempfile.mkstemp(prefix="fathom-context-", suffix=suffix, dir=directory)
    # surrogatepass: a str with lone surrogates is still a valid Python str; keep it exact.
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass", newline="") as out:
        if isinstance(value, str):
            for start in range(0, len(value), CHUNK):  # bounded encode buffer
                out.write(value[start : start + CHUNK])
        else:
            write_json(value, out)
    return Path(name)


def remove_files(paths: list[Path]) -> None:
    """Delete and forget every path in `paths` (missing ones are fine)."""
    while paths:
        paths.pop().unlink(missing_ok=True)
