"""Output rails: ``block`` rules with ``on: [reply]`` applied to what a member says.

A request rule keeps risky requests away from the members; a reply rule catches what gets
through (a paraphrase the request guard missed, a member that volunteers something). The reply
text is labelled by the same topic classifier as requests (keywords on de-obfuscated views,
prototypes, the learned classifier) and the reply rules' conditions are evaluated on a context
whose topics are the reply's (cohort, channel, time and metadata stay the request's).

Non-streamed replies are checked whole, before they leave. Streams are checked as they go: every
``stride`` new characters, the last ``window`` characters are classified (so a phrase split
across chunks is seen whole, and the cost per token stays bounded whatever the reply's length);
at the end the unchecked tail is classified once more. When a rule fires, the caller cuts the
stream and sends the rule's message instead of the rest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..policy.bounds import BoundsPolicy
from ..policy.conditions import RequestContext
from ..policy.models import ACTIONS, BoundRule
from ..policy.topics import TopicClassifier

__all__ = ["ReplyRail", "ReplyVerdict", "StreamCheck", "reply_rules"]

_LAYER_RANK = {"law": 0, "org": 1, "user": 2}


@dataclass(frozen=True)
class ReplyVerdict:
    """A reply rule fired: the rule, what the user is told instead, the reply's topic labels."""

    rule_id: str
    message: str
    topics: tuple[str, ...]


def reply_rules(policy: BoundsPolicy) -> list[BoundRule]:
    """The policy's ``on: reply`` rules, strictest layer first (law, org, user), then file order."""
    rules = [r for r in policy.rules if "reply" in r.on]
    return sorted(rules, key=lambda r: (ACTIONS.index(r.action or "clamp"), _LAYER_RANK[r.layer]))


class ReplyRail:
    """Checks reply texts against one policy's reply rules, for one request's context.

    Args:
        policy: The policy in force for the request.
        topics: The topic classifier of that policy.
        context: The request's context (its topics are replaced by the reply's).
    """

    def __init__(
        self, policy: BoundsPolicy, topics: TopicClassifier, context: RequestContext
    ) -> None:
        self.rules = reply_rules(policy)
        self.topics = topics
        self.context = context
        self._tests = [(r, policy.conditions.get(r.id)) for r in self.rules]

    @property
    def active(self) -> bool:
        """False when the policy has no reply rule (then nothing needs checking)."""
        return bool(self.rules)

    def check(self, text: str) -> ReplyVerdict | None:
        """The first reply rule that holds for ``text``, or None."""
        if not self.rules or not text:
            return None
        labels = self.topics.classify(text)
        ctx = dataclasses.replace(self.context, topics=labels)
        for rule, cond in self._tests:
            # A reply rule without a condition refuses every reply (like its request twin).
            if cond is None or cond.test(ctx):
                assert rule.message is not None  # block rules have one (schema)
                return ReplyVerdict(rule.id, rule.message, tuple(sorted(labels)))
        return None

    def stream(self, *, window: int = 400, stride: int = 64) -> StreamCheck:
        """A checker for one streamed reply (see :class:`StreamCheck`)."""
        return StreamCheck(self, window=window, stride=stride)


class StreamCheck:
    """Sliding-window check of a streamed reply.

    Args:
        rail: The request's :class:`ReplyRail`.
        window: Characters classified at each check (the reply's last ones).
        stride: New characters between two checks.

    Example:
        Feed each chunk's text; stop and send ``verdict.message`` when a verdict comes back::

            check = rail.stream()
            for delta in deltas:
                if (verdict := check.feed(delta)) is not None:
                    ...  # cut the stream
            verdict = check.finish()
    """

    def __init__(self, rail: ReplyRail, *, window: int = 400, stride: int = 64) -> None:
        if window < 1 or not 1 <= stride <= window:
            raise ValueError(f"need window >= 1 and 1 <= stride <= window; got {window}, {stride}")
        self.rail = rail
        self.window = window
        self.stride = stride
        self.text = ""
        self._checked = 0  # length of self.text at the last check
        self.verdict: ReplyVerdict | None = None

    def feed(self, delta: str) -> ReplyVerdict | None:
        """Add streamed text; a verdict when a reply rule fires (then the stream must stop)."""
        if self.verdict is not None or not self.rail.active:
            return self.verdict
        self.text += delta
        if len(self.text) - self._checked >= self.stride:
            self._check()
        return self.verdict

    def finish(self) -> ReplyVerdict | None:
        """Check what was not checked yet (call when the stream ends)."""
        if self.verdict is None and self.rail.active and len(self.text) > self._checked:
            self._check()
        return self.verdict

    def _check(self) -> None:
        # The window reaches back far enough to include the previous window's end, so a phrase
        # cut by a chunk boundary is seen whole.
        self.verdict = self.rail.check(self.text[-self.window :])
        self._checked = len(self.text)
