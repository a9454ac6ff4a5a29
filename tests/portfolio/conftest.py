"""Fixtures for the portfolio tests.

``palm`` registers every command module by name (``palm_middleware.cli.__main__.COMMANDS``).
Commands owned by other work streams (validate, inspect, profile, simulate) may not exist on
this branch yet; only for those missing modules a placeholder command is registered so the CLI
tests can drive ``main([...])`` end to end. Existing modules are always the real ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import pytest

from palm_middleware.cli.__main__ import COMMANDS


def _placeholder(name: str) -> types.ModuleType:
    mod = types.ModuleType(f"palm_middleware.cli.{name}")

    def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        sub.add_parser(name, help="(not on this branch)").set_defaults(func=lambda a: 2)

    mod.register = register  # type: ignore[attr-defined]
    return mod


for _name in COMMANDS:
    _full = f"palm_middleware.cli.{_name}"
    if _full not in sys.modules and importlib.util.find_spec(_full) is None:
        sys.modules[_full] = _placeholder(_name)

DATA = Path("/work/shared/data/rlvr_gsm_released_rewards.csv")


@pytest.fixture
def rng() -> object:
    import numpy as np

    return np.random.default_rng(12345)
