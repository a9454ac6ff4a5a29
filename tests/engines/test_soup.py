"""Weight soups of two exports, checked against the numpy reference of the mixed weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from palm_middleware.cli.__main__ import main
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.exceptions import InvalidParameterError, ModelLoadError
from palm_middleware.offline.engines.soup import soup

from .conftest import TinyModel
from .tiny import reference_greedy, write_model


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory, tokenizer_file: Path) -> TinyModel:
    out = tmp_path_factory.mktemp("soup") / "seed1"
    return TinyModel(out, write_model(out, tokenizer_file, seed=1))


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_soup_equals_mixed_reference(
    tiny: TinyModel, other: TinyModel, tmp_path: Path, lam: float
) -> None:
    res = soup(tiny.path, other.path, lam, tmp_path / "soup")
    mixed = {
        k: ((1 - lam) * v + lam * other.weights[k]).astype(v.dtype) for k, v in tiny.weights.items()
    }
    eng = OnnxEngine(res.path)
    ids = eng.encode_prompt("Hello world")
    got = list(eng.generate("Hello world", {"max_tokens": 16}).token_ids)
    want = reference_greedy(mixed, ids, 16)
    assert got == want[: len(got)]
    assert len(got) == 16 or got[-1] in eng.model.eos_token_ids  # stopped at EOS
    assert res.n_mixed == len(tiny.weights)  # every weight differs between the seeds
    card = json.loads((res.path / "model_card.json").read_text())
    assert card["lam"] == lam and len(card["sources"]) == 2 and len(card["sha256"]) == 64


def test_soup_of_different_graphs_fails(
    tiny: TinyModel, tiny_lora: TinyModel, tokenizer_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelLoadError, match="have different graphs"):
        soup(tiny.path, tiny_lora.path, 0.5, tmp_path / "x")
    write_model(tmp_path / "deep", tokenizer_file, n_layers=3)
    with pytest.raises(ModelLoadError, match="have different graphs"):
        soup(tiny.path, tmp_path / "deep", 0.5, tmp_path / "y")
    write_model(tmp_path / "long", tokenizer_file, max_positions=64)
    with pytest.raises(
        ModelLoadError,
        match=r"initializer 'wpe': float32\[128, 32\] in .* but "
        r"float32\[64, 32\]",
    ):
        soup(tiny.path, tmp_path / "long", 0.5, tmp_path / "z")


def test_soup_bad_arguments(tiny: TinyModel, other: TinyModel, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match=r"lam must be a number in \[0, 1\]; got 1.5"):
        soup(tiny.path, other.path, 1.5, tmp_path / "s")
    with pytest.raises(ModelLoadError, match="does not exist"):
        soup(tiny.path, tmp_path / "missing", 0.5, tmp_path / "s")
    with pytest.raises(InvalidParameterError, match="already holds model.onnx"):
        soup(tiny.path, other.path, 0.5, tiny.path)


def test_soup_cli(
    tiny: TinyModel, other: TinyModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["soup", str(tiny.path), str(other.path), "--lam", "0.5", "-o", str(tmp_path / "s")])
        == 0
    )
    assert "initializers mixed" in capsys.readouterr().out
    assert (tmp_path / "s" / "tokenizer.json").is_file()
    assert (
        main(["soup", str(tiny.path), str(other.path), "--lam", "2", "-o", str(tmp_path / "t")])
        == 2
    )
    assert "lam must be a number in [0, 1]" in capsys.readouterr().err
