"""`context_paths`: files, directories and globs a request may read, under --allow-dir only.

Everything is checked before anything is read: a path with `..`, one that is (or whose
glob matches something that is) outside every allowed directory once symlinks are
resolved, is refused with 403. Symlinks inside a directory that lead out of it are
skipped by the loader (`fathom.textfile`), not followed.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from fathom.server.errors import APIError, bad_request


def forbidden(path: str, why: str) -> APIError:
    """The 403 for one path of `context_paths`."""
    return APIError(403, f"context_paths: {path!r} {why}; only paths under the server's "
                    "--allow-dir directories can be read.", code="path_not_allowed",
                    param="context_paths")


def resolve_paths(patterns: Sequence[str], allow_dirs: Sequence[Path]) -> list[Path]:
    """The concrete paths `patterns` name, each inside an allowed directory (else 403).

    A relative pattern is taken relative to the first allowed directory.
    """
    if not allow_dirs:
        raise APIError(403, "This server reads no files: context_paths needs the operator to "
                       "start it with --allow-dir DIR. Send the text as `context` instead.",
                       code="path_not_allowed", param="context_paths")
    roots = [Path(os.path.realpath(d)) for d in allow_dirs]
    found: list[Path] = []
    for pattern in patterns:
        if "\0" in pattern:
            raise bad_request("context_paths: a path holds a NUL character.", "context_paths")
        if ".." in Path(pattern).parts:
            raise forbidden(pattern, "contains '..'")
        absolute = Path(pattern) if os.path.isabs(pattern) else Path(allow_dirs[0]) / pattern
        if glob.has_magic(str(absolute)):
            # The fixed part of the glob must be inside before the listing is even looked at.
            _inside(_fixed_prefix(absolute), roots, pattern)
            matches = sorted(glob.glob(str(absolute), recursive=True))
            if not matches:
                raise bad_request(f"context_paths: {pattern!r} matches no file.", "context_paths")
            found += [_inside(Path(m), roots, pattern) for m in matches]
        else:
            found.append(_inside(absolute, roots, pattern))
    return found


def _fixed_prefix(path: Path) -> Path:
    fixed = []
    for part in path.parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed)


def _inside(path: Path, roots: list[Path], pattern: str) -> Path:
    """`path` with its symlinks resolved, if that lies in one of `roots`; else 403."""
    real = Path(os.path.realpath(path))
    if not any(real == root or real.is_relative_to(root) for root in roots):
        why = "leads outside the allowed directories" if real != path.absolute() else \
            "is outside the allowed directories"
        raise forbidden(pattern, why)
    if not real.exists():
        raise bad_request(f"context_paths: {pattern!r} does not exist.", "context_paths")
    return real
