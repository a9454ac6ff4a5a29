"""Stores of user profiles, feedback events and audit records.

``SQLiteStore`` is the embedded default; ``MemoryStore`` is for tests and ephemeral use;
``PostgresStore`` is shared by many proxy replicas (psycopg, imported on first use: the
``postgres`` extra). All follow the ``Store`` protocol of ``palm_middleware.stores.base``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from palm_middleware._lazy import load as _load
from palm_middleware.stores.base import (
    AsyncStoreMixin,
    AuditRecord,
    EventRecord,
    ProfileRecord,
    ProfileUpdate,
    Store,
)
from palm_middleware.stores.memory import MemoryStore
from palm_middleware.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from palm_middleware.stores.postgres import PostgresStore

_LAZY = {"PostgresStore": "postgres"}

__all__ = [
    "AsyncStoreMixin",
    "AuditRecord",
    "EventRecord",
    "MemoryStore",
    "PostgresStore",
    "ProfileRecord",
    "ProfileUpdate",
    "SQLiteStore",
    "Store",
]


def __getattr__(name: str) -> Any:
    return _load(__name__, _LAZY, name)
