"""What a routing decision was, and what the system holds about a user, as plain values.

:class:`Decision` is returned by :meth:`Palm.decide <palm_middleware.pipeline.Palm.decide>`,
shown to the caller as headers and stored as the decision's audit record; :class:`Profile` is
what :meth:`Palm.profile <palm_middleware.pipeline.Palm.profile>` shows the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .routing import RouteMode
from .types import MemberId

__all__ = ["Decision", "Profile"]


@dataclass(frozen=True)
class Decision:
    """Everything about one routing decision (also what the audit log stores).

    Attributes:
        raw_weights: the inferred weights before the policy (posterior mean).
        weights: the weights actually used, after the policy (for Thompson mode, the clamped draw).
        rules_fired: ids of the policy rules that changed or constrained the weights.
        fallback: why the deployment default was served because inference failed, or None.
    """

    decision_id: str
    user_key: str
    member: MemberId
    runner_up: MemberId | None
    margin: float
    mode: RouteMode
    raw_weights: dict[str, float]
    weights: dict[str, float]
    rules_fired: tuple[str, ...]
    policy_version: str
    evidence: float
    used_default: bool
    fallback: str | None
    cues: tuple[str, ...]
    explanation: str
    ts: float
    action: str = "clamp"
    """The winning policy action: ``clamp``, ``use_default`` or ``pin``."""
    rules_active: tuple[str, ...] = ()
    """Conditional or action rules whose conditions held for this request."""
    topics: tuple[str, ...] = ()
    """Topic labels of the last user message."""
    language: str | None = None
    """Detected language of the request, when the policy uses it (``languages:``)."""

    def headers(self) -> dict[str, str]:
        """Response headers that make the decision visible to the caller."""
        out = {
            "x-palm-member": self.member,
            "x-palm-weights": ",".join(f"{k}={v:.3f}" for k, v in self.weights.items()),
            "x-palm-policy": self.policy_version,
            "x-palm-decision": self.decision_id,
            "x-palm-action": self.action,
        }
        if self.rules_fired:
            out["x-palm-rules"] = ",".join(self.rules_fired)
        if self.topics:
            out["x-palm-topics"] = ",".join(self.topics)
        if self.language is not None:
            out["x-palm-language"] = self.language
        if self.used_default:
            out["x-palm-default"] = "1"
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "decision_id": self.decision_id,
            "member": self.member,
            "runner_up": self.runner_up,
            "margin": round(self.margin, 6),
            "mode": self.mode,
            "raw_weights": self.raw_weights,
            "weights": self.weights,
            "rules_fired": list(self.rules_fired),
            "policy_version": self.policy_version,
            "evidence": round(self.evidence, 4),
            "used_default": self.used_default,
            "fallback": self.fallback,
            "cues": list(self.cues),
            "ts": self.ts,
            "action": self.action,
            "rules_active": list(self.rules_active),
            "topics": list(self.topics),
            **({"language": self.language} if self.language is not None else {}),
            "explanation": self.explanation,
        }


@dataclass(frozen=True)
class Profile:
    """What the system holds about one user, as the user may see it."""

    user_key: str
    weights: dict[str, float]
    lower: dict[str, float]
    upper: dict[str, float]
    effective_weights: dict[str, float]
    rules_fired: tuple[str, ...]
    evidence: float
    n_events: int
    opted_out: bool
    recent_events: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "user_key": self.user_key,
            "weights": self.weights,
            "credible_interval": {"lower": self.lower, "upper": self.upper},
            "effective_weights": self.effective_weights,
            "rules_fired": list(self.rules_fired),
            "evidence": self.evidence,
            "n_events": self.n_events,
            "opted_out": self.opted_out,
            "recent_events": self.recent_events,
        }
