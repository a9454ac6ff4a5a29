"""Routing within the bounds: the member for a request once the policy has evaluated it.

:class:`BoundedRouter` turns a posterior summary and a policy :class:`Evaluation` into a
:class:`Route`: a pinned member, the mean, a Thompson draw (clamped on its own) or the robust
choice, where a route that would trigger further member-conditioned rules falls back to the
mean. It also serves the deployment default when inference failed, answers A/B comparison
requests and writes the explanation a :class:`~palm_middleware.decision.Decision` carries.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import numpy as np

from .exceptions import InvalidParameterError
from .policy.bounds import Evaluation
from .policy.conditions import RequestContext
from .routing import Route, RouteMode, Router
from .types import FloatArray, MemberId

if TYPE_CHECKING:
    from .policy import BoundsPolicy, ClampResult
    from .portfolio.manifest import Portfolio
    from .preferences.model import PosteriorSummary

__all__ = ["MODES", "BoundedRouter", "check_fits"]

logger = logging.getLogger("palm_middleware")

MODES = ("mean", "thompson", "robust")


def check_fits(policy: BoundsPolicy, portfolio: Portfolio) -> None:
    """Refuse a policy that does not fit the portfolio (traits, pinned and named members).

    Raises:
        InvalidParameterError: naming the rule and the member or traits at fault.
    """
    if portfolio.space.names != policy.space.names:
        raise InvalidParameterError(
            f"policy traits {list(policy.space.names)} differ from portfolio traits "
            f"{list(portfolio.space.names)}; they must be the same, in the same order"
        )
    members = list(portfolio.ids)
    for rid, member in policy.pinned_members().items():
        if member not in portfolio:
            raise InvalidParameterError(
                f"{policy.source}: rule {rid!r}: action pin: member {member!r} is not in "
                f"the portfolio; members are {members}"
            )
    for rid, names in policy.condition_members().items():
        unknown = sorted(n for n in names if n not in portfolio)
        if unknown:
            raise InvalidParameterError(
                f"{policy.source}: rule {rid!r}: condition names unknown member(s) "
                f"{unknown}; members are {members}"
            )


class BoundedRouter:
    """Chooses the member for an evaluated request.

    Args:
        router: the portfolio's router.
        mode: ``"mean"``, ``"thompson"`` or ``"robust"`` (see :class:`~palm_middleware.Palm`).
        rng: the generator of Thompson draws (shared by threads under a lock).
        explore_cost: the most a Thompson draw may cost: its member's value, under the clamped
            mean weights, is at least ``1 - explore_cost`` times the mean member's; a costlier
            draw serves the mean member.
        pair_cost: the same bound on the second member of an A/B pair (a costlier comparison
            is not served). Looser than ``explore_cost`` by default: a pair is asked only now
            and then, both replies are shown, and the user picks the one they want; at 0.2
            learning from pairs slowed to a third (BENCHMARKS.md, "A/B pairs").
    """

    def __init__(
        self,
        router: Router,
        mode: RouteMode,
        rng: np.random.Generator,
        explore_cost: float = 0.2,
        pair_cost: float = 0.4,
    ) -> None:
        if mode not in MODES:
            raise InvalidParameterError(f"mode must be one of {MODES}; got {mode!r}")
        for name, cost in (("explore_cost", explore_cost), ("pair_cost", pair_cost)):
            if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 <= cost <= 1:
                raise InvalidParameterError(f"{name} must be in [0, 1]; got {cost!r}")
        self.explore_cost = float(explore_cost)
        self.pair_cost = float(pair_cost)
        self.router = router
        self.portfolio = router.portfolio
        self.mode: RouteMode = mode
        self._rng = rng
        self._rng_lock = threading.Lock()

    def choose(self, weights: FloatArray) -> str:
        """The member the mean route picks for ``weights`` (for member-conditioned rules)."""
        return self.router.route(weights).member

    def pinned(self, ev: Evaluation) -> Route | None:
        """The route to the member a ``pin`` rule names, or None."""
        if ev.action != "pin" or ev.member is None:
            return None
        scores = self.portfolio.rewards @ ev.clamp.weights
        i = self.portfolio.index(ev.member)
        return Route(
            member=ev.member,
            index=i,
            value=float(scores[i]),
            runner_up=None,
            margin=0.0,
            mode="mean",
            scores=scores,
        )

    def route(
        self,
        summary: PosteriorSummary,
        ev: Evaluation,
        ctx: RequestContext,
        policy: BoundsPolicy,
        *,
        draw: bool = True,
    ) -> tuple[Route, ClampResult]:
        """Route, and the clamp whose weights were used (in Thompson mode, the draw's).

        ``draw=False``: no Thompson draw (the generator is untouched); that mode routes the mean.
        """
        clamp = ev.clamp
        pinned = self.pinned(ev)
        if pinned is not None:
            return pinned, clamp
        mode = self.mode if draw or self.mode != "thompson" else "mean"
        bounds = ev.bounds
        if clamp.used_default or (mode == "thompson" and not ev.exploration):
            mode = "mean"
        # Rules conditioned on the member were settled for the mean route; another mode may
        # only pick a member that triggers no further rule.
        member_rules = bool(policy.condition_members())
        if mode == "thompson":
            with self._rng_lock:
                sample = summary.sample(1, self._rng)[0]
            drawn = bounds.clamp(sample, evidence=summary.evidence)
            route = self.router.route(drawn.weights, mode="thompson")
            cheap = self.within_cost(self.router.scores(clamp.weights), route.index)
            if cheap and (not member_rules or member_ok(policy, ctx, ev, route.member)):
                return route, drawn
        if mode == "robust":
            lo = np.maximum(np.minimum(summary.lower, clamp.weights), bounds.lower)
            hi = np.minimum(np.maximum(summary.upper, clamp.weights), bounds.upper)
            if lo.sum() <= 1 <= hi.sum():
                route = self.router.route_robust(lo, hi)
                if not member_rules or member_ok(policy, ctx, ev, route.member):
                    return route, clamp
        return self.router.route(clamp.weights), clamp

    def within_cost(self, mean: FloatArray, i: int, cost: float | None = None) -> bool:
        """Whether member ``i`` loses at most ``cost`` (default ``explore_cost``) of the best
        value, ``mean`` being each member's value under the (clamped) mean weights: the bound
        on what is shown."""
        top = float(mean.max())
        bound = self.explore_cost if cost is None else cost
        return top - float(mean[i]) <= bound * abs(top)

    def refuses(
        self,
        member: MemberId,
        route: Route,
        ev: Evaluation,
        ctx: RequestContext,
        policy: BoundsPolicy,
    ) -> str | None:
        """Why the policy would not serve ``member`` to this user here (``route``: what it
        serves), or None: a member it could have served, so a pair may start from it."""
        if member == route.member:
            return None
        if ev.action != "clamp":
            return f"rule {ev.action_rule!r} decides the member ({ev.action}: {route.member!r})"
        if policy.condition_members() and not member_ok(policy, ctx, ev, member):
            return f"rules conditioned on the member apply to {member!r}"
        return None

    def pair_candidates(
        self, served: int, ev: Evaluation, ctx: RequestContext, policy: BoundsPolicy
    ) -> tuple[list[int], str | None]:
        """The members that may be shown next to ``served`` in an A/B pair, or why none may.

        The second member is shown to the user like a Thompson draw, so it obeys the same
        rules: exploration allowed, no rule deciding the member, no member-conditioned rule
        triggered, and at most ``pair_cost`` lost (:meth:`within_cost`).
        """
        if ev.action != "clamp":
            return [], f"rule {ev.action_rule!r} decides the member ({ev.action})"
        if not ev.exploration:
            return [], "the policy does not allow exploration here"
        mean = self.router.scores(ev.clamp.weights)
        ids = self.portfolio.ids
        member_rules = bool(policy.condition_members())
        out = [
            j
            for j in range(len(ids))
            if j != served
            and self.within_cost(mean, j, self.pair_cost)
            and (not member_rules or member_ok(policy, ctx, ev, ids[j]))
        ]
        if not out:
            return [], (
                f"no member but {ids[served]!r} is within the pair cost bound "
                f"(pair_cost {self.pair_cost:g} of the best value under the mean weights)"
            )
        return out, None

    def compare(
        self,
        route: Route,
        member: MemberId,
        ev: Evaluation,
        ctx: RequestContext,
        policy: BoundsPolicy,
    ) -> tuple[Route, str | None]:
        """``member`` served as one side of an A/B question, or ``route`` and why not."""
        if member not in self.portfolio:
            return route, f"{member!r} is not a member of the portfolio"
        if ev.action != "clamp":
            return route, f"rule {ev.action_rule!r} decides the member ({ev.action})"
        if not ev.exploration:
            return route, "the policy does not allow exploration here"
        if policy.condition_members() and not member_ok(policy, ctx, ev, member):
            return route, f"rules conditioned on the member apply to {member!r}"
        i = self.portfolio.index(member)
        if not self.within_cost(self.router.scores(ev.clamp.weights), i, self.pair_cost):
            return route, (
                f"{member!r} would cost more than pair_cost ({self.pair_cost:g}) "
                "of the best value under the mean weights"
            )
        scores = route.scores
        return Route(
            member=member,
            index=i,
            value=float(scores[i]),
            runner_up=route.member,
            margin=float(scores[i] - scores[route.index]),
            mode="compare",
            scores=scores,
        ), None

    def fallback(self, policy: BoundsPolicy, ctx: RequestContext) -> Evaluation:
        """The deployment default under the rules of this context; never raises."""
        for c in (ctx, RequestContext()):
            try:
                return policy.evaluate(
                    c, policy.default.values, evidence=0.0, personalized=False, choose=self.choose
                )
            except Exception:  # pragma: no cover - the default always evaluates
                logger.exception("evaluating the default failed; trying without context")
        # Last resort: the unconditional bounds' clamped default.
        clamp = policy.clamp(policy.default.values, evidence=0.0, personalized=False)
        return Evaluation(
            clamp=clamp, bounds=policy, active=(), action="clamp", action_rule=None
        )  # pragma: no cover

    def default_route(self, ev: Evaluation) -> Route:
        """The route of a fallback evaluation: its pinned member or its clamped default."""
        return self.pinned(ev) or self.router.route(ev.clamp.weights)


def member_ok(policy: BoundsPolicy, ctx: RequestContext, ev: Evaluation, member: str) -> bool:
    """Whether serving ``member`` triggers no rule beyond those already active."""
    return set(policy.active_rules(ctx.with_member(member))) <= (
        set(ev.active) | {r.id for r in policy.rules if not r.conditional}
    )


def explain(
    route: Route,
    ev: Evaluation,
    fallback: str | None,
    opted_out: bool,
    ctx: RequestContext,
    policy: BoundsPolicy,
) -> str:
    """The one-line explanation of a decision (member, rules, topics, fallback)."""
    clamp = ev.clamp
    parts = [f"chose {route.explain()}"]
    if ev.action == "pin":
        parts.append(f"member pinned by rule {ev.action_rule!r}")
    elif ev.action == "use_default":
        parts.append(f"rule {ev.action_rule!r} serves the deployment default")
    if ctx.topics:
        parts.append(f"topics: {', '.join(sorted(ctx.topics))}")
    if ctx.language is not None:
        parts.append(f"language: {ctx.language}")
    if fallback is not None:
        parts.append(f"inference failed ({fallback}); served the deployment default")
    elif opted_out:
        parts.append("user opted out of personalization")
    if clamp.rules_fired:
        parts.append(f"policy {policy.version}: {clamp.reason}")
    return "; ".join(parts)
