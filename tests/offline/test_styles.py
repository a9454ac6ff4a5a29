"""Style datasets: the bundled sets load and have the promised shape; errors name file:line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from palm_middleware.exceptions import ConfigError
from palm_middleware.offline.evaluation.styles import bundled_style, load_style


def _sentences(text: str) -> int:
    # Sentence ends: . ! ? followed by a space and a capital, or the end of the text.
    return len(re.findall(r"[.!?](?=\s+[A-Z]|$)", text.strip()))


def test_terse_answers_are_one_short_sentence() -> None:
    style = load_style(bundled_style("terse"))
    assert style.name == "terse" and len(style) >= 120
    for ex in style.examples:
        assert _sentences(ex.assistant) <= 1, ex.assistant
        assert len(ex.assistant.split()) <= 20, ex.assistant


def test_formal_answers_have_two_to_four_sentences() -> None:
    style = load_style(bundled_style("formal"))
    assert style.name == "formal" and len(style) >= 120
    for ex in style.examples:
        assert 2 <= _sentences(ex.assistant) <= 4, ex.assistant
        assert not re.search(r"\b(I|you|lol|gonna)\b", ex.assistant), ex.assistant


def test_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ndescription: y\nexamples:\n  - {user: hi, assistant: hello}\n"
        "  - {user: hi, answer: hello}\n  - {user: HI, assistant: again}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_style(bad)
    text = str(err.value)
    assert f"{bad}:5:5: examples[1]: an example must be a mapping with exactly" in text
    assert f"{bad}:6:6: examples[2].user: duplicate user message (also example 0)" in text


def test_missing_examples_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndescription: y\n")
    with pytest.raises(ConfigError, match="an 'examples' list of \\{user, assistant\\}"):
        load_style(bad)
