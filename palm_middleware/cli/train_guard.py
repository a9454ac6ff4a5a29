"""``palm train-guard``: train the guard classifier (topic heads on MiniLM embeddings)."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train-guard`` command."""
    p = sub.add_parser(
        "train-guard",
        help="train the guard's risk classifier on labelled prompts",
        description="Embed labelled prompts with all-MiniLM-L6-v2 (as topic prototypes do), "
        "train one logistic head per topic on 70%% of each label and set each topic's "
        "threshold on the other 30%% (never trained on) to the given false-positive rate. "
        "Writes OUT.npz (arrays) and OUT.json (labels, thresholds, provenance). A policy uses "
        "it with `topics: {LABEL: {classifier: {name: OUT.npz}}}`.",
    )
    p.add_argument(
        "data",
        nargs="?",
        default=None,
        help="labelled YAML {examples: [{text, label, lang?}]} with label `none` for harmless "
        "prompts (default: the bundled palm_middleware/data/guard/train.yaml)",
    )
    p.add_argument("--out", required=True, metavar="PATH", help="output path (.npz)")
    p.add_argument("--max-fpr", type=float, default=0.03, help="calibration FPR (default 0.03)")
    p.add_argument("--calibration", type=float, default=0.3, help="held-out fraction (0.3)")
    p.add_argument("--l2", type=float, default=1e-3, help="L2 penalty (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, calibrate, save and print the calibration table."""
    from pathlib import Path

    from ..data import bundled
    from ..embeddings import default_embedder
    from ..guard.classifier import load_labelled, train_guard

    data = Path(args.data) if args.data else bundled("guard/train.yaml")
    examples = load_labelled(data)
    clf = train_guard(
        examples,
        default_embedder().embed,
        calibration=args.calibration,
        max_fpr=args.max_fpr,
        l2=args.l2,
        random_state=args.seed,
        source=data.name,
    )
    path = clf.save(args.out)
    print(f"wrote {path} and {path.with_suffix('.json')} ({len(examples)} examples)")
    print("label            threshold  recall  fpr   (calibration split)")
    for label, row in clf.card_["calibration"].items():
        print(f"{label:16s} {row['threshold']:9.3f}  {row['recall']:6.2f}  {row['fpr']:.3f}")
    return 0
