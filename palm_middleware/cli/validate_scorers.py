"""``palm validate-scorers``: each scorer's pairwise accuracy on the labelled validation set."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``validate-scorers`` command."""
    p = sub.add_parser(
        "validate-scorers",
        help="report each trait scorer's accuracy on the labelled set",
        description="Pairwise ordering accuracy (0.5 = chance) of each scorer against graded "
        "labels of replies to the same prompt. --fit recalibrates the squash curves on the "
        "set's replies (a monotone change: accuracy is unaffected) and writes the file.",
    )
    p.add_argument(
        "--scorers",
        type=Path,
        default=None,
        metavar="FILE",
        help="scorer calibration YAML (default: the bundled scorers.yaml)",
    )
    p.add_argument(
        "--set",
        type=Path,
        default=None,
        metavar="FILE",
        dest="labelled",
        help="labelled set YAML (default: the bundled scorer_validation.yaml)",
    )
    p.add_argument("--traits", default=None, help="comma-separated traits (default: all)")
    p.add_argument(
        "--fit", action="store_true", help="recalibrate center/scale on the set and write the file"
    )
    p.add_argument(
        "--min-accuracy",
        type=float,
        default=None,
        metavar="A",
        help="exit 1 if any scorer is below A",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="where --fit writes (default: --scorers)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the accuracy table; optionally fit and save."""
    from ..data import bundled
    from ..exceptions import ModelLoadError
    from ..offline.scoring.base import SquashScorer
    from ..offline.scoring.calibration import load_scorers, save_scorers
    from ..offline.scoring.validation import load_validation_set, pairwise_accuracy

    src = args.scorers or bundled("scorers.yaml")
    labelled = args.labelled or bundled("scorer_validation.yaml")
    scorers = load_scorers(src, args.traits.split(",") if args.traits else None)
    items = load_validation_set(labelled)
    worst = 1.0
    print(
        f"{len(items)} labelled replies in {len(set(i.group for i in items))} groups ({labelled})"
    )
    width = max(12, *(len(n) for n in scorers.scorers))
    for name, s in scorers.scorers.items():
        trait = str(getattr(s, "trait", None) or name)
        try:
            if args.fit and isinstance(s, SquashScorer):
                s.fit([i.text for i in items], [i.prompt for i in items])
            r = pairwise_accuracy(s, items, trait)
        except ModelLoadError as exc:  # e.g. an embedding scorer without its model package
            worst = 0.0
            print(f"  {name:<{width}} unavailable: {exc}")
            continue
        worst = min(worst, r.accuracy)
        scorers.validation[name] = {
            "pairwise_accuracy": round(r.accuracy, 4),
            "n_pairs": r.n_pairs,
            "n_ties": r.n_ties,
            "set": Path(labelled).name,
        }
        of = f", {trait} labels" if trait != name else ""
        print(
            f"  {name:<{width}} accuracy {r.accuracy:.3f}  ({r.n_pairs} pairs, {r.n_ties} ties{of})"
        )
    if args.fit:
        out = args.output or src
        save_scorers(out, scorers)
        print(f"wrote {out}")
    if args.min_accuracy is not None and worst < args.min_accuracy:
        print(f"FAIL: a scorer is below --min-accuracy {args.min_accuracy}")
        return 1
    return 0
