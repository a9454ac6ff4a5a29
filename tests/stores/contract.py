"""The behaviour every ``Store`` backend must show.

Subclass ``StoreContract`` in ``test_<backend>.py`` and override the ``store`` fixture with one
that yields an empty store and closes it afterwards (shape of langchain-tests'
``BaseStoreSyncTests``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from palm_middleware.exceptions import IdentityError, InvalidParameterError, StoreError
from palm_middleware.stores import AuditRecord, EventRecord, ProfileRecord, Store

__all__ = ["StoreContract", "count_update", "event"]


def event(event_id: str, user_key: str = "u1", kind: str = "thumb", **payload: Any) -> EventRecord:
    """An event with a small payload."""
    return EventRecord(event_id, user_key, kind, dict(payload), 1000.0)


def count_update(profile: ProfileRecord | None, events: list[EventRecord]) -> dict[str, Any]:
    """An update that counts the events applied and remembers the window it saw."""
    count = profile.state["count"] if profile is not None else 0
    return {"count": count + 1, "window": [e.event_id for e in events]}


class _Boom(Exception):
    pass


class StoreContract:
    """Contract tests; ``store`` must yield an empty store."""

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        raise NotImplementedError("override `store` with a fixture yielding an empty store")

    # ------------------------------------------------------------------ profiles

    def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)

    def test_missing_profile_is_none(self, store: Store) -> None:
        assert store.get_profile("nobody") is None
        assert store.count_profiles() == 0

    def test_put_profile_round_trip_and_versions(self, store: Store) -> None:
        state = {"posterior": {"mean": [0.25, 0.75], "n": 3}, "opted_out": False, "name": "é"}
        first = store.put_profile("u1", state, now=10.0)
        assert first == ProfileRecord("u1", state, 1, 10.0)
        assert store.get_profile("u1") == first
        second = store.put_profile("u1", {"x": 1}, now=11.0)
        third = store.put_profile("u1", {"x": 2}, now=12.0)
        assert (second.version, third.version) == (2, 3)
        assert store.get_profile("u1") == ProfileRecord("u1", {"x": 2}, 3, 12.0)
        assert store.put_profile("u2", {}, now=1.0).version == 1
        assert store.count_profiles() == 2

    def test_state_is_copied_as_json(self, store: Store) -> None:
        state: dict[str, Any] = {"t": (1, 2), "inner": {"a": [1]}}
        store.put_profile("u1", state, now=0.0)
        state["inner"]["a"].append(2)  # the caller's object is not the stored one
        got = store.get_profile("u1")
        assert got is not None
        assert got.state == {"t": [1, 2], "inner": {"a": [1]}}
        got.state["inner"]["a"].append(3)  # nor is a read copy
        again = store.get_profile("u1")
        assert again is not None and again.state["inner"]["a"] == [1]

    @pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": object()}, ["not", "a", "dict"]])
    def test_put_profile_rejects_non_json(self, store: Store, bad: Any) -> None:
        with pytest.raises(InvalidParameterError, match="state of user 'u1'"):
            store.put_profile("u1", bad, now=0.0)
        assert store.get_profile("u1") is None

    # ------------------------------------------------------------------ apply_event

    def test_apply_event_creates_profile(self, store: Store) -> None:
        added, profile = store.apply_event(event("e1", thumb=1), count_update, now=5.0)
        assert added
        assert profile == ProfileRecord("u1", {"count": 1, "window": ["e1"]}, 1, 5.0)
        assert store.get_profile("u1") == profile
        assert store.events("u1") == [event("e1", thumb=1)]

    def test_apply_event_is_idempotent(self, store: Store) -> None:
        calls: list[list[str]] = []

        def update(profile: ProfileRecord | None, events: list[EventRecord]) -> dict[str, Any]:
            calls.append([e.event_id for e in events])
            return count_update(profile, events)

        first = store.apply_event(event("e1"), update, now=1.0)
        again = store.apply_event(event("e1", thumb=-1), update, now=2.0)
        assert first[0] and not again[0]
        assert again[1] == first[1]  # the current profile, untouched
        assert calls == [["e1"]]
        assert [e.event_id for e in store.events("u1")] == ["e1"]

    def test_apply_event_window_and_order(self, store: Store) -> None:
        seen: list[list[str]] = []

        def update(profile: ProfileRecord | None, events: list[EventRecord]) -> dict[str, Any]:
            seen.append([e.event_id for e in events])
            assert all(e.user_key == "u1" for e in events)
            return count_update(profile, events)

        store.apply_event(event("other", user_key="u2"), count_update, now=0.0)
        for i in range(5):
            store.apply_event(event(f"e{i}", i=i), update, window=3, now=float(i))
        assert seen == [
            ["e0"],
            ["e0", "e1"],
            ["e0", "e1", "e2"],
            ["e1", "e2", "e3"],
            ["e2", "e3", "e4"],
        ]
        profile = store.get_profile("u1")
        assert profile is not None and profile.version == 5 and profile.state["count"] == 5
        assert [e.payload["i"] for e in store.events("u1")] == [0, 1, 2, 3, 4]

    def test_apply_event_window_one_sees_only_the_new_event(self, store: Store) -> None:
        store.apply_event(event("e1"), count_update, now=0.0)
        _, profile = store.apply_event(event("e2"), count_update, window=1, now=0.0)
        assert profile is not None and profile.state["window"] == ["e2"]

    def test_update_raising_writes_nothing(self, store: Store) -> None:
        store.apply_event(event("e1"), count_update, now=1.0)
        before = store.get_profile("u1")
        error = _Boom("no")

        def update(profile: ProfileRecord | None, events: list[EventRecord]) -> dict[str, Any]:
            raise error

        with pytest.raises(_Boom) as info:
            store.apply_event(event("e2"), update, now=2.0)
        assert info.value is error  # propagated as is, not wrapped
        assert store.get_profile("u1") == before
        assert [e.event_id for e in store.events("u1")] == ["e1"]
        # The event was not stored, so it can be applied again.
        assert store.apply_event(event("e2"), count_update, now=3.0)[0]

    def test_update_returning_bad_state_writes_nothing(self, store: Store) -> None:
        def update(profile: ProfileRecord | None, events: list[EventRecord]) -> dict[str, Any]:
            return {"x": float("inf")}

        with pytest.raises(InvalidParameterError, match="JSON"):
            store.apply_event(event("e1"), update, now=1.0)
        assert store.get_profile("u1") is None
        assert store.events("u1") == []

    def test_update_writing_to_the_store_is_refused(self, store: Store) -> None:
        def update(profile: ProfileRecord | None, events: list[EventRecord]) -> dict[str, Any]:
            store.put_profile("u1", {"sneaky": True}, now=0.0)
            return {}

        with pytest.raises(StoreError, match="inside another write"):
            store.apply_event(event("e1"), update, now=1.0)
        assert store.get_profile("u1") is None
        assert store.events("u1") == []

    def test_event_id_of_another_user_raises_identity_error(self, store: Store) -> None:
        store.apply_event(event("e1", user_key="u1"), count_update, now=1.0)
        with pytest.raises(IdentityError, match="another user"):
            store.apply_event(event("e1", user_key="u2"), count_update, now=2.0)
        assert store.get_profile("u2") is None
        assert store.events("u2") == []

    @pytest.mark.parametrize("window", [0, -1, True, 2.5])
    def test_apply_event_rejects_bad_window(self, store: Store, window: Any) -> None:
        with pytest.raises(InvalidParameterError, match="window"):
            store.apply_event(event("e1"), count_update, window=window, now=0.0)
        assert store.events("u1") == []

    def test_apply_event_rejects_non_json_payload(self, store: Store) -> None:
        with pytest.raises(InvalidParameterError, match="payload of event 'e1'"):
            store.apply_event(event("e1", bad={1, 2}), count_update, now=0.0)
        assert store.events("u1") == []

    # ------------------------------------------------------------------ events

    def test_events_limit_keeps_the_most_recent(self, store: Store) -> None:
        for i in range(4):
            store.apply_event(event(f"e{i}"), count_update, now=0.0)

        def ids(events: list[EventRecord]) -> list[str]:
            return [e.event_id for e in events]

        assert ids(store.events("u1", limit=2)) == ["e2", "e3"]
        assert ids(store.events("u1", limit=10)) == ["e0", "e1", "e2", "e3"]
        assert store.events("u1", limit=0) == []
        assert store.events("nobody") == []
        with pytest.raises(InvalidParameterError, match="limit"):
            store.events("u1", limit=-1)

    # ------------------------------------------------------------------ audit

    def test_audit_round_trip_filter_and_limit(self, store: Store) -> None:
        records = [
            AuditRecord(f"a{i}", "u1" if i % 2 else "u2", "decision", {"i": i}, float(i))
            for i in range(6)
        ]
        for record in records:
            store.append_audit(record)
        assert store.get_audit("a3") == records[3]
        assert store.get_audit("missing") is None
        assert store.audit() == records
        assert store.audit("u1") == records[1::2]
        assert store.audit("u1", limit=2) == records[3::2]
        assert store.audit(limit=1) == records[-1:]
        assert store.audit("u1", limit=0) == []
        assert store.audit("nobody") == []

    def test_audit_duplicate_id_raises_store_error(self, store: Store) -> None:
        original = AuditRecord("a1", "u1", "decision", {"member": "m1"}, 1.0)
        store.append_audit(original)
        with pytest.raises(StoreError, match="'a1' already exists"):
            store.append_audit(AuditRecord("a1", "u2", "feedback", {}, 2.0))
        assert store.audit() == [original]

    # ------------------------------------------------------------------ deletion

    def _fill(self, store: Store) -> None:
        for user in ("u1", "u2"):
            for i in range(3):
                store.apply_event(event(f"{user}-e{i}", user_key=user), count_update, now=0.0)
            for i in range(2):
                store.append_audit(AuditRecord(f"{user}-a{i}", user, "decision", {}, 0.0))

    def test_delete_user_with_audit(self, store: Store) -> None:
        self._fill(store)
        assert store.delete_user("u1", keep_audit=False) == 1 + 3 + 2
        assert store.get_profile("u1") is None
        assert store.events("u1") == [] and store.audit("u1") == []
        assert store.get_audit("u1-a0") is None
        assert len(store.events("u2")) == 3 and len(store.audit("u2")) == 2
        assert store.count_profiles() == 1
        assert store.delete_user("u1", keep_audit=False) == 0

    def test_delete_user_keeping_audit(self, store: Store) -> None:
        self._fill(store)
        assert store.delete_user("u1", keep_audit=True) == 1 + 3
        assert store.get_profile("u1") is None and store.events("u1") == []
        assert [r.record_id for r in store.audit("u1")] == ["u1-a0", "u1-a1"]
        assert store.get_profile("u2") is not None

    # ------------------------------------------------------------------ population rows

    @staticmethod
    def _row(state: dict[str, Any]) -> dict[str, Any] | None:
        """A population row from the state: its count, unless the state says opted out."""
        return None if state.get("out") else {"mean_log": [-1.0, -0.5], "n": state["count"]}

    @staticmethod
    def _opting_out(profile: ProfileRecord | None, events: list[EventRecord]) -> dict[str, Any]:
        return {**count_update(profile, events), "out": events[-1].kind == "opt_out"}

    def test_population_rows_are_written_with_the_profile(self, store: Store) -> None:
        assert store.population_rows() == {}
        stamps = [store.population_stamp()]
        for i in range(3):
            store.apply_event(event(f"e{i}"), count_update, now=1.0, population=self._row)
            stamps.append(store.population_stamp())
        store.apply_event(event("v0", user_key="u2"), count_update, now=1.0, population=self._row)
        stamps.append(store.population_stamp())
        assert store.population_rows() == {
            "u1": {"mean_log": [-1.0, -0.5], "n": 3},
            "u2": {"mean_log": [-1.0, -0.5], "n": 1},
        }
        # Without a population callback the row is left as it is.
        store.apply_event(event("e3"), count_update, now=1.0)
        assert store.population_rows()["u1"]["n"] == 3
        # A retried delivery and a failed update write nothing.
        store.apply_event(event("e0"), count_update, now=1.0, population=self._row)

        def boom(profile: ProfileRecord | None, events: list[EventRecord]) -> dict[str, Any]:
            raise _Boom

        with pytest.raises(_Boom):
            store.apply_event(event("e9"), boom, now=1.0, population=self._row)
        assert store.population_rows()["u1"]["n"] == 3
        stamps.append(store.population_stamp())
        # Every write changed the stamp (a rewrite of the same user too); nothing else did.
        assert len(set(stamps)) == len(stamps) - 1 and stamps[-1] == stamps[-2]

    def test_opting_out_deletes_the_population_row_in_the_same_write(self, store: Store) -> None:
        store.apply_event(event("e0"), self._opting_out, now=1.0, population=self._row)
        before = store.population_stamp()
        store.apply_event(
            event("e1", kind="opt_out"), self._opting_out, now=2.0, population=self._row
        )
        assert store.population_rows() == {}
        assert store.get_profile("u1").state["out"] is True  # type: ignore[union-attr]
        assert store.population_stamp() != before
        # A stamp seen before never comes back: delete, then write the same user again.
        seen = {before, store.population_stamp()}
        store.apply_event(
            event("e2", kind="opt_in"), self._opting_out, now=3.0, population=self._row
        )
        assert store.population_stamp() not in seen
        assert store.population_rows() == {"u1": {"mean_log": [-1.0, -0.5], "n": 3}}

    def test_delete_and_erase_remove_the_population_row(self, store: Store) -> None:
        for user in ("u1", "u2", "u3"):
            store.apply_event(
                event(f"{user}-e", user_key=user), count_update, now=0.0, population=self._row
            )
        stamp = store.population_stamp()
        assert store.delete_user("u1", keep_audit=True) == 1 + 1 + 1  # profile, row, event
        assert set(store.population_rows()) == {"u2", "u3"}
        assert store.population_stamp() != stamp
        store.erase_user("u2", self._erasure("u2-f"))
        assert set(store.population_rows()) == {"u3"}

    @staticmethod
    def _erasure(record_id: str, user_key: str = "u1") -> Any:
        def record(ids: list[str]) -> AuditRecord:
            return AuditRecord(record_id, user_key, "forget", {"erased": ids}, 5.0)

        return record

    def test_erase_user_appends_the_erasure_record_atomically(self, store: Store) -> None:
        self._fill(store)
        store.append_audit(AuditRecord("u1-f0", "u1", "forget", {"erased": []}, 1.0))
        store.append_audit(AuditRecord("u1-a2", "u1", "reset", {}, 2.0))
        erased = store.erase_user("u1", self._erasure("u1-f1"), keep_kinds=("forget",))
        assert erased == ["u1-a0", "u1-a1", "u1-a2"]
        assert store.get_profile("u1") is None and store.events("u1") == []
        left = store.audit("u1")
        assert [r.record_id for r in left] == ["u1-f0", "u1-f1"]
        assert left[-1].payload == {"erased": erased}
        assert len(store.events("u2")) == 3 and len(store.audit("u2")) == 2
        links = store.audit_chain()  # erased records keep their links (tombstones)
        assert [link.record_id for link in links][-1] == "u1-f1"
        assert {"u1-a0", "u1-a1", "u1-a2"} <= {link.record_id for link in links}
        # Erasing again erases nothing but the kinds not kept.
        assert store.erase_user("u1", self._erasure("u1-f2"), keep_kinds=("forget",)) == []
        assert store.erase_user("u1", self._erasure("u1-f3")) == ["u1-f0", "u1-f1", "u1-f2"]

    def test_erase_user_writes_nothing_when_the_record_fails(self, store: Store) -> None:
        self._fill(store)

        def boom(ids: list[str]) -> AuditRecord:
            raise _Boom

        with pytest.raises(_Boom):
            store.erase_user("u1", boom)
        with pytest.raises(StoreError, match="already exists"):
            store.erase_user("u1", self._erasure("u2-a0"))  # a duplicate id
        assert store.get_profile("u1") is not None and len(store.events("u1")) == 3
        assert [r.record_id for r in store.audit("u1")] == ["u1-a0", "u1-a1"]

    def test_erased_record_id_cannot_be_reused(self, store: Store) -> None:
        self._fill(store)
        store.erase_user("u1", self._erasure("u1-f"))
        with pytest.raises(StoreError, match="already exists"):
            store.append_audit(AuditRecord("u1-a0", "u1", "decision", {}, 9.0))

    def test_concurrent_erasure_accounts_for_every_record(self, store: Store) -> None:
        """A record appended while another thread erases is either kept or named as erased."""
        n_writers, n_each = 4, 60
        erased: list[str] = []
        errors: list[BaseException] = []

        def write(t: int) -> None:
            try:
                for i in range(n_each):
                    store.append_audit(AuditRecord(f"w{t}-{i}", "u1", "decision", {}, 0.0))
            except BaseException as exc:
                errors.append(exc)

        def erase() -> None:
            try:
                for i in range(20):
                    erased.extend(store.erase_user("u1", self._erasure(f"f{i}"), keep_kinds=()))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(t,)) for t in range(n_writers)]
        threads.append(threading.Thread(target=erase))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        present = {r.record_id for r in store.audit()}
        linked = {link.record_id for link in store.audit_chain()}
        missing = linked - present
        assert missing <= set(erased)
        assert len(linked) == n_writers * n_each + 20

    # ------------------------------------------------------------------ async twins

    def test_async_twins(self, store: Store) -> None:
        loop_thread = threading.get_ident()
        update_threads: list[int] = []

        def update(profile: ProfileRecord | None, events: list[EventRecord]) -> dict[str, Any]:
            update_threads.append(threading.get_ident())
            return count_update(profile, events)

        async def main() -> None:
            assert await store.aget_profile("u1") is None
            assert (await store.aput_profile("u1", {"count": 0}, now=1.0)).version == 1
            added, profile = await store.aapply_event(event("e1"), update, window=8, now=2.0)
            assert added and profile is not None and profile.version == 2
            assert [e.event_id for e in await store.aevents("u1", limit=5)] == ["e1"]
            record = AuditRecord("a1", "u1", "decision", {}, 3.0)
            await store.aappend_audit(record)
            assert await store.aget_audit("a1") == record
            assert await store.aaudit("u1", limit=3) == [record]
            got = await asyncio.gather(*(store.aget_profile("u1") for _ in range(8)))
            assert all(p == profile for p in got)
            assert await store.adelete_user("u1", keep_audit=False) == 3
            await store.aappend_audit(AuditRecord("a2", "u1", "decision", {}, 3.0))
            assert await store.aerase_user("u1", self._erasure("a3")) == ["a2"]

        asyncio.run(main())
        assert update_threads and loop_thread not in update_threads

    # ------------------------------------------------------------------ concurrency

    def test_concurrent_apply_event_loses_nothing(self, store: Store) -> None:
        n_threads, n_each = 8, 200
        versions: list[int] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(n_threads)

        def work(t: int) -> None:
            try:
                barrier.wait()
                for i in range(n_each):
                    added, profile = store.apply_event(
                        event(f"t{t}-{i}", t=t, i=i), count_update, window=4, now=float(i)
                    )
                    assert added and profile is not None
                    versions.append(profile.version)
            except BaseException as exc:  # surfaced by the assert below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        total = n_threads * n_each
        profile = store.get_profile("u1")
        assert profile is not None
        assert profile.state["count"] == total and profile.version == total
        assert sorted(versions) == list(range(1, total + 1))
        stored = store.events("u1")
        assert len(stored) == total
        assert {e.event_id for e in stored} == {f"t{t}-{i}" for t in range(8) for i in range(200)}
        for t in range(n_threads):  # each thread's events kept their relative order
            mine = [e.payload["i"] for e in stored if e.payload["t"] == t]
            assert mine == list(range(n_each))

    def test_concurrent_put_profile_versions_are_unique(self, store: Store) -> None:
        n_threads, n_each = 8, 50
        versions: list[int] = []

        def work() -> None:
            for _ in range(n_each):
                versions.append(store.put_profile("u1", {}, now=0.0).version)

        threads = [threading.Thread(target=work) for _ in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        total = n_threads * n_each
        assert sorted(versions) == list(range(1, total + 1))
        profile = store.get_profile("u1")
        assert profile is not None and profile.version == total

    # ------------------------------------------------------------------ lifecycle

    def test_closed_store_raises_store_error(self, store: Store) -> None:
        store.put_profile("u1", {}, now=0.0)
        store.close()
        store.close()  # idempotent
        with pytest.raises(StoreError, match="closed"):
            store.get_profile("u1")
        with pytest.raises(StoreError, match="closed"):
            store.put_profile("u1", {}, now=0.0)
