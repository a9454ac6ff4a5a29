"""The bundled SmolLM2 candidates manifest validates and every member runs on a tiny base.

The shared base is named ``smollm2`` in the manifest; here it is overridden with a tiny model
folder, so the members' system prompts, few-shot exchanges and decoding parameters are all
exercised without the real model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from palm_middleware.cli._common import bundled
from palm_middleware.engines.members import engine_for_member
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.portfolio.manifest import PromptedBackend, load_portfolio
from tests.engines.tiny import train_tokenizer, write_model

MANIFEST = bundled("candidates_smollm2.yaml")


def test_manifest_has_at_least_eight_prompted_candidates() -> None:
    p = load_portfolio(MANIFEST)
    assert len(p.members) >= 8
    assert list(p.space.names) == ["brevity", "structure", "formality"]
    ids = [m.id for m in p.members]
    assert len(set(ids)) == len(ids) and p.default_member in ids
    for m in p.members:
        assert isinstance(m.backend, PromptedBackend) and m.backend.base == "smollm2"
        assert m.description and "\n" not in m.description
    assert sum(bool(m.backend.few_shot) for m in p.members
               if isinstance(m.backend, PromptedBackend)) >= 5
    assert any("temperature" in m.backend.generation for m in p.members
               if isinstance(m.backend, PromptedBackend))


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
        engine = engine_for_member(m, registry, bases={"smollm2": tiny_base})
        out = engine.generate([{"role": "user", "content": "How do I boil an egg?"}],
                              {"max_tokens": 4, "seed": 0})
        assert 1 <= out.usage.completion_tokens <= 4
        prompt_lens[m.id] = out.usage.prompt_tokens
    # The few-shot exchanges reach the prompt: styled members see longer prompts than default.
    assert prompt_lens["steps"] > prompt_lens["default"]
    assert prompt_lens["formal"] > prompt_lens["default"]
