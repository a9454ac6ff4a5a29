"""The palm command, run in process with real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from palm_middleware.cli.__main__ import main
from palm_middleware.data import bundled


def test_simulate_writes_csv_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    code = main(
        [
            "simulate", "--users", "8", "--events", "4", "--pipeline-users", "2", "--out",
            str(out), "--api",
        ]
    )  # fmt: skip
    assert code == 0
    with open(out / "simulate.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {
        "default", "bandit", "reference", "palm", "oracle", "palm_api", "palm_api_bundled"
    }  # fmt: skip
    assert (out / "simulate.png").read_bytes()[:4] == b"\x89PNG"
    text = capsys.readouterr().out
    assert "pipeline: 2 users through Palm" in text and "user-1" in text


def test_inspect_bundled_portfolio(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(bundled("portfolio.yaml"))]) == 0
    out = capsys.readouterr().out
    assert "6 members" in out and "terse" in out and "default member: balanced" in out


def test_inspect_bad_manifest_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("traits: [a]\nmembers:\n  - id: x\n    reward: {a: 2}\n")
    assert main(["inspect", str(bad)]) == 2
    assert "bad.yaml:4:" in capsys.readouterr().err


def test_profile_reset_and_forget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "p.db"
    assert main(["profile", "alice", "--db", str(db), "--json"]) == 0
    prof = json.loads(capsys.readouterr().out)
    assert prof["n_events"] == 0 and set(prof["weights"]) == {
        "safety",
        "helpfulness",
        "humor",
        "brevity",
    }
    assert main(["profile", "alice", "--db", str(db)]) == 0
    assert "90% interval" in capsys.readouterr().out
    assert main(["profile", "alice", "--db", str(db), "--reset"]) == 0
    assert main(["profile", "alice", "--db", str(db), "--forget"]) == 0
    assert "forgot alice" in capsys.readouterr().out
