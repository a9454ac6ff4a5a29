"""Weight-only int8/int4 quantization of the tiny decoder: layout, engine paths, card, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from palm_middleware.cli.__main__ import main
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.exceptions import InvalidParameterError, ModelLoadError
from palm_middleware.offline.engines.quantize import (
    QuantizeResult,
    _logits,
    quantize,
    quantize_weight,
)

from .conftest import TinyModel
from .test_members import _lora, _write_adapter

PROMPTS = ("Hello world", "The quick brown fox")


def _dequantize(
    blob: npt.NDArray[np.uint8],
    scales: npt.NDArray[np.float32],
    zps: npt.NDArray[np.uint8],
    bits: int,
    k: int,
    bs: int,
) -> npt.NDArray[np.float32]:
    n, nb = blob.shape[0], blob.shape[1]
    if bits == 4:
        q = np.stack([blob & 15, blob >> 4], axis=-1).reshape(n, nb, bs)
        z2 = zps.reshape(n, -1)
        z = np.stack([z2 & 15, z2 >> 4], axis=-1).reshape(n, -1)[:, :nb]
    else:
        q, z = blob, zps.reshape(n, nb)
    w = (q.astype(np.float32) - z[..., None]) * scales.reshape(n, nb)[..., None]
    return np.asarray(w.reshape(n, -1)[:, :k].T, dtype=np.float32)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("k", [64, 80])  # 80 = 2.5 blocks: padding and an odd block count
def test_quantize_weight_matches_onnxruntime(bits: int, k: int) -> None:
    rng = np.random.default_rng(bits + k)
    w = rng.standard_normal((k, 24)).astype(np.float32)
    blob, scales, zps = quantize_weight(w, bits, 32)
    deq = _dequantize(blob, scales, zps, bits, k, 32)
    # Round-to-nearest: every weight within half a step of its block's scale.
    step = np.repeat(scales.reshape(24, -1), 32, axis=1)[:, :k].T
    assert np.all(np.abs(deq - w) <= step / 2 + 1e-6)
    # ONNX Runtime's MatMulNBits (fp32 compute) reads the same layout.
    node = helper.make_node(
        "MatMulNBits",
        ["x", "b", "s", "z"],
        ["y"],
        domain="com.microsoft",
        K=k,
        N=24,
        bits=bits,
        block_size=32,
        accuracy_level=0,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(a, n) for a, n in ((blob, "b"), (scales, "s"), (zps, "z"))
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((3, k)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ deq, atol=1e-4)


def _quantize(src: Path, out: Path, bits: int, **kw: Any) -> QuantizeResult:
    return quantize(
        src, out, bits=bits, check_prompts=PROMPTS, check_tokens=8, progress=False, **kw
    )


@pytest.fixture(scope="module", params=[8, 4])
def quantized(
    request: pytest.FixtureRequest, tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory
) -> QuantizeResult:
    bits = int(request.param)
    return _quantize(tiny.path, tmp_path_factory.mktemp("quant") / f"int{bits}", bits)


def test_quantized_graph_and_card(quantized: QuantizeResult, tiny: TinyModel) -> None:
    model = onnx.load(str(quantized.path / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    # 2 layers x (q, k, v, o, fc1, fc2) + the LM head; attention's activation MatMuls remain.
    assert ops.count("MatMulNBits") == quantized.n_quantized == 13
    assert {t.name for t in model.graph.initializer}.isdisjoint({"h.0.q", "lm_head"})
    assert "wte" in {t.name for t in model.graph.initializer}  # embeddings stay fp32
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (quantized.path / name).read_bytes() == (tiny.path / name).read_bytes()
    card = json.loads((quantized.path / "model_card.json").read_text())
    q = card["quantization"]
    assert q["bits"] in (4, 8) and q["block_size"] == 32 and q["lm_head"] == f"int{q['bits']}"
    assert q["weights_mb"]["quantized"] < q["weights_mb"]["fp32"] / (2 if q["bits"] == 8 else 4)
    a = q["agreement"]
    assert a["n_prompts"] == len(PROMPTS) and a["n_tokens"] == 8
    assert all(0.0 <= a[k] <= 1.0 for k in ("prefix", "overall", "teacher_forced"))
    assert a["prefix"] <= a["overall"]  # equal before divergence is a subset of equal anywhere
    assert a["max_logit_diff_first_step"] > 0  # quantization does change the logits
    assert [c["prompt"] for c in a["cases"]] == list(PROMPTS)
    assert q["source"]["sha256"] and q["sha256"] != q["source"]["sha256"]


def test_quantized_kv_cache_equals_full_recompute(quantized: QuantizeResult) -> None:
    eng = OnnxEngine(quantized.path)
    ids = eng.encode_prompt("The quick brown fox")
    params = eng.defaults.merged({"max_tokens": 12})
    got = list(eng._tokens(eng.model, ids, params, None))
    # Greedy from one cache-free pass over the whole sequence: same tokens as the cached loop.
    full = _logits(eng.model, ids + got[:-1])[len(ids) - 1 :]
    assert [int(t) for t in full.argmax(axis=1)] == got


def test_quantized_streaming_equals_generate(quantized: QuantizeResult) -> None:
    eng = OnnxEngine(quantized.path)
    for prompt in ("Hello world", [{"role": "user", "content": "Héllo wörld 🙂"}]):
        out = eng.generate(prompt, {"max_tokens": 16})
        chunks = list(eng.stream(prompt, {"max_tokens": 16}))
        assert "".join(c.text for c in chunks) == out.text
        assert tuple(t for c in chunks for t in c.token_ids) == out.token_ids
        assert chunks[-1].finish_reason == out.finish_reason


def test_int8_fp32_compute_stays_close(tiny: TinyModel, tmp_path: Path) -> None:
    res = _quantize(tiny.path, tmp_path / "q8", 8, accuracy_level=0, lm_head=False)
    q = res.card["quantization"]
    assert q["lm_head"] == "kept fp32" and res.n_quantized == 12
    assert "lm_head" in {t.name for t in onnx.load(str(res.path / "model.onnx")).graph.initializer}
    a = q["agreement"]
    # Same greedy tokens on the tiny model (its logits are well separated); small logit error.
    assert a["teacher_forced"] == 1.0 and a["max_logit_diff_first_step"] < 0.5


def test_quantized_base_keeps_lora_sites(tiny_lora: TinyModel, tmp_path: Path) -> None:
    res = _quantize(tiny_lora.path, tmp_path / "q4", 4)
    adapter = tmp_path / "a.onnx_adapter"
    _write_adapter(adapter, _lora(1))
    base = OnnxEngine(res.path)
    member = OnnxEngine(res.path, registry=base.registry, adapter=adapter).load()
    sites = {i.name for i in base.model.session.get_overridable_initializers()}
    assert sites == set(_lora(1))  # LoRA A/B stay fp32 and overridable
    plain = base.generate("Hello world", {"max_tokens": 8}).token_ids
    assert member.generate("Hello world", {"max_tokens": 8}).token_ids != plain


def test_quantize_errors(tiny: TinyModel, quantized: QuantizeResult, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        _quantize(tmp_path / "missing", tmp_path / "o1", 4)
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "model.onnx").write_bytes(b"not a protobuf" * 10)
    (bad / "tokenizer.json").write_bytes((tiny.path / "tokenizer.json").read_bytes())
    with pytest.raises(ModelLoadError, match="not a readable ONNX file"):
        _quantize(bad, tmp_path / "o2", 4)
    notok = tmp_path / "notok"
    notok.mkdir()
    (notok / "model.onnx").write_bytes((tiny.path / "model.onnx").read_bytes())
    with pytest.raises(ModelLoadError, match="tokenizer.json is missing"):
        _quantize(notok, tmp_path / "o3", 4)
    with pytest.raises(ModelLoadError, match="already quantized"):
        _quantize(quantized.path, tmp_path / "o4", 4)
    with pytest.raises(InvalidParameterError, match="bits must be 4 or 8; got 3"):
        _quantize(tiny.path, tmp_path / "o5", 3)
    with pytest.raises(InvalidParameterError, match="block_size must be a power of two"):
        _quantize(tiny.path, tmp_path / "o6", 4, block_size=24)
    with pytest.raises(InvalidParameterError, match="already holds model.onnx"):
        _quantize(tiny.path, quantized.path, 4)
    with pytest.raises(InvalidParameterError, match="out must differ from src"):
        _quantize(tiny.path, tiny.path, 4)
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o5").exists()


def test_cli_quantize(tiny: TinyModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "quantize",
                str(tiny.path),
                "--bits",
                "4",
                "--block-size",
                "16",
                "--check-tokens",
                "4",
                "--no-progress",
                "--out",
                str(tmp_path / "q"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "int4, block 16, 13 MatMuls" in out and "greedy agreement" in out
    card = json.loads((tmp_path / "q" / "model_card.json").read_text())
    assert card["quantization"]["block_size"] == 16
    assert (
        main(["quantize", str(tmp_path / "nope"), "--bits", "8", "--out", str(tmp_path / "q2")])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_loaded_model_reports_quantization(
    quantized: QuantizeResult, tiny: TinyModel, tmp_path: Path
) -> None:
    model = OnnxEngine(quantized.path).model
    assert model.quantization is not None
    assert f"int{model.quantization['bits']}" in repr(model)
    assert OnnxEngine(tiny.path).model.quantization is None
    # A quantized graph whose op the runtime cannot run: the error names the quantization.
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in quantized.path.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    proto = onnx.load(str(broken / "model.onnx"))
    for node in proto.graph.node:
        if node.op_type == "MatMulNBits":
            node.op_type = "MatMulNBitsX"  # an op no onnxruntime has
    onnx.save(proto, str(broken / "model.onnx"))
    with pytest.raises(ModelLoadError, match=r"-quantized \(com.microsoft MatMulNBits\)"):
        OnnxEngine(broken).load()
