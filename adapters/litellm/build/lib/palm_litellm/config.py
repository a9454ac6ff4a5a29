"""The PALM side of a LiteLLM proxy deployment: ``palm.yaml`` and the runtime built from it.

``palm.yaml`` (paths relative to the file)::

    portfolio: portfolio.yaml          # members, backends, reward profiles
    policy: policy.yaml                # bounds policy (omit: the bundled default)
    store: palm.db                     # SQLite file; ":memory:" keeps profiles in memory
    route_models: [auto]               # model names the hook routes per user; others pass through
    bases: {tiny: models/tiny}         # shared base models of prompted/adapter members: folders
    auth:                              # used when the proxy's general_settings.custom_auth is
      keys:                            # palm_litellm.auth.user_api_key_auth
        - {sha256: 9f86d0..., user: alice}     # a personal key: acts for alice only
        - {sha256: 60303a..., app: webapp}     # an app backend: names its end users in `user`
      master_key_app: admin            # the proxy master key acts as this app (null: refused)

The proxy loads the hook and the provider by package path, so both share one
:class:`PalmRuntime` per process (:func:`get_runtime`, from the ``PALM_CONFIG`` file).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from palm_middleware import (
    BoundsPolicy,
    ConfigError,
    MemoryStore,
    Palm,
    Portfolio,
    SQLiteStore,
    load_policy,
    load_portfolio,
)
from palm_middleware._yaml import issues_from_pydantic, load_yaml_file
from palm_middleware.engines.members import engine_for_member
from palm_middleware.engines.onnx import OnnxEngine, normalize_few_shot
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.identity import Principal
from palm_middleware.portfolio.manifest import LiteLLMBackend, PromptedBackend

__all__ = [
    "CONFIG_ENV",
    "KeyEntry",
    "PalmProxySettings",
    "PalmRuntime",
    "RuntimeUser",
    "Target",
    "get_runtime",
]

#: Environment variable naming the ``palm.yaml`` file of the running proxy.
CONFIG_ENV = "PALM_CONFIG"

PalmFactory = Callable[[Portfolio, BoundsPolicy, Any], Palm]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyEntry(_Strict):
    """One API key, stored only as its SHA-256 hex digest."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    user: str | None = Field(default=None, min_length=1, max_length=256)
    """The person this key belongs to (acts for this user only)."""
    app: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[^/]+$")
    """An app backend trusted to name its own end users in the request's ``user`` field."""

    @model_validator(mode="after")
    def _one_owner(self) -> KeyEntry:
        if (self.user is None) == (self.app is None):
            raise ValueError("a key needs exactly one of `user` or `app`")
        return self

    @property
    def principal(self) -> Principal:
        """The caller this key authenticates."""
        if self.app is not None:
            return Principal(self.app, acts_for_end_users=True)
        assert self.user is not None
        return Principal(self.user)


class AuthSettings(_Strict):
    """API keys for :func:`palm_litellm.auth.user_api_key_auth`."""

    keys: list[KeyEntry] = Field(default_factory=list)
    master_key_app: str | None = Field(default="admin", pattern=r"^[^/]+$")
    """App name the proxy master key acts as (it may name end users); None refuses it."""


class PalmProxySettings(_Strict):
    """The validated content of ``palm.yaml``."""

    portfolio: str
    policy: str | None = None
    store: str = "palm.db"
    mode: Literal["mean", "thompson", "robust"] = "mean"
    route_models: list[str] = Field(default_factory=lambda: ["auto"], min_length=1)
    groups: dict[str, str] = Field(default_factory=dict)
    """Model group per member id (default: a LiteLLM member's model; otherwise the member id)."""
    bases: dict[str, str] = Field(default_factory=dict)
    """Folder per shared base name (local engines)."""
    base_groups: dict[str, str] = Field(default_factory=dict)
    """Model group serving a base, for prompted members (default: the base name)."""
    client_metadata: list[str] = Field(default_factory=lambda: ["conversation_id"])
    """Keys of the request's ``metadata`` passed to the policy (never identity)."""
    factory: str | None = None
    """``module:function(portfolio, policy, store) -> Palm`` to customize the pipeline."""
    auth: AuthSettings = Field(default_factory=AuthSettings)


@dataclass(frozen=True)
class Target:
    """Where the hook sends a request for one member, and what it adds to it."""

    group: str
    system_prompt: str | None = None
    few_shot: tuple[Mapping[str, str], ...] = ()
    generation: Mapping[str, Any] | None = None


class PalmRuntime:
    """The pipeline, the member → model group map and the local engines of one proxy."""

    def __init__(self, settings: PalmProxySettings, root: str | Path = ".") -> None:
        self.settings = settings
        self.root = Path(root)
        self.portfolio = load_portfolio(self.root / settings.portfolio)
        if settings.policy is not None:
            policy = load_policy(self.root / settings.policy)
        else:
            from palm_middleware.cli._common import bundled

            policy = load_policy(bundled("policy.yaml"))
        store: Any = (
            MemoryStore()
            if settings.store == ":memory:"
            else SQLiteStore(self.root / settings.store)
        )
        factory = _import_factory(settings.factory) if settings.factory else None
        self.palm: Palm = (
            factory(self.portfolio, policy, store)
            if factory is not None
            else Palm(self.portfolio, policy, store, mode=settings.mode)
        )
        self.keys = {k.sha256: k for k in settings.auth.keys}
        self.route_models = frozenset(settings.route_models)
        self.registry = SessionRegistry()
        self._engines: dict[str, OnnxEngine] = {}
        self._lock = threading.Lock()
        self.targets = {m.id: self._target(m.id) for m in self.portfolio.members}

    @classmethod
    def from_file(cls, path: str | Path) -> PalmRuntime:
        """Load ``palm.yaml``; errors name the file, line and field."""
        path = Path(path)
        doc = load_yaml_file(path, ConfigError)
        try:
            settings = PalmProxySettings.model_validate(doc.data)
        except ValidationError as exc:
            raise ConfigError(issues_from_pydantic(exc, doc)) from None
        return cls(settings, root=path.parent)

    def _target(self, member_id: str) -> Target:
        member = self.portfolio.member(member_id)
        backend = member.backend
        if member_id in self.settings.groups:
            return Target(self.settings.groups[member_id])
        if isinstance(backend, LiteLLMBackend):
            return Target(backend.model)
        if isinstance(backend, PromptedBackend):
            return Target(
                self.settings.base_groups.get(backend.base, backend.base),
                system_prompt=backend.system_prompt,
                # Manifests may write examples as {user, assistant} pairs; the request
                # needs chat messages.
                few_shot=normalize_few_shot(backend.few_shot),
                generation=dict(backend.generation),
            )
        return Target(member_id)

    def engine(self, name: str) -> OnnxEngine:
        """The local engine serving ``palm_onnx/<name>``: a member id or a base name."""
        with self._lock:
            engine = self._engines.get(name)
            if engine is None:
                engine = self._new_engine(name)
                self._engines[name] = engine
            return engine

    def _new_engine(self, name: str) -> OnnxEngine:
        if name in self.portfolio:
            # Member paths (model folders, adapters) are relative to the manifest's folder.
            return engine_for_member(
                self.portfolio.member(name),
                self.registry,
                bases=self._bases(),
                root=(self.root / self.settings.portfolio).parent,
            )
        bases = self._bases()
        if name in bases:
            return OnnxEngine(Path(bases[name]), registry=self.registry, name=name)
        raise ConfigError(
            f"palm_onnx/{name} is neither a portfolio member nor a base in `bases:`; known: "
            f"{sorted([*self.portfolio.ids, *bases])}"
        )

    def _bases(self) -> dict[str, Path]:
        return {k: self.root / v for k, v in self.settings.bases.items()}


def _import_factory(spec: str) -> PalmFactory:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"factory must be 'module:function'; got {spec!r}")
    fn: PalmFactory = getattr(importlib.import_module(module), attr)
    return fn


_runtime: PalmRuntime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> PalmRuntime:
    """The process's runtime, built on first use from the file named by ``PALM_CONFIG``."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                path = os.environ.get(CONFIG_ENV)
                if not path:
                    raise ConfigError(
                        f"set {CONFIG_ENV} to the palm.yaml of this proxy (`palm proxy` does it)"
                    )
                _runtime = PalmRuntime.from_file(path)
    return _runtime


class RuntimeUser:
    """Mixin for proxy plug-ins: a runtime given explicitly (tests) or the process's shared one."""

    _runtime: PalmRuntime | None = None

    @property
    def runtime(self) -> PalmRuntime:
        """The shared runtime (built from ``PALM_CONFIG`` on first use)."""
        if self._runtime is None:
            self._runtime = get_runtime()
        return self._runtime
