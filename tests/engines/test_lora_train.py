"""``palm train-member`` on a tiny random-init HF Llama: the loss falls and ONNX base+adapter
greedy tokens equal torch+LoRA. Needs the build-time extra (torch, transformers, optimum-onnx);
skipped without it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from palm_middleware.cli.__main__ import main
from palm_middleware.offline.engines.lora import add_lora_sites, read_sites
from palm_middleware.offline.evaluation.styles import load_style

from .test_export import _hf_model

HAS_EXPORT = all(
    importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "optimum")
)
needs_export = pytest.mark.skipif(not HAS_EXPORT, reason="needs palm-middleware[export]")

STYLE = """\
name: tiny-terse
description: short answers for the tiny model
examples:
  - {user: "Why is the sky blue?", assistant: "Air scatters blue light."}
  - {user: "Who wrote Hamlet?", assistant: "Shakespeare did."}
  - {user: "How many legs does a spider have?", assistant: "Eight."}
  - {user: "What is the capital of France?", assistant: "Paris."}
"""


@needs_export
@pytest.mark.filterwarnings("ignore")  # torch's TracerWarnings and optimum's notices
def test_train_member_lowers_the_loss_and_onnx_matches_torch(
    tmp_path: Path, tokenizer_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hf = _hf_model("llama", tmp_path / "hf", tokenizer_file)
    assert (
        main(["export", str(hf), str(tmp_path / "onnx"), "--no-progress", "--check-tokens", "0"])
        == 0
    )
    sites = add_lora_sites(tmp_path / "onnx", tmp_path / "lora")
    assert sorted(sites)[:2] == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
    ]
    (tmp_path / "style.yaml").write_text(STYLE)
    out = tmp_path / "tiny.onnx_adapter"
    capsys.readouterr()
    code = main(
        [
            "train-member",
            "tiny",
            "--data",
            str(tmp_path / "style.yaml"),
            "--hf",
            str(hf),
            "--lora-base",
            str(tmp_path / "lora"),
            "--steps",
            "15",
            "--rank",
            "4",
            "--lr",
            "0.02",
            "--batch-size",
            "4",
            "--check-tokens",
            "5",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "check passed" in printed
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["final_loss"] < card["first_loss"]
    assert card["check"]["result"] == "passed" and len(card["check"]["cases"]) == 2
    for case in card["check"]["cases"]:
        assert case["onnx_adapter"] == case["torch_lora"][: len(case["onnx_adapter"])]
    assert card["data"]["sha256"] == load_style(tmp_path / "style.yaml").sha256
    assert card["sites"] == len(read_sites(tmp_path / "lora")) == 4
    assert card["config"]["rank"] == 4


def test_train_member_needs_a_lora_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "style.yaml").write_text(STYLE)
    code = main(
        [
            "train-member",
            "x",
            "--data",
            str(tmp_path / "style.yaml"),
            "--hf",
            str(tmp_path),
            "--lora-base",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "x.onnx_adapter"),
        ]
    )
    assert code == 2
    assert "run `palm prepare-lora-base`" in capsys.readouterr().err
