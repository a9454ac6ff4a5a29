"""Work an event leaves for later (moving thin particles, a new user's evidence draws), done on
a background thread: the same posterior, fewer moves on the feedback path, nothing lost."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from palm_middleware import Pairwise, Palm, SQLiteStore, Thumb, load_policy, load_portfolio
from palm_middleware.background_upkeep import BackgroundUpkeep
from palm_middleware.data import bundled
from palm_middleware.exceptions import InvalidParameterError
from palm_middleware.preferences.events import Observation
from palm_middleware.preferences.model import PreferenceModel
from palm_middleware.preferences.population import Population
from palm_middleware.preferences.state import LearningState
from palm_middleware.stores.base import EventRecord, ProfileRecord

from ..test_pipeline import Clock
from .test_population import relative_log_marginals

PORTFOLIO = load_portfolio(bundled("portfolio.yaml"))
POLICY = load_policy(bundled("policy.yaml"))
R = PORTFOLIO.rewards
HIDDEN = np.array([0.1, 0.2, 0.1, 0.6])  # a user who mostly wants brevity


def _event(user: str, i: int, ts: float, rng: np.random.Generator) -> EventRecord:
    """A Bradley-Terry (β = 10) comparison of two random members by the HIDDEN user."""
    a, b = rng.choice(len(R), 2, replace=False)
    p = 1.0 / (1.0 + np.exp(-10.0 * float(HIDDEN @ (R[a] - R[b]))))
    obs = Observation.compare(R[a] - R[b], 1 if rng.random() < p else -1, ts=ts)
    return EventRecord(f"{user}:{i}", user, "pairwise", {"obs": [obs.to_dict()]}, ts)


def _feed(
    state: LearningState, user: str, n: int, record: ProfileRecord | None = None, seed: int = 3
) -> ProfileRecord:
    rng = np.random.default_rng(seed)
    start = record.version if record is not None else 0
    for i in range(start, start + n):
        ts = 1.7e9 + 60.0 * i
        new = state.rebuild(record, [_event(user, i, ts, rng)], now=ts, policy=POLICY, limit=0.25)
        record = ProfileRecord(user, new, i + 1, ts)
    assert record is not None
    return record


@pytest.mark.timeout(60)
def test_rejuvenate_keeps_the_posterior_and_restores_the_sample_size() -> None:
    rng = np.random.default_rng(0)
    obs = [Observation.compare(R[a] - R[b], 1, ts=0.0) for a, b in rng.integers(0, 6, (30, 2))]
    model = PreferenceModel(prior_mean=np.full(4, 0.25), random_state=0, ess_threshold=1e-9)
    model.fit(obs[:1], now=0.0)
    model.partial_fit(obs[1:], now=0.0)  # no move on the way (threshold 0): weights only
    before, lo, hi = model.predict(), *model.credible_interval()
    assert model.ess_fraction_ < 0.5
    moves = model.n_moves_
    model.rejuvenate()
    assert model.n_moves_ == moves + 1
    assert model.ess_fraction_ == pytest.approx(1.0)
    np.testing.assert_allclose(model.predict(), before, atol=0.02)
    lo2, hi2 = model.credible_interval()
    np.testing.assert_allclose(lo2, lo, atol=0.04)
    np.testing.assert_allclose(hi2, hi, atol=0.04)


@pytest.mark.timeout(60)
def test_follow_up_moves_thin_particles_and_finishes_the_draws() -> None:
    state = LearningState(population=Population(), move_ahead=0.999)
    record = _feed(state, "ann", 1)
    model = state._cache["ann"].model
    assert model.evidence_draws_pending_ > 0  # a first event draws one batch
    assert model.ess_fraction_ < 0.999  # and thins the particles a little
    moves = model.n_moves_
    assert state.follow_up("ann")
    after = state._cache["ann"].model
    assert after is not model  # a copy replaced the entry; the old one is untouched
    assert after.evidence_draws_pending_ == 0
    assert model.evidence_draws_pending_ > 0 and model.n_moves_ == moves
    assert after.n_moves_ == moves + 1  # below move_ahead: moved
    # The next event reads the followed-up posterior from the cache (no refit).
    hits, misses = state.hits, state.misses
    _feed(state, "ann", 1, record)
    assert (state.hits, state.misses) == (hits + 1, misses)
    assert not state.follow_up("nobody")  # nothing cached: nothing to do


@pytest.mark.timeout(60)
def test_follow_up_drops_its_work_when_an_event_came_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The follow-up works on a copy; an event that lands meanwhile wins (its posterior holds
    the event, the copy does not)."""
    state = LearningState(population=Population(), move_ahead=0.999)
    record = _feed(state, "bo", 1)
    plain = PreferenceModel.complete_evidence
    landed: list[ProfileRecord] = []

    def complete_then_event(self: PreferenceModel) -> PreferenceModel:
        landed.append(_feed(state, "bo", 1, record, seed=4))  # an event, mid follow-up
        return plain(self)

    monkeypatch.setattr(PreferenceModel, "complete_evidence", complete_then_event)
    assert not state.follow_up("bo")
    assert state.followed_up == 0
    monkeypatch.setattr(PreferenceModel, "complete_evidence", plain)
    cached = state._cache["bo"]
    assert cached.rev == landed[0].state["rev"]  # the event's posterior, not the copy
    assert cached.model.n_events_ == 2


@pytest.mark.timeout(60)
def test_the_followed_up_posterior_matches_the_inline_one() -> None:
    """Same events with and without follow-ups between them: the posteriors agree up to Monte
    Carlo noise, and far fewer events moved particles themselves."""
    inline, ahead = LearningState(population=Population()), LearningState(population=Population())
    upkeep = BackgroundUpkeep(ahead)
    try:
        rng = np.random.default_rng(7)
        ra: ProfileRecord | None = None
        rb: ProfileRecord | None = None
        moved_inline = moved_ahead = 0
        for i in range(60):
            ts = 1.7e9 + 60.0 * i
            ev = _event("cy", i, ts, rng)
            m0 = inline._cache["cy"].model.n_moves_ if ra is not None else 0
            a = inline.rebuild(ra, [ev], now=ts, policy=POLICY, limit=0.25)
            moved_inline += inline._cache["cy"].model.n_moves_ > m0
            upkeep.drain()  # (a user's next event comes after the thread caught up)
            m1 = ahead._cache["cy"].model.n_moves_ if rb is not None else 0
            b = ahead.rebuild(rb, [ev], now=ts, policy=POLICY, limit=0.25)
            moved_ahead += ahead._cache["cy"].model.n_moves_ > m1
            ra, rb = ProfileRecord("cy", a, i + 1, ts), ProfileRecord("cy", b, i + 1, ts)
        assert upkeep.drain()
    finally:
        upkeep.close()
    assert ahead.followed_up > 0 and upkeep.cpu_seconds > 0
    assert moved_ahead < moved_inline
    assert ra is not None and rb is not None
    pa, pb = ra.state["posterior"], rb.state["posterior"]
    assert pa["evidence"] == pytest.approx(pb["evidence"], rel=1e-9)
    np.testing.assert_allclose(pa["mean"], pb["mean"], atol=0.03)
    np.testing.assert_allclose(pa["lower"], pb["lower"], atol=0.05)
    np.testing.assert_allclose(pa["upper"], pb["upper"], atol=0.05)
    assert np.argmax(R @ np.asarray(pb["mean"])) == np.argmax(R @ HIDDEN)


def test_the_threshold_must_sit_above_the_collapse_floor() -> None:
    with pytest.raises(InvalidParameterError, match="below must be in"):
        BackgroundUpkeep(LearningState(), below=0.01)


@pytest.mark.timeout(120)
def test_palm_follows_up_in_the_background_and_loses_no_event(tmp_path: Path) -> None:
    """Four threads send feedback for three users while the upkeep thread works on the same
    cache: every event lands once, and the upkeep did work. With a seed (sync), the follow-ups
    run on the caller's thread."""
    with SQLiteStore(tmp_path / "p.db") as store:
        palm = Palm(PORTFOLIO, POLICY, store, embedder=None, population_refresh=5.0)
        assert not palm._upkeep.sync
        users, per_thread = ("ann", "bo", "cy"), 20
        errors: list[BaseException] = []

        def send(k: int) -> None:
            try:
                for i in range(per_thread):
                    user = users[(k + i) % len(users)]
                    if i % 2:
                        palm.record_feedback(user, Pairwise(winner="terse", loser="thorough"))
                    else:
                        palm.record_feedback(user, Thumb(up=True, member="terse"))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert palm._upkeep.drain()
        total = sum(palm.profile(u).n_events for u in users)
        assert total == 4 * per_thread
        # Under that load most follow-ups lose the race to the user's next event; once
        # feedback is quiet they land. A new user's first event either took a model prepared
        # ahead or left its evidence draws to the upkeep: made either way.
        palm.record_feedback("newcomer", Pairwise(winner="terse", loser="careful"))
        assert palm._upkeep.drain()
        learning = palm._profiles.learning
        newcomer = [e.model for e in learning._cache.values() if e.model.n_events_ == 1]
        assert len(newcomer) == 1 and newcomer[0].evidence_draws_pending_ == 0
        assert learning.prepared + learning.followed_up > 0 and palm._upkeep.cpu_seconds > 0
        assert palm.profile("ann").weights["brevity"] > POLICY.default["brevity"]
    with SQLiteStore(tmp_path / "q.db") as store:
        assert Palm(PORTFOLIO, POLICY, store, embedder=None, random_state=0)._upkeep.sync


@pytest.mark.timeout(120)
def test_stale_evidence_draws_are_renewed_where_the_posterior_went() -> None:
    """Two traits, 40 answers one by one (the feedback path's batched draws, placed at the
    first events' posteriors): once the observations doubled the draws are stale; renewed (as
    the follow-up does), they sit at today's posterior and the evidence is within 0.15 nats of
    the quadrature marginal likelihood at every candidate."""
    import math

    strengths = [0.5, 1.2, 2.0, 8.0]
    rng = np.random.default_rng(5)
    vs = rng.uniform(0.2, 0.8, 40) * rng.choice([-1, 1], 40)
    w1 = 0.8  # the user: mostly the first trait
    ys = [
        1 if rng.random() < 0.05 + 0.9 / (1 + math.exp(-10 * (2 * w1 - 1) * v)) else -1 for v in vs
    ]
    m = PreferenceModel(
        prior_mean=[0.5, 0.5],
        prior_strength=2.0,
        beta=10.0,
        lapse=0.05,
        n_particles=512,
        random_state=0,
        ess_threshold=0.05,
    ).fit([])
    stale_seen = False
    for v, y in zip(vs, ys, strict=True):
        m.partial_fit([Observation.compare([v, -v], y)])
        m.strength_evidence(strengths, budget=256)
        stale_seen |= m.evidence_draws_stale_
    assert stale_seen and m.evidence_draws_stale_
    m.renew_evidence()
    d = m.__dict__["_ev_draws"]
    assert not m.evidence_draws_stale_ and d.placed == len(m._obs) and d.logy.shape[0] == 1024
    ev = m.strength_evidence(strengths)
    truth = relative_log_marginals(vs * np.asarray(ys), strengths)
    np.testing.assert_allclose(ev, truth, atol=0.15)


@pytest.mark.timeout(120)
def test_a_known_user_is_put_under_the_refitted_population_prior(tmp_path: Path) -> None:
    """A user cached before the population prior was refitted: the follow-up after their next
    event re-priors their posterior (as a refit from the stored evidence would be), so their
    event after that builds on the prior served now; in sync mode, run after run alike."""

    def run() -> tuple[list[float], float]:
        with SQLiteStore(tmp_path / f"{np.random.default_rng().integers(1 << 30)}.db") as store:
            palm = Palm(PORTFOLIO, POLICY, store, embedder=None, clock=Clock(), random_state=0)
            learning = palm._profiles.learning
            palm.record_feedback("ann", Pairwise(winner="terse", loser="thorough"))
            before = learning._cache[next(iter(learning._cache))].model._alpha.copy()
            for k in range(30):  # others' feedback: the population prior is refitted
                palm.record_feedback(f"u{k}", Pairwise(winner="terse", loser="careful"))
            served = learning.population_prior(POLICY).alpha
            assert not np.allclose(served, before)
            palm.record_feedback("ann", Thumb(up=True, member="terse"))
            key = [k for k, e in learning._cache.items() if e.model.n_events_ == 2][0]
            model = learning._cache[key].model
            np.testing.assert_allclose(model._alpha, np.maximum(served, 1e-2))
            assert not learning._prior_differs(model, POLICY)
            prof = palm.profile("ann")
            return list(prof.weights.values()), learning.followed_up

    a, b = run(), run()
    assert a == b and a[1] > 0  # sync mode: the same follow-ups, the same posterior


@pytest.mark.timeout(120)
def test_a_model_prepared_ahead_gives_the_true_evidence_after_its_first_events() -> None:
    """Draws made before any observation (placed at the prior, as the background prepares a
    new user's model): after 12 answers, extended one event at a time and never redrawn, the
    concentration evidence is within 0.15 nats of the quadrature marginal likelihood; two
    models prepared with different seeds hold different draws."""
    import math

    strengths = [0.5, 1.2, 2.0, 8.0]
    rng = np.random.default_rng(11)
    vs = rng.uniform(0.2, 0.8, 12) * rng.choice([-1, 1], 12)
    ys = [1 if rng.random() < 0.05 + 0.9 / (1 + math.exp(-10 * 0.6 * v)) else -1 for v in vs]
    base = PreferenceModel(
        prior_mean=[0.5, 0.5], prior_strength=2.0, beta=10.0, lapse=0.05, n_particles=512,
        random_state=0,
    ).fit([])  # fmt: skip
    m, other = base.copy().prepare_evidence(strengths, [1, 1]), base.copy()
    other.prepare_evidence(strengths, [1, 2])
    d = m.__dict__["_ev_draws"]
    assert d.logy.shape[0] == 1024 and d.placed == 0 and m.evidence_draws_pending_ == 0
    assert not np.array_equal(d.logy, other.__dict__["_ev_draws"].logy)
    for v, y in zip(vs, ys, strict=True):
        m.partial_fit([Observation.compare([v, -v], y)])
        ev = m.strength_evidence(strengths, budget=256)  # (the feedback path's call)
        assert m.__dict__["_ev_draws"].logy is d.logy  # extended, never drawn again
    truth = relative_log_marginals(vs * np.asarray(ys), strengths)
    np.testing.assert_allclose(ev, truth, atol=0.15)


@pytest.mark.timeout(60)
def test_copies_append_columns_without_touching_each_other() -> None:
    """The likelihood columns grow in place, in a buffer with room (an event costs one column);
    a copy shares the columns held but never the room: two copies fed different answers each
    hold exactly their own columns."""
    rng = np.random.default_rng(2)
    obs = [Observation.compare(R[a] - R[b], 1, ts=0.0) for a, b in rng.integers(0, 6, (20, 2))]
    m = PreferenceModel(prior_mean=np.full(4, 0.25), random_state=0, ess_threshold=1e-9)
    m.fit(obs[:3], now=0.0)
    m.strength_evidence([2.0, 4.0, 8.0])
    twin = m.copy()
    for a, b in zip(obs[3:11], obs[11:19], strict=True):
        m.partial_fit([a], now=0.0)
        twin.partial_fit([b.__class__.compare(-b.vector, 1, ts=0.0)], now=0.0)
        m.strength_evidence([2.0, 4.0, 8.0])
        twin.strength_evidence([2.0, 4.0, 8.0])
    for model in (m, twin):
        # (float32 logistic terms: one column at a time or all at once round alike to 1e-6)
        want = model._loglik(model.particles_, model._obs)
        np.testing.assert_allclose(model._ll, want, rtol=1e-5, atol=1e-6)
        d = model.__dict__["_ev_draws"]
        want = model._loglik(d.y32, model._obs, d.g)
        np.testing.assert_allclose(d.cols, want, rtol=1e-5, atol=1e-6)
    assert m._ll.base is not None and m._ll.base.shape[1] > m._ll.shape[1]  # (room kept)


@pytest.mark.timeout(120)
def test_new_users_find_their_models_prepared_ahead() -> None:
    """The background prepares new users' models (their evidence draws made) up to AHEAD for
    the prior served now: a new user's first event takes one and leaves no draws to make; a
    refitted prior drops those prepared for the old one, and they are prepared anew."""
    from palm_middleware.preferences.state import AHEAD

    state = LearningState(population=Population())
    upkeep = BackgroundUpkeep(state)
    try:
        upkeep.prepare(POLICY)
        assert upkeep.drain(60.0)
        assert state._ahead is not None and len(state._ahead[1]) == AHEAD
        assert not state.prepare_ahead()  # full
        drawn = state._ahead[1][-1].__dict__["_ev_draws"].logy  # the one the next user takes
        record = _feed(state, "dee", 1)
        assert state.prepared == 1
        model = state._cache["dee"].model
        assert model.evidence_draws_pending_ == 0
        assert model.__dict__["_ev_draws"].logy is drawn  # extended, not drawn again
        assert upkeep.drain(60.0)
        assert len(state._ahead[1]) == AHEAD  # refilled after the event took one
        old_key = state._ahead[0]
        state.observe("dee", record.state)
        for k in range(30):  # others' feedback, counted in the population, then a refit
            state.observe(f"u{k}", _feed(state, f"u{k}", 3, seed=k).state)
        assert upkeep.drain(60.0)
        state.refresh_population(POLICY)
        new_key = state._prior_key(POLICY, state.population_prior(POLICY))
        assert new_key != old_key  # the prior moved
        prepared = state.prepared
        _feed(state, "eve", 1)
        assert state.prepared == prepared  # those prepared for the old prior are not used
        assert upkeep.drain(60.0)
        assert state._ahead[0] == new_key and len(state._ahead[1]) == AHEAD
        _feed(state, "fay", 1)
        assert state.prepared == prepared + 1
    finally:
        upkeep.close()


@pytest.mark.timeout(60)
def test_the_upkeep_waits_for_a_quiet_moment() -> None:
    """``wait_quiet`` returns False while an update runs, and True once none has run for the
    quiet time: soon after the update ends, not a timeout later."""
    import time

    state = LearningState(population=Population())
    released = threading.Event()

    def update() -> None:  # a feedback update that takes 0.3 s
        with state.updating():
            time.sleep(0.3)
        released.set()

    t = threading.Thread(target=update)
    t.start()
    try:
        time.sleep(0.02)
        assert not state.wait_quiet(0.02, timeout=0.1)  # busy throughout
        start = time.monotonic()
        assert state.wait_quiet(0.02, timeout=10.0)
        waited = time.monotonic() - start
    finally:
        t.join(30)
    assert released.is_set()
    assert 0.02 <= waited < 2.0  # the rest of the update and the quiet time, not 10 s


def _child_after_fork(state: LearningState, upkeep: BackgroundUpkeep, out: Any) -> None:
    """In the forked child: what it inherited, then a new user's first event and the models
    it prepares itself (their first draw, to compare with the parent's)."""
    inherited = state._ahead is None
    _feed(state, "gil", 1)
    ok = upkeep.drain(30.0)
    assert state._ahead is not None
    out.put((inherited, ok, float(state._ahead[1][0].__dict__["_ev_draws"].logy[0, 0])))


@pytest.mark.timeout(120)
def test_a_forked_worker_prepares_its_own_models() -> None:
    """A worker forked from a process that prepared models ahead (a server that forks after
    start-up): the child drops the parent's (it would hand out the same draws as its
    siblings), serves a new user without deadlocking on a lock the parent's thread held, and
    prepares models whose draws differ from the parent's."""
    import multiprocessing

    state = LearningState(population=Population())
    upkeep = BackgroundUpkeep(state)
    try:
        upkeep.prepare(POLICY)
        assert upkeep.drain(60.0)
        assert state._ahead is not None
        parents = {float(m.__dict__["_ev_draws"].logy[0, 0]) for m in state._ahead[1]}
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=_child_after_fork, args=(state, upkeep, out))
        child.start()
        inherited, drained, first = out.get(timeout=60)
        child.join(30)
    finally:
        upkeep.close()
    assert child.exitcode == 0 and inherited and drained
    assert first not in parents
