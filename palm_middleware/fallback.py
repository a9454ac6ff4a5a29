"""Which members may stand in for a decision's member when it fails or times out.

A member served by its own inference server (``kind: litellm``) can be down. The request must
then go to the next-best member *that the policy allows for this user and request*, never to
an arbitrary one: ranked by the decision's own clamped weights, and only members that trigger
no rule beyond those the decided member triggered (a rule conditioned on the member, such as
"no playful member for minors", keeps applying). A pinned decision has no stand-in: the pin is
the policy's choice, so a failure fails closed.

Pure: a function of (portfolio, policy, request context, decision).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .decision import Decision
    from .policy import BoundsPolicy
    from .policy.conditions import RequestContext
    from .portfolio.manifest import Portfolio
    from .types import MemberId

__all__ = ["fallback_members"]


def fallback_members(
    portfolio: Portfolio,
    policy: BoundsPolicy,
    ctx: RequestContext,
    decision: Decision,
) -> tuple[MemberId, ...]:
    """Members that may serve ``decision``'s request instead of its member, best first.

    Args:
        portfolio: The members and their reward profiles.
        policy: The policy the decision was made under (another version: no stand-ins).
        ctx: The request's context (topics, cohort, channel, time), as for the decision.
        decision: The decision whose member failed.

    Returns:
        Member ids ordered by value under ``decision.weights`` (ties: manifest order); empty
        when the decision was pinned, blocked or made under another policy version.
    """
    if decision.action in ("pin", "block") or decision.policy_version != policy.version:
        return ()
    names = portfolio.space.names
    weights = np.array([decision.weights[n] for n in names], dtype=np.float64)
    values = portfolio.rewards @ weights
    allowed = set(policy.active_rules(ctx.with_member(decision.member)))
    order = sorted(range(len(values)), key=lambda i: (-float(values[i]), i))
    out = []
    for i in order:
        member = portfolio.ids[i]
        if member == decision.member:
            continue
        if set(policy.active_rules(ctx.with_member(member))) <= allowed:
            out.append(member)
    return tuple(out)
