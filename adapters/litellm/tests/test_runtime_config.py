"""``runtime:`` in palm.yaml: the local members' ONNX Runtime session options per deployment."""

from __future__ import annotations

from pathlib import Path

import pytest

from palm_litellm.config import PalmProxySettings
from palm_middleware.engines._runtime import ENV
from palm_middleware.exceptions import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)


def test_omitted_runtime_keeps_the_shared_host_defaults() -> None:
    options = PalmProxySettings.model_validate({"portfolio": "p.yaml"}).runtime.options()
    assert (options.intra_op_threads, options.inter_op_threads, options.allow_spinning) == (
        1,
        0,
        False,
    )


def test_runtime_section_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALM_ORT_INTRA_OP_THREADS", "4")
    monkeypatch.setenv("PALM_ORT_ALLOW_SPINNING", "1")
    settings = PalmProxySettings.model_validate(
        {"portfolio": "p.yaml", "runtime": {"intra_op_threads": 2, "device": "cpu"}}
    )
    options = settings.runtime.options()
    # Set in the file: the file; left out: the environment.
    assert (options.intra_op_threads, options.device, options.allow_spinning) == (2, "cpu", True)


def test_bad_runtime_value_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "palm.yaml"
    path.write_text("portfolio: p.yaml\nruntime:\n  intra_op_threads: -1\n")
    with pytest.raises(
        ConfigError,
        match=r"palm\.yaml:3:3: runtime\.intra_op_threads: .*greater than or equal to 0; got -1",
    ):
        PalmProxySettings.from_file(path)
