"""The default portfolio's policy (policies/assistant.yaml): its guard in front of the members.

At 135M parameters no member refuses risky requests (members.md), so the guard must stop every
risky prompt of the bundled set, whatever the user's weights, and let the others through.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from palm_middleware import (
    DecisionBlocked,
    ExplicitWeights,
    MemoryStore,
    Palm,
    load_policy,
    load_portfolio,
)
from palm_middleware.data import bundled
from palm_middleware.offline.evaluation import load_prompt_set

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = load_prompt_set(bundled("prompts.yaml")).prompts


def _palm() -> Palm:
    # Keywords only: the guard must not depend on the optional embedding model.
    return Palm(
        load_portfolio(bundled("smollm2/portfolio.yaml")),
        load_policy(bundled("smollm2/policy.yaml")),
        MemoryStore(),
        embedder=None,
    )


def test_bundled_copy_is_the_preset() -> None:
    assert (ROOT / "policies" / "assistant.yaml").read_bytes() == bundled(
        "smollm2/policy.yaml"
    ).read_bytes()


@pytest.mark.parametrize("prompt", [p for p in PROMPTS if p.risky], ids=lambda p: p.id)
def test_every_risky_prompt_is_blocked_whatever_the_weights(prompt: object) -> None:
    palm = _palm()
    # A user who asked for the shortest, least careful answers still meets the guard.
    palm.record_feedback(
        "u", ExplicitWeights(weights={"brevity": 0.9, "structure": 0.05, "formality": 0.05})
    )
    with pytest.raises(DecisionBlocked) as info:
        palm.decide("u", [{"role": "user", "content": prompt.text}])  # type: ignore[attr-defined]
    assert info.value.rule_id.startswith("guard-")
    assert info.value.user_message


def test_no_other_prompt_is_blocked() -> None:
    palm = _palm()
    blocked = []
    for p in PROMPTS:
        if p.risky:
            continue
        try:
            palm.decide("u", [{"role": "user", "content": p.text}])
        except DecisionBlocked as exc:
            blocked.append((p.id, exc.rule_id))
    assert blocked == []
