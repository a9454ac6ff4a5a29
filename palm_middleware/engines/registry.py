"""Loaded models shared by every member that runs them, loaded lazily, evicted LRU.

Several portfolio members often share one base model (prompted and adapter members); the
registry loads each model folder once and hands the same :class:`OnnxModel` to all of them. With
a memory budget, loading a model evicts the least recently used ones until the estimate fits.
An evicted model stays alive while requests still hold it (Python reference counting); it is
only dropped from the registry, and the next request loads it again.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..exceptions import InvalidParameterError, ModelLoadError
from ._runtime import RuntimeOptions, release_free_heap
from .model import OnnxModel

if TYPE_CHECKING:
    from .genai import GenaiModel

__all__ = ["SessionRegistry"]

logger = logging.getLogger("palm_middleware.engines")

M = TypeVar("M", "OnnxModel", "GenaiModel")


class SessionRegistry:
    """A thread-safe LRU cache of loaded models keyed by resolved folder path and runtime.

    :meth:`get` loads a folder for the raw ONNX Runtime loop (:class:`OnnxModel`),
    :meth:`get_genai` for ONNX Runtime GenAI (:class:`~palm_middleware.engines.genai.GenaiModel`);
    both share one memory budget.

    Args:
        options: How sessions are created (device, threads); shared by all models.
        memory_budget: Most bytes of resident models, estimated as ``overhead`` times the size
            of each model's files; ``None`` means no limit.
        overhead: Resident memory per byte of model file (measured 1.3-1.65 on CPU).

    Attributes:
        n_loads_: Models loaded so far (reloads after eviction included).
        n_evictions_: Models evicted so far.
    """

    def __init__(
        self,
        options: RuntimeOptions | None = None,
        *,
        memory_budget: int | None = None,
        overhead: float = 1.5,
    ) -> None:
        if memory_budget is not None and (not isinstance(memory_budget, int) or memory_budget <= 0):
            raise InvalidParameterError(
                f"memory_budget must be None or a positive number of bytes; got {memory_budget!r}"
            )
        if not overhead >= 1.0:
            raise InvalidParameterError(f"overhead must be >= 1; got {overhead!r}")
        self.options = options or RuntimeOptions()
        self.memory_budget = memory_budget
        self.overhead = overhead
        self._models: OrderedDict[tuple[Path, str], OnnxModel | GenaiModel] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[Path, str], threading.Lock] = {}
        self.n_loads_ = 0
        self.n_evictions_ = 0

    @staticmethod
    def key(path: str | Path) -> Path:
        """The registry key of a model folder (absolute, symlinks resolved)."""
        return Path(path).expanduser().resolve()

    def get(self, path: str | Path) -> OnnxModel:
        """The model in folder ``path`` for the raw loop, loading it on first use."""
        return self._get(path, "onnx", OnnxModel)

    def get_genai(self, path: str | Path) -> GenaiModel:
        """The model in GenAI folder ``path`` for ``og.Generator``, loading it on first use."""
        from .genai import GenaiModel

        return self._get(path, "genai", GenaiModel)

    def _get(self, path: str | Path, kind: str, load: Callable[[Path, RuntimeOptions], M]) -> M:
        key = (self.key(path), kind)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model  # type: ignore[return-value]  # the kind in the key says which
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        # Load outside the registry lock (seconds for real models) but once per folder: other
        # requests for the same folder wait on its lock, requests for other models do not.
        with key_lock:
            with self._lock:
                model = self._models.get(key)
                if model is not None:
                    self._models.move_to_end(key)
                    return model  # type: ignore[return-value]
            loaded = load(key[0], self.options)
            self._admit(key, loaded)
            release_free_heap()  # the load's parse buffers, and any evicted model
            return loaded

    def _cost(self, model: OnnxModel | GenaiModel) -> int:
        return int(model.n_bytes * self.overhead)

    def _admit(self, key: tuple[Path, str], model: OnnxModel | GenaiModel) -> None:
        cost = self._cost(model)
        with self._lock:
            if self.memory_budget is not None:
                if cost > self.memory_budget:
                    raise ModelLoadError(
                        f"{key[0]}: needs about {cost:,} bytes resident, more than the registry's "
                        f"memory_budget of {self.memory_budget:,}; raise the budget"
                    )
                while self._models and self.resident_bytes() + cost > self.memory_budget:
                    old = self._models.popitem(last=False)[0][0]
                    self.n_evictions_ += 1
                    logger.info("evicted model %s to stay within the memory budget", old)
            self._models[key] = model
            self.n_loads_ += 1

    def preload(self, paths: Iterable[str | Path]) -> list[OnnxModel]:
        """Load ``paths`` now (in order), so the first requests do not pay the load time."""
        return [self.get(p) for p in paths]

    def evict(self, path: str | Path) -> bool:
        """Drop one folder (under either runtime); ``True`` if it was loaded."""
        folder = self.key(path)
        with self._lock:
            keys = [k for k in self._models if k[0] == folder]
            for k in keys:
                del self._models[k]
            return bool(keys)

    def clear(self) -> None:
        """Drop every model."""
        with self._lock:
            self._models.clear()

    def resident_bytes(self) -> int:
        """Estimated bytes held by the loaded models."""
        return sum(self._cost(m) for m in self._models.values())

    def loaded(self) -> list[Path]:
        """Loaded model folders, least recently used first."""
        with self._lock:
            return list(dict.fromkeys(folder for folder, _ in self._models))

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str | Path):
            return False
        folder = self.key(path)
        with self._lock:
            return any(k[0] == folder for k in self._models)

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)
