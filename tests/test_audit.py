"""The audit log never cries wolf: every right a user exercises is on the record, and the chain
verifies after any sequence of them (issue 11, item 7), on ``MemoryStore`` and ``SQLiteStore``."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from palm_middleware import (
    ExplicitWeights,
    MemoryStore,
    Pairwise,
    Palm,
    Regenerate,
    SQLiteStore,
    Thumb,
    load_policy,
    load_portfolio,
)
from palm_middleware.audit import verify_audit_chain
from palm_middleware.data import bundled
from palm_middleware.exceptions import StoreUnavailable
from palm_middleware.stores.base import Store

PORTFOLIO = load_portfolio(bundled("portfolio.yaml"))
POLICY = load_policy(bundled("policy.yaml"))
SECRET = "my mail is carol@example.org and I like zebra-crossings"
TRAITS = list(PORTFOLIO.space.names)


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "palm.db")
    yield s
    s.close()


def make(store: Store) -> Palm:
    return Palm(PORTFOLIO, POLICY, store, clock=Clock(), random_state=0, embedder=None)


def ask(text: str = "hello") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def assert_chain_ok(store: Store) -> None:
    report = verify_audit_chain(store)
    assert report.ok, report.problems
    assert report.unchained == 0


def test_forget_twice_keeps_the_chain_verifiable(store: Store) -> None:
    palm = make(store)
    palm.decide("alice", ask())
    palm.forget("alice")
    palm.forget("alice")
    assert_chain_ok(store)
    key = palm.user_key("alice")
    kinds = [r.kind for r in store.audit(key)]
    assert kinds == ["forget", "forget"]
    first, second = store.audit(key)
    assert first.payload["n_erased"] == 1 and second.payload == {"erased": [], "n_erased": 0}
    palm.decide("alice", ask())  # the user comes back, then leaves again
    palm.forget("alice")
    assert_chain_ok(store)
    assert verify_audit_chain(store).erased == 2


@pytest.mark.parametrize("before", ["reset", "opt_out", "opt_in", "export", "edit", "feedback"])
def test_forget_after_any_right_verifies(store: Store, before: str) -> None:
    palm = make(store)
    d = palm.decide("bob", ask())
    if before == "reset":
        palm.reset("bob")
    elif before in ("opt_out", "opt_in"):
        palm.set_opt_out("bob", before == "opt_out")
    elif before == "export":
        palm.export("bob")
    elif before == "edit":
        palm.edit("bob", {TRAITS[0]: 0.5})
    else:
        palm.record_feedback("bob", Thumb(up=True, decision_id=d.decision_id))
    palm.decide("carol", ask())
    palm.forget("bob")
    assert_chain_ok(store)
    assert [r.kind for r in store.audit(palm.user_key("bob"))] == ["forget"]
    assert len(store.audit(palm.user_key("carol"))) == 1


def test_every_right_is_audited_with_ids_and_labels_only(store: Store) -> None:
    palm = make(store)
    d = palm.decide("dave", ask(SECRET))
    member = d.member
    other = next(m for m in PORTFOLIO.ids if m != member)
    palm.record_feedback("dave", Thumb(up=False, decision_id=d.decision_id, event_id="t1"))
    palm.record_feedback("dave", Thumb(up=False, decision_id=d.decision_id, event_id="t1"))
    palm.record_feedback("dave", Regenerate(member=member, event_id=SECRET))
    palm.record_feedback("dave", Pairwise(winner=other, loser=member))
    palm.record_feedback("dave", ExplicitWeights(weights={TRAITS[0]: 0.4}, event_id="w1"))
    palm.edit("dave", {TRAITS[1]: 0.3})
    palm.set_opt_out("dave", True)
    palm.set_opt_out("dave", False)
    palm.export("dave")
    palm.reset("dave")
    records = store.audit(palm.user_key("dave"))
    kinds = [r.kind for r in records]
    assert kinds == [
        "decision",
        "feedback",
        "feedback",
        "feedback",
        "feedback",
        "edit",
        "edit",
        "opt_out",
        "opt_in",
        "export",
        "reset",
    ]
    thumb, retry, regen, pair, edit1, edit2 = records[1:7]
    assert thumb.payload["event_kind"] == "thumb" and thumb.payload["up"] is False
    assert thumb.payload["decision_id"] == d.decision_id and thumb.payload["member"] == member
    assert thumb.payload["recorded"] is True and retry.payload["recorded"] is False
    assert thumb.payload["event"] == retry.payload["event"]  # a retry is recognizable
    assert regen.payload["event_kind"] == "regenerate"
    assert (pair.payload["winner"], pair.payload["loser"]) == (other, member)
    assert (
        edit1.payload["weights"] == {TRAITS[0]: 0.4} and edit2.payload["event_kind"] == "explicit"
    )
    # No text: neither the message nor an event id a client filled with text.
    dumped = json.dumps([r.payload for r in store.audit()])
    assert "carol" not in dumped and "zebra" not in dumped
    assert_chain_ok(store)


def test_forget_names_records_still_queued_in_the_outbox(tmp_path: Path) -> None:
    """A record waiting for a store that was down is dropped by forget, and named."""

    class Flaky(MemoryStore):
        down = False

        def append_audit(self, record: Any) -> None:
            if self.down:
                raise StoreUnavailable("down for a moment")
            super().append_audit(record)

    store = Flaky()
    palm = make(store)
    store.down = True
    d = palm.decide("erin", ask())
    assert palm.pending_audit == 1
    store.down = False
    palm.forget("erin")
    assert palm.pending_audit == 0
    (forget,) = store.audit(palm.user_key("erin"))
    assert d.decision_id in forget.payload["erased"]
    assert_chain_ok(store)


USERS = st.sampled_from(["u1", "u2", "u3"])


class AuditMachine(RuleBasedStateMachine):
    """Random interleavings of every user right; the chain verifies after each step."""

    backend = "memory"

    @initialize()
    def setup(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="palm-audit-")
        self.store: Store = (
            MemoryStore() if self.backend == "memory" else SQLiteStore(Path(self.dir) / "p.db")
        )
        self.palm = make(self.store)
        self.decisions: dict[str, list[str]] = {}
        self.forgets: dict[str, int] = {}

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(user=USERS, text=st.sampled_from(["hi", SECRET, "make it short please"]))
    def decide(self, user: str, text: str) -> None:
        d = self.palm.decide(user, ask(text))
        self.decisions.setdefault(user, []).append(d.decision_id)

    @rule(user=USERS, up=st.booleans(), data=st.data())
    def thumb(self, user: str, up: bool, data: st.DataObject) -> None:
        ids = self.decisions.get(user)
        if ids:
            decision = data.draw(st.sampled_from(ids))
            self.palm.record_feedback(user, Thumb(up=up, decision_id=decision))
        else:
            self.palm.record_feedback(user, Thumb(up=up, member=PORTFOLIO.ids[0]))

    @rule(user=USERS, event_id=st.sampled_from(["e1", "e2"]))
    def pairwise(self, user: str, event_id: str) -> None:
        a, b = PORTFOLIO.ids[:2]
        self.palm.record_feedback(user, Pairwise(winner=a, loser=b, event_id=event_id))

    @rule(user=USERS, w=st.floats(0.0, 1.0))
    def edit(self, user: str, w: float) -> None:
        self.palm.edit(user, {TRAITS[0]: w})

    @rule(user=USERS)
    def reset(self, user: str) -> None:
        self.palm.reset(user)

    @rule(user=USERS, out=st.booleans())
    def opt_out(self, user: str, out: bool) -> None:
        self.palm.set_opt_out(user, out)

    @rule(user=USERS)
    def export(self, user: str) -> None:
        data = self.palm.export(user)
        assert all(a["kind"] != "decision" or user in self.decisions for a in data["audit"])

    @rule(user=USERS)
    def forget(self, user: str) -> None:
        self.palm.forget(user)
        self.decisions.pop(user, None)
        self.forgets[user] = self.forgets.get(user, 0) + 1
        kinds = [r.kind for r in self.store.audit(self.palm.user_key(user))]
        assert kinds == ["forget"] * self.forgets[user]

    @invariant()
    def chain_verifies(self) -> None:
        if hasattr(self, "store"):
            assert_chain_ok(self.store)
            assert "carol" not in json.dumps([r.payload for r in self.store.audit()])


class SQLiteAuditMachine(AuditMachine):
    backend = "sqlite"


_machine_settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAuditInterleavingsMemory = AuditMachine.TestCase
TestAuditInterleavingsMemory.settings = _machine_settings
TestAuditInterleavingsSQLite = SQLiteAuditMachine.TestCase
TestAuditInterleavingsSQLite.settings = _machine_settings
