"""Seed handling: every random function takes ``random_state`` and resolves it once, here."""

from __future__ import annotations

import numpy as np

from .exceptions import InvalidParameterError

__all__ = ["RandomState", "check_random_state"]

RandomState = int | np.random.Generator | None


def check_random_state(random_state: RandomState) -> np.random.Generator:
    """Resolve ``random_state`` (None, an int seed or a Generator) to a ``np.random.Generator``.

    None gives a fresh, OS-seeded generator; the global NumPy RNG is never used.
    """
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return np.random.default_rng(int(random_state))
    raise InvalidParameterError(
        f"{random_state!r} cannot be used to seed a numpy.random.Generator; "
        "pass None, an int or a Generator"
    )
