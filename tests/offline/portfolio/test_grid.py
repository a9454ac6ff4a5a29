from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palm_middleware.exceptions import InvalidParameterError
from palm_middleware.offline.portfolio.grid import (
    default_tau,
    grid,
    grid_levels,
    grid_size,
    round_to_grid,
)

FAST = settings(max_examples=40, deadline=None, derandomize=True)

# palm.md §3: (d, eps, delta) -> (|L|, |G|)
TABLE = {
    (2, 0.4, 0.2): (7, 13),
    (2, 0.2, 0.1): (15, 29),
    (2, 0.1, 0.05): (34, 67),
    (2, 0.05, 0.01): (97, 193),
    (3, 0.4, 0.2): (9, 217),
    (3, 0.2, 0.1): (19, 1027),
    (3, 0.1, 0.05): (41, 4921),
    (3, 0.05, 0.01): (111, 36631),
    (4, 0.4, 0.2): (11, 4641),
    (4, 0.2, 0.1): (21, 34481),
    (4, 0.1, 0.05): (45, 352529),
    (4, 0.05, 0.01): (119, 6656145),
    (5, 0.4, 0.2): (11, 61051),
    (5, 0.2, 0.1): (23, 1282711),
    (5, 0.05, 0.01): (125, 1201327501),
}


@pytest.mark.parametrize(("key", "expected"), sorted(TABLE.items()))
def test_sizes_equal_table(key: tuple[int, float, float], expected: tuple[int, int]) -> None:
    d, eps, delta = key
    n_levels, size = expected
    assert len(grid_levels(d, eps, delta)) == n_levels
    assert grid_size(d, eps, delta) == size
    assert n_levels == 2 + math.ceil(math.log((d - 1) / delta) / math.log(1 + eps))
    if size <= 60_000:
        assert len(grid(d, eps, delta)) == size


def test_d2_reproduces_released_palm_weights() -> None:
    # Published by the PALM authors (provenance: tests/data/README.md).
    path = Path(__file__).resolve().parents[2] / "data" / "rlvr_gsm_released_rewards.csv"
    with path.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["source"] == "palm_grid"]
    g = grid(2, 0.4, 0.2)
    for r in rows:
        w_help = float(r["w_help"])
        assert np.min(np.abs(g[:, 0] - w_help)) < 5e-4, w_help


def test_levels_boundary_tolerance() -> None:
    # tau·(1+eps)^k lands on 1 in exact arithmetic; the level 1 must not appear twice.
    eps = 5 ** (1 / 3) - 1  # 0.2·(1+eps)^3 == 1
    lv = grid_levels(2, eps, 0.2)
    assert len(lv) == 2 + 3
    assert lv[-2] < 1 - 1e-6 and lv[-1] == 1.0
    assert grid_size(2, 1.0, 0.25) == 2 * 4 - 1  # levels 0, .25, .5, 1
    assert len(grid(2, 1.0, 0.25)) == 7


@FAST
@given(
    d=st.integers(2, 4),
    eps=st.floats(0.2, 1.0),
    delta=st.floats(0.05, 0.6),
)
def test_grid_invariants(d: int, eps: float, delta: float) -> None:
    g = grid(d, eps, delta)
    assert len(g) == grid_size(d, eps, delta)
    assert np.all(g >= 0) and np.allclose(g.sum(axis=1), 1.0)
    key = {tuple(np.round(r, 9)) for r in g}
    assert len(key) == len(g)  # no duplicates
    for i in range(d):
        assert tuple(np.round(np.eye(d)[i], 9)) in key
    assert tuple(np.round(np.full(d, 1 / d), 9)) in key
    # a transposition and a cycle generate every permutation of the coordinates
    swap = [1, 0, *range(2, d)]
    cycle = [*range(1, d), 0]
    for perm in (swap, cycle):
        assert {tuple(np.round(r[list(perm)], 9)) for r in g} == key
    # every grid point is a fixed point of the rounding map
    assert np.allclose(round_to_grid(g, eps, delta), g)


def test_d2_symmetric() -> None:
    g = grid(2, 0.1, 0.05)
    assert np.allclose(np.sort(g[:, 0]), np.sort(1 - g[:, 0]))


@FAST
@given(
    d=st.integers(2, 4), eps=st.floats(0.2, 1.0), delta=st.floats(0.05, 0.6), f=st.floats(0.3, 0.95)
)
def test_size_monotone_in_eps_and_delta(d: int, eps: float, delta: float, f: float) -> None:
    assert grid_size(d, eps * f, delta) >= grid_size(d, eps, delta)
    assert grid_size(d, eps, delta * f) >= grid_size(d, eps, delta)


def test_tau_parameter() -> None:
    assert default_tau(3, 0.2) == pytest.approx(0.1)
    assert grid_size(3, 0.4, 0.2, tau=0.2) < grid_size(3, 0.4, 0.2)
    assert grid_levels(3, 0.4, 0.2, tau=0.2)[1] == pytest.approx(0.2)


@FAST
@given(d=st.integers(2, 4), seed=st.integers(0, 10_000))
def test_rounding_gives_the_grid_guarantee(d: int, seed: int) -> None:
    # palm.md §4: an exact oracle at the rounded point ŵ is (eps, delta)-good at w.
    eps, delta = 0.4, 0.2
    rng = np.random.default_rng(seed)
    pool = rng.uniform(0, 1, size=(30, d))
    w = rng.dirichlet(np.ones(d), size=200)
    w_hat = round_to_grid(w, eps, delta)
    u = w / w.max(axis=1, keepdims=True)
    u_hat = w_hat / w_hat.max(axis=1, keepdims=True)
    assert np.all(u_hat <= u + 1e-12)  # rounds down
    grid_keys = {tuple(np.round(r, 9)) for r in grid(d, eps, delta)}
    assert all(tuple(np.round(r, 9)) in grid_keys for r in w_hat)
    chosen = pool[np.argmax(w_hat @ pool.T, axis=1)]
    value = np.einsum("ij,ij->i", w, chosen)
    opt = (w @ pool.T).max(axis=1)
    assert np.all(value >= (opt - delta) / (1 + eps) - 1e-12)


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        ((1, 0.4, 0.2), "d >= 2"),
        ((2, 0.0, 0.2), "eps"),
        ((2, 0.4, -1.0), "delta"),
        ((2, 0.4, float("nan")), "delta"),
    ],
)
def test_bad_parameters(args: tuple[int, float, float], msg: str) -> None:
    with pytest.raises(InvalidParameterError, match=msg):
        grid(*args)


def test_round_to_grid_rejects_bad_weights() -> None:
    with pytest.raises(InvalidParameterError, match="non-negative"):
        round_to_grid([0.5, -0.1, 0.6], 0.4, 0.2)
