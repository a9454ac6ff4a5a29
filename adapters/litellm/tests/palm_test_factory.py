"""Loaded by the proxy under test (``factory:`` in palm.yaml): the pipeline plus one blocking rule.

Stand-in for a policy ``when:`` rule with ``action: block`` (the policy language of the bounds
issue): a request whose last user message mentions ``forbidden-topic`` is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from palm_middleware import BoundsPolicy, DecisionBlocked, Palm, Portfolio
from palm_middleware.pipeline import Decision

BLOCK_WORD = "forbidden-topic"
RULE_ID = "no-forbidden-topic"


class BlockingPalm(Palm):
    def decide(self, user: str, messages: Sequence[Mapping[str, Any]] = (),
               metadata: Mapping[str, Any] | None = None) -> Decision:
        last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        if last is not None and BLOCK_WORD in str(last.get("content", "")):
            raise DecisionBlocked(RULE_ID, "This assistant does not discuss that topic.")
        return super().decide(user, messages, metadata)


def make_palm(portfolio: Portfolio, policy: BoundsPolicy, store: Any) -> Palm:
    return BlockingPalm(portfolio, policy, store, random_state=0)
