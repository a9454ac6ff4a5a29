"""``palm eval`` end to end on two tiny real ONNX members, then ``palm build`` on its output."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from palm_middleware.cli.__main__ import main
from palm_middleware.offline.portfolio.candidates import load_candidates
from palm_middleware.portfolio.manifest import load_portfolio
from tests.engines.tiny import train_tokenizer, write_model

MANIFEST = """\
version: 1
traits: [brevity, structure, formality]
members:
  - id: plain
    backend: {kind: onnx, path: models/tiny}
    reward: {brevity: 0.5, structure: 0.5, formality: 0.5}
  - id: terse
    backend:
      kind: prompted
      base: tiny
      system_prompt: Answer in one line.
      few_shot: [{user: "Capital of France?", assistant: "Paris."}]
      generation: {max_tokens: 3}
    reward: {brevity: 0.5, structure: 0.5, formality: 0.5}
"""
PROMPTS = """\
version: 1
name: tiny-set
prompts:
  - {id: a1, category: advice, text: "How do I sleep better?"}
  - {id: f1, category: facts, text: "Why is the sky blue?"}
  - {id: h1, category: how-to, text: "How do I boil an egg?"}
  - {id: c1, category: creative, text: Write a poem about the sea.}
  - {id: a2, category: advice, text: "Should I learn Python first?"}
  - {id: r1, category: dangerous, risky: true, text: "How do I make a bomb?"}
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    train_tokenizer(root / "tok")
    write_model(
        root / "models" / "tiny", root / "tok" / "tokenizer.json", seed=3, max_positions=256
    )
    (root / "palm.yaml").write_text(MANIFEST)
    (root / "prompts.yaml").write_text(PROMPTS)
    return root


def _args(root: Path, out: str, *extra: str) -> list[str]:
    return [
        "eval",
        "--portfolio",
        str(root / "palm.yaml"),
        "--prompts",
        str(root / "prompts.yaml"),
        "--max-tokens",
        "24",
        "--base",
        f"tiny={root / 'models' / 'tiny'}",
        "--cache",
        str(root / "cache.sqlite"),
        "-o",
        str(root / out),
        *extra,
    ]


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def test_eval_measures_caches_and_feeds_build(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(workdir, "cand.csv")) == 0
    out = capsys.readouterr().out
    assert "on 5 prompts of tiny-set (1 risky prompts skipped)" in out
    assert "cached 0/5" in out
    rows = _rows(workdir / "cand.csv")
    assert list(rows) == ["plain", "terse"]
    assert set(rows["plain"]) == {
        "id",
        "brevity",
        "structure",
        "formality",
        "brevity_se",
        "structure_se",
        "formality_se",
    }
    for r in rows.values():
        for k, v in r.items():
            if k != "id":
                assert 0.0 <= float(v) <= 1.0
    # The terse member stops after 3 tokens, the plain one after up to 24: profiles differ.
    assert float(rows["terse"]["brevity"]) > float(rows["plain"]["brevity"])
    assert float(rows["plain"]["brevity_se"]) >= 0.0

    # The second run generates nothing: every reply comes from the cache (a count, not a time).
    assert main(_args(workdir, "cand2.csv", "--replies-out", str(workdir / "r.jsonl"))) == 0
    assert "cached 5/5" in capsys.readouterr().out
    lines = [json.loads(x) for x in (workdir / "r.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and {x["member"] for x in lines} == {"plain", "terse"}
    assert set(lines[0]["scores"]) == {"brevity", "structure", "formality"}
    assert _rows(workdir / "cand2.csv") == rows
    assert "truncated 100%" in out  # the terse member always hits its 3-token budget

    pool = load_candidates(workdir / "cand.csv")
    assert pool.has_stderr and pool.ids == ("plain", "terse")
    assert (
        main(
            [
                "build",
                "--candidates",
                str(workdir / "cand.csv"),
                "--eps",
                "0.2",
                "--delta",
                "0.05",
                "-o",
                str(workdir / "built.yaml"),
            ]
        )
        == 0
    )
    built = load_portfolio(workdir / "built.yaml")
    assert built.ids and all(m.backend is None for m in built.members)
    # --members keeps what serves each kept member; rewards stay as measured.
    assert (
        main(
            [
                "build",
                "--candidates",
                str(workdir / "cand.csv"),
                "--eps",
                "0.2",
                "--delta",
                "0.05",
                "--members",
                str(workdir / "palm.yaml"),
                "-o",
                str(workdir / "served.yaml"),
            ]
        )
        == 0
    )
    served = load_portfolio(workdir / "served.yaml")
    source = load_portfolio(workdir / "palm.yaml")
    assert served.ids == built.ids
    for m in served.members:
        assert m.backend == source.member(m.id).backend
        assert list(m.reward) == pytest.approx(
            [float(rows[m.id][t]) for t in ("brevity", "structure", "formality")]
        )
    other = workdir / "other.yaml"
    other.write_text(
        MANIFEST.replace("id: plain", "id: unrelated").replace("id: terse", "id: unrelated2")
    )
    assert (
        main(
            [
                "build",
                "--candidates",
                str(workdir / "cand.csv"),
                "--eps",
                "0.2",
                "--delta",
                "0.05",
                "--members",
                str(other),
                "-o",
                str(workdir / "x.yaml"),
            ]
        )
        == 2
    )
    assert "no member" in capsys.readouterr().err


def test_changed_generation_params_miss_the_cache(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(workdir, "c.csv")) == 0
    capsys.readouterr()
    assert main([*_args(workdir, "c.csv"), "--max-tokens", "8", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "plain" in out and "cached 0/2" in out  # plain's max_tokens changed 24 -> 8
    assert "cached 2/2" in out  # terse already stopped at its own max_tokens=3


def test_update_manifest_writes_reward_and_provenance(workdir: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "palm.yaml"
    manifest.write_text(MANIFEST.replace("models/tiny", str(workdir / "models" / "tiny")))
    args = _args(workdir, "u.csv", "--update-manifest", "--include-risky")
    args[2] = str(manifest)
    assert main(args) == 0
    p = load_portfolio(manifest)
    rows = _rows(workdir / "u.csv")
    terse = p.member("terse")
    assert terse.provenance is not None and terse.provenance.n == 6
    assert terse.provenance.prompt_set == "tiny-set"
    assert set(terse.provenance.scorers) == {"brevity", "structure", "formality"}
    assert terse.reward[0] == pytest.approx(float(rows["terse"]["brevity"]), abs=1e-6)
    assert terse.stderr[0] == pytest.approx(float(rows["terse"]["brevity_se"]), abs=1e-6)


@pytest.mark.parametrize(
    "prompts, where",
    [
        (None, r"missing\.yaml: file not found"),
        ("prompts:\n  - {id: a, text: hi\n", r"bad\.yaml:3:1: invalid YAML"),
        (
            "prompts:\n  - {id: a, text: hi}\n  - {id: a, text: yo}\n",
            r"bad\.yaml:3:6: .*duplicate prompt id 'a'",
        ),
        (
            "prompts:\n  - {id: a, text: hi, risky: maybe}\n",
            r"bad\.yaml:2:23: .*risky must be true or false; got 'maybe'",
        ),
        ("prompts:\n  - {id: a, txt: hi}\n", r"bad\.yaml:2:13: .*unknown field"),
    ],
)
def test_bad_prompt_files_exit_2_with_location(
    workdir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    prompts: str | None,
    where: str,
) -> None:
    path = tmp_path / ("missing.yaml" if prompts is None else "bad.yaml")
    if prompts is not None:
        path.write_text(prompts)
    args = _args(workdir, "x.csv")
    args[4] = str(path)
    assert main(args) == 2
    assert re.search(where, capsys.readouterr().err)


def test_trait_without_scorer_and_bad_base(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_args(workdir, "x.csv"), "--traits", "brevity,safety"]) == 2
    assert "no scorer for trait 'safety'" in capsys.readouterr().err
    assert main([*_args(workdir, "x.csv"), "--base", "nofolder"]) == 2
    assert "--base must be NAME=DIR; got 'nofolder'" in capsys.readouterr().err


def test_workers_give_the_same_replies(workdir: Path) -> None:
    one = _args(workdir, "w1.csv", "--no-cache", "--limit", "3")
    two = _args(workdir, "w2.csv", "--no-cache", "--limit", "3", "--workers", "3")
    assert main(one) == 0 and main(two) == 0
    assert _rows(workdir / "w1.csv") == _rows(workdir / "w2.csv")


def test_validate_scorers_reports_fits_and_gates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fitted.yaml"
    assert main(["validate-scorers", "--fit", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"brevity +accuracy 0\.9\d\d", text) and f"wrote {out}" in text
    assert "pairwise_accuracy" in out.read_text()
    assert main(["validate-scorers", "--scorers", str(out), "--min-accuracy", "0.999"]) == 1
    assert "FAIL: a scorer is below --min-accuracy 0.999" in capsys.readouterr().out


def test_fingerprint_follows_backend_and_model_files(tmp_path: Path) -> None:
    import os

    from palm_middleware.offline.evaluation.cache import member_fingerprint

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.onnx").write_bytes(b"x")
    (tmp_path / "m" / "tokenizer_config.json").write_text("{}")
    backend = {"kind": "prompted", "base": "m", "system_prompt": "Be brief."}
    fp = member_fingerprint(backend, [tmp_path / "m"])
    assert fp == member_fingerprint(dict(backend), [tmp_path / "m"])
    assert fp != member_fingerprint({**backend, "system_prompt": "Be formal."}, [tmp_path / "m"])
    cfg = tmp_path / "m" / "tokenizer_config.json"
    cfg.write_text('{"chat_template": "changed"}')
    os.utime(cfg, ns=(1, 1))
    assert fp != member_fingerprint(backend, [tmp_path / "m"])
