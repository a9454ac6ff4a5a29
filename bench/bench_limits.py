"""Limits before work (issue 11): how fast a real proxy refuses oversized requests, and whether
its event loop stays responsive while a large request under the limits is classified.

Starts a real LiteLLM proxy with the PALM hook (the tiny test members) on 127.0.0.1 and sends:

- a 10 MB chat body (refused by the ASGI body limit from Content-Length: 413);
- a 1 MB message in a body under the 1 MiB byte limit (refused by the per-message character
  limit in the hook, before tokenization: 413);
- a 200 k-character message (under every limit; blocked by the policy's keyword rule, so no
  generation runs) while a second client polls ``/health/liveliness``: the largest liveliness
  latency seen during the request shows whether the event loop stalled;
- a small chat request, served, as the baseline.

Usage: ``python bench/bench_limits.py [--repeat 20]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn: object, repeat: int) -> tuple[list[float], int]:
    times, status = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        status = fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t0) * 1000.0)
    return times, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "adapters" / "litellm" / "tests"), str(ROOT)]
    import httpx
    from litellm_proxy_fixtures import BLOCK_WORD, build_deployment, start_proxy, stop_proxy

    with tempfile.TemporaryDirectory() as tmp:
        dep = build_deployment(Path(tmp))
        proxy = start_proxy(dep)
        try:
            headers = {"Authorization": f"Bearer {dep.keys['alice']}"}
            client = httpx.Client(base_url=proxy.url, headers=headers, timeout=300)

            def body(text: str) -> bytes:
                import json

                msg = {"role": "user", "content": text}
                return json.dumps({"model": "auto", "messages": [msg], "max_tokens": 2}).encode()

            ten_mb = body("a" * 10_000_000)
            one_mb = body("a" * 1_000_000)
            large = body(("lorem ipsum " * 16_700)[:199_000] + f" {BLOCK_WORD}")
            small = body("Hello there")
            jh = {"content-type": "application/json"}

            def post(raw: bytes) -> int:
                return client.post("/v1/chat/completions", content=raw, headers=jh).status_code

            client.get("/health/liveliness")
            post(small)  # warm up (runtime, members)
            rows = []
            for name, raw in (
                ("10 MB body", ten_mb),
                ("1 MB message", one_mb),
                ("200 k-char message, blocked", large),
                ("small message, served", small),
            ):
                times, status = _timed(lambda raw=raw: post(raw), args.repeat)
                rows.append((name, len(raw), status, times))

            # Event loop responsiveness while the large request is read and classified.
            stop = threading.Event()
            lat: list[float] = []

            def poll() -> None:
                with httpx.Client(base_url=proxy.url, timeout=60) as c:
                    while not stop.is_set():
                        t0 = time.perf_counter()
                        c.get("/health/liveliness")
                        lat.append((time.perf_counter() - t0) * 1000.0)

            idle = []
            with httpx.Client(base_url=proxy.url, timeout=60) as c:
                for _ in range(50):
                    t0 = time.perf_counter()
                    c.get("/health/liveliness")
                    idle.append((time.perf_counter() - t0) * 1000.0)
            th = threading.Thread(target=poll)
            th.start()
            for _ in range(args.repeat):
                post(large)
            stop.set()
            th.join()
        finally:
            stop_proxy(proxy)

    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, "
        f"python {platform.python_version()}"
    )
    print(f"repeat: {args.repeat}\n")
    print("| request | body bytes | status | p50 ms | max ms |")
    print("|---|---|---|---|---|")
    for name, size, status, times in rows:
        p50, worst = statistics.median(times), max(times)
        print(f"| {name} | {size:,} | {status} | {p50:.1f} | {worst:.1f} |")
    print(
        f"\nliveliness latency, idle: p50 {statistics.median(idle):.1f} ms, "
        f"max {max(idle):.1f} ms; "
        f"during {args.repeat} large requests ({len(lat)} polls): p50 "
        f"{statistics.median(lat):.1f} ms, max {max(lat):.1f} ms"
    )


if __name__ == "__main__":
    main()
