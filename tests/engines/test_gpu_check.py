"""``bench/gpu_check.sh`` on a machine without a GPU: it says why nothing ran and exits 0.

The project has no GPU, so the CUDA branch cannot run here; these tests pin the two ways the
script recognises a machine it must not check (the first real GPU host runs the rest).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

SCRIPT = Path(__file__).parents[2] / "bench" / "gpu_check.sh"


def _run(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_OUT": str(tmp_path / "out.md"), **env}
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU host: run the script")
def test_without_nvidia_smi_it_says_so_and_exits_0(tmp_path: Path) -> None:
    proc = _run({}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "gpu_check: no GPU to check: nvidia-smi not found. Nothing was run." in proc.stdout
    assert not (tmp_path / "out.md").exists()


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA build installed"
)
def test_gpu_but_cpu_only_onnxruntime_it_says_so_and_exits_0(tmp_path: Path) -> None:
    # A GPU host whose environment has the CPU onnxruntime: nvidia-smi is a stand-in that lists
    # one device (there is no GPU here); the real onnxruntime of this environment is asked.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "nvidia-smi"
    stub.write_text("#!/bin/sh\necho 'GPU 0: Stand-in (UUID: GPU-0)'\n")
    stub.chmod(0o755)
    proc = _run({"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime offers no CUDAExecutionProvider" in proc.stdout
    assert "install palm-middleware[gpu]" in proc.stdout
    assert not (tmp_path / "out.md").exists()
