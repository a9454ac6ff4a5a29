from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from palm_middleware.exceptions import ManifestError
from palm_middleware.offline.portfolio.candidates import load_candidates


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_with_stderr_and_weights(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "c.csv",
        "id,w_help,w_brev,help,brev,help_se,brev_se\n"
        "a,1,0,0.9,0.2,0.01,0.02\nb,0,1,0.3,0.8,0.01,0.02\n",
    )
    cs = load_candidates(p)
    assert cs.space.names == ("help", "brev")
    assert cs.ids == ("a", "b")
    assert np.allclose(cs.rewards, [[0.9, 0.2], [0.3, 0.8]])
    assert cs.stderrs is not None and np.allclose(cs.stderrs[1], [0.01, 0.02])
    weight = cs.candidates[0].weight
    assert weight is not None and np.allclose(weight, [1, 0])
    sub = load_candidates(p, traits=["brev"])
    assert sub.space.names == ("brev",) and np.allclose(sub.rewards[:, 0], [0.2, 0.8])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "id,help,brev\na,0.5,0.5\nb,1.2,0.3\n",
            r"c\.csv:3: brev|c\.csv:3: help: reward 'help'"
            r" must be in \[0, 1\]; got 1\.2",
        ),
        ("id,help,brev\na,0.5,nan\n", r"c\.csv:2: brev: .*got nan"),
        ("id,help,brev\na,0.5,\n", r"c\.csv:2: brev: .*number"),
        ("name,help,brev\na,0.5,0.5\n", r"c\.csv:1: id: missing the 'id' column"),
        ("id,help,brev\n", r"c\.csv:1: the candidate pool is empty"),
        ("id,help,brev,safety_se\na,0.5,0.5,0.1\n", r"c\.csv:1: safety_se: .*unknown trait"),
        ("id,help,brev\na,0.5,0.5\na,0.4,0.4\n", r"c\.csv:3: id: duplicate id 'a'"),
        ("id,help,brev\na,0.5\n", r"c\.csv:2: row has 2 fields"),
        ("id,help,brev\na,0.5,0.5,0.1\n", r"c\.csv:2: row has 4 fields"),
    ],
)
def test_csv_errors_name_file_line_field(tmp_path: Path, text: str, match: str) -> None:
    p = write(tmp_path, "c.csv", text)
    with pytest.raises(ManifestError, match=match):
        load_candidates(p)


def test_csv_trait_selection_mismatch(tmp_path: Path) -> None:
    p = write(tmp_path, "c.csv", "id,help,brev\na,0.5,0.5\n")
    with pytest.raises(ManifestError, match=r"c\.csv:1: safety: traits \['safety'\]"):
        load_candidates(p, traits=["safety"])


def test_csv_reports_all_bad_rows(tmp_path: Path) -> None:
    p = write(tmp_path, "c.csv", "id,help,brev\na,-0.1,0.5\nb,0.5,7\n")
    with pytest.raises(ManifestError) as info:
        load_candidates(p)
    assert [(i.line, i.field) for i in info.value.issues] == [(2, "help"), (3, "brev")]


def test_yaml_list_and_manifest(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "c.yaml",
        "- id: a\n  reward: {help: 0.9, brev: 0.1}\n"
        "  stderr: {help: 0.01, brev: 0.01}\n- id: b\n  reward: {help: 0.2, brev: 0.8}\n",
    )
    cs = load_candidates(p)
    assert cs.ids == ("a", "b") and cs.space.names == ("help", "brev")
    m = write(
        tmp_path,
        "m.yaml",
        "traits: [help, brev]\nmembers:\n  - id: x\n    reward: {help: 0.4, brev: 0.6}\n",
    )
    assert load_candidates(m).ids == ("x",)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "- id: a\n  reward: {help: 0.9, brev: 0.1}\n"
            "- id: b\n  reward: {help: 0.2, safety: 0.8}\n",
            r"c\.yaml:4:.*reward\.safety: unknown trait 'safety'",
        ),
        (
            "- id: a\n  reward: {help: 0.9, brev: 1.1}\n",
            r"c\.yaml:2:.*reward\.brev: must be a "
            r"number in \[0, 1\]; got 1\.1",
        ),
        ("- id: a\n  reward: {help: 0.9, brev: .nan}\n", r"c\.yaml:2:.*reward\.brev: .*got nan"),
        ("[]\n", r"c\.yaml:1:1: the candidate pool is empty"),
        (
            "traits: [help]\ncandidates: []\n",
            r"c\.yaml:2:.*candidates: the candidate pool is "
            "empty",
        ),
        ("traits: [help, brev]\nmembers: []\n", r"c\.yaml:2:.*members"),
    ],
)
def test_yaml_errors_name_file_line_field(tmp_path: Path, text: str, match: str) -> None:
    p = write(tmp_path, "c.yaml", text)
    with pytest.raises(ManifestError, match=match):
        load_candidates(p)


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="file not found"):
        load_candidates(tmp_path / "nope.csv")
    with pytest.raises(ManifestError, match="unknown candidates format"):
        load_candidates(write(tmp_path, "c.txt", "x"))
