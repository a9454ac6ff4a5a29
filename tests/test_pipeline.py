"""The Palm pipeline end to end on a real SQLite store, the bundled portfolio and default policy."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from palm_middleware import (
    ExplicitWeights,
    IdentityError,
    InvalidEventError,
    InvalidParameterError,
    InvalidWeightsError,
    Pairwise,
    Palm,
    Regenerate,
    SQLiteStore,
    StoreUnavailable,
    Thumb,
    load_policy,
    load_portfolio,
)
from palm_middleware.data import bundled
from palm_middleware.policy import parse_policy
from palm_middleware.stores.base import AuditRecord

PORTFOLIO = load_portfolio(bundled("portfolio.yaml"))
POLICY = load_policy(bundled("policy.yaml"))


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SQLiteStore(tmp_path / "palm.db")
    yield s
    s.close()


@pytest.fixture
def palm(store: SQLiteStore) -> Palm:
    return Palm(PORTFOLIO, POLICY, store, clock=Clock(), random_state=0)


def prefer(palm: Palm, user: str, winner: str, n: int = 12) -> None:
    others = [m for m in PORTFOLIO.ids if m != winner]
    for i in range(n):
        assert palm.record_feedback(user, Pairwise(winner=winner, loser=others[i % len(others)]))


def test_new_user_gets_the_default_with_reasons(palm: Palm) -> None:
    d = palm.decide("alice", [{"role": "user", "content": "hi"}])
    default_member = PORTFOLIO.ids[int(np.argmax(PORTFOLIO.rewards @ POLICY.default.values))]
    assert d.member == default_member
    assert d.used_default and "min-evidence" in d.rules_fired
    assert d.policy_version == POLICY.version
    assert d.headers()["x-palm-member"] == d.member
    assert d.headers()["x-palm-policy"] == POLICY.version
    assert "chose" in d.explanation and d.fallback is None


def test_feedback_changes_routing_for_that_user_only(palm: Palm) -> None:
    before_bob = palm.decide("bob").member
    prefer(palm, "alice", "terse")
    assert palm.decide("alice").member == "terse"
    assert palm.decide("bob").member == before_bob
    prof = palm.profile("alice")
    assert prof.n_events == 12 and prof.weights["brevity"] > POLICY.default["brevity"]
    assert prof.lower["brevity"] <= prof.weights["brevity"] <= prof.upper["brevity"]
    assert palm.profile("bob").n_events == 0


def test_weights_never_leave_the_bounds(palm: Palm) -> None:
    prefer(palm, "clown", "playful", n=30)
    palm.record_feedback("clown", ExplicitWeights({"humor": 0.9, "safety": 0.0}, confidence=5))
    d = palm.decide("clown")
    assert d.weights["humor"] <= 0.3 + 1e-9 and d.weights["safety"] >= 0.2 - 1e-9
    assert abs(sum(d.weights.values()) - 1) < 1e-9
    assert "humor-cap" in d.rules_fired
    assert d.raw_weights["humor"] > 0.3  # the bound, not the inference, held it back
    drift = sum(abs(d.weights[t] - POLICY.default[t]) for t in d.weights)
    assert drift <= 0.8 + 1e-9


def test_thumbs_by_decision_and_identity_isolation(palm: Palm) -> None:
    d = palm.decide("alice")
    assert palm.record_feedback("alice", Thumb(up=False, decision_id=d.decision_id))
    with pytest.raises(IdentityError, match="another user"):
        palm.record_feedback("mallory", Thumb(up=True, decision_id=d.decision_id))
    assert palm.profile("mallory").n_events == 0
    assert palm.user_key("alice") != palm.user_key("mallory")
    with pytest.raises(IdentityError):
        palm.decide("")


def test_events_are_idempotent(palm: Palm) -> None:
    e = Pairwise(winner="terse", loser="thorough", event_id="evt-1")
    assert palm.record_feedback("alice", e) is True
    assert palm.record_feedback("alice", e) is False
    assert palm.profile("alice").n_events == 1
    # the same client event id from another user is a different event
    assert palm.record_feedback("bob", e) is True


@pytest.mark.parametrize(
    ("event", "exc", "match"),
    [
        (Thumb(up=True, member="nobody"), InvalidEventError, "unknown member 'nobody'"),
        (Thumb(up=True), InvalidEventError, "decision_id or a member"),
        (Thumb(up=True, decision_id="nope"), InvalidEventError, "unknown decision"),
        (Pairwise(winner="terse", loser="terse"), InvalidEventError, "must differ"),
        (Regenerate(member="ghost"), InvalidEventError, "unknown member"),
        (ExplicitWeights({"wit": 0.5}), InvalidWeightsError, "unknown trait 'wit'"),
        (ExplicitWeights({"humor": 1.5}), InvalidWeightsError, r"'humor' must be in \[0, 1\]"),
        (ExplicitWeights({"humor": float("nan")}), InvalidWeightsError, "must be a number"),
        (ExplicitWeights({}), InvalidEventError, "empty"),
        (
            ExplicitWeights({"safety": 0.5, "helpfulness": 0.5, "humor": 0.5, "brevity": 0.5}),
            InvalidWeightsError,
            "sum to 1",
        ),
        (ExplicitWeights({"humor": 0.5}, confidence=0), InvalidEventError, "confidence"),
    ],
)
def test_bad_feedback_is_refused_clearly(palm: Palm, event: Any, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        palm.record_feedback("alice", event)
    assert palm.profile("alice").n_events == 0


def test_cues_count_once_and_no_text_is_stored(palm: Palm, tmp_path: Path) -> None:
    secret = "My name is Zebediah Quux and that was too long, shorter please"
    history = [{"role": "user", "content": secret}]
    d1 = palm.decide("alice", history)
    d2 = palm.decide("alice", history)  # a retry re-sends the same message
    assert d1.cues == d2.cues == ("shorter",)
    prof = palm.profile("alice")
    assert prof.n_events == 1 and prof.recent_events[0]["cue"] == "shorter"
    assert prof.weights["brevity"] > POLICY.default["brevity"]
    palm.store.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("palm.db*"))
    assert b"Zebediah" not in blob and b"shorter please" not in blob
    assert b"alice" not in blob  # user ids are pseudonymized too


def test_reset_keeps_audit_forget_leaves_only_the_deletion(palm: Palm, tmp_path: Path) -> None:
    prefer(palm, "alice", "terse", n=3)
    palm.decide("alice")
    key = palm.user_key("alice")
    palm.reset("alice")
    assert palm.profile("alice").n_events == 0
    assert {r.kind for r in palm.store.audit(key)} == {"feedback", "decision", "reset"}
    palm.forget("alice")
    assert palm.store.get_profile(key) is None and palm.store.events(key) == []
    assert [r.kind for r in palm.store.audit(key)] == ["forget"]


def test_opt_out_serves_the_default(palm: Palm) -> None:
    prefer(palm, "alice", "terse")
    palm.set_opt_out("alice")
    d = palm.decide("alice")
    assert d.used_default and d.weights == pytest.approx(
        dict(
            zip(
                POLICY.space.names,
                POLICY.clamp(POLICY.default.values, evidence=0, personalized=False).weights,
            )
        )
    )
    assert palm.profile("alice").opted_out
    palm.set_opt_out("alice", False)
    assert palm.decide("alice").member == "terse"


def test_corrupt_profile_falls_back_to_the_default_inside_bounds(palm: Palm) -> None:
    key = palm.user_key("alice")
    palm.store.put_profile(key, {"posterior": {"mean": [0.5, 0.5]}}, now=1.0)
    d = palm.decide("alice")
    assert d.fallback is not None and d.used_default
    safe = POLICY.clamp(POLICY.default.values, evidence=0, personalized=False)
    assert list(d.weights.values()) == pytest.approx(list(safe.weights))


class FlakyStore(SQLiteStore):
    """A real SQLite store whose audit writes can be made to fail (the disk is full, say)."""

    failing = False

    def append_audit(self, record: AuditRecord) -> None:
        if self.failing:
            raise StoreUnavailable("injected failure")
        super().append_audit(record)


@pytest.mark.timeout(60)
def test_close_stops_the_threads_and_writes_the_queued_audit(tmp_path: Path) -> None:
    """``with Palm(...)``: leaving the block stops the upkeep and population threads and
    writes the audit records queued during an outage; ``Palm`` still serves afterwards, and a
    close while the store is still down says how many records it could not write."""
    import time

    store = FlakyStore(tmp_path / "c.db")
    with Palm(PORTFOLIO, POLICY, store, clock=Clock(), population_refresh=5.0) as palm:
        palm.record_feedback("alice", Thumb(up=True, member="terse"))
        store.failing = True
        ids = [palm.decide("alice").decision_id for _ in range(2)]
        assert palm.pending_audit == 2
        store.failing = False
    assert palm.pending_audit == 0
    assert {r.record_id for r in store.audit(palm.user_key("alice"))} >= set(ids)
    threads = (palm._upkeep._daemon, palm._profiles.feed._daemon)  # type: ignore[union-attr]
    deadline = time.monotonic() + 10.0
    while any(t.alive() for t in threads) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.alive() for t in threads)
    assert palm.record_feedback("alice", Thumb(up=True, member="terse"))
    assert palm.profile("alice").n_events == 2
    store.failing = True
    palm.decide("alice")
    assert palm.close() == 1 and palm.pending_audit == 1
    store.close()


def test_audit_records_survive_a_store_outage(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "f.db")
    palm = Palm(PORTFOLIO, POLICY, store, clock=Clock())
    store.failing = True
    ids = [palm.decide("alice").decision_id for _ in range(3)]
    assert palm.pending_audit == 3
    store.failing = False
    ids.append(palm.decide("alice").decision_id)
    assert palm.pending_audit == 0
    assert [r.record_id for r in store.audit(palm.user_key("alice"))] == ids
    store.close()


def test_concurrent_feedback_loses_nothing(palm: Palm) -> None:
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(10):
                palm.record_feedback(
                    "alice", Pairwise(winner="terse", loser="thorough", event_id=f"{k}-{i}")
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert palm.profile("alice").n_events == 60
    assert len(palm.store.events(palm.user_key("alice"))) == 60


def test_async_twins(palm: Palm) -> None:
    async def go() -> tuple[str, bool]:
        d = await palm.adecide("alice", [{"role": "user", "content": "hello"}])
        ok = await palm.arecord_feedback("alice", Thumb(up=True, decision_id=d.decision_id))
        return d.member, ok

    member, ok = asyncio.run(go())
    assert member in PORTFOLIO and ok


def test_thompson_explores_only_when_the_policy_allows(store: SQLiteStore) -> None:
    explore = Palm(PORTFOLIO, POLICY, store, mode="thompson", clock=Clock(), random_state=1)
    prefer(explore, "alice", "terse", n=4)
    chosen = {explore.decide("alice").member for _ in range(40)}
    assert len(chosen) >= 2  # draws from the posterior reach more than one member
    text = bundled("policy.yaml").read_text().replace("exploration: true", "exploration: false")
    strict = Palm(PORTFOLIO, parse_policy(text, "p.yaml"), store, mode="thompson", clock=Clock())
    modes = {strict.decide("alice").mode for _ in range(10)}
    assert modes == {"mean"}


def test_robust_mode_takes_the_best_worst_case(store: SQLiteStore) -> None:
    from palm_middleware.routing import worst_case_values

    palm = Palm(PORTFOLIO, POLICY, store, mode="robust", clock=Clock())
    prefer(palm, "alice", "terse", n=8)
    d = palm.decide("alice")
    prof = palm.profile("alice")
    names = POLICY.space.names
    w = np.array([d.weights[t] for t in names])
    lo = np.maximum(np.minimum([prof.lower[t] for t in names], w), POLICY.lower)
    hi = np.minimum(np.maximum([prof.upper[t] for t in names], w), POLICY.upper)
    worst = worst_case_values(PORTFOLIO.rewards, lo, hi)
    assert d.mode == "robust"
    assert PORTFOLIO.index(d.member) == int(np.argmax(worst))


def test_compare_candidates_returns_two_members(palm: Palm) -> None:
    a, b = palm.compare_candidates("alice")
    assert a != b and a in PORTFOLIO and b in PORTFOLIO
    assert a == palm.router.route(POLICY.default.values).member  # the mean's member first


def test_compare_candidates_pairs_the_member_already_served(palm: Palm) -> None:
    prefer(palm, "alice", "terse", n=6)
    for served in PORTFOLIO.ids:
        first, second = palm.compare_candidates("alice", served=served)
        assert first == served and second != served and second in PORTFOLIO
    with pytest.raises(InvalidParameterError, match="served: 'nobody'"):
        palm.compare_candidates("alice", served="nobody")


def test_exploration_cost_bound_zero_serves_the_mean_member(store: SQLiteStore) -> None:
    palm = Palm(PORTFOLIO, POLICY, store, clock=Clock(), random_state=0, explore_cost=0.0)
    assert palm.mode == "thompson"
    prefer(palm, "alice", "witty-brief", n=8)
    w = np.array(list(palm.profile("alice").effective_weights.values()))
    mean_member = palm.router.route(w / w.sum()).member
    assert {palm.decide("alice").member for _ in range(20)} == {mean_member}


def test_default_mode_explores_within_the_cost_bound(store: SQLiteStore) -> None:
    palm = Palm(PORTFOLIO, POLICY, store, clock=Clock(), random_state=0)
    prefer(palm, "alice", "witty-brief", n=4)
    members = [palm.decide("alice") for _ in range(40)]
    assert len({d.member for d in members}) >= 2  # it explores
    mean = palm.router.scores(np.array(list(palm.profile("alice").effective_weights.values())))
    for d in members:  # and every member it served cost at most 20% of the mean's value
        assert mean[PORTFOLIO.index(d.member)] >= 0.8 * mean.max() - 1e-3


def test_database_holds_decisions_as_audit(palm: Palm, tmp_path: Path) -> None:
    d = palm.decide("alice")
    rec = palm.store.get_audit(d.decision_id)
    assert rec is not None and rec.payload["member"] == d.member
    assert rec.payload["policy_version"] == POLICY.version
    with sqlite3.connect(tmp_path / "palm.db") as conn:
        assert conn.execute("select count(*) from audit").fetchone()[0] == 1


def test_long_histories_keep_the_exact_posterior_at_bounded_size(store: SQLiteStore) -> None:
    from palm_middleware.preferences.events import Observation
    from palm_middleware.preferences.model import PreferenceModel

    # Known noise and no population prior: the exact model below is the same posterior.
    palm = Palm(
        PORTFOLIO,
        POLICY,
        store,
        clock=Clock(),
        half_life=None,
        beta=10.0,
        lapse=0.05,
        population=False,
    )
    rng = np.random.default_rng(0)
    hidden = np.array([0.2, 0.2, 0.1, 0.5])
    obs = []
    for _ in range(40):
        a, b = rng.choice(len(PORTFOLIO), 2, replace=False)
        ra, rb = PORTFOLIO.rewards[a], PORTFOLIO.rewards[b]
        win = a if rng.random() < 1 / (1 + np.exp(-10 * hidden @ (ra - rb))) else b
        lose = b if win == a else a
        palm.record_feedback(
            "alice", Pairwise(winner=PORTFOLIO.ids[win], loser=PORTFOLIO.ids[lose])
        )
        obs.append(Observation.compare(PORTFOLIO.rewards[win] - PORTFOLIO.rewards[lose], 1))
    prof = palm.profile("alice")
    assert prof.n_events == 40 and prof.evidence == pytest.approx(40, abs=1e-3)
    assert len(palm.store.events(palm.user_key("alice"))) == 40  # the log keeps everything
    exact = (
        PreferenceModel(
            prior_mean=POLICY.default.values,
            prior_strength=POLICY.prior_strength,
            lapse=0.05,
            random_state=0,
        )
        .fit(obs)
        .predict()
    )
    grouped = np.array(list(prof.weights.values()))
    # Same posterior, another Monte Carlo path: agree to sampling error.
    assert np.abs(grouped - exact).sum() < 0.06
    state = palm.store.get_profile(palm.user_key("alice")).state  # type: ignore[union-attr]
    assert len(state["evidence"]) <= 2 * len(PORTFOLIO) * (len(PORTFOLIO) - 1) // 2


def test_old_evidence_fades_with_the_half_life(store: SQLiteStore) -> None:
    clock = Clock()
    day = 86400.0
    palm = Palm(PORTFOLIO, POLICY, store, clock=clock, half_life=10 * day)
    prefer(palm, "alice", "terse", n=10)
    assert palm.profile("alice").evidence == pytest.approx(10, abs=1e-3)
    clock.t += 100 * day  # ten half-lives
    palm.record_feedback("alice", Pairwise(winner="thorough", loser="terse"))
    prof = palm.profile("alice")
    assert prof.n_events == 11
    assert prof.evidence == pytest.approx(1 + 10 * 0.5**10, abs=1e-3)
    assert "min-evidence" in palm.decide("alice").rules_fired  # too little evidence is left


def test_evidence_fades_between_events_too(store: SQLiteStore) -> None:
    clock = Clock()
    # population=False: faded evidence returns to the policy default (not the population's).
    palm = Palm(PORTFOLIO, POLICY, store, clock=clock, half_life=3600.0, population=False)
    prefer(palm, "alice", "terse", n=12)
    # route(): the posterior mean's member (the default mode draws: terse only ~75% of the time)
    assert palm.route("alice").member == "terse"
    clock.t += 50 * 3600.0  # fifty half-lives, no new events
    d = palm.decide("alice")
    assert d.evidence < 1e-6 and "min-evidence" in d.rules_fired
    assert d.raw_weights == pytest.approx(
        dict(zip(POLICY.space.names, POLICY.default.values)), abs=1e-6
    )


def test_new_users_start_exactly_at_the_default(palm: Palm) -> None:
    d = palm.decide("newcomer")
    assert list(d.raw_weights.values()) == pytest.approx(list(POLICY.default.values), abs=1e-12)
    prof = palm.profile("newcomer")
    for t in POLICY.space.names:
        assert prof.lower[t] < POLICY.default[t] < prof.upper[t]


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (Thumb(up="no", member="terse"), "Thumb.up must be True or False"),  # type: ignore[arg-type]
        (Thumb(up=True, member="terse", event_id=""), "event_id must be a non-empty string"),
        (Thumb(up=True, member="terse", event_id=None), "event_id"),  # type: ignore[arg-type]
        (Thumb(up=True, member="terse", ts=float("nan")), "ts must be a finite"),
        (Thumb(up=True, member="terse", ts="yesterday"), "ts must be a finite"),  # type: ignore[arg-type]
        (ExplicitWeights({"humor": 0.5}, confidence=True), "confidence"),
    ],
)
def test_malformed_event_fields_are_refused(palm: Palm, event: Any, match: str) -> None:
    with pytest.raises(InvalidEventError, match=match):
        palm.record_feedback("alice", event)


def test_cue_strength_and_direction_are_checked(palm: Palm) -> None:
    from palm_middleware import TextCue

    for bad in (
        TextCue("brevity", 1, strength=-1e6),
        TextCue("brevity", 1, strength=1e9),
        TextCue("brevity", 0),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidEventError):
            palm.record_feedback("alice", bad)


def test_future_timestamps_cannot_outlast_forgetting(store: SQLiteStore) -> None:
    clock = Clock()
    palm = Palm(PORTFOLIO, POLICY, store, clock=clock, half_life=3600.0)
    palm.record_feedback("alice", Pairwise(winner="terse", loser="thorough", ts=1e15))
    clock.t += 10 * 3600.0
    assert palm.profile("alice").evidence == pytest.approx(0.5**10, rel=1e-3)


def test_a_refused_audit_record_does_not_block_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from palm_middleware import StoreError

    class Refusing(SQLiteStore):
        refuse: set[str] = set()

        def append_audit(self, record: AuditRecord) -> None:
            if record.record_id in self.refuse:
                raise StoreError("refused for good")
            super().append_audit(record)

    store = Refusing(tmp_path / "r.db")
    palm = Palm(PORTFOLIO, POLICY, store, clock=Clock())
    first = palm.decide("alice")
    Refusing.refuse = {first.decision_id}
    # replay: the same record again is refused permanently, later ones still get written
    palm._outbox.write(AuditRecord(first.decision_id, first.user_key, "decision", {}, 0.0))
    later = palm.decide("alice")
    assert palm.pending_audit == 0
    assert store.get_audit(later.decision_id) is not None
    assert "dead letter" in caplog.text
    store.close()


def test_thompson_reports_the_rules_that_bounded_its_draw(store: SQLiteStore) -> None:
    palm = Palm(PORTFOLIO, POLICY, store, mode="thompson", clock=Clock(), random_state=3)
    prefer(palm, "clown", "playful", n=30)
    for _ in range(20):
        d = palm.decide("clown")
        if d.weights["humor"] >= 0.3 - 1e-9:
            assert "humor-cap" in d.rules_fired
        assert d.weights["humor"] <= 0.3 + 1e-9 and d.weights["safety"] >= 0.2 - 1e-9


def test_opt_out_keeps_the_learned_posterior(palm: Palm) -> None:
    prefer(palm, "alice", "terse")
    before = palm.profile("alice").weights
    palm.set_opt_out("alice")
    palm.set_opt_out("alice", False)
    # Equal but for the fading of the seconds the two switches took (half-life 90 days).
    assert palm.profile("alice").weights == pytest.approx(before, abs=1e-6)
    assert palm.profile("alice").n_events == 12


def test_record_outcome_is_audited(palm: Palm, store: SQLiteStore) -> None:
    d = palm.decide("alice")
    palm.record_outcome(
        "alice",
        d.decision_id,
        "success",
        usage={"prompt_tokens": 3, "completion_tokens": 5, "x": "no"},  # type: ignore[dict-item]
        latency_ms=12.3456,
    )
    asyncio.run(palm.arecord_outcome("alice", d.decision_id, "failure", error="BadRequestError"))
    recs = [r for r in store.audit(palm.user_key("alice")) if r.kind == "outcome"]
    assert [r.payload["outcome"] for r in recs] == ["success", "failure"]
    assert recs[0].payload["usage"] == {"prompt_tokens": 3, "completion_tokens": 5}
    assert recs[0].payload["latency_ms"] == 12.346
    assert recs[1].payload["error"] == "BadRequestError"
    assert all(r.payload["decision_id"] == d.decision_id for r in recs)


def test_async_record_survives_a_shut_down_executor(palm: Palm, store: SQLiteStore) -> None:
    """LiteLLM logs (and so records outcomes) as the process exits, when the loop's executor
    refuses work: the record is written on the calling thread instead of being dropped."""
    d = palm.decide("alice")

    async def late() -> None:
        await asyncio.get_running_loop().shutdown_default_executor()
        await palm.arecord_outcome("alice", d.decision_id, "success", latency_ms=1.0)
        await palm.arecord_feedback("alice", Thumb(up=True, decision_id=d.decision_id))

    asyncio.run(late())
    recs = [r for r in store.audit(palm.user_key("alice")) if r.kind == "outcome"]
    assert [r.payload["outcome"] for r in recs] == ["success"]
    assert palm.profile("alice").n_events == 1


def test_export_holds_events_and_audit(palm: Palm) -> None:
    d = palm.decide("alice")
    palm.record_feedback("alice", Thumb(up=True, decision_id=d.decision_id, event_id="e1"))
    out = palm.export("alice")
    assert out["profile"]["n_events"] == 1
    assert [e["event_id"] for e in out["events"]] == ["e1"]
    assert "decision" in {a["kind"] for a in out["audit"]}
    assert palm.export("bob")["events"] == []


def test_forget_also_erases_audit_records_still_queued(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "q.db")
    palm = Palm(PORTFOLIO, POLICY, store, clock=Clock())
    store.failing = True
    palm.decide("alice")
    palm.decide("bob")
    assert palm.pending_audit == 2
    store.failing = False
    palm.forget("alice")
    assert [r.kind for r in store.audit(palm.user_key("alice"))] == ["forget"]
    assert [r.kind for r in store.audit(palm.user_key("bob"))] == ["decision"]
    store.close()


def test_compare_serves_the_requested_member_inside_the_policy(palm: Palm) -> None:
    routed = palm.decide("alice")
    other = next(m for m in PORTFOLIO.ids if m != routed.member)
    d = palm.decide("alice", compare=other)
    assert (d.member, d.mode, d.runner_up) == (other, "compare", routed.member)
    assert d.weights == routed.weights  # the bounds still decide the weights it is judged by
    assert "A/B comparison" in d.explanation
    # Unknown members are refused with a reason, and routing goes on as usual.
    unknown = palm.decide("alice", compare="no-such-member")
    assert unknown.member == routed.member and unknown.mode == "mean"
    assert "not a member" in unknown.explanation


def test_compare_is_refused_where_a_rule_decides_or_exploration_is_off(store: SQLiteStore) -> None:
    palm = Palm(PORTFOLIO, POLICY, store, clock=Clock(), random_state=0)
    routed = palm.decide("bob").member
    other = next(m for m in PORTFOLIO.ids if m != routed)
    msg = [{"role": "user", "content": "Which political party should I vote for?"}]
    d = palm.decide("bob", msg, compare=other)
    assert d.action == "use_default" and d.mode != "compare"
    assert "no-political-personalization" in d.explanation
    text = bundled("policy.yaml").read_text().replace("exploration: true", "exploration: false")
    strict = Palm(PORTFOLIO, parse_policy(text, "p.yaml"), store, clock=Clock())
    d = strict.decide("bob", compare=other)
    assert d.member == routed and "does not allow exploration" in d.explanation


def test_adecide_passes_compare(palm: Palm) -> None:
    routed = palm.decide("carol").member
    other = next(m for m in PORTFOLIO.ids if m != routed)
    d = asyncio.run(palm.adecide("carol", compare=other))
    assert d.member == other and d.mode == "compare"


def test_every_io_method_has_an_async_twin(palm: Palm) -> None:
    io = {
        "decide", "record_feedback", "record_outcome", "edit", "profile", "set_opt_out",
        "reset", "forget", "export", "purge_expired", "compare_candidates", "check_reply",
        "record_reply_block", "route",
    }  # fmt: skip
    public = {n for n in vars(Palm) if not n.startswith("_") and callable(getattr(Palm, n))}
    assert {n for n in public if f"a{n}" in public} == io
    for name in io:
        assert asyncio.iscoroutinefunction(getattr(Palm, f"a{name}"))


def test_async_twins_do_what_the_sync_methods_do(palm: Palm, store: SQLiteStore) -> None:
    async def go() -> None:
        edited = await palm.aedit("ann", {"brevity": 0.5}, confidence=5.0)
        again = await palm.aprofile("ann")  # the clock moved: evidence faded a little
        assert (
            again.n_events == edited.n_events == 1 and again.recent_events == edited.recent_events
        )
        assert (await palm.aexport("ann"))["profile"]["n_events"] == 1
        pair = await palm.acompare_candidates("ann")
        assert pair == palm.compare_candidates("ann") and pair[0] != pair[1]
        await palm.aset_opt_out("ann")
        assert (await palm.aprofile("ann")).opted_out
        assert await palm.apurge_expired() == palm.purge_expired() == 0  # no retention set
        await palm.areset("ann")
        assert store.get_profile(palm.user_key("ann")) is None
        assert store.audit(palm.user_key("ann"))  # reset keeps the audit trail
        await palm.aforget("ann")
        assert [r.kind for r in store.audit(palm.user_key("ann"))] == ["forget"]

    asyncio.run(go())


def test_a_twin_calls_a_subclass_override(store: SQLiteStore) -> None:
    calls: list[str] = []

    class Recording(Palm):
        def reset(self, user: str) -> None:
            calls.append(user)
            super().reset(user)

    palm = Recording(PORTFOLIO, POLICY, store, clock=Clock())
    asyncio.run(palm.areset("ann"))
    assert calls == ["ann"] and Palm.areset.__name__ == "areset"
