"""``palm demo``'s time estimates scale with the machine's load (a busy first run took 9x)."""

from __future__ import annotations

import os

import pytest

from palm_middleware.cli import demo


def test_idle_machine_gets_the_idle_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert demo._at_load(90.0) == ""


def test_busy_machine_gets_a_scaled_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (16.0, 12.0, 8.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert demo._at_load(90.0) == ", ~12 min at this machine's current load (8.0x)"
    assert demo._at_load(5.0) == ", ~40 s at this machine's current load (8.0x)"


def test_no_load_average_means_no_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> tuple[float, float, float]:
        raise OSError("no load average")

    monkeypatch.setattr(os, "getloadavg", missing)
    assert demo._at_load(90.0) == ""
