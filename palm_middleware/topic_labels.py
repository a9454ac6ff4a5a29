"""Topic labels and the language of a request's messages, with one classifier per policy version."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

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
        self._cached: tuple[BoundsPolicy, TopicClassifier] | None = None
        self._langs: OrderedDict[str, tuple[tuple[int, str | None], ...]] = OrderedDict()
        self._uses: tuple[BoundsPolicy, bool] | None = None
        self._lock = threading.Lock()

    def classifier(self, policy: BoundsPolicy) -> TopicClassifier:
        """The classifier for ``policy``."""
        if self._fixed is not None:
            return self._fixed
        cached = self._cached
        # Keyed by the policy object, not only its version: a reload builds a new object, and
        # its classifier files (``classifier: PATH``) are read again even when the policy's
        # text, hence its version, is unchanged.
        if cached is None or cached[0] is not policy:
            topics = policy.spec.topics if policy.spec is not None else {}
            law = law_topics(policy.rules)
            clf = TopicClassifier.build(topics, embedder=self._embedder, law_topics=law)
            cached = (policy, clf)
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

    def language(self, policy: BoundsPolicy, messages: Sequence[Mapping[str, str]]) -> str | None:
        """The detected language of the request, when ``policy`` uses it (else None).

        Each text is judged by its semantic views (a base64 payload by what it decodes to); see
        :func:`palm_middleware.guard.language.pick_language` for the rule.

        Raises:
            TopicLabelError: the detector failed (the caller must refuse the request).
        """
        uses = self._uses
        if uses is None or uses[0] is not policy:
            uses = self._uses = (policy, uses_language(policy))
        if not uses[1]:
            return None
        spec = policy.spec
        guarded = frozenset(spec.languages) if spec is not None and spec.languages else None
        try:
            from .guard.language import pick_language

            found = [d for m in messages if m["content"] for d in self._detect(m["content"])]
            return pick_language(found, guarded)
        except Exception as exc:  # fail closed: the language rule would be skipped
            raise TopicLabelError(
                f"language detection failed ({type(exc).__name__}: {exc})"
            ) from exc

    def _detect(self, text: str) -> tuple[tuple[int, str | None], ...]:
        """(length, language) of each semantic view of ``text``; remembered per text (LRU)."""
        from .guard.language import detect
        from .guard.normalize import text_views

        key = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).hexdigest()
        with self._lock:
            hit = self._langs.get(key)
        if hit is None:
            hit = tuple((len(v), detect(v).lang) for v in text_views(text).semantic)
            with self._lock:
                self._langs[key] = hit
                if len(self._langs) > 4096:
                    self._langs.popitem(last=False)
        return hit


def uses_language(policy: BoundsPolicy) -> bool:
    """True when ``policy`` has ``languages:`` or a condition on ``language``."""
    if policy.spec is not None and policy.spec.languages is not None:
        return True

    def walk(node: Any) -> bool:
        if isinstance(node, Mapping):
            return any(k == "language" or walk(v) for k, v in node.items())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return any(walk(r.when) or walk(r.unless) for r in policy.rules)
