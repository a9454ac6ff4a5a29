"""The engines package's public names."""

from __future__ import annotations

import palm_middleware.engines as engines

EXPECTED_ALL = [
    "Chunk",
    "Engine",
    "GenaiEngine",
    "GenaiModel",
    "Generation",
    "GenerationParams",
    "Grammar",
    "OnnxEngine",
    "OnnxModel",
    "RuntimeOptions",
    "SessionRegistry",
    "Usage",
]


def test_all() -> None:
    assert engines.__all__ == EXPECTED_ALL
    assert engines.__all__ == sorted(engines.__all__, key=str.casefold)
    for name in engines.__all__:
        assert getattr(engines, name) is not None
