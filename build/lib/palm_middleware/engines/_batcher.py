"""Micro-batching of decode steps across concurrent requests to one model (opt-in).

At batch 1 a decode step on CPU is memory-bandwidth-bound: every step streams all weights for
one row of arithmetic. :class:`DecodeBatcher` lets the requests decoding on one model at the
same time share that stream: each request submits its step (one new token and its own KV
cache); the first submitter leads, waits until every registered request has submitted (or
``max_batch`` rows, or ``window_s`` passed), runs them in ONE ``session.run`` and hands each
request its logits row and its new cache. Nothing runs in the background: the leader is a
request thread, so there is no worker thread to start or stop.

Rows with different past lengths are left-padded with zero keys/values that the attention mask
hides (mask 0; softmax gives them weight exactly 0), and keep their own ``position_ids``, so
each row computes what it computes alone, up to float summation order.

Limits (by design): prefill runs per request at batch 1 (:class:`BatchedCache` sends only
one-token steps here); members with a LoRA adapter never come here (their ``RunOptions`` are
per request; ``OnnxEngine`` gives them a plain ``NumpyCache``); batching uses the numpy
``session.run`` path only, so a model with IO binding (CUDA, or ``io_binding=True``) does not
batch. A registered request that pauses between steps (a slow stream consumer) delays the
others by at most ``window_s`` per step; a closed or cancelled request leaves at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._kvcache import Array, NumpyCache, _KVLayout
from ._runtime import run_session

__all__ = ["BatchedCache", "DecodeBatcher"]


@dataclass(eq=False)
class _Step:
    """One request's pending decode step and, once run, its result."""

    feeds: Mapping[str, Array]  # input_ids [1, 1], attention_mask [1, past + 1], position_ids
    past: Mapping[str, Array]  # [1, heads, past, head_dim] per KV input
    logits: Array | None = None
    present: dict[str, Array] = field(default_factory=dict)
    error: BaseException | None = None
    done: bool = False

    @property
    def past_len(self) -> int:
        return int(next(iter(self.past.values())).shape[2])


class DecodeBatcher:
    """Runs the concurrent decode steps of one model's requests as batches.

    Args:
        session: The model's ``InferenceSession`` (shared; ``run`` is thread-safe).
        kv: The model's past/present pairs (``OnnxModel.kv_inputs``).
        output_names: Logits first, then ``kv``'s outputs in order.
        where: Names the model in errors.
        window_s: Longest wait of a leader for the other registered requests' steps.
        max_batch: Most rows in one run.

    Attributes:
        batch_sizes: How many runs had each batch size (for tests and benchmarks).
    """

    def __init__(
        self,
        session: Any,
        kv: Sequence[_KVLayout],
        output_names: list[str],
        where: str,
        window_s: float = 0.002,
        max_batch: int = 8,
    ) -> None:
        self.session = session
        self.kv = tuple(kv)
        self.output_names = output_names
        self.where = where
        self.window_s = window_s
        self.max_batch = max(1, max_batch)
        self.batch_sizes: Counter[int] = Counter()
        self._cond = threading.Condition()
        self._active = 0  # requests in their decode phase (joined, not left)
        self._pending: list[_Step] = []
        self._leading = False  # a request is collecting or running a batch

    def join(self) -> None:
        """Register a request that will submit decode steps (the leader waits for it)."""
        with self._cond:
            self._active += 1

    def leave(self) -> None:
        """Unregister a finished, closed or cancelled request, so nobody waits for it."""
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def step(
        self, feeds: Mapping[str, Array], past: Mapping[str, Array]
    ) -> tuple[Array, dict[str, Array]]:
        """Run one decode step (possibly batched with others'): last logits row, new cache."""
        item = _Step(feeds, past)
        with self._cond:
            self._pending.append(item)
            self._cond.notify_all()  # a waiting leader may now have a full batch
            while not item.done:
                if self._leading:
                    self._cond.wait()
                    continue
                self._leading = True
                batch = self._collect()
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._leading = False
                    self._cond.notify_all()  # results are ready; someone else may lead next
        if item.error is not None:
            raise item.error
        assert item.logits is not None
        return item.logits, item.present

    def _collect(self) -> list[_Step]:
        """Wait (lock held, released while waiting) for a full batch or the window's end."""
        deadline = time.monotonic() + self.window_s
        while len(self._pending) < min(self._active, self.max_batch):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        self.batch_sizes[len(batch)] += 1
        return batch

    def _run(self, batch: list[_Step]) -> None:
        """One session call for ``batch``; results or the error go to every item. Never raises."""
        try:
            if len(batch) == 1:  # no padding, no copies: exactly the unbatched step
                item = batch[0]
                out = run_session(
                    self.session, self.output_names, {**item.feeds, **item.past}, None, self.where
                )
                item.logits = out[0][0, -1]
                item.present = {k.input_name: v for k, v in zip(self.kv, out[1:], strict=True)}
            else:
                out = run_session(
                    self.session, self.output_names, self._stack(batch), None, self.where
                )
                self._scatter(batch, out)
        except BaseException as exc:  # re-raised in each request's own thread
            for item in batch:
                item.error = exc
        finally:
            for item in batch:
                item.done = True

    def _stack(self, batch: list[_Step]) -> dict[str, Array]:
        """Batch feeds: rows left-padded to the longest past, pads masked out."""
        lens = [item.past_len for item in batch]
        top = max(lens)
        first = batch[0].feeds
        feeds: dict[str, Array] = {
            name: np.concatenate([item.feeds[name] for item in batch])
            for name in first
            if name != "attention_mask"
        }
        if "attention_mask" in first:
            mask = np.zeros((len(batch), top + 1), dtype=first["attention_mask"].dtype)
            for i, (item, n) in enumerate(zip(batch, lens, strict=True)):
                mask[i, top - n :] = item.feeds["attention_mask"][0]
            feeds["attention_mask"] = mask
        for k in self.kv:
            shape = batch[0].past[k.input_name].shape
            past = np.zeros((len(batch), shape[1], top, shape[3]), dtype=k.empty().dtype)
            for i, (item, n) in enumerate(zip(batch, lens, strict=True)):
                past[i, :, top - n :] = item.past[k.input_name][0]
            feeds[k.input_name] = past
        return feeds

    def _scatter(self, batch: list[_Step], out: list[Any]) -> None:
        """Each item's logits row and its unpadded new cache (copies: the batch arrays go)."""
        top = max(item.past_len for item in batch)
        for i, item in enumerate(batch):
            pad = top - item.past_len
            item.logits = np.array(out[0][i, -1], copy=True)
            item.present = {
                k.input_name: np.ascontiguousarray(v[i : i + 1, :, pad:])
                for k, v in zip(self.kv, out[1:], strict=True)
            }


class BatchedCache(NumpyCache):
    """A request's numpy cache whose decode steps go through a :class:`DecodeBatcher`.

    The prefill (several tokens, or an empty past) runs alone, as in :class:`NumpyCache`; the
    request joins the batcher at its first decode step and leaves it in :meth:`close`.
    """

    def __init__(self, batcher: DecodeBatcher) -> None:
        super().__init__(batcher.session, batcher.kv, batcher.output_names, None, batcher.where)
        self._batcher = batcher
        self._joined = False

    def step(self, feeds: Mapping[str, Array]) -> Array:
        past_len = next(iter(self._past.values())).shape[2] if self._past else 0
        if feeds["input_ids"].shape[1] != 1 or past_len == 0:
            return super().step(feeds)
        if not self._joined:
            self._batcher.join()
            self._joined = True
        logits, self._past = self._batcher.step(feeds, self._past)
        return logits

    def close(self) -> None:
        if self._joined:
            self._joined = False
            self._batcher.leave()
