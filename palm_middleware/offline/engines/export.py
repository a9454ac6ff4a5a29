"""Hugging Face folder -> ONNX model folder with KV cache, checked against torch.

Build time only (extra ``export``: optimum-onnx, transformers, torch); serving needs none of it.
Nothing is downloaded: the source must be a local folder and the hub is forced offline.

Steps: (1) load (GGUF sources are de-quantized to fp32 and saved as a HF folder first), (2)
``optimum.exporters.onnx.main_export`` with task ``text-generation-with-past``, (3) fuse the
decoder's small ops (LayerNorm / RMSNorm with residual, GELU, rotary embeddings) with ONNX
Runtime's transformer optimizer, (4) greedy tokens of the ONNX model through
:class:`OnnxEngine` must equal torch's on a few prompts, (5) ``model_card.json`` with source,
hashes, opset, versions, fusions and the check result.

Why (3): batch-1 decoding of an unfused optimum export runs ~3,000 tiny nodes per token for
SmolLM2-135M; their dispatch costs about as much as the weight reads (bench/results/engine.md).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..._hashing import sha256_file as _sha256
from ...exceptions import EngineError, InvalidParameterError, ModelLoadError
from .._progress import progress_bar

__all__ = [
    "CHECK_PROMPTS",
    "export_model",
    "ExportResult",
    "fuse_decoder",
    "FUSED_MODEL_TYPES",
]

CHECK_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time,",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
#: Model types whose fused graphs were checked token-equal to torch (tests/engines/test_export.py).
FUSED_MODEL_TYPES = frozenset({"gpt2", "llama"})


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote."""

    path: Path
    card: dict[str, Any]


def _require_export_deps() -> None:
    missing = [
        m for m in ("torch", "transformers", "optimum.exporters.onnx", "onnx") if not _importable(m)
    ]
    if missing:
        raise EngineError(
            f"palm export needs {missing}; install the build-time extra: "
            "pip install 'palm-middleware[export]'"
        )


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def export_model(
    source: str | Path,
    output: str | Path,
    *,
    gguf_file: str | None = None,
    opset: int | None = None,
    atol: float = 1e-4,
    prompts: Sequence[str] = CHECK_PROMPTS,
    n_check_tokens: int = 16,
    optimize: bool = True,
    progress: bool = True,
) -> ExportResult:
    """Export the causal LM in folder ``source`` to the model folder ``output``.

    Args:
        source: Local Hugging Face folder (config, weights, tokenizer).
        output: New folder for ``model.onnx``, tokenizer files and ``model_card.json``.
        gguf_file: Name of a GGUF file in ``source`` to load instead of HF weights.
        opset: ONNX opset; the exporter's default when ``None``.
        atol: Tolerance of optimum's own logits validation (real models differ by ~1e-4).
        prompts: Prompts of the greedy-token check.
        n_check_tokens: Greedy tokens compared per prompt; 0 skips the check.
        optimize: Fuse small ops for the model types in :data:`FUSED_MODEL_TYPES` (the check
            then runs on the fused graph).
        progress: Show a progress bar (on a terminal).

    Returns:
        The folder and its model card; ``card["check"]["result"]`` is ``"passed"``,
        ``"failed"`` or ``"skipped"``.
    """
    source, output = Path(source), Path(output)
    if not source.is_dir():
        raise ModelLoadError(
            f"export source {source} is not a folder; pass a local Hugging "
            "Face model folder (nothing is downloaded)"
        )
    if (output / "model.onnx").exists():
        raise InvalidParameterError(f"{output} already holds model.onnx; choose a new folder")
    if n_check_tokens < 0:
        raise InvalidParameterError(f"n_check_tokens must be >= 0; got {n_check_tokens}")
    _require_export_deps()
    # Never reach a model hub, even for a missing file: fail instead.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    bar = progress_bar(
        total=5,
        desc="palm export",
        enabled=progress,
        steps=("load", "ONNX export", "fusions", "greedy-token check vs torch", "model card"),
    )
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="palm-export-") as tmp:
            hf_dir = source if gguf_file is None else _gguf_to_hf(source, gguf_file, Path(tmp))
            bar.update(1)
            _main_export(hf_dir, output, opset=opset, atol=atol)
            bar.update(1)
            fusions = fuse_decoder(output) if optimize else {"result": "skipped"}
            bar.update(1)
            check = _check(hf_dir, output, prompts, n_check_tokens)
            bar.update(1)
            card = _card(source, gguf_file, output, check, started)
            card["fusions"] = fusions
            (output / "model_card.json").write_text(
                json.dumps(card, indent=2) + "\n", encoding="utf-8"
            )
            bar.update(1)
    finally:
        bar.close()
    return ExportResult(output, card)


def _gguf_to_hf(source: Path, gguf_file: str, tmp: Path) -> Path:
    """De-quantize a GGUF file to a fp32 HF folder (transformers' GGUF loader)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (source / gguf_file).is_file():
        raise ModelLoadError(f"{source / gguf_file} does not exist")
    # Any: typed with the export extra installed, missing (ignored) without it.
    auto_tok: Any = AutoTokenizer
    tok = auto_tok.from_pretrained(source, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    out = tmp / "hf"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _main_export(hf_dir: Path, output: Path, *, opset: int | None, atol: float) -> None:
    from optimum.exporters.onnx import main_export

    try:
        main_export(
            str(hf_dir),
            output=str(output),
            task="text-generation-with-past",
            device="cpu",
            opset=opset,
            atol=atol,
            local_files_only=True,
        )
    except Exception as exc:  # optimum/torch raise many unrelated types; translate once
        raise ModelLoadError(
            f"exporting {hf_dir} to ONNX failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not (output / "model.onnx").is_file():
        found = sorted(p.name for p in output.glob("*.onnx"))
        raise ModelLoadError(f"the exporter wrote {found}, not model.onnx, to {output}")


def fuse_decoder(folder: str | Path) -> dict[str, Any]:
    """Fuse the small ops of ``folder/model.onnx`` in place (ONNX Runtime's transformer optimizer).

    Uses the decoder fusion passes of ``onnxruntime.transformers`` (LayerNormalization,
    SkipLayerNormalization, SimplifiedLayerNormalization, FastGelu, RotaryEmbedding); matrix
    multiplications and their weights are left as they are, so LoRA sites can still be injected
    afterwards. Only model types in :data:`FUSED_MODEL_TYPES` are fused.

    Returns:
        ``{"result": "fused", "model_type": ..., "ops": {fused op: count}}`` or
        ``{"result": "skipped", "reason": ...}``.
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model_type = str(config.get("model_type"))
    if model_type not in FUSED_MODEL_TYPES:
        return {"result": "skipped", "reason": f"model type {model_type!r} not verified"}
    heads = config.get("num_attention_heads", config.get("n_head"))
    hidden = config.get("hidden_size", config.get("n_embd"))
    from onnxruntime.transformers.optimizer import optimize_model

    model_file = folder / "model.onnx"
    external = any(
        p.name != "model.onnx" and p.suffix in {".data", ".onnx_data"} for p in folder.iterdir()
    )
    try:
        # "gpt2" selects the generic decoder fusions (ONNX Runtime maps qwen3 to them too);
        # opt_level 0: ONNX Runtime's own graph optimizations still run at session creation.
        optimized = optimize_model(
            str(model_file),
            model_type="gpt2",
            num_heads=int(heads),
            hidden_size=int(hidden),
            opt_level=0,
        )
        ops = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
        optimized.save_model_to_file(str(model_file), use_external_data_format=external)
    except Exception as exc:  # the optimizer raises many unrelated types; translate once
        raise ModelLoadError(
            f"fusing {model_file} failed: {type(exc).__name__}: {exc}; export with optimize=False"
        ) from exc
    return {"result": "fused", "model_type": model_type, "ops": ops}


def _torch_greedy(model: Any, ids: list[int], n: int) -> list[int]:
    import torch

    seq = torch.tensor([ids], dtype=torch.long)
    out: list[int] = []
    with torch.no_grad():
        past = None
        step = seq
        for _ in range(n):
            res = model(input_ids=step, past_key_values=past, use_cache=True)
            past = res.past_key_values
            token = int(res.logits[0, -1].argmax())
            out.append(token)
            step = torch.tensor([[token]], dtype=torch.long)
    return out


def _check(hf_dir: Path, output: Path, prompts: Sequence[str], n: int) -> dict[str, Any]:
    if n == 0 or not prompts:
        return {"result": "skipped"}
    import torch
    from transformers import AutoModelForCausalLM

    from ...engines.onnx import OnnxEngine

    model: Any = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.eval()
    engine = OnnxEngine(output, options=None)
    cases = []
    for prompt in prompts:
        ids = engine.encode_prompt(prompt)
        got = list(engine.generate(prompt, {"max_tokens": n}).token_ids)
        want = _torch_greedy(model, ids, n)
        # The engine stops at an EOS token; torch's loop does not: compare the common prefix.
        equal = got == want[: len(got)] and (len(got) == n or got[-1] in engine.model.eos_token_ids)
        cases.append({"prompt": prompt, "equal": equal, "onnx": got, "torch": want})
    return {
        "result": "passed" if all(c["equal"] for c in cases) else "failed",
        "n_tokens": n,
        "cases": cases,
    }


def _card(
    source: Path, gguf_file: str | None, output: Path, check: dict[str, Any], started: float
) -> dict[str, Any]:
    import onnx

    proto = onnx.load(str(output / "model.onnx"), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    weights = sorted(
        p
        for p in source.iterdir()
        if p.is_file()
        and p.suffix in _WEIGHT_SUFFIXES
        and (gguf_file is None or p.name == gguf_file)
    )
    return {
        "kind": "export",
        "source": str(source.resolve()),
        "gguf_file": gguf_file,
        "source_sha256": {p.name: _sha256(p) for p in weights},
        "task": "text-generation-with-past",
        "opset": opset,
        "ir_version": proto.ir_version,
        "sha256": _sha256(output / "model.onnx"),
        "versions": {
            d: _version(d)
            for d in (
                "torch",
                "transformers",
                "optimum-onnx",
                "onnx",
                "onnxruntime",
                "palm-middleware",
            )
        },
        "seconds": round(time.perf_counter() - started, 1),
        "check": check,
    }
