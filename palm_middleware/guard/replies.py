"""Output rails: ``block`` rules with ``on: [reply]`` applied to what a member says.

A request rule keeps risky requests away from the members; a reply rule catches what gets
through (a paraphrase the request guard missed, a member that volunteers something). The reply
text is labelled by the same topic classifier as requests (keywords on de-obfuscated views,
prototypes, the learned classifier) and the reply rules' conditions are evaluated on a context
whose topics are the reply's (cohort, channel, time and metadata stay the request's).
The reply is labelled sentence by sentence (lines and ``. ! ?`` ends, a sentence under 60
characters joined to the next; the labels are the union): one embedding of a long text averages
its sentences, so a risky sentence inside a harmless reply would be diluted, and several harmless
lines with dark imagery would add up to a risky score. Classifier heads judge replies against the
topic's ``classifier.reply_threshold``: they were calibrated on requests, and harmless poems or
stories score higher than harmless requests. Units are cached by text, so a stream's windows
mostly re-read cached ones.

Non-streamed replies are checked whole, before they leave. Streams are checked as they go: every
``stride`` new characters, the finished sentences among the last ``window`` characters are
classified (so a phrase split across chunks is seen whole, and the cost per token stays bounded
whatever the reply's length), and the sentence being written is matched against keywords; at the
end the unchecked tail is classified once more. A keyword cuts the stream within ``stride``
characters; a sentence the classifier flags, within ``stride`` characters of its end.
When a rule fires, the caller cuts the stream and sends the rule's message instead of the rest.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from ..policy.bounds import BoundsPolicy
from ..policy.conditions import RequestContext
from ..policy.models import ACTIONS, BoundRule
from ..policy.topics import TopicClassifier

__all__ = ["ReplyRail", "ReplyVerdict", "StreamCheck", "reply_rules"]

_LAYER_RANK = {"law": 0, "org": 1, "user": 2}
_MIN_CHARS = 60  # a unit of the reply: one or more sentences, at least this long
# Sentence ends: a line break, or . ! ? (also Chinese ones) before whitespace.
_SENTENCES = re.compile(r"\s*\n\s*|(?<=[.!?])\s+|(?<=[。！？])")


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

    def check(self, text: str, *, unfinished: str = "") -> ReplyVerdict | None:
        """The first reply rule that holds for ``text``, or None.

        ``unfinished`` (a sentence still being streamed) is matched against keywords only.
        Keywords also see the whole text, so a keyword is found whatever the sentence split.
        """
        if not self.rules or not (text or unfinished):
            return None
        units = _sentences(text) if text else []
        labels = frozenset().union(
            *(self.topics.classify(s, reply=True) for s in units),
            self.topics.classify(text + unfinished, reply=True, keywords_only=True),
        )
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
        self._pending = False  # an unfinished sentence was left out of the last check
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
        if (
            self.verdict is None
            and self.rail.active
            and (self._pending or len(self.text) > self._checked)
        ):
            self._check(final=True)
        return self.verdict

    def _check(self, *, final: bool = False) -> None:
        # The window reaches back far enough to include the previous window's end, so a phrase
        # cut by a chunk boundary is seen whole. A sentence the window's start cuts was read
        # whole by an earlier window: its tail alone ("mourned for seven days.") reads wrongly.
        text = self.text[-self.window :]
        if len(self.text) > self.window and (end := _SENTENCES.search(text)) is not None:
            text = text[end.end() :] or text
        # So does a sentence still being written ("How do I kill"): until it ends, has grown
        # to half a window (text without punctuation) or the stream ends, only keywords see it.
        self._pending = False
        tail = ""
        if not final:
            ends = [m.end() for m in _SENTENCES.finditer(text)]
            done = ends[-1] if ends else 0
            if len(text) - done < self.window // 2:
                self._pending = done < len(text)
                text, tail = text[:done], text[done:]
        if text.strip() or tail.strip():
            self.verdict = self.rail.check(text, unfinished=tail)
        self._checked = len(self.text)


def _sentences(text: str, min_chars: int = _MIN_CHARS) -> list[str]:
    """``text`` in sentences, a short one joined to the next (the whole text if it has no end).

    A short sentence alone loses its context ("How do we recover next time?" after "Our set
    bombed." reads as a crisis): units have at least ``min_chars`` characters where possible.
    """
    units: list[str] = []
    part = ""
    for s in _SENTENCES.split(text):
        if not s.strip():
            continue
        part = f"{part} {s}" if part else s
        if len(part) >= min_chars:
            units.append(part)
            part = ""
    if part:
        if units and len(part) < min_chars:
            units[-1] = f"{units[-1]} {part}"
        else:
            units.append(part)
    return units or [text]
