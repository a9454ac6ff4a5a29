"""OnnxClassifierScorer on a tiny real ONNX classifier run by ONNX Runtime."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from palm_middleware.exceptions import ConfigError, ModelLoadError
from palm_middleware.offline.scoring.classifier import OnnxClassifierScorer
from palm_middleware.offline.scoring.formality import FormalityScorer

from .tiny_classifier import write_classifier


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_classifier(tmp_path_factory.mktemp("clf") / "formality-clf")


def test_probability_of_the_named_label(folder: Path) -> None:
    s = OnnxClassifierScorer(folder, label="formal", name="formality")
    formal = s.score("However the plan is advisable")
    casual = s.score("hey dude this is super awesome lol")
    neutral = s.score("the plan")
    assert 0.0 <= casual < neutral < formal <= 1.0
    assert neutral == pytest.approx(0.5)
    # "however" and "advisable" of 5 tokens: mean logits (-0.8, 0.8), softmax of 1.6.
    assert formal == pytest.approx(1 / (1 + math.exp(-1.6)), rel=1e-5)


def test_label_by_index_is_the_complement(folder: Path) -> None:
    formal = OnnxClassifierScorer(folder, label="formal", name="formality")
    casual = OnnxClassifierScorer(folder, label=0, name="casualness")
    text = "hey however lol"
    assert formal.score(text) + casual.score(text) == pytest.approx(1.0)


def test_score_many_batches_with_padding_like_single_calls(folder: Path) -> None:
    s = OnnxClassifierScorer(folder, label="formal", name="formality", batch_size=2)
    texts = ["However", "hey dude", "the plan is good therefore it works", "lol", "a"]
    batched = s.score_many(texts, [""] * len(texts))
    single = np.array([s.score(t) for t in texts])
    np.testing.assert_allclose(batched, single, rtol=1e-5)


def test_agrees_with_the_lexicon_scorer_on_order(folder: Path) -> None:
    clf = OnnxClassifierScorer(folder, label="formal", name="formality")
    lex = FormalityScorer()
    a, b = "Furthermore, it is advisable to plan.", "hey, gonna be awesome lol"
    assert (clf.score(a) > clf.score(b)) and (lex.score(a) > lex.score(b))


def test_unknown_label_and_missing_folder(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.json.*label 'polite' is not in id2label"):
        OnnxClassifierScorer(folder, label="polite", name="x")
    with pytest.raises(ModelLoadError, match=r"model\.onnx: not found"):
        OnnxClassifierScorer(tmp_path, label=0, name="x")
