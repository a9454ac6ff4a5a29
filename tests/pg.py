"""PostgreSQL for the tests: the server at 127.0.0.1:5432 (trust auth, database ``test``).

Every test session works in schemas named ``palm_t_<random>_<n>``, one per store, and drops
them at the end, so sessions (and developers) sharing the server never see each other's rows.

Where Postgres is expected (``CI=true`` or ``PALM_REQUIRE_POSTGRES=1``) an unreachable server
FAILS the tests that need it; elsewhere they skip and say why. ``PALM_TEST_POSTGRES_DSN``
points at another server.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

__all__ = ["DEFAULT_DSN", "SchemaFactory", "pg_dsn", "pg_required", "pg_schemas"]

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def pg_required() -> bool:
    """Whether this run must have Postgres (CI, or asked for explicitly)."""
    return (
        os.environ.get("CI", "").lower() == "true" or os.environ.get("PALM_REQUIRE_POSTGRES") == "1"
    )


class SchemaFactory:
    """Unique schema names for this session; ``drop_all`` removes every one it handed out."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.prefix = f"palm_t_{secrets.token_hex(4)}_"
        self._n = 0

    def new(self) -> str:
        self._n += 1
        return f"{self.prefix}{self._n}"

    def drop(self, schema: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())

    def drop_all(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (self.prefix,)
            ).fetchall()
            for (name,) in rows:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'.encode())


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The test server's DSN; skips (or fails where Postgres is required) if unreachable."""
    dsn = os.environ.get("PALM_TEST_POSTGRES_DSN", DEFAULT_DSN)
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        msg = f"PostgreSQL tests need psycopg and psycopg_pool (pip install -e '.[dev]'): {exc}"
        if pg_required():
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        msg = (
            f"PostgreSQL is not reachable at the test DSN ({type(exc).__name__}); start it at "
            "127.0.0.1:5432 (trust auth, database 'test') or set PALM_TEST_POSTGRES_DSN"
        )
        if pg_required():
            pytest.fail(f"{msg}. CI=true / PALM_REQUIRE_POSTGRES=1: these tests must run here.")
        pytest.skip(msg)
    return dsn


@pytest.fixture(scope="session")
def pg_schemas(pg_dsn: str) -> Iterator[SchemaFactory]:
    """Schema names unique to this session; all of them are dropped at its end."""
    factory = SchemaFactory(pg_dsn)
    yield factory
    factory.drop_all()
