"""Merging bound rules into effective bounds (the stricter rule always wins), citing the rules.

Shared by the compiler (:mod:`.compiler`, which merges once at load and checks feasibility) and
the evaluator (:mod:`.bounds`, which merges the unconditional rules with each combination of
active conditional ones). Pure: values in, values out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..traits import TraitSpace, WeightVector
from ..types import FloatArray
from .models import BoundRule, PolicySpec

__all__ = [
    "GLOBAL_EXPLORATION",
    "GLOBAL_PERSONALIZATION",
    "BoundSources",
    "MergedBounds",
    "RuleIds",
    "cite",
    "has_constraint",
    "merge_rules",
]

#: Pseudo rule id cited when the policy's top-level ``personalization: false`` applies. It has a
#: dot, so it cannot clash with a rule id.
GLOBAL_PERSONALIZATION = "policy.personalization"
#: Pseudo rule id cited when the policy's top-level ``exploration: false`` applies.
GLOBAL_EXPLORATION = "policy.exploration"

RuleIds = tuple[str, ...]

_CONSTRAINTS = (
    "min",
    "max",
    "max_l1_from_default",
    "min_events",
    "personalization",
    "exploration",
    "max_step",
)


@dataclass(frozen=True)
class BoundSources:
    """Which rule ids produced each effective bound (the rules achieving the strictest value)."""

    lower: tuple[RuleIds, ...]
    """Per trait, the rules setting the effective floor (empty: floor 0)."""
    upper: tuple[RuleIds, ...]
    """Per trait, the rules setting the effective cap (empty: cap 1)."""
    max_drift: RuleIds = ()
    """Rules setting the effective drift radius."""
    min_events: RuleIds = ()
    """Rules setting the effective evidence threshold."""
    personalization: RuleIds = ()
    """Rules (or :data:`GLOBAL_PERSONALIZATION`) switching personalization off."""
    exploration: RuleIds = ()
    """Rules (or :data:`GLOBAL_EXPLORATION`) switching exploration off."""
    max_step: RuleIds = ()
    """Rules setting the effective per-event step limit."""


@dataclass(frozen=True)
class MergedBounds:
    """The effective bounds of a set of rules, before any feasibility check."""

    space: TraitSpace
    default: WeightVector
    lower: FloatArray
    """Floors, shape (n_traits,), read-only."""
    upper: FloatArray
    """Caps, shape (n_traits,), read-only."""
    max_drift: float | None
    min_events: float
    max_step: float | None
    personalization: bool
    exploration: bool
    sources: BoundSources
    rules: tuple[BoundRule, ...]
    """The merged rules, in policy order."""


def has_constraint(rule: BoundRule) -> bool:
    """Does ``rule`` carry a bound or a switch (not only an action)?"""
    return any(getattr(rule, f) is not None for f in _CONSTRAINTS)


def cite(ids: Sequence[str]) -> str:
    """``rule 'a'`` / ``rules 'a', 'b'`` / ``no rule``, for messages."""
    if not ids:
        return "no rule"
    return ("rule " if len(ids) == 1 else "rules ") + ", ".join(repr(i) for i in ids)


def merge_rules(spec: PolicySpec, rules: Sequence[BoundRule]) -> MergedBounds:
    """Merge ``rules`` (their conditions ignored; policy order kept) under ``spec``'s defaults.

    Floors take the max, caps the min, the drift radius and the step limit the min,
    ``min_events`` the max, switches the AND. A value equal to the implicit one (floor 0, cap 1)
    constrains nothing and cites no rule.
    """
    space = TraitSpace(spec.traits)
    d = space.dim
    lower, upper = np.zeros(d), np.ones(d)
    lo_src: list[list[str]] = [[] for _ in range(d)]
    up_src: list[list[str]] = [[] for _ in range(d)]
    step: float | None = None
    step_src: list[str] = []
    drift: float | None = None
    drift_src: list[str] = []
    min_events = 0.0
    ev_src: list[str] = []
    pers_src = [] if spec.personalization else [GLOBAL_PERSONALIZATION]
    expl_src = [] if spec.exploration else [GLOBAL_EXPLORATION]

    def tighten(
        cur: float, new: float, src: list[str], rid: str, stricter: bool, noop: bool
    ) -> float:
        if stricter:
            src[:] = [rid]
            return new
        if new == cur and not noop:
            src.append(rid)
        return cur

    kept = {id(r) for r in rules}
    for rule in rules:
        rid = rule.id
        if rule.max_step is not None:
            v = rule.max_step
            if step is None or v < step:
                step, step_src = v, [rid]
            elif v == step:
                step_src.append(rid)
        for name, v in (rule.min or {}).items():
            i = space.index(name)
            lower[i] = tighten(lower[i], v, lo_src[i], rid, v > lower[i], v == 0.0)
        for name, v in (rule.max or {}).items():
            i = space.index(name)
            upper[i] = tighten(upper[i], v, up_src[i], rid, v < upper[i], v == 1.0)
        if rule.max_l1_from_default is not None:
            v = rule.max_l1_from_default
            if drift is None or v < drift:
                drift, drift_src = v, [rid]
            elif v == drift:
                drift_src.append(rid)
        if rule.min_events is not None:
            v = rule.min_events
            min_events = tighten(min_events, v, ev_src, rid, v > min_events, v == 0.0)
        if rule.personalization is False:
            pers_src.append(rid)
        if rule.exploration is False:
            expl_src.append(rid)

    if spec.defaults.weights is None:
        default = space.uniform()
    else:
        default = WeightVector(space, space.vector(spec.defaults.weights, fill=0.0))
    lower.setflags(write=False)
    upper.setflags(write=False)
    return MergedBounds(
        space=space,
        default=default,
        lower=lower,
        upper=upper,
        max_drift=drift,
        min_events=min_events,
        max_step=step,
        personalization=not pers_src,
        exploration=not expl_src,
        sources=BoundSources(
            lower=tuple(tuple(s) for s in lo_src),
            upper=tuple(tuple(s) for s in up_src),
            max_drift=tuple(drift_src),
            min_events=tuple(ev_src),
            personalization=tuple(pers_src),
            exploration=tuple(expl_src),
            max_step=tuple(step_src),
        ),
        rules=tuple(r for r in spec.bounds if id(r) in kept),
    )
