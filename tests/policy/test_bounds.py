"""BoundsPolicy.clamp: every bound holds, feasible weights pass unchanged, rules fired are cited."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from palm_middleware.exceptions import (
    InvalidParameterError,
    InvalidWeightsError,
    PolicyInfeasibleError,
    PolicyWarning,
)
from palm_middleware.policy import (
    GLOBAL_PERSONALIZATION,
    BoundsPolicy,
    default_policy,
    l1_distance_to_feasible,
    parse_policy,
    policy_from_data,
    project,
)
from palm_middleware.traits import TraitSpace, WeightVector
from palm_middleware.types import FloatArray

from .conftest import EXAMPLE, HEADER
from .strategies import UNIT, Case, cases, simplex_points, violation

PROPS = settings(max_examples=200, deadline=None, derandomize=True)


def _policy_data(c: Case, split: float = 0.5) -> dict[str, Any]:
    """A policy whose merged bounds are exactly those of ``c``; each bound is set by one strict
    rule and shadowed by a weaker one, to exercise merging."""
    d = c.lower.size
    traits = [f"t{i}" for i in range(d)]
    rules: list[dict[str, Any]] = []
    floors = {t: float(v) for t, v in zip(traits, c.lower, strict=True) if v > 0}
    caps = {t: float(v) for t, v in zip(traits, c.upper, strict=True) if v < 1}
    if floors:
        rules.append({"id": "weak-floors", "min": {t: v * split for t, v in floors.items()}})
        rules.append({"id": "floors", "layer": "law", "min": floors})
    if caps:
        rules.append({"id": "caps", "max": caps})
        rules.append(
            {
                "id": "weak-caps",
                "layer": "user",
                "max": {t: v + (1 - v) * split for t, v in caps.items()},
            }
        )
    if c.radius is not None:
        rules.append({"id": "drift", "max_l1_from_default": c.radius})
        rules.append({"id": "weak-drift", "max_l1_from_default": min(2.0, c.radius + split)})
    return {
        "version": 1,
        "traits": traits,
        "defaults": {"weights": dict(zip(traits, map(float, c.center), strict=True))},
        "bounds": rules,
    }


def _load(data: dict[str, Any]) -> BoundsPolicy:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PolicyWarning)  # defaults outside the box are allowed
        return policy_from_data(data)


def _to_simplex(y: FloatArray) -> FloatArray:
    """``y`` itself when it is on the simplex, else a nearby simplex point (clamp's input)."""
    if abs(y.sum() - 1) < 1e-12 and y.min() >= 0:
        return y
    a = np.abs(y)
    return a / a.sum() if a.sum() > 0 else np.full(y.size, 1.0 / y.size)


@PROPS
@given(cases(), st.floats(0.01, 0.99))
def test_clamp_satisfies_every_bound(c: Case, split: float) -> None:
    policy = _load(_policy_data(c, split))
    np.testing.assert_array_equal(policy.lower, c.lower)
    np.testing.assert_array_equal(policy.upper, c.upper)
    assert policy.max_drift == c.radius
    w = _to_simplex(c.y)
    r = policy.clamp(w, evidence=10.0)
    center = policy.default.values
    case = Case(c.lower, c.upper, center, c.radius, w)
    assert violation(r.weights, case) <= 1e-9
    assert r.weights.min() >= -1e-12
    assert not r.used_default
    # clamp is the projection (the same exact solution as the public function).
    if c.radius is None:
        expected = project(w, c.lower, c.upper)
    else:
        expected = project(w, c.lower, c.upper, center, c.radius)
    np.testing.assert_allclose(r.weights, expected, atol=1e-12, rtol=0)
    # Only the strictest rules are ever cited, in policy order.
    assert set(r.rules_fired) <= {"floors", "caps", "drift"}
    order = [rule.id for rule in policy.rules]
    assert list(r.rules_fired) == sorted(r.rules_fired, key=order.index)
    if r.rules_fired:
        assert np.abs(r.weights - w).max() > 1e-10  # a fired rule moved the point


@PROPS
@given(cases())
def test_feasible_weights_are_returned_unchanged(c: Case) -> None:
    policy = _load(_policy_data(c))
    w = policy.clamp(_to_simplex(c.y), evidence=1.0).weights
    again = policy.clamp(w, evidence=1.0)
    np.testing.assert_array_equal(again.weights, w)
    assert again.rules_fired == () and again.reason == "within bounds"


@PROPS
@given(cases())
def test_default_path_satisfies_every_bound(c: Case) -> None:
    data = _policy_data(c)
    data["bounds"].append({"id": "evidence", "min_events": 5})
    policy = _load(data)
    r = policy.clamp(np.full(c.y.size, 1.0 / c.y.size), evidence=4.99)
    assert r.used_default and "evidence" in r.rules_fired
    assert set(r.rules_fired) <= {"floors", "caps", "drift", "evidence"}
    case = Case(c.lower, c.upper, policy.default.values, c.radius, c.y)
    assert violation(r.weights, case) <= 1e-9


# -- infeasible policies are always rejected --------------------------------------------------


@st.composite
def _traits_and_default(draw: st.DrawFn) -> tuple[list[str], FloatArray]:
    d = draw(st.integers(2, 8))
    return [f"t{i}" for i in range(d)], draw(simplex_points(d))


def _data(traits: list[str], default: FloatArray, rules: list[dict[str, Any]]) -> dict[str, Any]:
    weights = dict(zip(traits, map(float, default), strict=True))
    return {"version": 1, "traits": traits, "defaults": {"weights": weights}, "bounds": rules}


@PROPS
@given(_traits_and_default(), st.data())
def test_floors_above_one_rejected(td: tuple[list[str], FloatArray], data: st.DataObject) -> None:
    traits, default = td
    floors = np.array(data.draw(st.lists(UNIT, min_size=len(traits), max_size=len(traits))))
    assume(floors.sum() > 1 + 1e-6)
    # Spread the floors over one rule per trait.
    pairs = enumerate(zip(traits, floors, strict=True))
    rules = [{"id": f"f{i}", "min": {t: float(v)}} for i, (t, v) in pairs if v > 0]
    with pytest.raises(PolicyInfeasibleError, match="floors sum to") as info:
        _load(_data(traits, default, rules))
    assert info.value.rule_ids[: len(rules)] == [r["id"] for r in rules]


@PROPS
@given(_traits_and_default(), st.data())
def test_caps_below_one_rejected(td: tuple[list[str], FloatArray], data: st.DataObject) -> None:
    traits, default = td
    caps = np.array(data.draw(st.lists(UNIT, min_size=len(traits), max_size=len(traits))))
    assume(caps.sum() < 1 - 1e-6)
    rules = [{"id": "caps", "max": dict(zip(traits, map(float, caps), strict=True))}]
    with pytest.raises(PolicyInfeasibleError, match="caps sum to") as info:
        _load(_data(traits, default, rules))
    assert "caps" in info.value.rule_ids


@PROPS
@given(_traits_and_default(), st.data())
def test_floor_above_cap_rejected(td: tuple[list[str], FloatArray], data: st.DataObject) -> None:
    traits, default = td
    i = data.draw(st.integers(0, len(traits) - 1))
    cap = data.draw(st.floats(0.0, 0.99))
    floor = data.draw(st.floats(cap + 1e-6, 1.0))
    rules = [{"id": "cap", "max": {traits[i]: cap}}, {"id": "floor", "min": {traits[i]: floor}}]
    with pytest.raises(PolicyInfeasibleError, match="is above its cap") as info:
        _load(_data(traits, default, rules))
    assert info.value.rule_ids[:2] == ["floor", "cap"]


@PROPS
@given(cases(with_ball=False), st.floats(1e-6, 1.0))
def test_drift_too_small_rejected(c: Case, short: float) -> None:
    center = WeightVector(TraitSpace([f"t{i}" for i in range(c.y.size)]), c.center).values
    dist = l1_distance_to_feasible(center, c.lower, c.upper)
    assume(dist > 2e-6)
    radius = dist * (1 - short) if short < 1 else 0.0
    assume(dist - radius > 1e-6)
    data = _policy_data(Case(c.lower, c.upper, center, None, c.y))
    data["bounds"].append({"id": "drift", "max_l1_from_default": radius})
    with pytest.raises(PolicyInfeasibleError, match="max_l1_from_default") as info:
        _load(data)
    assert info.value.rule_ids[0] == "drift"
    assert set(info.value.rule_ids[1:]) <= {"floors", "caps"} and len(info.value.rule_ids) > 1


# -- the decision paths ---------------------------------------------------------------------


def _example(**replace: str) -> BoundsPolicy:
    text = EXAMPLE
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_policy(text, "org.yaml")


def test_personalization_off_by_rule_serves_default() -> None:
    p = _example()
    r = p.clamp(np.array([0.0, 0.0, 1.0, 0.0]), evidence=100)
    assert r.used_default and r.rules_fired == ("no-personalization",)
    np.testing.assert_array_equal(r.weights, p.default.values)
    assert "personalization is off (rule 'no-personalization')" in r.reason


def test_personalization_off_globally_cites_the_switch() -> None:
    p = parse_policy(HEADER.replace("bounds:\n", "personalization: false\n"), "g.yaml")
    r = p.clamp(np.array([0.25] * 4), evidence=100)
    assert r.used_default and r.rules_fired == (GLOBAL_PERSONALIZATION,)


def test_min_events_serves_default_until_enough_evidence() -> None:
    p = _example(**{"  - id: no-personalization\n    personalization: false\n": ""})
    w = np.array([0.2, 0.2, 0.3, 0.3])
    r = p.clamp(w, evidence=2.9)
    assert r.used_default and r.rules_fired == ("min-evidence",)
    assert "evidence 2.9 < 3 required (rule 'min-evidence')" in r.reason
    r = p.clamp(w, evidence=3)
    assert not r.used_default and r.rules_fired == ()
    np.testing.assert_array_equal(r.weights, w)


def test_caller_opt_out() -> None:
    p = default_policy(TraitSpace(["a", "b"]))
    r = p.clamp(np.array([1.0, 0.0]), evidence=50, personalized=False)
    assert r.used_default and r.rules_fired == () and r.weights.tolist() == [0.5, 0.5]


def test_rules_fired_in_policy_order_and_reason() -> None:
    text = HEADER + (
        "  - {id: humor-cap, max: {humor: 0.15}}\n"
        "  - {id: safety-floor, layer: law, min: {safety: 0.25}}\n"
        "  - {id: max-drift, max_l1_from_default: 0.3}\n"
    )
    p = parse_policy(text, "o.yaml")
    r = p.clamp(np.array([0.0, 0.5, 0.5, 0.0]), evidence=1)
    assert r.rules_fired == ("humor-cap", "safety-floor", "max-drift")
    assert r.reason == "clamped by rules 'humor-cap', 'safety-floor', 'max-drift'"
    np.testing.assert_allclose(r.weights, [0.25, 0.5, 0.15, 0.1], atol=1e-12)
    assert np.abs(r.weights - p.default.values).sum() <= 0.3 + 1e-12


def test_result_is_read_only() -> None:
    p = _example(**{"  - id: no-personalization\n    personalization: false\n": ""})
    for w in ([0.25] * 4, [0.0, 0.0, 1.0, 0.0]):
        r = p.clamp(np.array(w), evidence=10)
        with pytest.raises(ValueError, match="read-only"):
            r.weights[0] = 1.0


def test_accepts_weight_vectors_and_lists() -> None:
    p = default_policy(TraitSpace(["a", "b"]))
    assert p.clamp([0.3, 0.7], evidence=1).weights.tolist() == [0.3, 0.7]
    wv = WeightVector(p.space, [0.3, 0.7])
    assert p.clamp(wv, evidence=1).weights.tolist() == [0.3, 0.7]
    with pytest.raises(InvalidWeightsError, match="traits"):
        p.clamp(WeightVector(TraitSpace(["a", "c"]), [0.3, 0.7]), evidence=1)


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([0.5, float("nan"), 0.5], "finite"),
        ([0.5, 0.5], "one entry per trait"),
        ([[0.5, 0.25, 0.25]], "one entry per trait"),
        ([1.5, -0.5, 0.0], "non-negative"),
        ([0.5, 0.5, 0.5], "sum to 1"),
        (["a", "b", "c"], "array of numbers"),
    ],
)
def test_invalid_weights(weights: Any, match: str) -> None:
    p = default_policy(TraitSpace(["a", "b", "c"]))
    with pytest.raises(InvalidWeightsError, match=match):
        p.clamp(weights, evidence=1)


@pytest.mark.parametrize("evidence", [float("nan"), -1.0, float("inf"), True, "3"])
def test_invalid_evidence(evidence: Any) -> None:
    p = default_policy(TraitSpace(["a", "b"]))
    with pytest.raises(InvalidParameterError, match="evidence"):
        p.clamp([0.5, 0.5], evidence=evidence)
