"""The ``when:`` condition language: parsing, load-time checks and precompiled evaluation.

A condition is YAML data, never code (nothing is ``eval``-ed)::

    {topic: politics}                          # the message has the label
    {topic: {in: [politics, elections]}}       # ... one of the labels
    {topic: {all: [health, minors]}}           # ... all of them
    {cohort: minor}                            # equality
    {channel: {not_in: [internal]}}
    {metadata.plan: {in: [free, trial]}}       # an attribute declared in context.attributes
    {member: gpt-safe}                         # the member the router is about to serve
    {time: {between: ["22:00", "06:00"]}}      # local time of day, wraps midnight
    {weekday: {in: [sat, sun]}}
    {language: {in: [fr, de]}}                 # the detected language (None: short/unsure)
    {field: {exists: true}}                    # the field is present (topic: any label)
    {all: [c1, c2]}, {any: [c1, c2]}, {not: c}  # combinators
    {cohort: minor, channel: web}              # several keys: all must hold

Every field, topic label, cohort, channel and attribute is checked when the policy loads; an
unknown one is an error that names its position. Compilation turns a condition into nested
closures so evaluation costs a few hundred nanoseconds and is a pure function of the
:class:`RequestContext`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._yaml import LocatedYAML
from ..exceptions import ConfigIssue

__all__ = [
    "CONDITION_FIELDS",
    "WEEKDAYS",
    "CompiledCondition",
    "ConditionVocabulary",
    "RequestContext",
    "compile_condition",
]

#: Fields a condition may test (plus ``metadata.<attribute>``).
CONDITION_FIELDS = ("topic", "cohort", "channel", "member", "time", "weekday", "language")
#: Weekday names, Monday first (as ``datetime.weekday()``).
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_COMBINATORS = ("all", "any", "not")
_OPS = ("in", "not_in", "all", "eq", "ne", "between", "exists")
_HHMM = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")

Path_ = tuple[str | int, ...]
Test = Callable[["RequestContext"], bool]


@dataclass(frozen=True)
class RequestContext:
    """What a condition can see of one request. Built by the pipeline, never from user edits.

    Attributes:
        topics: Topic labels of every text of the request (all roles, tool results).
        cohort: The user's cohort from the authenticated request (``minor``, ``student``...).
        channel: Where the request came from (``web``, ``api``...).
        attributes: Other authenticated metadata, usable as ``metadata.<name>``.
        member: The member the router is about to serve (set during evaluation).
        minute: Local minute of the day, 0..1439, in the policy's time zone.
        weekday: Local weekday, 0 = Monday.
        language: Detected language of the request's texts (ISO 639), None when no text is
            long and clear enough to tell (:mod:`palm_middleware.guard.language`); only
            detected when the policy uses it.
    """

    topics: frozenset[str] = frozenset()
    cohort: str | None = None
    channel: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    member: str | None = None
    minute: int | None = None
    weekday: int | None = None
    language: str | None = None

    def with_member(self, member: str | None) -> RequestContext:
        """A copy with ``member`` set."""
        return RequestContext(
            self.topics,
            self.cohort,
            self.channel,
            self.attributes,
            member,
            self.minute,
            self.weekday,
            self.language,
        )

    def describe(self) -> str:
        """One line for explanations."""
        parts = [f"topics={sorted(self.topics)}"]
        for name in ("cohort", "channel", "member", "language"):
            v = getattr(self, name)
            if v is not None:
                parts.append(f"{name}={v}")
        parts.extend(f"metadata.{k}={v}" for k, v in sorted(self.attributes.items()))
        if self.minute is not None:
            parts.append(f"time={self.minute // 60:02d}:{self.minute % 60:02d}")
        if self.weekday is not None:
            parts.append(f"weekday={WEEKDAYS[self.weekday]}")
        return ", ".join(parts)


@dataclass(frozen=True)
class ConditionVocabulary:
    """The names conditions may use, from the policy's ``topics`` and ``context`` sections."""

    topics: frozenset[str]
    cohorts: frozenset[str] | None = None
    channels: frozenset[str] | None = None
    attributes: Mapping[str, frozenset[str] | None] = field(default_factory=dict)


@dataclass(frozen=True)
class CompiledCondition:
    """A checked condition: ``test(ctx)`` is its value; ``text`` a readable form."""

    test: Test
    text: str
    uses_member: bool
    children: tuple[CompiledCondition, ...] = ()

    def trace(self, ctx: RequestContext, depth: int = 0) -> list[str]:
        """Lines ``[true] topic in [politics]``... showing how each part evaluated."""
        lines = [f"{'  ' * depth}[{'true' if self.test(ctx) else 'false'}] {self.text}"]
        for child in self.children:
            lines.extend(child.trace(ctx, depth + 1))
        return lines


def _never(ctx: RequestContext) -> bool:
    return False


# Stands for a part with an issue; the policy is rejected anyway, this only keeps going.
_INVALID = CompiledCondition(_never, "<invalid>", False)


class _Compiler:
    def __init__(self, doc: LocatedYAML, vocab: ConditionVocabulary, rule_id: str | None) -> None:
        self.doc = doc
        self.vocab = vocab
        self.rule_id = rule_id
        self.issues: list[ConfigIssue] = []

    def fail(self, path: Path_, msg: str) -> CompiledCondition:
        self.issues.append(self.doc.issue(path, msg, self.rule_id))
        return _INVALID

    def node(self, raw: object, path: Path_, depth: int = 0) -> CompiledCondition:
        if depth > 32:
            return self.fail(path, "condition nested more than 32 levels deep")
        if not isinstance(raw, Mapping) or not raw:
            return self.fail(
                path,
                f"a condition must be a non-empty mapping such as {{topic: politics}}; got {raw!r}",
            )
        parts = [self.key(str(k), v, (*path, str(k)), depth) for k, v in raw.items()]
        if len(parts) == 1:
            return parts[0]
        return _all(parts)

    def key(self, key: str, value: object, path: Path_, depth: int) -> CompiledCondition:
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                return self.fail(
                    path, f"'{key}' needs a non-empty list of conditions; got {value!r}"
                )
            kids = [self.node(v, (*path, i), depth + 1) for i, v in enumerate(value)]
            return _all(kids) if key == "all" else _any(kids)
        if key == "not":
            kid = self.node(value, path, depth + 1)
            t = kid.test
            return CompiledCondition(lambda ctx: not t(ctx), "not", kid.uses_member, (kid,))
        return self.leaf(key, value, path)

    def leaf(self, key: str, value: object, path: Path_) -> CompiledCondition:
        if key.startswith("metadata."):
            name = key[len("metadata.") :]
            if name in ("cohort", "channel"):
                return self.leaf(name, value, path)
            if name not in self.vocab.attributes:
                declared = sorted(self.vocab.attributes)
                return self.fail(
                    path,
                    f"unknown field {key!r}: attribute {name!r} is not "
                    f"declared in context.attributes (declared: {declared}); declare "
                    "it there so a typo cannot silently never match",
                )
            allowed = self.vocab.attributes[name]

            def get_attr(ctx: RequestContext, _n: str = name) -> str | None:
                return ctx.attributes.get(_n)

            return self.scalar(key, value, path, get_attr, allowed)
        if key == "topic":
            return self.topic(value, path)
        if key == "cohort":
            return self.scalar(key, value, path, lambda c: c.cohort, self.vocab.cohorts)
        if key == "channel":
            return self.scalar(key, value, path, lambda c: c.channel, self.vocab.channels)
        if key == "member":
            cond = self.scalar(key, value, path, lambda c: c.member, None)
            return CompiledCondition(cond.test, cond.text, True, cond.children)
        if key == "language":
            return self.scalar(key, value, path, lambda c: c.language, None)
        if key == "time":
            return self.time(value, path)
        if key == "weekday":
            return self.weekday(value, path)
        known = [*CONDITION_FIELDS, "metadata.<attribute>", *_COMBINATORS]
        return self.fail(path, f"unknown condition field {key!r}; use one of {known}")

    def ops(
        self, key: str, value: object, path: Path_, allowed: Sequence[str]
    ) -> tuple[str, object] | None:
        """Split ``{op: arg}``; a scalar means ``eq``. None when an issue was recorded."""
        if not isinstance(value, Mapping):
            if isinstance(value, list):
                self.fail(path, f"{key}: a list needs an operator: {{in: {value!r}}}")
                return None
            return "eq", value
        if len(value) != 1:
            self.fail(
                path, f"{key}: use exactly one operator of {list(allowed)}; got {list(value)}"
            )
            return None
        op, arg = next(iter(value.items()))
        if op not in allowed:
            self.fail(
                (*path, str(op)), f"{key}: unknown operator {op!r}; use one of {list(allowed)}"
            )
            return None
        return str(op), arg

    def strings(
        self, key: str, arg: object, path: Path_, allowed: frozenset[str] | None, what: str
    ) -> frozenset[str] | None:
        items = arg if isinstance(arg, list) else [arg]
        if isinstance(arg, list) and not arg:
            self.fail(path, f"{key}: the list is empty, so the condition could never hold")
            return None
        out: set[str] = set()
        ok = True
        for i, v in enumerate(items):
            where = (*path, i) if isinstance(arg, list) else path
            if not isinstance(v, str) or not v:
                self.fail(where, f"{key}: values must be non-empty strings; got {v!r}")
                ok = False
            elif allowed is not None and v not in allowed:
                self.fail(where, f"{key}: unknown {what} {v!r}; known: {sorted(allowed)}")
                ok = False
            else:
                out.add(v)
        return frozenset(out) if ok else None

    def scalar(
        self,
        key: str,
        value: object,
        path: Path_,
        get: Callable[[RequestContext], str | None],
        allowed: frozenset[str] | None,
    ) -> CompiledCondition:
        split = self.ops(key, value, path, ("eq", "ne", "in", "not_in", "exists"))
        if split is None:
            return _INVALID
        op, arg = split
        opath = path if not isinstance(value, Mapping) else (*path, op)
        if op == "exists":
            return self.exists(key, arg, opath, lambda c: get(c) is not None)
        vals = self.strings(key, arg, opath, allowed, key)
        if vals is None:
            return _INVALID
        if op in ("eq", "ne") and isinstance(arg, list):
            return self.fail(opath, f"{key}: '{op}' takes one value; use 'in' for a list")
        neg = op in ("ne", "not_in")
        shown = sorted(vals)
        text = f"{key} {'not in' if neg else 'in'} {shown}"
        if len(vals) == 1 and not neg:
            (v,) = vals
            return CompiledCondition(lambda ctx: get(ctx) == v, f"{key} == {v!r}", False)
        if neg:
            return CompiledCondition(lambda ctx: get(ctx) not in vals, text, False)
        return CompiledCondition(lambda ctx: get(ctx) in vals, text, False)

    def exists(self, key: str, arg: object, path: Path_, present: Test) -> CompiledCondition:
        if not isinstance(arg, bool):
            return self.fail(path, f"{key}: 'exists' takes true or false; got {arg!r}")
        if arg:
            return CompiledCondition(present, f"{key} exists", False)
        return CompiledCondition(lambda ctx: not present(ctx), f"{key} is absent", False)

    def topic(self, value: object, path: Path_) -> CompiledCondition:
        split = self.ops("topic", value, path, ("eq", "in", "not_in", "all", "exists"))
        if split is None:
            return _INVALID
        op, arg = split
        opath = path if not isinstance(value, Mapping) else (*path, op)
        if op == "exists":
            return self.exists("topic", arg, opath, lambda c: bool(c.topics))
        labels = self.strings(
            "topic", arg, opath, self.vocab.topics, "topic label (define it under 'topics:')"
        )
        if labels is None:
            return _INVALID
        shown = sorted(labels)
        if op == "not_in":
            return CompiledCondition(
                lambda ctx: labels.isdisjoint(ctx.topics), f"topic not in {shown}", False
            )
        if op == "all":
            return CompiledCondition(
                lambda ctx: labels <= ctx.topics, f"topic all of {shown}", False
            )
        return CompiledCondition(
            lambda ctx: not labels.isdisjoint(ctx.topics), f"topic in {shown}", False
        )

    def time(self, value: object, path: Path_) -> CompiledCondition:
        split = self.ops("time", value, path, ("between",))
        if split is None:
            return _INVALID
        op, arg = split
        opath = path if not isinstance(value, Mapping) else (*path, op)
        if op != "between" or not isinstance(arg, list) or len(arg) != 2:
            return self.fail(opath, f"time: use {{between: ['HH:MM', 'HH:MM']}}; got {value!r}")
        mins = []
        for i, s in enumerate(arg):
            m = _HHMM.match(s) if isinstance(s, str) else None
            if m is None:
                return self.fail((*opath, i), f"time: expected 'HH:MM' (00:00-23:59); got {s!r}")
            mins.append(int(m.group(1)) * 60 + int(m.group(2)))
        start, end = mins
        text = f"time between {arg[0]} and {arg[1]}"
        if start == end:
            return self.fail(opath, "time: start equals end; the window would be empty")
        if start < end:
            return CompiledCondition(
                lambda ctx: ctx.minute is not None and start <= ctx.minute < end, text, False
            )
        # Wraps midnight: 22:00-06:00 holds at 23:00 and at 05:00.
        return CompiledCondition(
            lambda ctx: ctx.minute is not None and (ctx.minute >= start or ctx.minute < end),
            text,
            False,
        )

    def weekday(self, value: object, path: Path_) -> CompiledCondition:
        split = self.ops("weekday", value, path, ("eq", "in", "not_in"))
        if split is None:
            return _INVALID
        op, arg = split
        opath = path if not isinstance(value, Mapping) else (*path, op)
        names = self.strings("weekday", arg, opath, frozenset(WEEKDAYS), "weekday")
        if names is None:
            return _INVALID
        days = frozenset(WEEKDAYS.index(n) for n in names)
        if op == "not_in":
            return CompiledCondition(
                lambda ctx: ctx.weekday not in days, f"weekday not in {sorted(names)}", False
            )
        return CompiledCondition(
            lambda ctx: ctx.weekday in days, f"weekday in {sorted(names)}", False
        )


def _and(tests: tuple[Test, ...]) -> Test:
    # Unrolled for the common sizes: a generator inside all() costs ~4x a plain `and`.
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda ctx: a(ctx) and b(ctx)
    if len(tests) == 3:
        a, b, c = tests
        return lambda ctx: a(ctx) and b(ctx) and c(ctx)

    def test(ctx: RequestContext) -> bool:
        for t in tests:
            if not t(ctx):
                return False
        return True

    return test


def _or(tests: tuple[Test, ...]) -> Test:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda ctx: a(ctx) or b(ctx)

    def test(ctx: RequestContext) -> bool:
        for t in tests:
            if t(ctx):
                return True
        return False

    return test


def _all(kids: list[CompiledCondition]) -> CompiledCondition:
    return CompiledCondition(
        _and(tuple(k.test for k in kids)), "all of", any(k.uses_member for k in kids), tuple(kids)
    )


def _any(kids: list[CompiledCondition]) -> CompiledCondition:
    return CompiledCondition(
        _or(tuple(k.test for k in kids)), "any of", any(k.uses_member for k in kids), tuple(kids)
    )


def compile_condition(
    raw: Any,
    path: Sequence[str | int],
    doc: LocatedYAML,
    vocab: ConditionVocabulary,
    rule_id: str | None = None,
) -> tuple[CompiledCondition, list[ConfigIssue]]:
    """Check and compile one condition.

    Args:
        raw: The condition as parsed from YAML.
        path: Its key path in the document (for locating issues).
        doc: The located document.
        vocab: Declared topics, cohorts, channels and attributes.
        rule_id: Cited in issues.

    Returns:
        The compiled condition and the issues found (compiled parts with issues never hold).
    """
    c = _Compiler(doc, vocab, rule_id)
    node = c.node(raw, tuple(path))
    return node, c.issues
