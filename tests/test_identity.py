"""Whose profile a request may use: user keys act for themselves, app keys for their end users."""

from __future__ import annotations

import pytest

from palm_middleware.exceptions import IdentityError
from palm_middleware.identity import MAX_USER_ID_LENGTH, Principal, resolve_user


def test_user_key_acts_for_itself() -> None:
    assert resolve_user(Principal("alice"), None) == "alice"
    assert resolve_user(Principal("alice"), "") == "alice"
    assert resolve_user(Principal("alice"), "alice") == "alice"


def test_user_key_cannot_name_another_user() -> None:
    with pytest.raises(IdentityError, match="cannot act for another"):
        resolve_user(Principal("alice"), "bob")


def test_app_key_is_namespaced() -> None:
    app = Principal("webapp", acts_for_end_users=True)
    assert resolve_user(app, "u1") == "webapp/u1"
    # An app's end user never lands on a personal key's profile.
    assert resolve_user(app, "alice") != resolve_user(Principal("alice"), None)


def test_app_key_must_name_an_end_user() -> None:
    with pytest.raises(IdentityError, match="name the end user"):
        resolve_user(Principal("webapp", acts_for_end_users=True), None)


@pytest.mark.parametrize("bad", ["", "x" * (MAX_USER_ID_LENGTH + 1)])
def test_bad_ids_refused(bad: str) -> None:
    with pytest.raises(IdentityError):
        resolve_user(Principal(bad), None)
    with pytest.raises(IdentityError):
        resolve_user(Principal("app", acts_for_end_users=True), bad or 5)  # type: ignore[arg-type]


def test_principals_cannot_impersonate_an_apps_end_user() -> None:
    import pytest

    from palm_middleware import IdentityError
    from palm_middleware.identity import Principal, resolve_user

    assert resolve_user(Principal("webapp", acts_for_end_users=True), "u42") == "webapp/u42"
    with pytest.raises(IdentityError, match="must not contain '/'"):
        resolve_user(Principal("webapp/u42"), None)
