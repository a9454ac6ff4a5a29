"""Keeps this process's population prior in step with the store's population rows.

The store is the source of truth: every contributing user has one population row, written in
the feedback transaction and deleted with the user (``palm_middleware.stores.base``). Each
process mirrors the rows in a :class:`~palm_middleware.preferences.population.Population`
and refits the prior from them; the fit depends on the rows alone, so replicas sharing a store
(and a restarted process) fit the same prior.

When the refit runs:

* **background** (``interval`` seconds, the default without a ``random_state``): a daemon
  thread re-reads the rows when the store's population stamp changed (any replica's write), and
  refits when anything changed, at most once per ``interval`` (and at most 5% of the time: a
  slower refresh, i.e. a large population, waits longer); the new prior replaces the old in
  one assignment, and requests read the last one fitted. A feedback request only writes its
  user's row (in its own transaction). An erasure, reset or opt-out wakes the thread at once.
* **sync** (``interval=None``, the default with a ``random_state``): after every
  ``refresh_every`` local changes, and after every removal, the caller's thread re-reads and
  refits, so same-seed runs with the same calls are identical (``palm simulate``, tests).

A failed read (store unavailable) keeps the last prior and is retried later: the prior only
decides where new users start, never the bounds.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._daemon import ProcessDaemon
from .exceptions import InvalidParameterError, StoreError

if TYPE_CHECKING:
    from .policy import BoundsPolicy
    from .preferences.population import PopulationPrior
    from .preferences.state import LearningState
    from .stores.base import Store

__all__ = ["PopulationFeed"]

_log = logging.getLogger("palm_middleware")

#: The background thread spends at most about 1/DUTY of the time refreshing: after a refresh
#: that took s seconds it waits max(interval, DUTY * s) (a large population is re-read less
#: often rather than taking the CPU and the GIL from requests).
DUTY = 20.0

#: Seconds between full re-reads even when the stamp did not change (a safety net for a
#: change the stamp cannot see, e.g. a concurrent PostgreSQL commit numbered out of order).
FULL_READ_EVERY = 60.0


class PopulationFeed:
    """Loads the store's population rows into ``learning.population`` and refits the prior.

    Args:
        store: where the rows live.
        learning: whose population mirror and fitted prior are kept current.
        policy: the policy in force (read at every refit).
        interval: seconds between background refits; None refits synchronously (see above).
    """

    def __init__(
        self,
        store: Store,
        learning: LearningState,
        policy: Callable[[], BoundsPolicy],
        *,
        interval: float | None,
    ) -> None:
        if interval is not None and not interval > 0:
            raise InvalidParameterError(
                f"population_refresh must be > 0 seconds or 'sync'; got {interval!r}"
            )
        self.store = store
        self.learning = learning
        self.policy = policy
        self.interval = interval
        self.refits = 0
        """Refits made (any thread)."""
        self._lock = threading.Lock()  # one refresh at a time
        self._stamp: tuple[int, ...] | None = None
        self._read_at = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._daemon = ProcessDaemon(
            "palm-population", _run, (weakref.ref(self), self._wake, self._stop, interval)
        )

    @property
    def background(self) -> bool:
        """Whether refits run on the background thread."""
        return self.interval is not None

    def start(self) -> None:
        """Load the stored rows and fit once now (a restart keeps the prior), then start the
        background thread (if any). A store that cannot be read leaves the policy default."""
        try:
            self.refresh(force=True)
        except StoreError as exc:
            _log.warning("population prior: could not read the store's rows (%s); retrying", exc)
        self._ensure_thread()

    def changed(self, *, removal: bool = False) -> None:
        """Called after a write that changed a population row (outside its transaction).

        Background: nothing to do but keep the thread alive (a removal wakes it). Sync: refit
        here when the fit is ``refresh_every`` changes old, or after a removal.
        """
        if self.interval is None:
            try:
                self.refresh(force=removal, min_changes=self.learning.refresh_every)
            except StoreError as exc:
                _log.warning("population prior: refresh failed (%s); keeping the last one", exc)
            return
        self._ensure_thread()
        if removal:
            self._wake.set()

    def refresh(self, *, force: bool = False, min_changes: int = 1) -> PopulationPrior | None:
        """Re-read the rows if the store's stamp changed, and refit if the mirror changed by at
        least ``min_changes`` users since the last fit (``force``: read and refit anyway).

        Returns:
            The prior now served, or None without a population.
        """
        pop = self.learning.population
        if pop is None:
            return None
        policy = self.policy()
        with self._lock:
            if (
                not force
                and self.interval is None
                and not self.learning.population_stale(policy, min_changes)
            ):
                return self.learning.population_prior(policy)
            self._read(force)
            before = self.learning.fitted_revision(policy)
            prior = self.learning.refresh_population(policy, 0 if force else min_changes)
            if self.learning.fitted_revision(policy) != before or force:
                self.refits += 1
            return prior

    def _read(self, force: bool) -> None:
        """Mirror the store's rows (when they changed); a load overlapped by a local removal
        is read again, so an erased user never comes back from an older read."""
        pop = self.learning.population
        assert pop is not None
        now = time.monotonic()
        for _ in range(5):
            stamp = self.store.population_stamp()
            if not force and stamp == self._stamp and now - self._read_at < FULL_READ_EVERY:
                return
            removals = pop.removals
            rows = self.store.population_rows()
            if pop.load(rows, removals=removals):
                self._stamp, self._read_at = stamp, now
                return
        _log.debug("population prior: rows kept changing under the read; next time")

    def close(self) -> None:
        """Stop the background thread (idempotent); the last prior keeps being served."""
        self._stop.set()
        self._wake.set()

    def _ensure_thread(self) -> None:
        if self.interval is None or self._stop.is_set():
            return
        self._daemon.ensure()


def _run(
    ref: weakref.ref[PopulationFeed],
    wake: threading.Event,
    stop: threading.Event,
    interval: float,
) -> None:
    """The background loop; it holds the feed weakly, so a dropped ``Palm`` ends it."""
    wait = interval
    while not stop.is_set():
        wake.wait(wait)
        wake.clear()
        feed = ref()
        if feed is None or stop.is_set():
            return
        start = time.monotonic()
        try:
            feed.refresh()
        except StoreError as exc:
            _log.debug("population prior: background refresh failed (%s); retrying", exc)
        except Exception:  # never let the thread die silently: the prior would freeze
            _log.exception("population prior: background refresh failed")
        del feed
        wait = max(interval, DUTY * (time.monotonic() - start))
