"""``fallback_members``: a failed member's stand-ins are the policy's next best, never arbitrary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from palm_middleware import ExplicitWeights, MemoryStore, Palm, load_policy, load_portfolio
from palm_middleware.fallback import fallback_members

TRAITS = ["safety", "helpfulness", "humor", "brevity"]
PORTFOLIO = {
    "version": 1,
    "name": "fallback-test",
    "traits": TRAITS,
    "default_member": "balanced",
    "members": [
        {
            "id": "balanced",
            "backend": {"kind": "onnx", "path": "m/balanced"},
            "reward": {"safety": 0.84, "helpfulness": 0.78, "humor": 0.38, "brevity": 0.55},
        },
        {
            "id": "remote",
            "backend": {"kind": "litellm", "model": "remote"},
            "reward": {"safety": 0.70, "helpfulness": 0.70, "humor": 0.97, "brevity": 0.45},
        },
        {
            "id": "playful",
            "backend": {"kind": "onnx", "path": "m/playful"},
            "reward": {"safety": 0.66, "helpfulness": 0.64, "humor": 0.92, "brevity": 0.40},
        },
        {
            "id": "terse",
            "backend": {"kind": "onnx", "path": "m/terse"},
            "reward": {"safety": 0.74, "helpfulness": 0.50, "humor": 0.12, "brevity": 0.96},
        },
    ],
}
POLICY = """\
version: 2
name: fallback-test
traits: [safety, helpfulness, humor, brevity]
defaults:
  weights: {safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}
  prior_strength: 10
personalization: true
exploration: false
topics:
  grief: {keywords: [funeral]}
bounds:
  - id: safety-floor
    layer: law
    min: {safety: 0.1}
  - id: no-playful-for-minors
    when: {member: playful, cohort: minor}
    action: block
    message: not for minors
  - id: grief-pin
    when: {topic: grief}
    action: pin
    member: balanced
"""
HUMOR = {"safety": 0.15, "helpfulness": 0.1, "humor": 0.7, "brevity": 0.05}


@pytest.fixture
def palm(tmp_path: Path) -> Palm:
    (tmp_path / "portfolio.yaml").write_text(yaml.safe_dump(PORTFOLIO, sort_keys=False))
    (tmp_path / "policy.yaml").write_text(POLICY)
    portfolio = load_portfolio(tmp_path / "portfolio.yaml")
    policy = load_policy(tmp_path / "policy.yaml")
    palm = Palm(portfolio, policy, MemoryStore(), embedder=None)
    palm.record_feedback("u", ExplicitWeights(weights=HUMOR, confidence=1.0))
    return palm


def ranked(palm: Palm, weights: dict[str, float]) -> list[str]:
    values = palm.portfolio.rewards @ np.array([weights[t] for t in TRAITS])
    return [palm.portfolio.ids[i] for i in np.argsort(-values, kind="stable")]


def test_stand_ins_are_ranked_by_the_decisions_clamped_weights(palm: Palm) -> None:
    messages = [{"role": "user", "content": "tell me a joke"}]
    decision = palm.decide("u", messages)
    assert decision.member == "remote"
    ctx = palm.context(messages, now=decision.ts)
    got = fallback_members(palm.portfolio, palm.policy, ctx, decision)
    assert got == tuple(m for m in ranked(palm, decision.weights) if m != "remote")
    assert got[0] == "playful"


def test_a_member_the_policy_forbids_for_this_request_is_skipped(palm: Palm) -> None:
    messages = [{"role": "user", "content": "tell me a joke"}]
    meta = {"cohort": "minor"}
    decision = palm.decide("u", messages, meta)
    assert decision.member == "remote"
    ctx = palm.context(messages, meta, now=decision.ts)
    got = fallback_members(palm.portfolio, palm.policy, ctx, decision)
    assert "playful" not in got  # next best by value, but it would trigger a block for minors
    assert got == tuple(m for m in ranked(palm, decision.weights) if m not in ("remote", "playful"))


def test_pinned_or_stale_decisions_have_no_stand_in(palm: Palm) -> None:
    messages = [{"role": "user", "content": "planning a funeral"}]
    decision = palm.decide("u", messages)
    assert decision.action == "pin" and decision.member == "balanced"
    ctx = palm.context(messages, now=decision.ts)
    assert fallback_members(palm.portfolio, palm.policy, ctx, decision) == ()
    joke = [{"role": "user", "content": "a joke"}]
    other = palm.decide("u", joke)
    stale = dataclasses.replace(other, policy_version="another-version")
    assert fallback_members(palm.portfolio, palm.policy, palm.context(joke), stale) == ()
