"""Build ``tests/data/genai_tiny{,_int8}``: a tiny Llama made by ONNX Runtime GenAI's builder.

What it stands for: a member served through ``onnxruntime_genai`` (``GenaiEngine``), i.e. what
``palm prepare-genai`` builds from SmolLM2-135M-Instruct, at toy size: hidden 64, 2 layers,
4 heads / 2 KV heads (GroupQueryAttention needs head_size % 16 == 0), the tests' 400-token
byte-level BPE, random weights (seed 0), tied embeddings, context 128. Its graph
has the builder's fused ops (GroupQueryAttention, SkipSimplifiedLayerNormalization, packed
MatMuls) and its ``genai_config.json``, so the runtime path of the real artifact is tested.

CI cannot run the builder (it needs transformers 5, which cannot share the environment with
optimum-onnx: onnx.md §1), so the folder is committed (~200 KB). Re-make it with the builder
environment that ``palm prepare-genai`` creates::

    ~/.cache/palm-middleware/genai-builder/bin/python tests/engines/make_genai_tiny.py

Needs torch, transformers >= 5, onnxruntime-genai and onnx-ir (that environment has them).
"""

# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "data" / "genai_tiny"
OUT_INT8 = HERE.parent / "data" / "genai_tiny_int8"  # as the builder writes it (fp32 embedding)
sys.path.insert(0, str(HERE.parents[1]))

from tests.engines.tiny import CHATML, train_tokenizer  # noqa: E402


def main() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        hf = Path(tmp) / "hf"
        n_vocab = train_tokenizer(hf)
        tok = PreTrainedTokenizerFast(
            tokenizer_file=str(hf / "tokenizer.json"),
            bos_token="<|im_start|>",
            eos_token="<|im_end|>",
            pad_token="<|im_end|>",
            unk_token="<|endoftext|>",
            model_input_names=["input_ids", "attention_mask"],
        )
        tok.chat_template = CHATML
        tok.save_pretrained(hf)
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=n_vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        model = LlamaForCausalLM(cfg).eval()
        with torch.no_grad():  # larger weights than the default init: less uniform logits
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 0.3)
        model.save_pretrained(hf)
        for precision, out in (("fp32", OUT), ("int8", OUT_INT8)):
            _build(hf, Path(tmp) / precision, precision, out)
    print(f"wrote {OUT} and {OUT_INT8}")


def _build(hf: Path, built: Path, precision: str, out: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(hf),
            "-o",
            str(built),
            "-p",
            precision,
            "-e",
            "cpu",
            "-c",
            str(built.parent / "cache"),
        ],
        check=True,
    )
    # Tokenizer files exactly as the tests' tokenizer wrote them (the builder re-saves them
    # through transformers 5, which may rename the tokenizer class).
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
    ):
        if (hf / name).is_file():
            shutil.copy2(hf / name, built / name)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(built, out)
    (out / "model_card.json").write_text(
        json.dumps(
            {
                "engine": "genai",
                "stands_for": "palm prepare-genai output (SmolLM2-135M-Instruct), toy size",
                "made_by": "tests/engines/make_genai_tiny.py",
                "precision": precision,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
