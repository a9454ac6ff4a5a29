"""Feedback events checked and turned into observations the model learns from.

:class:`EventResolver` validates each event type of :mod:`~palm_middleware.preferences.events`
(a clear :class:`~palm_middleware.exceptions.InvalidEventError` naming the field) and converts it
into :class:`Observation` values: reward differences between members, never member names or
text. :func:`cue_events` turns the cues found in a user's last message into ``TextCue`` events
whose ids make a re-sent message count once.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import IdentityError, InvalidEventError, InvalidWeightsError
from ..traits import check_simplex
from ..types import FloatArray, MemberId
from .events import (
    ExplicitWeights,
    FeedbackEvent,
    Observation,
    Pairwise,
    Regenerate,
    TextCue,
    Thumb,
)

if TYPE_CHECKING:
    from ..portfolio.manifest import Portfolio
    from ..stores.base import AuditRecord
    from .cues import CueLexicon

__all__ = ["EXPLICIT_SD", "REGENERATE_STRENGTH", "EventResolver", "Resolved", "cue_events"]

#: Strength of a regenerate relative to a thumbs-down.
REGENERATE_STRENGTH = 0.3
#: Standard deviation of an explicit weight setting at confidence 1.
EXPLICIT_SD = 0.05


@dataclass(frozen=True)
class Resolved:
    """A checked event: its observations, its kind label and the ids/labels an audit may keep."""

    obs: list[Observation]
    kind: str
    extra: dict[str, Any] = field(default_factory=dict)


class EventResolver:
    """Checks feedback events against a portfolio and resolves them into observations.

    Args:
        portfolio: the members whose rewards the observations compare.
        decision: looks up an audit record by id (a ``Thumb`` or ``Regenerate`` may name the
            decision instead of the member).
    """

    def __init__(self, portfolio: Portfolio, decision: Callable[[str], AuditRecord | None]) -> None:
        self.portfolio = portfolio
        self._decision = decision
        self._reference = portfolio.rewards.mean(axis=0)

    def resolve(self, key: str, event: FeedbackEvent, now: float, default: FloatArray) -> Resolved:
        """``event`` of the user stored under ``key``, checked and resolved.

        Args:
            default: the policy's default weights (a cue moves one trait away from them).

        Raises:
            InvalidEventError: a bad value, an unknown member or decision.
            InvalidWeightsError: explicit weights off the simplex.
            IdentityError: the event names another user's decision.
        """
        if not isinstance(event.event_id, str) or not event.event_id:
            raise InvalidEventError(f"event_id must be a non-empty string; got {event.event_id!r}")
        ts = now
        if event.ts is not None:
            if (
                isinstance(event.ts, bool)
                or not isinstance(event.ts, (int, float))
                or not (math.isfinite(event.ts))
            ):
                raise InvalidEventError(f"ts must be a finite unix time or None; got {event.ts!r}")
            # A client clock cannot make its feedback outlast forgetting: no future times.
            ts = min(float(event.ts), now)
        if isinstance(event, Thumb) and not isinstance(event.up, bool):
            raise InvalidEventError(f"Thumb.up must be True or False; got {event.up!r}")
        if isinstance(event, Thumb):
            r, m = self._member_reward(key, event.member, event.decision_id)
            y = 1 if event.up else -1
            return Resolved(
                [Observation.compare(r - self._reference, y, ts=ts)],
                "thumb",
                {"member": m, "up": bool(event.up)},
            )
        if isinstance(event, Regenerate):
            r, m = self._member_reward(key, event.member, event.decision_id)
            delta = r - self._reference
            return Resolved(
                [Observation.compare(delta, -1, strength=REGENERATE_STRENGTH, ts=ts)],
                "regenerate",
                {"member": m},
            )
        if isinstance(event, Pairwise):
            if event.winner == event.loser:
                raise InvalidEventError("pairwise winner and loser must differ")
            rw, _ = self._member_reward(key, event.winner, None)
            rl, _ = self._member_reward(key, event.loser, None)
            return Resolved(
                [Observation.compare(rw - rl, 1, ts=ts)],
                "pairwise",
                {"winner": event.winner, "loser": event.loser},
            )
        if isinstance(event, ExplicitWeights):
            return Resolved([self._anchor(event, ts)], "explicit", {"weights": dict(event.weights)})
        if isinstance(event, TextCue):
            return Resolved(
                [self._cue(event, ts, default)], "cue", {"cue": event.cue_id, "trait": event.trait}
            )
        raise InvalidEventError(f"unknown feedback event {event!r}")

    def _member_reward(
        self, key: str, member: MemberId | None, decision_id: str | None
    ) -> tuple[FloatArray, MemberId]:
        if decision_id is not None:
            rec = self._decision(decision_id)
            if rec is None or rec.kind != "decision":
                raise InvalidEventError(f"unknown decision {decision_id!r}")
            if rec.user_key != key:
                raise IdentityError("that decision belongs to another user")
            member = str(rec.payload["member"])
        if member is None:
            raise InvalidEventError("feedback needs a decision_id or a member")
        if member not in self.portfolio:
            raise InvalidEventError(
                f"unknown member {member!r}; members are {list(self.portfolio.ids)}"
            )
        return self.portfolio.rewards[self.portfolio.index(member)], member

    def _cue(self, event: TextCue, ts: float, default: FloatArray) -> Observation:
        space = self.portfolio.space
        i = space.index(event.trait)
        if event.direction not in (-1, 1) or isinstance(event.direction, bool):
            raise InvalidEventError(f"cue direction must be +1 or -1; got {event.direction}")
        if (
            isinstance(event.strength, bool)
            or not isinstance(event.strength, (int, float))
            or (not 0 < event.strength <= 10)
        ):
            raise InvalidEventError(f"cue strength must be in (0, 10]; got {event.strength!r}")
        delta = -np.full(space.dim, default[i])
        delta[i] += 1.0
        return Observation.compare(delta, event.direction, scale=event.strength, ts=ts)

    def _anchor(self, event: ExplicitWeights, ts: float) -> Observation:
        space = self.portfolio.space
        if not event.weights:
            raise InvalidEventError("explicit weights are empty")
        if isinstance(event.confidence, bool) or not (
            isinstance(event.confidence, (int, float)) and 0 < event.confidence <= 100
        ):
            raise InvalidEventError(f"confidence must be in (0, 100]; got {event.confidence!r}")
        target = np.zeros(space.dim)
        mask = np.zeros(space.dim)
        for name, v in event.weights.items():
            i = space.index(name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InvalidWeightsError(f"weight for {name!r} must be a number; got {v!r}")
            if not 0.0 <= v <= 1.0:
                raise InvalidWeightsError(f"weight for {name!r} must be in [0, 1]; got {v!r}")
            target[i] = v
            mask[i] = 1.0
        if mask.all():
            check_simplex(target, space, "explicit weights")
        precision = float(event.confidence) / EXPLICIT_SD**2
        return Observation.anchor(target, mask, precision=precision, ts=ts)


def cue_events(
    lexicon: CueLexicon,
    messages: Sequence[Mapping[str, Any]],
    metadata: Mapping[str, Any] | None,
    now: float,
) -> tuple[str, list[TextCue]]:
    """The user's last message and a ``TextCue`` event for each cue it contains.

    The same message re-sent (retries, chat history) must count once: each event id comes from
    the message's content and place, and from the conversation id when the caller passes one.
    """
    text, position = _last_user_text(messages)
    if not text or not lexicon.cues:
        return text, []
    found = lexicon.match(text)
    conversation = str((metadata or {}).get("conversation_id", ""))
    digest = hashlib.sha256(f"{conversation}\x00{position}\x00{text}".encode()).hexdigest()[:16]
    return text, [
        TextCue(
            trait=cue.trait,
            direction=cue.direction,
            strength=cue.strength,
            cue_id=cue.id,
            event_id=f"cue:{digest}:{cue.id}",
            ts=now,
        )
        for cue in found
    ]


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> tuple[str, int]:
    for pos in range(len(messages) - 1, -1, -1):
        m = messages[pos]
        if not isinstance(m, Mapping) or m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            return content, pos
        if isinstance(content, list):  # OpenAI content parts
            texts = [
                p.get("text", "")
                for p in content
                if isinstance(p, Mapping) and p.get("type") == "text"
            ]
            return " ".join(t for t in texts if isinstance(t, str)), pos
        return "", pos
    return "", -1
