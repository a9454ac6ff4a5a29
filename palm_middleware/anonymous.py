"""Decisions for callers with no user id: the deployment default within the bounds, nothing stored.

Adapters call :func:`default_decision` when a deployment chose to serve anonymous callers (the
LangChain adapter's ``anonymous="default"``). The request still meets every bound of the policy
in force, including its block, pin and default rules for this request's context and topics; but
no profile is read or written, no cue is recorded and no audit record is kept, because there is
nobody to attach them to.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .decision import Decision
from .exceptions import DecisionBlocked
from .policy.conditions import RequestContext
from .policy.context import build_context

if TYPE_CHECKING:
    from .pipeline import Palm

__all__ = ["ANONYMOUS_KEY", "adefault_decision", "default_decision"]

logger = logging.getLogger("palm_middleware")

ANONYMOUS_KEY = ""
"""The ``user_key`` of an anonymous decision (no pseudonym: there is no user)."""


def default_decision(
    palm: Palm,
    messages: Sequence[Mapping[str, Any]] = (),
    metadata: Mapping[str, Any] | None = None,
) -> Decision:
    """The deployment default under the policy's rules for this request; stores nothing.

    Raises:
        DecisionBlocked: a rule of the policy blocks this request.
        TopicLabelError: topics could not be labelled (the request is refused, fail closed).
        InvalidRequestError, RequestTooLargeError: messages PALM cannot read, or too large.
    """
    now = float(palm.clock())
    read = palm.read(messages)  # unreadable or oversized input is refused here
    policy = palm.policy
    topics = palm.topics(read, policy)  # TopicLabelError: refused (fail closed), as in decide
    language = palm.language(read, policy)
    try:
        ctx = build_context(policy, metadata, now, topics, language)
    except Exception:  # as in Palm.decide: malformed metadata, the topics alone
        logger.exception("request metadata could not be read; evaluating without context")
        ctx = RequestContext(topics=topics, language=language)
    ev = palm.bounded_router.fallback(policy, ctx)
    if ev.action == "block":
        assert ev.action_rule is not None and ev.message is not None
        raise DecisionBlocked(ev.action_rule, ev.message)
    route = palm.bounded_router.default_route(ev)
    names = palm.portfolio.space.names
    parts = [f"chose {route.explain()}", "anonymous caller: the deployment default, nothing stored"]
    if ev.action == "pin":
        parts.append(f"member pinned by rule {ev.action_rule!r}")
    if ev.clamp.rules_fired:
        parts.append(f"policy {policy.version}: {ev.clamp.reason}")
    return Decision(
        decision_id=uuid.uuid4().hex,
        user_key=ANONYMOUS_KEY,
        member=route.member,
        runner_up=route.runner_up,
        margin=route.margin,
        mode=route.mode,
        raw_weights={n: float(v) for n, v in zip(names, policy.default.values)},
        weights={n: float(v) for n, v in zip(names, ev.clamp.weights)},
        rules_fired=tuple(ev.rules_fired),
        policy_version=policy.version,
        evidence=0.0,
        used_default=True,
        fallback=None,
        cues=(),
        explanation="; ".join(parts),
        ts=now,
        action=ev.action,
        rules_active=ev.active,
        topics=tuple(sorted(ctx.topics)),
        language=ctx.language,
    )


async def adefault_decision(
    palm: Palm,
    messages: Sequence[Mapping[str, Any]] = (),
    metadata: Mapping[str, Any] | None = None,
) -> Decision:
    """Async :func:`default_decision` (topic labelling may run a model: off the event loop)."""
    return await asyncio.to_thread(functools.partial(default_decision, palm, messages, metadata))
