"""Compiling a validated policy spec into a :class:`~.bounds.BoundsPolicy`, once, at load.

The compiler merges the rules (:mod:`.merge`), compiles the ``when``/``unless`` conditions,
proves the bounds feasible (naming the rules in conflict, located ``file:line:col``), warns when
the default breaks a bound, and hashes the content into the version every decision cites.
The evaluator it returns never comes back here.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from typing import Any

from .._yaml import LocatedYAML
from ..exceptions import (
    ConfigError,
    ConfigIssue,
    PolicyInfeasibleError,
    PolicyValidationError,
    PolicyWarning,
)
from ..traits import TraitSpace
from .bounds import BoundsPolicy
from .conditions import CompiledCondition, ConditionVocabulary, RequestContext, compile_condition
from .merge import MergedBounds, cite, has_constraint, merge_rules
from .models import (
    DEFAULT_UNGUARDED_MESSAGE,
    LANGUAGE_RULE_ID,
    V2_POLICY_KEYS,
    V2_RULE_KEYS,
    BoundRule,
    DefaultsSpec,
    PolicySpec,
)
from .projection import FEASIBILITY_TOL, l1_distance_to_feasible

__all__ = [
    "compile_conditions",
    "compile_policy",
    "default_policy",
    "policy_hash",
    "policy_vocabulary",
    "with_language_rule",
]


def _source_issues(spec: PolicySpec, doc: LocatedYAML) -> list[ConfigIssue]:
    """Topics naming a classifier or callable that cannot be loaded: refused at load."""
    from ..guard.classifier import load_guard
    from ..guard.external import import_callable

    issues = []
    for label, topic in spec.topics.items():
        ext = topic.external
        if ext is not None and ext.callable is not None:
            try:
                import_callable(ext.callable)
            except ConfigError as exc:
                issues.append(doc.issue(("topics", label, "external", "callable"), str(exc)))
        ref = topic.classifier
        if ref is None:
            continue
        path = ("topics", label, "classifier")
        try:
            clf = load_guard(ref.name)
        except ConfigError as exc:
            issues.append(doc.issue(path, str(exc)))
            continue
        want = ref.label or label
        if want not in clf.labels_:
            issues.append(
                doc.issue(
                    path,
                    f"classifier {ref.name!r} has no label {want!r}; its labels are "
                    f"{list(clf.labels_)} (set 'label:' to one of them)",
                )
            )
    return issues


def _language_issues(spec: PolicySpec, doc: LocatedYAML) -> list[ConfigIssue]:
    """``languages:`` and its companions: consistent, and codes the detector knows."""
    issues = []
    if spec.languages is None:
        if spec.unguarded_language is not None:
            issues.append(
                doc.issue(
                    ("unguarded_language",),
                    "'unguarded_language' needs 'languages:' (the languages the guard covers)",
                )
            )
        if spec.unguarded_message is not None:
            issues.append(
                doc.issue(
                    ("unguarded_message",),
                    "'unguarded_message' needs 'languages:' (the languages the guard covers)",
                )
            )
        return issues
    if spec.unguarded_message is not None and spec.unguarded_language == "input_rules_only":
        issues.append(
            doc.issue(
                ("unguarded_message",),
                "'unguarded_message' is only used with 'unguarded_language: refuse'",
            )
        )
    for i, rule in enumerate(spec.bounds):
        if rule.id == LANGUAGE_RULE_ID:
            issues.append(
                doc.issue(
                    ("bounds", i, "id"),
                    f"rule id {LANGUAGE_RULE_ID!r} is reserved for the rule 'languages:' adds; "
                    "rename this rule",
                    rule.id,
                )
            )
    from ..guard.language import known_languages

    try:
        known = known_languages()
    except ConfigError as exc:
        return [*issues, doc.issue(("languages",), str(exc))]
    for i, code in enumerate(spec.languages):
        if code not in known:
            issues.append(
                doc.issue(
                    ("languages", i),
                    f"unknown language code {code!r}; the language detector knows the ISO 639 "
                    f"codes {', '.join(sorted(known))}",
                )
            )
    return issues


def with_language_rule(spec: PolicySpec) -> PolicySpec:
    """``spec`` plus the law-layer rule its ``languages:`` field stands for (if any).

    The rule is an ordinary conditional rule, so it is explained, audited (``rules_active``)
    and checked for weakening on reload like any other: a request whose detected language is
    not guarded is blocked (``refuse``) or served the default member (``input_rules_only``:
    ``action: use_default``, so a ``pin`` or ``block`` rule that also applies still wins).
    """
    if spec.languages is None:
        return spec
    langs = list(spec.languages)
    refuse = spec.unguarded_language != "input_rules_only"
    rule = BoundRule(
        id=LANGUAGE_RULE_ID,
        layer="law",
        description=f"Requests in a language the guard does not cover (it covers {langs}) are "
        + ("refused." if refuse else "served the default member under the request rules."),
        when={"all": [{"language": {"exists": True}}, {"language": {"not_in": langs}}]},
        action="block" if refuse else "use_default",
        message=(spec.unguarded_message or DEFAULT_UNGUARDED_MESSAGE.format(
            languages=", ".join(langs)
        )) if refuse else None,
    )  # fmt: skip
    return spec.model_copy(update={"bounds": [*spec.bounds, rule]})


def compile_policy(spec: PolicySpec, doc: LocatedYAML) -> BoundsPolicy:
    """Merge the rules of a schema-valid ``spec``, compile its conditions, check feasibility.

    Trait names must already be checked (see the loader). ``doc`` locates issues in the text.
    Feasibility is checked with **every** rule applied at once, conditional ones included:
    merging only tightens (floors max, caps min, radius min), so if all rules together admit
    a weight vector, every combination of rules that can apply at run time does too. Rules
    whose conditions never hold together may therefore still be reported as contradictory;
    the error names them.

    Raises:
        PolicyValidationError: A ``when:`` condition is malformed or names something unknown.
        PolicyInfeasibleError: No weight vector satisfies the bounds; names the rules in conflict.

    Warns:
        PolicyWarning: The default weights violate an unconditional floor or cap (they are
            clamped when served).
    """
    issues = _language_issues(spec, doc)
    written, spec = spec, with_language_rule(spec)
    conditions, found = compile_conditions(spec, doc)
    issues.extend(found)
    issues.extend(_source_issues(spec, doc))
    if issues:
        raise PolicyValidationError(issues)
    if any(r.conditional and has_constraint(r) for r in spec.bounds):
        # Feasibility of the worst case: every rule applied together.
        _check_feasible(merge_rules(spec, spec.bounds), spec, doc)
    base = merge_rules(spec, [r for r in spec.bounds if not r.conditional])
    _check_feasible(base, spec, doc)
    _warn_default(base, doc)
    return BoundsPolicy.compiled(
        base,
        spec=spec,
        name=spec.name or _stem(doc.filename),
        version=policy_hash(written),
        source=doc.filename,
        rules=tuple(spec.bounds),
        conditions=conditions,
    )


def default_policy(space: TraitSpace, *, name: str = "default") -> BoundsPolicy:
    """A policy without bounds: uniform default, prior strength 10, everything allowed.

    >>> policy = default_policy(TraitSpace(["safety", "humor"]))
    >>> policy.clamp([0.1, 0.9], evidence=5).weights.tolist()
    [0.1, 0.9]
    """
    spec = PolicySpec(
        version=1,
        name=name,
        traits=list(space.names),
        defaults=DefaultsSpec(weights=None, prior_strength=10.0),
    )
    return compile_policy(spec, LocatedYAML(data={}, positions={}, filename="<default>"))


def policy_hash(spec: PolicySpec) -> str:
    """Short sha256 of the canonical JSON of ``spec``: the :attr:`BoundsPolicy.version` cited.

    Key order and formatting do not matter. Schema-version-1 files hash exactly as before
    schema version 2 existed (its fields are left out), so a deployment's audit trail keeps
    citing the same version for an unchanged file.
    """
    data = spec.model_dump(mode="json", by_alias=True)
    if not any(v is not None for v in data.get("learning", {}).values()):
        # Left unset, the learning section hashes as before it existed.
        data.pop("learning", None)
    if spec.schema_version == 1:
        for key in V2_POLICY_KEYS:
            data.pop(key, None)
        for rule in data.get("bounds", []):
            for key in V2_RULE_KEYS:
                rule.pop(key, None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def policy_vocabulary(spec: PolicySpec) -> ConditionVocabulary:
    """The names ``when:`` conditions of ``spec`` may use."""
    ctx = spec.context
    return ConditionVocabulary(
        topics=frozenset(spec.topics),
        cohorts=frozenset(ctx.cohorts) if ctx.cohorts is not None else None,
        channels=frozenset(ctx.channels) if ctx.channels is not None else None,
        attributes={
            k: (frozenset(v) if v is not None else None) for k, v in ctx.attributes.items()
        },
    )


def compile_conditions(
    spec: PolicySpec, doc: LocatedYAML
) -> tuple[dict[str, CompiledCondition], list[ConfigIssue]]:
    """Compile the ``when``/``unless`` of every rule; issues are located at the bad key."""
    vocab = policy_vocabulary(spec)
    out: dict[str, CompiledCondition] = {}
    issues: list[ConfigIssue] = []
    for i, rule in enumerate(spec.bounds):
        parts = []
        for key in ("when", "unless"):
            raw = getattr(rule, key)
            if raw is None:
                continue
            cond, found = compile_condition(raw, ("bounds", i, key), doc, vocab, rule.id)
            issues.extend(found)
            parts.append((key, cond))
        if not parts:
            continue
        if len(parts) == 1 and parts[0][0] == "when":
            out[rule.id] = parts[0][1]
            continue
        when = next((c for k, c in parts if k == "when"), None)
        unless = (
            next(c for k, c in parts if k == "unless")
            if any(k == "unless" for k, _ in parts)
            else None
        )
        assert unless is not None
        wt = when.test if when is not None else None
        ut = unless.test

        def test(ctx: RequestContext, _w: Any = wt, _u: Any = ut) -> bool:
            return (_w is None or bool(_w(ctx))) and not _u(ctx)

        kids = tuple(c for _, c in parts)
        text = "when ... unless ..." if when is not None else "unless ..."
        out[rule.id] = CompiledCondition(test, text, any(c.uses_member for c in kids), kids)
    return out, issues


def _check_feasible(merged: MergedBounds, spec: PolicySpec, doc: LocatedYAML) -> None:
    """Raise :class:`PolicyInfeasibleError` when no weight vector meets ``merged``."""
    space, lower, upper, src = merged.space, merged.lower, merged.upper, merged.sources
    lo_src, up_src = src.lower, src.upper
    where = {r.id: i for i, r in enumerate(spec.bounds)}

    def at(rid: str, *key: str | int) -> tuple[str | int, ...]:
        return ("bounds", where[rid], *key)

    issues: list[ConfigIssue] = []
    conflict: list[str] = []
    for i, name in enumerate(space.names):
        if lower[i] > upper[i]:
            conflict.extend(_unique([*lo_src[i], *up_src[i]]))
            issues.append(
                doc.issue(
                    at(lo_src[i][0], "min", name),
                    f"floor {lower[i]:g} on {name!r} ({cite(lo_src[i])}) is above its cap "
                    f"{upper[i]:g} ({cite(up_src[i])}); no weight vector satisfies both",
                    lo_src[i][0],
                )
            )
    floor_rules = _unique([r for s in lo_src for r in s])
    cap_rules = _unique([r for s in up_src for r in s])
    if float(lower.sum()) > 1.0 + FEASIBILITY_TOL:
        conflict.extend(floor_rules)
        parts = ", ".join(
            f"{n} >= {lower[i]:g} ({cite(lo_src[i])})"
            for i, n in enumerate(space.names)
            if lo_src[i]
        )
        issues.append(
            doc.issue(
                at(floor_rules[0], "min"),
                f"floors sum to {float(lower.sum()):.6g} > 1, so no weight vector satisfies them: "
                f"{parts}; lower some of them",
                floor_rules[0],
            )
        )
    if float(upper.sum()) < 1.0 - FEASIBILITY_TOL:
        conflict.extend(cap_rules)
        parts = ", ".join(
            f"{n} <= {upper[i]:g} ({cite(up_src[i])})" for i, n in enumerate(space.names)
        )
        issues.append(
            doc.issue(
                at(cap_rules[0], "max"),
                f"caps sum to {float(upper.sum()):.6g} < 1, so no weight vector satisfies them: "
                f"{parts}; raise some of them",
                cap_rules[0],
            )
        )
    drift, drift_src = merged.max_drift, src.max_drift
    if not issues and drift is not None:
        c = merged.default.values
        dist = l1_distance_to_feasible(c, lower, upper)
        if dist > drift + FEASIBILITY_TOL:
            involved = [
                r
                for i in range(space.dim)
                if c[i] < lower[i] or c[i] > upper[i]
                for r in (lo_src[i] if c[i] < lower[i] else up_src[i])
            ]
            conflict.extend(_unique([*drift_src, *involved]))
            issues.append(
                doc.issue(
                    at(drift_src[0], "max_l1_from_default"),
                    f"max_l1_from_default {drift:g} ({cite(drift_src)}) is smaller than the L1 "
                    f"distance {dist:.6g} from the default weights to the nearest vector meeting "
                    f"the floors and caps ({cite(_unique(involved))}); every vector breaks one; "
                    "raise the radius or move the default",
                    drift_src[0],
                )
            )
    if not issues:
        return
    cond = [r.id for r in merged.rules if r.conditional and r.id in conflict]
    if cond:
        issues.append(
            doc.issue(
                ("bounds", where[cond[0]]),
                f"conditional rules {cond} are checked as if they all applied at once "
                "(any combination of them may hold at run time); if their conditions "
                "cannot hold together, make that explicit with 'unless:' on one of them "
                "or loosen a bound",
                cond[0],
            )
        )
    raise PolicyInfeasibleError(issues, _unique(conflict))


def _warn_default(merged: MergedBounds, doc: LocatedYAML) -> None:
    """Warn for each trait whose default weight breaks a floor or cap (served clamped)."""
    c, lower, upper = merged.default.values, merged.lower, merged.upper
    for i, name in enumerate(merged.space.names):
        if c[i] < lower[i]:
            bound, src = f"floor {lower[i]:g}", merged.sources.lower[i]
        elif c[i] > upper[i]:
            bound, src = f"cap {upper[i]:g}", merged.sources.upper[i]
        else:
            continue
        issue = doc.issue(
            ("defaults", "weights", name),
            f"default weight {c[i]:g} for {name!r} breaks the {bound} ({cite(src)}); the default "
            "is clamped into the bounds when served",
            src[0],
        )
        # Attributed to the loader's public function (load_policy -> _from_doc -> compile_policy).
        warnings.warn(str(issue), PolicyWarning, stacklevel=4)


def _unique(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _stem(filename: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    return stem.strip("<>") or "policy"
