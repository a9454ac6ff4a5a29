"""Read a deployment's ``palm.yaml`` far enough to report on it: portfolio, policy, store.

The full schema belongs to the proxy adapter (``palm_litellm.config``); the report needs three
keys and must not import the adapter, so it reads them here and ignores the others. The store
is opened only if it exists: a report never creates an empty database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .._yaml import load_yaml_file
from ..exceptions import ConfigError
from ..policy import BoundsPolicy, load_policy
from ..portfolio.manifest import Portfolio, load_portfolio
from ..stores.base import Store
from .privacy import DEFAULT_MIN_GROUP_SIZE

__all__ = ["DeploymentSources", "open_deployment", "write_report"]


@dataclass(frozen=True)
class DeploymentSources:
    """What a report reads: the deployment's portfolio, policy and (open) store."""

    root: Path
    portfolio: Portfolio
    policy: BoundsPolicy
    store: Store

    def close(self) -> None:
        """Close the store."""
        self.store.close()


def open_deployment(path: str | Path) -> DeploymentSources:
    """Open the portfolio, policy and store named by ``palm.yaml`` (paths relative to it).

    Raises:
        ConfigError: a key is missing or wrong (file:line:col and the field), or the store is
            in memory or does not exist.
    """
    path = Path(path)
    doc = load_yaml_file(path)
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigError(doc.issue((), "palm.yaml must be a mapping"))
    root = path.parent

    def text(key: str, default: str | None = None) -> str:
        value = data.get(key, default)
        if not isinstance(value, str) or not value:
            raise ConfigError(doc.issue((key,), f"must be a path (string); got {value!r}"))
        return value

    portfolio = load_portfolio(root / text("portfolio"))
    if data.get("policy") is None:
        policy = load_policy(Path(str(resources.files("palm_middleware") / "data" / "policy.yaml")))
    else:
        policy = load_policy(root / text("policy"))
    store_path = _store_path(doc, data.get("store", "palm.db"))
    full = root / store_path
    if not full.is_file():
        raise ConfigError(doc.issue(("store",), f"{full} does not exist (nothing recorded yet?)"))
    from ..stores.sqlite import SQLiteStore

    return DeploymentSources(root, portfolio, policy, SQLiteStore(full))


def _store_path(doc: Any, spec: object) -> str:
    if isinstance(spec, dict):
        kind = spec.get("kind")
        if kind == "sqlite":
            spec = spec.get("path", "palm.db")
        else:
            raise ConfigError(
                doc.issue(
                    ("store", "kind"),
                    f"{kind!r} cannot be read by `palm report`; read the report "
                    "from the running proxy instead: GET /palm/v1/admin/report (master key)",
                )
            )
    if not isinstance(spec, str) or not spec:
        raise ConfigError(doc.issue(("store",), f"must be a SQLite path; got {spec!r}"))
    if spec == ":memory:":
        raise ConfigError(
            doc.issue(
                ("store",),
                "':memory:' keeps nothing after the proxy stops; "
                "read the report from the running proxy: GET /palm/v1/admin/report",
            )
        )
    return spec


def write_report(
    sources: DeploymentSources,
    out: str | Path,
    *,
    candidate: BoundsPolicy | None = None,
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
    stem: str = "report",
) -> tuple[Path, Path]:
    """Compute the report and write ``<stem>.html`` and ``<stem>.json`` into ``out``.

    Returns:
        The paths of the page and of the JSON file.
    """
    from .html import render_html
    from .population import compute_report

    report = compute_report(
        sources.store,
        sources.portfolio,
        sources.policy,
        candidate=candidate,
        min_group_size=min_group_size,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page, data = out / f"{stem}.html", out / f"{stem}.json"
    page.write_text(render_html(report), encoding="utf-8")
    data.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return page, data
