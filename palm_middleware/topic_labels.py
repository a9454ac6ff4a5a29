"""Topic labels of a request's messages, with one classifier per policy version."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from .exceptions import TopicLabelError
from .policy.topics import Embedder, TopicClassifier, law_topics

if TYPE_CHECKING:
    from .policy import BoundsPolicy

__all__ = ["TopicLabeller"]


class TopicLabeller:
    """Labels messages with the topics of the policy in force.

    Args:
        fixed: a classifier to use for every policy; None builds one per policy version from its
            ``topics:`` section (rebuilt when a reload changes the version).
        embedder: for topics with ``prototypes:`` (see :class:`TopicClassifier`).
    """

    def __init__(
        self, fixed: TopicClassifier | None, embedder: Embedder | Literal["auto"] | None
    ) -> None:
        self._fixed = fixed
        self._embedder = embedder
        self._cached: tuple[str, TopicClassifier] | None = None

    def classifier(self, policy: BoundsPolicy) -> TopicClassifier:
        """The classifier for ``policy``."""
        if self._fixed is not None:
            return self._fixed
        cached = self._cached
        if cached is None or cached[0] != policy.version:
            topics = policy.spec.topics if policy.spec is not None else {}
            law = law_topics(policy.rules)
            clf = TopicClassifier.build(topics, embedder=self._embedder, law_topics=law)
            cached = (policy.version, clf)
            self._cached = cached
        return cached[1]

    def labels(self, policy: BoundsPolicy, messages: Sequence[Mapping[str, str]]) -> frozenset[str]:
        """Topic labels of every message's text; each distinct text classified once.

        Raises:
            TopicLabelError: the classifier failed (the caller must refuse the request).
        """
        texts = {m["content"] for m in messages if m["content"]}
        if not texts:
            return frozenset()
        try:
            classifier = self.classifier(policy)
            labels: set[str] = set()
            for text in texts:
                labels |= classifier.classify(text)
        except TopicLabelError:
            raise
        except Exception as exc:
            raise TopicLabelError(f"topic labelling failed ({type(exc).__name__}: {exc})") from exc
        return frozenset(labels)
