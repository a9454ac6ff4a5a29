"""Verification of the tamper-evident audit log.

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

import hashlib
from dataclasses import dataclass, field

from .stores.base import GENESIS_HASH, Store, audit_hash

__all__ = ["ChainReport", "verify_audit_chain"]


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
