"""UTF-8 text files read without holding them twice: streaming scans, mmap decoding, dir walks.

Used by fathom.sources. The parent process only ever scans files in 1 MiB chunks (so its
memory does not grow with the file); the process that needs the text decodes each file once,
straight from an mmap of it.
"""

from __future__ import annotations

import codecs
import errno
import mmap
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fathom.errors import ContextError
from fathom.jsonvalue import write_json

CHUNK = 1 << 20  # 1 MiB: cache-friendly for the incremental UTF-8 decoder
SNIFF_BYTES = 8192  # read to tell a binary file (NUL byte) from text
IGNORED_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", ".jj", "__pycache__"})
_CONTINUATION = bytes(range(0x80, 0xC0))


class NotUTF8Error(ContextError):
    """A file is not valid UTF-8 (a directory skips such a file; a single file is an error)."""


@dataclass(frozen=True)
class TextScan:
    """What one streaming pass over a UTF-8 text found."""

    chars: int
    lines: int
    size: int  # bytes
    head: str  # up to head_chars characters from the start
    tail: str  # up to tail_chars characters from the end, "" when the text is short


def scan_text(path: Path, errors: str, head_chars: int, tail_chars: int) -> TextScan:
    """Count characters and lines of a UTF-8 file in 1 MiB chunks, validating as it goes.

    Pure-ASCII chunks are counted by their length; others go through an incremental
    decoder whose output is dropped at once, so memory stays at a few MiB for any size.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    buffer = bytearray(CHUNK)
    chars = newlines = offset = pending = 0
    last = b""
    try:
        with open(path, "rb") as handle:
            while count := handle.readinto(buffer):
                chunk = buffer if count == CHUNK else buffer[:count]
                newlines += chunk.count(b"\n")
                pending = len(decoder.getstate()[0])
                if not pending and chunk.isascii():
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
        raise NotUTF8Error(not_utf8(path, offset - pending + exc.start, exc.reason)) from exc
    except OSError as exc:
        raise ContextError(f"Cannot read context file {path}: {exc.strerror}.") from exc
    lines = newlines + (1 if last and last != b"\n" else 0)
    head_text = codecs.getincrementaldecoder("utf-8")("replace").decode(head)[:head_chars]
    tail_text = end.decode("utf-8", "replace")[-tail_chars:] if tail_chars and end else ""
    return TextScan(chars, lines, offset, head_text, tail_text)


def scan_str(text: str, head_chars: int, tail_chars: int) -> TextScan:
    """The same summary for a str already in memory."""
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    tail = text[-tail_chars:] if len(text) > head_chars and tail_chars else ""
    return TextScan(len(text), lines, len(text), text[:head_chars], tail)


def decode_file(path: Path, errors: str) -> str:
    """The text of a UTF-8 file, decoded straight from an mmap (no bytes copy in between)."""
    size = 0
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < CHUNK:
                return handle.read().decode("utf-8", errors)
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                if hasattr(mapped, "madvise"):
                    mapped.madvise(mmap.MADV_SEQUENTIAL)
                return str(mapped, "utf-8", errors)
    except UnicodeDecodeError as exc:
        raise NotUTF8Error(not_utf8(path, exc.start, exc.reason)) from exc
    except MemoryError:
        raise ContextError(_no_memory(path, size)) from None
    except OSError as exc:
        if exc.errno == errno.ENOMEM:  # the mmap itself did not fit
            raise ContextError(_no_memory(path, size)) from None
        raise ContextError(f"Cannot read context file {path}: {exc.strerror}.") from exc


def sniff_binary(path: Path) -> str | None:
    """"binary" when the start of the file holds a NUL byte (no text file does), else None."""
    try:
        with open(path, "rb") as handle:
            return "binary" if b"\0" in handle.read(SNIFF_BYTES) else None
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def collect_dir(root: Path, prefix: str) -> tuple[dict[str, Path], dict[str, str]]:
    """Regular files under `root` as prefix + relative path -> path, and what was left out, why.

    VCS directories are ignored; symlinked directories are not entered; a symlinked file is
    read only when it points inside `root`, so a link cannot pull in files from elsewhere.
    """
    real_root = root.resolve()
    files: dict[str, Path] = {}
    skipped: dict[str, str] = {}

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename or root)
        skipped[prefix + _rel(where, root)] = f"unreadable: {exc.strerror}"

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        here = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            if name in IGNORED_DIRS:
                continue
            if (here / name).is_symlink():
                skipped[prefix + _rel(here / name, root)] = "symlinked directory, not followed"
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            path = here / name
            key = prefix + _rel(path, root)
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


def not_utf8(path: Path, offset: int, reason: str) -> str:
    """The message for a file that is not UTF-8, saying where and what to do."""
    return (f"Context file {path} is not UTF-8 text ({reason} at byte {offset:,}): convert it "
            "(e.g. iconv -f latin1 -t utf-8) or pass errors='replace' to read it anyway.")


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
