"""Data files shipped inside the package: default portfolio, policies, prompts, scorers, styles.

Public so that the CLI, the adapters and the examples find the bundled defaults the same way.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["bundled"]


def bundled(name: str) -> Path:
    """Path of the data file ``name`` (e.g. ``"policy.yaml"``, ``"smollm2/portfolio.yaml"``)."""
    return Path(str(resources.files("palm_middleware") / "data" / name))
