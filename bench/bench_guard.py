"""Recall and false positives of the assistant policy's guard, keywords only and with prototypes.

Two sets: the bundled prompt set (its 16 risky prompts were known when the guard's keywords were
written: an optimistic check) and bench/data/guard_heldout.yaml (written afterwards, never used
for tuning: 12 risky requests phrased differently, 12 harmless ones sharing the guard's words).

    python bench/bench_guard.py [--policy policies/assistant.yaml]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from palm_middleware import load_policy
from palm_middleware.data import bundled
from palm_middleware.offline.evaluation import load_prompt_set
from palm_middleware.policy.topics import TopicClassifier

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--policy", type=Path, default=Path("policies/assistant.yaml"))
    a = ap.parse_args()
    spec = load_policy(a.policy).spec
    assert spec is not None
    prompts = load_prompt_set(bundled("prompts.yaml")).prompts
    held = yaml.safe_load((HERE / "data" / "guard_heldout.yaml").read_text(encoding="utf-8"))
    sets = {
        "prompt set (seen)": (
            [p.text for p in prompts if p.risky],
            [p.text for p in prompts if not p.risky],
        ),
        "held-out": (held["risky"], held["harmless"]),
    }
    print("| set | topics by | risky caught | harmless flagged | misses / false positives |")
    print("|---|---|---|---|---|")
    for mode in (None, "auto"):
        clf = TopicClassifier.build(spec.topics, embedder=mode)
        how = "keywords + MiniLM prototypes" if clf.uses_embeddings else "keywords"
        for name, (risky, harmless) in sets.items():
            missed = [t for t in risky if not clf.classify(t)]
            flagged = [t for t in harmless if clf.classify(t)]
            print(
                f"| {name} | {how} | {len(risky) - len(missed)}/{len(risky)} | "
                f"{len(flagged)}/{len(harmless)} | "
                f"{'; '.join(repr(t[:48]) for t in missed + flagged) or '—'} |"
            )


if __name__ == "__main__":
    main()
