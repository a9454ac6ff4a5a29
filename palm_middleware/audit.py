"""The audit log: the outbox that writes it and the verification of its tamper-evident chain.

:class:`AuditOutbox` writes each record through the store; while the store is down, records wait
in order and go out with the next write. A record the store refuses for good is logged in full
(a dead letter), never dropped silently and never blocking the records behind it.

Every audit record gets a link ``(seq, record_id, prev_hash, hash)`` written in the same
transaction, where ``hash = sha256(canonical JSON of the record + prev_hash)``. Links are never
deleted, even when ``Palm.forget`` erases a user's audit records: an erased record leaves only
its hash (a tombstone, no user key, no payload), and the ``forget`` record that follows lists
the ids it erased. So :func:`verify_audit_chain` can tell

* an **edited** record (its hash no longer matches its link),
* a **deleted** record (its link remains but no ``forget`` record accounts for it),
* a removed or reordered **link** (``prev_hash`` no longer matches the previous link's hash),

from a legitimate erasure. ``Palm.forget`` keeps earlier ``forget`` records and the store
writes each one in the same transaction as the erasure it describes (``Store.erase_user``), so
forgetting twice, or verifying while users are being forgotten, never raises a false alarm.
Truncating the tail of both tables is not detectable from inside
the database; publish :attr:`ChainReport.head` elsewhere (logs, a notary) to anchor it.

A store may keep several chains (``ChainLink.chain``; ``PostgresStore`` shards records over
chains so that replicas do not all queue on one lock): each is checked on its own, from the
genesis hash, and ``head`` then digests the heads of all of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .exceptions import StoreError
from .guard.replies import ReplyVerdict
from .preferences.events import ExplicitWeights, FeedbackEvent
from .preferences.state import event_digest
from .stores.base import GENESIS_HASH, AuditRecord, Store, audit_hash

__all__ = [
    "SYSTEM_KEY",
    "AuditOutbox",
    "ChainReport",
    "feedback_record",
    "last_served",
    "outcome_record",
    "reply_block_record",
    "verify_audit_chain",
]

logger = logging.getLogger("palm_middleware")

#: ``user_key`` of audit records about the deployment itself (policy swaps and refusals); user
#: keys are hex digests, so it never names a user and no ``forget`` erases it.
SYSTEM_KEY = "system"


class AuditOutbox:
    """Writes audit records in order; keeps them while the store is down (thread-safe)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: deque[AuditRecord] = deque()
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Records not yet written because the store failed."""
        return len(self._queue)

    def write(self, record: AuditRecord) -> None:
        """Write ``record`` after any queued ones; if the store is down, keep it for later."""
        with self._lock:
            self._queue.append(record)
            self._flush()

    def flush(self) -> int:
        """Write the queued records now, in order; returns how many are still unwritten."""
        with self._lock:
            self._flush()
            return len(self._queue)

    def erase_user(self, key: str, now: float) -> None:
        """Erase the user's audit records, leaving one ``forget`` record that lists their ids.

        The store erases and writes the record in one transaction; records of this user still
        queued (the store was down) are dropped and listed too, so the chain accounts for them.
        """
        with self._lock:  # no audit write of this process slips between list and delete
            self._flush()  # older records first, where the store takes them
            queued = [r.record_id for r in self._queue if r.user_key == key]

            def record(erased: list[str]) -> AuditRecord:
                ids = [*erased, *queued]
                return AuditRecord(
                    uuid.uuid4().hex, key, "forget", {"erased": ids, "n_erased": len(ids)}, now
                )

            self.store.erase_user(key, record, keep_kinds=("forget",))
            self._queue = deque(r for r in self._queue if r.user_key != key)
            self._flush()  # the store is back: write what other users have queued

    def _flush(self) -> None:
        """Write queued records in order; the caller holds the lock."""
        while self._queue:
            head = self._queue[0]
            try:
                self.store.append_audit(head)
            except StoreError as exc:
                if exc.is_retryable:
                    logger.error(
                        "audit write failed (%s); %d record(s) pending", exc, len(self._queue)
                    )
                    return
                logger.error(
                    "audit record refused by the store (%s); dead letter: %s",
                    exc,
                    json.dumps(dataclasses.asdict(head), default=str),
                )
            except Exception as exc:  # keep serving; the record stays queued
                logger.exception("audit write failed unexpectedly (%s)", exc)
                return
            self._queue.popleft()


def feedback_record(
    key: str,
    event: FeedbackEvent,
    kind: str,
    extra: Mapping[str, Any],
    added: bool,
    now: float,
) -> AuditRecord:
    """The audit record of one feedback event: ids and labels only (never text).

    The client's event id is kept as a digest of the stored id (a client could put text in
    it); ``recorded`` is False for a retried delivery, so even a retry after a crash between
    the event write and this record leaves a trace.
    """
    payload: dict[str, Any] = {
        "event": event_digest(f"{key}:{event.event_id}"),
        "event_kind": kind,
        "recorded": bool(added),
    }
    decision_id = getattr(event, "decision_id", None)
    if isinstance(decision_id, str):
        payload["decision_id"] = decision_id[:64]
    for name in ("member", "up", "winner", "loser", "weights"):
        if name in extra:
            payload[name] = extra[name]
    if isinstance(event, ExplicitWeights):
        payload["confidence"] = float(event.confidence)
    audit_kind = "edit" if isinstance(event, ExplicitWeights) else "feedback"
    return AuditRecord(uuid.uuid4().hex, key, audit_kind, payload, now)


def reply_block_record(
    key: str, decision_id: str, verdict: ReplyVerdict, *, streamed: bool, policy: str, now: float
) -> AuditRecord:
    """The audit record of a refused reply: the rule and the topic labels, never the text."""
    payload = {
        "decision_id": decision_id,
        "rule_id": verdict.rule_id,
        "topics": list(verdict.topics),
        "streamed": streamed,
        "policy_version": policy,
    }
    return AuditRecord(uuid.uuid4().hex, key, "reply_block", payload, now)


#: Audit records read back for the user's latest decision (:func:`last_served`).
LAST_SERVED_WINDOW = 32


def last_served(store: Store, key: str, window: int = LAST_SERVED_WINDOW) -> str | None:
    """The member the user's latest decision served (the stand-in, if one took over), or None.

    Comparison decisions (``mode == "compare"``: the second side of an A/B question) are
    skipped. Reads only ``key``'s own latest ``window`` records (one indexed query); ``key``
    must come from the caller's authentication, as for every other read of a user's data.
    """
    stand_ins: dict[str, str] = {}
    for rec in reversed(store.audit(key, limit=window)):
        payload = rec.payload
        if rec.kind == "outcome" and isinstance(payload.get("served"), str):
            stand_ins.setdefault(str(payload.get("decision_id")), payload["served"])
        elif rec.kind == "decision" and payload.get("mode") != "compare":
            member = payload.get("member")
            if isinstance(member, str):
                return stand_ins.get(rec.record_id, member)
    return None


def outcome_record(
    key: str,
    decision_id: str,
    outcome: str,
    usage: Mapping[str, int] | None,
    latency_ms: float | None,
    error: str | None,
    now: float,
    served: str | None = None,
) -> AuditRecord:
    """The audit record of what happened after a decision.

    No message text: the outcome label, integer token counts, latency, an error class name (cut
    to 200 characters) and the member that served when it was not the decided one.
    """
    payload: dict[str, Any] = {"decision_id": decision_id, "outcome": str(outcome)}
    if usage:
        payload["usage"] = {
            str(k): int(v)
            for k, v in usage.items()
            if isinstance(v, int) and not isinstance(v, bool)
        }
    if latency_ms is not None:
        payload["latency_ms"] = round(float(latency_ms), 3)
    if error is not None:
        payload["error"] = str(error)[:200]
    if served is not None:
        payload["served"] = str(served)
    return AuditRecord(uuid.uuid4().hex, key, "outcome", payload, now)


@dataclass(frozen=True)
class ChainReport:
    """Outcome of :func:`verify_audit_chain`."""

    ok: bool
    """True when no problem was found."""
    checked: int
    """Records whose hash was recomputed and matched."""
    erased: int
    """Links whose record was erased by a ``forget`` (tombstones)."""
    unchained: int
    """Records written before the chain existed (not covered)."""
    head: str
    """Hash of the last link, or with several chains a sha256 over all their heads (anchor it
    outside the database)."""
    problems: list[str] = field(default_factory=list)
    """What is wrong, one line per problem."""
    heads: dict[int, str] = field(default_factory=dict)
    """Last hash of each chain."""


def verify_audit_chain(store: Store) -> ChainReport:
    """Check the audit log of ``store`` against its hash chain.

    Args:
        store: Any store with ``audit()`` and ``audit_chain()``.

    Returns:
        A :class:`ChainReport`; ``ok`` is False if a record was edited or deleted outside
        ``forget``, or a link was removed or altered.
    """
    # Links first, records second: a record appended in between has no link in this snapshot
    # (it is checked next time), and a record erased in between is accounted for by its forget
    # record, which the store wrote in the same transaction. The other order could see a link
    # whose record was appended after the records were read: a false "deleted" alarm.
    links = store.audit_chain()
    records = {r.record_id: r for r in store.audit()}
    erased_ok: set[str] = set()
    for r in records.values():
        if r.kind == "forget":
            ids = r.payload.get("erased", [])
            if isinstance(ids, list):
                erased_ok.update(str(i) for i in ids)
    problems: list[str] = []
    heads: dict[int, str] = {}
    checked = erased = 0
    for link in links:
        prev = heads.get(link.chain, GENESIS_HASH)
        where = f"link {link.seq}" if link.chain == 0 else f"chain {link.chain} link {link.seq}"
        if link.prev_hash != prev:
            problems.append(
                f"{where} ({link.record_id}): prev_hash does not match the "
                "previous link; a link was removed, inserted or altered"
            )
        rec = records.get(link.record_id)
        if rec is None:
            if link.record_id in erased_ok:
                erased += 1
            else:
                problems.append(
                    f"{where}: record {link.record_id} is missing and no "
                    "forget record accounts for it (deleted outside forget)"
                )
        else:
            digest = audit_hash(
                link.prev_hash, rec.record_id, rec.user_key, rec.kind, rec.payload, rec.ts
            )
            if digest != link.hash:
                problems.append(f"{where}: record {link.record_id} was modified (hash mismatch)")
            else:
                checked += 1
        heads[link.chain] = link.hash
    # Records newer than the link snapshot are chained, just not in this snapshot.
    chained = {link.record_id for link in store.audit_chain()}
    unchained = sum(1 for rid in records if rid not in chained)
    return ChainReport(
        ok=not problems,
        checked=checked,
        erased=erased,
        unchained=unchained,
        head=_head(heads),
        problems=problems,
        heads=heads,
    )


def _head(heads: dict[int, str]) -> str:
    """The one chain's head, or a digest of every chain's head (in chain order)."""
    if not heads:
        return GENESIS_HASH
    if list(heads) == [0]:
        return heads[0]
    text = "\n".join(f"{chain}:{heads[chain]}" for chain in sorted(heads))
    return hashlib.sha256(text.encode()).hexdigest()
