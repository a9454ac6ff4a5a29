"""Conditional rules and actions: merging, precedence, feasibility, and the bound invariant."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from palm_middleware.exceptions import PolicyInfeasibleError, PolicyWarning
from palm_middleware.policy import parse_policy, policy_from_data
from palm_middleware.policy.conditions import RequestContext

from .strategies import simplex_points

TRAITS = ["safety", "helpfulness", "humor", "brevity"]
HEAD = """\
version: 2
traits: [safety, helpfulness, humor, brevity]
defaults: {weights: {safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}}
topics:
  politics: {keywords: [election]}
  selfharm: {keywords: [suicide]}
context: {cohorts: [adult, minor]}
bounds:
"""
W = np.array([0.05, 0.25, 0.6, 0.1])
POL = frozenset({"politics"})


def test_action_precedence_block_pin_default_clamp() -> None:
    p = parse_policy(
        HEAD
        + """\
  - {id: d, when: {topic: politics}, action: use_default}
  - {id: pin-org, when: {topic: selfharm}, action: pin, member: org-safe}
  - {id: pin-law, layer: law, when: {topic: selfharm}, action: pin, member: law-safe}
  - {id: blk, when: {all: [{topic: selfharm}, {cohort: minor}]}, action: block, message: blocked}
  - {id: cap, when: {topic: politics}, max: {humor: 0.2}}
""",
        "p.yaml",
    )
    ev = p.evaluate(RequestContext(topics=POL), W, evidence=50)
    assert ev.action == "use_default" and ev.clamp.used_default
    assert ev.clamp.weights.tolist() == pytest.approx([0.3, 0.4, 0.1, 0.2])
    assert ev.rules_fired[0] == "d"
    both = RequestContext(topics=POL | {"selfharm"})
    ev = p.evaluate(both, W, evidence=50)
    assert (ev.action, ev.member, ev.action_rule) == ("pin", "law-safe", "pin-law")  # law wins
    assert ev.clamp.weights[2] <= 0.2 + 1e-9  # the active cap still applies to the weights
    ev = p.evaluate(RequestContext(topics=frozenset({"selfharm"}), cohort="minor"), W, evidence=50)
    assert (ev.action, ev.message, ev.action_rule) == ("block", "blocked", "blk")
    ev = p.evaluate(RequestContext(), W, evidence=50)
    assert ev.action == "clamp" and ev.action_rule is None and ev.active == ()


def test_conditional_bounds_merge_stricter_wins() -> None:
    p = parse_policy(
        HEAD
        + """\
  - {id: floor, layer: law, min: {safety: 0.2}, max_step: 0.5}
  - {id: minors, layer: law, when: {cohort: minor}, min: {safety: 0.5}, exploration: false,
     min_events: 5, max_step: 0.1}
  - {id: weaker, layer: user, when: {cohort: minor}, min: {safety: 0.1}}
""",
        "p.yaml",
    )
    adult = p.evaluate(RequestContext(cohort="adult"), W, evidence=50)
    assert adult.clamp.weights[0] == pytest.approx(0.2)
    assert adult.exploration and adult.max_step == 0.5
    minor = p.evaluate(RequestContext(cohort="minor"), W, evidence=50)
    assert minor.clamp.weights[0] == pytest.approx(0.5)  # a lower layer cannot relax
    assert not minor.exploration and minor.max_step == 0.1
    assert minor.bounds.min_events == 5 and minor.bounds.sources.lower[0] == ("minors",)
    few = p.evaluate(RequestContext(cohort="minor"), W, evidence=2)
    assert few.clamp.used_default and few.clamp.weights[0] >= 0.5 - 1e-9  # default clamped too


def test_member_conditions_reach_a_fixed_point() -> None:
    p = parse_policy(
        HEAD
        + """\
  - {id: big-cap, when: {member: big}, max: {humor: 0.2}}
  - {id: small-block, when: {member: tiny}, action: block, message: unavailable}
""",
        "p.yaml",
    )

    def choose(w: Any) -> str:
        return "big" if w[2] > 0.3 else "small"

    ev = p.evaluate(RequestContext(), W, evidence=50, choose=choose)
    assert ev.active == ("big-cap",) and ev.clamp.weights[2] <= 0.2 + 1e-9
    assert choose(ev.clamp.weights) == "small"  # applied rules stay applied (stricter)
    ev = p.evaluate(RequestContext(), W, evidence=50, choose=lambda w: "tiny")
    assert ev.action == "block"
    assert p.condition_members() == {"big-cap": {"big"}, "small-block": {"tiny"}}


def test_conflicting_conditional_rules_are_named() -> None:
    text = (
        HEAD
        + """\
  - {id: minors, when: {cohort: minor}, min: {humor: 0.6}}
  - {id: politics, when: {topic: politics}, max: {humor: 0.2}}
"""
    )
    with pytest.raises(PolicyInfeasibleError) as info:
        parse_policy(text, "p.yaml")
    assert set(info.value.rule_ids) == {"minors", "politics"}
    assert "checked as if they all applied at once" in str(info.value)
    assert "p.yaml:9:" in str(info.value)


def test_v1_version_hash_unchanged_by_v2() -> None:
    # The hash printed for policies/default.yaml (v1) before version 2 existed.
    from pathlib import Path

    from palm_middleware.policy import load_policy

    v1 = Path(__file__).resolve().parents[2] / "tests/policy/data/default_v1.yaml"
    assert load_policy(v1).version == "2681778a83df"


def test_conditional_floor_above_default_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PolicyWarning)
        parse_policy(HEAD + "  - {id: m, when: {cohort: minor}, min: {safety: 0.6}}\n", "p.yaml")


def test_v1_policy_is_a_subset_and_keeps_its_version() -> None:
    v1 = (
        "version: 1\nname: x\ntraits: [a, b]\ndefaults: {weights: {a: 0.5, b: 0.5}}\n"
        "bounds:\n  - {id: f, min: {a: 0.2}}\n"
    )
    p = parse_policy(v1, "v1.yaml")
    assert not p.has_conditions
    ev = p.evaluate(RequestContext(), np.array([0.1, 0.9]), evidence=5)
    assert ev.clamp.weights.tolist() == pytest.approx([0.2, 0.8]) and ev.action == "clamp"
    v2 = parse_policy(v1.replace("version: 1", "version: 2"), "v2.yaml")
    assert v2.lower.tolist() == p.lower.tolist()
    assert policy_from_data(v2.to_dict()).version == v2.version


# -- property: every decision satisfies every active bound --------------------------------------

_CONDS = [
    None,
    "{cohort: minor}",
    "{cohort: adult}",
    "{topic: politics}",
    "{topic: {in: [politics, selfharm]}}",
    "{not: {cohort: minor}}",
    "{any: [{cohort: minor}, {topic: selfharm}]}",
]
_ACTIONS = [None, None, None, "use_default", "pin", "block"]


@st.composite
def policies(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]]]:
    """A feasible random v2 policy: every bound admits a common anchor point."""
    anchor = draw(simplex_points(4))
    rules: list[dict[str, Any]] = []
    lines = []
    for i in range(draw(st.integers(1, 8))):
        cond = draw(st.sampled_from(_CONDS))
        action = draw(st.sampled_from(_ACTIONS))
        rule: dict[str, Any] = {"id": f"r{i}", "when": cond, "action": action}
        parts = [f"id: r{i}", f"layer: {draw(st.sampled_from(['law', 'org', 'user']))}"]
        if cond:
            parts.append(f"when: {cond}")
        if action == "pin":
            parts += ["action: pin", "member: m1"]
        elif action == "block":
            parts += ["action: block", "message: blocked"]
        elif action == "use_default":
            parts.append("action: use_default")
        t = draw(st.integers(0, 3))
        kind = draw(st.sampled_from(["min", "max", "drift", "none"]))
        if kind == "min" or (kind == "none" and action is None):
            v = round(anchor[t] * draw(st.floats(0, 1)), 4)
            rule["min"] = (t, v)
            parts.append(f"min: {{{TRAITS[t]}: {v}}}")
        elif kind == "max":
            v = round(min(1.0, anchor[t] + (1 - anchor[t]) * draw(st.floats(0, 1)) + 1e-4), 4)
            rule["max"] = (t, v)
            parts.append(f"max: {{{TRAITS[t]}: {v}}}")
        elif kind == "drift":
            dflt = np.array([0.3, 0.4, 0.1, 0.2])
            dist = float(np.abs(anchor - dflt).sum())
            v = round(min(2.0, dist + 1e-3 + draw(st.floats(0, 1))), 4)
            rule["drift"] = v
            parts.append(f"max_l1_from_default: {v}")
        rules.append(rule)
        lines.append("  - {" + ", ".join(parts) + "}")
    return HEAD + "\n".join(lines) + "\n", rules


@given(
    policies(),
    simplex_points(4),
    st.sets(st.sampled_from(["politics", "selfharm"])),
    st.sampled_from([None, "minor", "adult"]),
    st.floats(0, 50),
)
def test_every_decision_satisfies_every_active_bound(
    pol: tuple[str, list[dict[str, Any]]],
    w: Any,
    topics: set[str],
    cohort: str | None,
    evidence: float,
) -> None:
    text, rules = pol
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PolicyWarning)
        p = parse_policy(text, "rand.yaml")
    ctx = RequestContext(topics=frozenset(topics), cohort=cohort)
    ev = p.evaluate(ctx, w, evidence=evidence)
    x = ev.clamp.weights
    active = set(p.active_rules(ctx))
    assert abs(x.sum() - 1) < 1e-9 and x.min() >= -1e-12
    for r in rules:
        if r["id"] not in active:
            continue
        if "min" in r:
            assert x[r["min"][0]] >= r["min"][1] - 1e-9
        if "max" in r:
            assert x[r["max"][0]] <= r["max"][1] + 1e-9
        if "drift" in r:
            assert np.abs(x - np.array([0.3, 0.4, 0.1, 0.2])).sum() <= r["drift"] + 1e-9
        if r["action"] == "block":
            assert ev.action == "block"
        if r["action"] == "use_default" and ev.action == "use_default":
            assert ev.clamp.used_default
    if any(r["action"] == "pin" and r["id"] in active for r in rules) and ev.action != "block":
        assert ev.action == "pin" and ev.member == "m1"
