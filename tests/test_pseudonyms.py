"""Pseudonymizer: keyed, stable, and refusing anything but a non-empty string."""

from __future__ import annotations

import pytest

from palm_middleware.exceptions import IdentityError
from palm_middleware.pseudonyms import Pseudonymizer


def test_keys_are_stable_per_salt_and_differ_across_salts() -> None:
    a, b = Pseudonymizer("s1"), Pseudonymizer(b"s1")
    assert a.key("alice") == b.key("alice") != Pseudonymizer("s2").key("alice")
    assert a.key("alice") != a.key("bob")
    assert len(a.key("alice")) == 32 and "alice" not in a.key("alice")


@pytest.mark.parametrize("bad", ["", None, 7, b"alice"])
def test_a_user_id_must_be_a_non_empty_string(bad: object) -> None:
    with pytest.raises(IdentityError, match="non-empty string"):
        Pseudonymizer("s").key(bad)  # type: ignore[arg-type]
