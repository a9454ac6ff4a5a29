"""LoRA sites on GenAI model builder graphs: packed ``qkv_proj`` and int8 ``MatMulNBits``.

The models are ``tests/data/genai_tiny`` (fp32) and ``genai_tiny_int8``: one tiny Llama built by
the GenAI model builder at both precisions (``tests/engines/make_genai_tiny.py``). They stand for
``palm prepare-genai``'s SmolLM2 folders, on which the default portfolio's LoRA members run
(``smollm2-genai-int8-lora``). q/k/v are one packed MatMul there, so ``q_proj`` / ``v_proj``
sites add into their slices; at int8 the projections are ``MatMulNBits``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest

from palm_middleware.engines.genai import GenaiEngine
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.offline.engines.lora import (
    Sites,
    add_lora_sites,
    param_names,
    read_sites,
    write_adapter,
)

pytest.importorskip("onnxruntime_genai")

DATA = Path(__file__).resolve().parents[1] / "data"
FP32, INT8 = DATA / "genai_tiny", DATA / "genai_tiny_int8"
CHAT = [{"role": "user", "content": "Hello world"}]
# genai_tiny: 4 heads, 2 KV heads, head size 16 -> q 64 wide, k and v 32: qkv_proj 128 wide.
WIDTHS = {"q_proj": 64, "k_proj": 32, "v_proj": 32}
F32 = npt.NDArray[np.float32]


def _params(sites: Sites, rank: int = 4, seed: int = 0) -> dict[str, F32]:
    rng = np.random.default_rng(seed)
    out = {}
    for site, (d_in, d_out) in sites.items():
        a, b = param_names(site)
        out[a] = rng.normal(0, 0.5, (d_in, rank)).astype(np.float32)
        out[b] = rng.normal(0, 0.5, (rank, d_out)).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """q_proj/v_proj sites on both graphs, one adapter file written against the int8 sites."""
    root = tmp_path_factory.mktemp("genai-lora")
    for name, src in (("fp32", FP32), ("int8", INT8)):
        add_lora_sites(src, root / name)
    write_adapter(root / "a.onnx_adapter", _params(read_sites(root / "int8")), root / "int8")
    return {"fp32": root / "fp32", "int8": root / "int8", "adapter": root / "a.onnx_adapter"}


def _logits(engine: GenaiEngine, cont: list[int], adapter: Path | None) -> F32:
    ids = engine.encode_prompt(CHAT)
    out: F32 = engine.model.step_logits(ids, cont, adapter)
    return out


def test_sites_are_named_and_shaped_like_the_optimum_exports(built: dict[str, Path]) -> None:
    """Both graphs get the torch module names a trained adapter uses, with q/v slice widths,
    so one .onnx_adapter file fits the optimum export and both GenAI precisions."""
    want = {
        f"model.layers.{i}.self_attn.{m}": (64, WIDTHS[m])
        for i in range(2)
        for m in ("q_proj", "v_proj")
    }
    assert read_sites(built["fp32"]) == read_sites(built["int8"]) == want
    graph = onnx.load(str(built["int8"] / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulNBits") == 11  # 5 projections x 2 layers + LM head, all kept
    assert ops.count("Pad") == 4  # each site pads into its slice of qkv_proj


def test_rank0_sites_leave_the_int8_graph_unchanged(built: dict[str, Path]) -> None:
    plain, sited = GenaiEngine(INT8), GenaiEngine(built["int8"])
    tokens = plain.generate(CHAT, {"max_tokens": 24}).token_ids
    assert sited.generate(CHAT, {"max_tokens": 24}).token_ids == tokens
    a = _logits(plain, list(tokens), None)
    b = _logits(sited, list(tokens), None)
    assert np.abs(a - b).max() < 1e-5


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_slices_equal_one_block_adapter_on_the_packed_projection(
    built: dict[str, Path], tmp_path: Path, precision: str
) -> None:
    """The slice sites compute what a site on the whole qkv_proj computes with
    A = [A_q | A_v] and B = [[B_q, 0, 0], [0, 0, B_v]]: the deltas land on q's and v's columns."""
    whole = add_lora_sites(FP32 if precision == "fp32" else INT8, tmp_path / "whole", ["qkv_proj"])
    assert set(whole.values()) == {(64, 128)}
    sliced = _params(read_sites(built[precision]))
    block: dict[str, F32] = {}
    for layer in range(2):
        q_a, q_b = param_names(f"model.layers.{layer}.self_attn.q_proj")
        v_a, v_b = param_names(f"model.layers.{layer}.self_attn.v_proj")
        a, b = param_names(f"model.layers.{layer}.self_attn.qkv_proj")
        block[a] = np.concatenate([sliced[q_a], sliced[v_a]], axis=1)
        block[b] = np.zeros((8, 128), np.float32)
        block[b][:4, :64] = sliced[q_b]
        block[b][4:, 96:] = sliced[v_b]
    whole_adapter = write_adapter(tmp_path / "whole.onnx_adapter", block, tmp_path / "whole")
    reg = SessionRegistry()
    s = GenaiEngine(built[precision], registry=reg, adapter=built["adapter"])
    w = GenaiEngine(tmp_path / "whole", registry=reg, adapter=whole_adapter)
    tokens = s.generate(CHAT, {"max_tokens": 24}).token_ids
    assert w.generate(CHAT, {"max_tokens": 24}).token_ids == tokens
    base = GenaiEngine(built[precision], registry=reg).generate(CHAT, {"max_tokens": 24})
    assert base.token_ids != tokens  # the adapter changes the answer
    diff = _logits(s, list(tokens), built["adapter"]) - _logits(w, list(tokens), whole_adapter)
    assert np.abs(diff).max() < 1e-3


def test_an_adapter_on_the_int8_graph_does_what_it_does_at_fp32(built: dict[str, Path]) -> None:
    """LoRA is additive: next to MatMulNBits it moves the logits as next to fp32 MatMuls. The
    int8 member follows the fp32 member's greedy answer (teacher-forced) as closely as the
    quantized base follows the fp32 base; GenAI and the raw loop run it alike."""
    reg = SessionRegistry()
    ad = built["adapter"]
    fp32, int8 = (GenaiEngine(built[p], registry=reg, adapter=ad) for p in ("fp32", "int8"))
    raw = OnnxEngine(built["int8"], registry=reg, adapter=ad)
    ref = list(fp32.generate(CHAT, {"max_tokens": 40}).token_ids)
    assert len(ref) == 40
    assert int8.generate(CHAT, {"max_tokens": 40}).token_ids == (
        raw.generate(CHAT, {"max_tokens": 40}).token_ids
    )
    tuned = {p: _logits(e, ref, ad) for p, e in (("fp32", fp32), ("int8", int8))}
    plain = {p: _logits(GenaiEngine(built[p], registry=reg), ref, None) for p in tuned}
    agreement = float((tuned["int8"].argmax(axis=1) == np.asarray(ref)).mean())
    assert agreement >= 0.9  # measured 0.975 (39 of 40)
    effect = {p: tuned[p] - plain[p] for p in tuned}
    assert np.abs(effect["fp32"]).max() > 5  # a real change, not noise
    assert np.corrcoef(effect["fp32"].ravel(), effect["int8"].ravel())[0, 1] > 0.98


def test_sites_are_redone_when_the_external_weights_change(tmp_path: Path) -> None:
    """The int8 folder keeps its weights in model.onnx.data (``share_int8_embedding``): a
    rebuilt model with the same graph file must not reuse LoRA sites made from the old one."""
    import json
    import shutil

    from palm_middleware.offline.engines.genai_build import share_int8_embedding

    src = tmp_path / "int8"
    shutil.copytree(INT8, src)
    assert share_int8_embedding(src) and (src / "model.onnx.data").is_file()
    add_lora_sites(src, tmp_path / "lora")
    first = json.loads((tmp_path / "lora" / "lora_sites.json").read_text())
    add_lora_sites(src, tmp_path / "lora")  # cached: nothing changed
    assert json.loads((tmp_path / "lora" / "lora_sites.json").read_text()) == first
    data = bytearray((src / "model.onnx.data").read_bytes())
    data[:64] = bytes(64)  # other weights, same graph file
    (src / "model.onnx.data").write_bytes(bytes(data))
    add_lora_sites(src, tmp_path / "lora")
    again = json.loads((tmp_path / "lora" / "lora_sites.json").read_text())
    assert again["base_sha256"] != first["base_sha256"]
    assert again["sites"] == first["sites"]
