"""``GenaiEngine``: members served by ONNX Runtime GenAI's generation loop (``og.Generator``).

A folder built by the GenAI model builder (``palm prepare-genai``) holds ``genai_config.json``
beside ``model.onnx``: a fused graph (GroupQueryAttention, packed QKV, fused norms; int8/int4
MatMulNBits with one quantized copy of a tied embedding / LM head). GenAI keeps the KV cache in
one preallocated buffer (``past_present_share_buffer``) and runs each step in C++. Which folder
for which precision (BENCHMARKS.md, issue 15): ``smollm2-genai-int4-gguf`` (the GGUF's own
Q4_1 / Q8_0 blocks; ~95 % greedy agreement with fp32) is the fastest that keeps fp32's greedy
tokens, ``smollm2-genai-int8-b64`` the smallest 8-bit one; the builder's plain ``int4`` drifts
(71 %).

Only the token loop changes: :class:`GenaiEngine` subclasses
:class:`~palm_middleware.engines.onnx.OnnxEngine`, so prompts (chat template, system prompt,
few-shot), the tokenizer (the folder's ``tokenizer.json``: the same ids as the raw loop), stop
sequences, streaming, cancellation and the async twins are the raw loop's own code. Each step
reads GenAI's logits and picks the token with the raw loop's :class:`Sampler`, so greedy and
seeded sampling give the same tokens on both engines for the same graph (the per-step copy of
one logits row costs ~0.1 ms, measured on the tiny test model: noise next to a 15-30 ms step).

LoRA members: an ``.onnx_adapter`` whose parameters are overridable initializers of the graph is
loaded once into the model's ``og.Adapters`` and activated per request
(``Generator.set_active_adapter``), onnx.md §6.

``onnxruntime_genai`` is imported lazily (the ``genai`` extra; ``onnxruntime-genai-cuda`` on
GPU hosts). The raw loop stays for what GenAI cannot run: any optimum / ``palm export`` graph
(no ``genai_config.json``), the batched decode and IO-binding options.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..exceptions import GenerationError, ModelLoadError
from ._runtime import RuntimeOptions, release_free_heap
from ._sampling import Sampler
from .base import GenerationParams
from .grammar import Constraint, constrained_token
from .model import (
    eos_token_ids,
    load_template,
    load_tokenizer,
    model_bytes,
    read_json,
)
from .onnx import OnnxEngine

__all__ = ["GENAI_CONFIG", "GenaiEngine", "GenaiModel", "import_genai", "is_genai_folder"]

GENAI_CONFIG = "genai_config.json"
_INSTALL_HINT = (
    "install the runtime: `pip install palm-middleware[genai]` (CPU) or "
    "`onnxruntime-genai-cuda` (GPU, with onnxruntime-gpu)"
)


def is_genai_folder(folder: str | Path) -> bool:
    """Whether ``folder`` was built for ONNX Runtime GenAI (has ``genai_config.json``)."""
    return (Path(folder) / GENAI_CONFIG).is_file()


def import_genai() -> Any:
    """Import ``onnxruntime_genai``, or raise :class:`ModelLoadError` naming what to install."""
    try:
        return importlib.import_module("onnxruntime_genai")
    except ImportError as exc:
        raise ModelLoadError(f"onnxruntime-genai is not installed; {_INSTALL_HINT}") from exc


def _session_options(options: RuntimeOptions) -> dict[str, Any]:
    """``RuntimeOptions`` as GenAI ``session_options`` (string values are ORT config entries)."""
    out: dict[str, Any] = {"log_severity_level": 3}
    if options.intra_op_threads:
        out["intra_op_num_threads"] = options.intra_op_threads
    if options.inter_op_threads:
        out["inter_op_num_threads"] = options.inter_op_threads
    if not options.allow_spinning:
        out["session.intra_op.allow_spinning"] = "0"
    if options.disable_prepacking:
        out["session.disable_prepacking"] = "1"
    return out


class GenaiModel:
    """One GenAI model folder, shared by every member (and request) that runs it.

    Thread-safe: each request owns its ``og.Generator``; the ``og.Model`` and the loaded
    adapters are shared.

    Attributes:
        path: The model folder.
        og_model: The ``onnxruntime_genai.Model``.
        tokenizer: The ``tokenizers.Tokenizer`` of ``tokenizer.json`` (as in the raw loop).
        chat_template: The compiled chat template, or ``None``.
        eos_token_ids: Token ids that end generation.
        max_context: ``context_length`` of ``genai_config.json`` (prompt + completion).
        vocab_size: Logits per step.
        n_bytes: Size of the model files; the registry budgets memory from it.
        precision: The card's ``precision`` (``fp32``, ``int8``, ``int4``), or ``None``.
        device: ``"cpu"`` or ``"cuda"``: where GenAI placed the model.
    """

    def __init__(self, path: str | Path, options: RuntimeOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or RuntimeOptions()
        if not is_genai_folder(self.path):
            raise ModelLoadError(
                f"{self.path}: no {GENAI_CONFIG}; this is not an ONNX Runtime GenAI folder "
                "(build one with `palm prepare-genai`, or serve it with the raw loop)"
            )
        cfg = read_json(self.path / GENAI_CONFIG)
        model_cfg = cfg.get("model")
        if not isinstance(model_cfg, dict):
            raise ModelLoadError(f"{self.path / GENAI_CONFIG}: no `model` object")
        self.tokenizer = load_tokenizer(self.path)
        tok_cfg = read_json(self.path / "tokenizer_config.json")
        self.chat_template = load_template(self.path, tok_cfg)
        self.eos_token_ids = eos_token_ids(
            self.path, self.tokenizer, tok_cfg, model_cfg.get("eos_token_id")
        )
        ctx = model_cfg.get("context_length")
        self.max_context: int | None = ctx if isinstance(ctx, int) else None
        vocab = model_cfg.get("vocab_size")
        self.vocab_size: int | None = vocab if isinstance(vocab, int) else None
        self.n_bytes = model_bytes(self.path)
        try:
            card = read_json(self.path / "model_card.json")
        except ModelLoadError:
            card = {}  # the card is provenance, not needed to run; never fail a load over it
        precision = card.get("precision")
        self.precision: str | None = precision if isinstance(precision, str) else None
        self.og = import_genai()
        self.og_model, self.device = self._load()
        self._adapters: Any = None
        self._adapter_names: dict[Path, str] = {}
        self._adapters_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GenaiModel({str(self.path)!r}, device={self.device!r}, {self.precision})"

    def _load(self) -> tuple[Any, str]:
        og, opts = self.og, self.options
        config = og.Config(str(self.path))
        config.clear_providers()
        want_cuda = opts.wants_gpu or (opts.device == "auto" and og.is_cuda_available())
        if opts.wants_gpu and not og.is_cuda_available():
            raise ModelLoadError(
                f"{self.path}: a GPU is required but this onnxruntime-genai build has no CUDA; "
                "install onnxruntime-genai-cuda (and onnxruntime-gpu) instead of the CPU packages"
            )
        if want_cuda:
            config.append_provider("cuda")
        overlay = {"model": {"decoder": {"session_options": _session_options(opts)}}}
        try:
            config.overlay(json.dumps(overlay))
            model = og.Model(config)
        except Exception as exc:  # onnxruntime-genai raises RuntimeError for every failure
            raise ModelLoadError(
                f"{self.path}: ONNX Runtime GenAI cannot load the model ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}); rebuild "
                "it with `palm prepare-genai`"
            ) from exc
        device = "cuda" if str(model.device_type).upper() == "CUDA" else "cpu"
        if opts.wants_gpu and device != "cuda":
            raise ModelLoadError(
                f"{self.path}: CUDA was requested but GenAI placed the model on {device}; "
                "check the CUDA 13 / cuDNN 9 libraries"
            )
        return model, device

    # -- adapters ------------------------------------------------------------------------------

    def adapter(self, path: str | Path) -> str:
        """The name under which the ``.onnx_adapter`` at ``path`` is loaded (once)."""
        key = Path(path)
        with self._adapters_lock:
            name = self._adapter_names.get(key)
            if name is not None:
                return name
            if not key.is_file():
                raise ModelLoadError(f"LoRA adapter file {key} does not exist")
            if self._adapters is None:
                self._adapters = self.og.Adapters(self.og_model)
            name = f"{len(self._adapter_names)}:{key.stem}"
            try:
                self._adapters.load(str(key), name)
            except Exception as exc:  # onnxruntime-genai's RuntimeError
                raise ModelLoadError(
                    f"{key}: GenAI cannot load this LoRA adapter for {self.path} ({exc}); it "
                    "must be an .onnx_adapter whose parameters are LoRA sites of this graph"
                ) from exc
            self._adapter_names[key] = name
            return name

    # -- generation ----------------------------------------------------------------------------

    def generator(self, prompt_ids: list[int], max_length: int, adapter: Path | None) -> Any:
        """A new ``og.Generator`` that has read ``prompt_ids`` (prefill done)."""
        og = self.og
        gp = og.GeneratorParams(self.og_model)
        # PALM samples from the logits itself; GenAI's own search must not stop or sample.
        gp.set_search_options(max_length=max_length, do_sample=False, min_length=0)
        try:
            gen = og.Generator(self.og_model, gp)
            if adapter is not None:
                name = self.adapter(adapter)  # loads self._adapters on first use
                gen.set_active_adapter(self._adapters, name)
            gen.append_tokens(prompt_ids)
        except ModelLoadError:
            raise
        except Exception as exc:  # onnxruntime-genai's RuntimeError
            raise GenerationError(f"{self.path.name}: GenAI failed on the prompt ({exc})") from exc
        return gen

    def tokens(
        self,
        prompt_ids: list[int],
        params: GenerationParams,
        adapter: Path | None = None,
        cancel: threading.Event | None = None,
        constraint: Constraint | None = None,
    ) -> Iterator[int]:
        """Sampled token ids, one per step (EOS is not special here: the caller stops).

        A ``constraint`` masks each step's logits exactly as in the raw loop, so a GenAI member
        answers ``response_format`` and tool calls under the same grammar.
        """
        n_new = params.max_tokens
        if self.max_context is not None:
            n_new = min(n_new, self.max_context - len(prompt_ids))
        if n_new < 1:
            return
        gen = self.generator(prompt_ids, len(prompt_ids) + n_new, adapter)
        sampler = Sampler(params)
        try:
            for i in range(n_new):
                if cancel is not None and cancel.is_set():
                    return
                logits = self._last_logits(gen)
                token = constrained_token(sampler, logits, constraint, self.eos_token_ids)
                yield token
                if constraint is not None and constraint.done:
                    return
                if i + 1 < n_new:
                    self._append(gen, token)
        finally:
            # The prefill's buffers (prompt-length logits, activations) are freed with the
            # generator but glibc keeps them resident: ~17 MB for SmolLM2 and a 40-token
            # prompt, growing with the prompt. Trimming after each request costs < 1 ms.
            del gen
            release_free_heap()

    def step_logits(
        self, prompt_ids: list[int], continuation: list[int], adapter: Path | None = None
    ) -> npt.NDArray[Any]:
        """Logits ``[len(continuation), vocab]``: row ``i`` predicts ``continuation[i]``.

        Teacher forcing for quality checks (the reference's tokens are fed, whatever the
        model would have chosen), with the LoRA ``adapter`` active if given.
        """
        gen = self.generator(prompt_ids, len(prompt_ids) + len(continuation) + 1, adapter)
        rows = []
        for token in continuation:
            rows.append(self._last_logits(gen).copy())
            self._append(gen, token)
        del gen
        release_free_heap()  # as after a request (tokens)
        return np.stack(rows) if rows else np.zeros((0, self.vocab_size or 0), np.float32)

    def _last_logits(self, gen: Any) -> npt.NDArray[Any]:
        logits = gen.get_logits()
        row: npt.NDArray[Any] = np.asarray(logits)[0, -1]
        return row

    def _append(self, gen: Any, token: int) -> None:
        try:
            gen.append_tokens([token])
        except Exception as exc:  # onnxruntime-genai's RuntimeError
            raise GenerationError(
                f"{self.path.name}: GenAI failed during generation ({exc})"
            ) from exc


class GenaiEngine(OnnxEngine):
    """Runs one member on ONNX Runtime GenAI: :class:`OnnxEngine`'s API, GenAI's loop.

    Same arguments as :class:`OnnxEngine`; ``model`` is a GenAI folder (or a loaded
    :class:`GenaiModel`), ``adapter`` an ``.onnx_adapter`` applied through ``og.Adapters``.
    """

    def __init__(self, model: str | Path | GenaiModel, **kwargs: Any) -> None:
        self._genai: GenaiModel | None = model if isinstance(model, GenaiModel) else None
        super().__init__(model.path if isinstance(model, GenaiModel) else model, **kwargs)

    def __repr__(self) -> str:
        return f"GenaiEngine({self.name!r}, path={str(self.path)!r})"

    # The inherited prompt/stream layer reads only tokenizer, chat template, EOS ids, context
    # length and path, which GenaiModel has too; the KV-cache loop below is GenAI's.
    @property
    def model(self) -> GenaiModel:  # type: ignore[override]
        """The loaded model (loads it through the registry on first use)."""
        if self._genai is not None:
            return self._genai
        return self.registry.get_genai(self.path)

    def load(self) -> GenaiEngine:
        """Load the model (and adapter) now instead of on the first request; returns ``self``."""
        model = self.model
        if self.adapter is not None:
            model.adapter(self.adapter)
        return self

    def uses_io_binding(self, model: Any = None) -> bool:
        """Never: GenAI manages its own device buffers."""
        return False

    def _tokens(  # type: ignore[override]
        self,
        model: GenaiModel,
        prompt_ids: list[int],
        params: GenerationParams,
        cancel: threading.Event | None,
        constraint: Constraint | None = None,
    ) -> Iterator[int]:
        return model.tokens(prompt_ids, params, self.adapter, cancel, constraint)
