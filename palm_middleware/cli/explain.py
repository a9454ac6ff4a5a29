"""``palm explain POLICY --user U --message M``: which rules fire for a request, and why."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``explain`` sub-command to ``sub``."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "explain",
        help="show which policy rules fire for a request and why",
        description=(
            "Evaluate POLICY for one request: topics of the message, each rule's condition "
            "(true/false per part), the winning action, the weights before and after the "
            "bounds, and the member served. With --db the user's stored profile is used; "
            "otherwise the deployment default."
        ),
    )
    parser.add_argument("policy", metavar="POLICY", help="policy YAML file")
    parser.add_argument("--user", default="anonymous", help="user id (with --db: its profile)")
    parser.add_argument("--message", "-m", default="", help="the last user message")
    parser.add_argument("--cohort", help="authenticated cohort (e.g. minor)")
    parser.add_argument("--channel", help="authenticated channel")
    parser.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="authenticated metadata attribute (repeatable)",
    )
    parser.add_argument("--time", help="local time HH:MM in the policy's time zone (default: now)")
    parser.add_argument("--weights", help="weights as JSON {trait: w} (default: the default)")
    parser.add_argument(
        "--evidence",
        type=float,
        default=100.0,
        help="effective evidence behind --weights (default 100)",
    )
    parser.add_argument("--portfolio", help="portfolio YAML (default: the bundled one)")
    parser.add_argument("--db", help="SQLite store to read the user's profile from")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the explanation; 0 when served, 3 when the request would be blocked."""
    import numpy as np

    from ..data import bundled
    from ..policy import load_policy
    from ..policy.conditions import RequestContext
    from ..policy.context import build_context
    from ..policy.topics import TopicClassifier
    from ..portfolio.manifest import load_portfolio
    from ..routing import Router

    policy = load_policy(args.policy)
    portfolio = load_portfolio(args.portfolio or bundled("portfolio.yaml"))
    topics = TopicClassifier.build(policy.spec.topics if policy.spec is not None else {})
    labels = topics.classify(args.message)
    md: dict[str, Any] = {"cohort": args.cohort, "channel": args.channel}
    for item in args.attr:
        name, _, value = item.partition("=")
        md[name] = value
    from ..topic_labels import TopicLabeller

    said = [{"role": "user", "content": args.message}]
    language = TopicLabeller(topics, None).language(policy, said)
    ctx = build_context(policy, md, time.time(), labels, language)
    if args.time:
        hh, _, mm = args.time.partition(":")
        ctx = RequestContext(
            ctx.topics,
            ctx.cohort,
            ctx.channel,
            ctx.attributes,
            None,
            int(hh) * 60 + int(mm or 0),
            ctx.weekday,
            ctx.language,
        )
    weights = policy.default.values
    evidence = args.evidence
    if args.weights:
        weights = policy.space.vector(json.loads(args.weights), fill=0.0)
    if args.db:
        from ..pipeline import Palm
        from ..stores.sqlite import SQLiteStore

        with SQLiteStore(args.db) as store:
            palm = Palm(portfolio, policy, store)
            prof = palm.profile(args.user)
            weights = np.array(list(prof.weights.values()))
            evidence = prof.evidence
    router = Router(portfolio)
    ev = policy.evaluate(ctx, weights, evidence=evidence, choose=lambda w: router.route(w).member)
    member = (
        ev.member
        if ev.action == "pin"
        else (None if ev.action == "block" else router.route(ev.clamp.weights).member)
    )
    names = policy.space.names
    rules: list[dict[str, Any]] = []
    for r in policy.rules:
        cond = policy.conditions.get(r.id)
        holds = True if cond is None else bool(cond.test(ctx.with_member(member)))
        rules.append(
            {
                "id": r.id,
                "layer": r.layer,
                "action": r.action or "clamp",
                "applies": holds,
                "fired": r.id in ev.rules_fired,
                "trace": cond.trace(ctx.with_member(member)) if cond else ["always"],
                "description": r.description,
            }
        )
    out = {
        "policy": policy.name,
        "policy_version": policy.version,
        "user": args.user,
        "context": ctx.describe(),
        "topics": sorted(labels),
        "topic_scores": topics.scores(args.message),
        "weights_in": {n: round(float(v), 4) for n, v in zip(names, weights)},
        "weights_out": {n: round(float(v), 4) for n, v in zip(names, ev.clamp.weights)},
        "action": ev.action,
        "action_rule": ev.action_rule,
        "member": member,
        "message": ev.message,
        "rules_fired": list(ev.rules_fired),
        "reason": ev.clamp.reason,
        "rules": rules,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"policy {policy.name} (version {policy.version})")
        print(f"context: {out['context']}")
        for row in rules:
            mark = "FIRES" if row["fired"] else ("applies" if row["applies"] else "-")
            print(f"  [{mark:>7}] {row['id']} ({row['layer']}, {row['action']})")
            for line in row["trace"]:
                print(f"            {line}")
        print(f"weights: {out['weights_in']} -> {out['weights_out']} ({ev.clamp.reason})")
        if ev.action == "block":
            print(f"BLOCKED by rule {ev.action_rule!r}: {ev.message}")
        else:
            why = f" (action {ev.action} by rule {ev.action_rule!r})" if ev.action_rule else ""
            print(f"member: {member}{why}")
    return 3 if ev.action == "block" else 0
