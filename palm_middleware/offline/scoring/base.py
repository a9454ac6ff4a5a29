"""The ``TraitScorer`` protocol and the calibrated-squash base the built-in scorers share.

A trait scorer maps one reply (and the prompt it answers) to a number in [0, 1]: how much of its
trait the reply shows. Scorers are deterministic and pure; any model they need is loaded once.
Built-in scorers compute a raw feature value and squash it with a logistic curve whose
``center`` and ``scale`` are calibrated on the labelled validation set (see
:mod:`palm_middleware.offline.scoring.calibration`); a monotone squash leaves pairwise ordering
(and so the validation accuracy) unchanged, it only spreads the scores over [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ...exceptions import InvalidParameterError
from ...types import FloatArray

__all__ = ["SquashScorer", "TraitScorer", "check_pairs"]


@runtime_checkable
class TraitScorer(Protocol):
    """Scores replies on one trait.

    Attributes:
        name: The trait this scorer measures (a trait name of the portfolio).
    """

    name: str

    def score(self, text: str, prompt: str = "") -> float:
        """The trait score of ``text`` (a reply to ``prompt``), in [0, 1]."""
        ...

    def score_many(self, texts: Sequence[str], prompts: Sequence[str]) -> FloatArray:
        """Scores of many replies, shape (n_texts,), each in [0, 1]."""
        ...

    def params(self) -> dict[str, Any]:
        """The scorer's configuration and calibration as plain data (for YAML)."""
        ...


def check_pairs(texts: Sequence[str], prompts: Sequence[str]) -> None:
    """Raise :class:`InvalidParameterError` unless ``texts`` and ``prompts`` align."""
    if len(texts) != len(prompts):
        raise InvalidParameterError(
            f"score_many needs one prompt per text; got {len(texts)} texts and "
            f"{len(prompts)} prompts"
        )


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


class SquashScorer:
    """Base of scorers that squash a raw feature with a calibrated logistic curve.

    ``score = sigmoid(sign * (raw - center) / scale)``. Subclasses define :meth:`raw`
    (and ``sign = -1`` for traits that fall as the feature grows, like brevity).

    Args:
        center: Raw value that scores 0.5.
        scale: Raw distance from ``center`` that moves the score from 0.5 to about 0.73.
    """

    name = "trait"
    sign = 1.0

    def __init__(self, *, center: float = 0.0, scale: float = 1.0) -> None:
        if not (isinstance(center, int | float) and math.isfinite(center)):
            raise InvalidParameterError(
                f"{type(self).__name__}: center must be a finite number; got {center!r}"
            )
        if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
            raise InvalidParameterError(
                f"{type(self).__name__}: scale must be a finite number > 0; got {scale!r}"
            )
        self.center = float(center)
        self.scale = float(scale)

    def raw(self, text: str, prompt: str = "") -> float:
        """The uncalibrated feature value of ``text``."""
        raise NotImplementedError

    def score(self, text: str, prompt: str = "") -> float:
        """The calibrated score of ``text``, in [0, 1]."""
        return _sigmoid(self.sign * (self.raw(text, prompt) - self.center) / self.scale)

    def score_many(self, texts: Sequence[str], prompts: Sequence[str]) -> FloatArray:
        """Scores of many replies, shape (n_texts,)."""
        check_pairs(texts, prompts)
        return np.array([self.score(t, p) for t, p in zip(texts, prompts)], dtype=np.float64)

    def fit(self, texts: Sequence[str], prompts: Sequence[str]) -> SquashScorer:
        """Calibrate ``center`` (median raw value) and ``scale`` (half the interquartile range).

        Args:
            texts: Replies spanning the trait (the labelled validation set's replies).
            prompts: Their prompts.

        Returns:
            ``self``.
        """
        check_pairs(texts, prompts)
        if len(texts) < 2:
            raise InvalidParameterError(f"fit needs at least 2 texts; got {len(texts)}")
        raw = np.array([self.raw(t, p) for t, p in zip(texts, prompts)], dtype=np.float64)
        q1, med, q3 = np.quantile(raw, [0.25, 0.5, 0.75])
        self.center = float(med)
        self.scale = float(max((q3 - q1) / 2.0, 1e-6))
        return self

    def params(self) -> dict[str, Any]:
        """Configuration and calibration as plain data."""
        return {"center": round(self.center, 6), "scale": round(self.scale, 6)}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SquashScorer:
        """Rebuild from :meth:`params` output (unknown keys raise ``TypeError``)."""
        return cls(**dict(params))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
