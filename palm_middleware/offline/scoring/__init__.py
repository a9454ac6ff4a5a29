"""Trait scorers: ``(reply, prompt) -> [0, 1]`` per trait, calibrated and validated.

Built-in: :class:`~.brevity.BrevityScorer` (token length), :class:`~.structure.StructureScorer`
(lists, steps, headings, paragraphs, length), :class:`~.formality.FormalityScorer` (a lexicon of
casual and formal cues) and :class:`~.classifier.OnnxClassifierScorer` (any exported Hugging Face
sequence classifier; the path for a real reward model) and :class:`~.embedding.EmbeddingScorer`
(cosine to prototype sentences of a trait's two poles, all-MiniLM-L6-v2). Anything with ``name``,
``score``, ``score_many`` and ``params`` is a :class:`~.base.TraitScorer`.
"""

from __future__ import annotations

from .base import TraitScorer
from .brevity import BrevityScorer
from .calibration import ScorerSet, load_scorers, save_scorers
from .embedding import EmbeddingScorer
from .formality import FormalityScorer
from .structure import StructureScorer
from .validation import load_validation_set, pairwise_accuracy

__all__ = [
    "BrevityScorer",
    "EmbeddingScorer",
    "FormalityScorer",
    "load_scorers",
    "load_validation_set",
    "pairwise_accuracy",
    "save_scorers",
    "ScorerSet",
    "StructureScorer",
    "TraitScorer",
]
