"""The population report: what personalization does for a deployment's users, from its store.

It reads only posteriors (profiles) and decision records (audit), never message text, and shows
aggregates only: every number stands for at least ``min_group_size`` users
(:mod:`palm_middleware.report.privacy`); user keys never leave this module.

Welfare is measured with the users' inferred weights ``w`` (posterior means) and the members'
reward profiles ``R``: a user served member ``m`` gets ``w·R[m]``. Three ways to serve everyone:

* **single**: the one member with the best mean reward over the population ("one aggregate model");
* **portfolio**: what the deployment serves, the route of the weights the policy allows;
* **oracle**: the best member for each user's own weights (routing on the unclamped weights).

The share of the oracle gap closed is ``(portfolio - single) / (oracle - single)``; the cost of
the bounds is ``oracle - portfolio`` for personalized users, split over the rules that fired.
Population views evaluate the unconditional rules (no request context); conditional rules show
up in the request views, read from the recorded decisions.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..audit import verify_audit_chain
from ..policy import BoundsPolicy
from ..policy.conditions import RequestContext
from ..policy.context import build_context
from ..portfolio.manifest import Portfolio
from ..preferences.model import PosteriorSummary
from ..routing import TIE_TOLERANCE
from ..stores.base import AuditRecord, Store
from ..types import FloatArray
from .privacy import DEFAULT_MIN_GROUP_SIZE, check_min_group_size, suppressed

__all__ = ["SCHEMA", "compute_report"]

SCHEMA = "palm-population-report/1"
NO_TOPIC = "(no topic)"
#: Histogram edges of the evidence (effective number of events) behind a user's weights.
EVIDENCE_EDGES = (0.0, 1e-9, 1.0, 3.0, 10.0, 30.0, 100.0, math.inf)
#: Subdivisions of each side of the simplex for d = 3 (n² triangular cells).
SIMPLEX_DIVISIONS = 8
MARGINAL_BINS = 10
#: Candidate time buckets, smallest first; the first giving at most MAX_BUCKETS is used.
BUCKETS = (300, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
MAX_BUCKETS = 48
_ROUTE = -2  # placeholder: the member is the route of the clamped weights
_LOG = logging.getLogger("palm_middleware.report")


@dataclass(frozen=True)
class _Population:
    """Per-user arrays, one row per user (never leaves this module)."""

    keys: list[str]
    weights: FloatArray  # (n_users, n_traits) posterior means
    evidence: FloatArray
    opted_out: np.ndarray[Any, np.dtype[np.bool_]]
    at_prior: np.ndarray[Any, np.dtype[np.bool_]]
    unreadable: int


@dataclass(frozen=True)
class _Served:
    """What a policy serves each user: member index (-1: blocked) and the rules that fired."""

    member: np.ndarray[Any, np.dtype[np.int64]]
    rules: list[tuple[str, ...]]
    used_default: np.ndarray[Any, np.dtype[np.bool_]]


def compute_report(
    store: Store,
    portfolio: Portfolio,
    policy: BoundsPolicy,
    *,
    candidate: BoundsPolicy | None = None,
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
    now: float | None = None,
    audit: Sequence[AuditRecord] | None = None,
) -> dict[str, Any]:
    """The population report of a deployment, as JSON-ready data.

    Args:
        store: The deployment's store (read only).
        portfolio: Members and reward profiles.
        policy: The policy in force.
        candidate: A policy to compare on the recorded population (what-if), or None.
        min_group_size: No number shown stands for fewer users than this.
        now: Timestamp of the report (default: the clock).
        audit: The store's audit records, if already read (they are read otherwise).

    Returns:
        The report (see :data:`SCHEMA`); holds no user key, id or message text.
    """
    k = check_min_group_size(min_group_size)
    for p in (policy, candidate):
        if p is not None and p.space.names != portfolio.space.names:
            raise _trait_error(p, portfolio)
    records = list(store.audit()) if audit is None else list(audit)
    pop = _population(store, portfolio, policy, records)
    n = len(pop.keys)
    shown = n >= k
    rewards = np.asarray(portfolio.rewards, dtype=np.float64)
    served = _serve(policy, portfolio, pop)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": float(time.time() if now is None else now),
        "deployment": {
            "portfolio": portfolio.name,
            "members": list(portfolio.ids),
            "traits": list(portfolio.space.names),
            "policy": {"name": policy.name, "version": policy.version, "source": policy.source},
        },
        "privacy": {
            "min_group_size": k,
            "note": "aggregates only; a number standing for fewer users is withheld (null)",
        },
        "population": {
            "users": n,
            "shown": shown,
            "at_prior": _count(int(pop.at_prior.sum()), n, k),
            "opted_out": _count(int(pop.opted_out.sum()), n, k),
            "unreadable_profiles": pop.unreadable,
        },
    }
    if shown:
        report["weights"] = _weights(pop, portfolio, k)
        report["evidence"] = _evidence(pop, k)
        report["welfare"] = _welfare(rewards, pop, served, portfolio)
        report["bounds_cost"] = _bounds_cost(rewards, pop, served, k)
    requests = _requests(records, portfolio, k)
    report["members"] = _members(portfolio, served, requests.pop("_member_users"), n, k)
    report["activity"] = requests
    report["audit"] = _audit_status(store)
    report["what_if"] = (
        _what_if(candidate, policy, portfolio, pop, served, records, k)
        if candidate is not None
        else None
    )
    return report


# -- reading the store ----------------------------------------------------------------------


def _trait_error(p: BoundsPolicy, portfolio: Portfolio) -> Exception:
    from ..exceptions import InvalidParameterError

    return InvalidParameterError(
        f"{p.source or p.name}: policy traits {list(p.space.names)} differ from the portfolio's "
        f"{list(portfolio.space.names)}; they must be the same, in the same order"
    )


def _population(
    store: Store, portfolio: Portfolio, policy: BoundsPolicy, records: Iterable[AuditRecord]
) -> _Population:
    """Every user with a record, and their posterior (the prior when they have none)."""
    keys = list(dict.fromkeys(r.user_key for r in records if r.kind not in ("forget",)))
    d = portfolio.space.dim
    prior = np.asarray(policy.default.values, dtype=np.float64)
    weights = np.tile(prior, (len(keys), 1))
    evidence = np.zeros(len(keys))
    opted = np.zeros(len(keys), dtype=bool)
    at_prior = np.ones(len(keys), dtype=bool)
    unreadable = 0
    for i, key in enumerate(keys):
        record = store.get_profile(key)
        if record is None:
            continue
        opted[i] = bool(record.state.get("opted_out", False))
        post = record.state.get("posterior")
        if post is None:
            continue
        try:
            summary = PosteriorSummary.from_dict(post)
            mean = np.asarray(summary.mean, dtype=np.float64)
            if mean.shape != (d,) or not np.all(np.isfinite(mean)) or np.any(mean < 0):
                raise ValueError(f"posterior mean of shape {mean.shape} is not a distribution")
        except (KeyError, TypeError, ValueError):
            unreadable += 1  # the decision path serves the default for it: so does the report
            continue
        weights[i] = mean / mean.sum()
        evidence[i] = max(float(summary.evidence), 0.0)
        at_prior[i] = summary.n_events == 0 or summary.evidence <= 0.0
    return _Population(keys, weights, evidence, opted, at_prior, unreadable)


def _route(rewards: FloatArray, weights: FloatArray) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Router.route for many users at once: first member within the tie tolerance of the max."""
    scores = weights @ rewards.T
    best = scores.max(axis=1, keepdims=True)
    out: np.ndarray[Any, np.dtype[np.int64]] = np.argmax(
        scores >= best - TIE_TOLERANCE, axis=1
    ).astype(np.int64)
    return out


def _serve(policy: BoundsPolicy, portfolio: Portfolio, pop: _Population) -> _Served:
    """Evaluate the unconditional rules for every user (memoized over identical inputs)."""
    rewards = np.asarray(portfolio.rewards, dtype=np.float64)
    ids = portfolio.ids

    def choose(w: FloatArray) -> str:
        return ids[int(_route(rewards, np.asarray(w)[None, :])[0])]

    n = len(pop.keys)
    member = np.empty(n, dtype=np.int64)
    used = np.zeros(n, dtype=bool)
    clamped = np.empty_like(pop.weights)  # routed all at once below (member == _ROUTE)
    rules: list[tuple[str, ...]] = []
    memo: dict[tuple[bytes, float, bool], tuple[int, tuple[str, ...], bool, FloatArray]] = {}
    ctx = RequestContext()
    default = np.asarray(policy.default.values, dtype=np.float64)
    for i in range(n):
        w = pop.weights[i]
        e = round(float(pop.evidence[i]), 6)
        o = bool(pop.opted_out[i])
        key = (w.tobytes(), e, o)
        hit = memo.get(key)
        if hit is None:
            try:
                ev = policy.evaluate(ctx, w, evidence=e, personalized=not o, choose=choose)
            except Exception:  # the decision path serves the default; the report follows it
                _LOG.exception("evaluating a stored posterior failed; counting the default")
                ev = policy.evaluate(ctx, default, evidence=0.0, personalized=False, choose=choose)
            if ev.action == "block":
                m = -1
            elif ev.member is not None:
                m = portfolio.index(ev.member)
            else:
                m = _ROUTE
            hit = (m, ev.rules_fired, bool(ev.clamp.used_default), ev.clamp.weights)
            memo[key] = hit
        member[i], fired, used[i], clamped[i] = hit
        rules.append(fired)
    todo = member == _ROUTE
    if todo.any():
        member[todo] = _route(rewards, clamped[todo])
    return _Served(member, rules, used)


# -- population views -------------------------------------------------------------------------


def _count(value: int, total: int, k: int) -> int | None:
    """A count of users, withheld when it (or the rest of the total) is a group below ``k``."""
    return None if any(suppressed([value, total - value], k)) else value


def _hist(values: FloatArray, edges: Sequence[float], k: int) -> dict[str, Any]:
    idx = np.clip(np.searchsorted(np.asarray(edges), values, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(idx, minlength=len(edges) - 1).tolist()
    hide = suppressed(counts, k)
    return {
        "edges": [e if math.isfinite(e) else None for e in edges],
        "users": [None if h else c for c, h in zip(counts, hide)],
    }


def _simplex_cells(weights: FloatArray, n: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Cell index of each (a, b, c) on a triangular grid of n² cells.

    Cell ``(i, j, up)`` has corners ``(i, j), (i+1, j), (i, j+1)`` (up) or ``(i+1, j), (i, j+1),
    (i+1, j+1)`` (down), in units of 1/n along the first two barycentric coordinates.
    """
    a = np.clip(weights[:, 0] * n, 0, n)
    b = np.clip(weights[:, 1] * n, 0, n)
    i = np.minimum(np.floor(a), n - 1)
    j = np.minimum(np.floor(b), n - 1 - i)
    down = ((a - i) + (b - j) > 1) & (i + j <= n - 2)
    return np.asarray(_cell_index(i.astype(np.int64), j.astype(np.int64), down, n))


def _cell_index(i: Any, j: Any, down: Any, n: int) -> Any:
    # Up cells first (row-major over i, j with i + j <= n-1), then down cells.
    up_idx = i * n - i * (i - 1) // 2 + j
    down_idx = n * (n + 1) // 2 + i * (n - 1) - i * (i - 1) // 2 + j
    return np.where(down, down_idx, up_idx)


def simplex_cells(n: int) -> list[dict[str, Any]]:
    """The corners (barycentric, first two coordinates) of every cell, in index order."""
    cells: list[dict[str, Any]] = []
    for i in range(n):
        for j in range(n - i):
            cells.append({"corners": [[i / n, j / n], [(i + 1) / n, j / n], [i / n, (j + 1) / n]]})
    for i in range(n - 1):
        for j in range(n - 1 - i):
            corners = [[(i + 1) / n, j / n], [i / n, (j + 1) / n], [(i + 1) / n, (j + 1) / n]]
            cells.append({"corners": corners})
    return cells


def _weights(pop: _Population, portfolio: Portfolio, k: int) -> dict[str, Any]:
    names = portfolio.space.names
    w = pop.weights
    edges = list(np.linspace(0.0, 1.0, MARGINAL_BINS + 1))
    out: dict[str, Any] = {
        "mean": {t: round(float(v), 6) for t, v in zip(names, w.mean(axis=0))},
        "marginals": {t: _hist(w[:, c], edges, k) for c, t in enumerate(names)},
        "simplex": None,
    }
    if len(names) == 3:
        n = SIMPLEX_DIVISIONS
        counts = np.bincount(_simplex_cells(w, n), minlength=n * n).tolist()
        hide = suppressed(counts, k)
        cells = simplex_cells(n)
        for cell, c, h in zip(cells, counts, hide):
            cell["users"] = None if h else c
        out["simplex"] = {"divisions": n, "cells": cells}
    return out


def _evidence(pop: _Population, k: int) -> dict[str, Any]:
    return {
        **_hist(pop.evidence, EVIDENCE_EDGES, k),
        "mean": round(float(pop.evidence.mean()), 4),
        "median": round(float(np.median(pop.evidence)), 4),
    }


def _welfare(
    rewards: FloatArray, pop: _Population, served: _Served, portfolio: Portfolio
) -> dict[str, Any]:
    scores = pop.weights @ rewards.T  # (n_users, n_members)
    ok = served.member >= 0
    if not ok.any():
        return {"users": 0, "note": "every user is blocked by an unconditional rule"}
    s = scores[ok]
    mean_per_member = s.mean(axis=0)
    single = int(np.argmax(mean_per_member))
    oracle = float(s.max(axis=1).mean())
    port = float(s[np.arange(len(s)), served.member[ok]].mean())
    base = float(mean_per_member[single])
    gap = oracle - base
    return {
        "users": int(ok.sum()),
        "single_member": portfolio.ids[single],
        "single": round(base, 6),
        "portfolio": round(port, 6),
        "oracle": round(oracle, 6),
        "gain_over_single": round(port - base, 6),
        "gap_closed": round((port - base) / gap, 6) if gap > 1e-12 else None,
        "per_member_everyone": {
            m: round(float(v), 6) for m, v in zip(portfolio.ids, mean_per_member)
        },
    }


def _losses(rewards: FloatArray, pop: _Population, served: _Served) -> FloatArray:
    """Reward each user loses against their own best member (0 for blocked users)."""
    scores = pop.weights @ rewards.T
    best = scores.max(axis=1)
    got = np.where(served.member >= 0, scores[np.arange(len(scores)), served.member], best)
    out: FloatArray = np.maximum(best - got, 0.0)
    return out


OPTED_OUT = "(opted out)"
NO_RULE = "(no rule)"


def _bounds_cost(rewards: FloatArray, pop: _Population, served: _Served, k: int) -> dict[str, Any]:
    """Reward lost against each user's best member, per rule that bound their weights.

    Opted-out users (served the default by their own choice) and losses no rule explains are
    rows of their own, so the rows always add up to ``oracle - portfolio`` and a withheld row
    cannot be recovered by subtraction (the rows are suppressed as one partition).
    """
    loss = _losses(rewards, pop, served)
    n = len(loss)
    affected: dict[str, int] = Counter()
    losing: dict[str, int] = Counter()
    lost: dict[str, float] = defaultdict(float)
    for i in range(n):
        fired = (OPTED_OUT,) if pop.opted_out[i] else served.rules[i]
        if not fired:
            if loss[i] <= 1e-12:
                continue
            fired = (NO_RULE,)
        for r in fired:
            affected[r] += 1
            if loss[i] > 1e-12:
                losing[r] += 1
                lost[r] += float(loss[i]) / len(fired)  # shared when several rules bind
    names = sorted(affected, key=lambda r: (-lost.get(r, 0.0), r))
    hide = suppressed([affected[r] for r in names], k)
    rules = []
    for r, h in zip(names, hide):
        rules.append(
            {
                "rule": r,
                "users_affected": None if h else affected[r],
                "users_losing": None if h else _count(losing[r], affected[r], k),
                "reward_lost_per_user": None if h else round(lost.get(r, 0.0) / n, 6),
                "mean_loss_affected": None if h else round(lost.get(r, 0.0) / affected[r], 6),
            }
        )
    return {
        "reward_lost_per_user": round(float(loss.sum()) / n, 6),
        # With a row withheld, the total count of losers would give that row's away.
        "users_losing": None if any(hide) else _count(int((loss > 1e-12).sum()), n, k),
        "rules": rules,
        "note": "oracle minus portfolio, with the users' inferred weights; a user's loss is "
        "split evenly over the rules that bound their weights; opted-out users are a row",
    }


def _members(
    portfolio: Portfolio,
    served: _Served,
    member_users: Mapping[str, tuple[int, int]],
    n: int,
    k: int,
) -> list[dict[str, Any]]:
    """Each member's share of users (served now) and of recorded requests."""
    users = np.bincount(served.member[served.member >= 0], minlength=len(portfolio)).tolist()
    hide_u = suppressed(users, k) if n >= k else [True] * len(users)
    req_users = [member_users.get(m, (0, 0))[1] for m in portfolio.ids]
    hide_r = suppressed(req_users, k)
    total_req = sum(member_users.get(m, (0, 0))[0] for m in portfolio.ids)
    out = []
    for i, m in enumerate(portfolio.ids):
        reqs = member_users.get(m, (0, 0))[0]
        out.append(
            {
                "member": m,
                "users": None if hide_u[i] else users[i],
                "users_share": None if hide_u[i] or n == 0 else round(users[i] / n, 6),
                "requests": None if hide_r[i] else reqs,
                "requests_share": None
                if hide_r[i] or not total_req
                else round(reqs / total_req, 6),
            }
        )
    return out


# -- request views ----------------------------------------------------------------------------


def _bucket(ts: Sequence[float], users: int, k: int) -> tuple[float, int]:
    """Start and size of the time buckets: at most MAX_BUCKETS, and few enough that a bucket
    holds 2k users on average (finer buckets would mostly be withheld)."""
    if not ts:
        return 0.0, BUCKETS[-1]
    lo, hi = min(ts), max(ts)
    most = max(1, min(MAX_BUCKETS, users // (2 * k)))
    size = next((b for b in BUCKETS if (hi - lo) / b < most), BUCKETS[-1])
    return math.floor(lo / size) * size, size


def _requests(records: Sequence[AuditRecord], portfolio: Portfolio, k: int) -> dict[str, Any]:
    """Rules fired and guard blocks per topic over time; requests per member."""
    reqs = [r for r in records if r.kind in ("decision", "block")]
    start, size = _bucket([r.ts for r in reqs], len({r.user_key for r in reqs}), k)
    n_buckets = 1 + (int((max(r.ts for r in reqs) - start) // size) if reqs else 0)
    cells: dict[tuple[str, int], list[Any]] = {}  # (topic, bucket) -> [n, fired, blocked, users]
    pairs: dict[tuple[str, str], list[Any]] = {}  # (rule, topic) -> [requests, users]
    member_req: Counter[str] = Counter()
    member_users: dict[str, set[str]] = defaultdict(set)
    versions: Counter[str] = Counter()
    for r in reqs:
        p = r.payload
        topics = [str(t) for t in p.get("topics", []) or []] or [NO_TOPIC]
        b = int((r.ts - start) // size)
        blocked = r.kind == "block"
        fired = [str(p["rule_id"])] if blocked else [str(x) for x in p.get("rules_fired", [])]
        versions[str(p.get("policy_version", "?"))] += 1
        if not blocked:
            m = str(p.get("member", ""))
            member_req[m] += 1
            member_users[m].add(r.user_key)
        for t in topics:
            c = cells.setdefault((t, b), [0, 0, 0, set()])
            c[0] += 1
            c[1] += bool(fired)
            c[2] += blocked
            c[3].add(r.user_key)
            for rule in fired:
                pc = pairs.setdefault((rule, t), [0, set()])
                pc[0] += 1
                pc[1].add(r.user_key)
    topics_out = []
    for t in sorted({t for t, _ in cells}):
        row_users = [len(cells[t, b][3]) if (t, b) in cells else 0 for b in range(n_buckets)]
        hide = suppressed(row_users, k)
        all_users = set().union(*(cells[t, b][3] for b in range(n_buckets) if (t, b) in cells))
        if len(all_users) < k:
            hide = [True] * n_buckets
        series: dict[str, list[int | None]] = {"requests": [], "rules_fired": [], "blocked": []}
        for b in range(n_buckets):
            c = cells.get((t, b), [0, 0, 0, set()])
            for name, v in zip(series, c[:3]):
                series[name].append(None if hide[b] else int(v))
        topics_out.append({"topic": t, "shown": len(all_users) >= k, **series})
    pair_rows = [
        {"rule": rule, "topic": t, "requests": v[0]}
        for (rule, t), v in sorted(pairs.items())
        if len(v[1]) >= k
    ]
    withheld = sum(1 for v in pairs.values() if len(v[1]) < k)
    member_counts = {m: (member_req[m], len(member_users[m])) for m in member_req}
    n_dec = sum(1 for r in reqs if r.kind == "decision")
    return {
        "requests": n_dec,
        "blocked": len(reqs) - n_dec,
        "refused": sum(1 for r in records if r.kind == "refused"),
        "bucket_start": start,
        "bucket_seconds": size,
        "buckets": n_buckets,
        "topics": topics_out,
        "rules_by_topic": pair_rows,
        "rules_by_topic_withheld": withheld,
        "policy_versions": dict(versions.most_common()),
        "_member_users": member_counts,
    }


def _audit_status(store: Store) -> dict[str, Any]:
    try:
        chain = verify_audit_chain(store)
    except Exception as exc:  # a report still helps when the chain cannot be read
        _LOG.exception("verifying the audit chain failed")
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "ok": chain.ok,
        "checked": chain.checked,
        "erased": chain.erased,
        "unchained": chain.unchained,
        "head": chain.head,
        "problems": len(chain.problems),
        # Problems name random record ids and link numbers, never a user.
        "first_problems": chain.problems[:10],
    }


# -- what-if ---------------------------------------------------------------------------------


def _what_if(
    candidate: BoundsPolicy,
    policy: BoundsPolicy,
    portfolio: Portfolio,
    pop: _Population,
    served: _Served,
    records: Sequence[AuditRecord],
    k: int,
) -> dict[str, Any]:
    """The recorded population and requests under ``candidate``, next to the policy in force."""
    n = len(pop.keys)
    rewards = np.asarray(portfolio.rewards, dtype=np.float64)
    new = _serve(candidate, portfolio, pop)
    out: dict[str, Any] = {
        "policy": {
            "name": candidate.name,
            "version": candidate.version,
            "source": candidate.source,
        },
        "population": None,
    }
    if n >= k:
        changed = int((new.member != served.member).sum())
        blocked = int((new.member < 0).sum())
        users = np.bincount(new.member[new.member >= 0], minlength=len(portfolio)).tolist()
        hide = suppressed(users, k)
        out["population"] = {
            "users_changing_member": _count(changed, n, k),
            "users_blocked": _count(blocked, n, k),
            "members": [
                {"member": m, "users": None if h else u}
                for m, u, h in zip(portfolio.ids, users, hide)
            ],
            "welfare": _welfare(rewards, pop, new, portfolio),
            "bounds_cost": _bounds_cost(rewards, pop, new, k),
        }
    opted = {key for key, o in zip(pop.keys, pop.opted_out) if o}
    out["requests"] = _replay(candidate, portfolio, records, opted, k)
    return out


def _replay(
    candidate: BoundsPolicy,
    portfolio: Portfolio,
    records: Sequence[AuditRecord],
    opted_out: set[str],
    k: int,
) -> dict[str, Any]:
    """Recorded requests re-decided under ``candidate`` with their topics and time.

    Cohort, channel and other metadata are not recorded with decisions, so rules conditioned
    on them are evaluated as if absent.
    """
    rewards = np.asarray(portfolio.rewards, dtype=np.float64)
    ids = portfolio.ids

    def choose(w: FloatArray) -> str:
        return ids[int(_route(rewards, np.asarray(w)[None, :])[0])]

    changed: set[str] = set()
    newly_blocked: set[str] = set()
    unblocked: set[str] = set()
    n_changed = n_blocked = n_unblocked = n_seen = 0
    fired_now: dict[str, set[str]] = defaultdict(set)
    fired_count: Counter[str] = Counter()
    default = np.asarray(candidate.default.values, dtype=np.float64)
    for r in records:
        if r.kind not in ("decision", "block"):
            continue
        p = r.payload
        topics = frozenset(str(t) for t in p.get("topics", []) or [])
        ctx = build_context(candidate, None, r.ts, topics)
        try:
            if r.kind == "block":  # the weights were never inferred: blocks depend on context
                ev = candidate.evaluate(ctx, default, evidence=0.0, choose=choose)
            else:
                names = portfolio.space.names
                raw = np.array([float(p["raw_weights"][t]) for t in names])
                ev = candidate.evaluate(
                    ctx,
                    raw / raw.sum(),
                    evidence=float(p.get("evidence", 0.0)),
                    personalized=r.user_key not in opted_out,
                    choose=choose,
                )
        except Exception:  # an unreadable record is skipped, and counted
            continue
        n_seen += 1
        for rule in ev.rules_fired:
            fired_now[rule].add(r.user_key)
            fired_count[rule] += 1
        if ev.action == "block":
            if r.kind == "decision":
                n_blocked += 1
                newly_blocked.add(r.user_key)
            continue
        if r.kind == "block":
            n_unblocked += 1
            unblocked.add(r.user_key)
            continue
        member = ev.member if ev.member is not None else choose(ev.clamp.weights)
        if member != p.get("member"):
            n_changed += 1
            changed.add(r.user_key)

    def shown(count: int, users: set[str]) -> int | None:
        return count if len(users) >= k or count == 0 else None

    return {
        "replayed": n_seen,
        "member_changes": shown(n_changed, changed),
        "newly_blocked": shown(n_blocked, newly_blocked),
        "no_longer_blocked": shown(n_unblocked, unblocked),
        "rules_fired": {
            rule: fired_count[rule] for rule in sorted(fired_count) if len(fired_now[rule]) >= k
        },
        "note": "recorded requests re-decided with their weights, topics and time; cohort, "
        "channel and other metadata are not recorded, so rules on them are taken as absent",
    }
