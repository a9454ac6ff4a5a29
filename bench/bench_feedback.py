"""Feedback update cost and accuracy: full refit per event vs the cached, in-place update.

    python bench/bench_feedback.py [--users 60] [--events 50] [--seed 0] [--parts ...]
    python bench/bench_feedback.py --in-memory [--baseline DIR] [--rounds 3]

Simulated users (hidden w ~ Dirichlet(1), 6 members on a noisy ℓ2 front, 4 traits, β = 10,
10% label flips) send thumbs or pairwise feedback on random members. Every event goes through
``LearningState.rebuild`` (the update ``Palm.record_feedback`` runs inside the store's
transaction, with the default policy's ``max_step`` 0.25) twice, interleaved: once with the
cache off (the old path: refit the particle posterior from the stored evidence) and once with
it on (update the cached posterior in place). Both see the same events, so the regret and
interval coverage after t events differ only by the update method. Times are per event,
excluding store I/O: CPU time of the thread (``time.thread_time``) and wall time. A last pass
times ``Palm.record_feedback`` end to end on a ``MemoryStore`` (JSON round trip and audit
hashing included) and ``compare_candidates``.

``--in-memory`` times the in-place update alone (this tree's defaults), with the cost of the
particle move on its own; ``--baseline DIR`` (a checkout of another revision, e.g. ``git
worktree add /tmp/base main``) runs the same in a child process per revision, alternating the
order round by round, so both revisions see the same load. ``--gc-freeze`` freezes what the
warm-up left alive (``gc.freeze()``, as the LiteLLM proxy does after start-up), so a full
collection does not scan it.

``--parts refresh`` (issue 17 feedback speed, population prior): ``Palm.record_feedback`` end
to end on a ``MemoryStore`` and on an ``SQLiteStore`` file, with the population prior refitted
on the request (``population_refresh="sync"``: every 25 changes, on the thread that recorded
the 25th, as before the refit moved off the request path) and in the background
(``population_refresh=2.0``: feedback only writes the user's population row). The four Palms
take turns on each event (interleaved, order rotating); each has ``--pop-users`` users with
feedback first, so every refit fits that many users' aggregates. Also: one refit's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine

from palm_middleware.offline.simulate import lp_front_members
from palm_middleware.policy import parse_policy
from palm_middleware.preferences.events import Observation
from palm_middleware.preferences.population import Population
from palm_middleware.preferences.state import LearningState
from palm_middleware.stores.base import EventRecord, ProfileRecord

POLICY = """
version: 2
traits: [a, b, c, d]
defaults: {weights: {a: 0.25, b: 0.25, c: 0.25, d: 0.25}, prior_strength: 4}
"""
STEPS = (5, 20, 50)


def _sigmoid(x: float) -> float:
    return float(0.5 * (1.0 + np.tanh(0.5 * x)))


def pct(xs: list[float]) -> str:
    a = np.asarray(xs) * 1e3
    return f"{np.percentile(a, 50):.3f} / {np.percentile(a, 99):.3f} / {a.max():.2f}"


def simulate(args: argparse.Namespace, feedback: str) -> None:
    policy = parse_policy(POLICY)
    rng = np.random.default_rng(args.seed)
    R = lp_front_members(6, 4, random_state=rng)
    ref = R.mean(axis=0)
    users = rng.dirichlet(np.ones(4), size=args.users)
    arms = {
        "refit": LearningState(half_life=90 * 86400.0, cache_size=0),
        "incremental": LearningState(
            half_life=90 * 86400.0, ess_threshold=args.ess_threshold, move_steps=args.move_steps
        ),
    }
    for ls in arms.values():  # warm up (imports, first allocations), then count from zero
        warm: ProfileRecord | None = None
        for k in range(3):
            obs = Observation.compare(R[k] - R[k + 1], 1, ts=float(k))
            ev = EventRecord(f"warm:{k}", "warm", feedback, {"obs": [obs.to_dict()]}, float(k))
            st = ls.rebuild(warm, [ev], now=float(k), policy=policy, limit=0.25)
            warm = ProfileRecord("warm", st, k + 1, float(k))
        ls.forget_cache()
        ls.hits = ls.misses = 0
    moved: list[bool] = []  # incremental events that resampled and moved particles
    times = {a: {"cpu": [], "wall": []} for a in arms}
    regret = {a: np.zeros((args.users, args.events + 1)) for a in arms}
    cover = {a: np.zeros((args.users, args.events + 1)) for a in arms}
    for u, w in enumerate(users):
        vals = R @ w
        opt = float(vals.max())
        urng = np.random.default_rng([args.seed, u])
        records: dict[str, ProfileRecord | None] = {a: None for a in arms}
        now = 1.7e9
        for t in range(args.events + 1):
            for a in arms:
                rec = records[a]
                if rec is None:
                    mean, lo, hi = np.full(4, 0.25), np.zeros(4), np.ones(4)
                else:
                    post = rec.state["posterior"]
                    mean, lo, hi = (np.asarray(post[k]) for k in ("mean", "lower", "upper"))
                regret[a][u, t] = (opt - vals[int(np.argmax(R @ mean))]) / opt
                cover[a][u, t] = float(np.mean((w >= lo) & (w <= hi)))
            if t == args.events:
                break
            now += 30.0
            i = int(urng.integers(6))
            if feedback == "thumbs":
                y = 1 if urng.random() < _sigmoid(10 * float(w @ (R[i] - ref))) else -1
                delta = R[i] - ref
            else:
                j = (i + 1 + int(urng.integers(5))) % 6
                y = 1 if urng.random() < _sigmoid(10 * float(w @ (R[i] - R[j]))) else -1
                delta = R[i] - R[j]
            y = -y if urng.random() < 0.1 else y
            obs = Observation.compare(delta, y, ts=now)
            event = EventRecord(f"u{u}:{t}", f"u{u}", feedback, {"obs": [obs.to_dict()]}, now)
            order = list(arms) if t % 2 == 0 else list(arms)[::-1]  # interleaved
            for a in order:
                rec = records[a]
                entry = arms[a]._cache.get(f"u{u}")
                before = entry.model.n_moves_ if entry is not None else 0
                c0, w0 = time.thread_time(), time.perf_counter()
                state = arms[a].rebuild(rec, [event], now=now, policy=policy, limit=0.25)
                times[a]["cpu"].append(time.thread_time() - c0)
                times[a]["wall"].append(time.perf_counter() - w0)
                if a == "incremental":
                    entry = arms[a]._cache.get(f"u{u}")
                    moved.append(entry is None or entry.model.n_moves_ > before)
                records[a] = ProfileRecord(f"u{u}", state, (rec.version if rec else 0) + 1, now)
    print(
        f"\n{feedback}: {args.users} users x {args.events} events; incremental: ESS threshold "
        f"{args.ess_threshold}, {args.move_steps} move steps"
    )
    print(
        "| update | CPU ms p50 / p99 / max | wall ms p50 / p99 / max | cache hits | "
        + " | ".join(f"regret % t={s}" for s in STEPS)
        + f" | 90% coverage t={STEPS[-1]} |"
    )
    print("|---|---|---|---|" + "---|" * len(STEPS) + "---|")
    extra = ""
    for a, ls in arms.items():
        se = lambda x: x.std(ddof=1) / np.sqrt(len(x))  # noqa: E731
        cells = " | ".join(
            f"{100 * regret[a][:, s].mean():.2f} ± {100 * se(regret[a][:, s]):.2f}"
            for s in STEPS
            if s <= args.events
        )
        moves = "-" if a == "refit" else f"{ls.hits}/{ls.hits + ls.misses}"
        if a == "incremental":
            still = [c for c, m in zip(times[a]["cpu"], moved) if not m]
            extra = f"; {100 * np.mean(moved):.1f}% of events moved particles, the rest CPU ms "
            extra += f"p50 / p99 / max {pct(still)}"
        print(
            f"| {a} | {pct(times[a]['cpu'])} | {pct(times[a]['wall'])} | {moves} | {cells} | "
            f"{100 * cover[a][:, min(STEPS[-1], args.events)].mean():.1f} |"
        )
    print(f"\nincremental{extra}")


def _event(
    feedback: str,
    R: np.ndarray,
    w: np.ndarray,
    urng: np.random.Generator,
    u: int,
    t: int,
    now: float,
    beta: float = 10.0,
) -> EventRecord:
    """The bench's simulated event: a thumb on a random member or a random pair, Bradley-Terry
    at ``beta``, 10% flips (as in :func:`simulate`)."""
    ref = R.mean(axis=0)
    i = int(urng.integers(6))
    if feedback == "thumbs":
        delta = R[i] - ref
    else:
        delta = R[i] - R[(i + 1 + int(urng.integers(5))) % 6]
    y = 1 if urng.random() < _sigmoid(beta * float(w @ delta)) else -1
    y = -y if urng.random() < 0.1 else y
    obs = Observation.compare(delta, y, ts=now)
    return EventRecord(f"u{u}:{t}", f"u{u}", feedback, {"obs": [obs.to_dict()]}, now)


def in_memory(args: argparse.Namespace, feedback: str) -> dict[str, Any]:
    """The in-place update alone, with this tree's ``LearningState`` defaults and a population
    (as ``Palm`` has): per-event CPU time of ``rebuild`` (excluding store I/O), which events
    moved particles, the CPU time of each Metropolis-Hastings move on its own, regret and 90%
    coverage at ``STEPS``.

    ``--moves background`` (default where the tree has it): as ``Palm`` outside its sync mode,
    a :class:`BackgroundUpkeep` thread moves posteriors that events left thin and makes a new user's
    evidence draws; its CPU time is
    reported apart (it is not on the feedback path, but it is paid). ``--order round-robin``:
    every user's event t before anyone's t + 1 (traffic from many users; a user's next event
    comes 59 events later), instead of each user's events back to back."""
    import threading

    from palm_middleware.preferences.model import PreferenceModel

    moves: list[float] = []  # on the feedback path (this thread)
    plain = PreferenceModel._move
    main = threading.get_ident()

    def timed_move(self: PreferenceModel, *a: Any, **k: Any) -> Any:
        c0 = time.thread_time()
        try:
            return plain(self, *a, **k)
        finally:
            if threading.get_ident() == main:
                moves.append(time.thread_time() - c0)

    PreferenceModel._move = timed_move  # type: ignore[method-assign]
    try:
        return _in_memory(args, feedback, moves)
    finally:
        PreferenceModel._move = plain  # type: ignore[method-assign]


def _background(ls: LearningState, wanted: str, policy: Any) -> Any:
    """The tree's background mover on ``ls`` (None: inline, or a tree without one), started
    as ``Palm`` starts it: preparing new users' models ahead, ready before traffic (a server
    starts before its first request)."""
    if wanted != "background" or not hasattr(ls, "follow_up"):  # (a baseline from before it)
        return None
    try:
        from palm_middleware.background_upkeep import BackgroundUpkeep
    except ImportError:  # a baseline from before it
        return None
    mover = BackgroundUpkeep(ls)
    if hasattr(mover, "prepare"):  # (a baseline from before it)
        mover.prepare(policy)
        mover.drain(30.0)
    return mover


def _in_memory(args: argparse.Namespace, feedback: str, moves: list[float]) -> dict[str, Any]:
    policy = parse_policy(POLICY)
    rng = np.random.default_rng(args.seed)
    R = lp_front_members(6, 4, random_state=rng)
    users = rng.dirichlet(np.full(4, args.user_alpha), size=args.users)
    # As Palm builds it: with the population aggregates written on every update (the lapse
    # evidence), the population prior itself not refit here (that happens outside the update).
    ls = LearningState(half_life=90 * 86400.0, population=Population())
    warm: ProfileRecord | None = None
    for k in range(3):  # warm up (imports, first allocations)
        ev = _event(feedback, R, users[0], np.random.default_rng(k), 0, k, float(k))
        st = ls.rebuild(warm, [ev], now=float(k), policy=policy, limit=0.25)
        warm = ProfileRecord("warm", st, k + 1, float(k))
    ls.forget_cache()
    moves.clear()
    mover = _background(ls, getattr(args, "moves", "inline"), policy)
    if getattr(args, "gc_freeze", False):  # as the proxy does after start-up
        import gc

        gc.collect()
        gc.freeze()
    cpu: list[float] = []
    wall: list[float] = []  # (with a background thread, waits for the GIL show here only)
    moved: list[bool] = []
    first: list[bool] = []
    regret = np.zeros((args.users, args.events + 1))
    cover = np.zeros((args.users, args.events + 1))
    vals = users @ R.T
    urngs = [np.random.default_rng([args.seed, u]) for u in range(args.users)]
    recs: list[ProfileRecord | None] = [None] * args.users
    now = np.full(args.users, 1.7e9)
    if getattr(args, "order", "user") == "round-robin":
        steps = [(u, t) for t in range(args.events + 1) for u in range(args.users)]
    else:
        steps = [(u, t) for u in range(args.users) for t in range(args.events + 1)]
    gap = float(getattr(args, "gap_ms", 0.0)) / 1e3
    c_all = time.process_time()
    for u, t in steps:
        w, rec = users[u], recs[u]
        opt = float(vals[u].max())
        if rec is None:
            mean, lo, hi = np.full(4, 0.25), np.zeros(4), np.ones(4)
        else:
            post = rec.state["posterior"]
            mean, lo, hi = (np.asarray(post[k]) for k in ("mean", "lower", "upper"))
        regret[u, t] = (opt - vals[u][int(np.argmax(R @ mean))]) / opt
        cover[u, t] = float(np.mean((w >= lo) & (w <= hi)))
        if t == args.events:
            continue
        now[u] += 30.0
        event = _event(feedback, R, w, urngs[u], u, t, float(now[u]), args.beta)
        n_moves = len(moves)
        c0, w0 = time.thread_time(), time.perf_counter()
        state = ls.rebuild(rec, [event], now=float(now[u]), policy=policy, limit=0.25)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
        moved.append(len(moves) > n_moves)
        first.append(rec is None)
        recs[u] = ProfileRecord(f"u{u}", state, (rec.version if rec else 0) + 1, float(now[u]))
        if gap > 0:  # think time: a server is not busy every microsecond
            time.sleep(gap)
    if mover is not None:
        mover.drain(30.0)
        mover.close()
    process_cpu = time.process_time() - c_all
    se = lambda x: float(x.std(ddof=1) / np.sqrt(len(x)))  # noqa: E731
    return {
        "cpu": cpu,
        "wall": wall,
        "moved": moved,
        "first": first,
        "moves": list(moves),
        "background": None
        if mover is None
        else {
            "moved": ls.followed_up,
            "prepared": getattr(ls, "prepared", 0),
            "cpu_per_event_ms": 1e3 * mover.cpu_seconds / len(cpu),
            "process_cpu_per_event_ms": 1e3 * process_cpu / len(cpu),
        },
        "regret": {str(s): [float(regret[:, s].mean()), se(regret[:, s])] for s in STEPS},
        "coverage": float(cover[:, 1:].mean()),
        "coverage_last": float(cover[:, -1].mean()),
    }


def in_memory_table(results: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    """Print one row per revision and feedback kind (rounds pooled)."""
    print(
        "| revision | feedback | CPU ms p50 / p99 / max | events that moved | their CPU ms p50 / "
        "max | MH move alone ms p50 / max | other events p99 | "
        + " | ".join(f"regret % t={s}" for s in STEPS)
        + " | 90% coverage t=1..50 / t=50 | background: follow-ups per 100 events, thread CPU ms "
        "per event | process CPU ms per event | wall ms p50 / p99 / max |"
    )
    print("|---|---|---|---|---|---|---|" + "---|" * len(STEPS) + "---|---|---|---|")
    for rev, by_fb in results.items():
        for fb, rounds in by_fb.items():
            cpu = np.concatenate([r["cpu"] for r in rounds])
            moved = np.concatenate([r["moved"] for r in rounds]).astype(bool)
            mv = np.concatenate([r["moves"] for r in rounds]) * 1e3
            r0 = rounds[0]
            # Regret and coverage: the same in every round when moves are inline (seeded);
            # with background moves they depend on the thread's timing: the rounds' mean.
            reg = " | ".join(
                f"{100 * np.mean([r['regret'][str(s)][0] for r in rounds]):.2f} ± "
                f"{100 * rounds[0]['regret'][str(s)][1]:.2f}"
                for s in STEPS
            )
            cov = np.mean([r["coverage"] for r in rounds])
            cov_last = np.mean([r["coverage_last"] for r in rounds])
            bgs = [r["background"] for r in rounds if r.get("background")]
            bg = (
                f"{100 * np.mean([b['moved'] for b in bgs]) / len(rounds[0]['cpu']):.1f}, "
                f"{np.mean([b['cpu_per_event_ms'] for b in bgs]):.3f} | "
                f"{np.mean([b['process_cpu_per_event_ms'] for b in bgs]):.3f}"
                if bgs
                else "- | -"
            )
            mcpu = cpu[moved] * 1e3
            print(
                f"| {rev} | {fb} | {pct(list(cpu))} | {100 * moved.mean():.1f}% | "
                + (f"{np.median(mcpu):.2f} / {mcpu.max():.2f}" if mcpu.size else "-")
                + " | "
                + (f"{np.median(mv):.2f} / {mv.max():.2f}" if mv.size else "-")
                + f" | {np.percentile(cpu[~moved] * 1e3, 99):.3f} | {reg} | "
                f"{100 * cov:.1f} / {100 * cov_last:.1f} | {bg} | "
                + (pct(list(np.concatenate([r["wall"] for r in rounds]))) if "wall" in r0 else "-")
                + " |"
            )


def compare_revisions(args: argparse.Namespace) -> None:
    """Variants in child processes, alternating their order round by round so all see the same
    load: this tree and ``--baseline``, or (``--moves both``) this tree with background and
    with inline moves."""
    here = Path(__file__).resolve().parents[1]
    if args.baseline:
        moves = "background" if args.moves == "both" else args.moves
        base = Path(args.baseline).resolve()
        variants = {"this branch": (here, moves), "baseline": (base, moves)}
    else:
        variants = {"background": (here, "background"), "inline": (here, "inline")}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {n: {} for n in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for name in order:
            tree, moves = variants[name]
            env = {**os.environ, "PYTHONPATH": str(tree)}
            cmd = [sys.executable, __file__, "--in-memory-json", "--users", str(args.users)]
            cmd += ["--events", str(args.events), "--seed", str(args.seed)]
            cmd += ["--beta", str(args.beta), "--user-alpha", str(args.user_alpha)]
            cmd += ["--feedback", *args.feedback] + (["--gc-freeze"] if args.gc_freeze else [])
            cmd += ["--moves", moves, "--order", args.order, "--gap-ms", str(args.gap_ms)]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            for fb, res in json.loads(out.stdout.splitlines()[-1]).items():
                results[name].setdefault(fb, []).append(res)
            print(f"round {r + 1}/{args.rounds}: {name} done", file=sys.stderr)
    print(
        f"\nin memory, {args.rounds} rounds x {args.users} users x {args.events} events, "
        f"β = {args.beta}, users ~ Dirichlet({args.user_alpha}), order {args.order}"
        + (", gc.freeze() after the warm-up" if args.gc_freeze else "")
    )
    in_memory_table(results)
    if args.plot:
        plot_tails(results, Path(args.plot))


def plot_tails(results: dict[str, dict[str, list[dict[str, Any]]]], path: Path) -> None:
    """Share of feedback events slower than x (CPU ms), one panel per feedback kind: the tail
    the p99 target is about."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kinds = sorted({fb for by_fb in results.values() for fb in by_fb})
    fig = Figure(figsize=(5.0 * len(kinds), 3.6))
    FigureCanvasAgg(fig)
    for k, fb in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), k + 1)
        for name, by_fb in results.items():
            if fb not in by_fb:
                continue
            cpu = np.sort(np.concatenate([r["cpu"] for r in by_fb[fb]])) * 1e3
            tail = 1.0 - np.arange(1, cpu.size + 1) / cpu.size
            ax.step(cpu[:-1], tail[:-1], where="post", label=name)
        ax.axvline(1.0, color="grey", ls=":", lw=1)
        ax.axhline(0.01, color="grey", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlim(0, 3)
        ax.set_xlabel("feedback update, CPU ms")
        ax.set_ylabel("share of events slower")
        ax.set_title(f"{fb}: the 1 ms / 1 % lines are the p99 target", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def pipeline(args: argparse.Namespace) -> None:
    from palm_middleware import MemoryStore, Palm, Thumb, load_policy, load_portfolio
    from palm_middleware.data import bundled

    portfolio = load_portfolio(bundled("portfolio.yaml"))
    t = [1.7e9]

    def clock() -> float:
        t[0] += 30.0
        return t[0]

    palms = {}
    # refit / incremental: sync mode (a seed: population refits on the request thread every 25
    # changes, no upkeep thread); served: as a server runs it (no seed: population refit and
    # upkeep on background threads).
    for name in ("refit", "incremental", "served"):
        palm = Palm(
            portfolio,
            load_policy(bundled("policy.yaml")),
            MemoryStore(),
            clock=clock,
            random_state=None if name == "served" else 0,
            population_refresh=2.0 if name == "served" else None,
            embedder=None,
        )
        if name == "refit":
            palm._profiles.learning.cache_size = 0
        for _ in range(2):  # warm up: imports (scipy for the prior's intervals), allocations
            palm.record_feedback("warm", Thumb(up=True, member=portfolio.ids[0]))
        palm.compare_candidates("warm")
        palms[name] = palm
    rng = np.random.default_rng(args.seed)
    fb: dict[str, list[float]] = {n: [] for n in palms}
    fb_cpu: dict[str, list[float]] = {n: [] for n in palms}
    cc: dict[str, list[float]] = {n: [] for n in palms}
    for k in range(args.pipeline_events):
        user = f"user{k % 20}"  # round robin: 20 users, as a server sees them
        member = portfolio.ids[int(rng.integers(len(portfolio.ids)))]
        up = bool(rng.random() < 0.5)
        for name in list(palms) if k % 2 == 0 else list(palms)[::-1]:  # interleaved
            palm = palms[name]
            t0, c0 = time.perf_counter(), time.thread_time()
            palm.record_feedback(user, Thumb(up=up, member=member))
            fb[name].append(time.perf_counter() - t0)
            fb_cpu[name].append(time.thread_time() - c0)
            if k % 10 == 0:
                t0 = time.perf_counter()
                palm.compare_candidates(user)
                cc[name].append(time.perf_counter() - t0)
    print(
        f"\nPalm on a MemoryStore (JSON round trip and audit hashing included), bundled portfolio "
        f"and policy, {args.pipeline_events} thumbs over 20 users round robin, wall ms"
    )
    print(
        "| Palm | record_feedback p50 / p99 / max | its CPU ms p50 / p99 / max | "
        "compare_candidates p50 / p99 / max |"
    )
    print("|---|---|---|---|")
    for name in palms:
        print(f"| {name} | {pct(fb[name][20:])} | {pct(fb_cpu[name][20:])} | {pct(cc[name][2:])} |")


def refresh(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from palm_middleware import MemoryStore, Palm, SQLiteStore, Thumb, load_policy, load_portfolio
    from palm_middleware.data import bundled

    portfolio = load_portfolio(bundled("portfolio.yaml"))
    policy = load_policy(bundled("policy.yaml"))
    t = [1.7e9]

    def clock() -> float:
        t[0] += 30.0
        return t[0]

    rng = np.random.default_rng(args.seed)
    n_users = args.pop_users
    with tempfile.TemporaryDirectory() as tmp:
        stores = {
            "memory": lambda name: MemoryStore(),
            "sqlite": lambda name: SQLiteStore(Path(tmp) / f"{name}.db"),
        }
        palms = {}
        for store_name, make in stores.items():
            for mode, refresh_s in (("on the request", "sync"), ("background", 2.0)):
                name = f"{store_name}, {mode}"
                palms[name] = Palm(
                    portfolio,
                    policy,
                    make(name.replace(", ", "-").replace(" ", "_")),
                    clock=clock,
                    random_state=0,
                    embedder=None,
                    population_refresh=refresh_s,  # type: ignore[arg-type]
                )
        t0 = time.perf_counter()
        for u in range(n_users):  # every user's first events (not timed): the population
            for palm in palms.values():
                for k in range(2):
                    member = portfolio.ids[(u + k) % len(portfolio.ids)]
                    palm.record_feedback(f"user{u}", Thumb(up=k == 0, member=member))
        print(
            f"\nrecord_feedback end to end, bundled portfolio and policy, {n_users} users in the "
            f"population ({time.perf_counter() - t0:.0f} s to build), "
            f"{args.refresh_events} thumbs round robin, 4 Palms interleaved; wall ms; load "
            f"average {os.getloadavg()[0]:.1f}"
        )
        fb: dict[str, list[float]] = {n: [] for n in palms}
        cpu: dict[str, list[float]] = {n: [] for n in palms}
        names = list(palms)
        for k in range(args.refresh_events):
            user = f"user{k % n_users}"
            member = portfolio.ids[int(rng.integers(len(portfolio.ids)))]
            up = bool(rng.random() < 0.5)
            order = names[k % len(names) :] + names[: k % len(names)]  # rotating
            for name in order:
                c0, t0 = time.thread_time(), time.perf_counter()
                palms[name].record_feedback(user, Thumb(up=up, member=member))
                fb[name].append(time.perf_counter() - t0)
                cpu[name].append(time.thread_time() - c0)
        print(
            "| store, population refit | wall ms p50 / p99 / max | CPU ms of the calling "
            "thread p50 / p99 / max | refits |"
        )
        print("|---|---|---|---|")
        for name, palm in palms.items():
            feed = palm._profiles.feed
            refits = feed.refits if feed is not None else 0
            print(f"| {name} | {pct(fb[name])} | {pct(cpu[name])} | {refits} |")
        palm = palms["memory, background"]
        learning = palm._profiles.learning
        fits = []
        for _ in range(20):
            t0 = time.perf_counter()
            learning.refresh_population(palm.policy, 0)
            fits.append(time.perf_counter() - t0)
        print(f"\none refit of {n_users} users' aggregates: ms p50 / p99 / max {pct(fits)}")
        for palm in palms.values():
            if palm._profiles.feed is not None:
                palm._profiles.feed.close()
            palm.store.close()


def rowcost(args: argparse.Namespace) -> None:
    """What writing the population row adds to ``apply_event`` (same transaction)."""
    import tempfile
    from pathlib import Path

    from palm_middleware import MemoryStore, SQLiteStore

    row = {
        "mean_log": [-1.386294] * 4,
        "noise": [round(1 / 7, 6)] * 7,
        "lapse": [-12.345678] * 5,
    }
    state = {"posterior": {"mean": [0.25] * 4}, "population": row, "evidence": [{"v": [0.1] * 4}]}

    def update(profile: ProfileRecord | None, events: list[EventRecord]) -> dict[str, Any]:
        return state

    with tempfile.TemporaryDirectory() as tmp:
        for label, store in (
            ("memory", MemoryStore()),
            ("sqlite", SQLiteStore(Path(tmp) / "rows.db")),
        ):
            times: dict[str, list[float]] = {"without the row": [], "with the row": []}
            for k in range(args.row_events):
                order = list(times) if k % 2 == 0 else list(times)[::-1]
                for arm in order:
                    user = f"{arm[:4]}{k % 200}"
                    ev = EventRecord(f"{user}:{k}", user, "thumb", {"obs": []}, float(k))
                    with_row = arm == "with the row"
                    t0 = time.perf_counter()
                    store.apply_event(
                        ev,
                        update,
                        window=1,
                        now=float(k),
                        population=(lambda st: st["population"]) if with_row else None,
                    )
                    times[arm].append(time.perf_counter() - t0)
            for arm, xs in times.items():
                print(f"| {label} apply_event, {arm} | {pct(xs)} |")
            store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=60)
    ap.add_argument("--events", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--feedback", nargs="*", default=["thumbs", "pairwise"])
    ap.add_argument("--pipeline-events", type=int, default=750)
    ap.add_argument("--ess-threshold", type=float, default=0.1, help="of the incremental arm")
    ap.add_argument("--move-steps", type=int, default=2, help="of the incremental arm")
    ap.add_argument("--in-memory", action="store_true", help="only the in-place update")
    ap.add_argument("--baseline", help="with --in-memory: a checkout to compare against")
    ap.add_argument("--rounds", type=int, default=3, help="with --baseline")
    ap.add_argument("--beta", type=float, default=10.0, help="users' β, with --in-memory")
    ap.add_argument(
        "--user-alpha", type=float, default=1.0, help="users' Dirichlet α, with --in-memory"
    )
    ap.add_argument(
        "--gc-freeze",
        action="store_true",
        help="with --in-memory: gc.freeze() after the warm-up, as the LiteLLM proxy after start-up",
    )
    ap.add_argument(
        "--moves",
        choices=["background", "inline", "both"],
        default="background",
        help="with --in-memory: move thinning posteriors on a background thread, as Palm does "
        "(where the tree has it), or only on the feedback path; both: the two, interleaved",
    )
    ap.add_argument("--plot", help="with --in-memory and two variants: a PNG of the tails")
    ap.add_argument(
        "--order",
        choices=["user", "round-robin"],
        default="user",
        help="with --in-memory: each user's events back to back, or interleaved across users",
    )
    ap.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="with --in-memory: idle time after each event (0: the feedback thread never idles, "
        "so a background thread can only run beside it)",
    )
    ap.add_argument("--in-memory-json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--parts",
        nargs="*",
        default=["simulate", "pipeline", "refresh", "rowcost"],
        help="what to run",
    )
    ap.add_argument("--pop-users", type=int, default=200, help="population of the refresh part")
    ap.add_argument("--refresh-events", type=int, default=1000)
    ap.add_argument("--row-events", type=int, default=3000)
    args = ap.parse_args()
    if args.in_memory_json:  # the child process of --baseline
        print(json.dumps({fb: in_memory(args, fb) for fb in args.feedback}))
        return
    print(machine())
    t0 = time.perf_counter()
    if args.in_memory:
        if args.baseline or args.moves == "both":
            compare_revisions(args)
        else:
            in_memory_table({"this tree": {fb: [in_memory(args, fb)] for fb in args.feedback}})
        print(f"\nload average {os.getloadavg()[0]:.1f}; {time.perf_counter() - t0:.0f} s")
        return
    if "simulate" in args.parts:
        for fb in args.feedback:
            simulate(args, fb)
    if "pipeline" in args.parts:
        pipeline(args)
    if "refresh" in args.parts:
        refresh(args)
    if "rowcost" in args.parts:
        print(f"\n{args.row_events} apply_event calls per arm, interleaved, 200 users, wall ms")
        print("| store | p50 / p99 / max |")
        print("|---|---|")
        rowcost(args)
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
