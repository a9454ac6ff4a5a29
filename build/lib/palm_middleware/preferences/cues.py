"""Cues in a user's own words ("shorter please", "no jokes") that say which way a trait should move.

Only the cue id is ever stored, never the text it was found in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._yaml import LocatedYAML, issues_from_pydantic, load_yaml_file, load_yaml_text
from ..exceptions import ConfigError, ConfigIssue
from ..traits import TraitSpace

__all__ = ["Cue", "CueLexicon"]

#: Longest message text scanned for cues (beyond this only the head is read).
MAX_SCAN_CHARS = 4000


class _CueModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    trait: str
    direction: Literal["up", "down"]
    patterns: list[str] = Field(min_length=1)
    strength: float = Field(default=1.0, gt=0, le=10)


class _LexiconModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1] = 1
    cues: list[_CueModel]


@dataclass(frozen=True)
class Cue:
    """One entry of the lexicon: phrases that move ``trait`` up (+1) or down (−1)."""

    id: str
    trait: str
    direction: Literal[-1, 1]
    strength: float
    regex: re.Pattern[str]


class CueLexicon:
    """Phrase patterns (case-insensitive regular expressions, matched on word boundaries)."""

    def __init__(self, cues: Sequence[Cue]) -> None:
        self.cues = tuple(cues)

    @classmethod
    def load(cls, path: str | Path) -> CueLexicon:
        """Load a lexicon YAML file; errors name file, line and field."""
        return cls._from_doc(load_yaml_file(path))

    @classmethod
    def parse(cls, text: str, filename: str = "<string>") -> CueLexicon:
        """Parse lexicon YAML text."""
        return cls._from_doc(load_yaml_text(text, filename))

    @classmethod
    def default(cls) -> CueLexicon:
        """The lexicon bundled with the package."""
        ref = resources.files("palm_middleware") / "data" / "cues.yaml"
        return cls.parse(ref.read_text(encoding="utf-8"), "palm_middleware/data/cues.yaml")

    @classmethod
    def _from_doc(cls, doc: LocatedYAML) -> CueLexicon:
        try:
            model = _LexiconModel.model_validate(doc.data)
        except ValidationError as exc:
            raise ConfigError(issues_from_pydantic(exc, doc)) from None
        cues, issues = [], []
        for i, c in enumerate(model.cues):
            for j, pat in enumerate(c.patterns):
                try:
                    rx = re.compile(rf"\b(?:{pat})\b", re.IGNORECASE)
                except re.error as exc:
                    issues.append(
                        doc.issue(
                            ("cues", i, "patterns", j), f"invalid regular expression: {exc}", c.id
                        )
                    )
                    continue
                cues.append(Cue(c.id, c.trait, 1 if c.direction == "up" else -1, c.strength, rx))
        if issues:
            raise ConfigError(issues)
        return cls(cues)

    def for_space(self, space: TraitSpace) -> CueLexicon:
        """Only the cues about traits of ``space`` (a general lexicon serves many deployments)."""
        return CueLexicon([c for c in self.cues if c.trait in space])

    def check_space(self, space: TraitSpace) -> None:
        """Raise if a cue names a trait outside ``space``."""
        bad = sorted({c.trait for c in self.cues if c.trait not in space})
        if bad:
            raise ConfigError(
                ConfigIssue(f"cues name unknown traits {bad}; traits are {list(space.names)}")
            )

    def match(self, text: str) -> list[Cue]:
        """Cues found in ``text`` (each cue id at most once, in lexicon order)."""
        head = text[:MAX_SCAN_CHARS]
        seen: set[str] = set()
        out = []
        for c in self.cues:
            if c.id not in seen and c.regex.search(head):
                seen.add(c.id)
                out.append(c)
        return out
