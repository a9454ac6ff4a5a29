"""Feedback events a user produces, and the observations the preference model learns from.

Public events name members (``Thumb(member="terse", up=True)``); the pipeline resolves them against
the portfolio into :class:`Observation` objects that carry reward vectors, so a stored event keeps
its meaning even after the portfolio changes.

Every observation has one of two likelihoods over a weight vector w:

* ``compare``: P(y = +1 | w) = lapse + (1 − 2·lapse)·σ(scale·β·w·delta). Pairwise choice A over B
  uses delta = r_A − r_B (Bradley-Terry); a thumb uses delta = r − r_ref with y = ±1 (logistic
  link against a reference profile); a text cue for trait t uses delta = e_t − ref_t·1, so that
  w·delta = w_t − ref_t (the sum of w is one).
* ``anchor``: a Gaussian log-likelihood −½·precision·Σ_t (w_t − target_t)² over the traits the
  user set explicitly (settings, sliders).
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..exceptions import InvalidEventError
from ..types import FloatArray, MemberId

__all__ = [
    "ExplicitWeights",
    "FeedbackEvent",
    "Observation",
    "Pairwise",
    "Regenerate",
    "TextCue",
    "Thumb",
]


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Thumb:
    """Thumbs up or down on a reply, identified by the decision that produced it or by member."""

    up: bool
    decision_id: str | None = None
    member: MemberId | None = None
    event_id: str = field(default_factory=_new_id)
    ts: float | None = None


@dataclass(frozen=True)
class Pairwise:
    """The user preferred the reply of ``winner`` over that of ``loser``."""

    winner: MemberId
    loser: MemberId
    event_id: str = field(default_factory=_new_id)
    ts: float | None = None


@dataclass(frozen=True)
class Regenerate:
    """The user asked to regenerate a reply: a weak thumbs-down."""

    decision_id: str | None = None
    member: MemberId | None = None
    event_id: str = field(default_factory=_new_id)
    ts: float | None = None


@dataclass(frozen=True)
class ExplicitWeights:
    """Weights the user set (settings page, sliders); traits left out are not constrained."""

    weights: Mapping[str, float]
    confidence: float = 1.0
    event_id: str = field(default_factory=_new_id)
    ts: float | None = None


@dataclass(frozen=True)
class TextCue:
    """A cue found in the user's own words ("shorter please" → brevity up)."""

    trait: str
    direction: Literal[-1, 1]
    strength: float = 1.0
    cue_id: str | None = None
    event_id: str = field(default_factory=_new_id)
    ts: float | None = None


FeedbackEvent = Thumb | Pairwise | Regenerate | ExplicitWeights | TextCue


@dataclass(frozen=True)
class Observation:
    """A resolved event: what the likelihood needs, nothing else (no text, no member names).

    Attributes:
        kind: ``"compare"`` or ``"anchor"``.
        vector: ``delta`` for compare, ``target`` for anchor; shape (n_traits,).
        y: +1 or −1 for compare; unused for anchor.
        strength: tempering exponent of this observation's likelihood (1 = a full event).
        scale: multiplies the model's temperature β for compare (cues use their own).
        mask: for anchor, which traits the user set.
        precision: for anchor, the Gaussian precision.
        ts: when it happened (unix seconds), for forgetting.
    """

    kind: Literal["compare", "anchor"]
    vector: FloatArray
    y: int = 1
    strength: float = 1.0
    scale: float = 1.0
    mask: FloatArray | None = None
    precision: float = 0.0
    ts: float = 0.0

    def __post_init__(self) -> None:
        v = np.asarray(self.vector, dtype=np.float64)
        if v.ndim != 1 or not np.all(np.isfinite(v)):
            raise InvalidEventError("observation vector must be a finite 1-D array")
        object.__setattr__(self, "vector", v)
        if self.kind == "compare" and self.y not in (-1, 1):
            raise InvalidEventError(f"compare observation needs y = +1 or -1; got {self.y!r}")
        for name, val, low in (
            ("strength", self.strength, 0.0),
            ("scale", self.scale, 1e-12),
            ("precision", self.precision, 0.0),
        ):
            if (
                isinstance(val, bool)
                or not isinstance(val, (int, float))
                or not (math.isfinite(val) and val >= low)
            ):
                raise InvalidEventError(f"{name} must be a finite number >= {low:g}; got {val!r}")
        if (
            isinstance(self.ts, bool)
            or not isinstance(self.ts, (int, float))
            or not math.isfinite(self.ts)
        ):
            raise InvalidEventError(f"ts must be a finite unix time; got {self.ts!r}")
        if self.kind == "anchor":
            if self.mask is None:
                raise InvalidEventError("anchor observation needs a mask")
            object.__setattr__(self, "mask", np.asarray(self.mask, dtype=np.float64))
            if self.precision <= 0:
                raise InvalidEventError(f"anchor precision must be > 0; got {self.precision!r}")

    @classmethod
    def compare(
        cls,
        delta: Sequence[float] | FloatArray,
        y: int,
        *,
        strength: float = 1.0,
        scale: float = 1.0,
        ts: float = 0.0,
    ) -> Observation:
        """A logistic observation on w·delta."""
        return cls(
            "compare",
            np.asarray(delta, dtype=np.float64),
            y=y,
            strength=strength,
            scale=scale,
            ts=ts,
        )

    @classmethod
    def anchor(
        cls, target: FloatArray, mask: FloatArray, *, precision: float, ts: float = 0.0
    ) -> Observation:
        """A Gaussian observation of some coordinates of w."""
        return cls("anchor", target, mask=mask, precision=precision, ts=ts)

    @functools.cached_property
    def key(self) -> tuple[Any, ...]:
        """What makes two observations the same likelihood term (their strengths then add up).

        The vector is rounded as in :meth:`to_dict`, so a stored and a live observation match.
        Computed once (an update asks several times).
        """
        mask = None if self.mask is None else tuple(int(x) for x in self.mask)
        vec = tuple(round(float(x), 6) for x in self.vector)
        return (self.kind, vec, self.y, self.scale, mask, self.precision)

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-ready form (for the event store)."""
        d: dict[str, Any] = {
            "k": self.kind[0],
            "v": [round(float(x), 6) for x in self.vector],
            "t": self.ts,
        }
        if self.kind == "compare":
            d["y"] = self.y
            if self.scale != 1.0:
                d["sc"] = self.scale
        else:
            assert self.mask is not None
            d["m"] = [int(x) for x in self.mask]
            d["p"] = self.precision
        if self.strength != 1.0:
            d["s"] = self.strength
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Observation:
        """Inverse of :meth:`to_dict`."""
        try:
            if d["k"] == "c":
                return cls.compare(
                    d["v"],
                    int(d["y"]),
                    strength=float(d.get("s", 1.0)),
                    scale=float(d.get("sc", 1.0)),
                    ts=float(d["t"]),
                )
            if d["k"] == "a":
                return cls(
                    "anchor",
                    np.asarray(d["v"], dtype=np.float64),
                    mask=np.asarray(d["m"], dtype=np.float64),
                    precision=float(d["p"]),
                    strength=float(d.get("s", 1.0)),
                    ts=float(d["t"]),
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidEventError(f"malformed stored observation {dict(d)!r}: {exc}") from exc
        raise InvalidEventError(f"unknown observation kind {d.get('k')!r}")
