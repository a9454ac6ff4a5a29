"""LearningState: grouped evidence, one forgetting rule, and the max_step bound."""

from __future__ import annotations

import numpy as np
import pytest

from palm_middleware import load_policy, load_portfolio
from palm_middleware.data import bundled
from palm_middleware.preferences.events import Observation
from palm_middleware.preferences.model import forgetting
from palm_middleware.preferences.state import LearningState
from palm_middleware.stores.base import EventRecord, ProfileRecord

PORTFOLIO = load_portfolio(bundled("portfolio.yaml"))
POLICY = load_policy(bundled("policy.yaml"))
DAY = 86400.0


def test_forgetting_halves_every_half_life() -> None:
    assert forgetting(10 * DAY, 10 * DAY) == pytest.approx(0.5)
    assert forgetting(30 * DAY, 10 * DAY) == pytest.approx(0.125)
    assert forgetting(-5.0, 10 * DAY) == forgetting(0.0, 10 * DAY) == 1.0  # no future credit
    assert forgetting(1e12, None) == 1.0


def _event(i: int, winner: int, loser: int, ts: float) -> EventRecord:
    r = PORTFOLIO.rewards
    obs = Observation.compare(r[winner] - r[loser], 1, ts=ts)
    return EventRecord(f"u:{i}", "u", "pairwise", {"obs": [obs.to_dict()]}, ts)


def _learn(state: LearningState, n: int, now: float, limit: float | None = None) -> ProfileRecord:
    record: ProfileRecord | None = None
    for i in range(n):
        new = state.rebuild(
            record, [_event(i, 0, 1 + i % 3, now)], now=now, policy=POLICY, limit=limit
        )
        record = ProfileRecord("u", new, 1, now)
    assert record is not None
    return record


def test_served_summary_and_refit_fade_by_the_same_rule() -> None:
    state = LearningState(half_life=10 * DAY, n_particles=256)
    now = 1_700_000_000.0
    record = _learn(state, 6, now)
    fresh, _ = state.summary(record, now, POLICY)
    later, _ = state.summary(record, now + 10 * DAY, POLICY)
    assert later.evidence == pytest.approx(0.5 * fresh.evidence)
    # The exact refit over the grouped evidence forgets with the same factor.
    refit = state.posterior(record.state, now + 10 * DAY, POLICY)
    assert refit.evidence_ == pytest.approx(
        0.5 * state.posterior(record.state, now, POLICY).evidence_
    )


def test_identical_observations_share_one_group() -> None:
    state = LearningState(half_life=None, n_particles=256)
    record = _learn(state, 9, 0.0)
    assert len(record.state["evidence"]) == 3  # three distinct pairs
    assert record.state["n_events"] == 9
    assert sum(g.get("s", 1.0) for g in record.state["evidence"]) == pytest.approx(9.0)


def test_max_step_bounds_every_move() -> None:
    state = LearningState(half_life=None, n_particles=256)
    limit = 0.02
    record: ProfileRecord | None = None
    before = state.prior(POLICY).mean
    for i in range(4):
        new = state.rebuild(record, [_event(i, 0, 1, 0.0)], now=0.0, policy=POLICY, limit=limit)
        record = ProfileRecord("u", new, 1, 0.0)
        after = np.asarray(new["posterior"]["mean"])
        assert float(np.abs(after - before).sum()) <= limit + 1e-9
        before = after
