"""Edits that loosen the guard's new parts count as law weakenings (policy/weakening.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from palm_middleware.policy import parse_policy
from palm_middleware.policy.weakening import law_weakenings

ASSISTANT = (Path(__file__).resolve().parents[2] / "policies/assistant.yaml").read_text()


def _weakened(new: str) -> list[str]:
    old_p, new_p = parse_policy(ASSISTANT, "old.yaml"), parse_policy(new, "new.yaml")
    return [str(w) for w in law_weakenings(old_p, new_p)]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("on: [request, reply]", "on: [request]", "no longer checks the reply"),
        ("    ignore: [glue gun*,", "    ignore: [bomb*, glue gun*,", "ignore phrases added"),
        ("    classifier: guard\n  medical_dosing:", "  medical_dosing:", "classifier changed"),
        # A decisive keyword demoted to a weak one (or a weak one dropped) decides less often.
        ("keywords: [make a bomb, ", "keywords: [", "keywords removed: ['make a bomb']"),
        ("weak_keywords: [bomb*, ", "weak_keywords: [", "weak keywords removed: ['bomb*']"),
        (
            "    classifier: guard\n  medical_dosing:",
            "    classifier: {name: guard, weak_threshold: 0.9}\n  medical_dosing:",
            "classifier changed",
        ),
        (
            "    classifier: guard\n  medical_dosing:",
            "    classifier: {name: guard, threshold: 0.99}\n  medical_dosing:",
            "classifier changed",
        ),
        (
            "classifier: {name: guard, reply_threshold: 0.7}",
            "classifier: {name: guard, reply_threshold: 0.9}",
            "classifier changed",
        ),
    ],
)
def test_loosening_the_guard_is_a_law_weakening(old: str, new: str, expected: str) -> None:
    assert old in ASSISTANT
    found = _weakened(ASSISTANT.replace(old, new, 1))
    assert any(expected in w for w in found), found


def test_adding_keywords_or_reply_checks_is_not_a_weakening() -> None:
    stricter = ASSISTANT.replace("    ignore: [glue gun*, ", "    ignore: [", 1).replace(
        "    message: I can't help with anything that could be used to hurt people or their "
        "property.",
        "    message: I can't help with anything that could be used to hurt people or their "
        "property.\n    on: [request, reply]",
        1,
    )
    assert stricter != ASSISTANT
    assert _weakened(stricter) == []


def test_promoting_a_weak_keyword_is_not_a_weakening() -> None:
    stricter = ASSISTANT.replace("keywords: [make a bomb, ", "keywords: [make a bomb, bomb*, ", 1)
    stricter = stricter.replace("weak_keywords: [bomb*, ", "weak_keywords: [", 1)
    assert stricter != ASSISTANT
    assert _weakened(stricter) == []
