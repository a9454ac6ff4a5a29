"""Shared type aliases."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["FloatArray", "MemberId", "TraitName", "UserId"]

FloatArray: TypeAlias = npt.NDArray[np.float64]
TraitName: TypeAlias = str
MemberId: TypeAlias = str
UserId: TypeAlias = str
