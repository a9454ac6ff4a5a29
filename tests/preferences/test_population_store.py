"""The population prior lives in the store: replicas agree, erasure removes, restarts keep it.

Real SQLite files and the real PostgreSQL at 127.0.0.1 (``tests/pg.py``); the second replica is
a real second process. Users give pairwise feedback through ``Palm.record_feedback``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from palm_middleware import (
    InvalidParameterError,
    MemoryStore,
    Pairwise,
    Palm,
    SQLiteStore,
    Thumb,
)
from palm_middleware.preferences.population import Population, PopulationPrior
from palm_middleware.stores.base import EventRecord, ProfileRecord, Store
from tests.pg import SchemaFactory

if TYPE_CHECKING:
    from palm_middleware.stores.postgres import PostgresStore

from ..test_pipeline import POLICY, PORTFOLIO, Clock

ROOT = Path(__file__).resolve().parents[2]
N_MIN = 20  # Population's default pseudo-users
PAIRS = [
    ("terse", "thorough"),
    ("playful", "careful"),
    ("careful", "terse"),
    ("thorough", "playful"),
]


def _palm(store: Store, **kw: Any) -> Palm:
    kw.setdefault("random_state", 0)
    return Palm(PORTFOLIO, POLICY, store, clock=Clock(), n_particles=256, embedder=None, **kw)


def _feedback(palm: Palm, users: list[str], n: int = 3) -> None:
    for i, user in enumerate(users):
        for k in range(n):
            win, lose = PAIRS[(i + k) % len(PAIRS)]
            palm.record_feedback(user, Pairwise(winner=win, loser=lose))


def _as_dict(p: PopulationPrior) -> dict[str, Any]:
    return {
        "alpha": [float(x) for x in p.alpha],
        "probs": [float(x) for x in p.noise.p],
        "lapses": [float(x) for x in p.noise.lapses],
        "lapse_probs": list(p.lapse_probs),
        "n_users": p.n_users,
    }


_REPLICA = """
import json, sys
from palm_middleware import Pairwise, Palm
from tests.preferences.test_population_store import _as_dict, _feedback, _palm

kind, where, schema, users = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
if kind == "sqlite":
    from palm_middleware import SQLiteStore
    store = SQLiteStore(where)
else:
    from palm_middleware.stores.postgres import PostgresStore
    store = PostgresStore(where, schema=schema)
palm = _palm(store)
print(json.dumps(_as_dict(palm.population_prior())), flush=True)  # as loaded at start
_feedback(palm, users)
print(json.dumps(_as_dict(palm.refresh_population())), flush=True)
store.close()
"""


def _replica(kind: str, where: str, schema: str, users: list[str]) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", _REPLICA, kind, where, schema, ",".join(users)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(kind, path or DSN, PostgreSQL schema) of a store two processes open."""
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "shared.db"), ""
        return
    dsn: str = request.getfixturevalue("pg_dsn")
    schemas: SchemaFactory = request.getfixturevalue("pg_schemas")
    name = schemas.new()
    yield "postgres", dsn, name
    schemas.drop(name)


def _open(kind: str, where: str, schema: str) -> SQLiteStore | PostgresStore:
    if kind == "sqlite":
        return SQLiteStore(where)
    from palm_middleware.stores.postgres import PostgresStore

    return PostgresStore(where, schema=schema)


@pytest.mark.timeout(300)
def test_two_processes_sharing_a_store_fit_the_same_prior(shared: tuple[str, str, str]) -> None:
    kind, where, schema = shared
    with _open(kind, where, schema) as store:
        here = _palm(store)
        _feedback(here, [f"a{i}" for i in range(4)])
        mine = _as_dict(here.refresh_population())
        assert mine["n_users"] == 4
        # The other process starts from the rows this one wrote, and adds its own users.
        at_start, after = _replica(kind, where, schema, [f"b{i}" for i in range(3)])
        assert at_start == mine
        assert after["n_users"] == 7
        assert _as_dict(here.refresh_population()) == after  # bit for bit
        assert after != mine


def test_opt_out_reset_and_forget_remove_the_users_contribution(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "p.db") as store:
        palm = _palm(store)
        users = [f"u{i}" for i in range(6)]
        _feedback(palm, users)
        everyone = palm.refresh_population()
        assert everyone.n_users == 6 and len(store.population_rows()) == 6

        def fresh() -> dict[str, Any]:
            """What a replica that never saw these users' rows fits from the store."""
            return _as_dict(_palm(store).population_prior())

        palm.set_opt_out("u1")
        assert palm.user_key("u1") not in store.population_rows()
        assert palm.population_prior().n_users == 5  # refitted at once, without a refresh call
        assert _as_dict(palm.population_prior()) == fresh() != _as_dict(everyone)
        _feedback(palm, ["u1"])  # still opted out: never written, never counted
        assert palm.user_key("u1") not in store.population_rows()
        assert palm.refresh_population().n_users == 5
        palm.reset("u2")
        palm.forget("u3")
        assert set(store.population_rows()) == {palm.user_key(u) for u in ("u0", "u4", "u5")}
        assert palm.population_prior().n_users == 3
        assert _as_dict(palm.population_prior()) == fresh()
        palm.set_opt_out("u1", False)  # back in: the aggregates kept in the profile count again
        assert palm.refresh_population().n_users == 4


def test_one_users_influence_stays_bounded_through_the_store(tmp_path: Path) -> None:
    """Grid probabilities move <= 1/(N + n_min) in total variation; the mean-log statistic
    <= ln(1/clip)/(N + n_min) per trait; the lapse probabilities (EM fixed point) <= 1/n_min,
    even for a user whose aggregates sit at the extremes."""
    with SQLiteStore(tmp_path / "p.db") as store:
        palm = _palm(store)
        _feedback(palm, [f"u{i}" for i in range(8)], n=4)
        before = palm.refresh_population()
        pop = palm._profiles.learning.population
        assert pop is not None
        grid = before.noise
        s0, p0, n = pop.statistics(before.alpha * 0 + 1.0, grid)
        extreme_q = np.zeros(grid.size)
        extreme_q[-1] = 1.0
        row = {
            "mean_log": [0.0, -1e9, -1e9, 0.0],
            "noise": list(extreme_q),
            "lapse": [0.0, -80.0, -80.0, -80.0, -80.0],
        }

        def update(p: ProfileRecord | None, e: list[EventRecord]) -> dict[str, Any]:
            return {"population": row}

        store.apply_event(
            EventRecord("x:1", "outlier", "pairwise", {}, 0.0),
            update,
            now=0.0,
            population=palm._profiles.learning.population_row,
        )
        after = palm.refresh_population()
        assert after.n_users == n + 1
        s1, p1, _ = pop.statistics(before.alpha * 0 + 1.0, grid)
        bound = 1 / (n + 1 + N_MIN)
        assert 0 < 0.5 * np.abs(p1 - p0).sum() <= bound + 1e-12
        assert np.abs(s1 - s0).max() <= np.log(1 / pop.clip) * bound + 1e-12
        lapse_tv = 0.5 * np.abs(np.subtract(after.lapse_probs, before.lapse_probs)).sum()
        assert 0 < lapse_tv <= 1 / N_MIN


def test_a_restart_keeps_the_prior(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with SQLiteStore(path) as store:
        palm = _palm(store)
        _feedback(palm, [f"u{i}" for i in range(5)])
        fitted = _as_dict(palm.refresh_population())
    with SQLiteStore(path) as store:
        assert _as_dict(_palm(store).population_prior()) == fitted
        background = _palm(store, random_state=None, population_refresh=30.0)
        assert _as_dict(background.population_prior()) == fitted  # loaded before serving
        background._profiles.feed.close()  # type: ignore[union-attr]


def test_background_refits_never_run_on_the_request_thread() -> None:
    store = MemoryStore()
    palm = _palm(store, random_state=None, population_refresh=0.05)
    feed = palm._profiles.feed
    pop = palm._profiles.learning.population
    assert feed is not None and feed.background and pop is not None
    fit = pop.prior
    threads: list[str] = []

    def spy(*args: Any, **kw: Any) -> Any:
        threads.append(threading.current_thread().name)
        return fit(*args, **kw)

    pop.prior = spy  # type: ignore[method-assign]
    _feedback(palm, [f"u{i}" for i in range(5)])
    palm.record_feedback("u0", Thumb(member="terse", up=True))
    assert threads.count("MainThread") == 0  # feedback wrote rows; nothing was refitted here
    deadline = time.monotonic() + 60
    while palm.population_prior().n_users < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert palm.population_prior().n_users == 5
    assert threads and set(threads) == {"palm-population"}
    # An erasure wakes the thread at once; the prior follows without the user.
    palm.forget("u4")
    deadline = time.monotonic() + 60
    while palm.population_prior().n_users != 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert palm.population_prior().n_users == 4
    assert "MainThread" not in threads
    feed.close()
    store.close()


def test_same_seed_runs_are_identical() -> None:
    def run() -> tuple[dict[str, Any], list[Any], list[str]]:
        with MemoryStore() as store:
            palm = _palm(store)
            palm._profiles.learning.refresh_every = 4
            users = [f"u{i}" for i in range(6)]
            members = []
            for _ in range(4):
                _feedback(palm, users, n=1)
                members += [
                    palm.decide(u, [{"role": "user", "content": "hi"}]).member for u in users
                ]
            profiles = [palm.profile(u).weights for u in users]
            return _as_dict(palm.population_prior()), profiles, members

    first, second = run(), run()
    assert first == second
    assert first[0]["n_users"] == 6


def test_population_refresh_is_validated() -> None:
    with pytest.raises(InvalidParameterError, match="population_refresh"):
        _palm(MemoryStore(), population_refresh=0)
    with pytest.raises(InvalidParameterError, match="population_refresh"):
        _palm(MemoryStore(), population_refresh="soon")
    sync = _palm(MemoryStore())._profiles.feed
    assert sync is not None and sync.background is False
    bg = _palm(MemoryStore(), random_state=None)._profiles.feed
    assert bg is not None and bg.interval == 2.0
    bg.close()


def test_fixed_point_lapse_influence_bound() -> None:
    """The lapse EM fixed point: one extreme user moves it by <= 1/n_min for any N, in
    populations whose lapse evidence is flat or sharp (flat evidence compounds the most: each
    EM step moves <= 1/(N + n_min), the fixed point up to N + n_min steps' worth)."""
    rng = np.random.default_rng(4)
    lapses = (0.0, 0.05, 0.1, 0.2, 0.3)
    worst = 0.0
    for n in (1, 10, 100, 300, 1000):
        for scale in (0.05, 2.0, 20.0):
            pop = Population(n_min=N_MIN)
            centre = rng.random(len(lapses))
            for u in range(n):
                le = -scale * (0.5 * rng.random(len(lapses)) + centre * rng.random())
                pop.observe(str(u), np.log(rng.dirichlet(np.ones(4))), np.ones(3) / 3, le)
            before = pop.lapse_fit(lapses)
            for j in range(len(lapses)):
                extreme = np.full(len(lapses), -200.0)
                extreme[j] = 0.0
                pop.observe("x", np.log(np.full(4, 0.25)), np.ones(3) / 3, extreme)
                tv = 0.5 * float(np.abs(pop.lapse_fit(lapses) - before).sum())
                pop.remove("x")
                assert tv <= 1 / N_MIN
                worst = max(worst, tv * (n + 1 + N_MIN))
    assert worst > 2  # the per-step bound alone would not describe the fixed point
