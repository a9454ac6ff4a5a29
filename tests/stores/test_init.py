from __future__ import annotations

import palm_middleware.stores as stores
from palm_middleware.stores import base, memory, sqlite

EXPECTED_ALL = [
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


def test_all_is_sorted_and_complete() -> None:
    assert stores.__all__ == EXPECTED_ALL == sorted(EXPECTED_ALL, key=str.casefold)
    for module in (stores, base, memory, sqlite):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
