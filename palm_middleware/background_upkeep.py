"""Finishes, on a background thread, the work a feedback event leaves for later.

An event reweights the user's cached particle posterior in place
(:class:`~palm_middleware.preferences.state.LearningState`). Two things cost more than the
rest of an event (about 1 ms each, against a quarter of that):

* **moving the particles**: when the effective sample size collapses, they are resampled and
  moved by Metropolis-Hastings. A move leaves the posterior invariant, so it may run at any
  time: after an event leaves a user's particles thin (effective sample size below ``below``,
  well above the collapse floor), this thread moves them, and a collapse on the feedback path
  becomes rare;
* **the concentration evidence's first draws**: a new user's first events draw a batch each
  (:meth:`~palm_middleware.preferences.model.PreferenceModel.strength_evidence`); this thread
  makes the rest after the first, so later events only extend them, and between follow-ups it
  prepares new users' models ahead, their draws made
  (:meth:`~palm_middleware.preferences.state.LearningState.prepare_ahead`), so that a new
  user's first event draws nothing either.

The work is done on a copy of the cached posterior, which replaces it unless another event
came first (:meth:`~palm_middleware.preferences.state.LearningState.follow_up`); it also puts
a cached posterior under the population prior a refit changed. Used by
:class:`~palm_middleware.pipeline.Palm`; in its sync mode (a ``random_state`` without
``population_refresh``) the same follow-ups run on the caller's thread, since a thread's
timing would make same-seed runs differ.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING

from ._daemon import ProcessDaemon, reset_in_forked_child
from .exceptions import InvalidParameterError

if TYPE_CHECKING:
    from .policy import BoundsPolicy
    from .preferences.state import LearningState

__all__ = ["BackgroundUpkeep"]

_log = logging.getLogger("palm_middleware")

#: A follow-up starts only after feedback updates have been quiet this long (seconds), or after
#: waiting :data:`MAX_WAIT` for that: run beside an update, it slows it (the CPU, the GIL).
QUIET = 0.001
MAX_WAIT = 0.05

#: Users waiting; beyond this the oldest is dropped (its next event does the work on the
#: feedback path, as without this thread).
MAX_PENDING = 4096


class BackgroundUpkeep:
    """Follows up, on a daemon thread, the cached posteriors ``learning`` reports work for.

    Args:
        learning: whose cache is kept fresh (this sets its ``move_ahead`` and
            ``on_followup``).
        below: the effective-sample-size fraction under which a posterior is moved ahead; it
            must be above ``learning.ess_threshold`` (the collapse floor on the feedback path).
        sync: follow up on the caller's thread, right after the event, instead of on a
            thread: the same work in the same order, so same-seed runs repeat exactly
            (``Palm``'s sync mode); it costs the feedback call what the thread would.
    """

    def __init__(self, learning: LearningState, *, below: float = 0.25, sync: bool = False) -> None:
        if not learning.ess_threshold < below < 1.0:
            raise InvalidParameterError(
                f"below must be in (ess_threshold={learning.ess_threshold}, 1); got {below!r}"
            )
        self.learning = learning
        self.sync = sync
        self.cpu_seconds = 0.0
        """CPU time this thread spent on follow-ups (thread time)."""
        self._pending: dict[str, None] = {}  # insertion-ordered set
        reset_in_forked_child(self)
        self._ahead = False  # new users' models to prepare (until prepare_ahead says full)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._daemon = ProcessDaemon(
            "palm-upkeep", _run, (weakref.ref(self), self._wake, self._stop)
        )
        learning.move_ahead = below
        learning.on_followup = self.submit

    def submit(self, key: str) -> None:
        """Queue ``key``'s cached posterior (called right after its event)."""
        if self._stop.is_set():
            return
        if self.sync:
            start = time.thread_time()
            self.learning.follow_up(key)
            self.cpu_seconds += time.thread_time() - start
            return
        with self._lock:
            self._pending.pop(key, None)
            self._pending[key] = None
            while len(self._pending) > MAX_PENDING:
                self._pending.pop(next(iter(self._pending)))
            self._ahead = True  # (the event may have taken a model prepared ahead)
        self._daemon.ensure()
        self._wake.set()

    def prepare(self, policy: BoundsPolicy) -> None:
        """Prepare new users' models for ``policy`` ahead, from now (``Palm`` calls this at
        start-up, so the first new users find theirs). Nothing in sync mode."""
        if self.sync or self._stop.is_set():
            return
        self.learning.expect(policy)
        with self._lock:
            self._ahead = True
        self._daemon.ensure()
        self._wake.set()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued follow-up is done and the models to prepare ahead are
        ready; False on timeout (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending or self._busy or self._ahead:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        """Stop the thread (idempotent); later events do all their work themselves."""
        self._stop.set()
        with self._lock:
            self._ahead = False
        self._wake.set()
        if self.learning.on_followup == self.submit:
            self.learning.on_followup = None

    def _next(self) -> str | None:
        """The next user to follow up, else :data:`_AHEAD` (prepare a model ahead), else
        None (idle)."""
        with self._lock:
            if not self._pending:
                if self._ahead:
                    self._busy = True
                    return _AHEAD
                self._busy = False
                self._idle.notify_all()
                return None
            key = next(iter(self._pending))
            del self._pending[key]
            self._busy = True
            return key

    def _work(self, key: str) -> None:
        if key is not _AHEAD:
            self.learning.follow_up(key)
        elif not self.learning.prepare_ahead():
            with self._lock:
                self._ahead = False

    def _after_fork(self) -> None:
        """In a forked child: new locks (the parent's thread may have held one at the fork)
        and nothing queued (the child's cache is its own from here)."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = {}
        self._busy = False


#: :meth:`BackgroundUpkeep._next`'s "prepare a new user's model ahead" (compared by identity:
#: no user key is this very object).
_AHEAD = "\x00ahead"


def _run(ref: weakref.ref[BackgroundUpkeep], wake: threading.Event, stop: threading.Event) -> None:
    """The loop; it holds the upkeep weakly, so a dropped ``Palm`` ends it."""
    while not stop.is_set():
        wake.wait(1.0)
        wake.clear()
        while not stop.is_set():
            upkeep = ref()
            if upkeep is None:
                return
            key = upkeep._next()
            if key is None:
                break
            learning = upkeep.learning
            learning.wait_quiet(QUIET, MAX_WAIT)
            start = time.thread_time()
            try:
                upkeep._work(key)
            except Exception:  # never let the thread die silently: follow-ups would stop
                _log.exception("background follow-up of a cached posterior failed")
                if key is _AHEAD:
                    with upkeep._lock:
                        upkeep._ahead = False  # (a failing preparation is not retried in a loop)
            finally:
                upkeep.cpu_seconds += time.thread_time() - start
                with upkeep._lock:
                    upkeep._busy = False
                    upkeep._idle.notify_all()
            del upkeep, learning  # (held strongly only while working)
