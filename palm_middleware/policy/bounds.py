"""The merged, checked form of a bounds policy and the clamp applied on every decision."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .._yaml import LocatedYAML
from ..exceptions import (
    ConfigError,
    ConfigIssue,
    InvalidParameterError,
    InvalidWeightsError,
    PolicyInfeasibleError,
    PolicyValidationError,
    PolicyWarning,
)
from ..traits import SIMPLEX_TOL, TraitSpace, WeightVector, check_simplex
from ..types import FloatArray
from .conditions import CompiledCondition, ConditionVocabulary, RequestContext, compile_condition
from .models import ACTIONS, V2_POLICY_KEYS, V2_RULE_KEYS, BoundRule, DefaultsSpec, PolicySpec
from .projection import FEASIBILITY_TOL, l1_distance_to_feasible, solve

__all__ = [
    "GLOBAL_EXPLORATION",
    "GLOBAL_PERSONALIZATION",
    "BoundSources",
    "BoundsPolicy",
    "ClampResult",
    "Evaluation",
]

#: Pseudo rule id cited when the policy's top-level ``personalization: false`` applies. It has a
#: dot, so it cannot clash with a rule id.
GLOBAL_PERSONALIZATION = "policy.personalization"
#: Pseudo rule id cited when the policy's top-level ``exploration: false`` applies.
GLOBAL_EXPLORATION = "policy.exploration"

# A bound counts as fired when the unclipped optimum lies beyond it by more than this.
_FIRE_TOL = 1e-9
# Slack on the fast path's feasibility test (the result must satisfy bounds within 1e-9).
_FAST_TOL = 1e-12

RuleIds = tuple[str, ...]
_LAYER_RANK = {"law": 0, "org": 1, "user": 2}
# Distinct combinations of active conditional rules whose merged bounds are memoized.
_MAX_VARIANTS = 4096


@dataclass(frozen=True)
class ClampResult:
    """Outcome of :meth:`BoundsPolicy.clamp`."""

    weights: FloatArray
    """Weights satisfying every bound (read-only), shape (n_traits,)."""
    rules_fired: RuleIds
    """Ids of rules whose constraint was active or that forced the default, in policy order."""
    used_default: bool
    """True when personalization was skipped and the (clamped) default served."""
    reason: str
    """Human-readable explanation."""


@dataclass(frozen=True)
class Evaluation:
    """Outcome of :meth:`BoundsPolicy.evaluate` for one request."""

    clamp: ClampResult
    """The weights after the active bounds (the served default for ``use_default``)."""
    bounds: BoundsPolicy
    """The policy merged with the active conditional rules (its floors, caps, switches)."""
    active: RuleIds
    """Ids of the conditional or action rules whose conditions held, in policy order."""
    action: Literal["clamp", "use_default", "pin", "block"]
    """The winning action."""
    action_rule: str | None
    """The rule whose action won (None for plain clamping)."""
    member: str | None = None
    """The pinned member (``action == "pin"``)."""
    message: str | None = None
    """The user message (``action == "block"``)."""

    @property
    def rules_fired(self) -> RuleIds:
        """Rules that changed this decision: the action's rule, then the clamp's."""
        if self.action_rule is None or self.action_rule in self.clamp.rules_fired:
            return self.clamp.rules_fired
        return (self.action_rule, *self.clamp.rules_fired)

    @property
    def exploration(self) -> bool:
        """May the router explore (false once any active rule forbids it)?"""
        return self.bounds.exploration

    @property
    def max_step(self) -> float | None:
        """The per-event step limit in force."""
        return self.bounds.max_step


@dataclass(frozen=True)
class _PlanRule:
    bit: int
    rule: BoundRule
    test: Callable[[RequestContext], bool] | None  # None: unconditional (always active)
    uses_member: bool


@dataclass(frozen=True)
class _Plan:
    """Precomputed evaluation order of the conditional and action rules."""

    rules: tuple[_PlanRule, ...]
    plain: tuple[_PlanRule, ...]  # tested before routing (or always active)
    member: tuple[_PlanRule, ...]  # need the routed member
    by_action: tuple[_PlanRule, ...]  # action rules, strictest action/layer first
    constraint_mask: int  # conditional rules that carry bounds (need a merged variant)
    always: int = 0  # unconditional action rules
    tests: tuple[tuple[int, Callable[[RequestContext], bool]], ...] = ()  # plain, conditional

    @classmethod
    def build(
        cls, rules: Sequence[BoundRule], conditions: Mapping[str, CompiledCondition]
    ) -> _Plan:
        out: list[_PlanRule] = []
        for r in rules:
            if not r.conditional and (r.action or "clamp") == "clamp":
                continue  # merged into the base bounds once
            if "request" not in r.on:
                continue  # a reply-only rule: checked on the member's reply, not here
            cond = conditions.get(r.id)
            test = cond.test if cond is not None else None
            out.append(_PlanRule(1 << len(out), r, test, bool(cond and cond.uses_member)))
        plain = tuple(p for p in out if not p.uses_member)
        member = tuple(p for p in out if p.uses_member)
        idx = {id(p.rule): i for i, p in enumerate(out)}
        acting = [p for p in out if (p.rule.action or "clamp") != "clamp"]
        acting.sort(
            key=lambda p: (
                ACTIONS.index(p.rule.action or "clamp"),
                _LAYER_RANK[p.rule.layer],
                idx[id(p.rule)],
            )
        )
        cmask = 0
        for p in out:
            if p.rule.conditional and _has_constraint(p.rule):
                cmask |= p.bit
        always = 0
        for p in plain:
            if p.test is None:
                always |= p.bit
        tests = tuple((p.bit, p.test) for p in plain if p.test is not None)
        return cls(tuple(out), plain, member, tuple(acting), cmask, always, tests)


def _has_constraint(rule: BoundRule) -> bool:
    return any(
        getattr(rule, f) not in (None,)
        for f in (
            "min",
            "max",
            "max_l1_from_default",
            "min_events",
            "personalization",
            "exploration",
            "max_step",
        )
    )


def _member_names(cond: object, out: set[str]) -> None:
    if isinstance(cond, Mapping):
        for k, v in cond.items():
            if k == "member":
                vals = v.get(next(iter(v)), []) if isinstance(v, Mapping) and v else v
                for x in vals if isinstance(vals, list) else [vals]:
                    if isinstance(x, str):
                        out.add(x)
            else:
                _member_names(v, out)
    elif isinstance(cond, list):
        for c in cond:
            _member_names(c, out)


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


@dataclass(frozen=True, eq=False)
class BoundsPolicy:
    """A loaded, merged and feasibility-checked bounds policy.

    Build one with :func:`~palm_middleware.policy.load_policy`,
    :func:`~palm_middleware.policy.parse_policy`, :meth:`from_dict` or :meth:`default_policy`.
    Merging: floors take the max, caps the min, the drift radius the min, ``min_events`` the max,
    switches the AND; :attr:`sources` keeps which rules produced each effective bound.

    >>> from palm_middleware.traits import TraitSpace
    >>> policy = BoundsPolicy.default_policy(TraitSpace(["safety", "humor"]))
    >>> policy.clamp(np.array([0.1, 0.9]), evidence=5).weights.tolist()
    [0.1, 0.9]
    """

    space: TraitSpace
    """The trait space."""
    name: str
    """Policy name."""
    version: str
    """Short sha256 of the canonical policy content, cited by every decision."""
    default: WeightVector
    """The declared default weights (possibly outside the bounds; see :attr:`effective_default`)."""
    prior_strength: float
    """Dirichlet concentration of the prior around the default."""
    personalization: bool
    """Global switch, ANDed over the top-level flag and every rule."""
    exploration: bool
    """May the router explore, ANDed over the top-level flag and every rule."""
    lower: FloatArray
    """Effective floors, shape (n_traits,)."""
    upper: FloatArray
    """Effective caps, shape (n_traits,)."""
    max_drift: float | None
    """Effective cap on ``||w - default||_1``, or None."""
    min_events: float
    """Effective evidence needed before leaving the default."""
    sources: BoundSources
    """Rule ids behind each effective bound."""
    rules: tuple[BoundRule, ...] = ()
    """The rules as written, in policy order."""
    source: str | None = None
    """File (or ``<dict>``) the policy came from."""
    max_step: float | None = None
    """Effective cap on how far (L1) one feedback event may move the posterior mean, or None."""
    spec: PolicySpec | None = None
    """The validated file content (None for policies built in code)."""
    conditions: Mapping[str, CompiledCondition] = field(default_factory=dict)
    """Compiled condition of every conditional rule, by rule id (``when`` and not ``unless``)."""
    _doc: LocatedYAML | None = field(default=None, repr=False)
    _order: dict[str, int] = field(init=False, repr=False)
    _default_x: FloatArray = field(init=False, repr=False)
    _default_fired: RuleIds = field(init=False, repr=False)
    _plan: _Plan = field(init=False, repr=False)
    _variants: dict[int, BoundsPolicy] = field(init=False, repr=False)
    _masks: dict[int, tuple[RuleIds, BoundRule | None]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        d = self.space.dim
        for what in ("lower", "upper"):
            arr = np.array(getattr(self, what), dtype=np.float64).reshape(-1)
            if arr.shape != (d,):
                raise InvalidParameterError(f"{what} must have shape ({d},); got {arr.shape}")
            arr.setflags(write=False)
            object.__setattr__(self, what, arr)
        order = {GLOBAL_PERSONALIZATION: -2, GLOBAL_EXPLORATION: -1}
        order.update({r.id: i for i, r in enumerate(self.rules)})
        object.__setattr__(self, "_order", order)
        object.__setattr__(self, "_plan", _Plan.build(self.rules, self.conditions))
        object.__setattr__(self, "_variants", {})
        object.__setattr__(self, "_masks", {})
        # The default is served often (cold start, opt-out): clamp it once.
        sol = solve(self.default.values, self.lower, self.upper, self._center, self.max_drift)
        x = sol.x
        x.setflags(write=False)
        object.__setattr__(self, "_default_x", x)
        object.__setattr__(self, "_default_fired", self._fired(sol.z, sol.mu))

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def default_policy(cls, space: TraitSpace, *, name: str = "default") -> BoundsPolicy:
        """A policy without bounds: uniform default, prior strength 10, everything allowed."""
        spec = PolicySpec(
            version=1,
            name=name,
            traits=list(space.names),
            defaults=DefaultsSpec(weights=None, prior_strength=10.0),
        )
        return compile_policy(spec, LocatedYAML(data={}, positions={}, filename="<default>"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> BoundsPolicy:
        """Build from plain data shaped like the YAML file; errors as for a file."""
        from .loader import policy_from_data  # loader imports this module

        return policy_from_data(data, source)

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain data (without defaults left unset); inverse of :meth:`from_dict`."""
        version = self.spec.version if self.spec is not None else 1
        out: dict[str, Any] = {
            "version": version,
            "name": self.name,
            "traits": list(self.space.names),
        }
        out["defaults"] = {"weights": self.default.as_dict(), "prior_strength": self.prior_strength}
        out["personalization"] = GLOBAL_PERSONALIZATION not in self.sources.personalization
        out["exploration"] = GLOBAL_EXPLORATION not in self.sources.exploration
        out["bounds"] = [
            # `on` left out at its default, so a version 1 policy dumps as version 1 data.
            r.model_dump(exclude_none=True, exclude={"on"} if r.on == ["request"] else None)
            for r in self.rules
        ]
        if version >= 2 and self.spec is not None:
            extra = self.spec.model_dump(mode="json", include=set(V2_POLICY_KEYS))
            out.update(extra)
        return out

    # -- conditional evaluation (version 2) ---------------------------------------------------

    @property
    def has_conditions(self) -> bool:
        """True when some rule has a condition or an action (evaluate per request)."""
        return bool(self._plan.rules)

    @property
    def timezone(self) -> str:
        """Time zone of ``time:``/``weekday:`` conditions."""
        return self.spec.timezone if self.spec is not None else "UTC"

    def pinned_members(self) -> dict[str, str]:
        """``{rule id: member}`` for every ``action: pin`` rule."""
        return {r.id: r.member for r in self.rules if r.action == "pin" and r.member}

    def condition_members(self) -> dict[str, set[str]]:
        """``{rule id: members named}`` by ``member:`` conditions (checked against portfolios)."""
        out: dict[str, set[str]] = {}
        for r in self.rules:
            names: set[str] = set()
            for cond in (r.when, r.unless):
                if cond is not None:
                    _member_names(cond, names)
            if names:
                out[r.id] = names
        return out

    def active_rules(self, context: RequestContext) -> tuple[str, ...]:
        """Ids of the rules that apply to ``context`` (unconditional ones included), in order."""
        plan = self._plan
        out = [r.id for r in self.rules if not r.conditional]
        for pr in plan.rules:
            if pr.test is not None and pr.test(context):
                out.append(pr.rule.id)
        return self._sort(out)

    def evaluate(
        self,
        context: RequestContext,
        weights: FloatArray | WeightVector | Sequence[float],
        *,
        evidence: float,
        personalized: bool = True,
        choose: Callable[[FloatArray], str] | None = None,
    ) -> Evaluation:
        """Apply every rule that holds for ``context``; a pure function of its arguments.

        The active rules are merged like the unconditional ones (floors max, caps min, drift
        min, ``min_events`` max, switches AND) and the strictest action wins: ``block`` >
        ``pin`` > ``use_default`` > ``clamp``; among rules with the same action the higher layer
        (law, then org, then user), then the earlier rule, wins.

        Args:
            context: The request context.
            weights: Inferred weights, shape (n_traits,), on the simplex.
            evidence: Effective number of events behind ``weights``.
            personalized: False serves the default (e.g. the user opted out).
            choose: The router (weights -> member). When given, rules with ``member:``
                conditions are evaluated on the member it would serve, to a fixed point: the
                set of active rules only grows, so the loop ends, and at the end every rule that
                holds for the served member is applied.

        Returns:
            An :class:`Evaluation`; ``clamp.weights`` satisfies every active bound.
        """
        plan = self._plan
        mask = plan.always
        for bit, test in plan.tests:
            if test(context):
                mask |= bit
        if choose is None:
            for pr in plan.member:
                if pr.test is not None and pr.test(context):
                    mask |= pr.bit
            return self._resolve(mask, weights, evidence, personalized)
        ev = self._resolve(mask, weights, evidence, personalized)
        for _ in range(len(plan.member) + 1):
            if ev.action == "block" or not plan.member:
                break
            member = ev.member if ev.member is not None else choose(ev.clamp.weights)
            ctx = context.with_member(member)
            new = mask
            for pr in plan.member:
                if pr.test is not None and pr.test(ctx):
                    new |= pr.bit
            if new == mask:
                break
            mask = new
            ev = self._resolve(mask, weights, evidence, personalized)
        return ev

    def _resolve(
        self,
        mask: int,
        weights: FloatArray | WeightVector | Sequence[float],
        evidence: float,
        personalized: bool,
    ) -> Evaluation:
        plan = self._plan
        bounds = self._variant(mask & plan.constraint_mask) if mask & plan.constraint_mask else self
        memo = self._masks.get(mask)
        if memo is None:  # ids and winning action depend on the mask only: memoize them
            ids = tuple(pr.rule.id for pr in plan.rules if mask & pr.bit)
            win = next((pr.rule for pr in plan.by_action if mask & pr.bit), None)
            memo = (ids, win)
            if len(self._masks) >= _MAX_VARIANTS:
                self._masks.clear()
            self._masks[mask] = memo
        active, winner = memo
        action: str = (winner.action or "clamp") if winner is not None else "clamp"
        if action == "use_default":
            assert winner is not None
            clamp = bounds.clamp(weights, evidence=evidence, personalized=personalized)
            if not clamp.used_default:
                clamp = bounds._serve_default(
                    (winner.id,), f"rule {winner.id!r} serves the deployment default"
                )
            else:
                fired = bounds._sort({*clamp.rules_fired, winner.id})
                clamp = ClampResult(clamp.weights, fired, True, clamp.reason)
        else:
            clamp = bounds.clamp(weights, evidence=evidence, personalized=personalized)
        return Evaluation(
            clamp=clamp,
            bounds=bounds,
            active=active,
            action=action,  # type: ignore[arg-type]
            action_rule=winner.id if winner is not None else None,
            member=winner.member if winner is not None and action == "pin" else None,
            message=winner.message if winner is not None and action == "block" else None,
        )

    def _variant(self, mask: int) -> BoundsPolicy:
        """The policy merged with the conditional constraint rules in ``mask`` (memoized)."""
        cache = self._variants
        hit = cache.get(mask)
        if hit is not None:
            return hit
        if self.spec is None or self._doc is None:  # pragma: no cover - v2 policies have a spec
            return self
        plan = self._plan
        extra = [pr.rule for pr in plan.rules if mask & pr.bit]
        rules = [r for r in self.spec.bounds if not r.conditional] + extra
        try:
            keep = {id(r) for r in rules}
            ordered = [r for r in self.spec.bounds if id(r) in keep]
            variant = _build(
                self.spec, self._doc, ordered, version=self.version, warn=False, check=False
            )
        except PolicyInfeasibleError:  # pragma: no cover - excluded by the load-time check
            # Never loosen: the load-time check proves every combination feasible; if that
            # ever failed, serving nothing personalised is the safe side.
            variant = self
        if len(cache) >= _MAX_VARIANTS:
            cache.clear()
        cache[mask] = variant
        return variant

    # -- evaluation ---------------------------------------------------------------------------

    @property
    def effective_default(self) -> FloatArray:
        """The default clamped into the bounds (equal to :attr:`default` when it satisfies them)."""
        return self._default_x

    @property
    def _center(self) -> FloatArray | None:
        return self.default.values if self.max_drift is not None else None

    def clamp(
        self,
        weights: FloatArray | WeightVector | Sequence[float],
        *,
        evidence: float,
        personalized: bool = True,
    ) -> ClampResult:
        """The point satisfying every bound that is closest (Euclidean) to ``weights``.

        Args:
            weights: The user's inferred weights, shape (n_traits,), on the simplex.
            evidence: Effective number of events behind ``weights`` (compared with
                :attr:`min_events`).
            personalized: False serves the default (e.g. the request opted out).

        Returns:
            A :class:`ClampResult`; ``weights`` satisfies floors, caps and drift within 1e-9.

        Raises:
            InvalidWeightsError: ``weights`` has NaN, negative entries, the wrong length or does
                not sum to 1.
            InvalidParameterError: ``evidence`` is not a finite number >= 0.
        """
        w = self._check_weights(weights)
        if isinstance(evidence, bool) or not isinstance(evidence, (int, float, np.number)):
            raise InvalidParameterError(f"evidence must be a number; got {evidence!r}")
        ev = float(evidence)
        if not ev >= 0.0 or math.isinf(ev):
            raise InvalidParameterError(f"evidence must be a finite number >= 0; got {evidence!r}")
        if not self.personalization:
            fired = self.sources.personalization
            why = f"personalization is off ({_cite(fired)})"
            return self._serve_default(fired, why)
        if not personalized:
            return self._serve_default((), "personalization not requested for this call")
        if ev < self.min_events:
            fired = self.sources.min_events
            why = f"evidence {ev:g} < {self.min_events:g} required ({_cite(fired)})"
            return self._serve_default(fired, why)
        lo, up = self.lower, self.upper
        if (
            abs(float(w.sum()) - 1.0) <= _FAST_TOL
            and bool(np.all(w >= lo - _FAST_TOL))
            and bool(np.all(w <= up + _FAST_TOL))
            and (
                self.max_drift is None
                or float(np.abs(w - self.default.values).sum()) <= self.max_drift + _FAST_TOL
            )
        ):
            w = w.copy()
            w.setflags(write=False)
            return ClampResult(w, (), False, "within bounds")
        sol = solve(w, lo, up, self._center, self.max_drift)
        fired = self._fired(sol.z, sol.mu)
        x = sol.x
        x.setflags(write=False)
        reason = f"clamped by {_cite(fired)}" if fired else "renormalized onto the simplex"
        return ClampResult(x, fired, False, reason)

    def _serve_default(self, fired: RuleIds, why: str) -> ClampResult:
        if self._default_fired:
            why += f"; the default itself was clamped by {_cite(self._default_fired)}"
        all_fired = self._sort({*fired, *self._default_fired})
        return ClampResult(self._default_x, all_fired, True, f"{why}: serving the default")

    def _fired(self, z: FloatArray, mu: float) -> RuleIds:
        ids: set[str] = set()
        src = self.sources
        for i in np.flatnonzero(z < self.lower - _FIRE_TOL):
            ids.update(src.lower[i])
        for i in np.flatnonzero(z > self.upper + _FIRE_TOL):
            ids.update(src.upper[i])
        if mu > 0.0:
            ids.update(src.max_drift)
        return self._sort(ids)

    def _sort(self, ids: set[str] | Sequence[str]) -> RuleIds:
        return tuple(sorted(ids, key=lambda r: self._order.get(r, len(self._order))))

    def _check_weights(self, weights: FloatArray | WeightVector | Sequence[float]) -> FloatArray:
        if isinstance(weights, WeightVector):
            if weights.space != self.space:
                raise InvalidWeightsError(
                    f"weights are over traits {list(weights.space.names)}; the policy's traits "
                    f"are {list(self.space.names)}"
                )
            return weights.values
        try:
            w = np.asarray(weights, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidWeightsError(
                f"weights must be an array of numbers; got {weights!r}"
            ) from exc
        if w.ndim != 1:
            raise InvalidWeightsError(
                f"weights must have one entry per trait ({self.space.dim}: "
                f"{list(self.space.names)}); got an array of shape {w.shape}"
            )
        ok = (
            w.shape == (self.space.dim,)
            and bool(np.all(np.isfinite(w)))
            and float(w.min()) >= -SIMPLEX_TOL
            and abs(float(w.sum()) - 1.0) <= SIMPLEX_TOL
        )
        if not ok:
            check_simplex(w, self.space)
            raise InvalidWeightsError(f"weights must be a vector on the simplex; got {w!r}")
        return w


def _cite(ids: Sequence[str]) -> str:
    if not ids:
        return "no rule"
    return ("rule " if len(ids) == 1 else "rules ") + ", ".join(repr(i) for i in ids)


# -- compiling a spec into a policy ------------------------------------------------------------


def policy_version(spec: PolicySpec) -> str:
    """Short sha256 of the canonical JSON of ``spec`` (key order and formatting do not matter).

    Version 1 files hash exactly as before version 2 existed (the new fields are left out), so
    a deployment's audit trail keeps citing the same version for an unchanged file.
    """
    data = spec.model_dump(mode="json")
    if spec.version == 1:
        for key in V2_POLICY_KEYS:
            data.pop(key, None)
        for rule in data.get("bounds", []):
            for key in V2_RULE_KEYS:
                rule.pop(key, None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def policy_vocabulary(spec: PolicySpec) -> ConditionVocabulary:
    """The names ``when:`` conditions of ``spec`` may use."""
    ctx = spec.context
    return ConditionVocabulary(
        topics=frozenset(spec.topics),
        cohorts=frozenset(ctx.cohorts) if ctx.cohorts is not None else None,
        channels=frozenset(ctx.channels) if ctx.channels is not None else None,
        attributes={
            k: (frozenset(v) if v is not None else None) for k, v in ctx.attributes.items()
        },
    )


def compile_conditions(
    spec: PolicySpec, doc: LocatedYAML
) -> tuple[dict[str, CompiledCondition], list[ConfigIssue]]:
    """Compile the ``when``/``unless`` of every rule; issues are located at the bad key."""
    vocab = policy_vocabulary(spec)
    out: dict[str, CompiledCondition] = {}
    issues: list[ConfigIssue] = []
    for i, rule in enumerate(spec.bounds):
        parts = []
        for key in ("when", "unless"):
            raw = getattr(rule, key)
            if raw is None:
                continue
            cond, found = compile_condition(raw, ("bounds", i, key), doc, vocab, rule.id)
            issues.extend(found)
            parts.append((key, cond))
        if not parts:
            continue
        if len(parts) == 1 and parts[0][0] == "when":
            out[rule.id] = parts[0][1]
            continue
        when = next((c for k, c in parts if k == "when"), None)
        unless = (
            next(c for k, c in parts if k == "unless")
            if any(k == "unless" for k, _ in parts)
            else None
        )
        assert unless is not None
        wt = when.test if when is not None else None
        ut = unless.test

        def test(ctx: RequestContext, _w: Any = wt, _u: Any = ut) -> bool:
            return (_w is None or bool(_w(ctx))) and not _u(ctx)

        kids = tuple(c for _, c in parts)
        text = "when ... unless ..." if when is not None else "unless ..."
        out[rule.id] = CompiledCondition(test, text, any(c.uses_member for c in kids), kids)
    return out, issues


def _classifier_issues(spec: PolicySpec, doc: LocatedYAML) -> list[ConfigIssue]:
    """Topics naming a classifier or callable that cannot be loaded: refused at load."""
    from ..guard.classifier import load_guard
    from ..guard.external import import_callable

    issues = []
    for label, topic in spec.topics.items():
        ext = topic.external
        if ext is not None and ext.callable is not None:
            try:
                import_callable(ext.callable)
            except ConfigError as exc:
                issues.append(doc.issue(("topics", label, "external", "callable"), str(exc)))
        ref = topic.classifier
        if ref is None:
            continue
        path = ("topics", label, "classifier")
        try:
            clf = load_guard(ref.name)
        except ConfigError as exc:
            issues.append(doc.issue(path, str(exc)))
            continue
        want = ref.label or label
        if want not in clf.labels_:
            issues.append(
                doc.issue(
                    path,
                    f"classifier {ref.name!r} has no label {want!r}; its labels are "
                    f"{list(clf.labels_)} (set 'label:' to one of them)",
                )
            )
    return issues


def compile_policy(spec: PolicySpec, doc: LocatedYAML) -> BoundsPolicy:
    """Merge the rules of a schema-valid ``spec``, compile its conditions, check feasibility.

    Trait names must already be checked (see the loader). ``doc`` locates issues in the text.
    Feasibility is checked with **every** rule applied at once, conditional ones included:
    merging only tightens (floors max, caps min, radius min), so if all rules together admit
    a weight vector, every combination of rules that can apply at run time does too. Rules
    whose conditions never hold together may therefore still be reported as contradictory;
    the error names them.

    Raises:
        PolicyValidationError: A ``when:`` condition is malformed or names something unknown.
        PolicyInfeasibleError: No weight vector satisfies the bounds; names the rules in conflict.

    Warns:
        PolicyWarning: The default weights violate an unconditional floor or cap (they are
            clamped when served).
    """
    conditions, issues = compile_conditions(spec, doc)
    issues.extend(_classifier_issues(spec, doc))
    if issues:
        raise PolicyValidationError(issues)
    conditional = any(r.conditional and _has_constraint(r) for r in spec.bounds)
    version = policy_version(spec)
    if conditional:
        # Feasibility of the worst case: every rule applied together.
        _build(spec, doc, list(spec.bounds), version=version, warn=False, check=True)
    base_rules = [r for r in spec.bounds if not r.conditional]
    base = _build(spec, doc, base_rules, version=version, warn=True, check=True)
    return BoundsPolicy(
        space=base.space,
        name=base.name,
        version=version,
        default=base.default,
        prior_strength=base.prior_strength,
        personalization=base.personalization,
        exploration=base.exploration,
        lower=base.lower,
        upper=base.upper,
        max_drift=base.max_drift,
        min_events=base.min_events,
        sources=base.sources,
        rules=tuple(spec.bounds),
        source=doc.filename,
        max_step=base.max_step,
        spec=spec,
        conditions=conditions,
        _doc=doc,
    )


def _build(
    spec: PolicySpec,
    doc: LocatedYAML,
    rules: Sequence[BoundRule],
    *,
    version: str,
    warn: bool,
    check: bool,
) -> BoundsPolicy:
    """Merge ``rules`` (their conditions ignored) into a leaf policy."""
    space = TraitSpace(spec.traits)
    d = space.dim
    lower, upper = np.zeros(d), np.ones(d)
    lo_src: list[list[str]] = [[] for _ in range(d)]
    up_src: list[list[str]] = [[] for _ in range(d)]
    # where[rule id] = index in bounds, to locate issues
    where = {r.id: i for i, r in enumerate(spec.bounds)}
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
        # A value equal to the implicit one (floor 0, cap 1) constrains nothing: cite no rule.
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

    def at(rid: str, *key: str | int) -> tuple[str | int, ...]:
        return ("bounds", where[rid], *key)

    issues: list[ConfigIssue] = []
    conflict: list[str] = []
    for i, name in enumerate(space.names):
        if lower[i] > upper[i]:
            rids = _unique([*lo_src[i], *up_src[i]])
            conflict.extend(rids)
            issues.append(
                doc.issue(
                    at(lo_src[i][0], "min", name),
                    f"floor {lower[i]:g} on {name!r} ({_cite(lo_src[i])}) is above its cap "
                    f"{upper[i]:g} ({_cite(up_src[i])}); no weight vector satisfies both",
                    lo_src[i][0],
                )
            )
    floor_rules = _unique([r for s in lo_src for r in s])
    cap_rules = _unique([r for s in up_src for r in s])
    if float(lower.sum()) > 1.0 + FEASIBILITY_TOL:
        conflict.extend(floor_rules)
        parts = ", ".join(
            f"{n} >= {lower[i]:g} ({_cite(lo_src[i])})"
            for i, n in enumerate(space.names)
            if lo_src[i]
        )
        issues.append(
            doc.issue(
                at(floor_rules[0], "min"),
                f"floors sum to {float(lower.sum()):.6g} > 1, so no weight vector satisfies them: "
                f"{parts}; lower some of them",
                floor_rules[0],
            )
        )
    if float(upper.sum()) < 1.0 - FEASIBILITY_TOL:
        conflict.extend(cap_rules)
        parts = ", ".join(
            f"{n} <= {upper[i]:g} ({_cite(up_src[i])})" for i, n in enumerate(space.names)
        )
        issues.append(
            doc.issue(
                at(cap_rules[0], "max"),
                f"caps sum to {float(upper.sum()):.6g} < 1, so no weight vector satisfies them: "
                f"{parts}; raise some of them",
                cap_rules[0],
            )
        )
    c = default.values
    violated = [
        (i, name) for i, name in enumerate(space.names) if c[i] < lower[i] or c[i] > upper[i]
    ]
    if not issues and drift is not None:
        dist = l1_distance_to_feasible(c, lower, upper)
        if dist > drift + FEASIBILITY_TOL:
            involved = [
                r for i, _ in violated for r in (lo_src[i] if c[i] < lower[i] else up_src[i])
            ]
            rids = _unique([*drift_src, *involved])
            conflict.extend(rids)
            issues.append(
                doc.issue(
                    at(drift_src[0], "max_l1_from_default"),
                    f"max_l1_from_default {drift:g} ({_cite(drift_src)}) is smaller than the L1 "
                    f"distance {dist:.6g} from the default weights to the nearest vector meeting "
                    f"the floors and caps ({_cite(_unique(involved))}); every vector breaks one; "
                    "raise the radius or move the default",
                    drift_src[0],
                )
            )
    if issues and check:
        if len(rules) > len([r for r in rules if not r.conditional]):
            cond = [r.id for r in rules if r.conditional and r.id in conflict]
            if cond:
                issues.append(
                    doc.issue(
                        ("bounds", where[cond[0]]),
                        f"conditional rules {cond} are checked as if they all applied at once "
                        "(any combination of them may hold at run time); if their conditions "
                        "cannot hold together, make that explicit with 'unless:' on one of them "
                        "or loosen a bound",
                        cond[0],
                    )
                )
        raise PolicyInfeasibleError(issues, _unique(conflict))
    for i, name in violated if warn else []:
        if c[i] < lower[i]:
            bound, src = f"floor {lower[i]:g}", lo_src[i]
        else:
            bound, src = f"cap {upper[i]:g}", up_src[i]
        issue = doc.issue(
            ("defaults", "weights", name),
            f"default weight {c[i]:g} for {name!r} breaks the {bound} ({_cite(src)}); the default "
            "is clamped into the bounds when served",
            src[0],
        )
        warnings.warn(str(issue), PolicyWarning, stacklevel=4)

    return BoundsPolicy(
        space=space,
        name=spec.name or _stem(doc.filename),
        version=version,
        default=default,
        prior_strength=spec.defaults.prior_strength,
        personalization=not pers_src,
        exploration=not expl_src,
        lower=lower,
        upper=upper,
        max_drift=drift,
        min_events=min_events,
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
        source=doc.filename,
        max_step=step,
        spec=spec,
    )


def _unique(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _stem(filename: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    return stem.strip("<>") or "policy"
