"""Fixtures for the portfolio tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def rng() -> object:
    import numpy as np

    return np.random.default_rng(12345)
