from __future__ import annotations

import numpy as np
import pytest

from palm_middleware.exceptions import InvalidParameterError
from palm_middleware.offline.portfolio.baselines import (
    evaluate_weights,
    gpi_greedy,
    random_weights,
    uniform_weights,
)
from palm_middleware.offline.portfolio.grid import grid
from palm_middleware.offline.portfolio.metrics import route, usage_perplexity
from palm_middleware.offline.portfolio.oracle import (
    CallableOracle,
    Candidate,
    NearestWeightOracle,
    PoolOracle,
)
from palm_middleware.offline.portfolio.search import lazy_search, search_order
from palm_middleware.offline.portfolio.simplex import simplex_sample
from palm_middleware.offline.portfolio.synthetic import (
    lp_front_optimum,
    lp_front_oracle,
    lp_front_pool,
)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("rmax", ["candidates", "trivial"])
def test_lazy_search_certifies_every_grid_point(d: int, rmax: str) -> None:
    pool = lp_front_pool(d, 200, random_state=d)
    eps, delta = 0.2, 0.1
    g = grid(d, eps, delta)
    oracle = PoolOracle(pool)
    res = lazy_search(g, oracle, eps, delta, rmax=rmax)
    assert res.certified.all()
    assert oracle.n_calls == res.n_oracle_calls <= len(g)
    best = (g @ res.rewards.T).max(axis=1)
    target = (1 - eps) * (g @ res.rmax) - delta
    skipped = np.setdiff1d(np.arange(len(g)), res.oracle_points)
    assert np.all(best[skipped] >= target[skipped] - 1e-9)
    assert len(res.candidates) == len({c.id for c in res.candidates})


def test_lazy_search_with_exact_oracle_is_an_eps_delta_portfolio() -> None:
    eps, delta, p = 0.2, 0.1, 2.0
    oracle = lp_front_oracle(p, sigma=0.0, shrink=0.0, random_state=0)
    res = lazy_search(grid(3, eps, delta), oracle, eps, delta, rmax="trivial")
    assert res.n_oracle_calls < len(grid(3, eps, delta))  # laziness saved calls
    w = simplex_sample(3, 20_000, 1)
    opt = np.linalg.norm(w, ord=p / (p - 1), axis=1)  # closed-form OPT(w) on the front
    val = (w @ res.rewards.T).max(axis=1)
    assert np.all(val >= (1 - eps) * opt - delta - 1e-9)


def test_search_order_puts_vertices_first() -> None:
    g = grid(3, 0.4, 0.2)
    first = g[search_order(g)[:3]]
    assert np.allclose(np.sort(first.max(axis=1)), 1.0)
    order_max = g[search_order(g)].max(axis=1)
    assert np.all(np.diff(order_max) <= 1e-12)


def test_oracles() -> None:
    cands = [
        Candidate("a", np.array([0.9, 0.1]), weight=np.array([1.0, 0.0])),
        Candidate("b", np.array([0.1, 0.9]), weight=np.array([0.0, 1.0])),
        Candidate("c", np.array([0.6, 0.6]), weight=np.array([0.5, 0.5])),
    ]
    assert PoolOracle(cands)(np.array([0.5, 0.5])).id == "c"
    assert NearestWeightOracle(cands)(np.array([0.8, 0.2])).id == "a"
    with pytest.raises(InvalidParameterError, match="training weight"):
        NearestWeightOracle([Candidate("x", np.array([0.5, 0.5]))])
    wrapped = CallableOracle(lambda w: w, prefix="mix")
    c = wrapped(np.array([0.25, 0.75]))
    assert c.id == "mix-0" and np.allclose(c.reward, [0.25, 0.75])
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\]"):
        Candidate("bad", np.array([1.5, 0.0]))


def test_baselines_shapes_and_values() -> None:
    u2 = uniform_weights(2, 13)
    assert np.allclose(np.sort(u2[:, 0]), np.arange(13) / 12)
    u3 = uniform_weights(3, 12)
    assert u3.shape == (12, 3) and np.allclose(u3.sum(axis=1), 1)
    assert np.isclose(u3.max(axis=1), 1).sum() == 3  # the vertices are kept
    assert uniform_weights(3, 10).shape == (10, 3)  # a full lattice (n = 3)
    r1, r2 = random_weights(3, 5, 7), random_weights(3, 5, 7)
    assert np.array_equal(r1, r2) and np.allclose(r1.sum(axis=1), 1)
    oracle = lp_front_oracle(2.0, sigma=0.0, shrink=0.0, random_state=0)
    assert len(evaluate_weights(u2, oracle)) == 13


def test_gpi_greedy_reduces_the_worst_gap() -> None:
    w = simplex_sample(2, 2001)
    opt = np.linalg.norm(w, axis=1)
    oracle = lp_front_oracle(2.0, sigma=0.0, shrink=0.0, random_state=0)
    cands, queried = gpi_greedy(oracle, w, opt, 6)
    assert len(cands) == 6 and len(queried) == 6
    gaps = []
    for k in range(1, 7):
        r = np.vstack([c.reward for c in cands[:k]])
        gaps.append(float(np.max(opt - (w @ r.T).max(axis=1))))
    assert all(b <= a + 1e-12 for a, b in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] < 0.05


def test_route_and_usage_perplexity() -> None:
    r = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.6]])
    assert route(r, [[0.5, 0.5]]).tolist() == [2]
    assert route(np.array([[0.5, 0.5], [0.5, 0.5]]), [[0.3, 0.7]]).tolist() == [0]  # ties
    users = simplex_sample(2, 1001)
    ppl = usage_perplexity(r, users)
    assert 1.0 <= ppl <= 3.0
    assert usage_perplexity(r[:1], users) == pytest.approx(1.0)
    assert np.allclose(lp_front_optimum([1.0, 0.0]), [1.0, 0.0])
