"""Stores of user profiles, feedback events and audit records.

``SQLiteStore`` is the embedded default; ``MemoryStore`` is for tests and ephemeral use. Both
follow the ``Store`` protocol of ``palm_middleware.stores.base``.
"""

from __future__ import annotations

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

__all__ = [
    "AsyncStoreMixin",
    "AuditRecord",
    "EventRecord",
    "MemoryStore",
    "ProfileRecord",
    "ProfileUpdate",
    "SQLiteStore",
    "Store",
]
