"""Shared test settings: real-resource tests skip locally when a resource is missing,
but fail in CI (FATHOM_REQUIRE_REAL=1), where they must run."""

from __future__ import annotations

import os

import pytest

REQUIRE_REAL = os.environ.get("FATHOM_REQUIRE_REAL") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip a test whose real resource is missing, or fail when CI requires it."""
    if REQUIRE_REAL:
        pytest.fail(f"{reason} (FATHOM_REQUIRE_REAL=1: this test must run here)")
    pytest.skip(reason)
