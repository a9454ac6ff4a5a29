"""Redaction of personal data from text before it is stored (``privacy.redact``)."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["PATTERNS", "redact"]

#: Pattern per redaction kind; matches are replaced by ``[kind]``. Order matters: the more
#: specific patterns (IBAN, card, email) run before the looser phone pattern.
PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    "url": re.compile(r"\bhttps?://\S+", re.IGNORECASE),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b"),
    "credit_card": re.compile(r"\b(?:\d[ -]?){13,19}\b"),
    "ip": re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b"),
    "phone": re.compile(r"(?<![\w])\+?\d[\d ()./-]{6,}\d(?![\w])"),
    "handle": re.compile(r"(?<![\w@])@\w{2,}"),
}
_ORDER = ("email", "url", "iban", "credit_card", "ip", "phone", "handle")


def redact(text: str, kinds: Iterable[str]) -> str:
    """Replace every match of the selected kinds by ``[kind]``.

    >>> redact("mail bob@example.org or call +44 20 7946 0958", ["email", "phone"])
    'mail [email] or call [phone]'
    """
    wanted = set(kinds)
    for kind in _ORDER:
        if kind in wanted:
            text = PATTERNS[kind].sub(f"[{kind}]", text)
    return text
