"""The edge to ONNX Runtime: importing it, choosing execution providers, creating sessions.

Every onnxruntime exception is translated here, once, into :class:`ModelLoadError` (session
creation) or :class:`GenerationError` (``run``), chained with ``from exc``.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..exceptions import GenerationError, InvalidParameterError, ModelLoadError

__all__ = [
    "ENV",
    "Device",
    "RuntimeOptions",
    "create_session",
    "import_ort",
    "release_free_heap",
    "run_bound",
    "run_session",
]

logger = logging.getLogger("palm_middleware.engines")

Device = Literal["auto", "cpu", "cuda"]


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the OS (glibc ``malloc_trim``); returns whether it ran.

    Loading a model parses ``tokenizer.json`` (tokenizers) and the graph and its weights (ONNX
    Runtime) on the C heap; glibc keeps the freed parse buffers resident unless trimmed (~16 MB
    for SmolLM2's tokenizer alone). Called after each model load and eviction. A no-op off
    Linux or on a libc without ``malloc_trim`` (musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_INSTALL_HINT = (
    "install exactly one runtime: `pip install palm-middleware[cpu]` or "
    "`pip install palm-middleware[gpu]`"
)

_warned_lock = threading.Lock()
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    """Log ``message`` at WARNING the first time ``key`` is seen in this process."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(message)


def import_ort() -> Any:
    """Import onnxruntime, or raise :class:`ModelLoadError` naming the extra to install."""
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise ModelLoadError(f"onnxruntime is not installed; {_INSTALL_HINT}") from exc
    if not hasattr(ort, "InferenceSession"):
        # What is left after `pip uninstall` of one of two runtimes sharing the folder.
        raise ModelLoadError(
            "onnxruntime is installed but broken (no InferenceSession): two runtime "
            "distributions probably overwrote each other; repair with "
            "`pip install --force-reinstall --no-deps onnxruntime-gpu` (or onnxruntime)"
        )
    names = {(d.metadata["Name"] or "").lower() for d in importlib.metadata.distributions()}
    if {"onnxruntime", "onnxruntime-gpu"} <= names:
        _warn_once(
            "two-dists",
            "both onnxruntime and onnxruntime-gpu are installed; they share one folder and the "
            "CPU build may shadow the GPU build. " + _INSTALL_HINT,
        )
    return ort


#: Environment variables a deployment sets to override the session defaults (e.g. in the proxy's
#: environment); arguments passed to :class:`RuntimeOptions` still win over them.
ENV = {
    "device": "PALM_ORT_DEVICE",
    "intra_op_threads": "PALM_ORT_INTRA_OP_THREADS",
    "inter_op_threads": "PALM_ORT_INTER_OP_THREADS",
    "allow_spinning": "PALM_ORT_ALLOW_SPINNING",
}
_DEVICES = ("auto", "cpu", "cuda")
_BOOLS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLS.update({"0": False, "false": False, "no": False, "off": False})


def _env(key: str) -> str | None:
    value = os.environ.get(ENV[key], "").strip()
    return value or None


def _env_device() -> Device:
    value = _env("device")
    if value is None:
        return "auto"
    if value.lower() not in _DEVICES:
        raise InvalidParameterError(f"{ENV['device']}={value!r}: expected one of {_DEVICES}")
    device: Device = value.lower()  # type: ignore[assignment]
    return device


def _env_threads(key: str, default: int) -> int:
    value = _env(key)
    if value is None:
        return default
    if not value.isdigit():
        raise InvalidParameterError(
            f"{ENV[key]}={value!r}: expected a whole number of threads >= 0 (0: one per core)"
        )
    return int(value)


def _env_spinning() -> bool:
    value = _env("allow_spinning")
    if value is None:
        return False
    if value.lower() not in _BOOLS:
        raise InvalidParameterError(
            f"{ENV['allow_spinning']}={value!r}: expected 1/0 or true/false"
        )
    return _BOOLS[value.lower()]


@dataclass(frozen=True)
class RuntimeOptions:
    """How sessions are created.

    The defaults of ``device``, ``intra_op_threads``, ``inter_op_threads`` and
    ``allow_spinning`` are read from the environment (:data:`ENV`, ``PALM_ORT_*``) when the
    options are created, so one deployment can change them without code; arguments win.

    The built-in defaults are the ones that held up on a shared host (BENCHMARKS.md, "Thread
    and spinning defaults"): **one intra-op thread, no spinning**. Spinning threads burn the
    cores other processes need and are descheduled mid-op (2 threads with spinning: 0.7-0.9x of
    1 thread). Without spinning, 2 threads gained only when the host was oversubscribed 8x
    (1.7x, by taking a larger share of the CPU from the other tenants); at load 2-5 they were
    0.74-0.9x of 1. A host with idle, dedicated cores can raise ``PALM_ORT_INTRA_OP_THREADS``.

    Attributes:
        device: ``"auto"`` uses CUDA when the runtime offers it and falls back to CPU (logged
            once); ``"cpu"`` never tries CUDA; ``"cuda"`` is ``"auto"`` that must get a GPU.
        require_gpu: Raise :class:`ModelLoadError` instead of falling back to CPU.
        intra_op_threads: Threads of one ``run`` on CPU (0: ONNX Runtime's default, one per
            physical core). Concurrent requests each run on their own thread already.
        inter_op_threads: Threads running independent graph nodes in parallel (0: default).
            Sessions run nodes sequentially, so ONNX Runtime makes no such pool.
        disable_prepacking: Saves ~20 % resident memory on CPU at a small speed cost.
        allow_spinning: Let idle intra-op threads spin between ops (ONNX Runtime's own
            default). Spinning shortens each op's hand-off when cores are dedicated; ``False``
            (our default) yields the core instead, which helps when other processes compete
            for the cores. Irrelevant at 1 intra-op thread (no pool).
        io_binding: Decode through ``session.io_binding()`` so the KV cache stays on the
            session's device between steps (``None``: only when the session runs on CUDA, where
            it saves two cache copies over the bus per step; ``True``: on CPU too, which runs the
            same code path for tests and benchmarks; ``False``: never). Members with a LoRA
            adapter always use ``session.run`` (ONNX Runtime ignores adapters under IO binding).
        batch_decode: Run the decode steps of concurrent requests to one model as one batched
            ``session.run`` (``_batcher``): more tokens/s in total when several requests decode
            at once. Needs ``attention_mask`` in the graph; numpy path only, so ignored when IO
            binding is on; members with a LoRA adapter still run alone.
        batch_window_ms: Longest wait of a decode step for the other requests' steps.
        max_batch: Most requests in one batched step.
    """

    device: Device = field(default_factory=_env_device)
    require_gpu: bool = False
    intra_op_threads: int = field(default_factory=lambda: _env_threads("intra_op_threads", 1))
    inter_op_threads: int = field(default_factory=lambda: _env_threads("inter_op_threads", 0))
    disable_prepacking: bool = False
    allow_spinning: bool = field(default_factory=_env_spinning)
    io_binding: bool | None = None
    batch_decode: bool = False
    batch_window_ms: float = 2.0
    max_batch: int = 8

    def __post_init__(self) -> None:
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidParameterError(f"{name} must be an int >= 0; got {value!r}")
        if self.device not in _DEVICES:
            raise InvalidParameterError(f"device must be one of {_DEVICES}; got {self.device!r}")

    @property
    def wants_gpu(self) -> bool:
        """Whether CUDA must be used (``require_gpu`` or ``device="cuda"``)."""
        return self.require_gpu or self.device == "cuda"


def _providers(ort: Any, options: RuntimeOptions, where: Path) -> list[str]:
    if options.device == "cpu":
        if options.require_gpu:
            raise ModelLoadError(f"{where}: require_gpu=True contradicts device='cpu'")
        return [_CPU]
    available = list(ort.get_available_providers())
    if _CUDA in available:
        # Listed is not usable: onnxruntime-gpu lists CUDA without CUDA libraries; the session
        # then silently runs on CPU. create_session checks what it actually got.
        return [_CUDA, _CPU]
    if options.wants_gpu:
        raise ModelLoadError(
            f"{where}: a GPU is required but this onnxruntime build offers only {available}; "
            "install `palm-middleware[gpu]` (onnxruntime-gpu with CUDA 13 and cuDNN 9) and "
            "uninstall the CPU `onnxruntime`"
        )
    return [_CPU]


def create_session(model_file: Path, options: RuntimeOptions) -> Any:
    """An ``InferenceSession`` for ``model_file``; checks the provider actually used."""
    ort = import_ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    # Overridable initializers (LoRA sites) log one warning each at load otherwise.
    so.log_severity_level = 3
    if options.disable_prepacking:
        so.add_session_config_entry("session.disable_prepacking", "1")
    # Always written, so the session says what it runs with (ONNX Runtime's default is "1").
    spin = "1" if options.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    providers = _providers(ort, options, model_file)
    try:
        session = ort.InferenceSession(str(model_file), sess_options=so, providers=providers)
    except Exception as exc:  # onnxruntime raises its own unrelated classes; translate them all
        raise ModelLoadError(
            f"{model_file}: ONNX Runtime cannot load the model ({type(exc).__name__}: "
            f"{_first_line(exc)}); re-export it with `palm export`"
        ) from exc
    got = list(session.get_providers())
    if providers[0] == _CUDA and got[0] != _CUDA:
        if options.wants_gpu:
            raise ModelLoadError(
                f"{model_file}: CUDAExecutionProvider could not be created (got {got}); "
                "check that CUDA 13 and cuDNN 9 libraries are installed and visible "
                "(`onnxruntime.preload_dlls()` prints what is missing)"
            )
        _warn_once(
            "cuda-fallback",
            f"CUDA is listed by onnxruntime but could not be used; running on CPU ({got}). "
            "Pass require_gpu=True to make this an error.",
        )
    return session


def run_session(
    session: Any, outputs: list[str], feeds: dict[str, Any], run_options: Any, where: str
) -> list[Any]:
    """``session.run`` with runtime errors translated to :class:`GenerationError`."""
    try:
        result: list[Any] = session.run(outputs, feeds, run_options)
    except Exception as exc:  # onnxruntime raises its own unrelated classes; translate them all
        raise GenerationError(
            f"{where}: ONNX Runtime failed during generation ({type(exc).__name__}: "
            f"{_first_line(exc)})"
        ) from exc
    return result


def run_bound(session: Any, binding: Any, where: str) -> None:
    """``session.run_with_iobinding`` with runtime errors translated to :class:`GenerationError`.

    No ``RunOptions``: the only per-run setting the engine uses is a LoRA adapter, which
    ``run_with_iobinding`` would ignore (onnx.md §5), so adapter members never come here.
    """
    try:
        session.run_with_iobinding(binding, None)
    except Exception as exc:  # onnxruntime raises its own unrelated classes; translate them all
        raise GenerationError(
            f"{where}: ONNX Runtime failed during generation ({type(exc).__name__}: "
            f"{_first_line(exc)})"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)
