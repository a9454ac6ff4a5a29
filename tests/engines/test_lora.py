"""LoRA sites (``add_lora_sites``) and adapter files (``write_adapter``) on the tiny decoder.

The tiny graph's projections are renamed the way optimum names them
(``/model/layers.{i}/self_attn/q_proj/MatMul``), so sites get torch module names, without torch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest

from palm_middleware.cli.__main__ import main
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.exceptions import EngineError, ModelLoadError
from palm_middleware.offline.engines.lora import (
    SITES_FILE,
    add_lora_sites,
    param_names,
    read_sites,
    write_adapter,
)

from .conftest import TinyModel
from .tiny import reference_logits

F32 = npt.NDArray[np.float32]
Q0 = "model.layers.0.self_attn.q_proj"
PROMPT = "The quick brown fox"


def _optimum_named(tiny: TinyModel, out: Path) -> Path:
    """Copy of the tiny model folder whose q/v MatMuls carry optimum's node names."""
    shutil.copytree(tiny.path, out)
    proto = onnx.load(str(out / "model.onnx"))
    for node in proto.graph.node:
        for i in range(8):
            for short, module in (("q", "q_proj"), ("v", "v_proj")):
                if node.name == f"/h.{i}.{short}_lin":
                    node.name = f"/model/layers.{i}/self_attn/{module}/MatMul"
    onnx.save(proto, str(out / "model.onnx"))
    (out / "model_card.json").write_text(json.dumps({"kind": "export", "sha256": "x"}))
    return out


@pytest.fixture(scope="module")
def lora_base(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lora")
    base = _optimum_named(tiny, root / "base")
    add_lora_sites(base, root / "lora")
    return root / "lora"


def _logits(engine: OnnxEngine, ids: list[int]) -> F32:
    model = engine.model
    feeds = {
        "input_ids": np.asarray([ids], dtype=np.int64),
        "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
        "position_ids": np.arange(len(ids), dtype=np.int64)[None, :],
        **{k.input_name: k.empty() for k in model.kv_inputs},
    }
    out: F32 = model.session.run(["logits"], feeds, engine._run_options(model))[0][0]
    return out


def _random_params(d: int, rank: int, seed: int, scale: float = 0.5) -> dict[str, F32]:
    rng = np.random.default_rng(seed)
    params = {}
    for i in range(2):
        for module in ("q_proj", "v_proj"):
            a, b = param_names(f"model.layers.{i}.self_attn.{module}")
            params[a] = (rng.standard_normal((d, rank)) * scale).astype(np.float32)
            params[b] = (rng.standard_normal((rank, d)) * scale).astype(np.float32)
    return params


def test_sites_are_named_after_torch_modules_and_files_are_copied(
    tiny: TinyModel, lora_base: Path
) -> None:
    sites = read_sites(lora_base)
    assert sorted(sites) == sorted(
        f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "v_proj")
    )
    assert sites[Q0] == (32, 32)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (lora_base / name).read_bytes() == (tiny.path / name).read_bytes()
    card = json.loads((lora_base / "model_card.json").read_text())
    recorded = json.loads((lora_base / SITES_FILE).read_text())
    assert card["lora"]["n_sites"] == 4 and card["sha256"] == recorded["sha256"]


def test_zero_rank_sites_equal_the_base_exactly(
    tiny: TinyModel, lora_base: Path, registry: SessionRegistry
) -> None:
    base, lora = OnnxEngine(tiny.path, registry=registry), OnnxEngine(lora_base, registry=registry)
    ids = base.encode_prompt(PROMPT)
    assert np.array_equal(_logits(base, ids), _logits(lora, ids))
    assert list(lora.generate(PROMPT, {"max_tokens": 12}).token_ids) == list(
        base.generate(PROMPT, {"max_tokens": 12}).token_ids
    )


def test_adapter_changes_tokens_then_the_base_is_restored(
    tiny: TinyModel, lora_base: Path, tmp_path: Path, registry: SessionRegistry
) -> None:
    params = _random_params(32, rank=3, seed=1)
    path = write_adapter(tmp_path / "a.onnx_adapter", params, lora_base)
    base = OnnxEngine(lora_base, registry=registry)
    member = OnnxEngine(lora_base, registry=registry, adapter=path)
    before = list(base.generate(PROMPT, {"max_tokens": 12}).token_ids)
    ids = base.encode_prompt(PROMPT)
    # The adapter computes the merged weights W + A·B (only q is in the numpy reference).
    merged = dict(tiny.weights)
    for i in range(2):
        for short, module in (("q", "q_proj"), ("v", "v_proj")):
            a, b = param_names(f"model.layers.{i}.self_attn.{module}")
            merged[f"h.{i}.{short}"] = tiny.weights[f"h.{i}.{short}"] + params[a] @ params[b]
    np.testing.assert_allclose(_logits(member, ids), reference_logits(merged, ids), atol=1e-3)
    assert list(member.generate(PROMPT, {"max_tokens": 12}).token_ids) != before
    assert list(base.generate(PROMPT, {"max_tokens": 12}).token_ids) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p.update({"model.layers.9.self_attn.q_proj.lora_A": np.zeros((32, 3))}),
            "'model.layers.9.self_attn.q_proj.lora_A' is not a LoRA site",
        ),
        (
            lambda p: p.update({f"{Q0}.lora_A": np.zeros((31, 3))}),
            f"LoRA site '{Q0}': A has shape \\(31, 3\\), expected \\(32, r\\)",
        ),
        (
            lambda p: p.update({f"{Q0}.lora_B": np.zeros((3, 8))}),
            f"LoRA site '{Q0}': B has shape \\(3, 8\\), expected \\(r, 32\\)",
        ),
        (lambda p: p.pop(f"{Q0}.lora_B"), f"LoRA site '{Q0}': A is given without its partner"),
        (
            lambda p: p.update(
                {f"{Q0}.lora_A": np.zeros((32, 2)), f"{Q0}.lora_B": np.zeros((2, 32))}
            ),
            "LoRA ranks differ between sites",
        ),
        (lambda p: p.update({f"{Q0}.lora_A": np.full((32, 3), np.nan)}), "NaN or infinite"),
    ],
)
def test_write_adapter_rejects_bad_parameters_naming_the_site(
    lora_base: Path, tmp_path: Path, change: object, message: str
) -> None:
    params = dict(_random_params(32, rank=3, seed=2))
    change(params)  # type: ignore[operator]
    with pytest.raises(EngineError, match=message):
        write_adapter(tmp_path / "bad.onnx_adapter", params, lora_base)
    assert not (tmp_path / "bad.onnx_adapter").exists()


def test_site_map_is_required(tiny: TinyModel, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="palm prepare-lora-base"):
        write_adapter(tmp_path / "a.onnx_adapter", {}, tiny.path)


def test_no_matching_module_is_an_error(tiny: TinyModel, tmp_path: Path) -> None:
    base = _optimum_named(tiny, tmp_path / "base")
    with pytest.raises(
        EngineError, match="no MatMul or MatMulNBits of a module named \\['k_proj'\\]"
    ):
        add_lora_sites(base, tmp_path / "lora", targets=("k_proj",))
    assert not (tmp_path / "lora").exists()


def test_cached_sites_are_reused_until_the_base_changes(
    tiny: TinyModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _optimum_named(tiny, tmp_path / "base")
    out = tmp_path / "lora"
    args = ["prepare-lora-base", "--base", str(base), "--out", str(out)]
    assert main(args) == 0
    assert "4 sites on q_proj v_proj" in capsys.readouterr().out
    (out / "marker").write_text("kept while cached")
    assert main(args) == 0
    assert (out / "marker").exists()
    proto = onnx.load(str(base / "model.onnx"))
    proto.doc_string = "a different base graph"
    onnx.save(proto, str(base / "model.onnx"))
    assert main(args) == 0
    assert not (out / "marker").exists()
    assert read_sites(out)[Q0] == (32, 32)
