"""context_paths: only what lies under an allowed directory, checked before anything is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from fathom.server.errors import APIError
from fathom.server.paths import resolve_paths


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "docs").mkdir(parents=True)
    outside.mkdir()
    (allowed / "docs" / "a.md").write_text("a")
    (allowed / "docs" / "b.md").write_text("b")
    (outside / "secret.md").write_text("s")
    (allowed / "docs" / "out.md").symlink_to(outside / "secret.md")
    return allowed, outside


def test_relative_paths_and_globs_resolve_under_the_first_allowed_dir(
        tree: tuple[Path, Path]) -> None:
    allowed, _ = tree
    assert resolve_paths(["docs/a.md"], [allowed]) == [allowed / "docs" / "a.md"]
    assert resolve_paths(["docs/[ab].md"], [allowed]) == [allowed / "docs" / "a.md",
                                                          allowed / "docs" / "b.md"]


@pytest.mark.parametrize("pattern", [
    "../outside/secret.md", "docs/../../outside", "docs/out.md", "docs/*.md", "/etc/passwd",
    "/etc/*",
])
def test_anything_leading_outside_is_403(tree: tuple[Path, Path], pattern: str) -> None:
    allowed, _ = tree
    with pytest.raises(APIError) as caught:
        resolve_paths([pattern], [allowed])
    assert caught.value.status == 403 and caught.value.code == "path_not_allowed"


def test_a_second_allowed_dir_counts(tree: tuple[Path, Path]) -> None:
    allowed, outside = tree
    assert resolve_paths([str(outside / "secret.md")], [allowed, outside]) == [
        outside / "secret.md"]


def test_missing_paths_and_empty_globs_are_400(tree: tuple[Path, Path]) -> None:
    allowed, _ = tree
    for pattern in ("docs/none.md", "docs/*.txt"):
        with pytest.raises(APIError) as caught:
            resolve_paths([pattern], [allowed])
        assert caught.value.status == 400
