"""Hot reload of a policy file: a bad new file keeps the last good policy serving.

:class:`ReloadingPolicy` re-reads its file when the file's (mtime, size) change and its content
hash differs, validates it completely (schema, conditions, feasibility, the caller's ``check``
such as "pinned members exist in the portfolio") and only then swaps it in, as one attribute
assignment (atomic for readers). On any error the previous policy keeps serving; the error is
logged and kept in :attr:`ReloadingPolicy.error` until a good file replaces it. A broken file
therefore never disables bounds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from ..exceptions import PolicyError
from .bounds import BoundsPolicy
from .loader import load_policy

__all__ = ["ReloadingPolicy"]

logger = logging.getLogger("palm_middleware.policy")


class ReloadingPolicy:
    """A policy that follows its file.

    Args:
        path: The policy file. The first load must succeed (raises ``PolicyError``).
        check: Called with each new policy before it is swapped in; raise ``PalmError`` (or
            ``ValueError``) to refuse it (e.g. ``Palm`` checks traits and pinned members).
        min_interval: Seconds between two looks at the file (``current`` is on the hot path:
            one ``os.stat`` per interval, not per request).
        clock: Monotonic time source (injectable for tests).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        check: Callable[[BoundsPolicy], None] | None = None,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.check = check
        self.min_interval = float(min_interval)
        self._clock = clock
        self._lock = threading.Lock()
        self.error: PolicyError | None = None
        """The error of the last failed reload (None once a good file is loaded)."""
        self.reloads = 0
        """How many times a new policy was swapped in."""
        text = self.path.read_bytes() if self.path.is_file() else b""
        self._current = load_policy(self.path)
        if check is not None:
            check(self._current)
        self._stamp = self._stat()
        self._digest = hashlib.sha256(text).hexdigest()
        self._next = clock() + self.min_interval

    @property
    def current(self) -> BoundsPolicy:
        """The policy in force (looks at the file at most every ``min_interval`` seconds)."""
        if self._clock() >= self._next:
            self.poll()
        return self._current

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def poll(self, *, force: bool = False) -> bool:
        """Reload now if the file changed; return True when a new policy was swapped in."""
        if not self._lock.acquire(blocking=False):
            return False  # another thread is already reloading
        try:
            self._next = self._clock() + self.min_interval
            stamp = self._stat()
            if stamp == self._stamp and not force:
                return False
            self._stamp = stamp
            try:
                text = self.path.read_bytes()
            except OSError as exc:
                self._fail(PolicyError(f"{self.path}: cannot read file: {exc}"))
                return False
            digest = hashlib.sha256(text).hexdigest()
            if digest == self._digest and self.error is None and not force:
                return False
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    new = load_policy(self.path)
                for w in caught:
                    logger.warning("policy %s: %s", self.path, w.message)
                if self.check is not None:
                    self.check(new)
            except PolicyError as exc:
                self._fail(exc)
                return False
            except Exception as exc:  # a refused check (e.g. unknown member), or anything else:
                self._fail(PolicyError(f"{self.path}: {exc}"))  # the last good policy serves
                return False
            self._digest = digest
            self._current = new  # one assignment: readers see the old or the new policy
            self.error = None
            self.reloads += 1
            logger.info("policy %s reloaded: version %s", self.path, new.version)
            return True
        finally:
            self._lock.release()

    def _fail(self, exc: PolicyError) -> None:
        self.error = exc
        logger.error(
            "policy %s not reloaded; still serving version %s: %s",
            self.path,
            self._current.version,
            exc,
        )
