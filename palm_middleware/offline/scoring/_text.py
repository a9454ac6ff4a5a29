"""Text helpers shared by the lexical scorers: words, sentences, token counts."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...exceptions import ConfigError, ConfigIssue

__all__ = ["TokenCounter", "words"]

_WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*|\d+(?:[.,]\d+)*")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` (apostrophes kept inside words: ``don't``)."""
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


@lru_cache(maxsize=8)
def _load_tokenizer(path: str) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(path)
    except Exception as exc:  # tokenizers raises a bare Exception on unreadable files
        raise ConfigError(
            ConfigIssue(
                f"cannot load tokenizer: {exc}; give a Hugging Face tokenizer.json or 'whitespace'",
                file=path,
            )
        ) from exc


class TokenCounter:
    """Counts tokens with a ``tokenizer.json`` (the member's own tokenizer) or by whitespace.

    Args:
        tokenizer: ``"whitespace"`` or the path of a Hugging Face ``tokenizer.json``.
    """

    def __init__(self, tokenizer: str = "whitespace") -> None:
        self.tokenizer = str(tokenizer)
        if self.tokenizer != "whitespace":
            p = Path(self.tokenizer)
            if not p.is_file():
                raise ConfigError(
                    ConfigIssue(
                        "tokenizer file not found; give the path of a tokenizer.json or "
                        "'whitespace'",
                        file=str(p),
                    )
                )
            _load_tokenizer(str(p.resolve()))

    def __call__(self, text: str) -> int:
        """Number of tokens of ``text``."""
        if self.tokenizer == "whitespace":
            return len(text.split())
        tok = _load_tokenizer(str(Path(self.tokenizer).resolve()))
        return len(tok.encode(text, add_special_tokens=False).ids)
