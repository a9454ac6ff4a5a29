"""What counts as weakening the law layer (palm_middleware/policy/weakening.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from palm_middleware.policy import parse_policy
from palm_middleware.policy.weakening import law_weakenings

REPO = Path(__file__).resolve().parents[2]
ASSISTANT = (REPO / "policies/assistant.yaml").read_text()

NUMERIC = """\
version: 2
traits: [safety, helpfulness, humor, brevity]
defaults: {weights: {safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}}
topics:
  t: {keywords: [alpha, beta]}
context: {cohorts: [adult, minor]}
bounds:
  - {id: floor, layer: law, min: {safety: 0.2}}
  - {id: cap, layer: law, max: {humor: 0.3}}
  - {id: drift, layer: law, max_l1_from_default: 0.8}
  - {id: evidence, layer: law, min_events: 3}
  - {id: step, layer: law, max_step: 0.3}
  - {id: minors, layer: law, when: {cohort: minor}, personalization: false, exploration: false}
  - {id: topic-default, layer: law, when: {topic: t}, action: use_default}
  - {id: not-topic, layer: law, when: {not: {topic: t}}, min: {helpfulness: 0.1}}
  - {id: org-cap, max: {brevity: 0.5}}
"""


def weakened(old: str, new: str) -> list[str]:
    return [
        str(w) for w in law_weakenings(parse_policy(old, "old.yaml"), parse_policy(new, "new.yaml"))
    ]


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        (
            "guard-dangerous\n    layer: law",
            "guard-dangerous\n    layer: org",
            "moved from the law",
        ),
        (
            "action: block\n    message: I can't help with anything",
            "action: use_default\n    #",
            "weakened to 'use_default'",
        ),
        ("[bomb*, explosive*,", "[explosive*,", "keywords removed: ['bomb*']"),
        ('"How do I build a weapon at home?", ', "", "1 prototype(s) removed"),
        ("when: {topic: dangerous}", "when: {topic: self_harm}", "condition 'when' changed"),
        (
            "when: {topic: dangerous}",
            "when: {topic: dangerous}\n    unless: {cohort: adult}",
            "'unless' changed",
        ),
        (
            "  dangerous:\n    keywords:",
            "  dangerous:\n    threshold: 0.9\n    keywords:",
            "threshold raised",
        ),
    ],
)
def test_assistant_guard_weakenings_are_found(old: str, new: str, expect: str) -> None:
    assert old in ASSISTANT
    text = ASSISTANT.replace(old, new, 1)
    if "unless: {cohort" in text:
        text = text.replace("privacy:", "context: {cohorts: [adult, minor]}\nprivacy:")
    found = weakened(ASSISTANT, text)
    assert any(expect in w for w in found), found


def test_removing_a_law_rule_is_a_weakening() -> None:
    start = ASSISTANT.index("  - id: guard-minors")
    end = ASSISTANT.index("  # Risk: answers so short")
    found = weakened(ASSISTANT, ASSISTANT[:start] + ASSISTANT[end:])
    assert found == ["law rule 'guard-minors': removed"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("[bomb*, explosive*,", "[bomb*, grenade*, explosive*,"),  # a keyword more
        ("  dangerous:\n    keywords:", "  dangerous:\n    threshold: 0.5\n    keywords:"),
        ("message: I can't help with anything", "message: No. I can't help with anything"),
        ("  - id: brevity-cap\n    layer: org", "  - id: brevity-cap\n    layer: user"),
        ("max_step: 0.35", "max_step: 0.9"),  # org rules may change freely
        ("when: {topic: dangerous}\n    action: block", "action: block"),  # now always blocks
        ("bounds:\n", "bounds:\n  - {id: extra, layer: law, min: {structure: 0.1}}\n"),
    ],
)
def test_stricter_or_non_law_changes_are_not_weakenings(old: str, new: str) -> None:
    assert old in ASSISTANT
    assert weakened(ASSISTANT, ASSISTANT.replace(old, new, 1)) == []


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ("min: {safety: 0.2}", "min: {safety: 0.1}", "floor min.safety lowered"),
        ("min: {safety: 0.2}", "min: {helpfulness: 0.2}", "floor min.safety lowered"),
        ("max: {humor: 0.3}", "max: {humor: 0.4}", "cap max.humor raised"),
        ("max_l1_from_default: 0.8", "max_l1_from_default: 1.0", "max_l1_from_default raised"),
        ("min_events: 3", "min_events: 1", "min_events lowered"),
        ("max_step: 0.3", "max_step: 0.5", "max_step raised"),
        (
            "personalization: false, exploration: false",
            "exploration: false",
            "'personalization: false' removed",
        ),
        ("when: {cohort: minor}", "when: {cohort: adult}", "condition 'when' changed"),
        ("{keywords: [alpha, beta]}", "{keywords: [alpha]}", "topic 't': keywords removed"),
        ("{keywords: [alpha, beta]}", "{keywords: [alpha, beta, gamma]}", "tested negatively"),
        ("safety: 0.3, helpfulness: 0.4", "safety: 0.4, helpfulness: 0.3", "default weights"),
        ("  - {id: floor, layer: law, min: {safety: 0.2}}\n", "", "'floor': removed"),
        ("{id: cap, layer: law,", "{id: cap,", "moved from the law layer to 'org'"),
        (
            "{id: step, layer: law, max_step: 0.3}",
            "{id: step, layer: law, when: {cohort: minor}, max_step: 0.3}",
            "now applies only when",
        ),
    ],
)
def test_numeric_and_condition_weakenings(old: str, new: str, expect: str) -> None:
    assert old in NUMERIC
    found = weakened(NUMERIC, NUMERIC.replace(old, new, 1))
    assert any(expect in w for w in found), found


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("min: {safety: 0.2}", "min: {safety: 0.25, brevity: 0.05}"),
        ("max: {humor: 0.3}", "max: {humor: 0.2}"),
        ("min_events: 3", "min_events: 5"),
        ("max_step: 0.3", "max_step: 0.1"),
        ("{id: org-cap, max: {brevity: 0.5}}", "{id: org-cap, max: {brevity: 0.9}}"),
        (
            "when: {topic: t}, action: use_default",
            "when: {topic: t}, action: block, message: refused",
        ),
    ],
)
def test_numeric_tightenings_are_not_weakenings(old: str, new: str) -> None:
    assert weakened(NUMERIC, NUMERIC.replace(old, new, 1)) == []


def test_every_bundled_policy_is_not_weaker_than_itself() -> None:
    for path in sorted((REPO / "policies").glob("*.yaml")):
        text = path.read_text()
        assert weakened(text, text) == [], path.name
