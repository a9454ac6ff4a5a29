"""``GenaiEngine``: members on ONNX Runtime GenAI's loop, behind the raw loop's engine API.

The model is ``tests/data/genai_tiny``: a tiny Llama built by the GenAI model builder
(``tests/engines/make_genai_tiny.py`` says how; it stands for ``palm prepare-genai``'s SmolLM2
folders). Its fused graph (GroupQueryAttention, packed QKV) also runs on the raw loop, so the
raw loop on the same graph is the reference: same tokens, greedy and seeded sampling, with and
without a LoRA adapter.
"""

from __future__ import annotations

import asyncio
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from palm_middleware.engines.base import Chunk, Generation
from palm_middleware.engines.genai import GenaiEngine, GenaiModel, is_genai_folder
from palm_middleware.engines.members import engine_class, engine_for_member
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.exceptions import EngineError, GenerationError, ModelLoadError
from palm_middleware.offline.engines.genai_build import genai_agreement, share_int8_embedding
from palm_middleware.offline.engines.lora import add_lora_sites, write_adapter
from palm_middleware.portfolio.manifest import parse_portfolio

pytest.importorskip("onnxruntime_genai")

GENAI_TINY = Path(__file__).resolve().parents[1] / "data" / "genai_tiny"
CHAT = [{"role": "user", "content": "Hello world"}]


@pytest.fixture(scope="module")
def registry() -> SessionRegistry:
    return SessionRegistry()


@pytest.fixture(scope="module")
def genai(registry: SessionRegistry) -> GenaiEngine:
    return GenaiEngine(GENAI_TINY, registry=registry).load()


@pytest.fixture(scope="module")
def raw(registry: SessionRegistry) -> OnnxEngine:
    return OnnxEngine(GENAI_TINY, registry=registry).load()


def test_the_shipped_folder_is_a_genai_build() -> None:
    assert is_genai_folder(GENAI_TINY)
    assert (GENAI_TINY / "model.onnx").stat().st_size < 100_000
    assert sum(p.stat().st_size for p in GENAI_TINY.iterdir()) < 600_000


@pytest.mark.parametrize("prompt", [CHAT, "The quick brown fox"])
def test_greedy_tokens_equal_the_raw_loop(genai: GenaiEngine, raw: OnnxEngine, prompt) -> None:
    a = genai.generate(prompt, {"max_tokens": 24})
    b = raw.generate(prompt, {"max_tokens": 24})
    assert a.token_ids == b.token_ids and len(a.token_ids) == 24
    assert a.text == b.text and a.finish_reason == b.finish_reason == "length"
    assert a.usage == b.usage


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 0.9, "seed": 3},
        {"temperature": 1.3, "top_p": 0.8, "seed": 11},
        {"temperature": 0.7, "top_k": 5, "seed": 5},
    ],
)
def test_seeded_sampling_equals_the_raw_loop(genai: GenaiEngine, raw: OnnxEngine, params) -> None:
    p = {"max_tokens": 16, **params}
    a, b = genai.generate(CHAT, p), raw.generate(CHAT, p)
    assert a.token_ids == b.token_ids
    assert a.token_ids != genai.generate(CHAT, {"max_tokens": 16}).token_ids  # it did sample


def test_stop_sequences_stream_and_async(genai: GenaiEngine) -> None:
    full = genai.generate(CHAT, {"max_tokens": 24})
    cut = next(i for i in range(4, len(full.text)) if full.text[i].isalnum())
    stop = full.text[cut : cut + 2]
    head = full.text[: full.text.index(stop)]
    stopped = genai.generate(CHAT, {"max_tokens": 24, "stop": [stop]})
    assert stopped.text == head and stopped.finish_reason == "stop"
    assert stopped.usage.completion_tokens < 24
    chunks = list(genai.stream(CHAT, {"max_tokens": 24}))
    assert "".join(c.text for c in chunks) == full.text
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage == full.usage
    assert sum(len(c.token_ids) for c in chunks) == 24

    async def both() -> tuple[Generation, list[Chunk]]:
        g = await genai.agenerate(CHAT, {"max_tokens": 24})
        s = [c async for c in genai.astream(CHAT, {"max_tokens": 24})]
        return g, s

    g, s = asyncio.run(both())
    assert g.token_ids == full.token_ids
    assert "".join(c.text for c in s) == full.text


def test_end_of_sequence_token_stops(genai: GenaiEngine) -> None:
    # Which token comes first depends on the random weights: make it the EOS token.
    first = genai.generate(CHAT, {"max_tokens": 1}).token_ids[0]
    model = GenaiModel(GENAI_TINY)
    model.eos_token_ids = frozenset({first})
    out = GenaiEngine(model).generate(CHAT, {"max_tokens": 10})
    assert out.finish_reason == "stop" and out.token_ids == (first,) and out.text == ""


def test_prompted_member_and_context_window(genai: GenaiEngine, raw: OnnxEngine) -> None:
    kwargs: dict[str, Any] = {
        "system_prompt": "Answer in one line.",
        "few_shot": [{"user": "2+2?", "assistant": "4"}],
        "defaults": {"max_tokens": 7},
    }
    a = GenaiEngine(GENAI_TINY, registry=genai.registry, **kwargs)
    b = OnnxEngine(GENAI_TINY, registry=genai.registry, **kwargs)
    assert a.encode_prompt("hi") == b.encode_prompt("hi")
    assert a.generate("hi").token_ids == b.generate("hi").token_ids
    assert a.generate("hi").usage.completion_tokens == 7
    assert a.model is genai.model  # one og.Model per folder in the registry
    # The context is 128 tokens: a long request ends there with finish_reason "length".
    ids = genai.encode_prompt("The quick brown fox " * 8)
    out = genai.generate("The quick brown fox " * 8, {"max_tokens": 200})
    assert out.usage.completion_tokens == 128 - len(ids) and out.finish_reason == "length"
    with pytest.raises(GenerationError, match="takes at most 128"):
        genai.generate("The quick brown fox " * 40)


def test_concurrent_requests_get_their_own_tokens(genai: GenaiEngine) -> None:
    prompts = ["Hello world", "The quick brown fox", "def add(a, b):", "Emoji"]
    alone = [genai.generate(p, {"max_tokens": 12}).token_ids for p in prompts]
    with ThreadPoolExecutor(4) as pool:
        together = list(
            pool.map(lambda p: genai.generate(p, {"max_tokens": 12}).token_ids, prompts * 2)
        )
    assert together == alone * 2


@pytest.fixture(scope="module")
def lora_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny GenAI model with rank-0 LoRA sites on qkv_proj/o_proj, and one adapter."""
    root = tmp_path_factory.mktemp("genai-lora")
    sites = add_lora_sites(GENAI_TINY, root / "base", targets=("qkv_proj", "o_proj"))
    assert len(sites) == 4
    rng = np.random.default_rng(0)
    params = {}
    for site, (d_in, d_out) in sites.items():
        params[f"{site}.lora_A"] = rng.normal(0, 0.5, (d_in, 4))
        params[f"{site}.lora_B"] = rng.normal(0, 0.5, (4, d_out))
    adapter = write_adapter(root / "a.onnx_adapter", params, root / "base")
    return root / "base", adapter


def test_lora_member_through_og_adapters(lora_folder: tuple[Path, Path]) -> None:
    base, adapter = lora_folder
    assert is_genai_folder(base)
    reg = SessionRegistry()
    tuned_g = GenaiEngine(base, registry=reg, adapter=adapter)
    tuned_r = OnnxEngine(base, registry=reg, adapter=adapter)
    base_g = GenaiEngine(base, registry=reg)
    with_adapter = tuned_g.generate(CHAT, {"max_tokens": 16}).token_ids
    assert with_adapter == tuned_r.generate(CHAT, {"max_tokens": 16}).token_ids
    plain = base_g.generate(CHAT, {"max_tokens": 16}).token_ids
    assert plain != with_adapter
    assert plain == GenaiEngine(GENAI_TINY).generate(CHAT, {"max_tokens": 16}).token_ids
    # Base and adapter requests interleaved on one og.Model keep their own outputs.
    with ThreadPoolExecutor(4) as pool:
        outs = list(
            pool.map(
                lambda e: e.generate(CHAT, {"max_tokens": 16}).token_ids,
                [tuned_g, base_g, tuned_g, base_g],
            )
        )
    assert outs == [with_adapter, plain, with_adapter, plain]
    assert tuned_g.model.adapter(adapter) == tuned_g.model.adapter(adapter)  # loaded once


def test_engine_choice_in_the_manifest(tmp_path: Path) -> None:
    shutil.copytree(GENAI_TINY, tmp_path / "tiny")
    manifest = """
version: 1
traits: [helpfulness, brevity]
members:
  - id: auto
    backend: {kind: prompted, base: tiny, system_prompt: "Be brief."}
    reward: {helpfulness: 0.5, brevity: 0.9}
  - id: raw
    backend: {kind: onnx, path: tiny, engine: onnx}
    reward: {helpfulness: 0.6, brevity: 0.5}
  - id: forced
    backend: {kind: onnx, path: tiny, engine: genai}
    reward: {helpfulness: 0.7, brevity: 0.4}
"""
    portfolio = parse_portfolio(manifest)
    reg = SessionRegistry()
    engines = {m.id: engine_for_member(m, reg, root=tmp_path) for m in portfolio.members}
    assert type(engines["auto"]) is GenaiEngine
    assert type(engines["raw"]) is OnnxEngine
    assert type(engines["forced"]) is GenaiEngine
    assert engines["raw"].generate(CHAT, {"max_tokens": 8}).token_ids == (
        engines["forced"].generate(CHAT, {"max_tokens": 8}).token_ids
    )
    assert len(reg) == 2 and reg.loaded() == [(tmp_path / "tiny").resolve()]
    assert reg.evict(tmp_path / "tiny") and len(reg) == 0
    (tmp_path / "plain").mkdir()
    assert engine_class(tmp_path / "plain") is OnnxEngine
    with pytest.raises(EngineError, match="has no genai_config.json"):
        engine_class(tmp_path / "plain", "genai")


def test_load_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no genai_config.json"):
        GenaiModel(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(GENAI_TINY, broken)
    (broken / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match="GenAI cannot load the model"):
        GenaiModel(broken)
    with pytest.raises(ModelLoadError, match="does not exist"):
        GenaiEngine(GENAI_TINY, adapter=tmp_path / "missing.onnx_adapter").load()


def test_agreement_of_a_build_with_itself_and_the_raw_loop() -> None:
    same = genai_agreement(GENAI_TINY, GENAI_TINY, ["Hello world", "def add(a, b):"], 12)
    assert same["overall"] == same["teacher_forced"] == same["prefix"] == 1.0
    assert same["n_prompts"] == 2 and len(same["cases"][0]["candidate"]) == 12


def test_int8_build_shares_one_quantized_embedding(tmp_path: Path) -> None:
    """``share_int8_embedding`` on the builder's int8 graph (``genai_tiny_int8``): the fp32
    table goes, and the graph computes exactly what the builder's graph computes with its
    embedding replaced by the dequantized LM-head blocks."""
    import onnx
    from onnx import numpy_helper

    src = GENAI_TINY.parent / "genai_tiny_int8"
    shared = tmp_path / "shared"
    shutil.copytree(src, shared)
    assert share_int8_embedding(shared)
    assert not share_int8_embedding(shared)  # nothing left to share
    size = sum(p.stat().st_size for p in shared.iterdir())
    assert size < 0.7 * sum(p.stat().st_size for p in src.iterdir())
    graph = onnx.load(str(shared / "model.onnx")).graph
    assert "model.embed_tokens.weight" not in {i.name for i in graph.initializer}
    assert "GatherBlockQuantized" in {n.op_type for n in graph.node}

    # Reference: the builder's graph with its fp32 table set to (q - 128) * scale of the head.
    proto = onnx.load(str(src / "model.onnx"))
    inits = {i.name: i for i in proto.graph.initializer}
    q = numpy_helper.to_array(inits["lm_head.MatMul.weight_Q8"]).astype(np.float32)
    scales = numpy_helper.to_array(inits["lm_head.MatMul.weight_scales"])
    table = ((q - 128.0) * scales.reshape(*q.shape[:2], 1)).reshape(q.shape[0], -1)
    fp32 = numpy_helper.to_array(inits["model.embed_tokens.weight"])
    assert np.abs(table - fp32).max() <= scales.max() / 2 + 1e-6  # it is that table, quantized
    inits["model.embed_tokens.weight"].CopyFrom(
        numpy_helper.from_array(table.astype(np.float32), "model.embed_tokens.weight")
    )
    ref = tmp_path / "reference"
    shutil.copytree(src, ref, ignore=shutil.ignore_patterns("model.onnx*"))
    onnx.save(proto, str(ref / "model.onnx"))
    ids = GenaiEngine(shared).encode_prompt(CHAT)
    cont = GenaiEngine(shared).generate(CHAT, {"max_tokens": 12}).token_ids
    a = GenaiModel(shared).step_logits(ids, list(cont))
    b = GenaiModel(ref).step_logits(ids, list(cont))
    assert np.abs(a - b).max() < 1e-4


def test_grammar_constrains_a_genai_member(genai: GenaiEngine, raw: OnnxEngine) -> None:
    """``response_format`` on a GenAI member: the same mask as the raw loop, the same answer."""
    pytest.importorskip("llguidance")
    import json

    import jsonschema

    from palm_middleware.engines.grammar import Grammar

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 6}, "ok": {"type": "boolean"}},
        "required": ["city", "ok"],
        "additionalProperties": False,
    }
    p = {"max_tokens": 40, "grammar": Grammar.json_schema(schema)}
    out = genai.generate(CHAT, p)
    assert out.finish_reason == "stop"
    jsonschema.validate(json.loads(out.text), schema)
    assert out.text == raw.generate(CHAT, p).text
    assert "".join(c.text for c in genai.stream(CHAT, p)) == out.text
