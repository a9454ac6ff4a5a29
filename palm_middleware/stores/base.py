"""The ``Store`` protocol: per-user profiles, an idempotent event log and an audit log.

A store keeps four things per user key:

* a **profile**: the latest posterior summary (``state``), opaque to the store, with a
  ``version`` that grows by one on every write;
* the **events** that fed it, append-only, each ``event_id`` stored at most once;
* **audit** records (decisions, feedback, resets, forgets), append-only;
* a **population row**: the few aggregates of the user's posterior that the population prior
  is fitted from (no events, no text), written by ``apply_event`` in the same transaction as
  the profile, deleted with the user. Every replica reading the rows fits the same prior, and
  a restart keeps it.

``erase_user`` is the write path of the right to erasure: it deletes a user's data and
appends the ``forget`` record that names the erased audit ids in one transaction, so no reader
ever sees an erased record without the record that accounts for it.

``apply_event`` is the write path of learning: it stores one event and recomputes the
profile from the last ``window`` events in one transaction, so a retried delivery of the same
event changes nothing and concurrent writers never lose an update.

Every backend (``MemoryStore``, ``SQLiteStore``, later Redis and PostgreSQL) keeps the same
semantics, checked by ``tests/stores/contract.py``. Values cross the store as JSON: what you
read back is what ``json.loads(json.dumps(value))`` gives, in every backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

from palm_middleware.exceptions import InvalidParameterError, StoreError

__all__ = [
    "AsyncStoreMixin",
    "AuditRecord",
    "ChainLink",
    "ErasureRecord",
    "EventRecord",
    "GENESIS_HASH",
    "ProfileRecord",
    "PopulationRow",
    "ProfileUpdate",
    "Store",
    "audit_hash",
    "check_limit",
    "check_window",
    "decode_json",
    "encode_json",
]


@dataclass(frozen=True)
class ProfileRecord:
    """The stored profile of one user.

    Attributes:
        user_key: The (pseudonymous) user key.
        state: JSON-serializable posterior summary, opaque to the store.
        version: Starts at 1 and grows by 1 on every write.
        updated_at: Unix seconds of the last write (the ``now`` passed to it).
    """

    user_key: str
    state: dict[str, Any]  # JSON-serializable posterior summary, opaque to the store
    version: int  # increments by 1 on every write, starts at 1
    updated_at: float  # unix seconds


@dataclass(frozen=True)
class EventRecord:
    """One feedback event; ``event_id`` is globally unique and makes appends idempotent."""

    event_id: str  # globally unique; appending the same id twice is a no-op (idempotent)
    user_key: str
    kind: str
    payload: dict[str, Any]  # JSON-serializable
    ts: float


@dataclass(frozen=True)
class AuditRecord:
    """One audit entry (``kind``: "decision", "feedback", "reset", "forget", ...)."""

    record_id: str  # unique
    user_key: str
    kind: str  # "decision", "feedback", "reset", "forget", ...
    payload: dict[str, Any]
    ts: float


@dataclass(frozen=True)
class ChainLink:
    """One link of an audit hash chain; links are never deleted, so an erased record leaves
    its hash behind (a tombstone) and the chain stays verifiable.

    ``chain`` names the chain the link belongs to: stores with one chain use 0; a store with
    concurrent writers on many machines (``PostgresStore``) shards records over several chains,
    and ``seq`` counts within each chain.
    """

    seq: int
    record_id: str
    prev_hash: str
    hash: str
    chain: int = 0


#: ``prev_hash`` of the first link.
GENESIS_HASH = "0" * 64


def audit_hash(
    prev_hash: str, record_id: str, user_key: str, kind: str, payload: dict[str, Any], ts: float
) -> str:
    """sha256 over the canonical JSON of a record and the hash of the link before it."""
    canonical = json.dumps(
        {
            "prev": prev_hash,
            "record_id": record_id,
            "user_key": user_key,
            "kind": kind,
            "payload": payload,
            "ts": ts,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


ProfileUpdate = Callable[[ProfileRecord | None, list[EventRecord]], dict[str, Any]]
"""``update(current_profile, window_events) -> new_state``, called by ``Store.apply_event``."""

PopulationRow = Callable[[dict[str, Any]], dict[str, Any] | None]
"""``row(new_state) -> the user's population aggregates, or None for no row``, called by
``Store.apply_event`` on the state ``update`` returned (e.g. None for an opted-out user)."""

ErasureRecord = Callable[[list[str]], AuditRecord]
"""``record(erased_ids) -> the audit record of the erasure``, called by ``Store.erase_user``."""


@runtime_checkable
class Store(Protocol):
    """Profiles, events and audit records of users; safe to share between threads.

    Writes to one store are serialized; ``put_profile`` and ``apply_event`` never lose an
    update under concurrent writers (threads, and processes for file-backed stores). The
    ``a``-prefixed twins run the sync method in a worker thread (``asyncio.to_thread``);
    cancelling the awaiting task does not cancel a write that already started.
    """

    @property
    def salt(self) -> str:
        """A random per-store secret (hex) for pseudonymizing user ids; fixed at creation."""
        ...

    def get_profile(self, user_key: str) -> ProfileRecord | None:
        """Return the profile of ``user_key``, or None if it has none."""
        ...

    def put_profile(self, user_key: str, state: dict[str, Any], *, now: float) -> ProfileRecord:
        """Write ``state`` as the profile of ``user_key`` (version + 1) and return it."""
        ...

    def apply_event(
        self,
        event: EventRecord,
        update: ProfileUpdate,
        *,
        window: int = 256,
        now: float,
        population: PopulationRow | None = None,
    ) -> tuple[bool, ProfileRecord | None]:
        """Store ``event`` once and rewrite the user's profile from it, atomically.

        In one transaction, writers serialized: if ``event.event_id`` already exists, return
        ``(False, current profile)`` without calling ``update``. Otherwise insert the event,
        call ``update(current_profile, events)`` where ``events`` are the last ``window``
        events of that user in append order, INCLUDING the new one, write the returned state
        as the user's profile, commit and return ``(True, new profile)``. If ``update``
        raises, nothing is written (the event is NOT stored either) and the exception
        propagates.

        ``update`` runs while the write lock is held: keep it short and pure, and never call
        the store from it. An ``event_id`` already stored for a *different* user raises
        ``IdentityError`` (ids are global, so this is a caller bug or a replay).

        ``population``: called with the new state in the same transaction; a dict is written
        as the user's population row, None deletes it. Without it the row is left as it is.
        """
        ...

    def population_rows(self) -> dict[str, dict[str, Any]]:
        """Return every user's population row (user key -> aggregates), in key order."""
        ...

    def population_stamp(self) -> tuple[int, ...]:
        """A cheap fingerprint of the population rows: it changes whenever a row is written or
        deleted (by any process), so a reader re-reads the rows only then."""
        ...

    def events(self, user_key: str, *, limit: int | None = None) -> list[EventRecord]:
        """Return the events of ``user_key`` in append order; ``limit`` keeps the most recent N."""
        ...

    def append_audit(self, record: AuditRecord) -> None:
        """Append an audit record and its hash-chain link, atomically; a duplicate
        ``record_id`` raises ``StoreError``."""
        ...

    def get_audit(self, record_id: str) -> AuditRecord | None:
        """Return the audit record ``record_id``, or None."""
        ...

    def audit(self, user_key: str | None = None, *, limit: int | None = None) -> list[AuditRecord]:
        """Return audit records (of one user, or all) in append order; ``limit``: most recent N."""
        ...

    def delete_user(self, user_key: str, *, keep_audit: bool) -> int:
        """Delete profile, population row and events (and audit rows unless ``keep_audit``)
        in one transaction.

        Returns:
            The number of rows deleted.
        """
        ...

    def erase_user(
        self, user_key: str, record: ErasureRecord, *, keep_kinds: Collection[str] = ()
    ) -> list[str]:
        """Erase a user and append the audit record of the erasure, in one transaction.

        Deletes the profile, the population row, the events and the audit records of
        ``user_key`` whose kind is
        not in ``keep_kinds`` (their chain links stay: tombstones), then appends
        ``record(erased_ids)`` (ids in append order) with its chain link. If ``record`` raises,
        or the append fails, nothing is deleted. ``record`` runs while the write lock is held:
        keep it pure and never call the store from it.

        Returns:
            The ids of the erased audit records, in append order.
        """
        ...

    def audit_chain(self) -> list[ChainLink]:
        """Return the audit hash chain in append order (links outlive erased records)."""
        ...

    def purge_events(self, *, before: float, user_key: str | None = None) -> int:
        """Delete events with ``ts < before`` (of one user, or all): retention and folding.

        Returns:
            The number of events deleted.
        """
        ...

    def users_with_events_before(self, before: float) -> list[str]:
        """Return the user keys that have at least one event with ``ts < before``."""
        ...

    def count_profiles(self) -> int:
        """Return the number of stored profiles."""
        ...

    def close(self) -> None:
        """Release every resource; later calls raise ``StoreError``. Idempotent."""
        ...

    async def aget_profile(self, user_key: str) -> ProfileRecord | None:
        """Async twin of ``get_profile``."""
        ...

    async def aput_profile(
        self, user_key: str, state: dict[str, Any], *, now: float
    ) -> ProfileRecord:
        """Async twin of ``put_profile``."""
        ...

    async def aapply_event(
        self,
        event: EventRecord,
        update: ProfileUpdate,
        *,
        window: int = 256,
        now: float,
        population: PopulationRow | None = None,
    ) -> tuple[bool, ProfileRecord | None]:
        """Async twin of ``apply_event``; ``update`` runs in the worker thread."""
        ...

    async def aevents(self, user_key: str, *, limit: int | None = None) -> list[EventRecord]:
        """Async twin of ``events``."""
        ...

    async def aappend_audit(self, record: AuditRecord) -> None:
        """Async twin of ``append_audit``."""
        ...

    async def aget_audit(self, record_id: str) -> AuditRecord | None:
        """Async twin of ``get_audit``."""
        ...

    async def aaudit(
        self, user_key: str | None = None, *, limit: int | None = None
    ) -> list[AuditRecord]:
        """Async twin of ``audit``."""
        ...

    async def adelete_user(self, user_key: str, *, keep_audit: bool) -> int:
        """Async twin of ``delete_user``."""
        ...

    async def aerase_user(
        self, user_key: str, record: ErasureRecord, *, keep_kinds: Collection[str] = ()
    ) -> list[str]:
        """Async twin of ``erase_user``; ``record`` runs in the worker thread."""
        ...


_Closable = TypeVar("_Closable", bound="ClosingStoreMixin")


class ClosingStoreMixin:
    """``with Store(...) as store:`` closes the store on exit; a subclass implements ``close``."""

    def close(self) -> None:  # pragma: no cover - every store defines its own
        raise NotImplementedError

    def __enter__(self: _Closable) -> _Closable:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncStoreMixin:
    """The ``a``-prefixed twins of a sync store, each run in a worker thread.

    ``asyncio.to_thread`` keeps the event loop free while SQLite (or a lock) blocks; the sync
    methods are thread-safe, so nothing else is needed. A subclass must implement the sync
    methods of ``Store``.
    """

    async def aget_profile(self: Store, user_key: str) -> ProfileRecord | None:
        """Async twin of ``get_profile``."""
        return await asyncio.to_thread(self.get_profile, user_key)

    async def aput_profile(
        self: Store, user_key: str, state: dict[str, Any], *, now: float
    ) -> ProfileRecord:
        """Async twin of ``put_profile``."""
        return await asyncio.to_thread(self.put_profile, user_key, state, now=now)

    async def aapply_event(
        self: Store,
        event: EventRecord,
        update: ProfileUpdate,
        *,
        window: int = 256,
        now: float,
        population: PopulationRow | None = None,
    ) -> tuple[bool, ProfileRecord | None]:
        """Async twin of ``apply_event``; ``update`` runs in the worker thread."""
        return await asyncio.to_thread(
            self.apply_event, event, update, window=window, now=now, population=population
        )

    async def aevents(self: Store, user_key: str, *, limit: int | None = None) -> list[EventRecord]:
        """Async twin of ``events``."""
        return await asyncio.to_thread(self.events, user_key, limit=limit)

    async def aappend_audit(self: Store, record: AuditRecord) -> None:
        """Async twin of ``append_audit``."""
        await asyncio.to_thread(self.append_audit, record)

    async def aget_audit(self: Store, record_id: str) -> AuditRecord | None:
        """Async twin of ``get_audit``."""
        return await asyncio.to_thread(self.get_audit, record_id)

    async def aaudit(
        self: Store, user_key: str | None = None, *, limit: int | None = None
    ) -> list[AuditRecord]:
        """Async twin of ``audit``."""
        return await asyncio.to_thread(self.audit, user_key, limit=limit)

    async def adelete_user(self: Store, user_key: str, *, keep_audit: bool) -> int:
        """Async twin of ``delete_user``."""
        return await asyncio.to_thread(self.delete_user, user_key, keep_audit=keep_audit)

    async def aerase_user(
        self: Store, user_key: str, record: ErasureRecord, *, keep_kinds: Collection[str] = ()
    ) -> list[str]:
        """Async twin of ``erase_user``; ``record`` runs in the worker thread."""
        return await asyncio.to_thread(self.erase_user, user_key, record, keep_kinds=keep_kinds)


def encode_json(value: object, *, what: str) -> str:
    """Serialize a JSON object (a ``dict``) compactly for storage.

    Args:
        value: The object to store.
        what: What it is, for the error message (``"state of user 'u1'"``).

    Raises:
        InvalidParameterError: ``value`` is not a dict, holds a non-JSON value, NaN or infinity.
    """
    if not isinstance(value, dict):
        raise InvalidParameterError(
            f"The {what} must be a dict (a JSON object). Got {type(value).__name__} instead."
        )
    try:
        # allow_nan=False: NaN/Infinity are not JSON and other backends would reject them.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"The {what} must be JSON-serializable (no NaN or infinity). Got: {exc}"
        ) from exc


def decode_json(text: str, *, what: str) -> dict[str, Any]:
    """Parse a JSON object written by ``encode_json``.

    Raises:
        StoreError: The stored text is not a JSON object (the store is damaged).
    """
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"The stored {what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise StoreError(f"The stored {what} is not a JSON object. Got {type(value).__name__}.")
    return value


def check_limit(limit: int | None) -> None:
    """Reject a ``limit`` that is not None or a non-negative int."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidParameterError(
            f"The 'limit' parameter must be None or an int >= 0. Got {limit!r} instead."
        )


def check_window(window: int) -> None:
    """Reject a ``window`` that is not an int >= 1 (the new event is always in the window)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise InvalidParameterError(
            f"The 'window' parameter of apply_event must be an int >= 1. Got {window!r} instead."
        )
