"""1 vs 2 vs 3 PALM proxy replicas on one PostgreSQL, driven by locust (bench/locustfile.py).

Builds the test deployment (tiny ONNX members), starts N real LiteLLM proxies with
``store: {kind: postgres}`` and runs locust headless against them; prints requests/s, p50,
p99 and errors per N. Needs the ``bench`` extra (locust) and Postgres at $PALM_POSTGRES_DSN.

    python bench/bench_replicas.py [--replicas 1 2 3] [--users 12] [--seconds 30]
"""

from __future__ import annotations

import argparse
import csv
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "adapters" / "litellm" / "tests")]

from litellm_proxy_fixtures import build_deployment, start_proxy, stop_proxy  # noqa: E402

DSN = os.environ.get("PALM_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def run(n: int, users: int, seconds: int, root: Path) -> dict[str, float]:
    dep = build_deployment(root)
    schema = f"palm_bench_rep_{secrets.token_hex(3)}"
    palm = yaml.safe_load((dep.root / "palm.yaml").read_text())
    palm["store"] = {"kind": "postgres", "schema": schema}
    path = dep.root / "palm-pg.yaml"
    path.write_text(yaml.safe_dump(palm))
    env = {"PALM_POSTGRES_DSN": DSN, "PALM_CONFIG": str(path)}
    proxies = []
    try:
        for _ in range(n):
            proxies.append(start_proxy(dep, env_extra=env))
        out = root / f"locust-{n}"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(ROOT / "bench" / "locustfile.py"),
                "--headless",
                "-u",
                str(users),
                "-r",
                str(users),
                "-t",
                f"{seconds}s",
                "--host",
                proxies[0].url,
                "--csv",
                str(out),
                "--only-summary",
            ],
            env={
                **os.environ,
                "PALM_REPLICAS": ",".join(p.url for p in proxies),
                "PALM_KEY": dep.keys["webapp"],
            },
            check=False,
            capture_output=True,
        )
        with open(f"{out}_stats.csv") as f:
            rows = {r["Name"]: r for r in csv.DictReader(f)}
        agg = rows["Aggregated"]
        return {
            "rps": float(agg["Requests/s"]),
            "p50": float(agg["50%"]),
            "p99": float(agg["99%"]),
            "requests": float(agg["Request Count"]),
            "errors": float(agg["Failure Count"]),
        }
    finally:
        for p in proxies:
            stop_proxy(p)
        import psycopg

        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--users", type=int, default=12)
    ap.add_argument("--seconds", type=int, default=30)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; locust {args.users} users, {args.seconds} s each")
    print("| replicas | requests/s | p50 ms | p99 ms | requests | errors |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.replicas:
            r = run(n, args.users, args.seconds, Path(tmp))
            print(
                f"| {n} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | "
                f"{r['requests']:.0f} | {r['errors']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
