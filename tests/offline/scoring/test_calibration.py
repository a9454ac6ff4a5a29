"""Calibration files: round trip, relative paths, and located errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from palm_middleware.exceptions import ConfigError
from palm_middleware.offline.scoring import (
    BrevityScorer,
    FormalityScorer,
    ScorerSet,
    StructureScorer,
    load_scorers,
    save_scorers,
)
from tests.engines.tiny import train_tokenizer

from .tiny_classifier import write_classifier

TEXTS = [
    "Paris.",
    "1. Mix\n2. Bake\n\n## Notes\nServe warm.",
    "Hey, it's awesome lol!",
    "However, it is advisable to proceed; consequently, results improve considerably.",
]


def test_round_trip_keeps_scores(tmp_path: Path) -> None:
    train_tokenizer(tmp_path)
    original = ScorerSet(
        [
            BrevityScorer(tokenizer=str(tmp_path / "tokenizer.json"), center=2.5, scale=0.4),
            StructureScorer(w_list=2.0, center=1.0, scale=0.7),
            FormalityScorer(w_casual=1.5, center=-0.2, scale=0.3),
        ],
        validation={"brevity": {"pairwise_accuracy": 0.9}},
    )
    path = tmp_path / "scorers.yaml"
    save_scorers(path, original)
    loaded = load_scorers(path)
    assert loaded.validation["brevity"]["pairwise_accuracy"] == 0.9
    for name, s in original.scorers.items():
        np.testing.assert_allclose(
            loaded.scorers[name].score_many(TEXTS, [""] * 4),
            s.score_many(TEXTS, [""] * 4),
            rtol=1e-5,
        )
    assert load_scorers(path, ["formality"]).traits == ["formality"]


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    write_classifier(tmp_path / "clf")
    (tmp_path / "s.yaml").write_text(
        "version: 1\nscorers:\n  formality:\n    kind: onnx_classifier\n"
        "    params: {path: clf, label: formal}\n"
    )
    s = load_scorers(tmp_path / "s.yaml").scorers["formality"]
    assert s.name == "formality" and s.score("however therefore") > 0.5


@pytest.mark.parametrize(
    "text, where, what",
    [
        ("scorers:\n  brevity: {kind: brevity\n", r"s\.yaml:3:1", "invalid YAML"),
        (
            "scorers:\n  brevity:\n    kind: lengthiness\n",
            r"s\.yaml:3:5",
            "kind must be one of .*got 'lengthiness'",
        ),
        (
            "scorers:\n  brevity:\n    kind: brevity\n    params: {centre: 3}\n",
            r"s\.yaml:4:5",
            "bad parameters for a brevity scorer.*centre",
        ),
        (
            "scorers:\n  brevity:\n    kind: brevity\n    params: {scale: -1}\n",
            r"s\.yaml:4:5",
            "scale must be a finite number > 0; got -1",
        ),
        ("- just a list\n", r"s\.yaml:1:1", "must be a mapping with a 'scorers'"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path: Path, text: str, where: str, what: str) -> None:
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ConfigError, match=f"{where}.*{what}"):
        load_scorers(tmp_path / "s.yaml")


def test_missing_trait_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("scorers:\n  brevity: {kind: brevity}\n")
    with pytest.raises(ConfigError, match=r"s\.yaml:1:1: .*no scorer for trait 'safety'"):
        load_scorers(tmp_path / "s.yaml", ["brevity", "safety"])
    with pytest.raises(ConfigError, match=r"gone\.yaml: file not found"):
        load_scorers(tmp_path / "gone.yaml")
