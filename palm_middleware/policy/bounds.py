"""The compiled bounds policy: the immutable evaluator applied on every decision.

:func:`~.compiler.compile_policy` builds a :class:`BoundsPolicy` once, at load (merged bounds,
condition plan, clamped default); :meth:`BoundsPolicy.evaluate` and :meth:`BoundsPolicy.clamp`
are then pure functions of their arguments. This module imports neither the loader nor the
compiler: a combination of conditional rules met at run time is merged with :mod:`.merge`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..exceptions import InvalidParameterError, InvalidWeightsError
from ..traits import SIMPLEX_TOL, TraitSpace, WeightVector, check_simplex
from ..types import FloatArray
from .conditions import CompiledCondition, RequestContext
from .merge import (
    GLOBAL_EXPLORATION,
    GLOBAL_PERSONALIZATION,
    BoundSources,
    MergedBounds,
    RuleIds,
    cite,
    has_constraint,
    merge_rules,
)
from .models import ACTIONS, V2_POLICY_KEYS, BoundRule, PolicySpec
from .projection import solve

__all__ = ["BoundsPolicy", "ClampResult", "Evaluation"]

# A bound counts as fired when the unclipped optimum lies beyond it by more than this.
_FIRE_TOL = 1e-9
# Slack on the fast path's feasibility test (the result must satisfy bounds within 1e-9).
_FAST_TOL = 1e-12

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
            if p.rule.conditional and has_constraint(p.rule):
                cmask |= p.bit
        always = 0
        for p in plain:
            if p.test is None:
                always |= p.bit
        tests = tuple((p.bit, p.test) for p in plain if p.test is not None)
        return cls(tuple(out), plain, member, tuple(acting), cmask, always, tests)


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


@dataclass(frozen=True, eq=False)
class BoundsPolicy:
    """A loaded, merged and feasibility-checked bounds policy.

    Build one with :func:`~palm_middleware.policy.load_policy`,
    :func:`~palm_middleware.policy.parse_policy`, :func:`~palm_middleware.policy.policy_from_data`
    or :func:`~palm_middleware.policy.default_policy` (all through
    :func:`~.compiler.compile_policy`). Merging: floors take the max, caps the min, the drift
    radius the min, ``min_events`` the max, switches the AND; :attr:`sources` keeps which rules
    produced each effective bound. Immutable: everything derived is computed when compiled; the
    only state is a bounded memo of the combinations of conditional rules met so far (2^k of
    them cannot all be merged ahead).
    """

    space: TraitSpace
    """The trait space."""
    name: str
    """Policy name."""
    version: str
    """Content hash: short sha256 of the canonical policy content, cited by every decision (the
    file's schema number is :attr:`schema_version`)."""
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
    _order: Mapping[str, int] = field(kw_only=True, repr=False)
    _plan: _Plan = field(kw_only=True, repr=False)
    _default_x: FloatArray = field(kw_only=True, repr=False)
    _default_fired: RuleIds = field(kw_only=True, repr=False)
    _memo: _Memo = field(kw_only=True, repr=False)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def compiled(
        cls,
        merged: MergedBounds,
        *,
        spec: PolicySpec | None,
        name: str,
        version: str,
        source: str | None,
        rules: tuple[BoundRule, ...],
        conditions: Mapping[str, CompiledCondition],
    ) -> BoundsPolicy:
        """The evaluator of ``merged`` bounds; every derived value is computed here, once.

        Called by the compiler (after its feasibility check) and for each combination of
        conditional rules met at run time.
        """
        order = {GLOBAL_PERSONALIZATION: -2, GLOBAL_EXPLORATION: -1}
        order.update({r.id: i for i, r in enumerate(rules)})
        center = merged.default.values if merged.max_drift is not None else None
        # The default is served often (cold start, opt-out): clamp it once.
        sol = solve(merged.default.values, merged.lower, merged.upper, center, merged.max_drift)
        default_x = sol.x
        default_x.setflags(write=False)
        return cls(
            space=merged.space,
            name=name,
            version=version,
            default=merged.default,
            prior_strength=spec.defaults.prior_strength if spec is not None else 10.0,
            personalization=merged.personalization,
            exploration=merged.exploration,
            lower=merged.lower,
            upper=merged.upper,
            max_drift=merged.max_drift,
            min_events=merged.min_events,
            sources=merged.sources,
            rules=rules,
            source=source,
            max_step=merged.max_step,
            spec=spec,
            conditions=conditions,
            _order=order,
            _plan=_Plan.build(rules, conditions),
            _default_x=default_x,
            _default_fired=_fired(merged, order, sol.z, sol.mu),
            _memo=_Memo(),
        )

    @property
    def schema_version(self) -> int:
        """The policy file's schema number (``version:`` in the YAML): 1 or 2."""
        return self.spec.schema_version if self.spec is not None else 1

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain data (without defaults left unset); inverse of
        :func:`~palm_middleware.policy.policy_from_data`."""
        version = self.schema_version
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
            if not any(v is not None for v in extra.get("learning", {}).values()):
                extra.pop("learning", None)
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
        masks = self._memo.masks
        memo = masks.get(mask)
        if memo is None:  # ids and winning action depend on the mask only: memoize them
            ids = tuple(pr.rule.id for pr in plan.rules if mask & pr.bit)
            win = next((pr.rule for pr in plan.by_action if mask & pr.bit), None)
            memo = (ids, win)
            if len(masks) >= _MAX_VARIANTS:
                masks.clear()
            masks[mask] = memo
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
        cache = self._memo.variants
        hit = cache.get(mask)
        if hit is not None:
            return hit
        if self.spec is None:  # pragma: no cover - policies with conditions have a spec
            return self
        extra = {id(pr.rule) for pr in self._plan.rules if mask & pr.bit}
        # The load-time check proved every combination feasible: merging cannot fail here.
        ordered = [r for r in self.spec.bounds if not r.conditional or id(r) in extra]
        merged = merge_rules(self.spec, ordered)
        variant = BoundsPolicy.compiled(
            merged,
            spec=self.spec,
            name=self.name,
            version=self.version,
            source=self.source,
            rules=merged.rules,
            conditions={},
        )
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
            why = f"personalization is off ({cite(fired)})"
            return self._serve_default(fired, why)
        if not personalized:
            return self._serve_default((), "personalization not requested for this call")
        if ev < self.min_events:
            fired = self.sources.min_events
            why = f"evidence {ev:g} < {self.min_events:g} required ({cite(fired)})"
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
        fired = _fired(self, self._order, sol.z, sol.mu)
        x = sol.x
        x.setflags(write=False)
        reason = f"clamped by {cite(fired)}" if fired else "renormalized onto the simplex"
        return ClampResult(x, fired, False, reason)

    def _serve_default(self, fired: RuleIds, why: str) -> ClampResult:
        if self._default_fired:
            why += f"; the default itself was clamped by {cite(self._default_fired)}"
        all_fired = self._sort({*fired, *self._default_fired})
        return ClampResult(self._default_x, all_fired, True, f"{why}: serving the default")

    def _sort(self, ids: set[str] | Sequence[str]) -> RuleIds:
        return _sort(self._order, ids)

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


class _Memo:
    """Per-combination results of the conditional rules, bounded by ``_MAX_VARIANTS`` each.

    ``variants``: merged policy by mask of active constraint rules; ``masks``: (active rule ids,
    winning action rule) by mask of active rules. A cache, not state: every entry is a pure
    function of the compiled policy and its key.
    """

    __slots__ = ("masks", "variants")

    def __init__(self) -> None:
        self.variants: dict[int, BoundsPolicy] = {}
        self.masks: dict[int, tuple[RuleIds, BoundRule | None]] = {}


def _fired(
    bounds: MergedBounds | BoundsPolicy, order: Mapping[str, int], z: FloatArray, mu: float
) -> RuleIds:
    """The rules whose bound the projection of ``z`` had to enforce (``mu``: drift multiplier)."""
    ids: set[str] = set()
    src = bounds.sources
    for i in np.flatnonzero(z < bounds.lower - _FIRE_TOL):
        ids.update(src.lower[i])
    for i in np.flatnonzero(z > bounds.upper + _FIRE_TOL):
        ids.update(src.upper[i])
    if mu > 0.0:
        ids.update(src.max_drift)
    return _sort(order, ids)


def _sort(order: Mapping[str, int], ids: set[str] | Sequence[str]) -> RuleIds:
    return tuple(sorted(ids, key=lambda r: order.get(r, len(order))))
