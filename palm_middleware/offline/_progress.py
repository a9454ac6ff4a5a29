"""tqdm progress bars, imported lazily (tqdm stays out of ``import palm_middleware``)."""

from __future__ import annotations

import importlib
from typing import Protocol, cast

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


def progress_bar(total: int, desc: str, enabled: bool) -> ProgressBar:
    """A tqdm bar when ``enabled`` (auto-hidden when stderr is not a terminal), else a no-op."""
    if not enabled:
        return _NoBar()
    # importlib keeps mypy from requiring tqdm's stubs; the bar is used through ProgressBar only.
    auto = importlib.import_module("tqdm.auto")
    # While a build step's third-party output goes to its log, bars stay on the terminal.
    from .._capture import terminal_stream

    return cast(
        ProgressBar,
        auto.tqdm(total=total, desc=desc, disable=None, leave=False, file=terminal_stream()),
    )
