from __future__ import annotations

import pytest

from palm_middleware import ConfigError, TraitSpace
from palm_middleware.preferences.cues import CueLexicon


def test_default_lexicon_matches_user_phrases() -> None:
    lex = CueLexicon.default().for_space(TraitSpace(["safety", "humor", "brevity"]))
    ids = [c.id for c in lex.match("That was too long. Shorter please, and no jokes!")]
    assert ids == ["shorter", "no-jokes"]
    assert lex.match("tell me about photosynthesis") == []
    assert [c.id for c in lex.match("please ELABORATE")] == ["longer"]
    # traits outside the space are dropped
    assert all(c.trait in ("safety", "humor", "brevity") for c in lex.cues)


def test_word_boundaries() -> None:
    lex = CueLexicon.parse("cues:\n  - {id: x, trait: humor, direction: up, patterns: [fun]}\n")
    assert lex.match("that was fun") and not lex.match("fundamental rights")


def test_bad_lexicon_errors_are_located() -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml:3:\d+: rule 'x': cues\[0\]\.patterns\[0\]"):
        CueLexicon.parse(
            "cues:\n  - id: x\n    patterns: ['(']\n    trait: humor\n    direction: up\n", "c.yaml"
        )
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+:\d+: cues\[0\]\.direction"):
        CueLexicon.parse(
            "cues:\n  - {id: x, trait: humor, direction: sideways, patterns: [a]}\n", "c.yaml"
        )
    lex = CueLexicon.parse("cues:\n  - {id: x, trait: wit, direction: up, patterns: [a]}\n")
    with pytest.raises(ConfigError, match=r"unknown traits \['wit'\]"):
        lex.check_space(TraitSpace(["humor"]))
