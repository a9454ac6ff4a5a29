"""A LiteLLM proxy deployment with PALM, written to a folder: ``palm.yaml``, ``config.yaml``, keys.

Every scripted user gets a personal API key; only its SHA-256 digest is written to ``palm.yaml``
(``palm_litellm.auth`` derives the user from the key, never from a request field). The proxy
master key acts as the app ``admin``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..exceptions import ConfigError
from ..portfolio.manifest import (
    AdapterBackend,
    LiteLLMBackend,
    OnnxBackend,
    Portfolio,
    PromptedBackend,
    load_portfolio,
)

__all__ = ["Deployment", "write_deployment"]


@dataclass(frozen=True)
class Deployment:
    """A written deployment folder and the raw keys that authenticate against it."""

    root: Path
    config: Path
    """LiteLLM proxy config (``litellm --config``)."""
    palm_config: Path
    """``palm.yaml`` (the proxy's ``PALM_CONFIG``)."""
    master_key: str
    keys: Mapping[str, str]
    """User name → raw API key (kept in memory only; the files hold digests)."""
    portfolio: Portfolio


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _model_list(portfolio: Portfolio, bases: Mapping[str, Path]) -> list[dict[str, Any]]:
    """Model groups: ``auto`` (re-targeted per user by the hook), one per base, one per member
    that runs its own engine. Prompted members need no group: the hook sends them to their base
    with the member's system prompt and parameters."""
    default = portfolio.default_member or portfolio.ids[0]
    groups = ["auto", *sorted(bases)]
    targets = {"auto": default}
    for m in portfolio.members:
        if isinstance(m.backend, (OnnxBackend, AdapterBackend)):
            groups.append(m.id)
            targets[m.id] = m.id
        elif isinstance(m.backend, PromptedBackend):
            if m.backend.base not in bases:
                raise ConfigError(
                    f"member {m.id!r} runs on base {m.backend.base!r}, which has no folder; "
                    f"give it with --base {m.backend.base}=DIR"
                )
        elif isinstance(m.backend, LiteLLMBackend):
            raise ConfigError(
                f"member {m.id!r} is a remote LiteLLM model; the demo serves "
                "local ONNX members only"
            )
    if isinstance(portfolio.member(default).backend, PromptedBackend):
        # `auto` must name a real deployment; the hook re-targets it before it is called.
        targets["auto"] = portfolio.member(default).backend.base  # type: ignore[union-attr]
    return [
        {"model_name": g, "litellm_params": {"model": f"palm_onnx/{targets.get(g, g)}"}}
        for g in dict.fromkeys(groups)
    ]


def write_deployment(
    root: str | Path,
    *,
    portfolio: str | Path,
    policy: str | Path,
    bases: Mapping[str, str | Path],
    users: Sequence[str],
    store: str = "palm.db",
    mode: str = "mean",
    pair_cost: float | None = None,
) -> Deployment:
    """Write ``palm.yaml`` and ``config.yaml`` to ``root`` for a proxy serving ``portfolio``.

    Args:
        root: Deployment folder (created). The SQLite store lives here.
        portfolio: Manifest whose members have local backends.
        policy: Bounds policy file.
        bases: Shared base name → model folder, for prompted and adapter members.
        users: Names that get a personal key each.
        store: SQLite file name inside ``root`` (``":memory:"`` keeps nothing).
        mode: Routing mode (``mean``, ``thompson`` or ``robust``).
        pair_cost: the most an A/B pair's second member may cost the user; None: the proxy's
            default (0.4).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    portfolio_path = Path(portfolio).resolve()
    manifest = load_portfolio(portfolio_path)
    base_dirs = {name: Path(p).resolve() for name, p in bases.items()}
    for name, folder in base_dirs.items():
        if not (folder / "model.onnx").is_file():
            raise ConfigError(f"base {name!r}: {folder} holds no model.onnx")
    keys = {u: f"sk-palm-{u}-{secrets.token_hex(12)}" for u in users}
    master = f"sk-palm-admin-{secrets.token_hex(16)}"
    palm = {
        "portfolio": str(portfolio_path),
        "policy": str(Path(policy).resolve()),
        "store": store,
        "mode": mode,
        **({"pair_cost": pair_cost} if pair_cost is not None else {}),
        "route_models": ["auto"],
        "bases": {k: str(v) for k, v in base_dirs.items()},
        "auth": {
            "keys": [{"sha256": _digest(k), "user": u} for u, k in keys.items()],
            "master_key_app": "admin",
        },
    }
    config = {
        "model_list": _model_list(manifest, base_dirs),
        "litellm_settings": {
            "custom_provider_map": [
                {"provider": "palm_onnx", "custom_handler": "palm_litellm.provider.instance"}
            ],
            "callbacks": ["palm_litellm.hook.instance"],
        },
        "general_settings": {
            "master_key": master,
            "custom_auth": "palm_litellm.auth.user_api_key_auth",
        },
    }
    header = "# Written by `palm demo`; keys are stored as SHA-256 digests only.\n"
    palm_path = root / "palm.yaml"
    palm_path.write_text(header + yaml.safe_dump(palm, sort_keys=False), encoding="utf-8")
    config_path = root / "config.yaml"
    # The master key is in this file (LiteLLM reads it from here): owner-only permissions.
    config_path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    config_path.chmod(0o600)
    return Deployment(
        root=root,
        config=config_path,
        palm_config=palm_path,
        master_key=master,
        keys=keys,
        portfolio=manifest,
    )
