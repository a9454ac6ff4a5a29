"""Session defaults that hold up on a shared host, and their per-deployment overrides (PALM_ORT_*).

Real ONNX Runtime sessions on the tiny decoder: the options a session was created with are read
back from the session itself.
"""

from __future__ import annotations

import onnxruntime as ort
import pytest

from palm_middleware.engines._runtime import ENV, RuntimeOptions
from palm_middleware.engines.model import OnnxModel
from palm_middleware.exceptions import InvalidParameterError, ModelLoadError

from .conftest import TinyModel


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)


def _session_options(tiny: TinyModel, options: RuntimeOptions) -> tuple[int, int, str, str]:
    so = OnnxModel(tiny.path, options).session.get_session_options()
    return (
        so.intra_op_num_threads,
        so.inter_op_num_threads,
        so.get_session_config_entry("session.intra_op.allow_spinning"),
        so.get_session_config_entry("session.inter_op.allow_spinning"),
    )


def test_defaults_are_one_thread_without_spinning(tiny: TinyModel) -> None:
    options = RuntimeOptions()
    assert (options.device, options.intra_op_threads, options.allow_spinning) == ("auto", 1, False)
    assert _session_options(tiny, RuntimeOptions(device="cpu")) == (1, 0, "0", "0")


def test_environment_overrides_defaults_and_arguments_override_both(
    tiny: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PALM_ORT_INTRA_OP_THREADS", "2")
    monkeypatch.setenv("PALM_ORT_INTER_OP_THREADS", "1")
    monkeypatch.setenv("PALM_ORT_ALLOW_SPINNING", "true")
    monkeypatch.setenv("PALM_ORT_DEVICE", "cpu")
    options = RuntimeOptions()
    assert options.device == "cpu"
    assert _session_options(tiny, options) == (2, 1, "1", "1")
    assert _session_options(tiny, RuntimeOptions(intra_op_threads=1, allow_spinning=False)) == (
        1,
        1,
        "0",
        "0",
    )


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("PALM_ORT_INTRA_OP_THREADS", "two", "PALM_ORT_INTRA_OP_THREADS='two': expected a whole"),
        ("PALM_ORT_INTER_OP_THREADS", "-1", "PALM_ORT_INTER_OP_THREADS='-1'"),
        ("PALM_ORT_ALLOW_SPINNING", "maybe", "PALM_ORT_ALLOW_SPINNING='maybe': expected 1/0"),
        ("PALM_ORT_DEVICE", "tpu", r"PALM_ORT_DEVICE='tpu': expected one of \('auto'"),
    ],
)
def test_bad_environment_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, match: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidParameterError, match=match):
        RuntimeOptions()


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(InvalidParameterError, match="intra_op_threads must be an int >= 0; got -2"):
        RuntimeOptions(intra_op_threads=-2)
    with pytest.raises(InvalidParameterError, match="device must be one of"):
        RuntimeOptions(device="gpu")  # type: ignore[arg-type]


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA build installed"
)
def test_cuda_from_the_environment_never_falls_back_silently(
    tiny: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This CPU-only runtime offers no CUDA: a deployment that asked for it gets an error, not CPU.
    monkeypatch.setenv("PALM_ORT_DEVICE", "cuda")
    with pytest.raises(ModelLoadError, match="a GPU is required"):
        OnnxModel(tiny.path, RuntimeOptions())


def test_free_heap_is_released_on_glibc_only() -> None:
    """``release_free_heap`` runs ``malloc_trim`` where glibc has it (Linux) and is a no-op
    elsewhere; it is called after model loads and GenAI requests, so it must never raise."""
    import ctypes.util
    import sys

    from palm_middleware.engines._runtime import release_free_heap

    glibc = sys.platform.startswith("linux") and ctypes.util.find_library("c") is not None
    assert release_free_heap() is glibc
    assert release_free_heap() is glibc  # idempotent: nothing left to trim is fine
