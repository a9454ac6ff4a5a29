"""The PALM side of a LiteLLM proxy deployment: ``palm.yaml`` and the runtime built from it.

``palm.yaml`` (paths relative to the file)::

    portfolio: portfolio.yaml          # members, backends, reward profiles
    policy: policy.yaml                # bounds policy (omit: the bundled default)
    reload: true                       # follow policy edits without restart (complete files
    reload_interval: 1.0               # only, law layer never weakened), checked every N s
    allow_law_weakening: false         # true: a reload may remove or weaken `law` rules
    store: palm.db                     # SQLite file; ":memory:" keeps profiles in memory
    # store: {kind: postgres, dsn_env: PALM_POSTGRES_DSN, schema: palm}   # shared by replicas
    route_models: [auto]               # model names PALM routes per user (what keys may call)
    allow_direct_members: false        # true: non-admin keys may also name a member's group;
                                       # the policy's conditional rules still run on the request
    bases: {tiny: models/tiny}         # shared base models of prompted/adapter members: folders
    limits: {max_body_bytes: 1048576}  # request limits, checked before parsing (limits.py)
    runtime: {intra_op_threads: 1}     # ONNX Runtime sessions of local members (omitted keys:
                                       # PALM_ORT_* environment, else 1 thread, no spinning)
    auth:                              # used when the proxy's general_settings.custom_auth is
      keys:                            # palm_litellm.auth.user_api_key_auth
        - {sha256: 9f86d0..., user: alice}     # a personal key: acts for alice only
        - {sha256: 60303a..., app: webapp, models: [auto]}  # an app backend: names its end
                                                            # users in `user`; models it may call
      master_key_app: admin            # the proxy master key acts as this app (null: refused)

The same settings may instead live in the proxy's own ``config.yaml``, under a top-level
``palm:`` key (paths relative to that file); LiteLLM 1.106.2 reads only the keys it knows and
ignores this one. ``PALM_CONFIG`` keeps working; setting both is refused, so no one edits a
file that is not in force.

The proxy loads the hook and the provider by package path, so both share one
:class:`PalmRuntime` per process (:func:`get_runtime`).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from palm_middleware import (
    BoundsPolicy,
    ConfigError,
    MemoryStore,
    Palm,
    PalmError,
    Portfolio,
    SQLiteStore,
    load_policy,
    load_portfolio,
)
from palm_middleware._yaml import issues_from_pydantic, load_yaml_file
from palm_middleware.engines import RuntimeOptions
from palm_middleware.engines.members import engine_class, engine_for_member
from palm_middleware.engines.onnx import OnnxEngine, normalize_few_shot
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.identity import Principal
from palm_middleware.inputs import RequestLimits
from palm_middleware.policy.reload import ReloadingPolicy
from palm_middleware.portfolio.manifest import LiteLLMBackend, PromptedBackend
from palm_middleware.stores.base import Store

__all__ = [
    "CONFIG_ENV",
    "KeyEntry",
    "PalmProxySettings",
    "PalmRuntime",
    "PostgresStoreSettings",
    "RuntimeUser",
    "SECTION",
    "Target",
    "build_store",
    "get_runtime",
    "proxy_config_file",
    "runtime_error",
    "settings_source",
]

#: Environment variable naming the ``palm.yaml`` file of the running proxy.
CONFIG_ENV = "PALM_CONFIG"
#: Top-level key of the proxy's ``config.yaml`` that may hold PALM's settings.
SECTION = "palm"

PalmFactory = Callable[[Portfolio, "BoundsPolicy | ReloadingPolicy", Any], Palm]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyEntry(_Strict):
    """One API key, stored only as its SHA-256 hex digest."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    user: str | None = Field(default=None, min_length=1, max_length=256)
    """The person this key belongs to (acts for this user only)."""
    app: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[^/]+$")
    """An app backend trusted to name its own end users in the request's ``user`` field."""
    models: list[str] | None = Field(default=None, min_length=1)
    """Model names this key may call (None: the deployment's ``route_models``)."""

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


class LimitSettings(_Strict):
    """``limits:`` in ``palm.yaml``: see :class:`palm_middleware.inputs.RequestLimits`."""

    max_body_bytes: int = Field(default=RequestLimits.max_body_bytes, ge=1, strict=True)
    max_messages: int = Field(default=RequestLimits.max_messages, ge=1, strict=True)
    max_message_chars: int = Field(default=RequestLimits.max_message_chars, ge=1, strict=True)
    max_total_chars: int = Field(default=RequestLimits.max_total_chars, ge=1, strict=True)
    allow_non_text: bool = Field(default=False, strict=True)
    """Accept image/audio/file parts (never read as text); by default they are refused."""

    @property
    def core(self) -> RequestLimits:
        """The core's :class:`RequestLimits`."""
        return RequestLimits(**self.model_dump(exclude={"allow_non_text"}))


class RuntimeSettings(_Strict):
    """``runtime:`` in ``palm.yaml``: :class:`palm_middleware.engines.RuntimeOptions` of the
    local members' sessions. Keys left out keep the ``PALM_ORT_*`` environment or the default."""

    device: Literal["auto", "cpu", "cuda"] | None = None
    intra_op_threads: int | None = Field(default=None, ge=0, strict=True)
    inter_op_threads: int | None = Field(default=None, ge=0, strict=True)
    allow_spinning: bool | None = Field(default=None, strict=True)

    def options(self) -> RuntimeOptions:
        """The session options: these settings over the environment's defaults."""
        return RuntimeOptions(**self.model_dump(exclude_none=True))


class SQLiteStoreSettings(_Strict):
    """``store: {kind: sqlite, path: palm.db}`` (the default; a bare string is a path)."""

    kind: Literal["sqlite"]
    path: str = "palm.db"


class MemoryStoreSettings(_Strict):
    """``store: {kind: memory}``: profiles live and die with the process."""

    kind: Literal["memory"]


class PostgresStoreSettings(_Strict):
    """``store: {kind: postgres, ...}``: one PostgreSQL shared by every proxy replica."""

    kind: Literal["postgres"]
    dsn_env: str = Field(default="PALM_POSTGRES_DSN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable holding the DSN (the DSN itself never goes in a file or a log)."""
    db_schema: str = Field(default="palm", alias="schema", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    """Schema of this deployment's tables."""
    pool_min: int = Field(default=1, ge=0)
    pool_max: int = Field(default=10, ge=1)
    timeout: float = Field(default=5.0, gt=0)
    """Seconds to wait for a connection before 503 (writes) or the default (decisions)."""
    lock_timeout: float = Field(default=10.0, gt=0)
    """Seconds a feedback write waits for its user's lock (held by another replica)."""
    audit_shards: int | None = Field(default=None, ge=1)
    synchronous_commit: bool = True
    """Feedback and profile commits wait for the WAL flush (acknowledged = durable)."""
    audit_synchronous_commit: bool = False
    """Decision audit commits wait for the WAL flush too (an fsync per decision)."""


StoreSettings = Annotated[
    SQLiteStoreSettings | MemoryStoreSettings | PostgresStoreSettings,
    Field(discriminator="kind"),
]


class PalmProxySettings(_Strict):
    """The validated content of ``palm.yaml``."""

    portfolio: str
    policy: str | None = None
    reload: StrictBool = True
    """Follow the policy file: complete new versions serve without restart; a broken one, or
    one that weakens a ``law`` rule, is refused and audited (``ReloadingPolicy``)."""
    reload_interval: float = Field(default=1.0, gt=0, le=3600)
    """Seconds between two looks at the policy file."""
    allow_law_weakening: StrictBool = False
    """Let a reloaded policy remove or weaken ``law``-layer rules (off: such versions are
    refused and the previous policy keeps serving)."""
    store: str | StoreSettings = "palm.db"
    """A SQLite path (``":memory:"``: in memory), or ``{kind: sqlite|memory|postgres, ...}``."""
    mode: Literal["mean", "thompson", "robust"] = "mean"
    explore_cost: float = Field(default=0.2, ge=0, le=1, allow_inf_nan=False, strict=True)
    """The most a Thompson draw may cost the user: the share of the best value (under their
    clamped mean weights) it may lose (``Palm(explore_cost=)``)."""
    pair_cost: float = Field(default=0.4, ge=0, le=1, allow_inf_nan=False, strict=True)
    """The same bound on the second member of an A/B pair (``Palm(pair_cost=)``)."""
    route_models: list[str] = Field(default_factory=lambda: ["auto"], min_length=1)
    allow_direct_members: bool = False
    """Let non-admin keys name a member's model group directly (the policy's conditional rules
    still run: a block refuses, a pin or use_default serves the member the rule names)."""
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
    limits: LimitSettings = Field(default_factory=lambda: LimitSettings())
    """Request size limits (:mod:`palm_litellm.limits`); non-text parts refused unless allowed."""
    runtime: RuntimeSettings = Field(default_factory=lambda: RuntimeSettings())
    """ONNX Runtime session options of the local members (threads, spinning, device)."""

    @classmethod
    def from_file(cls, path: str | Path, section: str | None = None) -> PalmProxySettings:
        """Read and validate ``palm.yaml`` (no runtime built); errors name file, line, field.

        ``section``: the settings are the mapping under this top-level key (``config.yaml``).
        """
        doc = load_yaml_file(Path(path), ConfigError)
        data = doc.data
        prefix: tuple[str, ...] = ()
        if section is not None:
            if not isinstance(data, Mapping) or not isinstance(data.get(section), Mapping):
                raise ConfigError([doc.issue((section,), f"`{section}:` must be a mapping")])
            data, prefix = data[section], (section,)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(issues_from_pydantic(exc, doc, prefix)) from None


@dataclass(frozen=True)
class Target:
    """Where the hook sends a request for one member, and what it adds to it."""

    group: str
    system_prompt: str | None = None
    few_shot: tuple[Mapping[str, str], ...] = ()
    generation: Mapping[str, Any] | None = None
    local: bool = True
    """Served by the ``palm_onnx`` provider (PALM checks the parameters it cannot honour)."""


class PalmRuntime:
    """The pipeline, the member → model group map and the local engines of one proxy."""

    def __init__(self, settings: PalmProxySettings, root: str | Path = ".") -> None:
        self.settings = settings
        self.root = Path(root)
        self.portfolio = load_portfolio(self.root / settings.portfolio)
        if settings.policy is not None:
            policy_path = self.root / settings.policy
        else:
            from palm_middleware.data import bundled

            policy_path = bundled("policy.yaml")
        policy: BoundsPolicy | ReloadingPolicy = (
            ReloadingPolicy(
                policy_path,
                min_interval=settings.reload_interval,
                allow_law_weakening=settings.allow_law_weakening,
            )
            if settings.reload
            else load_policy(policy_path)
        )
        store = build_store(settings.store, self.root)
        factory = _import_factory(settings.factory) if settings.factory else None
        self.palm: Palm = (
            factory(self.portfolio, policy, store)
            if factory is not None
            else Palm(
                self.portfolio,
                policy,
                store,
                mode=settings.mode,
                explore_cost=settings.explore_cost,
                pair_cost=settings.pair_cost,
                limits=settings.limits.core,
                allow_non_text=settings.limits.allow_non_text,
            )
        )
        self.keys = {k.sha256: k for k in settings.auth.keys}
        self.route_models = frozenset(settings.route_models)
        self.registry = SessionRegistry(settings.runtime.options())
        self._engines: dict[str, OnnxEngine] = {}
        self._lock = threading.Lock()
        self.targets = {m.id: self._target(m.id) for m in self.portfolio.members}
        for k in settings.auth.keys:
            unknown = sorted(set(k.models or ()) - self.route_models)
            if unknown and not settings.allow_direct_members:
                raise ConfigError(
                    f"auth.keys: key {k.sha256[:8]}... may call {unknown}, which are not "
                    f"route_models {sorted(self.route_models)}; set allow_direct_members: true "
                    "to let keys name members directly"
                )

    def load_members(self) -> None:
        """Load every local member's engine now, so a broken model folder stops the start."""
        for member in self.portfolio.members:
            backend = member.backend
            if isinstance(backend, LiteLLMBackend):
                continue
            self.engine(backend.base if isinstance(backend, PromptedBackend) else member.id)

    def key_models(self, entry: KeyEntry) -> frozenset[str]:
        """Model names ``entry`` may call: its ``models`` or the deployment's route models."""
        return frozenset(entry.models) if entry.models is not None else self.route_models

    def direct_member(self, model: str) -> str | None:
        """The member a request names directly: its id, its model group or ``palm_onnx/<id>``.

        None when ``model`` names no single member (a route model, a shared base, or unknown).
        """
        if model.startswith("palm_onnx/"):
            model = model.split("/", 1)[1]
        if model in self.targets:
            return model
        owners = [m for m, t in self.targets.items() if t.group == model]
        return owners[0] if len(owners) == 1 else None

    def serves_members(self, model: str) -> bool:
        """True if ``model`` (a group, member id, base or ``palm_onnx/...``) reaches a member.

        A comma list (LiteLLM fans it out to every model named) reaches a member if any part does.
        """
        if "," in model:
            return any(self.serves_members(part.strip()) for part in model.split(","))
        if model in self.route_models or model.startswith("palm_onnx/"):
            return True
        groups = {t.group for t in self.targets.values()}
        return model in groups or model in self.targets or model in self.settings.bases

    @classmethod
    def from_file(cls, path: str | Path, section: str | None = None) -> PalmRuntime:
        """Load ``palm.yaml`` (or ``section`` of ``config.yaml``); errors name file, line, field."""
        path = Path(path)
        return cls(PalmProxySettings.from_file(path, section), root=path.parent)

    def _target(self, member_id: str) -> Target:
        member = self.portfolio.member(member_id)
        backend = member.backend
        if member_id in self.settings.groups:
            local = not isinstance(backend, LiteLLMBackend)
            return Target(self.settings.groups[member_id], local=local)
        if isinstance(backend, LiteLLMBackend):
            return Target(backend.model, local=False)
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
            folder = Path(bases[name])
            return engine_class(folder)(folder, registry=self.registry, name=name)
        raise ConfigError(
            f"palm_onnx/{name} is neither a portfolio member nor a base in `bases:`; known: "
            f"{sorted([*self.portfolio.ids, *bases])}"
        )

    def _bases(self) -> dict[str, Path]:
        return {k: self.root / v for k, v in self.settings.bases.items()}


def build_store(spec: str | StoreSettings, root: Path) -> Store:
    """The store ``palm.yaml`` asks for; SQLite paths are relative to the file."""
    if isinstance(spec, str):
        return MemoryStore() if spec == ":memory:" else SQLiteStore(root / spec)
    if isinstance(spec, MemoryStoreSettings):
        return MemoryStore()
    if isinstance(spec, SQLiteStoreSettings):
        return SQLiteStore(root / spec.path)
    from palm_middleware.stores.postgres import PostgresStore

    return PostgresStore(
        dsn_env=spec.dsn_env,
        schema=spec.db_schema,
        min_size=spec.pool_min,
        max_size=spec.pool_max,
        timeout=spec.timeout,
        lock_timeout=spec.lock_timeout,
        audit_shards=spec.audit_shards,
        synchronous_commit=spec.synchronous_commit,
        audit_synchronous_commit=spec.audit_synchronous_commit,
    )


def _import_factory(spec: str) -> PalmFactory:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"factory must be 'module:function'; got {spec!r}")
    fn: PalmFactory = getattr(importlib.import_module(module), attr)
    return fn


_runtime: PalmRuntime | None = None
_runtime_error: PalmError | None = None
_runtime_lock = threading.Lock()


def proxy_config_file() -> Path | None:
    """The ``config.yaml`` of the LiteLLM proxy this process runs (None: not a proxy).

    The proxy records it in ``proxy_server.user_config_file_path`` before it imports the
    callbacks; ``litellm --config`` also leaves it in ``WORKER_CONFIG`` for its workers.
    """
    server = sys.modules.get("litellm.proxy.proxy_server")
    path = getattr(server, "user_config_file_path", None) or os.environ.get("CONFIG_FILE_PATH")
    if not path:
        try:
            worker = json.loads(os.environ.get("WORKER_CONFIG") or "{}")
        except ValueError:
            worker = None
        path = worker.get("config") if isinstance(worker, dict) else None
    return Path(path) if isinstance(path, str) and path else None


def settings_source() -> tuple[Path, str | None]:
    """Where PALM's settings are: ``PALM_CONFIG``'s file, or the proxy config's ``palm:``.

    Raises:
        ConfigError: neither is set, or both are (one of them would be silently unused).
    """
    env = os.environ.get(CONFIG_ENV)
    proxy = proxy_config_file()
    in_proxy = False
    if proxy is not None and proxy.is_file():
        doc = load_yaml_file(proxy, ConfigError)
        in_proxy = isinstance(doc.data, Mapping) and SECTION in doc.data
    if env and in_proxy:
        raise ConfigError(
            f"PALM's settings are both in {CONFIG_ENV}={env} and under `{SECTION}:` in "
            f"{proxy}; keep one"
        )
    if env:
        return Path(env), None
    if in_proxy and proxy is not None:
        return proxy, SECTION
    raise ConfigError(
        f"no PALM settings: add a `{SECTION}:` section to the proxy's config.yaml, or set "
        f"{CONFIG_ENV} to a palm.yaml (`palm proxy` does it)"
    )


def get_runtime() -> PalmRuntime:
    """The process's runtime, built once from :func:`settings_source`.

    A build that failed is not retried: every later call raises the same error (the proxy
    answers 503 and reports not ready) until the process restarts with a fixed file.
    """
    global _runtime, _runtime_error
    if _runtime is None:
        with _runtime_lock:
            if _runtime_error is not None:
                raise _runtime_error
            if _runtime is None:
                try:
                    _runtime = PalmRuntime.from_file(*settings_source())
                except PalmError as exc:
                    _runtime_error = exc
                    raise
    return _runtime


def runtime_error() -> PalmError | None:
    """Why the process's runtime could not be built (None: built, or not tried yet)."""
    return _runtime_error


class RuntimeUser:
    """Mixin for proxy plug-ins: a runtime given explicitly (tests) or the process's shared one."""

    _runtime: PalmRuntime | None = None

    @property
    def runtime(self) -> PalmRuntime:
        """The shared runtime (built from ``PALM_CONFIG`` on first use)."""
        if self._runtime is None:
            self._runtime = get_runtime()
        return self._runtime
