"""Loading bounds policies from YAML, with every problem located as ``file:line:col``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .._yaml import LocatedYAML, load_yaml_file, load_yaml_text
from ..exceptions import (
    ConfigIssue,
    InvalidWeightsError,
    PolicySyntaxError,
    PolicyValidationError,
)
from ..traits import TraitSpace
from .bounds import BoundsPolicy
from .compiler import compile_policy
from .models import (
    CONSTRAINT_FIELDS,
    RESERVED_POLICY_KEYS,
    RESERVED_RULE_KEYS,
    V2_POLICY_KEYS,
    V2_RULE_KEYS,
    BoundRule,
    DefaultsSpec,
    PolicySpec,
)

__all__ = ["load_policy", "parse_policy", "policy_from_data"]


def load_policy(path: str | Path) -> BoundsPolicy:
    """Load, validate, merge and feasibility-check a policy file.

    Args:
        path: The YAML file. A missing file is an error, never skipped.

    Returns:
        The merged :class:`BoundsPolicy`.

    Raises:
        PolicyValidationError: Syntax, schema or value errors, all at once, each located as
            ``file:line:col: rule 'id': field: message``.
        PolicyInfeasibleError: No weight vector satisfies the bounds (``rule_ids`` names the
            rules in conflict).

    Warns:
        PolicyWarning: The default weights break a floor or cap.
    """
    return _from_doc(load_yaml_file(path, PolicySyntaxError))


def parse_policy(text: str, filename: str = "<string>") -> BoundsPolicy:
    """Like :func:`load_policy`, from YAML text; ``filename`` is used in messages."""
    return _from_doc(load_yaml_text(text, filename, PolicySyntaxError))


def policy_from_data(data: Mapping[str, Any], source: str = "<dict>") -> BoundsPolicy:
    """Like :func:`load_policy`, from plain data (messages carry fields but no line numbers)."""
    return _from_doc(LocatedYAML(data=data, positions={}, filename=source))


def _from_doc(doc: LocatedYAML) -> BoundsPolicy:
    if not isinstance(doc.data, Mapping):
        got = "an empty document" if doc.data is None else type(doc.data).__name__
        raise PolicyValidationError(
            doc.issue((), f"a policy must be a mapping with version, traits and bounds; got {got}")
        )
    issues: list[ConfigIssue] = []
    spec: PolicySpec | None = None
    data: Mapping[str, Any] = doc.data
    if data.get("version") == 1:
        v1 = _v1_issues(doc)
        if v1:
            issues.extend(v1)
            data = _strip_v2(data)  # reported above; do not report them twice
    try:
        spec = PolicySpec.model_validate(data)
    except ValidationError as exc:
        issues.extend(_issues_from_validation(exc, doc))
    # Name checks run on the raw data so they are reported together with schema errors.
    issues.extend(_name_issues(doc))
    if issues or spec is None:
        raise PolicyValidationError(_dedupe_sorted(issues))
    return compile_policy(spec, doc)


def _issues_from_validation(exc: ValidationError, doc: LocatedYAML) -> list[ConfigIssue]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
        kind = err["type"]
        msg = str(err["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if kind == "extra_forbidden" and loc:
            msg = _unknown_key_message(loc)
        elif kind == "missing":
            msg = "required field is missing"
        elif "input" in err and not isinstance(err["input"], (Mapping, list)):
            msg = f"{msg}; got {err['input']!r}"
        out.append(doc.issue(loc, msg, _rule_id_at(doc, loc)))
    return out


def _v1_issues(doc: LocatedYAML) -> list[ConfigIssue]:
    """Version 2 keys in a version 1 file: rejected by name, never silently given a meaning."""
    out = []
    for key in V2_POLICY_KEYS:
        if key in doc.data:
            out.append(doc.issue((key,), f"{RESERVED_POLICY_KEYS[key]}; remove the section"))
    rules = doc.data.get("bounds")
    if isinstance(rules, list):
        for i, rule in enumerate(rules):
            if not isinstance(rule, Mapping):
                continue
            for key in V2_RULE_KEYS:
                if key in rule:
                    out.append(
                        doc.issue(
                            ("bounds", i, key),
                            f"{RESERVED_RULE_KEYS[key]}; remove the key (the rule is rejected, not "
                            "ignored)",
                            _rule_id_at(doc, ("bounds", i)),
                        )
                    )
    return out


def _strip_v2(data: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k not in V2_POLICY_KEYS}
    rules = out.get("bounds")
    if isinstance(rules, list):
        out["bounds"] = [_strip_rule(r) if isinstance(r, Mapping) else r for r in rules]
    return out


def _strip_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in rule.items() if k not in V2_RULE_KEYS}
    if len(out) < len(rule) and not any(k in out for k in CONSTRAINT_FIELDS):
        # The rule was already reported for its version 2 keys; an inert constraint keeps
        # its other fields checked without a second, misleading "needs a constraint" issue.
        out["min_events"] = 0
    return out


def _unknown_key_message(loc: tuple[str | int, ...]) -> str:
    key = str(loc[-1])
    in_rule = len(loc) == 3 and loc[0] == "bounds" and isinstance(loc[1], int)
    if in_rule and key in RESERVED_RULE_KEYS:
        return f"{RESERVED_RULE_KEYS[key]}; remove the key (the rule is rejected, not ignored)"
    if len(loc) == 1 and key in RESERVED_POLICY_KEYS:
        return f"{RESERVED_POLICY_KEYS[key]}; remove the section"
    if in_rule:
        allowed = list(BoundRule.model_fields)
    elif len(loc) == 1:
        allowed = [f.alias or n for n, f in PolicySpec.model_fields.items()]
    elif len(loc) == 2 and loc[0] == "defaults":
        allowed = list(DefaultsSpec.model_fields)
    else:
        return f"unknown key {key!r}"
    return f"unknown key {key!r}; allowed keys: {', '.join(allowed)}"


def _rule_id_at(doc: LocatedYAML, loc: Sequence[str | int]) -> str | None:
    if len(loc) < 2 or loc[0] != "bounds" or not isinstance(loc[1], int):
        return None
    rules = doc.data.get("bounds") if isinstance(doc.data, Mapping) else None
    if not isinstance(rules, list) or not 0 <= loc[1] < len(rules):
        return None
    rule = rules[loc[1]]
    rid = rule.get("id") if isinstance(rule, Mapping) else None
    return rid if isinstance(rid, str) and rid else None


def _name_issues(doc: LocatedYAML) -> list[ConfigIssue]:
    """Unknown or malformed trait names, duplicate traits and duplicate rule ids."""
    data = doc.data
    issues: list[ConfigIssue] = []
    traits = data.get("traits")
    known: set[str] | None = None
    if isinstance(traits, list) and traits and all(isinstance(t, str) for t in traits):
        known = set()
        for i, name in enumerate(traits):
            try:
                TraitSpace([name])
            except InvalidWeightsError as exc:
                issues.append(doc.issue(("traits", i), str(exc)))
                continue
            if name in known:
                issues.append(doc.issue(("traits", i), f"trait {name!r} is listed twice"))
            known.add(name)

    def unknown(mapping: object, path: tuple[str | int, ...], rule_id: str | None) -> None:
        if known is None or not isinstance(mapping, Mapping):
            return
        for key in mapping:
            if isinstance(key, str) and key not in known:
                issues.append(
                    doc.issue(
                        (*path, key),
                        f"unknown trait {key!r}; the policy's traits are {list(traits)}",
                        rule_id,
                    )
                )

    defaults = data.get("defaults")
    if isinstance(defaults, Mapping):
        unknown(defaults.get("weights"), ("defaults", "weights"), None)
    rules = data.get("bounds")
    if isinstance(rules, list):
        first: dict[str, int] = {}
        for i, rule in enumerate(rules):
            if not isinstance(rule, Mapping):
                continue
            rid = rule.get("id")
            rid = rid if isinstance(rid, str) and rid else None
            for key in ("min", "max"):
                unknown(rule.get(key), ("bounds", i, key), rid)
            if rid is None:
                continue
            if rid in first:
                line, _ = doc.locate(("bounds", first[rid], "id"))
                where = f" (first defined at line {line})" if line is not None else ""
                issues.append(
                    doc.issue(("bounds", i, "id"), f"duplicate rule id {rid!r}{where}", rid)
                )
            else:
                first[rid] = i
    return issues


def _dedupe_sorted(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    unique = list(dict.fromkeys(issues))
    big = 1 << 30
    return sorted(unique, key=lambda i: (i.line or big, i.column or big))
