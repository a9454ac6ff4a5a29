"""Adapter overheads, each against a baseline measured in the same run.

1. LiteLLM proxy: the same proxy config with and without the PALM hook, two proxies started side
   by side on 127.0.0.1 and called alternately (openai client, sequential, non-stream). With the
   hook the client asks for ``auto`` and the hook re-targets it (decision + SQLite audit + outcome
   record); without it the client asks for the member directly. Members are tiny ONNX models
   generating ``max_tokens`` tokens, so the difference is the hook's cost. A third row calls the
   hooked proxy with a member name (passed through unrouted): routed minus that row is the
   routing cost on one process. Observed on a 2-core box: the proxy *without* any callback was
   the slowest (p50 23-40 ms, bimodal, unexplained: LiteLLM's code path without callbacks or a
   transport artifact), so compare the two rows of the hooked proxy too.
2. LangChain: ``PalmChatModel.invoke`` against calling the member chat model directly (a fake
   member that answers instantly, so the difference is the wrapper: decision, store, delegation).

    python bench/bench_adapters.py [--requests 300] [--calls 2000] [--skip-proxy]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def pct(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def bench_proxy(n: int, max_tokens: int) -> list[str]:
    sys.path[:0] = [str(ROOT / "adapters" / "litellm" / "tests"), str(ROOT)]
    import openai
    import yaml
    from litellm_proxy_fixtures import build_deployment, start_proxy, stop_proxy

    root = Path(tempfile.mkdtemp(prefix="palm-bench-"))
    dep = build_deployment(root)
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    cfg["litellm_settings"].pop("callbacks")
    (root / "config-nohook.yaml").write_text(yaml.safe_dump(cfg))
    with_hook = start_proxy(dep)
    without = start_proxy(dep, config=root / "config-nohook.yaml")
    msgs = [{"role": "user", "content": "Hello there"}]
    key = dep.keys["alice"]
    times: dict[str, list[float]] = {"hook": [], "bare": [], "pass": []}
    try:
        with (
            openai.OpenAI(base_url=with_hook.url + "/v1", api_key=key, max_retries=0) as a,
            openai.OpenAI(base_url=without.url + "/v1", api_key=key, max_retries=0) as b,
        ):
            calls = {
                "hook": lambda: a.chat.completions.create(
                    model="auto", messages=msgs, max_tokens=max_tokens
                ),
                "bare": lambda: b.chat.completions.create(
                    model="balanced", messages=msgs, max_tokens=max_tokens
                ),
                # Same proxy as "hook", member named directly: the hook passes it through.
                "pass": lambda: a.chat.completions.create(
                    model="balanced", messages=msgs, max_tokens=max_tokens
                ),
            }
            for _ in range(20):  # warm-up: sessions, connection pools, caches
                for f in calls.values():
                    f()
            for i in range(n):
                order = ("hook", "bare", "pass") if i % 2 == 0 else ("pass", "bare", "hook")
                for name in order:
                    t = time.perf_counter()
                    out = calls[name]()
                    times[name].append(time.perf_counter() - t)
                    assert out.choices[0].message.content is not None
    finally:
        stop_proxy(with_hook)
        stop_proxy(without)
    (h50, h99), (b50, b99) = pct(times["hook"]), pct(times["bare"])
    p50, p99 = pct(times["pass"])
    return [
        f"proxy, {n} sequential non-stream requests each, alternating; tiny ONNX member, "
        f"max_tokens={max_tokens}",
        "| proxy | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| without PALM hook (client asks for the member) | {b50:.2f} | {b99:.2f} |",
        f"| with PALM hook (`auto`, re-targeted) | {h50:.2f} | {h99:.2f} |",
        f"| with PALM hook, member named directly (passed through) | {p50:.2f} | {p99:.2f} |",
        f"| **added by the hook** (routed − no hook) | **{h50 - b50:+.2f}** | {h99 - b99:+.2f} |",
    ]


def bench_langchain(n: int) -> list[str]:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    sys.path[:0] = [str(ROOT / "adapters" / "langchain" / "tests"), str(ROOT)]
    from langchain_fixtures import REWARDS, TRAITS

    from palm_langchain import PalmChatModel
    from palm_middleware import MemoryStore, Palm, Portfolio, SQLiteStore
    from palm_middleware.data import bundled
    from palm_middleware.policy import load_policy

    portfolio = Portfolio.from_rewards(TRAITS, REWARDS, default_member="balanced")
    policy = load_policy(bundled("policy.yaml"))
    members = {m: FakeListChatModel(responses=["ok"]) for m in REWARDS}
    direct = members["balanced"]
    cfg = {"configurable": {"user_id": "alice"}}
    rows = [
        "",
        f"LangChain, {n} sequential invokes each (fake member answering instantly)",
        "| call | p50 ms | p99 ms | added p50 ms |",
        "|---|---|---|---|",
    ]
    tmp = Path(tempfile.mkdtemp(prefix="palm-bench-lc-"))
    variants = {
        "PalmChatModel, MemoryStore": Palm(portfolio, policy, MemoryStore(), random_state=0),
        "PalmChatModel, SQLiteStore": Palm(
            portfolio, policy, SQLiteStore(tmp / "p.db"), random_state=0
        ),
    }
    wrappers = {k: PalmChatModel(palm=p, members=members) for k, p in variants.items()}
    calls = {
        "member directly": lambda: direct.invoke("hi"),
        **{k: (lambda w=w: w.invoke("hi", config=cfg)) for k, w in wrappers.items()},
        "Palm.decide alone, SQLiteStore": lambda: variants["PalmChatModel, SQLiteStore"].decide(
            "alice", [{"role": "user", "content": "hi"}]
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    for f in calls.values():
        for _ in range(50):
            f()
    for _ in range(n):
        for k, f in calls.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    base = pct(times["member directly"])[0]
    for k in calls:
        p50, p99 = pct(times[k])
        added = "" if k == "member directly" else f"{p50 - base:+.3f}"
        rows.append(f"| {k} | {p50:.3f} | {p99:.3f} | {added} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--max-tokens", type=int, default=1)
    ap.add_argument("--skip-proxy", action="store_true")
    args = ap.parse_args()
    print(
        f"# adapter overheads ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()})\n"
    )
    lines: list[str] = []
    if not args.skip_proxy:
        lines += bench_proxy(args.requests, args.max_tokens)
    lines += bench_langchain(args.calls)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
