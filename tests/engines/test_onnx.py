"""OnnxEngine on a real (tiny) ONNX Runtime session: correctness against a numpy reference."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from palm_middleware.engines.base import Chunk, Engine, GenerationParams
from palm_middleware.engines.model import OnnxModel
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.exceptions import GenerationError

from .conftest import TinyModel
from .tiny import reference_greedy, write_model

CHAT = [{"role": "user", "content": "Héllo, who are you? 🙂"}]


def test_engine_satisfies_the_protocol(engine: OnnxEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.name == "tiny" and "tiny" in repr(engine)


def test_greedy_tokens_equal_numpy_reference(engine: OnnxEngine, tiny: TinyModel) -> None:
    for prompt in ["Hello world", "The quick brown fox", "日本語"]:
        ids = engine.encode_prompt(prompt)
        out = engine.generate(prompt, {"max_tokens": 24})
        assert list(out.token_ids) == reference_greedy(tiny.weights, ids, 24)


def test_greedy_chat_equals_reference_and_counts_usage(engine: OnnxEngine, tiny: TinyModel) -> None:
    ids = engine.encode_prompt(CHAT)
    text = engine.model.tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("<|im_start|>user\nHéllo") and text.endswith("<|im_start|>assistant\n")
    out = engine.generate(CHAT, {"max_tokens": 16})
    assert list(out.token_ids) == reference_greedy(tiny.weights, ids, 16)
    assert out.usage.prompt_tokens == len(ids)
    assert out.usage.completion_tokens == 16 == len(out.token_ids)
    assert out.usage.total_tokens == len(ids) + 16
    assert out.finish_reason == "length"
    assert out.model == "tiny"


def _joined(chunks: Sequence[Chunk]) -> tuple[str, tuple[int, ...]]:
    return "".join(c.text for c in chunks), tuple(i for c in chunks for i in c.token_ids)


@pytest.mark.parametrize(
    "params",
    [
        {"max_tokens": 40},
        {"max_tokens": 40, "temperature": 0.8, "seed": 1},
        {"max_tokens": 40, "temperature": 1.3, "top_k": 20, "top_p": 0.9, "seed": 7},
        {"max_tokens": 40, "temperature": 1.0, "seed": 3, "stop": ["e"]},
    ],
)
def test_stream_equals_generate(engine: OnnxEngine, params: dict[str, Any]) -> None:
    whole = engine.generate(CHAT, params)
    chunks = list(engine.stream(CHAT, params))
    text, ids = _joined(chunks)
    assert (text, ids) == (whole.text, whole.token_ids)
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    assert chunks[-1].finish_reason == whole.finish_reason
    assert chunks[-1].usage == whole.usage


def test_text_is_the_decoded_tokens(engine: OnnxEngine) -> None:
    tok = engine.model.tokenizer
    for seed in range(15):
        out = engine.generate("Emoji: 🙂", {"max_tokens": 30, "temperature": 1.5, "seed": seed})
        assert out.text == tok.decode(list(out.token_ids), skip_special_tokens=True)


def test_seeds_reproduce_and_differ(engine: OnnxEngine) -> None:
    p = GenerationParams(max_tokens=30, temperature=1.0, seed=11)
    a, b = engine.generate(CHAT, p), engine.generate(CHAT, p)
    assert a == b
    others = {
        engine.generate(CHAT, {"max_tokens": 30, "temperature": 1.0, "seed": s}).token_ids
        for s in range(5)
    }
    assert len(others) >= 4


def test_unseeded_sampling_varies(engine: OnnxEngine) -> None:
    outs = {
        engine.generate(CHAT, {"max_tokens": 30, "temperature": 1.0}).token_ids for _ in range(4)
    }
    assert len(outs) > 1


def test_top_k_one_is_greedy(engine: OnnxEngine) -> None:
    greedy = engine.generate(CHAT, {"max_tokens": 20})
    for seed in range(3):
        k1 = engine.generate(CHAT, {"max_tokens": 20, "temperature": 2.0, "top_k": 1, "seed": seed})
        tiny_p = engine.generate(
            CHAT, {"max_tokens": 20, "temperature": 2.0, "top_p": 1e-9, "seed": seed}
        )
        assert k1.token_ids == greedy.token_ids == tiny_p.token_ids


@pytest.mark.parametrize("n", [1, 2, 7])
def test_max_tokens(engine: OnnxEngine, n: int) -> None:
    out = engine.generate(CHAT, {"max_tokens": n})
    assert len(out.token_ids) == out.usage.completion_tokens == n
    assert out.finish_reason == "length"


def test_stop_sequence_cuts_text(engine: OnnxEngine) -> None:
    full = engine.generate("Hello world", {"max_tokens": 40}).text
    assert len(full) > 10
    stop = full[6:9]
    cut = full[: full.find(stop)]
    for run in (
        engine.generate("Hello world", {"max_tokens": 40, "stop": [stop]}),
        engine.generate("Hello world", {"max_tokens": 40, "stop": ["\x00never", stop]}),
    ):
        assert run.text == cut
        assert run.finish_reason == "stop"
        assert run.usage.completion_tokens < 40
    streamed, _ = _joined(list(engine.stream("Hello world", {"max_tokens": 40, "stop": stop})))
    assert streamed == cut


def test_stop_sequence_never_leaks_a_prefix(engine: OnnxEngine) -> None:
    full = engine.generate("Hello world", {"max_tokens": 40}).text
    stop = full[10:14] + "\x00"  # starts matching but never completes
    chunks = list(engine.stream("Hello world", {"max_tokens": 40, "stop": [stop]}))
    assert _joined(chunks)[0] == full
    assert chunks[-1].finish_reason == "length"


def test_eos_token_ends_generation(engine: OnnxEngine, tmp_path: Path) -> None:
    greedy = engine.generate("Hello world", {"max_tokens": 20})
    eos = greedy.token_ids[5]
    first = greedy.token_ids.index(eos)
    folder = tmp_path / "eos"
    shutil.copytree(engine.path, folder)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    out = OnnxEngine(folder).generate("Hello world", {"max_tokens": 20})
    assert out.finish_reason == "stop"
    assert out.token_ids == greedy.token_ids[: first + 1]  # the EOS token is counted ...
    tok = engine.model.tokenizer
    assert out.text == tok.decode(list(greedy.token_ids[:first]))  # ... but not in the text
    assert out.usage.completion_tokens == first + 1


def test_context_window_limits_generation(tokenizer_file: Path, tmp_path: Path) -> None:
    write_model(tmp_path / "short", tokenizer_file, max_positions=12)
    eng = OnnxEngine(tmp_path / "short")
    n_prompt = len(eng.encode_prompt("Hello world"))
    out = eng.generate("Hello world", {"max_tokens": 100})
    assert out.finish_reason == "length"
    assert out.usage.completion_tokens == 12 - n_prompt
    with pytest.raises(GenerationError, match=r"prompt has \d+ tokens; short takes at most 12"):
        eng.generate("The quick brown fox jumps over the lazy dog. " * 3)


class _ScriptedEngine(OnnxEngine):
    """The real engine with the model's token choice replaced by a script (tests text handling)."""

    script: list[int] = []

    def _tokens(self, *args: Any, **kwargs: Any) -> Iterator[int]:
        yield from self.script


@pytest.mark.parametrize(
    "text",
    ["Emoji: 🙂 🚀 🎉 👍🏽!", "日本語のテキスト", "crème brûlée ∑∫√ ≤≥", "a🙂b", "🙂"],
)
def test_streaming_never_splits_a_character(tiny: TinyModel, text: str) -> None:
    eng = _ScriptedEngine(tiny.path)
    ids = eng.model.tokenizer.encode(text, add_special_tokens=False).ids
    assert len(ids) > len(text.encode("utf-8")) // 4  # characters really span several tokens
    eng.script = list(ids)
    chunks = list(eng.stream("x", {"max_tokens": len(ids)}))
    assert "".join(c.text for c in chunks) == text
    for c in chunks:
        assert "\ufffd" not in c.text
        c.text.encode("utf-8")  # complete characters only (a lone surrogate would raise)
    # Character boundaries are respected: every emitted prefix is a prefix of the text.
    acc = ""
    for c in chunks:
        acc += c.text
        assert text.startswith(acc)


def test_stop_sequence_split_across_tokens(tiny: TinyModel) -> None:
    eng = _ScriptedEngine(tiny.path)
    text = "Answer: 🙂 done. STOP here"
    eng.script = list(eng.model.tokenizer.encode(text, add_special_tokens=False).ids)
    for stop in ("STOP", "🙂", "e. S", ". STOP h"):
        chunks = list(eng.stream("x", {"max_tokens": 100, "stop": [stop]}))
        assert "".join(c.text for c in chunks) == text[: text.find(stop)]
        assert chunks[-1].finish_reason == "stop"


def test_broken_bytes_at_the_end_are_flushed(tiny: TinyModel) -> None:
    eng = _ScriptedEngine(tiny.path)
    tok = eng.model.tokenizer
    ids = tok.encode("ok 🙂", add_special_tokens=False).ids
    eng.script = list(ids[:-1])  # the emoji's last byte never comes
    out = eng.generate("x", {"max_tokens": 100})
    assert out.text == tok.decode(list(ids[:-1]))
    assert out.text.startswith("ok ") and out.text.endswith("\ufffd")


def test_loaded_model_can_be_passed_directly(tiny: TinyModel, engine: OnnxEngine) -> None:
    model = OnnxModel(tiny.path)
    direct = OnnxEngine(model)
    assert direct.model is model
    assert (
        direct.generate(CHAT, {"max_tokens": 8}).token_ids
        == engine.generate(CHAT, {"max_tokens": 8}).token_ids
    )


def test_defaults_and_request_overrides(tiny: TinyModel, registry: SessionRegistry) -> None:
    eng = OnnxEngine(tiny.path, registry=registry, defaults={"max_tokens": 5})
    assert eng.generate(CHAT).usage.completion_tokens == 5
    assert eng.generate(CHAT, {"max_tokens": 3}).usage.completion_tokens == 3
    assert eng.generate(CHAT, GenerationParams(max_tokens=4)).usage.completion_tokens == 4
