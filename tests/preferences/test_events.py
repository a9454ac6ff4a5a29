from __future__ import annotations

import numpy as np
import pytest

from palm_middleware import InvalidEventError
from palm_middleware.preferences.events import Observation


def test_observation_round_trip() -> None:
    for o in (
        Observation.compare([0.1, -0.2], -1, strength=0.3, scale=2.0, ts=5.0),
        Observation.anchor(np.array([0.2, 0.0]), np.array([1.0, 0.0]), precision=400, ts=1.0),
    ):
        back = Observation.from_dict(o.to_dict())
        assert back.kind == o.kind and back.ts == o.ts and back.strength == o.strength
        np.testing.assert_allclose(back.vector, o.vector)


@pytest.mark.parametrize(
    "bad",
    [
        {"k": "c", "v": [0.1], "t": 0},
        {"k": "x", "v": [0.1], "t": 0},
        {"k": "a", "v": [1], "t": 0},
        {"k": "c", "v": ["a"], "y": 1, "t": 0},
    ],
)
def test_malformed_stored_observations(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidEventError):
        Observation.from_dict(bad)


def test_invalid_observations() -> None:
    with pytest.raises(InvalidEventError, match="y = \\+1 or -1"):
        Observation.compare([0.1, 0.2], 0)
    with pytest.raises(InvalidEventError, match="finite"):
        Observation.compare([float("nan"), 0.2], 1)
    with pytest.raises(InvalidEventError, match="strength"):
        Observation.compare([0.1, 0.2], 1, strength=-1)
