"""Progress of long steps: tqdm bars on a terminal, a few plain lines in a pipe or a log.

tqdm hides itself when its stream is not a terminal (``make demo | tee demo.log``, CI), which
left a first run silent for many minutes; there, :class:`_LineBar` prints a line per quarter of
the work (every step of a short one) with the time so far, so a log stays short and readable.
tqdm is imported lazily (it stays out of ``import palm_middleware``).
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Sequence
from typing import Protocol, TextIO, cast

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar(Protocol):
    """The part of a tqdm bar we use."""

    def update(self, n: float | None = 1) -> bool | None:
        """Advance by ``n``."""
        ...

    def close(self) -> None:
        """Finish the bar."""
        ...


class _NoBar:
    def update(self, n: float | None = 1) -> bool | None:
        return None

    def close(self) -> None:
        return None


class _LineBar:
    """One line per quarter of the work (per step when there are 8 or fewer), with elapsed time."""

    def __init__(self, total: int, desc: str, stream: TextIO, steps: Sequence[str]) -> None:
        self.total, self.desc, self.stream, self.steps = max(total, 1), desc, stream, steps
        self.n = 0.0
        self.t0 = time.perf_counter()

    def update(self, n: float | None = 1) -> bool | None:
        before, self.n = self.n, self.n + (n or 0)
        every = 1.0 if self.total <= 8 else self.total / 4
        if int(self.n // every) == int(before // every) and self.n < self.total:
            return None
        done = int(self.n)
        label = f" {self.steps[done - 1]}" if 0 < done <= len(self.steps) else ""
        minutes = (time.perf_counter() - self.t0) / 60
        print(
            f"      {self.desc}: {done}/{self.total}{label} done ({minutes:.1f} min)",
            file=self.stream,
            flush=True,
        )
        return None

    def close(self) -> None:
        return None


def progress_bar(total: int, desc: str, enabled: bool, steps: Sequence[str] = ()) -> ProgressBar:
    """A tqdm bar on a terminal, progress lines elsewhere (``enabled``), else a no-op.

    ``steps``: names of the units of work, shown in the plain lines (``3/5 token check done``).
    """
    if not enabled:
        return _NoBar()
    # While a build step's third-party output goes to its log, bars stay on the terminal.
    from .._capture import terminal_stream

    stream = terminal_stream() or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if not (callable(isatty) and isatty()):
        return _LineBar(total, desc, stream, steps)
    # importlib keeps mypy from requiring tqdm's stubs; the bar is used through ProgressBar only.
    auto = importlib.import_module("tqdm.auto")
    return cast(ProgressBar, auto.tqdm(total=total, desc=desc, leave=False, file=stream))
