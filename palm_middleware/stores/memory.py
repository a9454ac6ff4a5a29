"""``MemoryStore``: the ``Store`` protocol in process memory, for tests and ephemeral use."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from palm_middleware.exceptions import IdentityError, StoreError
from palm_middleware.stores.base import (
    GENESIS_HASH,
    AsyncStoreMixin,
    AuditRecord,
    ChainLink,
    ClosingStoreMixin,
    ErasureRecord,
    EventRecord,
    PopulationRow,
    ProfileRecord,
    ProfileUpdate,
    audit_hash,
    check_limit,
    check_window,
    decode_json,
    encode_json,
)

__all__ = ["MemoryStore"]


class _Profile(NamedTuple):
    state: str
    version: int
    updated_at: float


class _Row(NamedTuple):
    """A stored event or audit record; ``payload`` is JSON text, as in the SQL backends."""

    id: str
    user_key: str
    kind: str
    payload: str
    ts: float


class MemoryStore(ClosingStoreMixin, AsyncStoreMixin):
    """A ``Store`` held in dicts behind one lock; nothing survives the process.

    Values are kept as JSON text, so reads return fresh objects and the semantics (what
    round-trips, what is rejected) match ``SQLiteStore``.

    Example:
        >>> store = MemoryStore()
        >>> store.put_profile("u1", {"mean": [0.5, 0.5]}, now=0.0).version
        1
        >>> store.close()
    """

    def __init__(self) -> None:
        # RLock, not Lock: an ``update`` callback that calls back into the store gets a
        # StoreError from _writing() instead of a deadlock.
        self._lock = threading.RLock()
        self._in_write = False
        self._closed = False
        self._salt = secrets.token_hex(16)
        self._profiles: dict[str, _Profile] = {}
        self._events: dict[str, list[_Row]] = {}  # user_key -> events in append order
        self._event_owner: dict[str, str] = {}  # event_id -> user_key
        self._audit: dict[str, _Row] = {}  # record_id -> record; dict order = append order
        self._audit_ids: dict[str, list[str]] = {}  # user_key -> record ids in append order
        self._chain: list[ChainLink] = []  # never shrinks: erased records leave their hash
        self._chained: set[str] = set()  # record ids with a link (erased ones too), as in SQL
        self._population: dict[str, str] = {}  # user_key -> aggregates (JSON text)
        self._population_rev = 0  # bumped on every population write or delete

    @property
    def salt(self) -> str:
        """A random hex salt for hashing user ids, fixed for the life of this store."""
        return self._salt

    def __repr__(self) -> str:
        return f"MemoryStore(profiles={len(self._profiles)})"

    @contextmanager
    def _reading(self) -> Iterator[None]:
        with self._lock:
            self._check_open()
            yield

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock:
            self._check_open()
            if self._in_write:
                raise StoreError(
                    "MemoryStore: a write was started from inside another write (an apply_event "
                    "update callback must not call the store)."
                )
            self._in_write = True
            try:
                yield
            finally:
                self._in_write = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("MemoryStore is closed; create a new one.")

    def _profile(self, user_key: str) -> ProfileRecord | None:
        p = self._profiles.get(user_key)
        if p is None:
            return None
        state = decode_json(p.state, what=f"state of user {user_key!r}")
        return ProfileRecord(user_key, state, p.version, p.updated_at)

    def _write_profile(self, user_key: str, state_json: str, now: float) -> ProfileRecord:
        old = self._profiles.get(user_key)
        version = 1 if old is None else old.version + 1
        self._profiles[user_key] = _Profile(state_json, version, now)
        return ProfileRecord(user_key, decode_json(state_json, what="state"), version, now)

    def get_profile(self, user_key: str) -> ProfileRecord | None:
        """Return the profile of ``user_key``, or None."""
        with self._reading():
            return self._profile(user_key)

    def put_profile(self, user_key: str, state: dict[str, Any], *, now: float) -> ProfileRecord:
        """Write ``state`` as the profile of ``user_key`` (version + 1) and return it."""
        state_json = encode_json(state, what=f"state of user {user_key!r}")
        with self._writing():
            return self._write_profile(user_key, state_json, now)

    def bulk_put_profiles(self, items: Iterable[tuple[str, dict[str, Any]]], now: float) -> int:
        """Write many profiles at once (imports, benchmarks); returns how many were written."""
        encoded = [(k, encode_json(s, what=f"state of user {k!r}")) for k, s in items]
        with self._writing():
            for user_key, state_json in encoded:
                self._write_profile(user_key, state_json, now)
        return len(encoded)

    def apply_event(
        self,
        event: EventRecord,
        update: ProfileUpdate,
        *,
        window: int = 256,
        now: float,
        population: PopulationRow | None = None,
    ) -> tuple[bool, ProfileRecord | None]:
        """Store ``event`` once and rewrite the profile with ``update``; see ``Store``."""
        check_window(window)
        row = _Row(
            event.event_id,
            event.user_key,
            event.kind,
            encode_json(event.payload, what=f"payload of event {event.event_id!r}"),
            event.ts,
        )
        with self._writing():
            owner = self._event_owner.get(event.event_id)
            if owner is not None:
                if owner != event.user_key:
                    raise IdentityError(
                        f"Event id {event.event_id!r} is already stored for another user; "
                        "event ids must be globally unique."
                    )
                return False, self._profile(event.user_key)
            current = self._profile(event.user_key)
            history = self._events.get(event.user_key, [])
            recent = [*history[max(0, len(history) - window + 1) :], row] if window > 1 else [row]
            # Nothing is mutated before update returns, so a raising update leaves no trace.
            state = update(current, [_event(r) for r in recent])
            state_json = encode_json(state, what=f"state returned by update for {event.user_key!r}")
            agg = None if population is None else population(state)
            agg_json = None if agg is None else encode_json(agg, what="population row")
            self._events.setdefault(event.user_key, []).append(row)
            self._event_owner[event.event_id] = event.user_key
            if population is not None:
                if agg_json is not None:
                    self._population[event.user_key] = agg_json
                    self._population_rev += 1
                else:
                    self._drop_population(event.user_key)
            return True, self._write_profile(event.user_key, state_json, now)

    def _drop_population(self, user_key: str) -> int:
        if self._population.pop(user_key, None) is None:
            return 0
        self._population_rev += 1
        return 1

    def population_rows(self) -> dict[str, dict[str, Any]]:
        """Return every user's population row (user key -> aggregates), in key order."""
        with self._reading():
            rows = sorted(self._population.items())
        return {k: decode_json(v, what=f"population row of {k!r}") for k, v in rows}

    def population_stamp(self) -> tuple[int, ...]:
        """(rows, writes so far): changes on every population write or delete."""
        with self._reading():
            return len(self._population), self._population_rev

    def events(self, user_key: str, *, limit: int | None = None) -> list[EventRecord]:
        """Return the events of ``user_key`` in append order; ``limit``: most recent N."""
        check_limit(limit)
        with self._reading():
            rows = _tail(self._events.get(user_key, []), limit)
            return [_event(r) for r in rows]

    def append_audit(self, record: AuditRecord) -> None:
        """Append an audit record; a duplicate ``record_id`` raises ``StoreError``."""
        row = _audit_row(record)
        with self._writing():
            self._append_audit(row)

    def _append_audit(self, row: _Row) -> None:
        """Append one audit row and its chain link; the caller holds the write lock."""
        if row.id in self._chained:
            raise StoreError(f"Audit record id {row.id!r} already exists; audit ids are unique.")
        prev = self._chain[-1].hash if self._chain else GENESIS_HASH
        payload = decode_json(row.payload, what="audit payload")
        digest = audit_hash(prev, row.id, row.user_key, row.kind, payload, row.ts)
        self._audit[row.id] = row
        self._audit_ids.setdefault(row.user_key, []).append(row.id)
        self._chain.append(ChainLink(len(self._chain) + 1, row.id, prev, digest))
        self._chained.add(row.id)

    def audit_chain(self) -> list[ChainLink]:
        """Return the audit hash chain in append order."""
        with self._reading():
            return list(self._chain)

    def get_audit(self, record_id: str) -> AuditRecord | None:
        """Return the audit record ``record_id``, or None."""
        with self._reading():
            row = self._audit.get(record_id)
            return None if row is None else _audit(row)

    def audit(self, user_key: str | None = None, *, limit: int | None = None) -> list[AuditRecord]:
        """Return audit records (of one user, or all) in append order; ``limit``: most recent N."""
        check_limit(limit)
        with self._reading():
            if user_key is None:
                rows = _tail(list(self._audit.values()), limit)
            else:
                ids = _tail(self._audit_ids.get(user_key, []), limit)
                rows = [self._audit[i] for i in ids]
            return [_audit(r) for r in rows]

    def delete_user(self, user_key: str, *, keep_audit: bool) -> int:
        """Delete profile and events (and audit rows unless ``keep_audit``).

        Returns:
            The number of records deleted.
        """
        with self._writing():
            n = self._drop_population(user_key)
            if self._profiles.pop(user_key, None) is not None:
                n += 1
            for row in self._events.pop(user_key, []):
                del self._event_owner[row.id]
                n += 1
            if not keep_audit:
                for record_id in self._audit_ids.pop(user_key, []):
                    del self._audit[record_id]
                    n += 1
            return n

    def erase_user(
        self, user_key: str, record: ErasureRecord, *, keep_kinds: Collection[str] = ()
    ) -> list[str]:
        """Erase the user and append ``record(erased_ids)`` atomically; see ``Store``."""
        keep = frozenset(keep_kinds)
        with self._writing():
            ids = self._audit_ids.get(user_key, [])
            erased = [i for i in ids if self._audit[i].kind not in keep]
            # Nothing is mutated before the erasure record is built and checked.
            row = _audit_row(record(list(erased)))
            if row.id in self._chained:
                raise StoreError(
                    f"Audit record id {row.id!r} already exists; audit ids are unique."
                )
            self._profiles.pop(user_key, None)
            self._drop_population(user_key)
            for event in self._events.pop(user_key, []):
                del self._event_owner[event.id]
            gone = set(erased)
            for record_id in erased:
                del self._audit[record_id]
            kept = [i for i in ids if i not in gone]
            if kept:
                self._audit_ids[user_key] = kept
            else:
                self._audit_ids.pop(user_key, None)
            self._append_audit(row)
            return erased

    def purge_events(self, *, before: float, user_key: str | None = None) -> int:
        """Delete events with ``ts < before`` (of one user, or all); return how many."""
        with self._writing():
            n = 0
            keys = [user_key] if user_key is not None else list(self._events)
            for key in keys:
                rows = self._events.get(key, [])
                keep = [r for r in rows if not r.ts < before]
                for r in rows:
                    if r.ts < before:
                        del self._event_owner[r.id]
                        n += 1
                if rows:
                    self._events[key] = keep
            return n

    def users_with_events_before(self, before: float) -> list[str]:
        """Return the user keys with at least one event older than ``before``."""
        with self._reading():
            return [k for k, rows in self._events.items() if any(r.ts < before for r in rows)]

    def count_profiles(self) -> int:
        """Return the number of stored profiles."""
        with self._reading():
            return len(self._profiles)

    def close(self) -> None:
        """Drop all data; later calls raise ``StoreError``. Idempotent."""
        with self._lock:
            self._closed = True
            self._profiles.clear()
            self._events.clear()
            self._event_owner.clear()
            self._audit.clear()
            self._audit_ids.clear()
            self._population.clear()


def _tail(items: list[Any], limit: int | None) -> list[Any]:
    # items[-0:] is the whole list, hence the explicit 0 case.
    if limit is None:
        return list(items)
    return items[max(0, len(items) - limit) :] if limit else []


def _event(row: _Row) -> EventRecord:
    payload = decode_json(row.payload, what=f"payload of event {row.id!r}")
    return EventRecord(row.id, row.user_key, row.kind, payload, row.ts)


def _audit_row(record: AuditRecord) -> _Row:
    payload = encode_json(record.payload, what=f"payload of audit record {record.record_id!r}")
    return _Row(record.record_id, record.user_key, record.kind, payload, record.ts)


def _audit(row: _Row) -> AuditRecord:
    payload = decode_json(row.payload, what=f"payload of audit record {row.id!r}")
    return AuditRecord(row.id, row.user_key, row.kind, payload, row.ts)
