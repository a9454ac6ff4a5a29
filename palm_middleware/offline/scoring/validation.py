"""The labelled validation set and the pairwise ordering accuracy of scorers against it.

The set is YAML: groups of replies to one prompt, each reply with graded labels per trait
(1 = little of the trait, 3 = much)::

    version: 1
    groups:
      - prompt: How do I boil an egg?
        replies:
          - text: Boil it for 9 minutes.
            labels: {brevity: 3, structure: 1, formality: 2}

Accuracy is measured on pairs of replies *to the same prompt* whose labels differ on the trait:
a pair is right when the scorer orders it like the labels (a tie counts one half). Chance is 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..._yaml import load_yaml_file
from ...exceptions import ConfigError
from .base import TraitScorer

__all__ = ["LabelledReply", "ValidationResult", "load_validation_set", "pairwise_accuracy"]


@dataclass(frozen=True)
class LabelledReply:
    """One reply of the validation set."""

    group: int
    prompt: str
    text: str
    labels: dict[str, int]


@dataclass(frozen=True)
class ValidationResult:
    """A scorer's agreement with the labels of one trait.

    Attributes:
        trait: The trait.
        accuracy: Pairwise ordering accuracy in [0, 1] (ties count one half).
        n_pairs: Labelled pairs compared.
        n_ties: Pairs the scorer could not separate.
    """

    trait: str
    accuracy: float
    n_pairs: int
    n_ties: int


def load_validation_set(path: str | Path) -> list[LabelledReply]:
    """Load a labelled set; every problem is a :class:`ConfigError` naming file:line."""
    doc = load_yaml_file(path, ConfigError)
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get("groups"), list):
        raise ConfigError(doc.issue((), "a validation set must be a mapping with a 'groups' list"))
    out = []
    for g, group in enumerate(doc.data["groups"]):
        here: tuple[str | int, ...] = ("groups", g)
        if (
            not isinstance(group, dict)
            or not isinstance(group.get("prompt"), str)
            or not isinstance(group.get("replies"), list)
        ):
            raise ConfigError(
                doc.issue(here, "each group needs 'prompt' (text) and 'replies' (a list)")
            )
        for r, reply in enumerate(group["replies"]):
            rh = (*here, "replies", r)
            if (
                not isinstance(reply, dict)
                or not isinstance(reply.get("text"), str)
                or not isinstance(reply.get("labels"), dict)
            ):
                raise ConfigError(
                    doc.issue(rh, "each reply needs 'text' and 'labels' ({trait: grade})")
                )
            for k, v in reply["labels"].items():
                if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 5:
                    raise ConfigError(
                        doc.issue((*rh, "labels", k), f"a grade must be an int in 1..5; got {v!r}")
                    )
            out.append(
                LabelledReply(
                    g,
                    group["prompt"],
                    reply["text"],
                    {str(k): int(v) for k, v in reply["labels"].items()},
                )
            )
    if not out:
        raise ConfigError(doc.issue(("groups",), "the validation set has no replies"))
    return out


def pairwise_accuracy(
    scorer: TraitScorer, items: Sequence[LabelledReply], trait: str | None = None
) -> ValidationResult:
    """Pairwise ordering accuracy of ``scorer`` on the items labelled for ``trait``.

    Args:
        scorer: The scorer.
        items: The labelled replies.
        trait: Label to compare against (default: the scorer's ``trait`` attribute if it has
            one, as an embedding scorer named ``formality_emb`` does, else its name).
    """
    trait = trait or str(getattr(scorer, "trait", None) or scorer.name)
    labelled = [it for it in items if trait in it.labels]
    scores = scorer.score_many([it.text for it in labelled], [it.prompt for it in labelled])
    right = 0.0
    n = ties = 0
    for i, a in enumerate(labelled):
        for j in range(i + 1, len(labelled)):
            b = labelled[j]
            if a.group != b.group or a.labels[trait] == b.labels[trait]:
                continue
            n += 1
            diff = (scores[i] - scores[j]) * (a.labels[trait] - b.labels[trait])
            if abs(scores[i] - scores[j]) < 1e-12:
                ties += 1
                right += 0.5
            elif diff > 0:
                right += 1
    return ValidationResult(trait, right / n if n else float("nan"), n, ties)
