"""The population report of the demo's deployment, written next to its summary.

The demo's users are scripted (a handful of them), so the minimum group size is 1 here and the
page says so; a real deployment keeps the default (``palm report --deployment``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_demo_report"]


def write_demo_report(palm_config: Path, out: Path) -> Path:
    """Write ``report.html`` and ``report.json`` to ``out``; return the page's path."""
    from ..report import open_deployment, write_report

    sources = open_deployment(palm_config)
    try:
        page, _ = write_report(sources, out, min_group_size=1)
    finally:
        sources.close()
    return page
