"""Session-wide test setup for every test path (core and adapters)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# PostgreSQL fixtures (pg_dsn, pg_schemas) for the core and adapter suites.
pytest_plugins = ("tests.pg",)

_cache: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """Point ``$PALM_CACHE`` at a fresh directory: the topic embedder is exported there once per
    session (never into the developer's ~/.cache) and removed afterwards."""
    path = tempfile.mkdtemp(prefix="palm-test-cache-")
    _cache.append(path)
    os.environ["PALM_CACHE"] = path


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's cache directory."""
    while _cache:
        shutil.rmtree(_cache.pop(), ignore_errors=True)
