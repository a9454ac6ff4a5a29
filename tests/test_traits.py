from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from palm_middleware import InvalidWeightsError, TraitSpace, WeightVector

SPACE = TraitSpace(["safety", "helpfulness", "humor", "brevity"])


def test_space_order_and_index() -> None:
    assert SPACE.names == ("safety", "helpfulness", "humor", "brevity")
    assert SPACE.index("humor") == 2
    assert "brevity" in SPACE and "wit" not in SPACE
    assert len(SPACE) == SPACE.dim == 4


@pytest.mark.parametrize(
    ("names", "match"),
    [([], "at least one"), (["a", "a"], "unique"), (["Safety"], "invalid"), ([3], "invalid")],
)
def test_space_rejects_bad_names(names: list[object], match: str) -> None:
    with pytest.raises(InvalidWeightsError, match=match):
        TraitSpace(names)  # type: ignore[arg-type]


def test_weight_vector_from_mapping_fills_zeros() -> None:
    w = WeightVector.from_mapping(SPACE, {"safety": 0.5, "brevity": 0.5})
    assert w.as_dict() == {"safety": 0.5, "helpfulness": 0.0, "humor": 0.0, "brevity": 0.5}
    assert w["brevity"] == 0.5


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([0.5, 0.5, float("nan"), 0.0], r"finite.*humor"),
        ([0.5, 0.7, -0.2, 0.0], r"non-negative.*humor"),
        ([0.5, 0.5], r"one entry per trait \(4"),
        ([0.5, 0.5, 0.5, 0.5], r"sum to 1; got sum 2"),
        ([float("inf"), 0, 0, 0], "finite"),
    ],
)
def test_weight_vector_rejects(values: list[float], match: str) -> None:
    with pytest.raises(InvalidWeightsError, match=match):
        WeightVector(SPACE, values)


def test_unknown_trait_named_in_error() -> None:
    with pytest.raises(InvalidWeightsError, match=r"unknown trait 'wit'.*safety"):
        WeightVector.from_mapping(SPACE, {"wit": 1.0})
    with pytest.raises(InvalidWeightsError, match=r"weights\['safety'\] must be a number"):
        WeightVector.from_mapping(SPACE, {"safety": "high"})  # type: ignore[dict-item]


@given(st.lists(st.floats(0, 1), min_size=4, max_size=4).filter(lambda v: sum(v) > 1e-3))
def test_normalized_vectors_are_on_simplex(v: list[float]) -> None:
    arr = np.array(v) / sum(v)
    w = WeightVector(SPACE, arr)
    assert math.isclose(float(w.values.sum()), 1.0, abs_tol=1e-12)
    assert (w.values >= 0).all()
    assert not w.values.flags.writeable
    assert w == WeightVector(SPACE, arr) and hash(w) == hash(WeightVector(SPACE, arr))
