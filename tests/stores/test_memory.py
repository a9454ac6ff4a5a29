from __future__ import annotations

from collections.abc import Iterator

import pytest

from palm_middleware.stores import MemoryStore, Store

from .contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        store = MemoryStore()
        yield store
        store.close()


def test_salt_is_random_hex_per_store() -> None:
    with MemoryStore() as a, MemoryStore() as b:
        assert len(a.salt) == 32 and int(a.salt, 16) >= 0
        assert a.salt != b.salt


def test_bulk_put_profiles_bumps_versions() -> None:
    with MemoryStore() as store:
        assert store.bulk_put_profiles([("u1", {}), ("u2", {}), ("u1", {"x": 1})], now=1.0) == 3
        profile = store.get_profile("u1")
        assert profile is not None and (profile.version, profile.state) == (2, {"x": 1})
        assert store.count_profiles() == 2
