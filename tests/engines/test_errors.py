"""Every bad model folder, prompt or parameter gives a clear EngineError naming what and where."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from palm_middleware.engines._runtime import RuntimeOptions, run_session
from palm_middleware.engines.base import GenerationParams
from palm_middleware.engines.model import OnnxModel
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.exceptions import (
    EngineError,
    GenerationError,
    InvalidParameterError,
    ModelLoadError,
)

from .conftest import TinyModel
from .tiny import train_tokenizer


@pytest.fixture()
def folder(tiny: TinyModel, tmp_path: Path) -> Path:
    """A private copy of the tiny model folder to break."""
    out = tmp_path / "model"
    shutil.copytree(tiny.path, out)
    return out


def _load_error(path: Path, match: str, **kwargs: Any) -> ModelLoadError:
    with pytest.raises(ModelLoadError, match=match) as info:
        OnnxModel(path, RuntimeOptions(**kwargs))
    assert isinstance(info.value, EngineError)
    return info.value


def test_missing_folder(tmp_path: Path) -> None:
    _load_error(
        tmp_path / "nope",
        rf"model folder {re.escape(str(tmp_path / 'nope'))} does "
        "not exist",
    )


def test_file_instead_of_folder(folder: Path) -> None:
    _load_error(folder / "model.onnx", "is a file; pass the model folder")


def test_missing_model_file(folder: Path) -> None:
    (folder / "model.onnx").unlink()
    _load_error(folder, rf"{re.escape(str(folder))}: no model.onnx .*palm export")


def test_corrupt_model_file(folder: Path) -> None:
    rng = np.random.default_rng(0)
    (folder / "model.onnx").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    err = _load_error(
        folder,
        rf"{re.escape(str(folder / 'model.onnx'))}: ONNX Runtime cannot "
        "load the model",
    )
    assert err.__cause__ is not None  # the onnxruntime exception is chained, not swallowed


def test_truncated_model_file(folder: Path) -> None:
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    _load_error(folder, "ONNX Runtime cannot load the model")


def test_missing_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").unlink()
    _load_error(folder, r"tokenizer\.json is missing")


@pytest.mark.parametrize("content", [b"{not json", b"\x00\xff\xfe" * 100, b'{"model": 1}'])
def test_corrupt_tokenizer(folder: Path, content: bytes) -> None:
    (folder / "tokenizer.json").write_bytes(content)
    _load_error(folder, r"tokenizer\.json: not a valid tokenizers file")


def test_tokenizer_of_another_model(folder: Path, tmp_path: Path) -> None:
    train_tokenizer(tmp_path / "big", vocab_size=600)
    shutil.copy(tmp_path / "big" / "tokenizer.json", folder / "tokenizer.json")
    _load_error(
        folder,
        r"tokenizer\.json has 5\d\d tokens but model\.onnx predicts 400; the "
        "tokenizer belongs to another model",
    )


def test_eos_token_not_in_tokenizer(folder: Path) -> None:
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["eos_token"] = {"content": "</s>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    _load_error(folder, r"eos_token '</s>' is not in tokenizer\.json")


@pytest.mark.parametrize("name", ["generation_config.json", "tokenizer_config.json", "config.json"])
def test_invalid_json_config(folder: Path, name: str) -> None:
    (folder / name).write_text("{oops")
    _load_error(folder, rf"{re.escape(name)}: not valid JSON")


def test_invalid_chat_template(folder: Path) -> None:
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{% for m in messages %}{{ m.content }"
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    _load_error(folder, "the chat template is not valid Jinja")


def test_not_a_language_model(folder: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    _load_error(folder, r"not a causal-LM export \(inputs \['x'\], outputs \['y'\]\)")


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="a CUDA-capable onnxruntime is installed",
)
def test_require_gpu_without_gpu_raises(tiny: TinyModel) -> None:
    _load_error(
        tiny.path,
        r"a GPU is required but this onnxruntime build offers only "
        r"\[.*'CPUExecutionProvider'\]; install `palm-middleware\[gpu\]`",
        require_gpu=True,
    )
    _load_error(tiny.path, "a GPU is required", device="cuda")


def test_require_gpu_contradicts_cpu(tiny: TinyModel) -> None:
    _load_error(
        tiny.path, "require_gpu=True contradicts device='cpu'", require_gpu=True, device="cpu"
    )


def test_cpu_session_options_apply(tiny: TinyModel) -> None:
    model = OnnxModel(
        tiny.path,
        RuntimeOptions(
            device="cpu", intra_op_threads=1, disable_prepacking=True, allow_spinning=False
        ),
    )
    assert model.providers == ["CPUExecutionProvider"]
    so = model.session.get_session_options()
    assert so.intra_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.disable_prepacking") == "1"


def test_messages_without_chat_template(folder: Path) -> None:
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    eng = OnnxEngine(folder)
    assert eng.generate("raw prompts still work", {"max_tokens": 2}).usage.completion_tokens == 2
    with pytest.raises(GenerationError, match="has no chat template.*send a raw prompt"):
        eng.generate([{"role": "user", "content": "hi"}])


def test_chat_template_file_is_used(folder: Path) -> None:
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "chat_template.jinja").write_text(cfg.pop("chat_template"))
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    ids = OnnxEngine(folder).encode_prompt([{"role": "user", "content": "hi"}])
    assert len(ids) > 3


@pytest.mark.parametrize(
    ("prompt", "match"),
    [
        (42, "prompt must be a string or a list of messages; got int"),
        ("", "prompt is empty"),
        ([{"role": "user"}], "message 0 must be a mapping with string 'role' and 'content'"),
        (["hello"], "message 0 must be a mapping"),
    ],
)
def test_bad_prompts(engine: OnnxEngine, prompt: Any, match: str) -> None:
    with pytest.raises(GenerationError, match=match):
        engine.generate(prompt)
    with pytest.raises(GenerationError, match=match):
        list(engine.stream(prompt))


def test_template_raise_exception_is_a_generation_error(folder: Path) -> None:
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{{ raise_exception('only user turns') }}"
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(GenerationError, match="chat template refused the messages: only user"):
        OnnxEngine(folder).generate([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"max_tokens": 0}, "'max_tokens' must be an int >= 1; got 0"),
        ({"max_tokens": 2.5}, "'max_tokens' must be an int >= 1; got 2.5"),
        ({"temperature": -1.0}, "'temperature' must be a finite float >= 0; got -1.0"),
        ({"temperature": float("nan")}, "'temperature' must be a finite float"),
        ({"top_p": -0.1}, r"'top_p' must be a float in \[0, 1\]; got -0.1"),
        ({"top_p": 1.5}, r"'top_p' must be a float in \[0, 1\]"),
        ({"top_k": -2}, "'top_k' must be an int >= 0; got -2"),
        ({"seed": -1}, "'seed' must be None or an int >= 0; got -1"),
        ({"seed": True}, "'seed' must be None or an int >= 0; got True"),
        ({"stop": [""]}, "'stop' must be a list of non-empty strings"),
        ({"max_token": 3}, r"unknown generation parameter\(s\) \['max_token'\]"),
    ],
)
def test_bad_params(engine: OnnxEngine, params: dict[str, Any], match: str) -> None:
    with pytest.raises(GenerationError, match=match):
        engine.generate("hi", params)


def test_params_type(engine: OnnxEngine) -> None:
    with pytest.raises(GenerationError, match="params must be GenerationParams, a mapping"):
        engine.generate("hi", 3)  # type: ignore[arg-type]


def test_single_stop_string_is_one_sequence() -> None:
    assert GenerationParams(stop="END").stop == ("END",)  # type: ignore[arg-type]


def test_bad_member_configuration(tiny: TinyModel) -> None:
    with pytest.raises(InvalidParameterError, match=r"few_shot\[0\] must have keys role/content"):
        OnnxEngine(tiny.path, few_shot=[{"question": "q"}])
    with pytest.raises(InvalidParameterError, match="system_prompt must be a string"):
        OnnxEngine(tiny.path, system_prompt=3)  # type: ignore[arg-type]


def test_run_failures_are_translated(engine: OnnxEngine) -> None:
    model = engine.model
    feeds: dict[str, Any] = {k.input_name: k.empty() for k in model.kv_inputs}
    feeds["input_ids"] = np.zeros((1, 2), dtype=np.float32)  # wrong dtype: ORT's InvalidArgument
    feeds["attention_mask"] = feeds["position_ids"] = np.zeros((1, 2), dtype=np.int64)
    with pytest.raises(GenerationError, match="tiny: ONNX Runtime failed during generation") as e:
        run_session(model.session, ["logits"], feeds, None, "tiny")
    assert type(e.value.__cause__).__module__.startswith("onnxruntime")
