"""A/B pairs (issue 17, item 4): the pair starts from the member served, and its second member
obeys the pair cost bound and the policy, through the public API on real stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from palm_middleware import (
    ComparisonUnavailable,
    InvalidParameterError,
    InvalidRequestError,
    MemoryStore,
    Pairwise,
    Palm,
    SQLiteStore,
    load_policy,
    load_portfolio,
)
from palm_middleware.data import bundled
from palm_middleware.policy import parse_policy

from .test_pipeline import Clock

pytestmark = pytest.mark.timeout(120)

PORTFOLIO = load_portfolio(bundled("portfolio.yaml"))
POLICY = load_policy(bundled("policy.yaml"))
TEXT = bundled("policy.yaml").read_text()


def policy_with(*rules: str, head: str = "") -> Any:
    """The bundled policy with ``rules`` appended to its bounds (and ``head`` on top)."""
    return parse_policy(head + TEXT + "".join(f"\n  - {r}" for r in rules) + "\n", "p.yaml")


def values(palm: Palm, user: str) -> np.ndarray:
    """Each member's value under the user's clamped mean weights (what the bound reads)."""
    d = palm.route(user)
    w = np.array([d.weights[t] for t in PORTFOLIO.space.names])
    return np.asarray(PORTFOLIO.rewards @ w)


def within(palm: Palm, user: str, member: str, cost: float) -> bool:
    v = values(palm, user)
    return float(v.max() - v[PORTFOLIO.index(member)]) <= cost * float(v.max()) + 1e-12


def teach(palm: Palm, user: str, weights: np.ndarray, n: int, rng: np.random.Generator) -> None:
    """``n`` pairwise answers of a user with hidden ``weights`` on pairs Palm asks for."""
    for _ in range(n):
        d = palm.decide(user)
        try:
            a, b = palm.compare_candidates(user, served=d.member)
        except ComparisonUnavailable:
            continue
        ra, rb = PORTFOLIO.rewards[PORTFOLIO.index(a)], PORTFOLIO.rewards[PORTFOLIO.index(b)]
        p = 1 / (1 + np.exp(-10 * float(weights @ (ra - rb))))
        win, lose = (a, b) if rng.random() < p else (b, a)
        palm.record_feedback(user, Pairwise(winner=win, loser=lose))


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SQLiteStore(tmp_path / "palm.db")
    yield s
    s.close()


# -- the member served -----------------------------------------------------------------------


def test_the_pair_starts_from_the_member_last_served(store: SQLiteStore) -> None:
    palm = Palm(PORTFOLIO, POLICY, store, clock=Clock(), random_state=3)
    teach(palm, "ann", np.array([0.1, 0.2, 0.3, 0.4]), 6, np.random.default_rng(0))
    served = set()
    for _ in range(12):  # Thompson draws: what is served varies; the pair follows it
        d = palm.decide("ann")
        a, b = palm.compare_candidates("ann")
        assert a == d.member and b != a
        served.add(d.member)
    assert len(served) >= 2, "the test needs draws that differ from the mean member"
    # The second side of the question is a comparison decision: it is not "what was served".
    second = palm.decide("ann", compare=b)
    assert second.mode == "compare" and second.member == b
    assert palm.compare_candidates("ann")[0] == a


def test_a_stand_in_that_served_is_the_member_served(store: SQLiteStore) -> None:
    palm = Palm(PORTFOLIO, POLICY, store, clock=Clock(), random_state=0)
    d = palm.decide("bea")
    stand_in = next(m for m in ("thorough", "witty-brief") if m != d.member)
    palm.record_outcome("bea", d.decision_id, "fallback", served=stand_in)
    assert palm.compare_candidates("bea")[0] == stand_in


def test_without_a_decision_on_record_the_pair_starts_from_the_routed_member() -> None:
    palm = Palm(PORTFOLIO, POLICY, MemoryStore(), clock=Clock(), random_state=0)
    assert palm.compare_candidates("new")[0] == palm.route("new").member
    # Another user's decisions are never read: only the caller's own record counts.
    other = palm.decide("old", compare="thorough")
    assert other.mode == "compare"
    palm.decide("old")
    assert palm.compare_candidates("new")[0] == palm.route("new").member


def test_an_explicit_served_wins_over_the_record() -> None:
    palm = Palm(PORTFOLIO, POLICY, MemoryStore(), clock=Clock(), random_state=0)
    palm.decide("cy")
    for m in PORTFOLIO.ids:
        a, b = palm.compare_candidates("cy", served=m)
        assert a == m and b != m and within(palm, "cy", b, 0.2)


@pytest.mark.parametrize("served", ["nobody", "", " balanced", "BALANCED", "x" * 10_000, "\x00"])
def test_a_served_that_is_no_member_is_refused_naming_the_field(served: str) -> None:
    palm = Palm(PORTFOLIO, POLICY, MemoryStore(), clock=Clock(), random_state=0)
    with pytest.raises(InvalidRequestError) as info:
        palm.compare_candidates("dan", served=served)
    assert info.value.param == "served" and isinstance(info.value, InvalidParameterError)


# -- the bound ---------------------------------------------------------------------------------


def test_the_second_member_stays_within_the_cost_bound() -> None:
    cost = 0.1  # the bundled members are close: a tighter bound than 20% so that it bites
    palm = Palm(PORTFOLIO, POLICY, MemoryStore(), clock=Clock(), random_state=1, pair_cost=cost)
    rng = np.random.default_rng(5)
    pairs = excluded = unavailable = 0
    for u in range(6):
        user = f"u{u}"
        teach(palm, user, rng.dirichlet(np.full(4, 0.5)), 8, rng)
        for served in PORTFOLIO.ids:
            try:
                a, b = palm.compare_candidates(user, served=served)
            except ComparisonUnavailable as exc:
                unavailable += 1
                assert "pair_cost 0.1" in exc.reason
                continue
            pairs += 1
            assert a == served and b != a and within(palm, user, b, cost)
            excluded += sum(not within(palm, user, m, cost) for m in PORTFOLIO.ids if m != a)
    assert pairs > 0 and excluded > 0  # members past the bound existed and were never paired


def test_pair_cost_zero_asks_no_question() -> None:
    palm = Palm(PORTFOLIO, POLICY, MemoryStore(), clock=Clock(), pair_cost=0.0)
    with pytest.raises(ComparisonUnavailable, match="pair cost bound") as info:
        palm.compare_candidates("eve")
    assert "'balanced'" in info.value.reason


def test_decide_serves_no_comparison_past_the_bound() -> None:
    # A new user sits on the default: careful loses 11% of the best value, thorough 8%.
    palm = Palm(PORTFOLIO, POLICY, MemoryStore(), clock=Clock(), random_state=0, pair_cost=0.1)
    costly = palm.decide("fay", compare="careful")
    assert costly.mode != "compare" and costly.member != "careful"
    assert "would cost more than pair_cost (0.1)" in costly.explanation
    cheap = palm.decide("fay", compare="thorough")
    assert cheap.mode == "compare" and cheap.member == "thorough"


def test_the_bound_holds_in_mean_mode_too() -> None:
    palm = Palm(PORTFOLIO, POLICY, MemoryStore(), clock=Clock(), mode="mean", pair_cost=0.1)
    a, b = palm.compare_candidates("gus")
    assert a == "balanced" and b in ("thorough", "witty-brief")


# -- the policy --------------------------------------------------------------------------------


def test_no_question_where_the_policy_allows_no_exploration() -> None:
    text = TEXT.replace("exploration: true", "exploration: false")
    palm = Palm(PORTFOLIO, parse_policy(text, "p.yaml"), MemoryStore(), clock=Clock())
    with pytest.raises(ComparisonUnavailable, match="does not allow exploration"):
        palm.compare_candidates("hal")


def test_a_pinned_cohort_gets_no_question_and_no_other_served() -> None:
    policy = policy_with(
        "{id: kids-careful, when: {cohort: minor}, action: pin, member: careful}",
        head="context: {cohorts: [adult, minor]}\n",
    )
    palm = Palm(PORTFOLIO, policy, MemoryStore(), clock=Clock())
    kid = {"cohort": "minor"}
    with pytest.raises(ComparisonUnavailable, match="kids-careful"):
        palm.compare_candidates("ivy", served="careful", metadata=kid)
    with pytest.raises(InvalidRequestError, match="pins 'careful'|pin: 'careful'") as info:
        palm.compare_candidates("ivy", served="playful", metadata=kid)
    assert info.value.param == "served"
    # Without the cohort the rule does not hold: a pair as usual.
    assert palm.compare_candidates("ivy", served="playful")[0] == "playful"


def test_a_member_the_rules_keep_from_this_user_is_never_paired() -> None:
    policy = policy_with("{id: no-playful, when: {member: playful}, action: use_default}")
    palm = Palm(PORTFOLIO, policy, MemoryStore(), clock=Clock(), pair_cost=1.0)
    with pytest.raises(InvalidRequestError, match="rules conditioned on the member") as info:
        palm.compare_candidates("jo", served="playful")
    assert info.value.param == "served"
    for served in PORTFOLIO.ids:
        if served != "playful":
            assert palm.compare_candidates("jo", served=served)[1] != "playful"
    assert palm.decide("jo", compare="playful").mode != "compare"
