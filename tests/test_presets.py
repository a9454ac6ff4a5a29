"""Scripted scenarios per preset policy, end to end on a real SQLite store."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from palm_middleware import Pairwise, Palm, SQLiteStore, load_policy, load_portfolio
from palm_middleware.audit import verify_audit_chain
from palm_middleware.data import bundled
from palm_middleware.exceptions import DecisionBlocked, InvalidParameterError
from palm_middleware.policy import parse_policy
from palm_middleware.preferences.events import ExplicitWeights
from palm_middleware.routing import Router

REPO = Path(__file__).resolve().parents[1]
PORTFOLIO = load_portfolio(bundled("portfolio.yaml"))
PRESETS = ["default", "strict", "permissive", "privacy_first"]
# Noon UTC; scenarios move the clock explicitly.
NOON = datetime(2024, 3, 6, 12, 0, tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, t: float = NOON) -> None:
        self.t = t

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "palm.db")
    yield s
    s.close()


def make(preset: str, store: SQLiteStore, clock: Clock | None = None) -> Palm:
    policy = load_policy(REPO / "policies" / f"{preset}.yaml")
    return Palm(PORTFOLIO, policy, store, clock=clock or Clock(), random_state=0)


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def train_playful(palm: Palm, user: str, n: int = 15) -> None:
    others = [m for m in PORTFOLIO.ids if m != "playful"]
    for i in range(n):
        palm.record_feedback(user, Pairwise(winner="playful", loser=others[i % len(others)]))


def test_bundled_policy_is_the_default_preset() -> None:
    assert bundled("policy.yaml").read_bytes() == (REPO / "policies/default.yaml").read_bytes()


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_is_valid_and_documented(preset: str) -> None:
    path = REPO / "policies" / f"{preset}.yaml"
    text = path.read_text()
    assert "Protects against" in text and "palm validate" in text
    policy = load_policy(path)
    assert policy.spec is not None and policy.spec.schema_version == 2


@pytest.mark.parametrize(
    ("preset", "question"),
    [
        ("default", "Who should I vote for in the election?"),
        ("strict", "What do you think about the senator's campaign?"),
        ("permissive", "Who should I vote for in the election?"),
    ],
)
def test_political_question_gets_the_default_member(
    preset: str, question: str, store: SQLiteStore
) -> None:
    palm = make(preset, store)
    train_playful(palm, "u1")
    personal = palm.decide("u1", ask("tell me a joke"))
    assert personal.action == "clamp" and not personal.used_default
    d = palm.decide("u1", ask(question))
    default_member = Router(PORTFOLIO).route(palm.policy.effective_default).member
    assert d.action == "use_default" and d.used_default
    assert d.member == default_member
    if preset != "strict":  # strict's caps keep even a playful user on the default member
        assert personal.member != default_member
    assert d.headers()["x-palm-action"] == "use_default"
    assert d.rules_fired[0] in (
        "no-political-personalization",
        "sensitive-topics-default",
        "elections-default",
    )
    assert d.policy_version == palm.policy.version
    assert "serves the deployment default" in d.explanation


def test_minor_cohort_gets_the_safety_floor(store: SQLiteStore) -> None:
    palm = make("strict", store)
    train_playful(palm, "kid", n=40)
    train_playful(palm, "adult", n=40)
    adult = palm.decide("adult", ask("hello"), {"cohort": "adult"})
    kid = palm.decide("kid", ask("hello"), {"cohort": "minor"})
    assert adult.weights["safety"] >= 0.3 - 1e-9
    assert kid.weights["safety"] >= 0.5 - 1e-9
    assert "minors-safety" in kid.rules_active
    # Cohort comes from authenticated metadata; the message cannot claim it.
    sneaky = palm.decide("kid", ask("cohort: adult. I am an adult"), {"cohort": "minor"})
    assert sneaky.weights["safety"] >= 0.5 - 1e-9


def test_self_harm_pins_the_careful_member_and_night_blocks_minors(store: SQLiteStore) -> None:
    clock = Clock()
    palm = make("strict", store, clock)
    train_playful(palm, "kid", n=20)
    d = palm.decide("kid", ask("I want to hurt myself"), {"cohort": "adult"})
    assert (d.action, d.member) == ("pin", "careful")
    clock.t = NOON + 11 * 3600 + 30 * 60  # 23:30 UTC
    with pytest.raises(DecisionBlocked) as info:
        palm.decide("kid", ask("help with homework"), {"cohort": "minor"})
    assert info.value.rule_id == "minors-night" and "not available" in info.value.user_message
    blocks = [r for r in store.audit(palm.user_key("kid")) if r.kind == "block"]
    assert len(blocks) == 1 and blocks[0].payload["rule_id"] == "minors-night"
    # unless: a self-harm message at night still gets an answer, from the careful member.
    d = palm.decide("kid", ask("I want to kill myself"), {"cohort": "minor"})
    assert d.member == "careful"


def test_pinned_member_must_exist(store: SQLiteStore) -> None:
    text = (REPO / "policies/strict.yaml").read_text().replace("member: careful", "member: nope")
    with pytest.raises(InvalidParameterError, match=r"rule 'self-harm-pin'.*'nope' is not in"):
        Palm(PORTFOLIO, parse_policy(text, "strict.yaml"), store)


@pytest.mark.parametrize("preset", PRESETS)
def test_delete_leaves_only_the_audit_record_of_the_deletion(
    preset: str, store: SQLiteStore
) -> None:
    palm = make(preset, store)
    train_playful(palm, "u1", n=5)
    palm.decide("u1", ask("my mail is bob@example.org"))
    palm.decide("u2", ask("hello"))
    key = palm.user_key("u1")
    palm.forget("u1")
    assert store.get_profile(key) is None and store.events(key) == []
    left = store.audit(key)
    assert [r.kind for r in left] == ["forget"]
    exported = palm.export("u1")  # (the export itself is audited after it is read)
    assert exported["events"] == [] and len(exported["audit"]) == 1
    report = verify_audit_chain(store)
    assert report.ok, report.problems
    assert report.erased >= 1 and report.checked == len(store.audit())


def test_audit_chain_detects_edits_and_deletions(store: SQLiteStore, tmp_path: Path) -> None:
    palm = make("default", store)
    for u in ("a", "b", "c"):
        palm.decide(u, ask("hi"))
    assert verify_audit_chain(store).ok
    conn = sqlite3.connect(tmp_path / "palm.db")
    conn.execute("DROP TRIGGER audit_no_update")  # an attacker with a SQL shell
    conn.execute("UPDATE audit SET payload = replace(payload, 'balanced', 'playful')")
    conn.commit()
    report = verify_audit_chain(store)
    assert not report.ok and "modified" in report.problems[0]
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("DELETE FROM audit WHERE seq = 2")
    conn.commit()
    assert any("deleted outside forget" in p for p in verify_audit_chain(store).problems)
    conn.close()


def test_privacy_first_keeps_no_events(store: SQLiteStore) -> None:
    palm = make("privacy_first", store)
    train_playful(palm, "u1", n=10)
    key = palm.user_key("u1")
    assert store.events(key) == []
    prof = palm.profile("u1")
    assert prof.n_events == 10 and prof.weights["humor"] > 0.15
    # A retried delivery of a folded event changes nothing.
    ev = Pairwise(winner="playful", loser="careful", event_id="fixed")
    assert palm.record_feedback("u1", ev) is True
    once = palm.profile("u1").weights
    assert palm.record_feedback("u1", ev) is False
    # Unrounded weights: the wall clock's few milliseconds of forgetting show below 1e-6.
    assert palm.profile("u1").weights == pytest.approx(once, abs=1e-6)
    palm.set_opt_out("u1")
    assert store.events(key) == [] and palm.profile("u1").opted_out


def test_retention_purge_keeps_what_events_taught(store: SQLiteStore) -> None:
    clock = Clock()
    palm = make("default", store, clock)
    train_playful(palm, "u1", n=10)
    before = palm.profile("u1").weights
    assert palm.purge_expired(clock.t + 400 * 86400) == 10
    assert store.events(palm.user_key("u1")) == []
    # What the events taught survives the purge (to 1e-6: the summary is re-derived, unrounded).
    assert palm.profile("u1").weights == pytest.approx(before, abs=1e-6)
    train_playful(palm, "u1", n=1)  # the profile's grouped evidence still holds the old events
    assert palm.profile("u1").weights["humor"] >= before["humor"] - 0.02


def test_events_with_text_are_redacted(store: SQLiteStore, tmp_path: Path) -> None:
    text = (
        (REPO / "policies/default.yaml")
        .read_text()
        .replace("store: events  ", "store: events_with_text  ")
    )
    policy = parse_policy(text, "t.yaml")
    palm = Palm(PORTFOLIO, policy, store, clock=Clock())
    palm.decide("u1", ask("shorter please, mail me at bob@example.org or +44 20 7946 0958"))
    events = store.events(palm.user_key("u1"))
    assert events, "a cue should have been recorded"
    assert events[0].payload["text"] == "shorter please, mail me at [email] or [phone]"


def test_max_step_tempers_a_strong_event(store: SQLiteStore) -> None:
    palm = make("default", store)  # max_step 0.25
    before = np.array(list(palm.profile("u1").weights.values()))
    palm.record_feedback("u1", ExplicitWeights({"humor": 0.9, "safety": 0.05}, confidence=50))
    after = np.array(list(palm.profile("u1").weights.values()))
    assert np.abs(after - before).sum() <= 0.25 + 1e-4
    assert np.abs(after - before).sum() > 0.05  # tempered, not dropped


def test_user_edit_is_clamped(store: SQLiteStore) -> None:
    palm = make("default", store)
    prof = palm.edit("u1", {"humor": 0.9, "safety": 0.0, "helpfulness": 0.05, "brevity": 0.05})
    assert prof.effective_weights["humor"] <= 0.3 + 1e-9


def test_reload_keeps_the_last_good_policy(tmp_path: Path, store: SQLiteStore) -> None:
    from palm_middleware.policy.reload import ReloadingPolicy

    path = tmp_path / "org.yaml"
    good = (REPO / "policies/default.yaml").read_text()
    path.write_text(good)
    t = [0.0]
    src = ReloadingPolicy(path, min_interval=1.0, clock=lambda: t[0])
    palm = Palm(PORTFOLIO, src, store, clock=Clock())
    v1 = palm.policy.version
    path.write_text(good.replace("min: {safety: 0.2}", "min: {safety: 2}"))
    t[0] = 2.0
    assert palm.policy.version == v1 and palm.policy_error is None  # seen once: not yet read
    t[0] = 2.5  # the same bytes again, `settle` later: a complete file, judged
    assert palm.policy.version == v1  # bad file: the last good policy keeps serving
    assert palm.policy_error is not None
    assert "org.yaml:" in str(palm.policy_error)
    d = palm.decide("u1", ask("hi"))
    assert d.policy_version == v1 and d.weights["safety"] >= 0.2 - 1e-9
    path.write_text(
        good.replace("member: careful", "").replace("max: {humor: 0.3}", "max: {humor: 0.2}")
    )
    time.sleep(0.01)
    t[0] = 4.0
    palm.policy  # noqa: B018 - first sight
    t[0] = 4.5
    assert palm.policy.version != v1 and palm.policy_error is None
    # A file naming an unknown pinned member is refused by the Palm's own check.
    path.write_text(good + "  - {id: pin-x, action: pin, member: ghost}\n")
    t[0] = 6.0
    palm.policy  # noqa: B018
    t[0] = 6.5
    assert palm.policy.version != v1
    assert palm.policy_error is not None and "ghost" in str(palm.policy_error)
