"""Keyword matching over the views of a message: raw, normalized, decoded, and near misspellings.

A topic's keywords (whole words, case-insensitive, ``stem*`` matches a prefix) are matched:

- on the raw text, exactly as written (so what matched before normalization still matches);
- on every normalized view (:func:`palm_middleware.guard.normalize.text_views`), with the keywords
  normalized the same way (``self-harm`` -> ``selfharm``, ``I'm 15`` -> ``im 15``);
- on rot13 and reversed views: all keywords when the view reads like language (a decoding),
  else keywords of at least 5 letters only (short words turn up there by chance);
- inside runs of single letters (``i m a k e a b o m b`` -> ``imakeabomb``) as substrings, for
  keywords of at least 4 letters, and, when a message has such runs, in the whole message
  without spaces for keywords of at least 6 letters (``p o i n t in l i v i n g``);
- with one edit (insert, delete, substitute, swap) in words of at least 6 letters
  (``sucide``, ``cuttnig myeslf``): such words are corrected to the keyword word through a
  deletion-neighbourhood index (no pairwise distances) and the keywords matched again.

Keywords in scripts written without spaces (Chinese, Japanese, Thai...) match anywhere in the
text: word boundaries do not exist there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .normalize import TextViews, normalize

__all__ = ["KeywordMatcher", "keyword_pattern", "normalized_keywords"]

_NO_SPACES = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0e7f\uac00-\ud7af]"
)
_TOKEN = re.compile(r"[^\W\d_]+")
#: Shortest keyword matched in rot13/reversed views, in letter runs, and with one typo.
MIN_TRANSFORMED, MIN_RUN, MIN_FUZZY = 5, 4, 6
#: Shortest keyword (letters only) searched in the whole squashed text of a spaced-out message.
MIN_SQUASHED = 6


def _trie_regex(words: Sequence[str]) -> str:
    """One alternation for ``words``, factored as a trie so the regex engine tries each prefix
    once (a flat ``a|b|c...`` of 60 keywords costs ~10x more per position).

    A space in a keyword matches any whitespace run; ``*`` at the end matches the rest of a word.
    """
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = True

    def emit(node: dict[str, Any]) -> str:
        alts, end = [], False
        # Literal continuations before a prefix star, so the longest keyword is tried first.
        for ch in sorted(node, key=lambda c: (c == "*", c)):
            if ch == "":
                end = True
                continue
            piece = r"\s+" if ch == " " else r"\w*" if ch == "*" else re.escape(ch)
            alts.append(piece + emit(node[ch]))
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return "(?:" + body + ")?" if end else body

    return emit(trie)


def keyword_pattern(words: Sequence[str]) -> re.Pattern[str] | None:
    """One regex matching any of ``words`` (whole words, longest first), or None for no words."""
    clean = sorted({w.strip().casefold() for w in words if w.strip()})
    # A prefix star only makes sense at the end; elsewhere it is a literal.
    clean = [
        w[:-1].replace("*", "") + "*" if w.endswith("*") else w.replace("*", "") for w in clean
    ]
    if not clean:
        return None
    spaced = [w for w in clean if not _NO_SPACES.search(w)]
    unspaced = [w for w in clean if _NO_SPACES.search(w)]
    parts = []
    if spaced:
        parts.append(r"(?<!\w)(?:" + _trie_regex(spaced) + r")(?!\w)")
    if unspaced:
        parts.append("(?:" + _trie_regex(unspaced) + ")")
    return re.compile("|".join(parts), re.IGNORECASE)


def normalized_keywords(words: Sequence[str]) -> list[str]:
    """``words`` normalized as the views are (``self-harm`` -> ``selfharm``), stars kept."""
    return _normalized(words)


def _normalized(words: Sequence[str]) -> list[str]:
    out = []
    for w in words:
        star = w.strip().endswith("*")
        n = normalize(w.strip().rstrip("*"))
        if n:
            out.append(n + ("*" if star else ""))
    return out


def _mask(pattern: re.Pattern[str] | None, text: str) -> str:
    return pattern.sub(" ", text) if pattern is not None else text


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


class KeywordMatcher:
    """Matches one topic's keywords against :class:`TextViews` (see the module docstring).

    With ``prefilter=True`` a near-miss of a keyword word counts as a match without the
    re-check: a matcher over every topic's keywords (no ``ignore``) then finds a superset of
    what the per-topic matchers find, so a message it rejects needs no other pass.

    Example:
        >>> from palm_middleware.guard.normalize import text_views
        >>> m = KeywordMatcher(["suicide", "kill myself", "bomb*"])
        >>> [m.search(text_views(t)) for t in ["k1ll mys3lf", "sucide", "b o m b", "bombay"]]
        ['kill myself', 'sucide', 'bomb', 'bombay']
    """

    def __init__(
        self, keywords: Sequence[str], *, ignore: Sequence[str] = (), prefilter: bool = False
    ) -> None:
        self.prefilter = prefilter
        words = [w for w in keywords if w.strip()]
        self.raw = keyword_pattern(words)
        normed = _normalized(words)
        self.normalized = keyword_pattern(normed)
        self.ignore_raw = keyword_pattern([w for w in ignore if w.strip()])
        self.ignore_normalized = keyword_pattern(_normalized(ignore))
        self.long = keyword_pattern(
            [w for w in normed if len(re.sub(r"\W", "", w)) >= MIN_TRANSFORMED]
        )
        self.squashed = tuple(
            sorted({s for w in normed if len(s := re.sub(r"[\W\d_]", "", w)) >= MIN_RUN})
        )
        self.squashed_long = tuple(s for s in self.squashed if len(s) >= MIN_SQUASHED)
        # Words of whole-word keywords and phrases: a typo-tolerant prefix ("overdos*") would
        # also take "overdoes".
        index: dict[str, str] = {}
        for w in normed:
            if w.endswith("*"):
                continue
            for part in w.split():
                if len(part) >= MIN_FUZZY and part.isalpha():
                    index.setdefault(part, part)
                    for d in _deletes(part):
                        index.setdefault(d, part)
        self._fuzzy = index

    def search(self, views: TextViews) -> str | None:
        """The first keyword found in ``views`` (as matched), or None.

        Phrases of ``ignore`` are blanked out of each view first (``glue gun`` hides ``gun``
        there, not elsewhere in the message).
        """
        raw = _mask(self.ignore_raw, views.raw)
        if self.raw is not None and (m := self.raw.search(raw)):
            return m.group(0)
        if self.normalized is None:
            return None
        # rot13/reversed views that read like language are decodings; others are noise.
        noise = set(views.transformed).difference(views.semantic)
        for text in views.all:
            pat = self.long if text in noise else self.normalized
            if pat is not None and (m := pat.search(_mask(self.ignore_normalized, text))):
                return m.group(0)
        for run in views.runs:
            for s in self.squashed:
                if s in run:
                    return s
        if views.squashed:
            for s in self.squashed_long:
                if s in views.squashed:
                    return s
        if self._fuzzy:
            return self._fuzzy_search(_mask(self.ignore_normalized, views.normalized))
        return None

    def _near(self, text: str) -> str | None:
        """A word one edit away from a keyword word (prefilter: the caller matches again)."""
        index = self._fuzzy
        for m in _TOKEN.finditer(text):
            tok = m.group(0)
            if len(tok) >= MIN_FUZZY - 1 and index.get(tok) != tok:
                if tok in index or any(d in index for d in _deletes(tok)):
                    return tok
        return None

    def _fuzzy_search(self, text: str) -> str | None:
        """Correct words one edit away from a keyword word, then match the keywords again."""
        if self.prefilter:
            return self._near(text)
        index = self._fuzzy
        changed = False

        def fix(m: re.Match[str]) -> str:
            nonlocal changed
            tok = m.group(0)
            if len(tok) < MIN_FUZZY - 1 or index.get(tok) == tok:
                return tok
            hit = index.get(tok) or next((index[d] for d in _deletes(tok) if d in index), None)
            if hit is None or abs(len(hit) - len(tok)) > 1:
                return tok
            changed = True
            return hit

        fixed = _TOKEN.sub(fix, text)
        if changed and self.normalized is not None and (m := self.normalized.search(fixed)):
            return m.group(0)
        return None
