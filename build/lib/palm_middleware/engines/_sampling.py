"""Next-token choice from logits: greedy, temperature, top-k and top-p, with a per-request RNG."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .base import GenerationParams

__all__ = ["Sampler"]


class Sampler:
    """Chooses tokens for one request; owns that request's ``np.random.Generator``.

    Filters apply in the order transformers uses: temperature, then top-k, then top-p.
    """

    def __init__(self, params: GenerationParams) -> None:
        self.params = params
        # One generator per request: concurrent requests never share (or race on) RNG state.
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: npt.NDArray[np.floating]) -> int:
        """The next token id given the last position's logits, shape (vocab_size,)."""
        p = self.params
        scores = logits.astype(np.float64, copy=True)
        if p.temperature == 0.0:
            return int(np.argmax(scores))
        scores /= p.temperature
        if 0 < p.top_k < scores.size:
            kth = np.partition(scores, -p.top_k)[-p.top_k]
            scores[scores < kth] = -np.inf
        scores -= scores.max()
        probs = np.exp(scores)
        probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cum = np.cumsum(probs[order])
            # Keep every token up to and including the one that crosses top_p (always >= 1 token).
            n_keep = int(np.searchsorted(cum, p.top_p, side="left")) + 1
            keep = order[:n_keep]
            filtered = np.zeros_like(probs)
            filtered[keep] = probs[keep]
            probs = filtered / filtered.sum()
        return int(self.rng.choice(probs.size, p=probs))
