"""``palm export``: HF folder -> ONNX; ONNX greedy tokens equal torch greedy tokens.

The export tests need the build-time extra (torch, transformers, optimum-onnx) and are skipped
without it; CI installs only ``[cpu,dev]`` and runs the missing-extra test instead.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from palm_middleware.cli.__main__ import main

from .tiny import CHATML

HAS_EXPORT = all(
    importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "optimum")
)
needs_export = pytest.mark.skipif(not HAS_EXPORT, reason="needs palm-middleware[export]")


@pytest.mark.skipif(HAS_EXPORT, reason="the export extra is installed")
def test_export_without_extra_names_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path), str(tmp_path / "out"), "--no-progress"]) == 2
    assert "pip install 'palm-middleware[export]'" in capsys.readouterr().err


def test_export_source_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "is not a folder; pass a local Hugging Face model folder" in capsys.readouterr().err


def _hf_model(kind: str, out: Path, tokenizer_file: Path) -> Path:
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_input_names=["input_ids", "attention_mask"],
    )
    tok.chat_template = CHATML
    torch.manual_seed(0)
    vocab = len(tok)
    if kind == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab,
                n_embd=64,
                n_layer=2,
                n_head=4,
                n_positions=256,
                bos_token_id=0,
                eos_token_id=0,
            )
        )
    else:
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab,
                hidden_size=64,
                intermediate_size=256,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=256,
                bos_token_id=0,
                eos_token_id=0,
            )
        )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@needs_export
@pytest.mark.filterwarnings("ignore")  # torch's TracerWarnings and optimum's notices
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_export_matches_torch(
    kind: str, tmp_path: Path, tokenizer_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from palm_middleware.engines.onnx import OnnxEngine

    src = _hf_model(kind, tmp_path / "hf", tokenizer_file)
    out = tmp_path / "onnx"
    assert main(["export", str(src), str(out), "--no-progress", "--check-tokens", "12"]) == 0
    assert "check: passed" in capsys.readouterr().out
    card = json.loads((out / "model_card.json").read_text())
    assert card["check"]["result"] == "passed" and len(card["check"]["cases"]) == 3
    assert card["opset"] >= 14 and len(card["sha256"]) == 64 and card["source_sha256"]
    # The check above ran on the fused graph: fusing kept torch's greedy tokens.
    fused = {"gpt2": "SkipLayerNormalization", "llama": "SkipSimplifiedLayerNormalization"}
    assert card["fusions"]["result"] == "fused" and card["fusions"]["ops"][fused[kind]] >= 1
    eng = OnnxEngine(out)
    assert eng.model.kv_inputs and eng.model.providers == ["CPUExecutionProvider"]
    chat = eng.generate([{"role": "user", "content": "Héllo 🙂"}], {"max_tokens": 8})
    assert chat.usage.completion_tokens >= 1
