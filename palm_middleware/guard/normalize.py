"""Views of a message that undo common obfuscations, so guard rules match what a reader sees.

A guard that matches only the raw text is beaten by ``k1ll mys3lf``, ``s u i c i d e``, a
zero-width space, a Cyrillic ``о`` or a base64 payload. :func:`text_views` returns the raw text
plus normalized forms; keywords are matched against all of them and the learned classifier
embeds the one that reads most like plain language (:attr:`TextViews.semantic`).

Normalization, in order: NFKC (fullwidth and compatibility forms), removal of format characters
(zero-width, bidi controls, soft hyphen: Unicode category Cf), case-folding, folding of
confusables to ASCII letters (Unicode's confusables table via the ``confusable-homoglyphs``
package, applied to words that already contain an ASCII letter or consist only of look-alikes,
so Cyrillic or Greek words stay as written), leetspeak folding inside words that mix letters and
digits/symbols (``k1ll`` -> ``kill``; standalone numbers stay), removal of punctuation between
letters (``sui-cide``, ``s.u.i.c.i.d.e``) and rejoining runs of single letters (``s u i c i d e``).
Payloads: base64 and hex spans that decode to readable UTF-8 text, the rot13 of the message and
the message reversed are views too; each is normalized the same way.

Everything here is pure string work (no model): a message of a few hundred characters takes
tens of microseconds.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
import threading
import unicodedata
from dataclasses import dataclass
from importlib.resources import files

__all__ = [
    "TextViews",
    "decoded_payloads",
    "fold_confusables",
    "letter_runs",
    "normalize",
    "text_views",
]

_fold_lock = threading.Lock()
_fold_table: dict[int, str] | None = None

#: Leetspeak digits and symbols -> letters, applied only inside words that also hold letters.
#: ``1`` is ambiguous (i or l): the main view reads it as ``i``, a second view as ``l``.
_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
         "@": "a", "$": "s", "!": "i", "|": "l"}  # fmt: skip
_LEET_L = {**_LEET, "1": "l", "!": "l"}
_LEET_CHARS = re.escape("".join(_LEET))
# A "word" for leet folding: letters mixed with leet characters, at least one letter.
_LEET_WORD = re.compile(rf"(?<![\w{_LEET_CHARS}])[\w{_LEET_CHARS}]+(?![\w{_LEET_CHARS}])")
_HAS_ALPHA = re.compile(r"[^\W\d_]")
_UNIT = re.compile(r"^\d+[^\W\d_]+$")
_VERSION = re.compile(r"^[^\W\d_]{3,}\d+[^\W\d_]?$|^[^\W\d_]+\d{2,}[^\W\d_]?$")
# Punctuation (not spaces) between two letters: sui-cide, s.u.i.c.i.d.e, s*u*i*c*i*d*e.
_INNER_PUNCT = re.compile(r"(?<=[^\W\d_])[^\w\s]+(?=[^\W\d_])")
# Three or more single letters separated by spaces or punctuation: "s u i c i d e".
_LETTER_RUN = re.compile(r"(?<!\w)(?:[^\W\d_][^\w]{1,3}){2,}[^\W\d_](?!\w)")
_SPACES = re.compile(r"\s+")
_B64 = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}[\s:]?){6,}")
_WORD = re.compile(r"[a-z]+")
# Very common English words: a view full of them is plain language (used to pick what to embed).
_COMMON = frozenset(
    "a an the to of and or in on at for with from by is are was be been am i me my you your "
    "he she it we they them his her their this that what how why when where who which can could "
    "do does did will would should not no yes if so but all any get make have has had want "
    "know there here some way need help just like about".split()
)


def _load_fold_table() -> dict[int, str]:
    """Unicode confusables that look like one ASCII letter or digit, as a ``str.translate`` map."""
    global _fold_table
    with _fold_lock:
        if _fold_table is None:
            try:
                data = json.loads(
                    files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
                )
            except ModuleNotFoundError:  # optional at import time; the guard says so in bench
                data = {}
            table: dict[int, str] = {}
            for ch, glyphs in data.items():
                if len(ch) != 1 or ch.isascii():
                    continue
                targets = [g["c"] for g in glyphs if len(g["c"]) == 1 and g["c"].isascii()]
                letters = [t for t in targets if t.isalnum()]
                if letters:
                    # Prefer a lower-case letter, then any letter, then a digit.
                    letters.sort(key=lambda t: (not t.islower(), not t.isalpha(), t))
                    table[ord(ch)] = letters[0].lower()
            _fold_table = table
        return _fold_table


def fold_confusables(word: str) -> str:
    """``word`` with look-alikes replaced by ASCII, if it is partly Latin or all look-alikes.

    Example:
        >>> fold_confusables("b\u043emb")  # Cyrillic o
        'bomb'
        >>> fold_confusables("\u0431\u043e\u043c\u0431\u0430")  # a Russian word stays Russian
        'бомба'
    """
    if word.isascii():
        return word
    table = _load_fold_table()
    folded = word.translate(table)
    if any("a" <= c <= "z" for c in word) or folded.isascii():
        return folded
    return word


def _fold_words(text: str) -> str:
    if text.isascii():
        return text
    return re.sub(r"\S+", lambda m: fold_confusables(m.group(0)), text)


def _plain_number(w: str) -> bool:
    """Numbers with units or versions ("10mg", "2nd", "covid19", "mp3s") are not leetspeak."""
    digits = sum(c.isdigit() for c in w)
    letters = sum(c.isalpha() for c in w)
    return digits > letters or bool(_UNIT.match(w) or _VERSION.match(w))


def _leet(text: str, table: dict[str, str], aggressive: bool = False) -> str:
    def fold(m: re.Match[str]) -> str:
        w = m.group(0)
        if aggressive and w == "1":
            return "i"
        if w.isalpha() or not _HAS_ALPHA.search(w) or (not aggressive and _plain_number(w)):
            return w
        last = len(w) - 1
        return "".join(
            table.get(c, c) if c.isdigit() or 0 < i < last else c for i, c in enumerate(w)
        )

    return _LEET_WORD.sub(fold, text)


def _leety(text: str) -> bool:
    """Several words that mix letters with digits or symbols: the text is written in leetspeak."""
    mixed = [
        w
        for w in _LEET_WORD.findall(text)
        if not w.isalpha() and _HAS_ALPHA.search(w) and not _plain_number(w)
    ]
    heavy = [w for w in _LEET_WORD.findall(text) if _HAS_ALPHA.search(w) and _plain_number(w)]
    return len(mixed) + len(heavy) >= 2 and len(mixed) >= 1


def _rejoin(text: str) -> str:
    return _LETTER_RUN.sub(lambda m: re.sub(r"\W+", "", m.group(0)), text)


def _steps(text: str, leet: dict[str, str], aggressive: bool = False) -> tuple[str, str]:
    """(text before rejoining single-letter runs, fully normalized text)."""
    t = unicodedata.normalize("NFKC", text)
    if not t.isascii():
        t = "".join(c for c in t if unicodedata.category(c) != "Cf")
    t = _fold_words(t.casefold())
    t = _leet(t, leet, aggressive)
    t = _INNER_PUNCT.sub("", t)
    return t, _SPACES.sub(" ", _rejoin(t)).strip()


def normalize(text: str, *, leet: dict[str, str] | None = None) -> str:
    """The normalized form of ``text`` (see the module docstring for the steps).

    Example:
        >>> normalize("K1LL  mys3lf")
        'kill myself'
        >>> normalize("s u i c i d e and sui-cide")
        'suicide and suicide'
    """
    return _steps(text, _LEET if leet is None else leet)[1]


def letter_runs(text: str) -> list[str]:
    """Runs of three or more single letters in normalized ``text``, joined (``"imakeabomb"``)."""
    return [re.sub(r"\W+", "", m.group(0)) for m in _LETTER_RUN.finditer(text)]


def _readable(raw: bytes) -> str | None:
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(s) < 4:
        return None
    ok = sum(c.isprintable() or c.isspace() for c in s)
    letters = sum(c.isalpha() for c in s)
    return s if ok / len(s) >= 0.95 and letters / len(s) >= 0.5 else None


def decoded_payloads(text: str) -> list[str]:
    """Texts that base64 or hex spans of ``text`` decode to (readable UTF-8 only)."""
    out: list[str] = []
    for m in _B64.finditer(text):
        span = m.group(0)
        if span.isalpha() and (span.islower() or span.isupper()):
            continue  # a plain long word, not a payload
        body = span.rstrip("=")
        padded = body + "=" * (-len(body) % 4)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                s = _readable(decode(padded))
            except (binascii.Error, ValueError):
                s = None
            if s is not None:
                out.append(s)
                break
    for m in _HEX.finditer(text):
        digits = re.sub(r"[\s:]", "", m.group(0))
        if len(digits) % 2:
            digits = digits[:-1]
        try:
            s = _readable(bytes.fromhex(digits))
        except ValueError:
            s = None
        if s is not None:
            out.append(s)
    return out


def _common_ratio(text: str) -> float:
    words = _WORD.findall(text)
    if not words:
        return 0.0
    return sum(w in _COMMON for w in words) / len(words)


@dataclass(frozen=True)
class TextViews:
    """The raw text and its de-obfuscated views.

    Attributes:
        raw: The text as sent.
        normalized: :func:`normalize` of the raw text.
        variants: Further normalized views: ``1`` read as ``l``, decoded payloads, rot13, reversed
            text (deduplicated; never equal to ``normalized``).
        transformed: The subset of ``variants`` that come from rot13 or reversal (matched only
            with longer keywords, unless it reads like language and is in ``semantic``: short
            words appear in them by chance).
        runs: Runs of single letters, joined (``"imakeabomb"``): searched for keywords as
            substrings, since the word boundaries are gone.
        squashed: When there are runs, the whole normalized text without spaces, punctuation
            or digits (``"s e e the p o i n t in l i v i n g"`` -> ``"seethepointinliving"``);
            else empty.
        semantic: The texts worth embedding: the raw text, or the normalized one when
            normalization changed its words, plus any decoded payload or transformed view that
            reads like plain language while the raw text does not.
    """

    raw: str
    normalized: str
    variants: tuple[str, ...]
    transformed: tuple[str, ...]
    runs: tuple[str, ...]
    squashed: str
    semantic: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        """``normalized`` and every variant."""
        return (self.normalized, *self.variants)


def text_views(text: str) -> TextViews:
    """Every view of ``text`` the guard matches (see :class:`TextViews`).

    Example:
        >>> v = text_views("how to commit edicius")
        >>> [s for s in v.all if "suicide" in s]
        ['suicide timmoc ot woh', 'woh ot timmoc suicide']
    """
    pre, norm = _steps(text, _LEET)
    norm_sem = norm  # the normalized view to embed (fully de-leeted when the text is leetspeak)
    runs = letter_runs(pre)
    variants: list[str] = []
    transformed: list[str] = []
    seen = {norm}

    def add(s: str, into: list[str] | None = None) -> str | None:
        p, n = _steps(s, _LEET)
        runs.extend(letter_runs(p))
        if n and n not in seen:
            seen.add(n)
            variants.append(n)
            if into is not None:
                into.append(n)
            return n
        return None

    for table, aggressive in ((_LEET_L, False), (_LEET, True), (_LEET_L, True)):
        if aggressive and not _leety(text):
            break
        n = _steps(text, table, aggressive)[1]
        if n not in seen:
            seen.add(n)
            variants.append(n)
            if aggressive and table is _LEET:
                norm_sem = n
    payloads = [p for p in (add(d) for d in decoded_payloads(text)) if p is not None]
    rot = add(codecs.encode(text, "rot13"), transformed)
    rev = add(text[::-1], transformed)
    words_rev = add(" ".join(w[::-1] for w in text.split()), transformed)
    semantic = [norm_sem if _obfuscated(text, norm_sem) else text]
    semantic.extend(payloads[:2])  # decoded payloads are rare and always worth a look
    base = _common_ratio(norm)
    if base < 0.3:
        best = max(
            (s for s in (rot, rev, words_rev) if s is not None), key=_common_ratio, default=None
        )
        if best is not None and _common_ratio(best) >= max(0.3, base + 0.2):
            semantic.append(best)
    squashed = re.sub(r"[\W\d_]+", "", norm) if runs else ""
    return TextViews(
        text, norm, tuple(variants), tuple(transformed), tuple(dict.fromkeys(runs)),
        squashed, tuple(semantic),
    )  # fmt: skip


def _obfuscated(raw: str, norm: str) -> bool:
    """Did normalization change more than case, spacing and apostrophes?

    Compatibility forms (fullwidth), dots or hyphens inside words and look-alikes all count:
    the embedder reads the raw form of those badly.
    """
    light = _SPACES.sub(" ", raw.casefold().replace("'", "").replace("’", "")).strip()
    return light != norm
