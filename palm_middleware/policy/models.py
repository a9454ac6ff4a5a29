"""Typed schema of a bounds policy file (version 1).

A policy file is YAML::

    version: 1
    name: default
    traits: [safety, helpfulness, humor, brevity]
    defaults:
      weights: {safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}
      prior_strength: 10
    personalization: true
    exploration: true
    bounds:
      - {id: safety-floor, layer: law, min: {safety: 0.2}}
      - {id: max-drift, max_l1_from_default: 0.8}

A rule is an id, a layer and constraint fields. Later versions add ``when:`` conditions and
actions; version 1 rejects them (see :data:`RESERVED_RULE_KEYS`) rather than applying a
conditional rule unconditionally or ignoring it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)

__all__ = [
    "CONSTRAINT_FIELDS",
    "RESERVED_POLICY_KEYS",
    "RESERVED_RULE_KEYS",
    "BoundRule",
    "DefaultsSpec",
    "Layer",
    "PolicySpec",
]

#: Who set a rule: law (immutable), org (the deployment), user. Merged law -> org -> user.
Layer = Literal["law", "org", "user"]

#: Rule keys that later schema versions will give a meaning; version 1 rejects them by name.
RESERVED_RULE_KEYS: dict[str, str] = {
    "when": "conditional rules ('when:') are not supported by policy version 1",
    "unless": "conditional rules ('unless:') are not supported by policy version 1",
    "action": "rule actions (block, pin, use_default) are not supported by policy version 1",
    "topics": "topic rules are not supported by policy version 1",
    "model": "pinned models are not supported by policy version 1",
    "message": "user messages (for blocking rules) are not supported by policy version 1",
}

#: Top-level keys that later schema versions will give a meaning.
RESERVED_POLICY_KEYS: dict[str, str] = {
    "layers": "layer settings are not supported by policy version 1",
    "privacy": "the 'privacy' section is not supported by policy version 1",
    "audit": "the 'audit' section is not supported by policy version 1",
    "topics": "topic definitions are not supported by policy version 1",
    "no_personalization_topics": "topic rules are not supported by policy version 1",
}


def _number(v: object) -> float:
    # bool is an int subclass; `min: {safety: true}` is a typo, not 1.0.
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("must be a number")
    x = float(v)
    if not math.isfinite(x):
        raise ValueError("must be a finite number")
    return x


def _unit(v: object) -> float:
    x = _number(v)
    if not 0.0 <= x <= 1.0:
        raise ValueError("must be in [0, 1]")
    return x


def _drift(v: object) -> float:
    x = _number(v)
    if not 0.0 <= x <= 2.0:
        raise ValueError("must be in [0, 2] (the L1 diameter of the simplex is 2)")
    return x


def _non_negative(v: object) -> float:
    x = _number(v)
    if x < 0.0:
        raise ValueError("must be >= 0")
    return x


def _positive(v: object) -> float:
    x = _number(v)
    if x <= 0.0:
        raise ValueError("must be > 0")
    return x


UnitFloat = Annotated[float, BeforeValidator(_unit)]
DriftFloat = Annotated[float, BeforeValidator(_drift)]
NonNegativeFloat = Annotated[float, BeforeValidator(_non_negative)]
PositiveFloat = Annotated[float, BeforeValidator(_positive)]
RuleId = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
TraitMap = Annotated[dict[StrictStr, UnitFloat], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Rule fields that constrain personalization (everything except id, layer and description).
CONSTRAINT_FIELDS = (
    "min",
    "max",
    "max_l1_from_default",
    "min_events",
    "personalization",
    "exploration",
)


class BoundRule(_Strict):
    """One rule of a policy: an id, a layer and at least one constraint."""

    id: RuleId
    """Unique id, cited in decisions and error messages: ``[a-z0-9][a-z0-9_-]*``."""
    layer: Layer = "org"
    """Who set the rule: ``law``, ``org`` (default) or ``user``."""
    description: StrictStr | None = None
    """Free text: why the rule exists (shown by ``palm explain``)."""
    min: TraitMap | None = None
    """Per-trait floors ``{trait: value in [0, 1]}``."""
    max: TraitMap | None = None
    """Per-trait caps ``{trait: value in [0, 1]}``."""
    max_l1_from_default: DriftFloat | None = None
    """Cap on the drift ``||w - default||_1``, in [0, 2]."""
    min_events: NonNegativeFloat | None = None
    """Effective evidence (events) needed before a user leaves the default."""
    personalization: StrictBool | None = None
    """``false`` switches personalization off; ``true`` is refused (the stricter rule wins)."""
    exploration: StrictBool | None = None
    """``false`` forbids exploration (Thompson sampling); ``true`` is refused."""

    @field_validator("personalization", "exploration")
    @classmethod
    def _only_off(cls, v: bool | None) -> bool | None:
        if v is True:
            raise ValueError(
                "a rule can only switch this off (false): the stricter rule always wins, so "
                "'true' would have no effect"
            )
        return v

    @model_validator(mode="after")
    def _has_constraint(self) -> BoundRule:
        if all(getattr(self, f) is None for f in CONSTRAINT_FIELDS):
            raise ValueError(
                f"a rule needs at least one constraint: one of {', '.join(CONSTRAINT_FIELDS)}"
            )
        return self


class DefaultsSpec(_Strict):
    """The deployment default every user starts from and shrinks toward."""

    weights: dict[StrictStr, UnitFloat] | None = None
    """Default weight vector ``{trait: weight}``, summing to 1; traits left out weigh 0.
    Omitted: uniform."""
    prior_strength: PositiveFloat = 10.0
    """Dirichlet concentration of the prior around the default (> 0): pseudo-events of trust."""

    @field_validator("weights")
    @classmethod
    def _on_simplex(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None:
            total = math.fsum(v.values())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"weights must sum to 1; they sum to {total:.6g}")
        return v


class PolicySpec(_Strict):
    """A whole policy file, as written (before merging)."""

    version: Literal[1]
    """Schema version; this code reads version 1."""
    name: StrictStr | None = Field(default=None, min_length=1, max_length=128)
    """Human-readable policy name (defaults to the file's stem)."""
    traits: list[StrictStr] = Field(min_length=1)
    """The trait space, in order; must match the portfolio's."""
    defaults: DefaultsSpec = DefaultsSpec()
    """Default weights and prior strength."""
    personalization: StrictBool = True
    """Global switch: ``false`` serves the default to everyone."""
    exploration: StrictBool = True
    """May the router explore among portfolio members (Thompson sampling)?"""
    bounds: list[BoundRule] = Field(default_factory=list)
    """The rules, merged so that the stricter one always wins."""

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if data is None:
            raise ValueError("the policy is empty")
        return data
