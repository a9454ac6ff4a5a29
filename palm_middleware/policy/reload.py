"""Hot reload of a policy file that never weakens the bounds in force.

:class:`ReloadingPolicy` looks at its file at most every ``min_interval`` seconds. A new
version is swapped in (one attribute assignment: readers see the old or the new policy) only
when all of these hold; otherwise the previous policy keeps serving:

1. **complete**: the same bytes (sha256) were read twice, ``settle`` seconds or more apart, so a
   file caught mid-write (truncated, yet possibly valid YAML) is not taken. A writer that
   replaces the file by ``rename`` is always seen complete; one that stalls mid-write longer
   than ``settle`` is caught by the next two checks;
2. **valid**: schema, conditions, feasibility and the caller's ``check`` (``Palm`` checks the
   traits and the pinned members against its portfolio);
3. **no weaker in the law layer**: :func:`~palm_middleware.policy.weakening.law_weakenings`
   finds nothing, unless the deployment set ``allow_law_weakening``.

Every swap and every refusal is reported to the subscribers (``Palm`` writes it to the audit
log) as a :class:`PolicyChange` carrying both versions and both content hashes; a refusal is
also kept in :attr:`ReloadingPolicy.error` until a good file replaces it. A broken,
half-written or weaker file therefore never loosens the bounds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .._yaml import MAX_CONFIG_BYTES
from ..exceptions import ConfigIssue, PolicyError, PolicyWeakeningError
from .bounds import BoundsPolicy
from .loader import parse_policy
from .weakening import law_weakenings

__all__ = ["PolicyChange", "ReloadingPolicy"]

logger = logging.getLogger("palm_middleware.policy")

_Stamp = tuple[int, int, int] | None  # (inode, mtime_ns, size)


@dataclass(frozen=True)
class PolicyChange:
    """A new version of the policy file was swapped in or refused (what the audit records)."""

    kind: Literal["swap", "refused"]
    """``swap``: the new version serves; ``refused``: the old one keeps serving."""
    path: str
    """The policy file."""
    old_version: str
    """Version of the policy in force before (:attr:`BoundsPolicy.version`)."""
    old_sha256: str
    """sha256 of the file content in force before."""
    new_sha256: str
    """sha256 of the new file content ("" if it could not be read)."""
    new_version: str | None = None
    """Version of the new policy (None if it did not load)."""
    reason: str | None = None
    """Why it was refused (the error message)."""
    rule_ids: tuple[str, ...] = ()
    """Law rules the refused version would have weakened."""

    def to_payload(self) -> dict[str, Any]:
        """JSON-ready form for the audit log (hashes and ids, never the file's content)."""
        return {
            "path": self.path,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "old_sha256": self.old_sha256,
            "new_sha256": self.new_sha256,
            "reason": None if self.reason is None else self.reason[:2000],
            "rule_ids": list(self.rule_ids),
        }


class ReloadingPolicy:
    """A policy that follows its file, never loosening the law layer on its own.

    Args:
        path: The policy file. The first load must succeed (raises ``PolicyError``).
        check: Called with each new policy before it is swapped in; raise ``PalmError`` (or
            ``ValueError``) to refuse it (e.g. ``Palm`` checks traits and pinned members).
        min_interval: Seconds between two looks at the file (``current`` is on the hot path:
            one ``os.stat`` per interval, not per request).
        settle: Seconds between the two reads that must agree before a new version is taken.
        allow_law_weakening: Accept a new version that removes or weakens a ``law``-layer rule
            (a deployment decision, from its own configuration: never from the policy file).
        clock: Monotonic time source (injectable for tests).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        check: Callable[[BoundsPolicy], None] | None = None,
        min_interval: float = 1.0,
        settle: float = 0.2,
        allow_law_weakening: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.check = check
        self.min_interval = float(min_interval)
        self.settle = float(settle)
        self.allow_law_weakening = bool(allow_law_weakening)
        self._clock = clock
        self._lock = threading.Lock()
        self.error: PolicyError | None = None
        """The error of the last refused version (None once a good file is loaded)."""
        self.reloads = 0
        """How many times a new policy was swapped in."""
        self.listeners: list[Callable[[PolicyChange], None]] = []
        """Called with every swap and refusal (see :meth:`subscribe`)."""
        self.checks: list[Callable[[BoundsPolicy], None]] = []
        """Further checks every new version must pass, after ``check`` (see :meth:`add_check`)."""
        stamp = self._stat()
        text = self._read()
        self._current = self._parse(text)
        if check is not None:
            check(self._current)
        self._stamp = stamp
        self._digest = _sha256(text)
        self._pending: tuple[str, float] | None = None  # a new digest seen once, and when
        self._refused: str | None = None  # digest of the last refused version
        self._next = clock() + self.min_interval

    @property
    def current(self) -> BoundsPolicy:
        """The policy in force (looks at the file at most every ``min_interval`` seconds)."""
        if self._clock() >= self._next:
            self.poll()
        return self._current

    @property
    def sha256(self) -> str:
        """sha256 of the file content in force."""
        return self._digest

    def add_check(self, check: Callable[[BoundsPolicy], None]) -> None:
        """Make every new version pass ``check`` too (e.g. ``Palm``: it fits the portfolio).

        The policy in force is checked first: a failing ``check`` raises here and is not added.
        The caller's own ``check`` is left as it was.
        """
        check(self._current)
        self.checks.append(check)

    def subscribe(self, listener: Callable[[PolicyChange], None]) -> None:
        """Call ``listener`` with every swap and refusal, from the polling thread.

        A listener that raises is logged and does not stop the reload.
        """
        self.listeners.append(listener)

    def _stat(self) -> _Stamp:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> bytes:
        """The file's bytes; ``PolicyError`` if it is missing, unreadable or too large."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise PolicyError(ConfigIssue(f"cannot read file: {exc}", file=str(self.path))) from exc
        if len(data) > MAX_CONFIG_BYTES:
            raise PolicyError(
                ConfigIssue(
                    f"file is larger than {MAX_CONFIG_BYTES} bytes; refusing", str(self.path)
                )
            )
        return data

    def _parse(self, data: bytes) -> BoundsPolicy:
        # Parse the very bytes that were hashed: the file may change again meanwhile.
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError(ConfigIssue(f"not UTF-8: {exc}", file=str(self.path))) from exc
        return parse_policy(text, str(self.path))

    def poll(self, *, force: bool = False) -> bool:
        """Look at the file now; return True when a new policy was swapped in.

        Args:
            force: Take the file as complete (skip the two-read check), e.g. after an
                operator's explicit reload. Validation and the law check still apply.
        """
        if not self._lock.acquire(blocking=False):
            return False  # another thread is already reloading
        try:
            return self._poll(force)
        finally:
            self._lock.release()

    def _poll(self, force: bool) -> bool:
        now = self._clock()
        self._next = now + self.min_interval
        stamp = self._stat()
        if stamp == self._stamp and self._pending is None and not force:
            return False
        self._stamp = stamp
        try:
            data = self._read()
        except PolicyError as exc:  # e.g. removed while being replaced: look again later
            self._pending = None
            self._refuse(exc, "")
            return False
        digest = _sha256(data)
        if digest == self._digest:
            self._pending = None
            if self.error is not None:
                logger.info("policy %s is back to the version in force", self.path)
            self.error = None
            self._refused = None
            return False
        if digest == self._refused and not force:
            return False  # refused already; the file did not change since
        if not force:
            if self._pending is None or self._pending[0] != digest:
                self._pending = (digest, now)  # first sight: read again after `settle`
                self._next = min(self._next, now + self.settle)
                return False
            if now - self._pending[1] < self.settle:
                self._next = min(self._next, self._pending[1] + self.settle)
                return False
        self._pending = None
        try:
            new = self._loaded(data)
        except PolicyError as exc:
            self._refuse(exc, digest)
            return False
        weaker = law_weakenings(self._current, new)
        if weaker and not self.allow_law_weakening:
            issues = [
                ConfigIssue(
                    f"{w.what}; the law layer may only get stricter on reload (set "
                    "allow_law_weakening in the deployment config to accept this)",
                    file=str(self.path),
                    rule_id=w.rule_id,
                )
                for w in weaker
            ]
            rule_ids = list(dict.fromkeys(w.rule_id for w in weaker))
            self._refuse(PolicyWeakeningError(issues, rule_ids), digest, new.version)
            return False
        if weaker:
            logger.warning(
                "policy %s weakens the law layer (allowed by the deployment): %s",
                self.path,
                "; ".join(str(w) for w in weaker),
            )
        old = self._current
        change = PolicyChange(
            "swap",
            str(self.path),
            old_version=old.version,
            old_sha256=self._digest,
            new_sha256=digest,
            new_version=new.version,
            rule_ids=tuple(dict.fromkeys(w.rule_id for w in weaker)),
        )
        self._digest = digest
        self._current = new  # one assignment: readers see the old or the new policy
        self.error = None
        self._refused = None
        self.reloads += 1
        logger.info("policy %s reloaded: version %s -> %s", self.path, old.version, new.version)
        self._notify(change)
        return True

    def _loaded(self, data: bytes) -> BoundsPolicy:
        """The new policy, parsed and checked, or ``PolicyError`` saying why it cannot serve."""
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                new = self._parse(data)
            for w in caught:
                logger.warning("policy %s: %s", self.path, w.message)
            if self.check is not None:
                self.check(new)
            for check in list(self.checks):
                check(new)
        except PolicyError:
            raise
        except Exception as exc:  # a refused check (e.g. unknown member), or anything else
            raise PolicyError(ConfigIssue(str(exc), file=str(self.path))) from exc
        return new

    def _refuse(self, exc: PolicyError, digest: str, new_version: str | None = None) -> None:
        self.error = exc
        self._refused = digest or None
        logger.error(
            "policy %s not reloaded; still serving version %s: %s",
            self.path,
            self._current.version,
            exc,
        )
        rule_ids = exc.rule_ids if isinstance(exc, PolicyWeakeningError) else []
        self._notify(
            PolicyChange(
                "refused",
                str(self.path),
                old_version=self._current.version,
                old_sha256=self._digest,
                new_sha256=digest,
                new_version=new_version,
                reason=str(exc),
                rule_ids=tuple(rule_ids),
            )
        )

    def _notify(self, change: PolicyChange) -> None:
        for listener in list(self.listeners):
            try:
                listener(change)
            except Exception:  # a failing listener must not stop the reload (or the request)
                logger.exception("policy change listener failed for %s", self.path)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
