"""``FormalityScorer``: a transparent lexicon model of tone, casual (0) to formal (1).

Casual cues: contractions (``don't``, ``it's``), slang and fillers (``gonna``, ``lol``,
``super``, ``awesome``), exclamation marks, emoji, and casual address (``hey``, ``you guys``,
``buddy``). Formal cues: connectives (``however``, ``therefore``, ``furthermore``), hedged
impersonal phrasing (``it is advisable``, ``one should``), and long words (>= 10 letters).
``raw = 10 · (w_formal·formal − w_casual·casual) / (words + 5)``, then the calibrated squash.
Every cue that fired is listed by :meth:`FormalityScorer.explain`.
"""

from __future__ import annotations

import re
from typing import Any

from ._text import words
from .base import SquashScorer

__all__ = ["CASUAL_WORDS", "FORMAL_PHRASES", "FORMAL_WORDS", "FormalityScorer"]

CASUAL_WORDS = frozenset(
    """
hey hi yeah yep nope yup gonna wanna gotta kinda sorta lol haha omg btw tbh imo ok okay
awesome cool super totally basically literally pretty stuff guys dude buddy folks honestly
ya y'know anyway anyways nah whoa wow oops ugh cuz cause chill vibe vibes fun huge bunch
""".split()
)
FORMAL_WORDS = frozenset(
    """
however therefore furthermore moreover consequently accordingly nevertheless nonetheless
additionally thus hence whereas regarding concerning subsequently respectively approximately
recommended advisable sufficient ensure utilize facilitate appropriate considerable
particularly significant significantly prior thereby herein shall
""".split()
)
FORMAL_PHRASES = (
    "it is advisable",
    "it is recommended",
    "one should",
    "one may",
    "it should be noted",
    "in addition",
    "in order to",
    "with respect to",
    "as a result",
    "in summary",
    "in conclusion",
    "please note",
)
_EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")
_CONTRACTION = re.compile(r"^[a-z]+'(?:t|s|re|ve|ll|d|m)$")


class FormalityScorer(SquashScorer):
    """Tone from lexical cues: casual ↔ formal.

    Args:
        w_casual: Weight of each casual cue.
        w_formal: Weight of each formal cue.
        center: Raw value that scores 0.5.
        scale: Spread of the squash.

    Example:
        >>> s = FormalityScorer()
        >>> s.score("Hey! Honestly it's super easy, you'll love it lol") < 0.5
        True
    """

    name = "formality"

    def __init__(
        self,
        *,
        w_casual: float = 1.0,
        w_formal: float = 1.0,
        center: float = 0.0,
        scale: float = 0.5,
    ) -> None:
        super().__init__(center=center, scale=scale)
        self.w_casual = float(w_casual)
        self.w_formal = float(w_formal)

    def explain(self, text: str) -> dict[str, list[str]]:
        """The cues found in ``text``: ``{"casual": [...], "formal": [...]}``."""
        ws = words(text)
        low = " ".join(ws)
        casual = [w for w in ws if w in CASUAL_WORDS or _CONTRACTION.match(w)]
        casual += ["!"] * text.count("!") + _EMOJI.findall(text)
        formal = [w for w in ws if w in FORMAL_WORDS or (len(w) >= 10 and w.isalpha())]
        formal += [p for p in FORMAL_PHRASES if f" {p} " in f" {low} "]
        return {"casual": casual, "formal": formal}

    def raw(self, text: str, prompt: str = "") -> float:
        """Net formal cues per word (times 10)."""
        cues = self.explain(text)
        n = len(words(text))
        return (
            10.0
            * (self.w_formal * len(cues["formal"]) - self.w_casual * len(cues["casual"]))
            / (n + 5)
        )

    def params(self) -> dict[str, Any]:
        """Cue weights and calibration."""
        return {"w_casual": self.w_casual, "w_formal": self.w_formal, **super().params()}
