"""Member kinds over shared sessions: full model, prompted, LoRA adapter (per request)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from palm_middleware.engines.members import engine_for_member
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.exceptions import EngineError, ModelLoadError
from palm_middleware.portfolio.manifest import parse_portfolio

from .conftest import TinyModel
from .tiny import reference_greedy

SYSTEM = "Answer in one line."
SHOTS = [{"user": "2+2?", "assistant": "4"}]


def test_prompted_member_renders_system_and_few_shot(engine: OnnxEngine) -> None:
    prompted = OnnxEngine(
        engine.path,
        registry=engine.registry,
        system_prompt=SYSTEM,
        few_shot=SHOTS,
        defaults={"max_tokens": 6},
    )
    user = [{"role": "user", "content": "Capital of France?"}]
    explicit = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        *user,
    ]
    assert prompted.encode_prompt(user) == engine.encode_prompt(explicit)
    # A raw string becomes one user message for a prompted member.
    assert prompted.encode_prompt("Capital of France?") == engine.encode_prompt(explicit)
    out = prompted.generate(user)
    assert out.usage.completion_tokens == 6  # the member's default
    assert out.token_ids == engine.generate(explicit, {"max_tokens": 6}).token_ids
    assert prompted.model is engine.model  # one shared session


def _write_adapter(path: Path, params: dict[str, npt.NDArray[np.float32]]) -> None:
    af = ort.AdapterFormat()
    af.set_adapter_version(1)
    af.set_model_version(1)
    af.set_parameters({n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in params.items()})
    af.export_adapter(str(path))


def _lora(seed: int, d: int = 32, r: int = 4) -> dict[str, npt.NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(2):
        out[f"lora.{i}.q.A"] = rng.standard_normal((d, r)).astype(np.float32)
        out[f"lora.{i}.q.B"] = rng.standard_normal((r, d)).astype(np.float32)
    return out


def test_lora_adapters_apply_per_request(tiny_lora: TinyModel, tmp_path: Path) -> None:
    lora_a, lora_b = _lora(1), _lora(2)
    _write_adapter(tmp_path / "a.onnx_adapter", lora_a)
    _write_adapter(tmp_path / "b.onnx_adapter", lora_b)
    reg = SessionRegistry()
    base = OnnxEngine(tiny_lora.path, registry=reg)
    mem_a = OnnxEngine(tiny_lora.path, registry=reg, adapter=tmp_path / "a.onnx_adapter").load()
    mem_b = OnnxEngine(tiny_lora.path, registry=reg, adapter=tmp_path / "b.onnx_adapter")
    assert mem_a.name == "tiny-lora+a"
    prompt = "Hello world"
    ids = base.encode_prompt(prompt)
    expected = {
        "base": reference_greedy(tiny_lora.weights, ids, 16),
        "a": reference_greedy(tiny_lora.weights, ids, 16, lora=lora_a),
        "b": reference_greedy(tiny_lora.weights, ids, 16, lora=lora_b),
    }
    assert len({tuple(v) for v in expected.values()}) == 3  # the adapters change the output
    engines = {"base": base, "a": mem_a, "b": mem_b}
    order = ["base", "a", "b", "a", "base", "b"] * 2
    # Interleaved on one session, concurrently: each request gets its own adapter (or none).
    with ThreadPoolExecutor(max_workers=6) as pool:
        outs = list(pool.map(lambda k: engines[k].generate(prompt, {"max_tokens": 16}), order))
    for k, out in zip(order, outs, strict=True):
        assert list(out.token_ids) == expected[k], k
    assert reg.n_loads_ == 1


def test_adapter_errors(tiny_lora: TinyModel, tiny: TinyModel, tmp_path: Path) -> None:
    with pytest.raises(
        ModelLoadError,
        match=r"LoRA adapter file .*missing\.onnx_adapter does "
        "not exist",
    ):
        OnnxEngine(tiny_lora.path, adapter=tmp_path / "missing.onnx_adapter").load()
    (tmp_path / "junk.onnx_adapter").write_bytes(b"junk" * 100)
    with pytest.raises(ModelLoadError, match=r"junk\.onnx_adapter: not a valid \.onnx_adapter"):
        OnnxEngine(tiny_lora.path, adapter=tmp_path / "junk.onnx_adapter").load()
    _write_adapter(
        tmp_path / "other.onnx_adapter", {"lora.9.k.A": np.zeros((32, 2), dtype=np.float32)}
    )
    with pytest.raises(
        ModelLoadError,
        match=r"adapter parameters \['lora\.9\.k\.A'\] are not "
        "LoRA sites",
    ):
        OnnxEngine(tiny_lora.path, adapter=tmp_path / "other.onnx_adapter").load()
    _write_adapter(tmp_path / "a.onnx_adapter", _lora(1))
    with pytest.raises(ModelLoadError, match="has no overridable initializers"):
        OnnxEngine(tiny.path, adapter=tmp_path / "a.onnx_adapter").load()


MANIFEST = """
version: 1
traits: [helpfulness, brevity]
members:
  - id: full
    backend: {kind: onnx, path: models/tiny}
    reward: {helpfulness: 0.6, brevity: 0.5}
  - id: terse
    backend:
      kind: prompted
      base: shared
      system_prompt: "Answer in one line."
      few_shot: [{user: "2+2?", assistant: "4"}]
      generation: {max_tokens: 5, temperature: 0.7, seed: 3}
    reward: {helpfulness: 0.5, brevity: 0.9}
  - id: tuned
    backend: {kind: adapter, base: shared, adapter: adapters/a.onnx_adapter}
    reward: {helpfulness: 0.7, brevity: 0.4}
  - id: remote
    backend: {kind: litellm, model: gpt-4o-mini}
    reward: {helpfulness: 0.9, brevity: 0.3}
  - id: abstract
    reward: {helpfulness: 0.1, brevity: 0.1}
"""


def test_engines_from_manifest(tiny: TinyModel, tiny_lora: TinyModel, tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny.path)
    (tmp_path / "adapters").mkdir()
    _write_adapter(tmp_path / "adapters" / "a.onnx_adapter", _lora(1))
    portfolio = parse_portfolio(MANIFEST)
    reg = SessionRegistry()
    bases = {"shared": tiny_lora.path}
    engines = {
        m.id: engine_for_member(m, reg, bases=bases, root=tmp_path)
        for m in portfolio.members
        if m.id in {"full", "terse", "tuned"}
    }
    assert len(reg) == 0
    outs = {k: e.generate([{"role": "user", "content": "hi"}]) for k, e in engines.items()}
    assert outs["terse"].usage.completion_tokens == 5
    assert outs["terse"].model == "terse"
    assert outs["terse"] == engines["terse"].generate([{"role": "user", "content": "hi"}])
    assert len(reg) == 2  # "terse" and "tuned" share the base session
    assert engines["terse"].model is engines["tuned"].model
    with pytest.raises(EngineError, match="'remote' is a LiteLLM backend"):
        engine_for_member(portfolio.member("remote"), reg)
    with pytest.raises(EngineError, match="member 'abstract' has no backend"):
        engine_for_member(portfolio.member("abstract"), reg)
