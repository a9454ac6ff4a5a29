"""Which language a message is in, offline, so a policy can say which languages its guard covers.

The guard's keyword lists and classifier are written for a few languages (``policies/
assistant.yaml``: en, fr, es, de, zh, ru). A request in another language would pass a guard that
cannot read it; a policy's ``languages:`` field names what it guards and ``unguarded_language:``
says what happens to the rest (see :mod:`palm_middleware.policy.models`).

The detector is py3langid (a naive Bayes model over byte n-grams, 97 languages, shipped inside
its wheel; numpy only; ~0.2 ms per message). Short texts are ambiguous ("ok", "merci", "ls -la"
score a random language), so the rule is:

- a text with fewer than :data:`MIN_LETTERS` letters (CJK characters count three: one carries
  a word) has no language;
- a text whose best language has a probability below :data:`MIN_CONFIDENCE` has no language;
- ``zxx`` (no linguistic content: a base64 or hex blob, judged by what it decodes to) is no
  language;
- a text with no language is treated as in a guarded language: it is served under every rule
  of the policy, as before ``languages:`` existed (refusing "ok" would be absurd, and such
  short texts carry little a guard could miss).

Regional variants are folded into the language a policy names (``wuu``, ``yue`` -> ``zh``;
``nn``, ``nb`` -> ``no``). The text detected is the guard's semantic view
(:func:`palm_middleware.guard.normalize.text_views`): a base64 payload is judged by what it
decodes to, leetspeak by its letters.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigError

__all__ = [
    "MIN_CONFIDENCE",
    "MIN_LETTERS",
    "Detected",
    "detect",
    "known_languages",
    "pick_language",
    "request_language",
]

#: Texts with fewer letters than this have no language (see the module docstring).
MIN_LETTERS = 20
#: The best language must have at least this probability, else the text has no language.
MIN_CONFIDENCE = 0.5
#: Regional or script variants the model tells apart, folded into the language a policy names
#: (``pcm``, Nigerian Pidgin, is what it often says for short or informal English).
ALIASES = {"wuu": "zh", "yue": "zh", "nn": "no", "nb": "no", "srl": "sr", "pcm": "en"}

#: Labels that are no language (``zxx``: no linguistic content, e.g. a base64 blob; the blob
#: is judged by what it decodes to).
NOT_LANGUAGES = frozenset({"zxx", "und"})

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_LETTER = re.compile(r"[^\W\d_]")
_lock = threading.Lock()
_ident: Any = None


def _identifier() -> Any:
    """The py3langid model, loaded once per process (about a second; lazily, at policy load)."""
    global _ident
    with _lock:
        if _ident is None:
            try:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier
            except ImportError as exc:  # pragma: no cover - a core dependency
                raise ConfigError(
                    "'languages:' needs the language detector py3langid "
                    "(pip install py3langid==0.4.0)"
                ) from exc
            _ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _ident


def known_languages() -> frozenset[str]:
    """The ISO 639 codes the detector knows (what ``languages:`` may list)."""
    labels = _identifier().labels
    return frozenset(ALIASES.get(c, c) for c in labels) | frozenset(ALIASES.values())


@dataclass(frozen=True)
class Detected:
    """A text's language: ``lang`` is None when the text is too short or the model unsure."""

    lang: str | None
    confidence: float


def _letters(text: str) -> int:
    return len(_LETTER.findall(text)) + 2 * len(_CJK.findall(text))


def detect(text: str) -> Detected:
    """The language of ``text`` by the rule of the module docstring.

    Example:
        >>> detect("Comment puis-je apprendre à jouer de la guitare ?").lang
        'fr'
        >>> detect("merci").lang is None
        True
    """
    if _letters(text) < MIN_LETTERS:
        return Detected(None, 0.0)
    lang, p = _identifier().classify(text)
    lang = ALIASES.get(lang, lang)
    if p < MIN_CONFIDENCE or lang in NOT_LANGUAGES:
        return Detected(None, round(float(p), 4))
    return Detected(lang, round(float(p), 4))


def pick_language(
    detected: Iterable[tuple[int, str | None]], guarded: frozenset[str] | None
) -> str | None:
    """The language of a request from ``(text length, language)`` of each of its texts.

    The first language outside ``guarded``, so an unguarded text is never hidden by a guarded
    one; else the language of the longest text that has one; None when no text has one.
    """
    best: tuple[int, str] | None = None
    for n, lang in detected:
        if lang is None:
            continue
        if guarded is not None and lang not in guarded:
            return lang
        if best is None or n > best[0]:
            best = (n, lang)
    return best[1] if best is not None else None


def request_language(texts: Iterable[str], guarded: frozenset[str] | None) -> str | None:
    """:func:`pick_language` of ``texts`` as they are (the pipeline passes their semantic views)."""
    return pick_language(((len(t), detect(t).lang) for t in texts), guarded)
