"""An on-disk cache of generated replies, so re-running ``palm eval`` is instant.

Keys hash (member configuration, prompt text, generation parameters); the member configuration
includes its backend and the size and modification time of every file in its model folder and
of its adapter, so a re-exported model, an edited chat template or a changed system prompt
misses the cache.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...engines.base import GenerationParams
from ...exceptions import ConfigError, ConfigIssue

__all__ = ["ReplyCache", "member_fingerprint", "reply_key"]


def _file_stamp(path: Path) -> list[Any]:
    if path.is_file():
        files = [path]
    else:  # a model folder: weights, tokenizer, chat template, generation config
        files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else []
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def member_fingerprint(backend: Mapping[str, Any], files: list[Path]) -> str:
    """A hash of a member's backend configuration and the files it runs."""
    blob = json.dumps(
        {"backend": backend, "files": [_file_stamp(f) for f in files]}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def reply_key(member: str, prompt: str, params: GenerationParams) -> str:
    """The cache key of one reply."""
    blob = json.dumps([member, prompt, asdict(params)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ReplyCache:
    """Replies by key in an SQLite file (created with its folder on first use).

    Attributes:
        n_hits: Lookups answered from the cache.
        n_misses: Lookups that were not.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, "
                "text TEXT NOT NULL, finish TEXT NOT NULL, n_tokens INTEGER)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                ConfigIssue(
                    f"cannot open the reply cache: {exc}; pass another "
                    "--cache folder or --no-cache",
                    file=str(self.path),
                )
            ) from exc
        self.n_hits = 0
        self.n_misses = 0

    def get(self, key: str) -> tuple[str, str, int] | None:
        """(text, finish_reason, completion tokens) of ``key``, or ``None``."""
        row = self._db.execute(
            "SELECT text, finish, n_tokens FROM replies WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            self.n_misses += 1
            return None
        self.n_hits += 1
        return (str(row[0]), str(row[1]), int(row[2]))

    def put(self, key: str, text: str, finish: str, n_tokens: int) -> None:
        """Store one reply (committed at once: an interrupted run keeps what it generated)."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)", (key, text, finish, n_tokens)
            )

    def close(self) -> None:
        """Close the database."""
        self._db.close()
