from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from palm_middleware.exceptions import InvalidParameterError
from palm_middleware.offline.portfolio.grid import grid
from palm_middleware.offline.portfolio.pruning import (
    budgeted_cover,
    coverage_matrix,
    exact_set_cover,
    greedy_set_cover,
    max_coverage,
    required_slack,
)

FAST = settings(max_examples=40, deadline=None, derandomize=True)


def _brute_min_cover(cover: np.ndarray) -> int:
    m = cover.shape[1]
    for k in range(1, m + 1):
        for sub in itertools.combinations(range(m), k):
            if cover[:, list(sub)].any(axis=1).all():
                return k
    raise AssertionError("uncoverable")


covers = arrays(np.bool_, st.tuples(st.integers(1, 9), st.integers(1, 7))).filter(
    lambda c: bool(c.any(axis=1).all())
)


@FAST
@given(cover=covers)
def test_exact_cover_is_minimum_and_greedy_is_valid(cover: np.ndarray) -> None:
    opt = _brute_min_cover(cover)
    ex = exact_set_cover(cover)
    assert cover[:, ex].any(axis=1).all()
    assert len(ex) == opt
    gr = greedy_set_cover(cover)
    assert cover[:, gr].any(axis=1).all()
    assert opt <= len(gr) <= (1 + math.log(len(cover))) * opt + 1e-9


def test_greedy_tie_break_prefers_priority_then_lower_index() -> None:
    cover = np.array([[1, 1, 1], [1, 1, 1]], dtype=bool)
    assert greedy_set_cover(cover).tolist() == [0]
    assert greedy_set_cover(cover, priority=[0.1, 0.5, 0.5]).tolist() == [1]


def test_uncoverable_point_is_an_error() -> None:
    with pytest.raises(InvalidParameterError, match="covered by no candidate"):
        greedy_set_cover(np.array([[True], [False]]))


@FAST
@given(seed=st.integers(0, 10_000), d=st.integers(2, 3))
def test_cover_semantics_and_noise(seed: int, d: int) -> None:
    rng = np.random.default_rng(seed)
    r = rng.uniform(0, 1, (6, d))
    u = rng.dirichlet(np.ones(d), 50)
    cov = coverage_matrix(u, r, 0.05, 0.01)
    v = u @ r.T
    assert cov[np.arange(len(u)), v.argmax(axis=1)].all()  # the best always covers
    assert np.array_equal(cov, v >= 0.95 * v.max(axis=1, keepdims=True) - 0.01 - 1e-12)
    se = np.full_like(r, 0.02)
    noisy = coverage_matrix(u, r, 0.05, 0.01, stderr=se, z=2.0)
    assert not np.any(noisy & ~cov)  # confidence bounds only remove coverage
    assert noisy.sum() <= cov.sum()


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 3))
def test_budgeted_cover_matches_brute_force(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.2, 1, (6, 2))
    u = grid(2, 0.2, 0.1)
    need = required_slack(u, r, delta=0.01)
    brute = min(
        float(np.max(np.min(need[:, list(s)], axis=1))) for s in itertools.combinations(range(6), k)
    )
    res = budgeted_cover(u, r, k, delta=0.01, method="exact")
    assert len(res.indices) <= k
    assert res.gap == pytest.approx(brute, abs=1e-9)
    # additive variant
    need_a = required_slack(u, r, "additive")
    brute_a = min(
        float(np.max(np.min(need_a[:, list(s)], axis=1)))
        for s in itertools.combinations(range(6), k)
    )
    assert budgeted_cover(u, r, k, kind="additive").gap == pytest.approx(brute_a, abs=1e-9)


@FAST
@given(cover=covers, k=st.integers(1, 3), seed=st.integers(0, 100))
def test_max_coverage_is_within_1_minus_1_over_e(cover: np.ndarray, k: int, seed: int) -> None:
    w = np.random.default_rng(seed).uniform(0.1, 1, len(cover))
    chosen, mass = max_coverage(cover, k, w)
    assert len(chosen) <= k
    best = max(
        float(w[cover[:, list(s)].any(axis=1)].sum() / w.sum())
        for s in itertools.combinations(range(cover.shape[1]), min(k, cover.shape[1]))
    )
    assert mass >= (1 - 1 / math.e) * best - 1e-12
    assert mass == pytest.approx(float(w[cover[:, chosen].any(axis=1)].sum() / w.sum()))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 100_000), n=st.integers(1, 60), m=st.integers(1, 12))
def test_unit_weight_greedy_equals_the_weighted_recount(seed: int, n: int, m: int) -> None:
    # Unweighted greedy keeps its gains incrementally; explicit unit weights recount each pick.
    rng = np.random.default_rng(seed)
    cover = rng.uniform(size=(n, m)) < 0.3
    cover[np.arange(n), rng.integers(0, m, n)] = True
    priority = rng.integers(0, 3, m).astype(float)  # coarse, so ties are common
    fast = greedy_set_cover(cover, priority=priority)
    slow = greedy_set_cover(cover, priority=priority, weights=np.ones(n))
    assert fast.tolist() == slow.tolist()
