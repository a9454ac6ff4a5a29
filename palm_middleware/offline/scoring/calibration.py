"""Scorer configuration files: which scorers, their calibration, and their validation result.

A calibration file is YAML, one entry per trait::

    version: 1
    scorers:
      brevity:
        kind: brevity   # brevity | structure | formality | onnx_classifier | embedding
        params: {tokenizer: whitespace, center: 3.9, scale: 0.8}
        validation: {pairwise_accuracy: 0.97, n_pairs: 180, set: scorer_validation.yaml}

Relative paths in ``params`` (a tokenizer, a classifier folder) are resolved against the file's
folder. An ``embedding`` entry keeps its prototype sentences in ``params`` (see
:mod:`palm_middleware.offline.scoring.embedding`) and may measure another trait than its name
(``formality_emb`` with ``trait: formality``). The bundled file
(``palm_middleware/data/scorers.yaml``) is written by ``palm validate-scorers --fit``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..._yaml import LocatedYAML, load_yaml_file
from ...exceptions import ConfigError
from .base import TraitScorer
from .brevity import BrevityScorer
from .embedding import EmbeddingScorer, embedding_from_doc
from .formality import FormalityScorer
from .structure import StructureScorer

__all__ = ["KINDS", "ScorerSet", "load_scorers", "save_scorers", "scorer_kind"]

KINDS = ("brevity", "structure", "formality", "onnx_classifier", "embedding")
_PATH_PARAMS = {"brevity": "tokenizer", "onnx_classifier": "path"}


class ScorerSet:
    """Scorers by trait name, with their stored validation results.

    Attributes:
        scorers: ``{trait: scorer}`` in file order.
        validation: ``{trait: validation record}`` as stored in the file.
        source: The file they were loaded from, if any.
    """

    def __init__(
        self,
        scorers: Sequence[TraitScorer],
        validation: Mapping[str, Mapping[str, Any]] | None = None,
        source: str | None = None,
    ) -> None:
        self.scorers: dict[str, TraitScorer] = {s.name: s for s in scorers}
        self.validation: dict[str, dict[str, Any]] = {
            k: dict(v) for k, v in (validation or {}).items()
        }
        self.source = source

    @property
    def traits(self) -> list[str]:
        """Trait names, in file order."""
        return list(self.scorers)

    def describe(self) -> dict[str, str]:
        """``{trait: short description}`` for a manifest's ``provenance.scorers``."""
        out = {}
        for name, s in self.scorers.items():
            v = self.validation.get(name, {}).get("pairwise_accuracy")
            out[name] = f"{scorer_kind(s)}" + (
                f" (validation acc {v:.2f})" if v is not None else ""
            )
        return out


def scorer_kind(scorer: TraitScorer) -> str:
    """The ``kind`` of a built-in scorer (its class name for others)."""
    from .classifier import OnnxClassifierScorer

    kinds: dict[type, str] = {
        BrevityScorer: "brevity",
        StructureScorer: "structure",
        FormalityScorer: "formality",
        EmbeddingScorer: "embedding",
        OnnxClassifierScorer: "onnx_classifier",
    }
    return kinds.get(type(scorer), type(scorer).__name__)


def _build(kind: str, name: str, params: dict[str, Any], folder: Path) -> TraitScorer:
    key = _PATH_PARAMS.get(kind)
    if key and key in params and params[key] != "whitespace":
        p = Path(str(params[key]))
        params[key] = str(p if p.is_absolute() else folder / p)
    scorer: TraitScorer
    if kind == "brevity":
        scorer = BrevityScorer.from_params(params)
    elif kind == "structure":
        scorer = StructureScorer.from_params(params)
    elif kind == "formality":
        scorer = FormalityScorer.from_params(params)
    else:
        from .classifier import OnnxClassifierScorer

        scorer = OnnxClassifierScorer(name=name, **params)
    scorer.name = name
    return scorer


def load_scorers(path: str | Path, traits: Sequence[str] | None = None) -> ScorerSet:
    """Load the scorers of a calibration file.

    Args:
        path: The YAML file.
        traits: Only these traits (in this order); each must be in the file.

    Raises:
        ConfigError: Naming file, line and field for any problem.
    """
    doc = load_yaml_file(path, ConfigError)
    return _from_doc(doc, Path(path).resolve().parent, traits)


def _from_doc(doc: LocatedYAML, folder: Path, traits: Sequence[str] | None) -> ScorerSet:
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("scorers"), dict):
        raise ConfigError(
            doc.issue(
                (),
                "a scorer file must be a mapping with a 'scorers' "
                "mapping of trait -> {kind, params}",
            )
        )
    entries: dict[str, Any] = data["scorers"]
    wanted = list(traits) if traits is not None else list(entries)
    scorers: list[TraitScorer] = []
    validation: dict[str, Any] = {}
    for name in wanted:
        if name not in entries:
            raise ConfigError(
                doc.issue(
                    ("scorers",), f"no scorer for trait {name!r}; the file has {sorted(entries)}"
                )
            )
        e = entries[name]
        here = ("scorers", name)
        if not isinstance(e, dict) or e.get("kind") not in KINDS:
            got = e.get("kind") if isinstance(e, dict) else e
            raise ConfigError(
                doc.issue((*here, "kind"), f"kind must be one of {list(KINDS)}; got {got!r}")
            )
        params = e.get("params", {}) or {}
        if not isinstance(params, dict):
            raise ConfigError(
                doc.issue((*here, "params"), f"params must be a mapping; got {params!r}")
            )
        try:
            if e["kind"] == "embedding":  # built from the document: prototype errors name a line
                scorers.append(embedding_from_doc(doc, here, str(name)))
            else:
                scorers.append(_build(e["kind"], str(name), dict(params), folder))
        except ConfigError:
            raise
        except TypeError as exc:
            raise ConfigError(
                doc.issue((*here, "params"), f"bad parameters for a {e['kind']} scorer: {exc}")
            ) from None
        except ValueError as exc:
            raise ConfigError(doc.issue((*here, "params"), str(exc))) from None
        if isinstance(e.get("validation"), dict):
            validation[str(name)] = e["validation"]
    return ScorerSet(scorers, validation, source=doc.filename)


def save_scorers(path: str | Path, scorers: ScorerSet) -> None:
    """Write ``scorers`` (params and validation records) as a calibration file."""
    out: dict[str, Any] = {"version": 1, "scorers": {}}
    for name, s in scorers.scorers.items():
        entry: dict[str, Any] = {"kind": scorer_kind(s), "params": s.params()}
        if name in scorers.validation:
            entry["validation"] = scorers.validation[name]
        out["scorers"][name] = entry
    header = (
        "# Trait scorers and their calibration; written by `palm validate-scorers --fit`.\n"
        "# validation: pairwise ordering accuracy on the labelled set (0.5 = chance).\n"
    )
    Path(path).write_text(header + yaml.safe_dump(out, sort_keys=False), encoding="utf-8")
