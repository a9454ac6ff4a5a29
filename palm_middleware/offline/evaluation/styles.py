"""Style datasets for training adapter members: example exchanges of one answer style.

YAML (the bundled sets are ``palm_middleware/data/styles/*.yaml``)::

    name: terse
    description: one short sentence per answer
    examples:
      - {user: "Why is the sky blue?", assistant: "Air scatters blue light more than red."}
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..._yaml import load_yaml_file
from ...data import bundled
from ...exceptions import ConfigError, ConfigIssue

__all__ = ["StyleExample", "StyleSet", "bundled_style", "load_style"]

_FIELDS = ("name", "description", "examples")


@dataclass(frozen=True)
class StyleExample:
    """One user message and the answer in the target style."""

    user: str
    assistant: str


@dataclass(frozen=True)
class StyleSet:
    """A validated style dataset; ``sha256`` is the file's, for the adapter's card."""

    name: str
    description: str
    examples: tuple[StyleExample, ...]
    source: str
    sha256: str

    def __len__(self) -> int:
        return len(self.examples)


def bundled_style(name: str) -> Path:
    """Path of a bundled style set (``terse``, ``formal``)."""
    return bundled(f"styles/{name}.yaml")


def load_style(path: str | Path) -> StyleSet:
    """Load a style set; every problem is a :class:`ConfigError` naming file:line:col.

    Raises:
        ConfigError: Missing file, bad YAML, unknown or missing fields, empty texts,
            duplicate user messages.
    """
    doc = load_yaml_file(path, ConfigError)
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise ConfigError(
            doc.issue(
                (),
                "a style set must be a mapping with name, description "
                "and an 'examples' list of {user, assistant}",
            )
        )
    issues: list[ConfigIssue] = []
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        issues.append(
            doc.issue((unknown[0],), f"unknown field(s) {unknown}; allowed: {', '.join(_FIELDS)}")
        )
    for key in ("name", "description"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            issues.append(doc.issue((key,), f"{key} must be a non-empty string"))
    examples: list[StyleExample] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(data["examples"]):
        here: tuple[str | int, ...] = ("examples", i)
        if not isinstance(item, dict) or set(item) != {"user", "assistant"}:
            issues.append(
                doc.issue(
                    here,
                    "an example must be a mapping with exactly 'user' "
                    f"and 'assistant'; got {item!r}"[:200],
                )
            )
            continue
        texts = {k: item[k] for k in ("user", "assistant")}
        bad = [k for k, v in texts.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            issues.append(doc.issue((*here, bad[0]), f"{bad[0]} must be a non-empty string"))
            continue
        key = texts["user"].strip().casefold()
        if key in seen:
            issues.append(
                doc.issue((*here, "user"), f"duplicate user message (also example {seen[key]})")
            )
        seen[key] = i
        examples.append(StyleExample(texts["user"].strip(), texts["assistant"].strip()))
    if not examples and not issues:
        issues.append(doc.issue(("examples",), "the style set has no examples"))
    if issues:
        raise ConfigError(issues)
    sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return StyleSet(
        data["name"].strip(), data["description"].strip(), tuple(examples), doc.filename, sha
    )
