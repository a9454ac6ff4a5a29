"""The cached, in-place posterior update: same evidence as a refit, stale entries refit.

The refit path (``cache_size=0``) is the reference: both paths hold exactly the same grouped
evidence; their particle posteriors differ only by Monte Carlo noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from palm_middleware import Pairwise, Palm, SQLiteStore, Thumb, load_policy, load_portfolio
from palm_middleware.data import bundled
from palm_middleware.preferences.events import Observation
from palm_middleware.preferences.state import LearningState
from palm_middleware.stores.base import EventRecord, ProfileRecord

PORTFOLIO = load_portfolio(bundled("portfolio.yaml"))
POLICY = load_policy(bundled("policy.yaml"))
DAY = 86400.0
R = PORTFOLIO.rewards


def _event(i: int, ts: float, rng: np.random.Generator) -> EventRecord:
    a, b = rng.choice(len(R), 2, replace=False)
    obs = Observation.compare(R[a] - R[b], 1 if rng.random() < 0.7 else -1, ts=ts)
    return EventRecord(f"u:{i}", "u", "pairwise", {"obs": [obs.to_dict()]}, ts)


def _run(state: LearningState, n: int, *, step: float = 60.0) -> ProfileRecord:
    rng = np.random.default_rng(3)
    record: ProfileRecord | None = None
    for i in range(n):
        ts = 1.7e9 + i * step
        new = state.rebuild(record, [_event(i, ts, rng)], now=ts, policy=POLICY, limit=0.25)
        record = ProfileRecord("u", new, (record.version if record else 0) + 1, ts)
    assert record is not None
    return record


def test_in_place_updates_hold_the_refit_evidence_and_posterior() -> None:
    fast, slow = LearningState(half_life=5 * DAY), LearningState(half_life=5 * DAY, cache_size=0)
    a, b = _run(fast, 40, step=DAY / 4), _run(slow, 40, step=DAY / 4)
    assert fast.hits == 39 and fast.misses == 0  # one refit-free update per event
    assert slow.hits == 0
    # The stored evidence (what every later refit starts from) is the same, forgetting included.
    ev_a = {(tuple(d["v"]), d["y"]): d.get("s", 1.0) for d in a.state["evidence"]}
    ev_b = {(tuple(d["v"]), d["y"]): d.get("s", 1.0) for d in b.state["evidence"]}
    assert ev_a.keys() == ev_b.keys()
    for k in ev_a:
        assert ev_a[k] == pytest.approx(ev_b[k], rel=1e-9)
    pa, pb = a.state["posterior"], b.state["posterior"]
    assert pa["evidence"] == pytest.approx(pb["evidence"], rel=1e-9)
    assert pa["evidence"] < 40 * 0.7  # ten days at a five-day half-life: most has faded
    # Particle posteriors of the same evidence: equal up to Monte Carlo noise.
    np.testing.assert_allclose(pa["mean"], pb["mean"], atol=0.03)
    np.testing.assert_allclose(pa["lower"], pb["lower"], atol=0.05)
    np.testing.assert_allclose(pa["upper"], pb["upper"], atol=0.05)


def test_the_cached_posterior_matches_its_own_stored_evidence() -> None:
    """Forgetting tempers the cached weights exactly as it fades the stored strengths."""
    state = LearningState(half_life=2 * DAY)
    record = _run(state, 12, step=DAY)
    model = state.current("u", record, record.updated_at + 3 * DAY, POLICY)
    stored = sum(d.get("s", 1.0) for d in record.state["evidence"])
    assert model.evidence_ == pytest.approx(stored * 0.5**1.5, rel=1e-9)


def test_a_stale_or_replayed_state_refits_instead_of_reusing_the_cache() -> None:
    state = LearningState()
    rng = np.random.default_rng(0)
    first = state.rebuild(None, [_event(0, 0.0, rng)], now=0.0, policy=POLICY)
    rec1 = ProfileRecord("u", first, 1, 0.0)
    second = state.rebuild(rec1, [_event(1, 1.0, rng)], now=1.0, policy=POLICY)
    assert (state.hits, state.misses) == (1, 0)
    # A retried transaction runs the update on the same profile again: the entry was taken
    # by the first run, so the retry refits rather than applying the event twice.
    again = state.rebuild(rec1, [_event(1, 1.0, rng)], now=1.0, policy=POLICY)
    assert state.misses == 1
    assert again["n_events"] == second["n_events"] == 2
    assert again["posterior"]["evidence"] == pytest.approx(second["posterior"]["evidence"])
    # Another writer's state (another rev) is never served from this cache.
    other = dict(second, rev="written-elsewhere")
    state.rebuild(ProfileRecord("u", other, 2, 1.0), [_event(2, 2.0, rng)], now=2.0, policy=POLICY)
    assert state.misses == 2


def test_two_palms_on_one_store_see_each_others_feedback(tmp_path: Path) -> None:
    """Two replicas (one SQLite file): each refits when the other wrote, nothing is lost."""
    t = [1.7e9]

    def clock() -> float:
        t[0] += 1.0
        return t[0]

    with SQLiteStore(tmp_path / "p.db") as s1, SQLiteStore(tmp_path / "p.db") as s2:
        a = Palm(PORTFOLIO, POLICY, s1, clock=clock, random_state=0, embedder=None)
        b = Palm(PORTFOLIO, POLICY, s2, clock=clock, random_state=0, embedder=None)
        for _ in range(6):
            a.record_feedback("zoe", Pairwise(winner="terse", loser="thorough"))
            a.record_feedback("zoe", Thumb(member="terse", up=True))
            b.record_feedback("zoe", Pairwise(winner="terse", loser="playful"))
        la, lb = a._profiles.learning, b._profiles.learning
        # Each replica's first event of a round follows the other's write: a refit. Its second
        # event of the round (a) is served by its own cache.
        assert la.hits >= 5 and la.misses >= 5 and lb.misses >= 5
        prof = a.profile("zoe")
        assert prof.n_events == 18 == b.profile("zoe").n_events
        assert prof.weights["brevity"] > POLICY.default["brevity"]
        assert a.decide("zoe").member == b.decide("zoe").member == "terse"


def test_compare_candidates_reads_the_cached_posterior(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "p.db") as store:
        palm = Palm(PORTFOLIO, POLICY, store, random_state=0, embedder=None)
        for _ in range(5):
            palm.record_feedback("ann", Pairwise(winner="playful", loser="careful"))
        learning = palm._profiles.learning
        hits, misses = learning.hits, learning.misses
        pair = palm.compare_candidates("ann")
        assert (learning.hits, learning.misses) == (hits + 1, misses)
        learning.forget_cache()  # as after a restart: the stored evidence is refit once
        assert palm.compare_candidates("ann") == pair
        assert learning.misses == misses + 1
        assert set(pair) <= set(PORTFOLIO.ids) and pair[0] != pair[1]
