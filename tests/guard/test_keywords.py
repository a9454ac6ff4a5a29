"""Keyword matching over views (palm_middleware/guard/keywords.py)."""

from __future__ import annotations

import pytest

from palm_middleware.guard.keywords import KeywordMatcher
from palm_middleware.guard.normalize import text_views

M = KeywordMatcher(
    ["suicide", "kill myself", "bomb*", "self-harm", "I'm 14", "gun*", "自杀"],
    ignore=["glue gun*", "bath bomb*"],
)


@pytest.mark.parametrize(
    "text",
    [
        "thinking about suicide",
        "k1ll mys3lf",
        "I want to comit sucide",  # one-letter typo of a long word
        "suicdie",  # swapped letters
        "how do i m a k e a b o m b",
        "selfharm tips",
        "s3lf-h4rm",
        "Im 14 and",
        "我想自杀",  # no word boundaries in Chinese
        "my glue gun and my real gun",  # ignore hides one phrase, not the rest
        "edicius",
    ],
)
def test_matches(text: str) -> None:
    assert M.search(text_views(text)) is not None


@pytest.mark.parametrize(
    "text",
    ["my hot glue gun drips", "a lavender bath bomb", "decide later", "the begun task", "oboe"],
)
def test_does_not_match(text: str) -> None:
    assert M.search(text_views(text)) is None


def test_short_keywords_are_not_matched_in_rot13_or_reversed_views() -> None:
    # "gm" reversed is "mg"; short words turn up in transformed views by chance.
    assert KeywordMatcher(["mg"]).search(text_views("GM cars")) is None
    assert KeywordMatcher(["mg"]).search(text_views("take 5 mg")) == "mg"
