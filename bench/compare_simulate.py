"""Issue 17's targets before and after, from two ``bench_simulate.py`` summaries.

    python bench/compare_simulate.py BEFORE/summary.md AFTER/summary.md [--plot out.png]

Prints a markdown table (palm/reference at t = 20 with the after run's 90% interval, the worst
excess over no personalization at t >= 5, coverage; ✓ met, ✗ missed) and, with ``--plot``,
draws the t = 20 ratios with their intervals and the coverages next to the target bands.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

_LINE = re.compile(
    r"- (pairwise|thumbs): t=20 palm/reference = ([\d.]+) \[90% CI ([\d.]+)–([\d.]+)\]"
    r"(?: \(per replicate: [^)]*\))? \((met|MISSED)\); worst excess over no personalization at "
    r"t>=5 = ([+-][\d.]+) ± ([\d.]+) pts at t=(\d+) \((met|MISSED)\); coverage ([\d.]+)% "
    r"\((met|MISSED)\)"
)


Parsed = dict[tuple[str, str], dict[str, float | bool]]


def parse(path: Path) -> Parsed:
    """(setting, feedback) → the summary line's numbers."""
    out: Parsed = {}
    setting = None
    for ln in path.read_text().splitlines():
        if m := re.match(r"### (\w+) ", ln):
            setting = m.group(1)
        elif (m := _LINE.match(ln)) and setting:
            g = m.groups()
            out[(setting, g[0])] = {
                "ratio": float(g[1]),
                "lo": float(g[2]),
                "hi": float(g[3]),
                "ratio_ok": g[4] == "met",
                "excess": float(g[5]),
                "excess_se": float(g[6]),
                "at": float(g[7]),
                "excess_ok": g[8] == "met",
                "coverage": float(g[9]),
                "coverage_ok": g[10] == "met",
            }
    return out


def table(before: Parsed, after: Parsed) -> str:
    def ck(ok: object) -> str:
        return "✓" if ok else "✗"

    rows = [
        "| setting | feedback | palm/ref t=20 before → after [90% CI after] "
        "| worst excess, pts ± s.e. (t) before → after | coverage % before → after |",
        "|---|---|---|---|---|",
    ]
    met = {"ratio_ok": [0, 0], "excess_ok": [0, 0], "coverage_ok": [0, 0]}
    keys = [k for k in after if k in before]
    for k in keys:
        b, a = before[k], after[k]
        for name in met:
            met[name][0] += bool(b[name])
            met[name][1] += bool(a[name])
        rows.append(
            f"| {k[0]} | {k[1]} | {b['ratio']:.2f} {ck(b['ratio_ok'])} → {a['ratio']:.2f} "
            f"{ck(a['ratio_ok'])} [{a['lo']:.2f}–{a['hi']:.2f}] | {b['excess']:+.1f} ± "
            f"{b['excess_se']:.1f} ({b['at']:.0f}) {ck(b['excess_ok'])} → {a['excess']:+.1f} ± "
            f"{a['excess_se']:.1f} ({a['at']:.0f}) {ck(a['excess_ok'])} | {b['coverage']:.1f} "
            f"{ck(b['coverage_ok'])} → {a['coverage']:.1f} {ck(a['coverage_ok'])} |"
        )
    rows.append(
        f"\nmet, before → after (of {len(keys)}): t=20 within 10% "
        f"{met['ratio_ok'][0]} → {met['ratio_ok'][1]}, never worse "
        f"{met['excess_ok'][0]} → {met['excess_ok'][1]}, coverage "
        f"{met['coverage_ok'][0]} → {met['coverage_ok'][1]}"
    )
    return "\n".join(rows)


def plot(before: Parsed, after: Parsed, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [k for k in after if k in before]
    y = np.arange(len(keys))
    labels = [f"{s} {fb}" for s, fb in keys]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.4 * len(keys) + 1.5), sharey=True)
    for off, run, name in ((-0.15, before, "before"), (0.15, after, "after")):
        r = np.array([run[k]["ratio"] for k in keys])
        err = np.array(
            [[run[k]["ratio"] - run[k]["lo"], run[k]["hi"] - run[k]["ratio"]] for k in keys]
        )
        ax1.errorbar(r, y + off, xerr=err.T, fmt="o", capsize=3, label=name)
        ax2.plot([run[k]["coverage"] for k in keys], y + off, "o", label=name)
    ax1.axvline(1.1, color="red", ls="--", lw=1, label="target ≤ 1.1")
    ax1.set_xlabel("palm / reference regret at t = 20 (90% interval)")
    ax2.axvspan(85, 95, color="green", alpha=0.15, label="target 85–95%")
    ax2.set_xlabel("90% interval coverage of the true weights (%)")
    ax1.set_yticks(y, labels)
    ax1.invert_yaxis()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    before, after = parse(args.before), parse(args.after)
    print(table(before, after))
    if args.plot:
        plot(before, after, args.plot)


if __name__ == "__main__":
    main()
