from __future__ import annotations

from pathlib import Path

import pytest

from .tiny_deployment import build


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny stand-in for the default portfolio (see tiny_deployment.py)."""
    return build(tmp_path_factory.mktemp("tiny-demo"))
