"""Portfolio manifests: the members a deployment routes among and their measured reward profiles.

A manifest is YAML::

    version: 1
    traits: [helpfulness, brevity]
    members:
      - id: terse
        backend: {kind: prompted, base: smollm2, system_prompt: "Answer in one line."}
        reward: {helpfulness: 0.61, brevity: 0.93}
        provenance: {prompt_set: prompts-v1, n: 150, stderr: {helpfulness: 0.02, brevity: 0.01}}
    certificate: {eps: 0.05, delta: 0.02, method: greedy}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .._yaml import LocatedYAML, issues_from_pydantic, load_yaml_file, load_yaml_text
from ..exceptions import ConfigIssue, InvalidWeightsError, ManifestError
from ..traits import TraitSpace
from ..types import FloatArray, MemberId

__all__ = [
    "AdapterBackend",
    "Backend",
    "Certificate",
    "EngineChoice",
    "LiteLLMBackend",
    "Member",
    "OnnxBackend",
    "Portfolio",
    "PromptedBackend",
    "Provenance",
    "load_portfolio",
    "parse_portfolio",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EngineChoice = Literal["auto", "onnx", "genai"]
"""Which loop runs a local member: ``onnx`` (PALM's raw ONNX Runtime loop), ``genai`` (ONNX
Runtime GenAI's ``og.Generator``) or ``auto`` (GenAI when the folder has ``genai_config.json``
and ``onnxruntime-genai`` is installed, else the raw loop)."""


class OnnxBackend(_Strict):
    """A full ONNX model folder."""

    kind: Literal["onnx"]
    path: str
    """Folder with the exported model (``model.onnx``, tokenizer files)."""
    engine: EngineChoice = "auto"


class AdapterBackend(_Strict):
    """A shared ONNX base model plus a LoRA adapter applied per request."""

    kind: Literal["adapter"]
    base: str
    adapter: str
    engine: EngineChoice = "auto"


class PromptedBackend(_Strict):
    """A shared base model steered by a system prompt, few-shot examples and decoding parameters."""

    kind: Literal["prompted"]
    base: str
    system_prompt: str | None = None
    few_shot: list[dict[str, str]] = Field(default_factory=list)
    generation: dict[str, float | int | str | list[str]] = Field(default_factory=dict)
    engine: EngineChoice = "auto"


class LiteLLMBackend(_Strict):
    """Any model LiteLLM can call, by its model (group) name."""

    kind: Literal["litellm"]
    model: str


Backend = Annotated[
    OnnxBackend | AdapterBackend | PromptedBackend | LiteLLMBackend, Field(discriminator="kind")
]


class Provenance(_Strict):
    """Where a reward profile was measured."""

    prompt_set: str | None = None
    n: int | None = Field(default=None, ge=1)
    stderr: dict[str, float] = Field(default_factory=dict)
    scorers: dict[str, str] = Field(default_factory=dict)


class Certificate(_Strict):
    """The portfolio's guarantee: for every w some member has V_w ≥ (1 − eps)·OPT(w) − delta."""

    eps: float = Field(ge=0)
    delta: float = Field(ge=0)
    method: str
    multiplicative_gap: float | None = None
    additive_gap: float | None = None
    pool_size: int | None = Field(default=None, ge=1)
    reference: str | None = None


class _MemberModel(_Strict):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
    description: str | None = None
    backend: Backend | None = None
    reward: dict[str, float]
    provenance: Provenance | None = None


class _ManifestModel(_Strict):
    version: Literal[1] = 1
    name: str | None = None
    traits: list[str] = Field(min_length=1)
    default_member: str | None = None
    members: list[_MemberModel] = Field(min_length=1)
    certificate: Certificate | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_empty(cls, data: Any) -> Any:
        if data is None:
            raise ValueError("manifest is empty")
        return data


@dataclass(frozen=True)
class Member:
    """One portfolio member: an id, how to run it, and its reward profile in trait order."""

    id: MemberId
    reward: FloatArray
    stderr: FloatArray
    backend: OnnxBackend | AdapterBackend | PromptedBackend | LiteLLMBackend | None = None
    provenance: Provenance | None = None
    description: str | None = None


@dataclass(frozen=True)
class Portfolio:
    """A validated set of members over a trait space.

    ``rewards`` has shape (n_members, n_traits); row i is member i's reward profile r̂ ∈ [0, 1]^d.
    """

    space: TraitSpace
    members: tuple[Member, ...]
    certificate: Certificate | None = None
    name: str | None = None
    default_member: MemberId | None = None
    source: str | None = None
    rewards: FloatArray = field(init=False, repr=False)
    stderrs: FloatArray = field(init=False, repr=False)
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.members:
            raise ManifestError("a portfolio needs at least one member")
        ids = [m.id for m in self.members]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ManifestError(f"member ids must be unique; repeated: {dup}")
        rewards = np.vstack([m.reward for m in self.members]).astype(np.float64)
        if rewards.shape[1] != self.space.dim:
            raise ManifestError(
                f"reward profiles have {rewards.shape[1]} entries; the trait space has "
                f"{self.space.dim}"
            )
        if not np.all(np.isfinite(rewards)) or rewards.min() < 0 or rewards.max() > 1:
            raise ManifestError("rewards must be finite numbers in [0, 1]")
        if self.default_member is not None and self.default_member not in ids:
            raise ManifestError(f"default_member {self.default_member!r} is not a member id")
        rewards.setflags(write=False)
        stderrs = np.vstack([m.stderr for m in self.members]).astype(np.float64)
        stderrs.setflags(write=False)
        object.__setattr__(self, "rewards", rewards)
        object.__setattr__(self, "stderrs", stderrs)
        object.__setattr__(self, "_index", {m: i for i, m in enumerate(ids)})

    @classmethod
    def from_rewards(
        cls,
        traits: Sequence[str] | TraitSpace,
        rewards: Mapping[str, Sequence[float]] | Mapping[str, Mapping[str, float]],
        **kwargs: Any,
    ) -> Portfolio:
        """Build an abstract portfolio (no backends) from ``{member_id: reward}``."""
        space = traits if isinstance(traits, TraitSpace) else TraitSpace(traits)
        members = []
        for mid, r in rewards.items():
            vec = (
                space.vector(r, what=f"reward of {mid!r}")
                if isinstance(r, Mapping)
                else np.asarray(r, dtype=np.float64)
            )
            members.append(Member(id=mid, reward=vec, stderr=np.zeros(space.dim)))
        return cls(space=space, members=tuple(members), **kwargs)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def ids(self) -> tuple[MemberId, ...]:
        """Member ids in manifest order."""
        return tuple(m.id for m in self.members)

    def index(self, member_id: MemberId) -> int:
        """Row of ``member_id`` in :attr:`rewards`."""
        try:
            return self._index[member_id]
        except KeyError:
            raise KeyError(f"unknown member {member_id!r}; members are {list(self.ids)}") from None

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._index

    def member(self, member_id: MemberId) -> Member:
        """The member called ``member_id``."""
        return self.members[self.index(member_id)]

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain data (inverse of :func:`load_portfolio`)."""
        out: dict[str, Any] = {"version": 1}
        if self.name:
            out["name"] = self.name
        out["traits"] = list(self.space.names)
        if self.default_member:
            out["default_member"] = self.default_member
        members = []
        for m in self.members:
            d: dict[str, Any] = {"id": m.id}
            if m.description:
                d["description"] = m.description
            if m.backend is not None:
                d["backend"] = m.backend.model_dump(exclude_defaults=True)
                d["backend"]["kind"] = m.backend.kind
            d["reward"] = {
                n: round(float(v), 6) for n, v in zip(self.space.names, m.reward, strict=True)
            }
            if m.provenance is not None:
                d["provenance"] = m.provenance.model_dump(exclude_defaults=True)
            members.append(d)
        out["members"] = members
        if self.certificate is not None:
            out["certificate"] = self.certificate.model_dump(exclude_none=True)
        return out

    def to_yaml(self) -> str:
        """The manifest as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> None:
        """Write the manifest to ``path``."""
        Path(path).write_text(self.to_yaml(), encoding="utf-8")


def load_portfolio(path: str | Path) -> Portfolio:
    """Load and validate a manifest file; errors name file, line, column and field."""
    return _from_doc(load_yaml_file(path, ManifestError))


def parse_portfolio(text: str, filename: str = "<string>") -> Portfolio:
    """Parse manifest YAML text (see :func:`load_portfolio`)."""
    return _from_doc(load_yaml_text(text, filename, ManifestError))


def _from_doc(doc: LocatedYAML) -> Portfolio:
    if not isinstance(doc.data, dict):
        raise ManifestError(doc.issue((), "a manifest must be a mapping with traits and members"))
    try:
        model = _ManifestModel.model_validate(doc.data)
    except ValidationError as exc:
        raise ManifestError(issues_from_pydantic(exc, doc)) from None
    issues: list[ConfigIssue] = []
    try:
        space = TraitSpace(model.traits)
    except InvalidWeightsError as exc:
        raise ManifestError(doc.issue(("traits",), str(exc))) from None
    members = []
    seen: dict[str, int] = {}
    for i, m in enumerate(model.members):
        here = ("members", i)
        if m.id in seen:
            issues.append(doc.issue((*here, "id"), f"duplicate member id {m.id!r}"))
        seen[m.id] = i
        reward = np.full(space.dim, np.nan)
        for name, v in m.reward.items():
            if name not in space:
                issues.append(
                    doc.issue(
                        (*here, "reward", name),
                        f"unknown trait {name!r}; traits are {list(space.names)}",
                    )
                )
                continue
            if not math.isfinite(v) or not 0.0 <= v <= 1.0:
                issues.append(
                    doc.issue((*here, "reward", name), f"reward must be in [0, 1]; got {v!r}")
                )
                continue
            reward[space.index(name)] = v
        missing = [
            n
            for n, v in zip(space.names, reward, strict=True)
            if math.isnan(v) and n not in m.reward
        ]
        if missing:
            issues.append(doc.issue((*here, "reward"), f"missing traits {missing}"))
        stderr = np.zeros(space.dim)
        if m.provenance is not None:
            for name, v in m.provenance.stderr.items():
                if name not in space:
                    issues.append(
                        doc.issue((*here, "provenance", "stderr", name), f"unknown trait {name!r}")
                    )
                elif not math.isfinite(v) or v < 0:
                    issues.append(
                        doc.issue(
                            (*here, "provenance", "stderr", name),
                            f"standard error must be finite and >= 0; got {v!r}",
                        )
                    )
                else:
                    stderr[space.index(name)] = v
        members.append(
            Member(
                id=m.id,
                reward=np.nan_to_num(reward),
                stderr=stderr,
                backend=m.backend,
                provenance=m.provenance,
                description=m.description,
            )
        )
    if model.default_member is not None and model.default_member not in seen:
        issues.append(
            doc.issue(("default_member",), f"{model.default_member!r} is not a member id")
        )
    if issues:
        raise ManifestError(issues)
    return Portfolio(
        space=space,
        members=tuple(members),
        certificate=model.certificate,
        name=model.name,
        default_member=model.default_member,
        source=doc.filename,
    )
