"""The operator's view: a population report computed from a deployment's store.

:func:`compute_report` reads posteriors and decision records (never message text) and returns
aggregates only, each standing for at least ``min_group_size`` users; :func:`render_html` draws
them as one self-contained page. ``palm report --deployment palm.yaml`` and the proxy's
``/palm/v1/admin/report`` (master key only) serve both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._lazy import load as _load
from .privacy import DEFAULT_MIN_GROUP_SIZE

if TYPE_CHECKING:
    from .deployment import DeploymentSources, open_deployment, write_report
    from .html import render_html
    from .population import compute_report

__all__ = [
    "DEFAULT_MIN_GROUP_SIZE",
    "DeploymentSources",
    "compute_report",
    "open_deployment",
    "render_html",
    "write_report",
]

_LAZY = {
    "DeploymentSources": "deployment",
    "open_deployment": "deployment",
    "write_report": "deployment",
    "render_html": "html",
    "compute_report": "population",
}


def __getattr__(name: str) -> Any:
    return _load(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return sorted(__all__)
