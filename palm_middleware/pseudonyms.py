"""Pseudonymous user keys: a keyed hash of the authenticated user id, never the id itself."""

from __future__ import annotations

import hashlib
import hmac

from .exceptions import IdentityError
from .types import UserId

__all__ = ["Pseudonymizer"]


class Pseudonymizer:
    """Maps user ids to the keys under which their data is stored.

    Args:
        salt: the key of the HMAC (by default ``Palm`` uses the store's own persistent salt, so
            the same user gets the same key after a restart and no other store can link it).
    """

    def __init__(self, salt: str | bytes) -> None:
        self._salt = salt.encode() if isinstance(salt, str) else bytes(salt)

    def key(self, user: UserId) -> str:
        """The pseudonymous key of ``user`` (32 hex digits of HMAC-SHA256).

        Raises:
            IdentityError: ``user`` is not a non-empty string.
        """
        if not isinstance(user, str) or not user:
            raise IdentityError("a user id must be a non-empty string from authentication")
        return hmac.new(self._salt, user.encode(), hashlib.sha256).hexdigest()[:32]
