"""A daemon thread started on demand, once per process; and what a forked child resets."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["ProcessDaemon", "reset_in_forked_child"]

#: Objects whose ``_after_fork()`` a forked child calls (held weakly).
_FORKED: weakref.WeakSet[Any] = weakref.WeakSet()


def reset_in_forked_child(obj: Any) -> None:
    """Have a forked child call ``obj._after_fork()``: new locks (a parent's thread may have
    held one at the fork: the child would wait on it forever) and whatever else must not be
    shared between workers forked from one process."""
    _FORKED.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_FORKED):
        obj._after_fork()


if hasattr(os, "register_at_fork"):  # (not on Windows, which does not fork)
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ProcessDaemon:
    """Starts ``target(*args)`` on a daemon thread the first time :meth:`ensure` is called in a
    process, and again if it died or the process was forked (threads do not survive a fork).

    The background loops of :mod:`~palm_middleware.population_feed` and
    :mod:`~palm_middleware.background_upkeep` hold their owner weakly, so a dropped ``Palm``
    ends them.
    """

    def __init__(self, name: str, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.name = name
        self._target = target
        self._args = args
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def alive(self) -> bool:
        """Whether this process's thread is running."""
        thread = self._thread
        return thread is not None and thread.is_alive() and self._pid == os.getpid()

    def ensure(self) -> None:
        """Start the thread unless this process's is running."""
        if self.alive():
            return
        with self._lock:
            if self.alive():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._target, args=self._args, name=self.name, daemon=True
            )
            self._thread.start()
