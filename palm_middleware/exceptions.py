"""The palm-middleware exception tree.

Our exception hierarchy::

    PalmError
      ConfigError(ValueError)            deployer-fixable input; .source = (file, line, col)
        PolicyError                      bounds policy files
          PolicyValidationError          schema or value errors (.issues)
            PolicySyntaxError            YAML that does not parse, or is too large
          PolicyInfeasibleError          bounds that no weight vector satisfies (.rule_ids)
          PolicyWeakeningError           a reloaded version weakens a law rule (.rule_ids)
        ManifestError                    portfolio manifests
      InvalidParameterError(ValueError, TypeError)
        InvalidRequestError              a request body PALM cannot read (.param names the field)
        RequestTooLargeError             a request over the deployment's limits (HTTP 413)
      NotFittedError(ValueError, AttributeError)
      InvalidWeightsError(ValueError)    NaN, negative, wrong length, unknown trait
      InvalidEventError(ValueError)      malformed feedback events
      IdentityError(PermissionError)     a caller reaching for another user's data
      DecisionBlocked                    the policy refuses the request (.rule_id, .user_message)
      ComparisonUnavailable              no A/B pair may be shown to this user now (.reason)
      TopicLabelError                    topic labelling failed: request refused (fail closed)
      StoreError                         is_retryable = False
        StoreUnavailable                 is_retryable = True
      EngineError                        running a portfolio member (ONNX Runtime, tokenizer)
        ModelLoadError                   missing, corrupt or mismatched model folder; no GPU
        GenerationError                  a request failed (bad prompt or parameters, run failure)
    PalmWarning(UserWarning)
      PolicyWarning
      ConvergenceWarning
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ComparisonUnavailable",
    "ConfigError",
    "ConfigIssue",
    "ConvergenceWarning",
    "DecisionBlocked",
    "EngineError",
    "GenerationError",
    "IdentityError",
    "InvalidEventError",
    "InvalidParameterError",
    "InvalidRequestError",
    "InvalidWeightsError",
    "ManifestError",
    "ModelLoadError",
    "NotFittedError",
    "PalmError",
    "PalmWarning",
    "PolicyError",
    "PolicyInfeasibleError",
    "PolicySyntaxError",
    "PolicyValidationError",
    "PolicyWarning",
    "PolicyWeakeningError",
    "RequestTooLargeError",
    "StoreError",
    "StoreUnavailable",
    "TopicLabelError",
]


class PalmError(Exception):
    """Base class of every error raised by palm-middleware."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file, with its location."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    field: str | None = None
    rule_id: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        rule = f"rule {self.rule_id!r}: " if self.rule_id else ""
        fld = f"{self.field}: " if self.field else ""
        return f"{where}{rule}{fld}{self.message}"


class ConfigError(PalmError, ValueError):
    """A configuration file (policy, manifest, cue lexicon) is invalid.

    ``issues`` lists every problem found, each with file, line, column and field.
    """

    def __init__(self, issues: list[ConfigIssue] | ConfigIssue | str) -> None:
        if isinstance(issues, str):
            issues = [ConfigIssue(issues)]
        elif isinstance(issues, ConfigIssue):
            issues = [issues]
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

    @property
    def source(self) -> tuple[str | None, int | None, int | None]:
        """(file, line, column) of the first issue."""
        first = self.issues[0]
        return (first.file, first.line, first.column)


class PolicyError(ConfigError):
    """A bounds policy cannot be used."""


class PolicyValidationError(PolicyError):
    """A bounds policy has wrong fields, types or values."""


class PolicySyntaxError(PolicyValidationError):
    """A policy file is not valid YAML (or is too large): located file:line:col.

    A subclass of :class:`PolicyValidationError` so callers written for version 1, which
    raised that for syntax errors, keep catching it.
    """


class PolicyInfeasibleError(PolicyError):
    """The bounds of a policy admit no weight vector; ``rule_ids`` names the rules in conflict."""

    def __init__(self, issues: list[ConfigIssue] | ConfigIssue | str, rule_ids: list[str]) -> None:
        super().__init__(issues)
        self.rule_ids = list(rule_ids)


class PolicyWeakeningError(PolicyError):
    """A new version of a policy file weakens a ``law``-layer rule; ``rule_ids`` names them.

    Raised (and the previous version kept serving) by a reloading policy unless the deployment
    allows law changes; see :mod:`palm_middleware.policy.weakening` for what counts.
    """

    def __init__(self, issues: list[ConfigIssue] | ConfigIssue | str, rule_ids: list[str]) -> None:
        super().__init__(issues)
        self.rule_ids = list(rule_ids)


class ManifestError(ConfigError):
    """A portfolio manifest or candidates file cannot be used."""


class InvalidParameterError(PalmError, ValueError, TypeError):
    """A parameter of a function or estimator is out of its allowed range."""


class InvalidRequestError(InvalidParameterError):
    """A request body PALM cannot read; ``param`` is the field path (``messages[2].content``).

    Refused rather than passed on: a member must never read text the guard did not see.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class RequestTooLargeError(InvalidRequestError):
    """A request over the deployment's size limits (bytes, messages, characters): HTTP 413."""


class NotFittedError(PalmError, ValueError, AttributeError):
    """An estimator was used before ``fit``."""


class InvalidWeightsError(PalmError, ValueError):
    """A weight vector is not on the probability simplex over the trait space."""


class InvalidEventError(PalmError, ValueError):
    """A feedback event is malformed or refers to something unknown."""


class IdentityError(PalmError, PermissionError):
    """A caller tried to read or change data that is not its own."""


class DecisionBlocked(PalmError):
    """The bounds policy refuses to serve the request."""

    def __init__(self, rule_id: str, user_message: str) -> None:
        super().__init__(f"blocked by rule {rule_id!r}: {user_message}")
        self.rule_id = rule_id
        self.user_message = user_message


class ComparisonUnavailable(PalmError):
    """No A/B pair may be shown to this user now: a rule decides the member, the policy does
    not allow exploration here, or no second member is within the pair cost bound.

    Not a fault of the request: ask no A/B question this time; a thumb on the served reply
    still teaches (HTTP 409 at the proxy).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"no A/B comparison for this user now: {reason}")
        self.reason = reason


class TopicLabelError(PalmError):
    """The topic classifier failed on a request, so topic rules could not be evaluated.

    The request is refused rather than served without its topic rules (fail closed); the
    cause is chained. Retryable: the classifier may recover (HTTP 503).
    """

    is_retryable = True


class StoreError(PalmError):
    """The profile/event/audit store failed."""

    is_retryable = False


class StoreUnavailable(StoreError):
    """The store is temporarily unavailable (locked, down); the call may be retried."""

    is_retryable = True


class EngineError(PalmError):
    """Running a portfolio member failed; ONNX Runtime errors are translated into subclasses."""

    is_retryable = False


class ModelLoadError(EngineError):
    """A model folder cannot be loaded: missing or corrupt files, mismatched tokenizer, no GPU."""


class GenerationError(EngineError):
    """A generation request failed: invalid prompt or parameters, or the runtime failed mid-run."""


class PalmWarning(UserWarning):
    """Base class of palm-middleware warnings."""


class PolicyWarning(PalmWarning):
    """A policy is valid but probably not what the deployer meant."""


class ConvergenceWarning(PalmWarning):
    """An iterative solver stopped before reaching its tolerance."""
