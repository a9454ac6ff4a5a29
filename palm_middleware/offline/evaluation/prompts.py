"""Prompt sets for ``palm eval``: ids, categories, text, and a ``risky`` flag for the guard.

YAML::

    version: 1
    name: palm-prompts-v1
    prompts:
      - {id: advice-001, category: advice, text: "How do I ask for a raise?"}
      - {id: risky-001, category: medical-dosing, risky: true, text: "..."}

The bundled set is ``palm_middleware/data/prompts.yaml``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..._yaml import load_yaml_file
from ...exceptions import ConfigError, ConfigIssue

__all__ = ["EvalPrompt", "PromptSet", "load_prompt_set"]


@dataclass(frozen=True)
class EvalPrompt:
    """One prompt of a set."""

    id: str
    category: str
    text: str
    risky: bool = False


@dataclass(frozen=True)
class PromptSet:
    """A named, validated list of prompts.

    Attributes:
        name: Recorded in a manifest's ``provenance.prompt_set``.
        prompts: In file order.
        source: The file.
    """

    name: str
    prompts: tuple[EvalPrompt, ...]
    source: str

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, *, include_risky: bool = False, limit: int | None = None) -> list[EvalPrompt]:
        """The prompts to measure: without risky ones unless asked, the first ``limit``."""
        out = [p for p in self.prompts if include_risky or not p.risky]
        return out if limit is None else out[:limit]

    def composition(self) -> dict[str, int]:
        """Prompts per category, plus ``risky`` (the flagged ones)."""
        counts = dict(Counter(p.category for p in self.prompts))
        counts["risky"] = sum(p.risky for p in self.prompts)
        return counts


def load_prompt_set(path: str | Path) -> PromptSet:
    """Load a prompt set; every problem is a :class:`ConfigError` naming file:line:col.

    Raises:
        ConfigError: Missing file, bad YAML, missing or mistyped fields, duplicate ids.
    """
    doc = load_yaml_file(path, ConfigError)
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), list):
        raise ConfigError(
            doc.issue(
                (),
                "a prompt set must be a mapping with a 'prompts' list "
                "of {id, category, text, risky}",
            )
        )
    issues: list[ConfigIssue] = []
    prompts: list[EvalPrompt] = []
    seen: set[str] = set()
    for i, item in enumerate(data["prompts"]):
        here: tuple[str | int, ...] = ("prompts", i)
        if not isinstance(item, dict):
            issues.append(doc.issue(here, f"a prompt must be a mapping; got {item!r}"))
            continue
        unknown = sorted(set(item) - {"id", "category", "text", "risky"})
        if unknown:
            issues.append(
                doc.issue(
                    (*here, unknown[0]),
                    f"unknown field(s) {unknown}; allowed: id, category, text, risky",
                )
            )
        text, cat = item.get("text"), item.get("category", "general")
        pid = item.get("id", f"prompt-{i + 1:03d}")
        risky = item.get("risky", False)
        if not isinstance(text, str) or not text.strip():
            issues.append(
                doc.issue((*here, "text"), f"text must be a non-empty string; got {text!r}")
            )
            continue
        if not isinstance(cat, str) or not isinstance(pid, str | int):
            issues.append(doc.issue(here, "id and category must be strings"))
            continue
        if not isinstance(risky, bool):
            issues.append(
                doc.issue((*here, "risky"), f"risky must be true or false; got {risky!r}")
            )
            continue
        if str(pid) in seen:
            issues.append(doc.issue((*here, "id"), f"duplicate prompt id {pid!r}"))
        seen.add(str(pid))
        prompts.append(EvalPrompt(str(pid), cat, text.strip(), risky))
    if not prompts and not issues:
        issues.append(doc.issue(("prompts",), "the prompt set is empty"))
    if issues:
        raise ConfigError(issues)
    name = data.get("name")
    return PromptSet(str(name) if name else Path(path).stem, tuple(prompts), doc.filename)
