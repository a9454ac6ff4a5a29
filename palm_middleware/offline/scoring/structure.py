"""``StructureScorer``: detail and structure read from a reply's form.

Features: list items (``-``, ``*``, ``•`` or ``1.``/``1)`` at a line start), headings (``#``
lines, or short lines ending in ``:``), paragraphs (blank-line separated blocks) and the
length of the explanation in words. ``raw = w_list·sqrt(items) + w_heading·headings +
w_paragraph·(paragraphs − 1) + w_length·log(1 + words)``, then the calibrated squash.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ._text import words
from .base import SquashScorer

__all__ = ["StructureFeatures", "StructureScorer", "structure_features"]

_ITEM = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+\S")
_HEADING = re.compile(r"^\s*(?:#{1,6}\s+\S.*|\*\*[^*]{1,60}\*\*:?|[A-Z][^.!?]{0,50}:)\s*$")


@dataclass(frozen=True)
class StructureFeatures:
    """Counted form of one reply."""

    items: int
    headings: int
    paragraphs: int
    words: int


def structure_features(text: str) -> StructureFeatures:
    """Count list items, headings, paragraphs and words of ``text``."""
    lines = text.splitlines()
    items = sum(1 for ln in lines if _ITEM.match(ln))
    headings = sum(1 for ln in lines if _HEADING.match(ln) and not _ITEM.match(ln))
    paragraphs = sum(1 for block in re.split(r"\n\s*\n", text) if block.strip())
    return StructureFeatures(
        items=items, headings=headings, paragraphs=paragraphs, words=len(words(text))
    )


class StructureScorer(SquashScorer):
    """Detail/structure from form (lists, steps, headings, paragraphs, explanation length).

    Args:
        w_list: Weight of ``sqrt(list items)``.
        w_heading: Weight of headings (capped at 6).
        w_paragraph: Weight of extra paragraphs (capped at 8).
        w_length: Weight of ``log(1 + words)``.
        center: Raw value that scores 0.5.
        scale: Spread of the squash.

    Example:
        >>> s = StructureScorer()
        >>> s.score("1. Preheat.\\n2. Mix.\\n3. Bake for 20 minutes.") > s.score("Just bake it.")
        True
    """

    name = "structure"

    def __init__(
        self,
        *,
        w_list: float = 1.0,
        w_heading: float = 0.5,
        w_paragraph: float = 0.3,
        w_length: float = 0.5,
        center: float = 3.0,
        scale: float = 1.0,
    ) -> None:
        super().__init__(center=center, scale=scale)
        self.w_list = float(w_list)
        self.w_heading = float(w_heading)
        self.w_paragraph = float(w_paragraph)
        self.w_length = float(w_length)

    def raw(self, text: str, prompt: str = "") -> float:
        """The weighted form features of ``text``."""
        f = structure_features(text)
        return (
            self.w_list * math.sqrt(min(f.items, 16))
            + self.w_heading * min(f.headings, 6)
            + self.w_paragraph * min(max(f.paragraphs - 1, 0), 8)
            + self.w_length * math.log1p(f.words)
        )

    def params(self) -> dict[str, Any]:
        """Feature weights and calibration."""
        return {
            "w_list": self.w_list,
            "w_heading": self.w_heading,
            "w_paragraph": self.w_paragraph,
            "w_length": self.w_length,
            **super().params(),
        }
