"""One request's KV cache and the model step that advances it.

Two implementations of the same step (feed this step's ids, mask and positions; get the
last position's logits on the host; keep the cache for the next step):

- :class:`NumpyCache`: ``session.run`` with the cache as numpy arrays. Works everywhere and is
  the only path that honours a LoRA adapter's ``RunOptions``. ``_batcher.BatchedCache`` is
  this path with decode steps batched across concurrent requests (``batch_decode=True``).
- :class:`BoundCache`: ``session.io_binding()``. ONNX Runtime allocates the ``present.*``
  outputs on the session's device and they are bound as the next step's ``past_key_values.*``
  inputs as they are, so on CUDA the cache never crosses the bus. Only the logits are bound
  to host memory (one row per decode step; the prompt's rows once, at prefill, because the graph
  outputs every position).

Each request builds its own cache (and binding), so concurrent requests share only the session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ._runtime import import_ort, run_bound, run_session

__all__ = ["BindingDevice", "BoundCache", "KVCache", "NumpyCache", "binding_device"]

_CUDA = "CUDAExecutionProvider"

Array = npt.NDArray[Any]


class _KVLayout(Protocol):
    """What a cache needs to know of one past/present pair (``model.KVInput``)."""

    @property
    def input_name(self) -> str: ...

    @property
    def output_name(self) -> str: ...

    def empty(self, batch: int = 1) -> Array: ...


class KVCache(Protocol):
    """A request's cache: :meth:`step` runs the model once and returns the last logits row."""

    def step(self, feeds: Mapping[str, Array]) -> Array: ...

    def close(self) -> None:
        """The request is over (finished, closed or cancelled); release shared resources."""


@dataclass(frozen=True)
class BindingDevice:
    """Where bound tensors live: ``type`` as OrtValue spells it (``"cpu"``, ``"cuda"``)."""

    type: str
    id: int = 0


def binding_device(session: Any, io_binding: bool | None) -> BindingDevice | None:
    """The device to bind the cache on for ``session``, or ``None`` to use ``session.run``.

    Automatic on CUDA (the first provider is the one the session got; create_session checked
    it); on CPU only when asked for, since there it saves nothing measurable (onnx.md §7).
    """
    if io_binding is False:
        return None
    providers = list(session.get_providers())
    if providers and providers[0] == _CUDA:
        options = session.get_provider_options().get(_CUDA, {})
        # Provider options are strings; a session created without them runs on GPU 0.
        return BindingDevice("cuda", int(options.get("device_id") or 0))
    return BindingDevice("cpu") if io_binding else None


class NumpyCache:
    """The ``session.run`` path: the cache round-trips through numpy arrays every step."""

    def __init__(
        self,
        session: Any,
        kv: Sequence[_KVLayout],
        output_names: list[str],
        run_options: Any,
        where: str,
    ) -> None:
        self._session = session
        self._kv = tuple(kv)
        self._outputs = output_names  # logits first, then kv's outputs in order
        self._run_options = run_options
        self._where = where
        self._past: dict[str, Array] = {k.input_name: k.empty() for k in self._kv}

    def step(self, feeds: Mapping[str, Array]) -> Array:
        out = run_session(
            self._session, self._outputs, {**feeds, **self._past}, self._run_options, self._where
        )
        self._past = {k.input_name: v for k, v in zip(self._kv, out[1:], strict=True)}
        logits: Array = out[0][0, -1]
        return logits

    def close(self) -> None:
        pass  # nothing shared to release


class BoundCache:
    """The IO-binding path: the cache stays in OrtValues on ``device`` between steps."""

    def __init__(
        self,
        session: Any,
        kv: Sequence[_KVLayout],
        logits_name: str,
        device: BindingDevice,
        where: str,
    ) -> None:
        self._ort = import_ort()
        self._session = session
        self._kv = tuple(kv)
        self._logits = logits_name
        self._device = device
        self._where = where
        self._binding = session.io_binding()
        self._past: dict[str, Any] = {k.input_name: self._on_device(k.empty()) for k in self._kv}

    def _on_device(self, array: Array) -> Any:
        # On CPU the OrtValue aliases the array (and keeps it alive); on CUDA this copies it.
        return self._ort.OrtValue.ortvalue_from_numpy(
            np.ascontiguousarray(array), self._device.type, self._device.id
        )

    def step(self, feeds: Mapping[str, Array]) -> Array:
        b = self._binding
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        for name, array in feeds.items():
            b.bind_ortvalue_input(name, self._on_device(array))
        for name, value in self._past.items():
            b.bind_ortvalue_input(name, value)
        # Logits go to the host (sampling runs there); present.* stay on the device, allocated
        # by ORT at the right size (the cache grows by one position per step).
        b.bind_output(self._logits, "cpu")
        for k in self._kv:
            b.bind_output(k.output_name, self._device.type, self._device.id)
        run_bound(self._session, b, self._where)
        logits, *present = b.get_outputs()  # in the order bound above
        # The new OrtValues become the next step's past; the previous step's are released.
        self._past = {k.input_name: v for k, v in zip(self._kv, present, strict=True)}
        # A copy of one row: the output buffer belongs to the binding, reused next step.
        row: Array = np.array(logits.numpy()[0, -1], copy=True)
        return row

    def close(self) -> None:
        pass  # the binding is the request's own
