from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

from palm_middleware.exceptions import PalmError
from palm_middleware.offline.portfolio import _lp
from palm_middleware.offline.portfolio._lp import DenseLPSolver, solve_lp


def _certificate_lp(rng: np.random.Generator, d: int, k: int, kind: str) -> tuple[np.ndarray, ...]:
    # The two shapes certify.py solves: Charnes-Cooper (eps) and max-min (delta).
    p = rng.uniform(0, 1, (k, d))
    c = rng.uniform(0, 1, d)
    if kind == "eps":
        obj = np.concatenate([np.zeros(d), [1.0]])
        a_ub = np.concatenate([p + 0.02, -np.ones((k, 1))], axis=1)
        a_eq = np.concatenate([c, [0.0]])[None, :]
    else:
        obj = np.concatenate([np.zeros(d), [-1.0]])
        a_ub = np.concatenate([p - c, np.ones((k, 1))], axis=1)
        a_eq = np.concatenate([np.ones(d), [0.0]])[None, :]
    return obj, a_ub, np.zeros(k), a_eq, np.ones(1)


@pytest.mark.parametrize("kind", ["eps", "delta"])
@pytest.mark.parametrize("d", [2, 3, 5])
def test_solution_is_bitwise_linprogs(kind: str, d: int) -> None:
    rng = np.random.default_rng(d)
    bounds: list[tuple[float | None, float | None]] = [(0.0, None)] * d + [(None, None)]
    solver = DenseLPSolver()  # one instance for the whole sequence: nothing may carry over
    for _ in range(40):
        obj, a_ub, b_ub, a_eq, b_eq = _certificate_lp(rng, d, int(rng.integers(1, 25)), kind)
        if kind == "eps":
            # zero rewards: explicit zeros, which the CSC matrix must leave out
            a_ub[:, :d][rng.uniform(size=(len(a_ub), d)) < 0.1] = 0.0
        ref = linprog(
            obj, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs"
        )
        assert np.array_equal(solver.solve(obj, a_ub, b_ub, a_eq, b_eq, bounds), ref.x)
        assert np.array_equal(solve_lp(obj, a_ub, b_ub, a_eq, b_eq, bounds), ref.x)


def test_infeasible_lp_is_a_palm_error() -> None:
    bounds: list[tuple[float | None, float | None]] = [(0.0, None)] * 2
    with pytest.raises(PalmError, match="certificate LP failed"):
        solve_lp(np.zeros(2), np.ones((1, 2)), -np.ones(1), np.ones((1, 2)), np.ones(1), bounds)


def test_without_the_bundled_highs_bindings_linprog_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_lp, "_highs_core", lambda: None)
    bounds: list[tuple[float | None, float | None]] = [(0.0, None)] * 2
    x = solve_lp(
        np.array([1.0, 2.0]), np.zeros((0, 2)), np.zeros(0), np.ones((1, 2)), np.ones(1), bounds
    )
    assert x.tolist() == [1.0, 0.0]
