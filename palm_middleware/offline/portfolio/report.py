"""Plots of a portfolio (PNG, matplotlib with the Agg backend; imported lazily).

* d = 2: value curves — each member's w·r against w_1, the portfolio's upper envelope and, with
  a pool, the pool's envelope (OPT).
* d = 3: a ternary map of which member serves each weight vector, and a heatmap of the
  additive gap to the pool.
* any d: the share of Dirichlet(1, …, 1) users routed to each member.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...types import FloatArray
from .metrics import route, usage_shares
from .simplex import simplex_lattice

__all__ = [
    "plot_gap_ternary",
    "plot_serving_ternary",
    "plot_usage",
    "plot_value_curves",
    "write_report",
]


def _figure(width: float = 6.4, height: float = 4.8) -> Any:
    # Figure() with the Agg canvas: no pyplot global state, no GUI backend, no warnings.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_value_curves(
    rewards: npt.ArrayLike,
    ids: Sequence[str],
    path: str | Path,
    *,
    pool: npt.ArrayLike | None = None,
    traits: Sequence[str] = ("trait 1", "trait 2"),
) -> Path:
    """d = 2: each member's value w·r versus w_1, the upper envelope, and the pool's envelope."""
    r = np.asarray(rewards, dtype=np.float64)
    t = np.linspace(0.0, 1.0, 501)
    w = np.column_stack([t, 1.0 - t])
    vals = w @ r.T
    fig = _figure()
    ax = fig.add_subplot()
    for j, mid in enumerate(ids):
        ax.plot(t, vals[:, j], lw=1, alpha=0.7, label=mid)
    ax.plot(t, vals.max(axis=1), color="black", lw=2.5, label="portfolio envelope")
    if pool is not None:
        opt = (w @ np.asarray(pool, dtype=np.float64).T).max(axis=1)
        ax.plot(t, opt, color="red", lw=1.5, ls="--", label="pool envelope (OPT)")
    ax.set_xlabel(f"w_{traits[0]} (w_{traits[1]} = 1 − w_{traits[0]})")
    ax.set_ylabel("value w·r")
    ax.set_title("Value curves")
    ax.legend(fontsize=7, ncol=2)
    out = Path(path)
    fig.savefig(out, dpi=120)
    return out


def _ternary_xy(w: FloatArray) -> tuple[FloatArray, FloatArray]:
    return w[:, 1] + 0.5 * w[:, 2], (np.sqrt(3.0) / 2.0) * w[:, 2]


def _ternary_axes(fig: Any, traits: Sequence[str]) -> Any:
    ax = fig.add_subplot()
    tri = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3.0) / 2.0], [0.0, 0.0]])
    ax.plot(tri[:, 0], tri[:, 1], color="black", lw=1)
    for (x, y), name, ha in zip(tri[:3], traits, ("right", "left", "center"), strict=True):
        ax.annotate(name, (x, y), ha=ha, va="top" if y == 0 else "bottom", fontsize=9)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def plot_serving_ternary(
    rewards: npt.ArrayLike, ids: Sequence[str], path: str | Path, *, traits: Sequence[str]
) -> Path:
    """d = 3: which member serves each weight vector (argmax routing)."""
    r = np.asarray(rewards, dtype=np.float64)
    w = simplex_lattice(3, 80)
    who = route(r, w)
    x, y = _ternary_xy(w)
    fig = _figure()
    ax = _ternary_axes(fig, traits)
    cmap = _cmap(len(ids))
    for j, mid in enumerate(ids):
        m = who == j
        if m.any():
            ax.scatter(x[m], y[m], s=6, color=cmap(j), label=mid)
    ax.set_title("Member serving each weight vector")
    ax.legend(fontsize=7, markerscale=2, loc="upper right")
    out = Path(path)
    fig.savefig(out, dpi=120)
    return out


def plot_gap_ternary(
    rewards: npt.ArrayLike, pool: npt.ArrayLike, path: str | Path, *, traits: Sequence[str]
) -> Path:
    """d = 3: additive gap OPT(w) − max_P w·r over the simplex."""
    r = np.asarray(rewards, dtype=np.float64)
    w = simplex_lattice(3, 80)
    gap = (w @ np.asarray(pool, dtype=np.float64).T).max(axis=1) - (w @ r.T).max(axis=1)
    x, y = _ternary_xy(w)
    fig = _figure()
    ax = _ternary_axes(fig, traits)
    sc = ax.scatter(x, y, c=gap, s=6, cmap="viridis")
    fig.colorbar(sc, ax=ax, label="additive gap to the pool")
    ax.set_title("Additive gap")
    out = Path(path)
    fig.savefig(out, dpi=120)
    return out


def plot_usage(
    rewards: npt.ArrayLike, ids: Sequence[str], path: str | Path, *, users: npt.ArrayLike
) -> Path:
    """Share of users routed to each member (bar chart)."""
    shares = usage_shares(rewards, users)
    fig = _figure()
    ax = fig.add_subplot()
    ax.bar(range(len(ids)), shares)
    ax.set_xticks(range(len(ids)), list(ids), rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("share of users")
    ax.set_title("Member usage (Dirichlet(1) users)")
    out = Path(path)
    fig.savefig(out, dpi=120)
    return out


def write_report(
    rewards: npt.ArrayLike,
    ids: Sequence[str],
    traits: Sequence[str],
    outdir: str | Path,
    *,
    pool: npt.ArrayLike | None = None,
    users: npt.ArrayLike | None = None,
) -> list[Path]:
    """Write every plot that fits the dimension into ``outdir``; returns the files written."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    r = np.asarray(rewards, dtype=np.float64)
    d = r.shape[1]
    files: list[Path] = []
    if d == 2:
        files.append(plot_value_curves(r, ids, out / "value_curves.png", pool=pool, traits=traits))
    if d == 3:
        files.append(plot_serving_ternary(r, ids, out / "serving_map.png", traits=traits))
        if pool is not None:
            files.append(plot_gap_ternary(r, pool, out / "gap_map.png", traits=traits))
    if users is None:
        users = np.random.default_rng(0).dirichlet(np.ones(d), size=20_000)
    files.append(plot_usage(r, ids, out / "usage.png", users=users))
    return files


def _cmap(n: int) -> Any:
    from matplotlib import colormaps

    return colormaps["tab20" if n > 10 else "tab10"]
