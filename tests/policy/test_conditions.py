"""The when: condition language: load-time checks located file:line:col, and evaluation."""

from __future__ import annotations

import pytest

from palm_middleware.exceptions import PolicyValidationError
from palm_middleware.policy import BoundsPolicy, parse_policy
from palm_middleware.policy.conditions import RequestContext

HEAD = """\
version: 2
traits: [safety, helpfulness, humor, brevity]
defaults: {weights: {safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}}
topics:
  politics: {keywords: [election]}
  health: {keywords: [doctor]}
context: {cohorts: [adult, minor], channels: [web, api], attributes: {plan: [free, pro], org: null}}
bounds:
"""


def _policy(rule: str) -> BoundsPolicy:
    return parse_policy(HEAD + "  - " + rule + "\n", "org.yaml")


def _holds(cond: str, ctx: RequestContext) -> bool:
    p = _policy("{id: r, when: " + cond + ", action: use_default}")
    return bool(p.active_rules(ctx) == ("r",))


@pytest.mark.parametrize(
    ("cond", "ctx", "expected"),
    [
        ("{topic: politics}", RequestContext(topics=frozenset({"politics"})), True),
        ("{topic: politics}", RequestContext(topics=frozenset({"health"})), False),
        ("{topic: {in: [politics, health]}}", RequestContext(topics=frozenset({"health"})), True),
        ("{topic: {all: [politics, health]}}", RequestContext(topics=frozenset({"health"})), False),
        ("{topic: {not_in: [politics]}}", RequestContext(), True),
        ("{topic: {exists: true}}", RequestContext(), False),
        ("{cohort: minor}", RequestContext(cohort="minor"), True),
        ("{cohort: minor}", RequestContext(cohort=None), False),
        ("{cohort: {ne: minor}}", RequestContext(cohort="adult"), True),
        ("{metadata.channel: {in: [web]}}", RequestContext(channel="web"), True),
        ("{channel: {not_in: [web]}}", RequestContext(channel="api"), True),
        ("{metadata.plan: free}", RequestContext(attributes={"plan": "free"}), True),
        ("{metadata.org: {exists: true}}", RequestContext(attributes={"org": "acme"}), True),
        ("{member: a}", RequestContext(member="a"), True),
        ('{time: {between: ["22:00", "06:00"]}}', RequestContext(minute=23 * 60), True),
        ('{time: {between: ["22:00", "06:00"]}}', RequestContext(minute=5 * 60 + 59), True),
        ('{time: {between: ["22:00", "06:00"]}}', RequestContext(minute=6 * 60), False),
        ('{time: {between: ["09:00", "17:00"]}}', RequestContext(minute=None), False),
        ("{weekday: {in: [sat, sun]}}", RequestContext(weekday=5), True),
        (
            "{all: [{cohort: minor}, {topic: health}]}",
            RequestContext(cohort="minor", topics=frozenset({"health"})),
            True,
        ),
        ("{any: [{cohort: minor}, {topic: health}]}", RequestContext(cohort="adult"), False),
        ("{not: {cohort: minor}}", RequestContext(cohort="adult"), True),
        ("{cohort: minor, channel: web}", RequestContext(cohort="minor", channel="api"), False),
    ],
)
def test_condition_semantics(cond: str, ctx: RequestContext, expected: bool) -> None:
    assert _holds(cond, ctx) is expected


def test_unless() -> None:
    p = _policy("{id: r, when: {topic: health}, unless: {cohort: adult}, action: use_default}")
    assert p.active_rules(RequestContext(topics=frozenset({"health"}))) == ("r",)
    assert p.active_rules(RequestContext(topics=frozenset({"health"}), cohort="adult")) == ()


@pytest.mark.parametrize(
    ("cond", "pattern"),
    [
        (
            "{topc: politics}",
            r"org\.yaml:9:\d+: rule 'r': bounds\[0\]\.when\.topc: unknown "
            r"condition field 'topc'",
        ),
        ("{topic: religion}", r"org\.yaml:9:\d+: rule 'r': .*unknown topic label .*'religion'"),
        ("{cohort: child}", r"unknown cohort 'child'; known: \['adult', 'minor'\]"),
        ("{metadata.tier: gold}", r"attribute 'tier' is not declared in context\.attributes"),
        ("{metadata.plan: gold}", r"unknown metadata\.plan 'gold'"),
        ("{topic: [politics]}", r"a list needs an operator: \{in: \['politics'\]\}"),
        ("{topic: {has: politics}}", r"when\.topic\.has: topic: unknown operator 'has'"),
        ('{time: {between: ["25:00", "06:00"]}}', r"expected 'HH:MM'"),
        ("{all: []}", r"'all' needs a non-empty list"),
        ("{not: 3}", r"a condition must be a non-empty mapping"),
        ("{weekday: funday}", r"unknown weekday 'funday'"),
        ("{cohort: {in: []}}", r"the list is empty"),
    ],
)
def test_bad_conditions_are_located(cond: str, pattern: str) -> None:
    with pytest.raises(PolicyValidationError, match=pattern):
        _policy("{id: r, when: " + cond + ", action: use_default}")


def test_all_condition_issues_at_once() -> None:
    text = (
        HEAD + "  - {id: a, when: {topc: x}, action: use_default}\n"
        "  - {id: b, when: {cohort: kid}, action: use_default}\n"
    )
    with pytest.raises(PolicyValidationError) as info:
        parse_policy(text, "org.yaml")
    assert [i.rule_id for i in info.value.issues] == ["a", "b"]
    assert [i.line for i in info.value.issues] == [9, 10]


def test_trace_shows_each_part() -> None:
    p = _policy("{id: r, when: {all: [{cohort: minor}, {topic: health}]}, action: use_default}")
    lines = p.conditions["r"].trace(RequestContext(cohort="minor"))
    assert lines == [
        "[false] all of",
        "  [true] cohort == 'minor'",
        "  [false] topic in ['health']",
    ]
