"""policies/schema.json equals the models' schema; `palm explain` shows which rules fire."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from palm_middleware.cli.__main__ import main
from palm_middleware.policy.schema import policy_json_schema, policy_json_schema_text

REPO = Path(__file__).resolve().parents[2]


def test_schema_file_is_generated_from_the_models() -> None:
    committed = (REPO / "policies/schema.json").read_text(encoding="utf-8")
    assert committed == policy_json_schema_text(), (
        "regenerate: python -m palm_middleware.policy.schema > policies/schema.json"
    )
    schema = policy_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) >= {"version", "bounds", "topics", "privacy", "context"}


def test_explain_political_question(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "explain",
            str(REPO / "policies/default.yaml"),
            "--user",
            "u",
            "--message",
            "Who should I vote for in the election?",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["topics"] == ["elections", "politics"] and out["action"] == "use_default"
    assert out["action_rule"] == "no-political-personalization"
    rule = next(r for r in out["rules"] if r["id"] == "no-political-personalization")
    assert rule["fired"] and rule["trace"] == ["[true] topic in ['elections', 'politics']"]


def test_explain_blocked_minor_at_night(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "explain",
            str(REPO / "policies/strict.yaml"),
            "--message",
            "homework",
            "--cohort",
            "minor",
            "--time",
            "23:30",
        ]
    )
    text = capsys.readouterr().out
    assert code == 3
    assert "BLOCKED by rule 'minors-night'" in text
    assert "[true] time between 23:00 and 06:00" in text


def test_explain_reports_policy_errors_located(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\ntraits: [a, b]\nbounds:\n  - {id: r, when: {cohort: minor}}\n")
    assert main(["explain", str(bad)]) == 2
    assert (
        "bad.yaml:4:5: rule 'r': bounds[0]: a rule needs at least one constraint"
        in capsys.readouterr().err
    )


def test_explain_shows_the_detected_language_and_its_rule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "explain",
            str(REPO / "policies/assistant.yaml"),
            "--portfolio",
            str(REPO / "palm_middleware/data/smollm2/portfolio.yaml"),
            "--message",
            "Come posso imparare a suonare la chitarra da solo?",
        ]
    )
    text = capsys.readouterr().out
    assert code == 3
    assert "language=it" in text and "BLOCKED by rule 'unguarded-language'" in text
