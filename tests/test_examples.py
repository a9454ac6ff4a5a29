"""Every example runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    assert "before: balanced" in out.stdout and "after:  terse" in out.stdout


def test_langchain_example_runs() -> None:
    pytest.importorskip("palm_langchain")
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "langchain" / "chain.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    assert "before: balanced" in out.stdout and "after:  terse" in out.stdout
    assert "bob:    balanced" in out.stdout
