"""``palm validate``: OK lines, located errors, exit codes."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from palm_middleware.cli import validate

from .conftest import EXAMPLE, HEADER

REPO = Path(__file__).resolve().parents[2]


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="palm")
    sub = parser.add_subparsers(dest="command", required=True)
    validate.register(sub)
    args = parser.parse_args(["validate", *argv])
    code: int = args.func(args)
    return code


def test_ok(write: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = write(EXAMPLE, "org.yaml")
    assert _run(str(path)) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(rf"OK {re.escape(str(path))} \(version [0-9a-f]{{12}}, 6 rules\)\n", out)


def test_shipped_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(str(REPO / "policies" / "default.yaml")) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("OK ") and captured.err == ""


def test_errors_and_warnings(
    write: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(EXAMPLE, "good.yaml")
    bad = write(HEADER + "  - {id: r1, min: {safety: 1.5}}\n  - {id: r2, when: x}\n", "bad.yaml")
    warn = write(HEADER + "  - {id: cap, max: {humor: 0.05}}\n", "warn.yaml")
    missing = good.parent / "missing.yaml"
    assert _run(str(good), str(bad), str(warn), str(missing)) == 2
    captured = capsys.readouterr()
    assert captured.out.count("OK ") == 2  # good and warn
    err = captured.err.splitlines()
    assert re.match(r".*bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.min\.safety: must be in", err[0])
    assert re.match(r".*bad\.yaml:7:\d+: rule 'r2': bounds\[1\]\.when: conditional rules", err[1])
    assert re.match(r"warning: .*warn\.yaml:4:\d+: rule 'cap': defaults\.weights\.humor", err[2])
    assert re.match(r".*missing\.yaml: file not found", err[3])


def test_needs_a_file() -> None:
    with pytest.raises(SystemExit):
        _run()
