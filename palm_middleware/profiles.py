"""The users' stored profiles: reads, atomic updates, the privacy setting and retention.

:class:`Profiles` is where learning meets the store. Each event goes through
``Store.apply_event``, whose update (:meth:`LearningState.rebuild`) runs inside the store's
transaction, so concurrent feedback never loses an update. The policy's ``privacy`` section
decides what is kept: ``weights_only`` folds each event into the profile and deletes its row
(retries are recognized by a digest of the event id), ``events_with_text`` keeps the redacted
text of cue messages, and ``retention_days`` bounds how long event rows live.

The user's population row (the aggregates the population prior is fitted from) is written in
the same transaction as the profile, and never for an opted-out user; the prior itself is
refitted off the request path (:class:`~palm_middleware.population_feed.PopulationFeed`).
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from .decision import Profile
from .policy.models import PrivacySpec
from .policy.redact import redact
from .preferences.state import LearningState, event_digest
from .stores.base import EventRecord, ProfileRecord, Store

if TYPE_CHECKING:
    from .policy import BoundsPolicy
    from .population_feed import PopulationFeed
    from .portfolio.manifest import Portfolio
    from .preferences.model import PosteriorSummary, PreferenceModel
    from .preferences.resolve import Resolved
    from .types import FloatArray

__all__ = ["Profiles", "privacy_of"]


def privacy_of(policy: BoundsPolicy) -> PrivacySpec:
    """The policy's privacy section (the defaults when it has none)."""
    return policy.spec.privacy if policy.spec is not None else PrivacySpec()


class Profiles:
    """Reads and updates users' profiles in ``store``.

    Args:
        store: where profiles and events live.
        learning: how evidence becomes a posterior.
        clock: time source; an update takes its time inside the store's transaction.
        feed: keeps the population prior current after writes; None: refit here, after the
            update, every ``learning.refresh_every`` changes.
    """

    def __init__(
        self,
        store: Store,
        learning: LearningState,
        clock: Callable[[], float],
        feed: PopulationFeed | None = None,
    ) -> None:
        self.store = store
        self.learning = learning
        self.clock = clock
        self.feed = feed
        self._fold_lock = threading.Lock()
        # The user's population row is written with the profile (none without a population).
        self._row = learning.population_row if learning.population is not None else None

    def population_changed(self, policy: BoundsPolicy, *, removal: bool = False) -> None:
        """After a write that changed a population row (outside its transaction)."""
        if self.learning.population is None:
            return
        if self.feed is not None:
            self.feed.changed(removal=removal)
        else:
            self.learning.refresh_population(policy, 0 if removal else self.learning.refresh_every)

    def summary(self, key: str, now: float, policy: BoundsPolicy) -> tuple[PosteriorSummary, bool]:
        """The user's posterior summary at ``now`` and whether they opted out."""
        return self.learning.summary(self.store.get_profile(key), now, policy)

    def apply(
        self,
        key: str,
        event_id: str,
        event: Resolved,
        now: float,
        policy: BoundsPolicy,
        *,
        limit: float | None = None,
        text: str | None = None,
    ) -> bool:
        """Store one resolved event and update the profile atomically.

        Returns:
            False when an event with this id was already recorded (a retried delivery).
        """
        privacy = privacy_of(policy)
        payload = {"obs": [o.to_dict() for o in event.obs], **event.extra}
        if text is not None and privacy.store == "events_with_text":
            payload["text"] = redact(text, privacy.redact)
        record = EventRecord(
            event_id=f"{key}:{event_id}", user_key=key, kind=event.kind, payload=payload, ts=now
        )
        fold = privacy.store == "weights_only"

        def update(profile: ProfileRecord | None, events: list[EventRecord]) -> dict[str, Any]:
            return self.learning.rebuild(
                profile, events, now=float(self.clock()), policy=policy, limit=limit, fold=fold
            )

        with self._fold_lock if fold else nullcontext():
            if fold:
                # The row of an earlier delivery is gone: recognize the retry by its digest.
                current = self.store.get_profile(key)
                if current is not None and event_digest(record.event_id) in current.state.get(
                    "folded", []
                ):
                    return False
            added, stored = self.store.apply_event(
                record, update, window=1, now=now, population=self._row
            )
            if added and stored is not None:
                self.learning.observe(key, stored.state)
            if fold:
                # weights_only: the event now lives only inside the profile's grouped evidence.
                self.store.purge_events(before=math.inf, user_key=key)
        if added:
            self.population_changed(policy)  # outside the transaction
        return added

    def set_opt_out(self, key: str, opted_out: bool, now: float, policy: BoundsPolicy) -> None:
        """Switch personalization off (or on), through ``apply_event`` like any feedback."""
        kind = "opt_out" if opted_out else "opt_in"
        # Through apply_event, so it cannot overwrite a feedback update racing with it.
        record = EventRecord(f"{key}:{uuid.uuid4().hex}", key, kind, {}, now)

        def update(profile: ProfileRecord | None, events: list[EventRecord]) -> dict[str, Any]:
            return self.learning.rebuild(profile, events, now=float(self.clock()), policy=policy)

        # The opt-out deletes the user's population row in the same transaction.
        _, stored = self.store.apply_event(record, update, window=1, now=now, population=self._row)
        if opted_out or stored is None:
            self.learning.forget(key)  # opted-out users never shape anyone's prior
        else:
            self.learning.observe(key, stored.state)
        if privacy_of(policy).store == "weights_only":
            self.store.purge_events(before=math.inf, user_key=key)
        self.population_changed(policy, removal=opted_out)

    def view(
        self, key: str, now: float, policy: BoundsPolicy, portfolio: Portfolio, *, recent: int
    ) -> Profile:
        """What the user may see: inferred weights, their uncertainty, what the policy applies."""
        summary, opted_out = self.summary(key, now, policy)
        clamp = policy.clamp(summary.mean, evidence=summary.evidence, personalized=not opted_out)
        names = portfolio.space.names

        def named(a: FloatArray) -> dict[str, float]:
            # Unrounded: weights read from a profile go back into the router as they are
            # (rounded, they may sum to 0.999999 and be refused).
            return {n: float(v) for n, v in zip(names, a)}

        events = [
            {"kind": e.kind, "ts": e.ts, **{k: v for k, v in e.payload.items() if k != "obs"}}
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

    def export(self, key: str, policy: BoundsPolicy, profile: Profile) -> dict[str, Any]:
        """Everything stored about the user under ``key``, as JSON-ready data."""
        record = self.store.get_profile(key)
        return {
            "user_key": key,
            "policy_version": policy.version,
            "privacy": privacy_of(policy).model_dump(mode="json"),
            "profile": profile.to_dict(),
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

    def purge_expired(self, policy: BoundsPolicy, now: float) -> int:
        """Delete event rows older than ``privacy.retention_days`` (all of them: ``weights_only``).

        The profile's grouped evidence already holds what every event taught, so deleting event
        rows changes storage, never routing.

        Returns:
            The number of events deleted.
        """
        privacy = privacy_of(policy)
        if privacy.store == "weights_only":
            cutoff = math.inf
        elif privacy.retention_days is None:
            return 0
        else:
            cutoff = now - privacy.retention_days * 86400.0
        return sum(
            self.store.purge_events(before=cutoff, user_key=key)
            for key in self.store.users_with_events_before(cutoff)
        )

    def pair_state(
        self, key: str, now: float, policy: BoundsPolicy
    ) -> tuple[PosteriorSummary, bool, PreferenceModel]:
        """The served summary, the opt-out flag and the particle posterior (cached: a refit
        only when it is missing or stale) of one profile read, for an A/B pair."""
        record = self.store.get_profile(key)
        summary, opted_out = self.learning.summary(record, now, policy)
        return summary, opted_out, self.learning.current(key, record, now, policy)
