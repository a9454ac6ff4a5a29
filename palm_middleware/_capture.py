"""Third-party output of long build steps goes to a log file, summarized in one line.

Exporting a model runs torch, transformers and optimum, which print hundreds of lines a new user
reads as failures: optimum's "values not close enough" tolerance messages, deprecation notices,
C++ warnings from the exporters. :func:`capture_output` points file descriptors 1 and 2 at a log
file for the duration (so Python warnings, log records, prints and native-code output all land
there), while progress bars keep drawing on the terminal. :meth:`Captured.summary` then says how
much was written and where.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

__all__ = ["Captured", "capture_output", "terminal_stream"]

_TERMINAL: contextvars.ContextVar[TextIO | None] = contextvars.ContextVar(
    "palm_terminal", default=None
)
_WARNING = re.compile(r"warn|deprecat", re.IGNORECASE)
_NOT_CLOSE = "values not close enough"


def terminal_stream() -> TextIO | None:
    """The terminal while output is captured (for progress bars), else None."""
    return _TERMINAL.get()


@dataclass
class Captured:
    """What a captured step wrote (filled in when the ``with`` block ends)."""

    log: Path
    lines: int = 0
    warnings: int = 0
    not_close: int = 0
    _done: bool = field(default=False, repr=False)

    def summary(self) -> str:
        """One line: how much third-party output there was, and where the full log is."""
        if self.lines == 0:
            return f"no third-party output (log {self.log})"
        parts = [f"{self.lines} lines of third-party output"]
        if self.warnings:
            parts.append(f"{self.warnings} warnings")
        if self.not_close:
            parts.append(
                f"{self.not_close} optimum 'values not close enough' notices (its float "
                "tolerance; PALM's own check compares greedy tokens)"
            )
        return f"{', '.join(parts)}; full log: {self.log}"


@contextlib.contextmanager
def capture_output(log: str | Path) -> Iterator[Captured]:
    """Send everything written to stdout/stderr (fds 1 and 2) and every Python warning to ``log``.

    Nothing is swallowed: it is all in the file, appended to. Progress bars made with
    :func:`palm_middleware.offline._progress.progress_bar` inside the block draw on the
    terminal (:func:`terminal_stream`).
    """
    path = Path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = Captured(path)
    start = path.stat().st_size if path.exists() else 0
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", errors="replace")
    token = _TERMINAL.set(terminal)
    old_streams = sys.stdout, sys.stderr
    with (
        open(path, "ab", buffering=0) as sink,
        open(path, "a", encoding="utf-8", errors="replace", buffering=1) as text,
    ):
        for fd in (1, 2):  # native code and child processes
            os.dup2(sink.fileno(), fd)
        sys.stdout = sys.stderr = text  # Python code, whatever sys.stdout was replaced with
        moved = _move_log_handlers(old_streams, text)

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            text.write(warnings.formatwarning(message, category, filename, lineno, line))

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")  # each distinct warning once, into the log
                warnings.showwarning = show
                yield result
        finally:
            with contextlib.suppress(Exception):
                text.flush()
            sys.stdout, sys.stderr = old_streams
            for handler, stream in moved:
                handler.setStream(stream)
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            _TERMINAL.reset(token)
            terminal.close()
    with open(path, encoding="utf-8", errors="replace") as fh:
        fh.seek(start)
        for line in fh:
            if not line.strip():
                continue
            result.lines += 1
            if _NOT_CLOSE in line:
                result.not_close += 1
            elif _WARNING.search(line):
                result.warnings += 1


def _move_log_handlers(
    streams: tuple[TextIO, ...], to: TextIO
) -> list[tuple[logging.StreamHandler[TextIO], TextIO]]:
    """Point every log handler that writes to ``streams`` at ``to``; the old streams, to undo."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [
        v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)
    ]
    moved: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []
    for logger in loggers:
        for h in logger.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                if any(h.stream is s for s in streams):
                    old = h.setStream(to)
                    if old is not None:
                        moved.append((h, old))
    return moved
