"""Reply rail of the assistant policy: whole-window vs per-sentence labelling of a stream.

Streams 100-token replies (~400 characters, 4 per chunk) made of harmless texts (set 4 of
issue 12 without its "die"/"overdose" lines, plus the poem and story lines of
tests/guard/test_replies.py) through ``ReplyRail.stream()`` (window 400, stride 64), twice per
reply, interleaved: labelling each window whole (the rail before the reply_threshold change) and
per sentence (now). Each stream gets a fresh topic cache (texts never seen before). Reports
ms per reply (p50, p99) and how many harmless replies each way cut.

    python bench/bench_reply_rail.py [--policy policies/assistant.yaml] [--n 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from palm_middleware import load_policy
from palm_middleware.embeddings import default_embedder
from palm_middleware.guard.replies import ReplyRail, ReplyVerdict
from palm_middleware.policy.conditions import RequestContext
from palm_middleware.policy.topics import TopicClassifier

ROOT = Path(__file__).resolve().parents[1]


class WholeWindow(ReplyRail):
    """The window labelled as one text (one embedding), as before sentence units.

    (The window still drops the sentence its start cuts, which the rail before did not.)
    """

    def check(self, text: str, *, unfinished: str = "") -> ReplyVerdict | None:
        labels = self.topics.classify(text + unfinished, reply=True)
        ctx = dataclasses.replace(self.context, topics=labels)
        for rule, cond in self._tests:
            if cond is None or cond.test(ctx):
                return ReplyVerdict(rule.id, rule.message or "", tuple(sorted(labels)))
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default=str(ROOT / "policies/assistant.yaml"))
    ap.add_argument("--n", type=int, default=60)
    a = ap.parse_args()
    policy = load_policy(a.policy)
    emb = default_embedder()
    data = yaml.safe_load((ROOT / "bench/data/guard_surface_harmless.yaml").read_text())
    texts = [t for t in data["harmless"]["en"] if "die" not in t and "overdos" not in t]
    sys.path.insert(0, str(ROOT / "tests/guard"))
    from test_replies import HARMLESS_REPLY_LINES

    texts += [t for t in HARMLESS_REPLY_LINES if "overdos" not in t.lower()]
    res: dict[str, list[float]] = {"whole window": [], "per sentence": []}
    cut = dict.fromkeys(res, 0)
    for k in range(a.n):
        body = " ".join(texts[(k * 7 + j) % len(texts)] for j in range(8))[:400]
        for name, cls in (("whole window", WholeWindow), ("per sentence", ReplyRail)):
            clf = TopicClassifier(policy.spec.topics, embedder=emb)
            check = cls(policy, clf, RequestContext()).stream()
            t0 = time.perf_counter()
            for i in range(0, len(body), 4):
                if check.feed(body[i : i + 4]) is not None:
                    break
            cut[name] += check.finish() is not None
            res[name].append((time.perf_counter() - t0) * 1000)
    print(f"machine: {platform.machine()}, {platform.processor() or '?'}; replies: {a.n}")
    print("| labelling | ms per reply p50 | p99 | harmless replies cut |")
    print("|---|---|---|---|")
    for name, ts in res.items():
        print(
            f"| {name} | {np.percentile(ts, 50):.0f} | {np.percentile(ts, 99):.0f} | "
            f"{cut[name]}/{a.n} |"
        )


if __name__ == "__main__":
    main()
