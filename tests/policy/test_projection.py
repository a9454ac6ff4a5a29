"""The projection onto simplex ∩ box ∩ L1 ball is exact (checked against a generic QP solver)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog, minimize

from palm_middleware.exceptions import InvalidParameterError
from palm_middleware.policy import l1_distance_to_feasible, project
from palm_middleware.types import FloatArray

from .strategies import Case, cases, violation

PROPS = settings(max_examples=200, deadline=None, derandomize=True)


def _project(c: Case, y: FloatArray | None = None) -> FloatArray:
    y = c.y if y is None else y
    if c.radius is None:
        return project(y, c.lower, c.upper)
    return project(y, c.lower, c.upper, c.center, c.radius)


def _reference(c: Case) -> tuple[FloatArray, bool]:
    """SLSQP on the smooth reformulation with t >= |x - center|, sum(t) <= radius."""
    d = c.y.size
    y = c.y
    eye, zero = np.eye(d), np.zeros(d)
    cons: list[dict[str, object]] = [
        {
            "type": "eq",
            "fun": lambda v: v[:d].sum() - 1.0,
            "jac": lambda v: np.concatenate([np.ones(d), zero]),
        },
    ]
    center = c.center
    radius = 2.0 if c.radius is None else c.radius
    if c.radius is not None:
        cons += [
            {
                "type": "ineq",
                "fun": lambda v: v[d:] - (v[:d] - center),
                "jac": lambda v: np.hstack([-eye, eye]),
            },
            {
                "type": "ineq",
                "fun": lambda v: v[d:] + (v[:d] - center),
                "jac": lambda v: np.hstack([eye, eye]),
            },
            {
                "type": "ineq",
                "fun": lambda v: radius - v[d:].sum(),
                "jac": lambda v: np.concatenate([zero, -np.ones(d)]),
            },
        ]
    x0 = np.clip(center, c.lower, c.upper)
    v0 = np.concatenate([x0, np.abs(x0 - center) + 0.1])
    res = minimize(
        lambda v: 0.5 * float(((v[:d] - y) ** 2).sum()),
        v0,
        jac=lambda v: np.concatenate([v[:d] - y, zero]),
        bounds=[*zip(c.lower, c.upper, strict=True), *[(0.0, None)] * d],
        constraints=cons,
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    return np.asarray(res.x[:d]), bool(res.success)


@PROPS
@given(cases())
def test_result_is_feasible(c: Case) -> None:
    assert violation(_project(c), c) <= 1e-9


@PROPS
@given(cases())
def test_matches_reference_qp(c: Case) -> None:
    x = _project(c)
    ref, ok = _reference(c)
    if ok and violation(ref, c) <= 1e-9:
        np.testing.assert_allclose(x, ref, atol=1e-6)
    # Whatever the reference did, ours is never worse than a (nearly) feasible point.
    slack = max(violation(ref, c), 0.0)
    assert np.linalg.norm(x - c.y) <= np.linalg.norm(ref - c.y) + 10 * slack + 1e-9


@PROPS
@given(
    cases(),
    st.lists(st.lists(st.floats(-1.0, 2.0), min_size=8, max_size=8), min_size=5, max_size=5),
)
def test_no_feasible_point_is_closer(c: Case, others: list[list[float]]) -> None:
    x = _project(c)
    d = c.y.size
    for raw in others:
        p = _project(c, np.array(raw[:d]))  # some feasible point
        assert violation(p, c) <= 1e-9
        # Variational inequality characterising the projection: <y - x, p - x> <= 0.
        assert float(np.dot(c.y - x, p - x)) <= 1e-9
        assert np.linalg.norm(p - c.y) >= np.linalg.norm(x - c.y) - 1e-12


@PROPS
@given(cases())
def test_idempotent(c: Case) -> None:
    x = _project(c)
    np.testing.assert_allclose(_project(c, x), x, atol=1e-12, rtol=0)


@PROPS
@given(cases())
def test_feasible_points_do_not_move(c: Case) -> None:
    x = _project(c)  # a feasible point
    np.testing.assert_allclose(_project(c, x), x, atol=1e-12, rtol=0)


@PROPS
@given(cases(with_ball=False))
def test_l1_distance_is_exact(c: Case) -> None:
    d = c.y.size
    # min sum(t) s.t. t >= x - c, t >= c - x, sum(x) = 1, lower <= x <= upper.
    eye = np.eye(d)
    res = linprog(
        np.concatenate([np.zeros(d), np.ones(d)]),
        A_ub=np.block([[eye, -eye], [-eye, -eye]]),
        b_ub=np.concatenate([c.center, -c.center]),
        A_eq=np.concatenate([np.ones(d), np.zeros(d)])[None, :],
        b_eq=[1.0],
        bounds=[*zip(c.lower, c.upper, strict=True), *[(0, None)] * d],
        method="highs",
        options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10},
    )
    assert res.status == 0
    assert l1_distance_to_feasible(c.center, c.lower, c.upper) == pytest.approx(res.fun, abs=1e-8)


def test_known_answers() -> None:
    y = np.array([0.9, 0.1])
    assert project(y, np.array([0.0, 0.3]), np.ones(2)).tolist() == pytest.approx([0.7, 0.3])
    # Plain simplex projection.
    assert project(np.array([2.0, 0.0, 0.0]), np.zeros(3), np.ones(3)).tolist() == [1, 0, 0]
    # The ball pulls the point toward the centre by exactly the radius.
    x = project(np.array([1.0, 0.0]), np.zeros(2), np.ones(2), np.array([0.5, 0.5]), 0.4)
    assert x.tolist() == pytest.approx([0.7, 0.3])
    # Radius zero: the centre itself.
    c = np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(project(np.array([1.0, 0, 0]), np.zeros(3), np.ones(3), c, 0.0), c)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lower": [0.6, 0.6], "upper": [1, 1]}, "lower sums to 1.2 > 1"),
        ({"lower": [0, 0], "upper": [0.3, 0.3]}, "upper sums to 0.6 < 1"),
        ({"lower": [0.5, 0], "upper": [0.4, 1]}, "lower must be <= upper"),
        ({"lower": [0.6, 0], "upper": [1, 1], "center": [0, 1], "radius": 1.0}, "misses"),
        ({"lower": [0, 0], "upper": [1, 1], "center": [0.5, 0.5]}, "both center and radius"),
        ({"lower": [0, 0, 0], "upper": [1, 1]}, r"shape \(2,\)"),
        ({"lower": [0, float("nan")], "upper": [1, 1]}, "finite"),
        ({"lower": [0, 0], "upper": [1, 1], "center": [0.5, 0.5], "radius": -1}, "radius"),
    ],
)
def test_infeasible_or_malformed_input_raises(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        project(np.array([0.5, 0.5]), **kwargs)  # type: ignore[arg-type]
