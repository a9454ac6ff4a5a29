"""Behaviour and bounds of the built-in trait scorers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from palm_middleware.exceptions import ConfigError, InvalidParameterError
from palm_middleware.offline.scoring import (
    BrevityScorer,
    FormalityScorer,
    StructureScorer,
    TraitScorer,
    load_scorers,
)
from palm_middleware.offline.scoring.structure import structure_features
from tests.engines.tiny import train_tokenizer

SCORERS = [BrevityScorer(), StructureScorer(), FormalityScorer()]


@pytest.mark.parametrize("scorer", SCORERS, ids=lambda s: s.name)
def test_is_a_trait_scorer(scorer: TraitScorer) -> None:
    assert isinstance(scorer, TraitScorer)


@given(st.text(max_size=400), st.text(max_size=40))
def test_scores_stay_in_unit_interval(text: str, prompt: str) -> None:
    for s in SCORERS:
        v = s.score(text, prompt)
        assert 0.0 <= v <= 1.0 and math.isfinite(v)


def test_brevity_decreases_with_length() -> None:
    s = BrevityScorer()
    scores = [s.score("word " * n) for n in (1, 5, 20, 60, 200, 1000)]
    assert all(a > b for a, b in zip(scores, scores[1:]))
    assert scores[0] > 0.9 and scores[-1] < 0.05
    short, long = s.anchors()
    assert s.score("w " * round(short)) == pytest.approx(0.9, abs=0.03)
    assert s.score("w " * round(long)) == pytest.approx(0.1, abs=0.03)


def test_brevity_counts_tokens_of_a_tokenizer_json(tmp_path: Path) -> None:
    train_tokenizer(tmp_path)
    tok = BrevityScorer(tokenizer=str(tmp_path / "tokenizer.json"))
    ws = BrevityScorer()
    text = "naïve café, crème brûlée"
    assert tok.raw(text) > ws.raw(text)  # byte-level BPE splits these words into many tokens
    with pytest.raises(ConfigError, match=r"nope\.json: tokenizer file not found"):
        BrevityScorer(tokenizer=str(tmp_path / "nope.json"))


def test_structure_reads_lists_headings_paragraphs() -> None:
    steps = "## Steps\n1. Mix the flour.\n2. Add water.\n3. Knead.\n\nRest for an hour."
    f = structure_features(steps)
    assert (f.items, f.headings, f.paragraphs) == (3, 1, 2)
    s = StructureScorer()
    prose = "Mix the flour with water, knead it, and let it rest for an hour."
    assert s.score(steps) > s.score(prose) > s.score("Knead.")


def test_formality_cues_are_transparent() -> None:
    s = FormalityScorer()
    casual = "Hey! Honestly it's super easy, you'll love it lol 🙂"
    formal = "However, it is advisable to consult the documentation; consequently, errors decrease."
    cues = s.explain(casual)
    assert {"hey", "it's", "super", "you'll", "lol", "!", "🙂"} <= set(cues["casual"])
    assert {"however", "consequently", "it is advisable"} <= set(s.explain(formal)["formal"])
    assert s.score(casual) < 0.2 < 0.8 < s.score(formal)
    assert s.score("The meeting is at noon.") == pytest.approx(0.5)


def test_score_many_matches_score_and_checks_lengths() -> None:
    s = StructureScorer()
    texts = ["a", "- a\n- b", "# H\ntext"]
    np.testing.assert_allclose(s.score_many(texts, ["p"] * 3), [s.score(t) for t in texts])
    with pytest.raises(InvalidParameterError, match="3 texts and 1 prompts"):
        s.score_many(texts, ["p"])


@pytest.mark.parametrize("kwargs", [{"scale": 0.0}, {"scale": -1.0}, {"center": math.nan}])
def test_bad_calibration_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameterError, match="BrevityScorer: (scale|center) must be"):
        BrevityScorer(**kwargs)


def test_fit_spreads_scores_without_reordering() -> None:
    texts = ["w " * n for n in (2, 4, 8, 16, 32, 64)]
    s = BrevityScorer(center=10.0, scale=5.0)  # a bad curve: everything near 0.85
    before = s.score_many(texts, [""] * 6)
    s.fit(texts, [""] * 6)
    after = s.score_many(texts, [""] * 6)
    assert np.array_equal(np.argsort(before), np.argsort(after))
    assert after.max() - after.min() > 3 * (before.max() - before.min())


def test_bundled_scorers_load() -> None:
    from palm_middleware.data import bundled

    scorers = load_scorers(bundled("scorers.yaml"))
    assert scorers.traits == ["brevity", "structure", "formality", "formality_emb", "detail_emb"]
    assert all(v["pairwise_accuracy"] >= 0.85 for v in scorers.validation.values())
    assert scorers.describe()["formality_emb"].startswith("embedding (validation acc 0.8")


def test_scoring_and_evaluation_import_lightly() -> None:
    import subprocess
    import sys

    code = (
        "import sys, palm_middleware.offline.scoring, palm_middleware.offline.evaluation; "
        "print(','.join(m for m in ['onnxruntime', 'tokenizers', 'tqdm', 'matplotlib'] "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


@pytest.mark.parametrize(
    "module", ["palm_middleware.offline.scoring", "palm_middleware.offline.evaluation"]
)
def test_all_is_sorted(module: str) -> None:
    import importlib

    mod = importlib.import_module(module)
    assert mod.__all__ == sorted(mod.__all__, key=str.casefold)
    assert all(hasattr(mod, n) for n in mod.__all__)
