"""Who a request speaks for: the user id that :class:`~palm_middleware.pipeline.Palm` is given.

Adapters authenticate the caller (an API key, a session) and describe it as a
:class:`Principal`. :func:`resolve_user` then decides whose profile a request may use:

* a **user principal** (a key issued to one person) always acts for itself; a request that names
  someone else (the OpenAI ``user`` field, a ``user`` query parameter) is refused;
* an **app principal** (the backend of an app that logs its own users in) acts for its end users:
  the id it asserts is taken, namespaced as ``"<app>/<end user>"`` so that two apps, or an app and
  a personal key, never share a profile.

Example:
    >>> resolve_user(Principal("alice"), None)
    'alice'
    >>> resolve_user(Principal("webapp", acts_for_end_users=True), "u42")
    'webapp/u42'
"""

from __future__ import annotations

from dataclasses import dataclass

from .exceptions import IdentityError
from .types import UserId

__all__ = ["MAX_USER_ID_LENGTH", "Principal", "resolve_user"]

#: Longest accepted user id (asserted or authenticated), in characters.
MAX_USER_ID_LENGTH = 256


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        id: the caller's id as the authentication established it (a person or an app).
        acts_for_end_users: True for an app backend trusted to name its own end users.
    """

    id: str
    acts_for_end_users: bool = False


def resolve_user(principal: Principal, asserted: str | None) -> UserId:
    """The user id a request of ``principal`` acts for.

    Args:
        principal: the authenticated caller.
        asserted: the end-user id the request names (None or empty: none named).

    Raises:
        IdentityError: a user principal names another user; an app principal names no end
            user; an id is not a non-empty string of at most :data:`MAX_USER_ID_LENGTH`
            characters; the authenticated id contains ``/``.
    """
    _check_id(principal.id, "authenticated id")
    if "/" in principal.id:
        # "/" separates an app from its end users: a principal containing it could collide
        # with an app's end user ("webapp/u42"), so it is refused outright.
        raise IdentityError("an authenticated user or app id must not contain '/'")
    if asserted is not None and not isinstance(asserted, str):
        raise IdentityError(f"the end-user id must be a string; got {type(asserted).__name__}")
    if principal.acts_for_end_users:
        if not asserted:
            raise IdentityError(
                f"key of app {principal.id!r} acts for end users: name the end user in the "
                "request's `user` field"
            )
        _check_id(asserted, "end-user id")
        return f"{principal.id}/{asserted}"
    if asserted and asserted != principal.id:
        raise IdentityError(
            "this key belongs to one user and cannot act for another; drop the `user` field "
            "or use an app key"
        )
    return principal.id


def _check_id(value: str, what: str) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_USER_ID_LENGTH:
        raise IdentityError(
            f"{what} must be a non-empty string of at most {MAX_USER_ID_LENGTH} characters"
        )
