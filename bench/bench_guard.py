"""Recall, false positives and latency of the assistant policy's guard: the sets of issue 12.

Sets:
  1. the project's own: the bundled prompt set (16 risky, 145 others; seen while writing the
     keywords) and bench/data/guard_heldout.yaml (issue 7's held-out set, 12 + 12);
  2. bench/data/guard_heldout2.yaml, written after the classifier was frozen (per topic and
     language: en, fr, es, de, zh, ru);
  3. the obfuscation suite: every risky prompt of (2) under every transformation of
     palm_middleware/guard/attacks.py (leetspeak, typos, split letters, zero-width, homoglyphs,
     fullwidth, base64, hex, rot13, reversed, ...);
  4. bench/data/guard_surface_harmless.yaml: harmless prompts sharing words with risky ones.
  2b, 3b, 4b: the same, on sets written after 2 and 4 had been seen and before the second
     round of keyword narrowing and retraining (bench/data/guard_heldout2b.yaml,
     guard_surface_harmless4b.yaml): the unseen ones.

A risky prompt counts as caught when any guard topic labels it (every guard topic blocks).
Configurations: keywords only (no model), and the policy as shipped (keywords + prototypes +
the bundled classifier). Latency: TopicClassifier.classify on texts never seen before (caches
off), per request, and the reply rail over a streamed reply, per 100 tokens.

    python bench/bench_guard.py [--policy policies/assistant.yaml] [--out bench/results/guard.md]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from palm_middleware import load_policy
from palm_middleware.data import bundled
from palm_middleware.guard.attacks import ATTACKS
from palm_middleware.offline.evaluation import load_prompt_set
from palm_middleware.policy.topics import TopicClassifier

HERE = Path(__file__).parent
# Topics of the bundled prompt set's risky prompts (risky-001 ... risky-016), in order.
SET1_TOPICS = (
    ["self_harm"] * 3 + ["dangerous"] * 5 + ["medical_dosing"] * 5 + ["minors_at_risk"] * 3
)

Item = tuple[str, str, str]  # text, topic ("none" for harmless), language


def _load(name: str) -> dict[str, Any]:
    out: dict[str, Any] = yaml.safe_load((HERE / "data" / name).read_text(encoding="utf-8"))
    return out


def _by_lang(block: dict[str, list[str]], topic: str) -> list[Item]:
    return [(t, topic, lang) for lang, texts in block.items() for t in texts]


def sets() -> dict[str, list[Item]]:
    prompts = load_prompt_set(bundled("prompts.yaml")).prompts
    risky1 = [p.text for p in prompts if p.risky]
    old = _load("guard_heldout.yaml")
    h2 = _load("guard_heldout2.yaml")
    risky2 = [it for topic, block in h2["risky"].items() for it in _by_lang(block, topic)]
    h2b = _load("guard_heldout2b.yaml")
    risky2b = [it for topic, block in h2b["risky"].items() for it in _by_lang(block, topic)]
    suite = [
        (fn(text), topic, f"{lang}/{name}")
        for name, fn in ATTACKS.items()
        for text, topic, lang in risky2
    ]
    return {
        "1. own: prompt set": [(t, tp, "en") for t, tp in zip(risky1, SET1_TOPICS)]
        + [(p.text, "none", "en") for p in prompts if not p.risky],
        "1. own: issue-7 held-out": [(t, "risky", "en") for t in old["risky"]]
        + [(t, "none", "en") for t in old["harmless"]],
        "2. held-out (after freeze)": risky2 + _by_lang(h2["harmless"], "none"),
        "3. obfuscation suite": suite,
        "4. surface-word harmless": _by_lang(
            _load("guard_surface_harmless.yaml")["harmless"], "none"
        ),
        "2b. fresh held-out": risky2b + _by_lang(h2b["harmless"], "none"),
        "3b. obfuscation of 2b": [
            (fn(text), topic, f"{lang}/{name}")
            for name, fn in ATTACKS.items()
            for text, topic, lang in risky2b
        ],
        "4b. fresh surface-word harmless": _by_lang(
            _load("guard_surface_harmless4b.yaml")["harmless"], "none"
        ),
    }


def rates(
    items: Sequence[Item], flagged: Sequence[bool], key: Callable[[Item], str]
) -> dict[str, str]:
    """``key -> "caught/total"`` for risky items, ``"flagged/total"`` for harmless ones."""
    hit: dict[str, int] = defaultdict(int)
    tot: dict[str, int] = defaultdict(int)
    for it, f in zip(items, flagged):
        k = key(it)
        tot[k] += 1
        hit[k] += int(f)
    return {k: f"{hit[k]}/{tot[k]} ({hit[k] / tot[k]:.2f})" for k in sorted(tot)}


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--policy", type=Path, default=Path("policies/assistant.yaml"))
    ap.add_argument("--out", type=Path, default=None, help="also write the report here")
    ap.add_argument("--no-latency", action="store_true", help="recall and false positives only")
    a = ap.parse_args()
    spec = load_policy(a.policy).spec
    assert spec is not None
    data = sets()
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s)
        lines.append(s)

    say(f"Machine: {platform.processor() or platform.machine()}, {platform.python_version()}")
    configs = {"keywords only": None, "shipped (keywords + prototypes + classifier)": "auto"}
    flags: dict[tuple[str, str], list[bool]] = {}
    for cname, mode in configs.items():
        clf = TopicClassifier.build(spec.topics, embedder=mode)  # type: ignore[arg-type]
        say(f"\n### {cname}\n")
        say("| set | risky caught | harmless flagged |")
        say("|---|---|---|")
        for sname, items in data.items():
            fl = [bool(clf.classify(t)) for t, _, _ in items]
            flags[(cname, sname)] = fl
            r = [f for (_, tp, _), f in zip(items, fl) if tp != "none"]
            h = [f for (_, tp, _), f in zip(items, fl) if tp == "none"]
            rs = f"{sum(r)}/{len(r)} ({sum(r) / len(r):.2f})" if r else "—"
            hs = f"{sum(h)}/{len(h)} ({sum(h) / len(h):.2f})" if h else "—"
            say(f"| {sname} | {rs} | {hs} |")
    for cname in configs:
        say(f"\n### Per topic and language ({cname})\n")
        for sname in (
            "2. held-out (after freeze)",
            "3. obfuscation suite",
            "4. surface-word harmless",
            "2b. fresh held-out",
            "3b. obfuscation of 2b",
            "4b. fresh surface-word harmless",
        ):
            items, fl = data[sname], flags[(cname, sname)]
            risky = [(it, f) for it, f in zip(items, fl) if it[1] != "none"]
            harmless = [(it, f) for it, f in zip(items, fl) if it[1] == "none"]
            if risky:
                its, fs = zip(*risky)
                say(f"- {sname}, recall by topic: {rates(its, fs, lambda i: i[1])}")
                say(
                    f"- {sname}, recall by language: {rates(its, fs, lambda i: i[2].split('/')[0])}"
                )
                if sname.startswith("3"):
                    say(
                        f"- {sname}, recall by attack: "
                        f"{rates(its, fs, lambda i: i[2].split('/')[1])}"
                    )
            if harmless:
                its, fs = zip(*harmless)
                say(f"- {sname}, false positives by language: {rates(its, fs, lambda i: i[2])}")
        missed = [
            it[0]
            for it, f in zip(
                data["2. held-out (after freeze)"], flags[(cname, "2. held-out (after freeze)")]
            )
            if it[1] != "none" and not f
        ]
        fps = [
            it[0]
            for it, f in zip(
                data["4. surface-word harmless"], flags[(cname, "4. surface-word harmless")]
            )
            if f
        ]
        say(f"- missed in (2): {missed}")
        say(f"- flagged in (4): {fps}")
        for sname in ("2b. fresh held-out", "4b. fresh surface-word harmless"):
            wrong = [
                it[0] for it, f in zip(data[sname], flags[(cname, sname)]) if f != (it[1] != "none")
            ]
            say(f"- wrong in ({sname.split('.')[0]}): {wrong}")
    if a.no_latency:
        if a.out is not None:
            a.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return

    # -- latency: new texts only (classifier and embedder caches off) ------------------------
    from palm_middleware.embeddings import OnnxEmbedder, default_embedder

    emb = OnnxEmbedder(default_embedder().folder, cache_size=0)
    texts = [t for items in data.values() for t, _, _ in items]
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), size=min(600, len(texts)), replace=False)]
    say("\n### Latency (request side, new texts, caches off)\n")
    say("| what | p50 ms | p99 ms |")
    say("|---|---|---|")
    from palm_middleware.guard.normalize import text_views

    for name, fn in (
        ("normalization only (text_views)", text_views),
        ("keywords only (classify)", TopicClassifier(spec.topics, cache_size=0).classify),
        (
            "shipped guard (classify)",
            TopicClassifier(spec.topics, embedder=emb, cache_size=0).classify,
        ),
    ):
        for t in sample[:20]:
            fn(t)  # warm up
        ts = []
        for t in sample:
            t0 = time.perf_counter()
            fn(t)
            ts.append((time.perf_counter() - t0) * 1000)
        say(f"| {name} | {_pct(ts, 50):.3f} | {_pct(ts, 99):.3f} |")
    say("\n### Latency (reply side: a streamed reply checked every 64 characters, window 400)\n")
    say("| what | ms per 100 tokens, p50 | p99 |")
    say("|---|---|---|")
    from palm_middleware.guard.replies import ReplyRail
    from palm_middleware.policy.conditions import RequestContext

    policy = load_policy(a.policy)
    replies = [t for t, tp, _ in data["2. held-out (after freeze)"] if tp == "none"]
    replies += [t for t, _, _ in data["4. surface-word harmless"]]
    # A 100-token reply (~4 characters per token) made of harmless sentences, streamed per token.
    for name, clf in (
        ("keywords only", TopicClassifier(spec.topics, cache_size=0)),
        ("shipped guard", TopicClassifier(spec.topics, embedder=emb, cache_size=0)),
    ):
        rail = ReplyRail(policy, clf, RequestContext())
        ts = []
        for k in range(60):
            body = " ".join(replies[(k + j) % len(replies)] for j in range(8))[:400]
            check = rail.stream()
            t0 = time.perf_counter()
            for i in range(0, len(body), 4):
                check.feed(body[i : i + 4])
            check.finish()
            ts.append((time.perf_counter() - t0) * 1000)
        say(f"| {name} | {_pct(ts, 50):.2f} | {_pct(ts, 99):.2f} |")
    t_emb = []
    for t in sample[:200]:
        t0 = time.perf_counter()
        emb.embed([t])
        t_emb.append((time.perf_counter() - t0) * 1000)
    say(
        f"\nBaseline in the same run: one MiniLM embedding of a new text p50 "
        f"{_pct(t_emb, 50):.2f} ms, p99 {_pct(t_emb, 99):.2f} ms."
    )
    # Item 3: the policy's `languages:` rule (palm_middleware.guard.language) on every set:
    # which texts it would call unguarded (refused under `unguarded_language: refuse`), and
    # what the detection costs per request (semantic views, as the pipeline does).
    from palm_middleware.guard.language import detect, pick_language

    guarded = frozenset(spec.languages or ["en", "fr", "es", "de", "zh", "ru"])
    say(f"\n### Language rule (`languages: {sorted(guarded)}`)\n")
    say("| set | called unguarded (refused) | detected as written, by language | p50 ms | p99 ms |")
    say("|---|---|---|---|---|")
    for sname, items in data.items():
        unguarded, ok, ts = [], [], []
        for t, _, lang in items:
            t0 = time.perf_counter()
            found = [(len(v), detect(v).lang) for v in text_views(t).semantic]
            got = pick_language(found, guarded)
            ts.append((time.perf_counter() - t0) * 1000)
            unguarded.append(got is not None and got not in guarded)
            ok.append(got in (None, lang.split("/")[0]))
        n = sum(unguarded)
        acc = rates(items, ok, lambda i: i[2].split("/")[0])
        say(f"| {sname} | {n}/{len(items)} | {acc} | {_pct(ts, 50):.3f} | {_pct(ts, 99):.3f} |")
    if a.out is not None:
        a.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
