"""Hypothesis strategies for feasible bound sets (shared by the projection and clamp tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from palm_middleware.policy import l1_distance_to_feasible
from palm_middleware.types import FloatArray

UNIT = st.floats(0.0, 1.0, allow_nan=False)


@dataclass
class Case:
    """A non-empty simplex ∩ box ∩ L1 ball, plus a point to project."""

    lower: FloatArray
    upper: FloatArray
    center: FloatArray
    radius: float | None
    y: FloatArray


@st.composite
def simplex_points(draw: st.DrawFn, d: int) -> FloatArray:
    """A point of the simplex, often on a face (some coordinates exactly 0)."""
    raw = np.array(draw(st.lists(UNIT, min_size=d, max_size=d)))
    zero = np.array(draw(st.lists(st.booleans(), min_size=d, max_size=d)))
    raw[zero] = 0.0
    if raw.sum() <= 1e-3:
        raw[draw(st.integers(0, d - 1))] = 1.0
    return np.asarray(raw / raw.sum(), dtype=np.float64)


@st.composite
def cases(draw: st.DrawFn, *, with_ball: bool | None = None) -> Case:
    """A feasible bound set (box around an anchor on the simplex, ball reaching the box)."""
    d = draw(st.integers(2, 8))
    anchor = draw(simplex_points(d))
    center = draw(simplex_points(d))
    shrink_lo = np.array(draw(st.lists(UNIT, min_size=d, max_size=d)))
    grow_up = np.array(draw(st.lists(UNIT, min_size=d, max_size=d)))
    has_lo = np.array(draw(st.lists(st.booleans(), min_size=d, max_size=d)))
    has_up = np.array(draw(st.lists(st.booleans(), min_size=d, max_size=d)))
    lower = np.where(has_lo, anchor * shrink_lo, 0.0)
    upper = np.where(has_up, anchor + (1.0 - anchor) * grow_up, 1.0)
    ball = draw(st.booleans()) if with_ball is None else with_ball
    radius: float | None = None
    if ball:
        dist = l1_distance_to_feasible(center, lower, upper)
        extra = draw(st.one_of(st.just(0.0), st.floats(0.0, 1.0)))
        radius = min(2.0, dist + extra)
    y = np.array(draw(st.lists(st.floats(-1.0, 2.0), min_size=d, max_size=d)))
    if draw(st.booleans()):  # weights as the clamp sees them: on the simplex
        y = draw(simplex_points(d))
    return Case(lower, upper, center, radius, y)


def violation(x: FloatArray, c: Case) -> float:
    """Largest violation of any constraint of ``c`` by ``x`` (0 when feasible)."""
    v = [
        abs(float(x.sum()) - 1.0),
        float(np.max(c.lower - x)),
        float(np.max(x - c.upper)),
        0.0,
    ]
    if c.radius is not None:
        v.append(float(np.abs(x - c.center).sum()) - c.radius)
    return max(v)
