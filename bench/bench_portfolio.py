"""Portfolio builder benchmark: real RLVR-GSM policies, synthetic ℓp fronts, timings.

Run: ``PYTHONPATH=. python bench/bench_portfolio.py`` (writes bench/results/portfolio.md and
bench/results/portfolio_sizes.png).
"""

from __future__ import annotations

import csv
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from palm_middleware.offline.portfolio import (
    Candidate,
    NearestWeightOracle,
    PoolOracle,
    build_portfolio,
    certify_gaps,
    evaluate_weights,
    gpi_greedy,
    grid,
    grid_size,
    lazy_search,
    lp_front_pool,
    random_weights,
    simplex_sample,
    stack_rewards,
    uniform_weights,
    usage_perplexity,
)

# Published by the PALM authors (provenance: tests/data/README.md).
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "rlvr_gsm_released_rewards.csv"
OUT = Path(__file__).parent / "results"
COMMAND = "python bench/bench_portfolio.py"


def machine() -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import os

    return (
        f"nproc={os.cpu_count()}, CPU: {cpu}, Python {platform.python_version()}, "
        f"numpy {np.__version__}"
    )


def timed(fn: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def row(name: str, rewards: np.ndarray, pool: np.ndarray, users: np.ndarray) -> list[str]:
    g = certify_gaps(rewards, pool)
    return [
        name,
        str(len(rewards)),
        f"{g.multiplicative_gap:.4f}",
        f"{g.additive_gap:.4f}",
        f"{usage_perplexity(rewards, users):.2f}",
    ]


def spread(name: str, sets: list[np.ndarray], pool: np.ndarray, users: np.ndarray) -> list[str]:
    m, a, p = [], [], []
    for r in sets:
        g = certify_gaps(r, pool)
        m.append(g.multiplicative_gap)
        a.append(g.additive_gap)
        p.append(usage_perplexity(r, users))

    def f(x: list[float], k: int = 4) -> str:
        return f"{np.mean(x):.{k}f} ± {np.std(x):.{k}f}"

    return [name, str(len(sets[0])), f(m), f(a), f(p, 2)]


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def real_data() -> str:
    with DATA.open() as fh:
        rows = list(csv.DictReader(fh))
    cands: list[Candidate] = []
    seen: dict[tuple[float, float, float], str] = {}
    groups: dict[str, list[str]] = {}
    for r in rows:
        key = (float(r["w_help"]), float(r["helpfulness"]), float(r["brevity"]))
        tag = ("palm" if r["source"] == "palm_grid" else "u13") + f"-s{r['seed']}"
        if key not in seen:  # identical checkpoints published twice count once
            cid = f"{tag}-w{float(r['w_help']):.3f}"
            seen[key] = cid
            cands.append(Candidate(cid, np.array(key[1:]), weight=np.array([key[0], 1 - key[0]])))
        groups.setdefault(f"{r['source']} seed {r['seed']}", []).append(seen[key])
    pool = stack_rewards(cands)
    ids = [c.id for c in cands]
    users = simplex_sample(2, 1001)
    lines = [
        f"Pool: {len(cands)} distinct published policies (36 rows; the 5 palm_grid seed-1 "
        "rows identical to uniform13 seed-1 rows counted once). Traits: helpfulness, "
        "brevity. OPT(w) = best pool policy at w; gaps are exact LP certificates over the "
        "whole simplex; usage perplexity under users w_help ~ U[0, 1] (1,001 points).\n"
    ]
    for eps, delta, k in [(0.01, 0.005, None), (0.0, 0.0, 3), (0.0, 0.0, 5)]:
        res = build_portfolio(
            ["helpfulness", "brevity"], cands, eps, delta, method="exact", max_size=k
        )
        port = res.portfolio
        size = len(port)
        rng = np.random.default_rng(0)
        near = NearestWeightOracle(cands)
        rows_t = [
            row(
                f"**PALM build** (exact cover, target eps={eps}, delta={delta}"
                + (f", max size {k}" if k else "")
                + ")",
                port.rewards,
                pool,
                users,
            )
        ]
        rows_t.append(["  members", "", ", ".join(port.ids), "", ""])
        for gname, gids in sorted(groups.items()):
            rows_t.append(
                row(f"published {gname}", pool[[ids.index(i) for i in gids]], pool, users)
            )
        uni = stack_rewards(evaluate_weights(uniform_weights(2, size), near))
        rows_t.append(
            row(f"uniform weights k/(m-1), m={size} (nearest trained policy)", uni, pool, users)
        )
        rand_sets = [pool[rng.choice(len(pool), size, replace=False)] for _ in range(20)]
        rows_t.append(spread(f"random {size} pool policies (20 draws)", rand_sets, pool, users))
        rw = [stack_rewards(evaluate_weights(random_weights(2, size, s), near)) for s in range(20)]
        rows_t.append(
            spread(
                f"random Dirichlet weights, m={size} (nearest policy, 20 seeds)", rw, pool, users
            )
        )
        gp, _ = gpi_greedy(PoolOracle(cands), users, (users @ pool.T).max(axis=1), size)
        rows_t.append(row(f"GPI worst-weight greedy, m={size}", stack_rewards(gp), pool, users))
        lines.append(table(["set", "size", "mult. gap", "add. gap", "usage PPL"], rows_t))
        lines.append("")
    return "\n".join(lines)


def synthetic() -> tuple[str, dict[int, list[tuple[float, int, int, int]]]]:
    settings = [(0.4, 0.2), (0.2, 0.1), (0.1, 0.05), (0.05, 0.02)]
    out = [
        "Pools: ℓ2 front (p = 2), 400 candidates at Dirichlet(1) weights, shrinkage 0.05 "
        "towards (0.5, …), Gaussian noise σ = 0.02, clipped to [0, 1] (palm.md §11). OPT = "
        "best of the pool. `lazy calls` = pool-oracle calls of the lazy search over the grid "
        "(Rmax from candidates). Sizes: greedy set cover with the cutting-plane LP loop.\n"
    ]
    rows_s: list[list[str]] = []
    rows_b: list[list[str]] = []
    plot: dict[int, list[tuple[float, int, int, int]]] = {}
    for d in (2, 3, 4, 5):
        cands = lp_front_pool(d, 400, random_state=d)
        pool = stack_rewards(cands)
        traits = [f"t{i}" for i in range(d)]
        users = simplex_sample(d, 5000, 7)
        near = NearestWeightOracle(cands)
        for eps, delta in settings:
            gs = grid_size(d, eps, delta)
            calls = "-"
            if gs <= 60_000:
                calls = str(
                    lazy_search(grid(d, eps, delta), PoolOracle(cands), eps, delta).n_oracle_calls
                )
            t = time.perf_counter()
            res = build_portfolio(traits, cands, eps, delta, method="greedy", time_limit=20)
            dt = time.perf_counter() - t
            k = len(res.portfolio)
            plot.setdefault(d, []).append((eps, delta, gs, k))
            rows_s.append(
                [
                    str(d),
                    f"{eps}",
                    f"{delta}",
                    f"{gs:,}",
                    calls,
                    str(k),
                    f"{res.gaps.multiplicative_gap:.4f}",
                    f"{res.gaps.additive_gap:.4f}",
                    f"{res.certified_eps:.4f}",
                    f"{dt:.2f}",
                ]
            )
            if (eps, delta) != (0.05, 0.02):
                continue
            rng = np.random.default_rng(0)
            opt = (users @ pool.T).max(axis=1)
            gp, _ = gpi_greedy(PoolOracle(cands), users, opt, k)
            entries = [
                row("PALM build", res.portfolio.rewards, pool, users),
                row(
                    "uniform weights (nearest policy)",
                    stack_rewards(evaluate_weights(uniform_weights(d, k), near)),
                    pool,
                    users,
                ),
                spread(
                    "random Dirichlet weights (nearest policy, 10 seeds)",
                    [
                        stack_rewards(evaluate_weights(random_weights(d, k, s), near))
                        for s in range(10)
                    ],
                    pool,
                    users,
                ),
                spread(
                    "random pool subsets (10 draws)",
                    [pool[rng.choice(len(pool), k, replace=False)] for _ in range(10)],
                    pool,
                    users,
                ),
                row("GPI worst-weight greedy", stack_rewards(gp), pool, users),
            ]
            rows_b += [[str(d), *e] for e in entries]
    out.append(
        table(
            [
                "d",
                "eps",
                "delta",
                "grid size bound",
                "lazy calls",
                "portfolio size",
                "mult. gap",
                "add. gap",
                "certified eps at delta",
                "build s",
            ],
            rows_s,
        )
    )
    out.append(
        "\nGaps at equal size (target eps = 0.05, delta = 0.02; exact LP gaps against the "
        "pool; usage perplexity under Dirichlet(1) users):\n"
    )
    out.append(table(["d", "set", "size", "mult. gap", "add. gap", "usage PPL"], rows_b))
    return "\n".join(out), plot


def timings() -> str:
    cands = lp_front_pool(4, 500, random_state=0)
    pool = stack_rewards(cands)
    traits = ["a", "b", "c", "d"]
    lines = []
    for eps, delta in [(0.1, 0.05), (0.05, 0.02)]:
        holder: list[int] = []
        t = timed(
            lambda e=eps, dl=delta, h=holder: h.append(
                len(build_portfolio(traits, cands, e, dl, method="greedy").portfolio)
            ),
            3,
        )
        lines.append(
            f"- build d=4, 500 candidates, eps={eps}, delta={delta}, greedy: "
            f"median {t:.2f} s over 3 runs (kept {holder[-1]} members)"
        )
    lazy_t = timed(lambda: lazy_search(grid(4, 0.4, 0.2), PoolOracle(cands), 0.4, 0.2), 5)
    lines.append(
        f"- lazy search over GRID(4, 0.4, 0.2) (4,641 points), pool oracle with 500 "
        f"candidates: median {lazy_t * 1000:.1f} ms over 5 runs"
    )
    rng = np.random.default_rng(1)
    kept = pool[rng.choice(500, 50, replace=False)]
    holder2: list[int] = []

    def cert() -> None:
        g = certify_gaps(kept, pool)
        holder2.append(g.additive.n_lps + g.multiplicative.n_lps)

    t = timed(cert, 5)
    lines.append(
        f"- exact LP certificate (additive + multiplicative), 50 kept members vs 500 "
        f"pool: median {t * 1000:.0f} ms over 5 runs ({holder2[-1]} LPs solved; the "
        "other pool members were skipped by their upper bounds)"
    )
    sel = build_portfolio(traits, cands, 0.05, 0.02).selected
    t = timed(lambda: certify_gaps(pool[sel], pool), 5)
    lines.append(
        f"- exact LP certificate for the built portfolio ({len(sel)} members) vs 500: "
        f"median {t * 1000:.0f} ms"
    )
    return "\n".join(lines)


def plot_sizes(plot: dict[int, list[tuple[float, int, int, int]]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for d, pts in sorted(plot.items()):
        labels = [f"{e}/{dl}" for e, dl, _, _ in pts]
        line = ax.plot(labels, [k for *_, k in pts], marker="o", label=f"portfolio, d={d}")
        ax.plot(
            labels,
            [g for _, _, g, _ in pts],
            ls="--",
            color=line[0].get_color(),
            label=f"grid bound, d={d}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("eps / delta")
    ax.set_ylabel("size")
    ax.set_title("Portfolio size vs grid-size bound (ℓ2 front, 400 noisy candidates)")
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=120)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    real = real_data()
    synth, plot = synthetic()
    tim = timings()
    plot_sizes(plot, OUT / "portfolio_sizes.png")
    text = f"""# Portfolio building benchmark

Machine: {machine()}
Command: `{COMMAND}`
Total run time: {time.perf_counter() - t0:.0f} s

## Real published policies (RLVR-GSM, d = 2)

{real}

## Synthetic fronts, d = 2..5

{synth}

![sizes](portfolio_sizes.png)

## Timings

{tim}
"""
    (OUT / "portfolio.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
