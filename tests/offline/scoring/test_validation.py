"""Scorer accuracy on the bundled labelled set, and the bundled prompt set's composition.

Floor: 0.85 pairwise accuracy per trait. Chance is 0.5; the scorers measure 0.98-1.0 on the set
today, so 0.85 leaves room to tune a lexicon or weights while catching a scorer that stopped
reading its feature (a constant scorer scores exactly 0.5, shown below).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from palm_middleware.data import bundled
from palm_middleware.exceptions import ConfigError
from palm_middleware.offline.evaluation import load_prompt_set
from palm_middleware.offline.scoring import load_scorers, load_validation_set, pairwise_accuracy
from palm_middleware.offline.scoring.base import SquashScorer

FLOOR = 0.85


class _Constant(SquashScorer):
    name = "brevity"

    def raw(self, text: str, prompt: str = "") -> float:
        return 0.0


def test_labelled_set_is_large_enough() -> None:
    items = load_validation_set(bundled("scorer_validation.yaml"))
    assert len(items) >= 60
    for trait in ("brevity", "structure", "formality"):
        assert {it.labels[trait] for it in items} == {1, 2, 3}
    detail = [it for it in items if "detail" in it.labels]  # the crossed groups only
    assert len(detail) >= 25 and {it.labels["detail"] for it in detail} == {1, 2, 3}


@pytest.mark.parametrize("trait", ["brevity", "structure", "formality"])
def test_each_scorer_beats_the_floor(trait: str) -> None:
    items = load_validation_set(bundled("scorer_validation.yaml"))
    scorer = load_scorers(bundled("scorers.yaml"), [trait]).scorers[trait]
    res = pairwise_accuracy(scorer, items)
    assert res.n_pairs >= 40
    assert res.accuracy >= FLOOR, res


def test_the_gate_fails_a_constant_scorer() -> None:
    items = load_validation_set(bundled("scorer_validation.yaml"))
    res = pairwise_accuracy(_Constant(), items)
    assert res.accuracy == 0.5 and res.n_ties == res.n_pairs
    assert res.accuracy < FLOOR


def test_bad_labels_are_located(tmp_path: Path) -> None:
    p = tmp_path / "v.yaml"
    p.write_text(
        "groups:\n  - prompt: hi\n    replies:\n      - text: hello\n        labels: {brevity: 7}\n"
    )
    with pytest.raises(ConfigError, match=r"v\.yaml:5:18: .*grade must be an int in 1\.\.5; got 7"):
        load_validation_set(p)


def test_bundled_prompt_set_composition() -> None:
    ps = load_prompt_set(bundled("prompts.yaml"))
    comp = ps.composition()
    assert len(ps) >= 150
    for cat in ("advice", "facts", "how-to", "creative"):
        assert comp[cat] >= 20
    assert comp["risky"] >= 12
    risky_cats = {p.category for p in ps.prompts if p.risky}
    assert risky_cats == {"self-harm", "dangerous", "medical-dosing", "minors"}
    assert len({p.text for p in ps.prompts}) == len(ps)
    assert all(not p.risky for p in ps.select())
    assert len(ps.select(include_risky=True, limit=5)) == 5
