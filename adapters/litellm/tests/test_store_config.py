"""``store:`` in palm.yaml: a SQLite path (default), or ``{kind: sqlite|memory|postgres}``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from palm_litellm.config import (
    MemoryStoreSettings,
    PalmProxySettings,
    PostgresStoreSettings,
    SQLiteStoreSettings,
    build_store,
)
from palm_middleware import MemoryStore, SQLiteStore
from palm_middleware.exceptions import InvalidParameterError


def settings(store: Any) -> PalmProxySettings:
    return PalmProxySettings.model_validate({"portfolio": "p.yaml", "store": store})


def test_sqlite_stays_the_default(tmp_path: Path) -> None:
    assert PalmProxySettings.model_validate({"portfolio": "p.yaml"}).store == "palm.db"
    store = build_store(settings("x.db").store, tmp_path)
    assert isinstance(store, SQLiteStore) and store.path == tmp_path / "x.db"
    store.close()
    assert isinstance(build_store(settings(":memory:").store, tmp_path), MemoryStore)
    assert isinstance(settings({"kind": "sqlite"}).store, SQLiteStoreSettings)
    assert isinstance(settings({"kind": "memory"}).store, MemoryStoreSettings)


def test_postgres_settings() -> None:
    spec = settings(
        {"kind": "postgres", "dsn_env": "MY_DSN", "schema": "tenant_a", "pool_max": 4}
    ).store
    assert isinstance(spec, PostgresStoreSettings)
    assert (spec.dsn_env, spec.db_schema, spec.pool_max) == ("MY_DSN", "tenant_a", 4)


@pytest.mark.parametrize(
    ("store", "field"),
    [
        ({"kind": "postgres", "dsn": "postgresql://u:pw@h/db"}, "dsn"),  # never in a file
        ({"kind": "postgres", "schema": "Bad-Name"}, "schema"),
        ({"kind": "postgres", "pool_max": 0}, "pool_max"),
        ({"kind": "redis"}, "kind"),
    ],
)
def test_bad_store_settings_name_the_field(store: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        settings(store)


def test_missing_dsn_variable_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("psycopg_pool")
    monkeypatch.delenv("PALM_DSN_UNSET", raising=False)
    spec = settings({"kind": "postgres", "dsn_env": "PALM_DSN_UNSET"}).store
    with pytest.raises(InvalidParameterError, match="'PALM_DSN_UNSET', which is not set"):
        build_store(spec, tmp_path)
