"""Streaming text: incremental detokenization and stop-sequence matching.

Byte-level BPE splits a multi-byte UTF-8 character over several tokens; decoding a prefix then
ends in U+FFFD. :class:`IncrementalDecoder` holds text back until it is complete, the way
text-generation-inference does: decode a window starting at ``prefix`` twice, with and without
the newest tokens, and emit the difference (decoding the window, not single tokens, keeps
leading-space rules of SentencePiece-style decoders right).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["IncrementalDecoder", "StopMatcher"]

_REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas that never split a character.

    Args:
        decode: ``ids -> text`` (the tokenizer's decode, special tokens skipped).
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # window start: text before it was emitted and is final
        self._read = 0  # ids before it have been turned into emitted text

    def push(self, token_id: int) -> str:
        """Add one token; return the newly completed text (possibly empty)."""
        self.ids.append(token_id)
        prev = self._decode(self.ids[self._prefix : self._read])
        text = self._decode(self.ids[self._prefix :])
        if len(text) > len(prev) and not text.endswith(_REPLACEMENT):
            self._prefix = self._read
            self._read = len(self.ids)
            return text[len(prev) :]
        return ""

    def flush(self) -> str:
        """Text still held back at the end of generation (may contain U+FFFD for bad bytes)."""
        prev = self._decode(self.ids[self._prefix : self._read])
        text = self._decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return text[len(prev) :]


class StopMatcher:
    """Finds stop sequences in streamed text and holds back what could start one.

    ``feed`` returns the text that is safe to emit and whether a stop sequence was found (the
    text then ends right before it).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self._longest = max((len(s) for s in self.stops), default=0)
        self._pending = ""

    def feed(self, delta: str) -> tuple[str, bool]:
        """Add ``delta``; return (text to emit, stopped)."""
        if not self.stops:
            return delta, False
        self._pending += delta
        hits = [i for i in (self._pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out = self._pending[: min(hits)]
            self._pending = ""
            return out, True
        keep = self._held_back()
        cut = len(self._pending) - keep
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out, False

    def flush(self) -> str:
        """Held-back text at the end of generation (no stop sequence completed)."""
        out, self._pending = self._pending, ""
        return out

    def _held_back(self) -> int:
        """Length of the longest suffix of the pending text that is a proper prefix of a stop."""
        text = self._pending
        for k in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-k:]
            if any(s.startswith(tail) for s in self.stops):
                return k
        return 0
