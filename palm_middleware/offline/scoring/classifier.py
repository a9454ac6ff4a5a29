"""``OnnxClassifierScorer``: any exported Hugging Face sequence classifier as a trait scorer.

The production path for a real reward or style model: export it with optimum
(``optimum-cli export onnx --task text-classification``), point the scorer at the folder
(``model.onnx``, ``tokenizer.json``, optionally ``config.json`` with ``id2label``) and name the
label whose probability is the trait score. A single-logit head (a reward model) is squashed
with a sigmoid instead of a softmax.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...engines._runtime import RuntimeOptions, create_session, run_session
from ...exceptions import ConfigError, ConfigIssue, ModelLoadError
from ...types import FloatArray
from .base import check_pairs

__all__ = ["OnnxClassifierScorer"]


class OnnxClassifierScorer:
    """Probability of one label of an ONNX sequence classifier.

    Args:
        path: Folder with ``model.onnx`` and ``tokenizer.json`` (and ``config.json``).
        label: Label name (looked up in ``config.json``'s ``id2label``) or index.
        name: Trait name this scorer reports.
        pair: Encode ``(prompt, reply)`` as a text pair (reward models); else the reply alone.
        max_length: Truncate inputs to this many tokens.
        batch_size: Replies per ONNX Runtime call in :meth:`score_many`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        label: str | int,
        name: str,
        pair: bool = False,
        max_length: int = 256,
        batch_size: int = 16,
    ) -> None:
        self.path = Path(path)
        self.name = name
        self.pair = bool(pair)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.label = label
        model_file = self.path / "model.onnx"
        tok_file = self.path / "tokenizer.json"
        for f in (model_file, tok_file):
            if not f.is_file():
                raise ModelLoadError(
                    f"{f}: not found; an ONNX classifier folder needs model.onnx and "
                    "tokenizer.json (export with `optimum-cli export onnx --task "
                    "text-classification`)"
                )
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(tok_file))
        self._tok.enable_truncation(self.max_length)
        pad_id = self._tok.token_to_id("[PAD]")
        self._tok.enable_padding(pad_id=0 if pad_id is None else pad_id)
        self._session = create_session(model_file, RuntimeOptions(device="cpu"))
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.label_index = self._resolve_label(label)

    def _resolve_label(self, label: str | int) -> int:
        if isinstance(label, int) and not isinstance(label, bool):
            return label
        cfg = self.path / "config.json"
        id2label: dict[str, str] = {}
        if cfg.is_file():
            id2label = json.loads(cfg.read_text(encoding="utf-8")).get("id2label", {})
        for k, v in id2label.items():
            if v == label:
                return int(k)
        raise ConfigError(
            ConfigIssue(
                f"label {label!r} is not in id2label {id2label}; name one of its labels or give "
                "an index",
                file=str(cfg),
                field="label",
            )
        )

    def _probs(self, texts: Sequence[str], prompts: Sequence[str]) -> FloatArray:
        if self.pair:
            enc = self._tok.encode_batch(list(zip(prompts, texts)))
        else:
            enc = self._tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        feeds: dict[str, Any] = {"input_ids": ids}
        if "attention_mask" in self._inputs:
            feeds["attention_mask"] = np.array([e.attention_mask for e in enc], dtype=np.int64)
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
        (logits,) = run_session(
            self._session, [self._session.get_outputs()[0].name], feeds, None, where=str(self.path)
        )
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2:
            raise ModelLoadError(
                f"{self.path}: expected logits of shape (batch, n_labels); got {z.shape}"
            )
        if z.shape[1] == 1:
            return np.asarray(1.0 / (1.0 + np.exp(-z[:, 0])), dtype=np.float64)
        if not 0 <= self.label_index < z.shape[1]:
            raise ConfigError(
                ConfigIssue(
                    f"label index {self.label_index} is out of range for {z.shape[1]} labels",
                    file=str(self.path),
                    field="label",
                )
            )
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return np.asarray(p[:, self.label_index] / p.sum(axis=1), dtype=np.float64)

    def score(self, text: str, prompt: str = "") -> float:
        """Probability of the configured label for ``text``."""
        return float(self._probs([text], [prompt])[0])

    def score_many(self, texts: Sequence[str], prompts: Sequence[str]) -> FloatArray:
        """Probabilities for many replies, in batches of ``batch_size``."""
        check_pairs(texts, prompts)
        out = [
            self._probs(texts[i : i + self.batch_size], prompts[i : i + self.batch_size])
            for i in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros(0)

    def params(self) -> dict[str, Any]:
        """Configuration as plain data."""
        return {
            "path": str(self.path),
            "label": self.label,
            "pair": self.pair,
            "max_length": self.max_length,
            "batch_size": self.batch_size,
        }

    def __repr__(self) -> str:
        return f"OnnxClassifierScorer({str(self.path)!r}, label={self.label!r})"
