"""Does a new version of a policy weaken its ``law`` layer? (Refused on reload unless allowed.)

The law layer is what a deployment owes to others (regulators, its users' safety); an edit of
the policy file, a half-written file that still parses, or a bad merge must not quietly remove
it. :func:`law_weakenings` compares two versions and lists every way the new one might let
through something the old one stopped. It is deliberately **conservative**: a change counts
as weakening unless it is provably at least as strict, so a harmless edit of a law rule (a
reworded condition, a keyword's case) is also reported and needs the deployment's explicit
``allow_law_weakening``. For each ``law`` rule of the old version, the new version weakens it
when:

* the rule id is gone, or the rule is no longer in the ``law`` layer;
* its action is looser (``block`` > ``pin`` > ``use_default`` > ``clamp``), or it pins another
  member;
* unless it now blocks: a floor (``min``) is lowered or removed, a cap (``max``),
  ``max_l1_from_default`` or ``max_step`` is raised or removed, ``min_events`` is lowered, or a
  ``personalization: false`` / ``exploration: false`` switch is dropped;
* its ``when:`` changed (only removing it, so the rule always applies, is accepted) or its
  ``unless:`` changed (only removing it is accepted);
* it no longer checks replies (``on:`` lost ``reply``) or requests;
* a topic its conditions test positively (``topic: x``, ``in``, ``all``, ``exists``) lost a
  keyword or prototype, its similarity threshold rose, it gained ``ignore`` phrases, or its
  classifier or external source changed or went away; a topic tested negatively
  (``unless:``, ``not``, ``not_in``) changed at all;
* its conditions read the clock (``time``, ``weekday``) and the time zone changed;
* it depends on the default weights (``max_l1_from_default``, ``use_default``) and they changed.

New law rules, stricter values and any change outside the law layer are not weakenings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bounds import BoundsPolicy
from .models import BoundRule, TopicSpec

__all__ = ["Weakening", "law_weakenings"]

_RANK = {"clamp": 0, "use_default": 1, "pin": 2, "block": 3}


@dataclass(frozen=True)
class Weakening:
    """One way a new policy version is weaker than the old one in the law layer."""

    rule_id: str
    """The old law rule concerned."""
    what: str
    """What changed, in words."""

    def __str__(self) -> str:
        return f"law rule {self.rule_id!r}: {self.what}"


def law_weakenings(old: BoundsPolicy, new: BoundsPolicy) -> list[Weakening]:
    """Every way ``new`` weakens a ``law``-layer rule of ``old`` (empty: ``new`` may serve).

    Args:
        old: The policy in force.
        new: The candidate version.

    Returns:
        The weakenings found, in the old policy's rule order.
    """
    new_rules = {r.id: r for r in new.rules}
    out: list[Weakening] = []
    for o in old.rules:
        if o.layer != "law":
            continue
        n = new_rules.get(o.id)
        if n is None:
            out.append(Weakening(o.id, "removed"))
            continue
        if n.layer != "law":
            out.append(Weakening(o.id, f"moved from the law layer to {n.layer!r}"))
            continue
        out.extend(Weakening(o.id, w) for w in _rule_weakenings(o, n))
        out.extend(Weakening(o.id, w) for w in _context_weakenings(o, n, old, new))
    return out


def _rule_weakenings(o: BoundRule, n: BoundRule) -> list[str]:
    found: list[str] = []
    oa, na = o.action or "clamp", n.action or "clamp"
    if _RANK[na] < _RANK[oa]:
        found.append(f"action {oa!r} weakened to {na!r}")
    elif oa == na == "pin" and n.member != o.member:
        found.append(f"pins member {n.member!r} instead of {o.member!r}")
    if o.when is not None and n.when is not None and n.when != o.when:
        found.append(f"condition 'when' changed from {o.when!r} to {n.when!r}")
    if o.when is None and n.when is not None:
        found.append(f"now applies only when {n.when!r}")
    if n.unless is not None and n.unless != o.unless:
        found.append(f"condition 'unless' changed from {o.unless!r} to {n.unless!r}")
    lost_on = [x for x in o.on if x not in n.on]
    if lost_on:
        found.append(f"no longer checks the {' or '.join(lost_on)} ('on' was {o.on})")
    if na == "block":
        return found  # nothing is served where it applies: its constraints no longer matter
    for trait, floor in (o.min or {}).items():
        got = (n.min or {}).get(trait)
        if got is None or got < floor:
            found.append(f"floor min.{trait} lowered from {floor} to {got}")
    for trait, cap in (o.max or {}).items():
        got = (n.max or {}).get(trait)
        if got is None or got > cap:
            found.append(f"cap max.{trait} raised from {cap} to {got}")
    for name in ("max_l1_from_default", "max_step"):
        before, after = getattr(o, name), getattr(n, name)
        if before is not None and (after is None or after > before):
            found.append(f"{name} raised from {before} to {after}")
    if o.min_events is not None and (n.min_events is None or n.min_events < o.min_events):
        found.append(f"min_events lowered from {o.min_events} to {n.min_events}")
    for name in ("personalization", "exploration"):
        if getattr(o, name) is False and getattr(n, name) is not False:
            found.append(f"'{name}: false' removed")
    return found


def _context_weakenings(
    o: BoundRule, n: BoundRule, old: BoundsPolicy, new: BoundsPolicy
) -> list[str]:
    """What the rule's conditions read that lives outside the rule: topics, time zone, default."""
    found: list[str] = []
    refs: dict[str, set[bool]] = {}
    clock = False
    old_topics = old.spec.topics if old.spec is not None else {}
    new_topics = new.spec.topics if new.spec is not None else {}
    # Only what the new rule still tests matters (a removed condition tests nothing).
    for cond, positive in ((n.when, True), (n.unless, False)):
        if cond is not None:
            clock |= _walk(cond, positive, refs, frozenset(old_topics))
    for topic, polarities in sorted(refs.items()):
        before, after = old_topics.get(topic), new_topics.get(topic)
        if before is None:
            continue  # not tested by the old version: the condition change is reported already
        if after is None:
            found.append(f"topic {topic!r} is no longer defined")
        elif polarities == {True}:
            found.extend(f"topic {topic!r}: {w}" for w in _narrowed(before, after))
        elif after != before:
            found.append(f"topic {topic!r}, tested negatively, changed")
    if clock and new.timezone != old.timezone:
        found.append(f"time zone changed from {old.timezone!r} to {new.timezone!r}")
    uses_default = o.max_l1_from_default is not None or (o.action or "clamp") == "use_default"
    if uses_default and not np.array_equal(old.default.values, new.default.values):
        found.append("the default weights it serves or measures drift from changed")
    return found


def _narrowed(before: TopicSpec, after: TopicSpec) -> list[str]:
    found: list[str] = []
    lost = [k for k in before.keywords if k not in set(after.keywords)]
    if lost:
        found.append(f"keywords removed: {lost}")
    weak = set(after.weak_keywords) | set(after.keywords)
    lost_weak = [k for k in before.weak_keywords if k not in weak]
    if lost_weak:
        found.append(f"weak keywords removed: {lost_weak}")
    gone = [p for p in before.prototypes if p not in set(after.prototypes)]
    if gone:
        found.append(f"{len(gone)} prototype(s) removed")
    if after.threshold > before.threshold:
        found.append(f"threshold raised from {before.threshold} to {after.threshold}")
    added = [k for k in after.ignore if k not in set(before.ignore)]
    if added:
        found.append(f"ignore phrases added: {added}")
    bc, ac = before.classifier, after.classifier
    if bc is not None and (
        ac is None
        or (ac.name, ac.label) != (bc.name, bc.label)
        or (ac.threshold or 0.0) > (bc.threshold or 0.0)
        or (ac.threshold is None) != (bc.threshold is None)
        or (ac.weak_threshold or 0.0) > (bc.weak_threshold or 0.0)
        or (ac.weak_threshold is None) != (bc.weak_threshold is None)
        or (ac.reply_threshold or 0.0) > (bc.reply_threshold or 0.0)
        or (ac.reply_threshold is None) != (bc.reply_threshold is None)
    ):
        found.append(f"classifier changed from {bc!r} to {ac!r}")
    if before.external is not None and after.external != before.external:
        found.append("external guard source changed or removed")
    return found


def _walk(cond: Any, positive: bool, refs: dict[str, set[bool]], topics: frozenset[str]) -> bool:
    """Record the topics ``cond`` tests, with polarity; return True if it reads the clock."""
    clock = False
    if not isinstance(cond, Mapping):
        return False
    for key, value in cond.items():
        if key in ("all", "any") and isinstance(value, list):
            for kid in value:
                clock |= _walk(kid, positive, refs, topics)
        elif key == "not":
            clock |= _walk(value, not positive, refs, topics)
        elif key in ("time", "weekday"):
            clock = True
        elif key == "topic":
            op, arg = next(iter(value.items())) if isinstance(value, Mapping) else ("eq", value)
            if op == "exists":
                labels: list[Any] = sorted(topics)
                pol = positive if arg is True else not positive
            else:
                labels = arg if isinstance(arg, list) else [arg]
                pol = not positive if op == "not_in" else positive
            for label in labels:
                refs.setdefault(str(label), set()).add(pol)
    return clock
