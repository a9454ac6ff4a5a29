"""Tiny real models (built with onnx.helper, run by real ONNX Runtime sessions), cached per run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.registry import SessionRegistry

from .tiny import train_tokenizer, write_model


@dataclass(frozen=True)
class TinyModel:
    """A model folder and the weights the numpy reference needs."""

    path: Path
    weights: dict[str, npt.NDArray[np.float32]]


@pytest.fixture(scope="session")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(out)
    return out / "tokenizer.json"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, tokenizer_file: Path) -> TinyModel:
    out = tmp_path_factory.mktemp("models") / "tiny"
    return TinyModel(out, write_model(out, tokenizer_file, seed=0))


@pytest.fixture(scope="session")
def tiny_lora(tmp_path_factory: pytest.TempPathFactory, tokenizer_file: Path) -> TinyModel:
    out = tmp_path_factory.mktemp("models") / "tiny-lora"
    return TinyModel(out, write_model(out, tokenizer_file, seed=0, lora=True))


@pytest.fixture(scope="session")
def registry() -> SessionRegistry:
    return SessionRegistry()


@pytest.fixture(scope="session")
def engine(tiny: TinyModel, registry: SessionRegistry) -> OnnxEngine:
    return OnnxEngine(tiny.path, registry=registry)


@pytest.fixture(scope="session")
def tiny_long(
    tmp_path_factory: pytest.TempPathFactory, tokenizer_file: Path, registry: SessionRegistry
) -> OnnxEngine:
    """The tiny model with 1,024 positions (prompts that carry tool instructions)."""
    out = tmp_path_factory.mktemp("models") / "tiny-long"
    write_model(out, tokenizer_file, seed=0, max_positions=1024)
    return OnnxEngine(out, registry=registry)
