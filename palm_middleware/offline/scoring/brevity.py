"""``BrevityScorer``: short replies score high, through a calibrated decreasing curve of length."""

from __future__ import annotations

import math
from typing import Any

from ._text import TokenCounter
from .base import SquashScorer

__all__ = ["BrevityScorer"]


class BrevityScorer(SquashScorer):
    """Brevity from token length: ``sigmoid(-(log(1 + n_tokens) - center) / scale)``.

    Args:
        tokenizer: ``"whitespace"`` or a ``tokenizer.json`` (count the member's own tokens).
        center: ``log(1 + n)`` of the length that scores 0.5.
        scale: Spread of the curve in log-length units.

    Example:
        >>> s = BrevityScorer(center=math.log(1 + 40), scale=0.5)
        >>> s.score("Paris.") > 0.9 > 0.1 > s.score("word " * 400)
        True
    """

    name = "brevity"
    sign = -1.0

    def __init__(
        self, *, tokenizer: str = "whitespace", center: float = math.log(41.0), scale: float = 0.6
    ) -> None:
        super().__init__(center=center, scale=scale)
        self.counter = TokenCounter(tokenizer)

    def raw(self, text: str, prompt: str = "") -> float:
        """``log(1 + number of tokens)``."""
        return math.log1p(self.counter(text))

    def anchors(self) -> tuple[float, float]:
        """Token lengths that score 0.9 and 0.1 (the calibrated anchors, for reports)."""
        d = math.log(9.0) * self.scale
        return (math.expm1(self.center - d), math.expm1(self.center + d))

    def params(self) -> dict[str, Any]:
        """Tokenizer, calibration, and the 0.9 / 0.1 length anchors (informational)."""
        short, long = self.anchors()
        return {
            "tokenizer": self.counter.tokenizer,
            **super().params(),
            "anchors": {"score_0.9_tokens": round(short, 1), "score_0.1_tokens": round(long, 1)},
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> BrevityScorer:  # type: ignore[override]
        """Rebuild from :meth:`params` output (``anchors`` are derived, so ignored)."""
        p = {k: v for k, v in params.items() if k != "anchors"}
        return cls(**p)
