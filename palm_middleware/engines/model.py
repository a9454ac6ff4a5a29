"""A loaded ONNX model folder: session, tokenizer, chat template and KV-cache layout.

Expected folder (what ``optimum`` / ``palm export`` writes for ``text-generation-with-past``)::

    model.onnx               inputs  input_ids [b, s], attention_mask [b, past + s],
                                     position_ids [b, s] (optional),
                                     past_key_values.{i}.key/.value [b, kv_heads, past, head_dim]
                             outputs logits [b, s, vocab], present.{i}.key/.value
    tokenizer.json           a `tokenizers` tokenizer
    tokenizer_config.json    chat_template, eos_token, bos_token (optional)
    chat_template.jinja      alternative place of the chat template (optional)
    generation_config.json   eos_token_id (optional)
    config.json              max_position_embeddings / n_positions, kv heads, head_dim (optional)

A model without ``past_key_values`` inputs also works (the whole sequence is re-run each step).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..exceptions import ModelLoadError
from ._batcher import DecodeBatcher
from ._kvcache import BindingDevice, binding_device
from ._runtime import RuntimeOptions, create_session, import_ort
from ._template import ChatTemplate

__all__ = [
    "KVInput",
    "OnnxModel",
    "eos_token_ids",
    "find_model_file",
    "load_template",
    "load_tokenizer",
    "model_bytes",
    "read_json",
]

_MODEL_FILES = ("model.onnx",)
_ORT_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(bfloat16)": np.float32,  # not representable in numpy; such exports are unsupported
}


@dataclass(frozen=True)
class KVInput:
    """One past-key/value input and the output that returns its next value."""

    input_name: str
    output_name: str
    n_heads: int
    head_dim: int
    dtype: type[np.generic]

    def empty(self, batch: int = 1) -> npt.NDArray[Any]:
        """The cache before the first step: past length 0."""
        return np.zeros((batch, self.n_heads, 0, self.head_dim), dtype=self.dtype)


def find_model_file(folder: Path) -> Path:
    """The ONNX graph in ``folder`` (``model.onnx``)."""
    if not folder.exists():
        raise ModelLoadError(f"model folder {folder} does not exist")
    if folder.is_file():
        raise ModelLoadError(
            f"{folder} is a file; pass the model folder that contains model.onnx and tokenizer.json"
        )
    for name in _MODEL_FILES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p.name for p in folder.glob("*.onnx"))
    raise ModelLoadError(
        f"{folder}: no model.onnx (found {found or 'no .onnx files'}); export one with "
        "`palm export HF_FOLDER OUT`"
    )


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object; got {type(data).__name__}")
    return data


def _token_text(value: Any) -> str | None:
    # tokenizer_config stores special tokens as "text" or as an AddedToken dict {"content": ...}.
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _dim(shape: list[Any], i: int) -> int | None:
    return shape[i] if len(shape) > i and isinstance(shape[i], int) else None


def load_tokenizer(folder: Path) -> Any:
    """The ``tokenizers.Tokenizer`` of ``folder/tokenizer.json``."""
    file = folder / "tokenizer.json"
    if not file.is_file():
        raise ModelLoadError(
            f"{folder}: tokenizer.json is missing; save the tokenizer next to model.onnx "
            "(`tokenizer.save_pretrained(folder)`)"
        )
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a bare Exception for unparsable files
        raise ModelLoadError(f"{file}: not a valid tokenizers file ({exc})") from exc


def load_template(folder: Path, tok_cfg: dict[str, Any]) -> ChatTemplate | None:
    """The chat template of ``tokenizer_config.json`` or ``chat_template.jinja``, or ``None``."""
    source: Any = tok_cfg.get("chat_template")
    where = str(folder / "tokenizer_config.json")
    if isinstance(source, list):  # [{"name": "default", "template": ...}, ...]
        named = {d.get("name"): d.get("template") for d in source if isinstance(d, dict)}
        source = named.get("default")
    jinja_file = folder / "chat_template.jinja"
    if source is None and jinja_file.is_file():
        source, where = jinja_file.read_text(encoding="utf-8"), str(jinja_file)
    if source is None:
        return None
    if not isinstance(source, str):
        raise ModelLoadError(f"{where}: chat_template must be a string; got {source!r}")
    special = {
        k: t
        for k in ("bos_token", "eos_token", "unk_token", "pad_token")
        if (t := _token_text(tok_cfg.get(k))) is not None
    }
    return ChatTemplate(source, special, where)


def eos_token_ids(
    folder: Path, tokenizer: Any, tok_cfg: dict[str, Any], raw: Any
) -> frozenset[int]:
    """Ids ending generation: ``raw`` (an id or list of ids from a config) and ``eos_token``."""
    ids: set[int] = set()
    for v in raw if isinstance(raw, list) else [raw]:
        if isinstance(v, int):
            ids.add(v)
    text = _token_text(tok_cfg.get("eos_token"))
    if text is not None:
        tid = tokenizer.token_to_id(text)
        if tid is None:
            raise ModelLoadError(
                f"{folder / 'tokenizer_config.json'}: eos_token {text!r} is not in "
                "tokenizer.json; the tokenizer files do not belong together"
            )
        ids.add(int(tid))
    return frozenset(ids)


def model_bytes(folder: Path) -> int:
    """Size of the graph and weight files in ``folder`` (what a session holds in memory)."""
    return sum(
        p.stat().st_size
        for p in folder.iterdir()
        if p.is_file() and (p.suffix in {".onnx", ".data"} or p.name.endswith("_data"))
    )


class OnnxModel:
    """One loaded model folder, shared by every member (and request) that runs it.

    Thread-safe: ``InferenceSession.run`` may be called concurrently; per-request state (KV
    cache, RNG) lives in the request, never here.

    Attributes:
        path: The model folder.
        session: The ``onnxruntime.InferenceSession``.
        tokenizer: The ``tokenizers.Tokenizer``.
        chat_template: The compiled chat template, or ``None``.
        eos_token_ids: Token ids that end generation.
        max_context: Longest prompt + completion the model supports, or ``None`` if unknown.
        n_bytes: Size of the model files; the registry budgets memory from it.
        quantization: ``model_card.json``'s ``quantization`` section (bits, block size,
            agreement with the fp32 source) for a ``palm quantize`` folder, else ``None``.
        binding_device: Where requests without a LoRA adapter keep their KV cache through IO
            binding (CUDA automatically, CPU with ``RuntimeOptions(io_binding=True)``), or
            ``None`` when every step uses ``session.run`` with a numpy cache.
        batcher: The :class:`DecodeBatcher` shared by this model's requests without an adapter
            (``RuntimeOptions(batch_decode=True)``), or ``None``.
    """

    def __init__(self, path: str | Path, options: RuntimeOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or RuntimeOptions()
        model_file = find_model_file(self.path)
        self.tokenizer = load_tokenizer(self.path)
        tok_cfg = read_json(self.path / "tokenizer_config.json")
        gen_cfg = read_json(self.path / "generation_config.json")
        self.config = read_json(self.path / "config.json")
        self.chat_template = load_template(self.path, tok_cfg)
        self.eos_token_ids = eos_token_ids(
            self.path,
            self.tokenizer,
            tok_cfg,
            gen_cfg.get("eos_token_id", self.config.get("eos_token_id")),
        )
        self.max_context: int | None = next(
            (
                int(self.config[k])
                for k in ("max_position_embeddings", "n_positions", "max_sequence_length")
                if isinstance(self.config.get(k), int)
            ),
            None,
        )
        self.n_bytes = model_bytes(self.path)
        try:
            card = read_json(self.path / "model_card.json")
        except ModelLoadError:
            card = {}  # the card is provenance, not needed to run; never fail a load over it
        quant = card.get("quantization")
        self.quantization: dict[str, Any] | None = quant if isinstance(quant, dict) else None
        try:
            self.session = create_session(model_file, self.options)
        except ModelLoadError as exc:
            if self.quantization is None:
                raise
            # The generic hint ("re-export") is wrong here: the contrib op is what failed.
            raise ModelLoadError(
                f"{exc}. {self.path} is int{self.quantization.get('bits')}-quantized "
                "(com.microsoft MatMulNBits): it needs an onnxruntime build and execution "
                "provider with that contrib op (the CPU provider of onnxruntime >= 1.20 has "
                "it); serve the fp32 source folder otherwise"
            ) from exc
        self.providers: list[str] = list(self.session.get_providers())
        self.binding_device: BindingDevice | None = binding_device(
            self.session, self.options.io_binding
        )
        self._inspect_graph(model_file)
        self.batcher = self._batcher()
        self._adapters: dict[Path, Any] = {}
        self._adapters_lock = threading.Lock()

    def __repr__(self) -> str:
        bits = f", int{self.quantization.get('bits')}" if self.quantization else ""
        return f"OnnxModel({str(self.path)!r}, providers={self.providers}{bits})"

    # -- loading -------------------------------------------------------------------------------

    def _inspect_graph(self, model_file: Path) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if "input_ids" not in inputs or "logits" not in outputs:
            raise ModelLoadError(
                f"{model_file}: not a causal-LM export (inputs {sorted(inputs)}, outputs "
                f"{sorted(outputs)}); expected input_ids -> logits, e.g. from "
                "`palm export` (task text-generation-with-past)"
            )
        self.input_names = frozenset(inputs)
        ids_type = inputs["input_ids"].type
        if ids_type not in ("tensor(int64)", "tensor(int32)"):
            raise ModelLoadError(f"{model_file}: input_ids has type {ids_type}; expected int64")
        self.ids_dtype: type[np.generic] = np.int64 if ids_type == "tensor(int64)" else np.int32
        self.logits_name = "logits"
        kv: list[KVInput] = []
        for name, meta in inputs.items():
            if not name.startswith("past_key_values."):
                continue
            out = "present." + name[len("past_key_values.") :]
            if out not in outputs:
                raise ModelLoadError(
                    f"{model_file}: input {name} has no matching output {out}; the KV cache "
                    "cannot be carried between steps"
                )
            shape = list(meta.shape)
            n_heads = _dim(shape, 1) or self._config_int(
                "num_key_value_heads", "num_attention_heads", "n_head"
            )
            head_dim = _dim(shape, 3) or self._head_dim()
            if n_heads is None or head_dim is None:
                raise ModelLoadError(
                    f"{model_file}: cannot tell the shape of {name} ({shape}) and config.json "
                    "has no num_key_value_heads/head_dim"
                )
            dtype = _ORT_DTYPES.get(meta.type)
            if dtype is None or meta.type == "tensor(bfloat16)":
                raise ModelLoadError(f"{model_file}: {name} has unsupported type {meta.type}")
            kv.append(KVInput(name, out, n_heads, head_dim, dtype))
        self.kv_inputs: tuple[KVInput, ...] = tuple(kv)
        self.output_names = [self.logits_name, *(k.output_name for k in kv)]
        vocab_dim = _dim(list(outputs["logits"].shape), 2)
        n_tokens = int(self.tokenizer.get_vocab_size(with_added_tokens=True))
        if vocab_dim is not None and n_tokens > vocab_dim:
            raise ModelLoadError(
                f"{self.path}: tokenizer.json has {n_tokens} tokens but model.onnx predicts "
                f"{vocab_dim}; the tokenizer belongs to another model"
            )
        self.vocab_size = vocab_dim

    def _batcher(self) -> DecodeBatcher | None:
        opts = self.options
        # Rows of different lengths need a mask to hide their padding; IO binding keeps the
        # cache in OrtValues, which the numpy batcher cannot pad.
        if (
            not opts.batch_decode
            or not self.kv_inputs
            or self.binding_device is not None
            or "attention_mask" not in self.input_names
        ):
            return None
        return DecodeBatcher(
            self.session,
            self.kv_inputs,
            self.output_names,
            self.path.name,
            window_s=opts.batch_window_ms / 1000,
            max_batch=opts.max_batch,
        )

    def _config_int(self, *keys: str) -> int | None:
        return next(
            (int(self.config[k]) for k in keys if isinstance(self.config.get(k), int)), None
        )

    def _head_dim(self) -> int | None:
        hd = self._config_int("head_dim")
        if hd is not None:
            return hd
        hidden = self._config_int("hidden_size", "n_embd")
        heads = self._config_int("num_attention_heads", "n_head")
        return hidden // heads if hidden and heads else None

    # -- adapters ------------------------------------------------------------------------------

    def adapter(self, path: str | Path) -> Any:
        """The ``onnxruntime.LoraAdapter`` stored at ``path``, loaded (memory-mapped) once."""
        key = Path(path)
        with self._adapters_lock:
            found = self._adapters.get(key)
            if found is not None:
                return found
            if not key.is_file():
                raise ModelLoadError(f"LoRA adapter file {key} does not exist")
            sites = {i.name: i for i in self.session.get_overridable_initializers()}
            if not sites:
                raise ModelLoadError(
                    f"{self.path}: the model has no overridable initializers, so LoRA adapter "
                    f"{key} cannot apply; inject LoRA sites into the base graph first"
                )
            ort = import_ort()
            adapter = ort.LoraAdapter()
            try:
                params = ort.AdapterFormat.read_adapter(str(key)).get_parameters()
                adapter.Load(str(key))
            except Exception as exc:  # onnxruntime's own exception classes
                raise ModelLoadError(f"{key}: not a valid .onnx_adapter file ({exc})") from exc
            unknown = sorted(set(params) - set(sites))
            if unknown:
                raise ModelLoadError(
                    f"{key}: adapter parameters {unknown[:5]} are not LoRA sites of "
                    f"{self.path} (sites: {sorted(sites)[:5]}...); the adapter belongs to "
                    "another base model"
                )
            self._adapters[key] = adapter
            return adapter
