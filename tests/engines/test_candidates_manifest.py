"""The bundled SmolLM2 candidates manifest validates and every member runs on a tiny base.

The shared base is named ``smollm2`` in the manifest; here it is overridden with a tiny model
folder, so the members' system prompts, few-shot exchanges and decoding parameters are all
exercised without the real model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from palm_middleware.data import bundled
from palm_middleware.engines.members import engine_for_member
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.portfolio.manifest import AdapterBackend, PromptedBackend, load_portfolio
from tests.engines.tiny import train_tokenizer, write_model

MANIFEST = bundled("candidates_smollm2.yaml")


def test_manifest_has_at_least_eight_prompted_candidates() -> None:
    p = load_portfolio(MANIFEST)
    prompted = [m for m in p.members if isinstance(m.backend, PromptedBackend)]
    assert len(prompted) >= 8
    assert list(p.space.names) == ["brevity", "structure", "formality"]
    ids = [m.id for m in p.members]
    assert len(set(ids)) == len(ids) and p.default_member in ids
    for m in p.members:
        assert isinstance(m.backend, PromptedBackend | AdapterBackend)
        assert m.backend.base == (
            "smollm2" if isinstance(m.backend, PromptedBackend) else "smollm2-lora"
        )
        assert m.description and "\n" not in m.description
    assert (
        sum(bool(m.backend.few_shot) for m in p.members if isinstance(m.backend, PromptedBackend))
        >= 5
    )
    assert any(
        "temperature" in m.backend.generation
        for m in p.members
        if isinstance(m.backend, PromptedBackend)
    )


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cands")
    train_tokenizer(root / "tok")
    write_model(root / "base", root / "tok" / "tokenizer.json", seed=2, max_positions=1024)
    return root / "base"


def test_every_candidate_builds_and_generates_on_a_tiny_base(tiny_base: Path) -> None:
    p = load_portfolio(MANIFEST)
    registry = SessionRegistry()
    prompt_lens = {}
    for m in p.members:
        if isinstance(m.backend, AdapterBackend):  # SmolLM2's LoRA sites: tested below
            continue
        engine = engine_for_member(m, registry, bases={"smollm2": tiny_base})
        out = engine.generate(
            [{"role": "user", "content": "How do I boil an egg?"}], {"max_tokens": 4, "seed": 0}
        )
        assert 1 <= out.usage.completion_tokens <= 4
        prompt_lens[m.id] = out.usage.prompt_tokens
    # The few-shot exchanges reach the prompt: styled members see longer prompts than default.
    assert prompt_lens["steps"] > prompt_lens["default"]
    assert prompt_lens["formal"] > prompt_lens["default"]


def test_adapter_candidates_fill_smollm2_lora_sites() -> None:
    """The shipped adapters hold rank-8 A/B for q_proj and v_proj of all 30 SmolLM2 layers."""
    ort = pytest.importorskip("onnxruntime")
    p = load_portfolio(MANIFEST)
    adapters = [m for m in p.members if isinstance(m.backend, AdapterBackend)]
    assert {m.id for m in adapters} == {"terse-lora", "formal-lora"}
    d_out = {"q_proj": 576, "v_proj": 192}  # SmolLM2-135M: 9 query heads, 3 KV heads of 64
    for m in adapters:
        assert isinstance(m.backend, AdapterBackend)
        path = MANIFEST.parent / m.backend.adapter
        assert path.stat().st_size <= 5_000_000
        params = ort.AdapterFormat.read_adapter(str(path)).get_parameters()
        want = {
            f"model.layers.{i}.self_attn.{proj}.lora_{ab}"
            for i in range(30)
            for proj in d_out
            for ab in "AB"
        }
        assert set(params) == want
        for name, value in params.items():
            shape = tuple(value.numpy().shape)
            proj = name.split(".")[-2]
            assert shape == ((576, 8) if name.endswith("lora_A") else (8, d_out[proj])), name
