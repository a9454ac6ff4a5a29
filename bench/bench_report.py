"""Population report time on simulated users in a SQLite store (`palm report --deployment`).

Each simulated user has a posterior (Dirichlet draws around a few taste groups, evidence from 0
to ~60 events) and ``--decisions`` audited decisions of the bundled policy (clamped, routed,
some on the ``politics`` topic). Measured in the same run:

* baseline: reading what the report reads (every audit record, every profile);
* compute: :func:`compute_report` (includes that read, the policy evaluation of every user and
  the audit-chain verification);
* render: :func:`render_html` (matplotlib, PNG inlined);
* what-if: compute with a candidate policy (every user and recorded request re-decided).

    python bench/bench_report.py [--users 100000] [--decisions 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from palm_middleware import SQLiteStore, load_policy, load_portfolio
from palm_middleware.data import bundled
from palm_middleware.policy import parse_policy
from palm_middleware.preferences.model import PosteriorSummary
from palm_middleware.report import compute_report, render_html
from palm_middleware.routing import Router
from palm_middleware.stores.base import AuditRecord

GROUPS = np.array(
    [[0.5, 0.3, 0.05, 0.15], [0.2, 0.6, 0.05, 0.15], [0.15, 0.2, 0.5, 0.15], [0.2, 0.2, 0.1, 0.5]]
)


def populate(store: SQLiteStore, n: int, decisions: int, seed: int = 0) -> None:
    """Profiles in one transaction; decisions through append_audit (the hash chain)."""
    portfolio = load_portfolio(bundled("portfolio.yaml"))
    policy = load_policy(bundled("policy.yaml"))
    router = Router(portfolio)
    names = portfolio.space.names
    rng = np.random.default_rng(seed)
    group = rng.integers(0, len(GROUPS), n)
    means = np.array([rng.dirichlet(GROUPS[g] * 40) for g in group])
    evidence = np.where(rng.random(n) < 0.1, 0.0, rng.gamma(2.0, 8.0, n))
    keys = [uuid.uuid4().hex for _ in range(n)]

    def state(i: int) -> dict[str, object]:
        m = means[i]
        summary = PosteriorSummary(
            mean=m,
            lower=np.clip(m - 0.1, 0, 1),
            upper=np.clip(m + 0.1, 0, 1),
            concentration=10 + float(evidence[i]),
            evidence=float(evidence[i]),
            n_events=int(round(evidence[i])),
        )
        return {"posterior": summary.to_dict(), "evidence_ts": 0.0}

    store.bulk_put_profiles(((keys[i], state(i)) for i in range(n)), now=0.0)
    t0 = 1_700_000_000.0
    for d in range(decisions):
        for i in range(n):
            raw = means[i] if evidence[i] > 0 else policy.default.values
            clamp = policy.clamp(raw, evidence=float(evidence[i]))
            route = router.route(clamp.weights)
            ts = t0 + (d * n + i) * 86400.0 * 7 / (n * decisions)  # one week of traffic
            payload = {
                "decision_id": uuid.uuid4().hex,
                "member": route.member,
                "raw_weights": {t: float(v) for t, v in zip(names, raw)},
                "weights": {t: float(v) for t, v in zip(names, clamp.weights)},
                "rules_fired": list(clamp.rules_fired),
                "policy_version": policy.version,
                "evidence": float(evidence[i]),
                "used_default": clamp.used_default,
                "topics": ["politics"] if i % 7 == 0 else [],
                "action": "clamp",
                "ts": ts,
            }
            store.append_audit(
                AuditRecord(payload["decision_id"], keys[i], "decision", payload, ts)
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--decisions", type=int, default=1, help="audited decisions per user")
    args = ap.parse_args()
    portfolio = load_portfolio(bundled("portfolio.yaml"))
    text = bundled("policy.yaml").read_text()
    policy = load_policy(bundled("policy.yaml"))
    candidate = parse_policy(text.replace("max: {humor: 0.3}", "max: {humor: 0.5}"), "candidate")
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.db")
        t = time.perf_counter()
        populate(store, args.users, args.decisions)
        built = time.perf_counter() - t
        print(f"populate {args.users} users x {args.decisions} decisions: {built:.1f} s")
        t = time.perf_counter()
        records = store.audit()
        for r in records:
            store.get_profile(r.user_key)
        read = time.perf_counter() - t
        t = time.perf_counter()
        report = compute_report(store, portfolio, policy)
        compute = time.perf_counter() - t
        t = time.perf_counter()
        page = render_html(report)
        render = time.perf_counter() - t
        t = time.perf_counter()
        compute_report(store, portfolio, policy, candidate=candidate)
        what_if = time.perf_counter() - t
        store.close()
    print(
        f"users {report['population']['users']}, requests {report['activity']['requests']}, "
        f"page {len(page) / 1e6:.2f} MB"
    )
    print("| step | seconds | x baseline read |")
    print("|---|---|---|")
    for name, s in (
        ("baseline: read audit + profiles", read),
        ("compute_report", compute),
        ("render_html", render),
        ("compute_report with --policy what-if", what_if),
    ):
        print(f"| {name} | {s:.2f} | {s / read:.2f}x |")


if __name__ == "__main__":
    main()
