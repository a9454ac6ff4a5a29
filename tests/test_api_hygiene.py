"""Issue 17 item 5: a side-effect-free route(), profile weights the router takes back, one clock,
and the noise model and forgetting set per deployment in the policy."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palm_middleware import (
    MemoryStore,
    Pairwise,
    Palm,
    SQLiteStore,
    Thumb,
    load_policy,
    load_portfolio,
)
from palm_middleware.data import bundled
from palm_middleware.exceptions import PalmError
from palm_middleware.policy import parse_policy
from palm_middleware.routing import Router

PORTFOLIO = load_portfolio(bundled("portfolio.yaml"))
POLICY = load_policy(bundled("policy.yaml"))
IDS = list(PORTFOLIO.ids)


class Clock:
    """Simulated time: one second per reading, whatever the wall clock does."""

    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def _rows(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as db:
        return {
            t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("profiles", "events", "audit")
        }


@pytest.mark.parametrize("mode", ["mean", "thompson"])
def test_route_writes_nothing_and_draws_nothing(tmp_path: Path, mode: Any) -> None:
    path = tmp_path / "palm.db"
    with SQLiteStore(path) as store:
        kw: dict[str, Any] = {"mode": mode, "random_state": 7, "embedder": None}
        palm = Palm(PORTFOLIO, POLICY, store, clock=Clock(), **kw)
        twin = Palm(PORTFOLIO, POLICY, store, clock=Clock(), **kw)
        for i in range(8):
            palm.record_feedback("amy", Pairwise(winner="terse", loser=IDS[i % 3]))
        before, profile = _rows(path), store.get_profile(palm.user_key("amy"))
        # A cue in the message ("shorter") would be recorded by decide(); route() only asks.
        msgs = [{"role": "user", "content": "Shorter please. What is a haiku?"}]
        routes = [palm.route("amy", msgs) for _ in range(3)]
        routes.append(asyncio.run(palm.aroute("amy", msgs)))
        assert _rows(path) == before
        assert store.get_profile(palm.user_key("amy")) == profile
        assert {r.member for r in routes} == {"terse"} and {r.mode for r in routes} == {"mean"}
        assert all(r.decision_id == "" and r.cues == () for r in routes)
        # The generator was not touched: palm's next draws are its twin's first ones.
        got = [palm.decide("amy").member for _ in range(6)]
        assert got == [twin.decide("amy").member for _ in range(6)]
        assert _rows(path)["audit"] == before["audit"] + 12


def test_route_answers_what_mean_decide_serves(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "palm.db") as store:
        kw: dict[str, Any] = {"mode": "mean", "random_state": 0, "embedder": None}
        palm = Palm(PORTFOLIO, POLICY, store, clock=Clock(), **kw)
        for user, winner in (("bo", "playful"), ("cy", "careful"), ("di", "balanced")):
            for loser in [m for m in IDS if m != winner]:
                palm.record_feedback(user, Pairwise(winner=winner, loser=loser))
            r, d = palm.route(user), palm.decide(user)  # one simulated second apart
            assert (r.member, r.rules_fired) == (d.member, d.rules_fired)
            assert r.weights == pytest.approx(d.weights, abs=1e-6)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.tuples(st.sampled_from(IDS), st.sampled_from(IDS), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_profile_weights_go_back_into_the_router(events: list[tuple[str, str, bool]]) -> None:
    kw: dict[str, Any] = {"mode": "mean", "random_state": 0, "embedder": None}
    palm = Palm(PORTFOLIO, POLICY, MemoryStore(), clock=Clock(), **kw)
    for a, b, up in events:
        if a == b:
            palm.record_feedback("eve", Thumb(member=a, up=up))
        else:
            palm.record_feedback("eve", Pairwise(winner=a, loser=b))
    prof = palm.profile("eve")
    router = Router(PORTFOLIO)
    for weights in (prof.weights, prof.effective_weights):
        w = np.array([weights[n] for n in PORTFOLIO.space.names])
        assert router.route(w).member in IDS  # no InvalidWeightsError: sum 1 within tolerance
    # And unchanged: the profile's weights are the ones decide() routes on in mean mode (one
    # second later: forgetting moves them by about 1e-7).
    d = palm.decide("eve")
    assert d.weights == pytest.approx(prof.effective_weights, abs=1e-6)


def _simulate(store_path: Path) -> list[Any]:
    """A simulate-style loop: Thompson decisions, A/B questions, thumbs, with wall time passing."""
    with SQLiteStore(store_path) as store:
        palm = Palm(
            PORTFOLIO, POLICY, store, mode="thompson", clock=Clock(), random_state=11,
            half_life=600.0, embedder=None,
        )  # fmt: skip
        w = np.array([0.2, 0.2, 0.1, 0.5])  # a user who likes brevity
        rng = np.random.default_rng(5)
        out: list[Any] = []
        for step in range(12):
            d = palm.decide("sam")
            a, b = palm.compare_candidates("sam")
            good = PORTFOLIO.rewards[IDS.index(d.member)] @ w > 0.62
            palm.record_feedback("sam", Thumb(decision_id=d.decision_id, up=bool(good)))
            va, vb = PORTFOLIO.rewards[IDS.index(a)] @ w, PORTFOLIO.rewards[IDS.index(b)] @ w
            win, lose = (a, b) if (va > vb) != (rng.random() < 0.1) else (b, a)
            palm.record_feedback("sam", Pairwise(winner=win, loser=lose))
            out.append((d.member, d.raw_weights, (a, b)))
            time.sleep(0.003 * (step % 3))  # real time passes, unevenly
        out.append(palm.profile("sam").to_dict()["weights"])
        return out


def test_same_random_state_and_clock_give_identical_runs(tmp_path: Path) -> None:
    """Nothing reads the wall clock when a clock is injected: forgetting included."""
    first = _simulate(tmp_path / "a.db")
    time.sleep(0.05)
    assert _simulate(tmp_path / "b.db") == first


LEARNING = """
version: 2
traits: [safety, helpfulness, humor, brevity]
defaults: {weights: {safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}}
learning: {beta: 3, lapse: 0.2, half_life_days: never}
"""


def test_the_policy_states_beta_lapse_and_half_life() -> None:
    policy = parse_policy(LEARNING, "p.yaml")
    palm = Palm(PORTFOLIO, policy, MemoryStore(), clock=Clock(), beta=30.0, half_life=60.0)
    learning = palm._profiles.learning
    assert learning.settings(policy) == (3.0, 0.2, None)
    model = learning.model(policy)
    assert model.beta == pytest.approx(3.0) and (model.lapse, model.half_life) == (0.2, None)
    for _ in range(4):
        palm.record_feedback("ivy", Pairwise(winner="terse", loser="thorough"))
    now = palm.profile("ivy").evidence
    palm.clock.t += 10 * 365 * 86400.0  # type: ignore[attr-defined]
    assert palm.profile("ivy").evidence == now == pytest.approx(4.0)  # never forgets
    # Unstated fields take the Palm's values; the section left out hashes as before.
    partial = parse_policy(LEARNING.replace("beta: 3, lapse: 0.2, ", ""), "p.yaml")
    assert learning.settings(partial) == (30.0, "learn", None)  # the Palm learns the lapse
    bare = parse_policy(
        LEARNING.replace("learning: {beta: 3, lapse: 0.2, half_life_days: never}", "")
    )
    assert learning.settings(bare) == (30.0, "learn", 60.0)
    assert "learning" not in bare.to_dict()
    assert parse_policy(LEARNING, "p.yaml").to_dict()["learning"]["beta"] == 3.0


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{beta: 0}", "learning.beta: must be > 0 or 'learn'"),
        ("{beta: fast}", "learning.beta: must be a number > 0 or 'learn'"),
        ("{lapse: 0.5}", "learning.lapse: must be in (0, 0.5) or 'learn'"),
        ("{half_life_days: -3}", "learning.half_life_days: must be > 0"),
        ("{half_life_days: soon}", "learning.half_life_days: must be a number of days > 0"),
        ("{gamma: 2}", "unknown key 'gamma'"),
    ],
)
def test_bad_learning_settings_name_the_field_and_line(section: str, message: str) -> None:
    text = LEARNING.replace("{beta: 3, lapse: 0.2, half_life_days: never}", section)
    with pytest.raises(PalmError) as err:
        parse_policy(text, "p.yaml")
    assert "p.yaml:5:" in str(err.value) and message in str(err.value)


def test_the_policy_may_ask_to_learn_what_the_palm_fixes() -> None:
    policy = parse_policy(LEARNING.replace("beta: 3, lapse: 0.2", "beta: learn, lapse: learn"))
    palm = Palm(PORTFOLIO, policy, MemoryStore(), beta=7.0, lapse=0.1)
    learning = palm._profiles.learning
    assert learning.settings(policy) == ("learn", "learn", None)
    grid, lapses = learning.noise_of(policy)
    assert grid.size > 1 and lapses is not None  # a grid of β values and lapse rates to learn
    fixed, none = learning.noise_of(parse_policy(LEARNING.split("learning:")[0]))
    assert fixed.size == 1 and none is None  # the Palm's fixed β = 7, lapse 0.1
