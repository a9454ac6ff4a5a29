"""Policy evaluation cost per request for a 50-rule version 2 policy (target <= 50 us).

Measures ``BoundsPolicy.evaluate`` (conditions + merge lookup + clamp + action) for a mix of
contexts, with the router as ``choose`` so ``member:`` rules run too; the baseline from the same
run is ``clamp`` alone on the unconditional bounds.

    python bench/bench_policy.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from palm_middleware import load_portfolio
from palm_middleware.data import bundled
from palm_middleware.policy import parse_policy
from palm_middleware.policy.conditions import RequestContext
from palm_middleware.routing import Router


def fifty_rule_policy() -> str:
    lines = [
        "version: 2",
        "name: bench50",
        "traits: [safety, helpfulness, humor, brevity]",
        "defaults: {weights: {safety: 0.3, helpfulness: 0.4, humor: 0.1, brevity: 0.2}}",
        "topics:",
        *[f"  t{i}: {{keywords: [word{i}]}}" for i in range(10)],
        "context: {cohorts: [adult, minor, student], channels: [web, api, app],"
        " attributes: {plan: [free, pro]}}",
        "bounds:",
        "  - {id: floor, layer: law, min: {safety: 0.2}}",
        "  - {id: cap, max: {humor: 0.4}}",
        "  - {id: drift, max_l1_from_default: 0.9}",
    ]
    kinds = [
        "when: {{topic: t{k}}}, action: use_default",
        "when: {{cohort: minor}}, min: {{safety: 0.{s}}}",
        "when: {{all: [{{channel: {{in: [web, app]}}}}, {{topic: {{in: [t{k}, t{j}]}}}}]}},"
        " max: {{humor: 0.2}}",
        "when: {{any: [{{metadata.plan: free}}, {{not: {{cohort: adult}}}}]}},"
        " max_l1_from_default: 0.7",
        "when: {{time: {{between: ['22:00', '06:00']}}}}, exploration: false",
        "when: {{member: playful}}, max: {{humor: 0.35}}",
        "when: {{topic: t{k}, cohort: minor}}, action: pin, member: careful",
    ]
    for i in range(47):
        k, j, s = i % 10, (i + 3) % 10, 3 + i % 3
        lines.append(f"  - {{id: r{i}, " + kinds[i % len(kinds)].format(k=k, j=j, s=s) + "}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    args = ap.parse_args()
    policy = parse_policy(fifty_rule_policy(), "bench50.yaml")
    assert len(policy.rules) == 50
    router = Router(load_portfolio(bundled("portfolio.yaml")))

    def choose(w: np.ndarray) -> str:
        return router.route(w).member

    rng = np.random.default_rng(0)
    ctxs = [
        RequestContext(
            topics=frozenset(
                f"t{t}" for t in rng.choice(10, size=rng.integers(0, 3), replace=False)
            ),
            cohort=str(rng.choice(["adult", "minor", "student"])),
            channel=str(rng.choice(["web", "api", "app"])),
            attributes={"plan": str(rng.choice(["free", "pro"]))},
            minute=int(rng.integers(0, 1440)),
            weekday=int(rng.integers(0, 7)),
        )
        for _ in range(64)
    ]
    ws = rng.dirichlet(np.ones(4), size=64)
    for c, w in zip(ctxs, ws):  # warm the merge cache, as a serving process would be
        policy.evaluate(c, w, evidence=20.0, choose=choose)
    n = args.requests

    def timed(fn: object) -> list[float]:
        out = []
        for i in range(n):
            c, w = ctxs[i % 64], ws[i % 64]
            t0 = time.perf_counter()
            fn(c, w)  # type: ignore[operator]
            out.append(time.perf_counter() - t0)
        return out

    base = timed(lambda c, w: policy.clamp(w, evidence=20.0))
    ev_only = timed(lambda c, w: policy.evaluate(c, w, evidence=20.0))
    ev_route = timed(lambda c, w: policy.evaluate(c, w, evidence=20.0, choose=choose))
    print(
        f"machine: {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, numpy {np.__version__}"
    )
    for name, xs in (
        ("clamp only (baseline)", base),
        ("evaluate, 50 rules", ev_only),
        ("evaluate + member rules (router)", ev_route),
    ):
        a = np.array(xs) * 1e6
        print(
            f"{name:36s} p50 {np.percentile(a, 50):6.1f} us  p99 {np.percentile(a, 99):6.1f} us"
            f"  mean {a.mean():6.1f} us"
        )


if __name__ == "__main__":
    main()
