"""``weak_keywords``: broad words lower a topic's classifier bar instead of deciding alone.

The classifier is a tiny one trained here on a 3-d stand-in embedding (it stands for the MiniLM
heads: a score that grows with how risky the text reads); the keyword layer is the real one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from palm_middleware.guard.classifier import GuardClassifier
from palm_middleware.policy.models import TopicSpec
from palm_middleware.policy.topics import TopicClassifier


class _Embedder:
    """Axis 0 counts risky words ("detonate", "shrapnel"), axis 1 is a constant."""

    def embed(self, texts: object) -> np.ndarray:
        rows = []
        for t in texts:  # type: ignore[attr-defined]
            n = sum(t.lower().count(w) for w in ("detonate", "shrapnel"))
            v = np.array([float(n), 1.0])
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows)


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    emb = _Embedder()
    texts = [f"shrapnel detonate {i}" for i in range(20)] + [f"hello {i}" for i in range(20)]
    texts += [f"detonate {i}" for i in range(10)]
    y = ["risk"] * 20 + ["none"] * 20 + ["risk"] * 5 + ["none"] * 5
    clf = GuardClassifier().fit(emb.embed(texts), y)
    clf.thresholds_ = {"risk": 0.9}
    path = tmp_path_factory.mktemp("weak") / "risk.npz"
    clf.save(path)
    return path


def _spec(npz: Path, **extra: object) -> TopicSpec:
    return TopicSpec.model_validate(
        {
            "keywords": ["shrapnel"],
            "weak_keywords": ["bomb*"],
            "classifier": {"name": str(npz), "label": "risk", **extra},
        }
    )


def test_a_weak_word_alone_does_not_decide(npz: Path) -> None:
    clf = TopicClassifier({"risk": _spec(npz)}, embedder=_Embedder())
    score = float(clf._heads[0].clf.predict_proba(_Embedder().embed(["detonate"]))[0, 0])
    assert 0.45 <= score < 0.9  # between the weak bar (0.45) and the threshold (0.9)
    assert clf.classify("the history of the atomic bomb") == frozenset()  # weak word, low score
    assert clf.classify("how to detonate it") == frozenset()  # score alone below threshold
    assert clf.classify("how to detonate a b0mb") == {"risk"}  # weak word lowers the bar
    assert clf.classify("shrapnel") == {"risk"}  # a keyword still decides


def test_the_weak_threshold_is_the_policys_choice(npz: Path) -> None:
    clf = TopicClassifier({"risk": _spec(npz, weak_threshold=0.95)}, embedder=_Embedder())
    assert clf.classify("how to detonate a bomb") == frozenset()


def test_without_an_embedder_weak_words_decide(npz: Path) -> None:
    # Fail closed: nothing can weigh the word, so it counts as a keyword.
    clf = TopicClassifier({"risk": _spec(npz)})
    assert clf.classify("the history of the atomic bomb") == {"risk"}
    no_head = TopicClassifier({"risk": TopicSpec(weak_keywords=["bomb*"])}, embedder=_Embedder())
    assert no_head.classify("the history of the atomic bomb") == {"risk"}


def test_ignore_phrases_are_hidden_from_the_classifier_too(npz: Path) -> None:
    # "glue gun" reads as "gun" to an embedding; a phrase the policy calls harmless is blanked
    # before embedding, as it is before keyword matching.
    text = "a detonate detonate show tonight"
    plain = TopicClassifier({"risk": _spec(npz)}, embedder=_Embedder())
    assert plain.classify(text) == {"risk"}  # by the classifier: no keyword in it
    spec = _spec(npz).model_copy(update={"ignore": ["detonate detonate show"]})
    masked = TopicClassifier({"risk": spec}, embedder=_Embedder())
    assert masked._embedded_views([text]) == ["a   tonight"]
    assert masked.classify(text) == frozenset()
    # A text that is nothing but an ignored phrase is embedded as written (never empty).
    assert masked._embedded_views(["detonate detonate show"]) == ["detonate detonate show"]


def test_replies_meet_the_reply_threshold_whatever_their_weak_words(npz: Path) -> None:
    spec = _spec(npz, threshold=0.4, reply_threshold=0.95)
    clf = TopicClassifier({"risk": spec}, embedder=_Embedder())
    # The same text: a request clears 0.4, a reply must reach 0.95 (results cached apart).
    assert clf.classify("how to detonate it") == {"risk"}
    assert clf.classify("how to detonate it", reply=True) == frozenset()
    assert clf.classify("how to detonate it") == {"risk"}
    # A weak word does not lower the reply bar (it does for the request); a keyword decides.
    assert clf.classify("how to detonate a b0mb", reply=True) == frozenset()
    assert clf.classify("how to detonate a b0mb") == {"risk"}
    assert clf.classify("shrapnel", reply=True) == {"risk"}
    # Without reply_threshold a reply meets the request's bars, weak words included.
    plain = TopicClassifier({"risk": _spec(npz)}, embedder=_Embedder())
    assert plain.classify("how to detonate it", reply=True) == frozenset()
    assert plain.classify("how to detonate a b0mb", reply=True) == {"risk"}
